"""The traffic driver that plays the mesh: it routes real inference requests the way Istio would.

It polls a ModelDeployment's VirtualService and DestinationRule from the API server (or, with
``MODELPILOT_ISTIOD=1``, the Envoy routes real istiod serves a sidecar in the namespace, over xDS:
``DriverConfig.istiod``), resolves subsets to revisions and revisions to Triton endpoints (the
fleet registry), and sends rows of the
held-out set at a steady rate according to the weights, header/cookie matches and mirror of the
routes. Every request a revision serves, mirrored copies included, is counted the way a
destination sidecar reports it, on the driver's own ``/metrics``; user-visible answers are posted
to the monitor, and their ground truth follows a few seconds later for a share of them.

A mirrored copy is sent exactly as Envoy sends it: the same ``x-request-id`` as the user's request,
and ``-shadow`` appended to the authority (Host). Its answer reaches the monitor under that same
request id, as the candidate's capture sidecar would record it, so the monitor holds both arms of
the request and pairs them; one label per request applies to both.
"""

from __future__ import annotations

import copy
import http.client
import json
import os
import random
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from testkit.loop.fleet import Endpoint
from testkit.loop.mesh_metrics import MeshMetrics
from testkit.loop.models import INPUT, LABEL, MODEL_NAME, PROBABILITIES, Holdout
from testkit.loop.monitor_client import MonitorClient
from testkit.loop.routes import RouteTable

UNAVAILABLE = 503  # what Envoy answers when a connection to the upstream fails


class KubeReader(Protocol):
    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None: ...


@dataclass(frozen=True)
class ClientMix:
    """A share of users whose requests carry extra headers (an A/B arm, a cookie, a flag)."""

    name: str
    share: float
    headers: Mapping[str, str]


@dataclass(frozen=True)
class DriverConfig:
    namespace: str
    name: str  # the ModelDeployment (and its VirtualService/DestinationRule)
    rate: float = 50.0  # user requests per second
    max_requests: int | None = None
    duration_s: float | None = 600.0  # a hard bound even when max_requests is None
    poll_interval_s: float = 0.5
    istiod: bool = field(
        default_factory=lambda: os.environ.get("MODELPILOT_ISTIOD", "") in ("1", "true", "yes")
    )
    """Route by what real istiod serves a sidecar (xDS) instead of our reading of the VirtualService."""
    clients: Sequence[ClientMix] = ()
    monitor_url: str | None = None
    label_share: float = 0.5  # share of answered requests whose ground truth is posted later
    label_delay_s: tuple[float, float] = (2.0, 5.0)
    post_mirrors: bool = True  # shadow answers go to the monitor too, under the same request id
    workers: int = 4
    timeout_s: float = 5.0
    seed: int = 0
    keep_answers: int = 20_000


@dataclass(frozen=True)
class Answer:
    """One request as the driver saw it; ``mirror`` answers never reached the user."""

    request_id: str
    row: int
    client: str
    route: str
    revision: str | None
    code: int
    latency_ms: float
    label: int | None = None  # the model's predicted class
    model_version: str | None = None
    mirror: bool = False
    authority: str | None = None  # the Host header sent (a mirror's ends in -shadow)


@dataclass
class RevisionCounts:
    served: int = 0  # user requests answered by this revision
    errors: int = 0  # ... with a 5xx
    correct: int = 0  # answers equal to the ground truth
    mirrored: int = 0  # mirror copies received
    mirrored_errors: int = 0
    latency_ms: float = 0.0  # summed over served requests

    @property
    def accuracy(self) -> float | None:
        ok = self.served - self.errors
        return self.correct / ok if ok else None


@dataclass
class DriverStats:
    sent: int = 0
    no_route: int = 0  # no VirtualService yet (or no route matched): nothing was sent
    unroutable: int = 0  # route to a subset or revision with no endpoint: Istio's 503 at the source
    mirror_dropped: int = 0
    watch_errors: int = 0  # failed reads of the routes, or rules the driver cannot model
    internal_errors: int = 0  # bugs in the driver itself: tests assert there are none
    table_changes: int = 0
    by_route: Counter[str] = field(default_factory=Counter)
    by_client: Counter[str] = field(default_factory=Counter)
    revisions: dict[str, RevisionCounts] = field(default_factory=dict)

    def revision(self, revision: str) -> RevisionCounts:
        return self.revisions.setdefault(revision, RevisionCounts())


def infer_body(features: Sequence[float]) -> bytes:
    """A KServe v2 JSON request for one row."""
    body = {
        "inputs": [{"name": INPUT, "shape": [1, len(features)], "datatype": "FP32", "data": list(features)}]
    }
    return json.dumps(body).encode()


def parse_answer(data: bytes) -> tuple[int | None, list[float] | None, str | None]:
    """(predicted class, probabilities, model version) from Triton's JSON response."""
    try:
        body = json.loads(data)
        outputs = {o["name"]: o["data"] for o in body.get("outputs") or []}
        label = outputs.get(LABEL)
        return (int(label[0]) if label else None), outputs.get(PROBABILITIES), body.get("model_version")
    except (ValueError, KeyError, TypeError, IndexError):
        return None, None, None


class TrafficDriver:
    """Start with ``start()`` (or as a context manager); it stops by itself at its bounds."""

    def __init__(
        self,
        kube: KubeReader,
        endpoints: Callable[[str], Endpoint | None],
        holdout: Holdout,
        config: DriverConfig,
        *,
        metrics: MeshMetrics | None = None,
        monitor: MonitorClient | None = None,
    ) -> None:
        self.kube, self.endpoints, self.holdout, self.config = kube, endpoints, holdout, config
        self.metrics = metrics or MeshMetrics(config.namespace, config.name)
        self.monitor = monitor or (MonitorClient(config.monitor_url) if config.monitor_url else None)
        self.rate = config.rate
        self.rng = random.Random(config.seed)
        self.stats = DriverStats()
        self.answers: deque[Answer] = deque(maxlen=config.keep_answers)
        self.table: RouteTable | None = None
        self.table_changed_at: float | None = None
        self._versions: tuple[str, str] | None = None
        self._order = list(range(len(holdout)))
        self.rng.shuffle(self._order)
        self._bodies = [infer_body(row.tolist()) for row in holdout.features]
        self._lock = threading.Lock()
        self._local = threading.local()
        self._all_conns: list[http.client.HTTPConnection] = []
        self._stop = threading.Event()
        self.done = threading.Event()
        # In-flight budgets: users wait for a slot; mirror copies have their own and are dropped
        # when it is exhausted, so shadowing never slows users down.
        self._slots = threading.BoundedSemaphore(config.workers * 4)
        self._mirror_slots = threading.BoundedSemaphore(config.workers * 4)
        self._pool = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="loop-send")
        self._threads = [
            threading.Thread(target=self._watch, name="loop-watch", daemon=True),
            threading.Thread(target=self._load, name="loop-load", daemon=True),
        ]
        self.started_at: float | None = None
        self.last_error = ""

    # ---- lifecycle

    def start(self) -> TrafficDriver:
        self.metrics.serve()
        if self.monitor is not None:
            self.monitor.start()
        self.started_at = time.monotonic()
        self.refresh_routes()
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout=10)
        self._pool.shutdown(wait=True, cancel_futures=True)
        # Triton's shutdown waits for open connections: close every worker's kept-alive one.
        with self._lock:
            conns, self._all_conns = self._all_conns, []
        for conn in conns:
            conn.close()
        if self.monitor is not None:
            self.monitor.close()
        self.metrics.close()
        self.done.set()

    def __enter__(self) -> TrafficDriver:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def wait_done(self, timeout: float) -> bool:
        """Wait until the bounds are reached and every request issued has been answered."""
        return self.done.wait(timeout)

    def set_rate(self, rate: float) -> None:
        self.rate = max(rate, 0.0)

    @property
    def metrics_address(self) -> str:
        return self.metrics.address

    # ---- routes

    def refresh_routes(self) -> RouteTable | None:
        """Read the VirtualService and DestinationRule once; keep the last table on API errors."""
        ns, name = self.config.namespace, self.config.name
        try:
            vs = self.kube.get("VirtualService", name, ns)
            dr = self.kube.get("DestinationRule", name, ns)
        except Exception as exc:  # the API server may be briefly unavailable; the mesh keeps its config
            self._note_error(f"watch: {exc!r}")
            return self.table
        if vs is None:
            self.table, self._versions = None, None
            return None
        versions = (
            vs["metadata"].get("resourceVersion", ""),
            (dr or {}).get("metadata", {}).get("resourceVersion", ""),
        )
        if self.config.istiod:
            # Route as Istio does: the Envoy routes istiod serves a sidecar here, not our reading.
            # istiod may change them without a new resourceVersion, so the routes are the version.
            try:
                table = self._istiod_table(vs, dr)
            except Exception as exc:  # istiod unreachable or not serving this host yet: keep routing
                self._note_error(f"istiod routes: {exc!r}")
                return self.table
            versions = (table.describe(), versions[1])
        if versions != self._versions:
            if not self.config.istiod:
                try:
                    table = RouteTable.from_manifests(vs, dr)
                except (ValueError, KeyError, TypeError) as exc:  # a rule this driver does not model
                    self._note_error(f"route table: {exc!r}")
                    return self.table
            for revision in table.subsets.values():
                self.metrics.precreate(revision)
            self.table, self._versions = table, versions
            self.table_changed_at = time.monotonic()
            with self._lock:
                self.stats.table_changes += 1
        return self.table

    def _istiod_table(self, vs: dict, dr: dict | None) -> RouteTable:
        """The table from istiod's xDS answer for the model's Service host (subsets from the DR)."""
        from testkit.xds import fetch_routes, virtual_host

        ns, name = self.config.namespace, self.config.name
        ours = RouteTable.from_manifests(vs, dr)  # subsets and hosts only
        host = virtual_host(fetch_routes(ns)["8000"], f"{name}.{ns}.svc.cluster.local")
        return RouteTable.from_envoy(host, ours.subsets, ours.hosts)

    def _watch(self) -> None:
        while not self._stop.wait(self.config.poll_interval_s):
            self.refresh_routes()

    # ---- load

    def _bounds_reached(self, issued: int) -> bool:
        cfg = self.config
        if cfg.max_requests is not None and issued >= cfg.max_requests:
            return True
        assert self.started_at is not None
        return cfg.duration_s is not None and time.monotonic() - self.started_at >= cfg.duration_s

    def _load(self) -> None:
        issued = 0
        next_at = time.monotonic()
        while not self._stop.is_set() and not self._bounds_reached(issued):
            if self.rate <= 0:
                self._stop.wait(0.1)
                next_at = time.monotonic()
                continue
            delay = next_at - time.monotonic()
            if delay > 0:
                self._stop.wait(min(delay, 0.1))
                continue
            # Never burst to catch up after a stall (a slow server, a paused process).
            next_at = max(next_at + 1.0 / self.rate, time.monotonic() - 0.5)
            if not self._slots.acquire(timeout=1.0):
                continue
            try:
                self._pool.submit(self._request, issued)
            except RuntimeError:  # pool shut down
                self._slots.release()
                break
            issued += 1
        # Wait for requests in flight (users first: they may still issue mirror copies).
        for slots in (self._slots, self._mirror_slots):
            held = sum(
                slots.acquire(timeout=self.config.timeout_s * 2) for _ in range(self.config.workers * 4)
            )
            for _ in range(held):
                slots.release()
        self.done.set()

    def _pick_client(self) -> ClientMix | None:
        point = self.rng.random()
        for client in self.config.clients:
            if point < client.share:
                return client
            point -= client.share
        return None

    def _note_error(self, message: str) -> None:
        with self._lock:
            self.stats.watch_errors += 1
            self.last_error = message

    def _request(self, seq: int) -> None:
        try:
            self._serve_user(seq)
        except Exception as exc:  # an executor swallows exceptions: count them so tests see them
            with self._lock:
                self.stats.internal_errors += 1
                self.last_error = f"request {seq}: {exc!r}"
        finally:
            self._slots.release()

    def _serve_user(self, seq: int) -> None:
        row = self._order[seq % len(self._order)]
        client = self._pick_client()
        headers = dict(client.headers) if client else {}
        client_name = client.name if client else "default"
        table = self.table
        with self._lock:
            self.stats.by_client[client_name] += 1
        if table is None:
            with self._lock:
                self.stats.no_route += 1
            return
        decision = table.decide(headers, self.rng)
        request_id = uuid.uuid4().hex
        with self._lock:
            self.stats.sent += 1
            self.stats.by_route[decision.route] += 1
        if decision.mirror_revision is not None:
            self._mirror(decision.mirror_revision, row, request_id, decision.route, decision.mirror_authority)
        endpoint = self.endpoints(decision.revision) if decision.revision else None
        if endpoint is None:
            with self._lock:
                self.stats.unroutable += 1
            self.answers.append(
                Answer(request_id, row, client_name, decision.route, decision.revision, UNAVAILABLE, 0.0)
            )
            return
        answer = self._call(
            endpoint, row, request_id, client_name, decision.route, mirror=False, authority=decision.authority
        )
        truth = int(self.holdout.labels[row])
        with self._lock:
            counts = self.stats.revision(endpoint.revision)
            counts.served += 1
            counts.latency_ms += answer.latency_ms
            counts.errors += answer.code >= 500
            counts.correct += answer.code == 200 and answer.label == truth
        if answer.code == 200 and self.monitor is not None and self.rng.random() < self.config.label_share:
            low, high = self.config.label_delay_s
            delay = self.rng.uniform(low, high)
            self.monitor.label_later(request_id, truth, delay)  # the request's truth: every arm joins it

    def _mirror(self, revision: str, row: int, request_id: str, route: str, authority: str | None) -> None:
        """Fire and forget, as Envoy's shadowing is: a full queue drops the copy, never the user."""
        endpoint = self.endpoints(revision)
        if endpoint is None or not self._mirror_slots.acquire(blocking=False):
            with self._lock:
                self.stats.mirror_dropped += 1
            return

        def shadow() -> None:
            try:
                answer = self._call(
                    endpoint, row, request_id, "mirror", route, mirror=True, authority=authority
                )
                with self._lock:
                    counts = self.stats.revision(revision)
                    counts.mirrored += 1
                    counts.mirrored_errors += answer.code >= 500
            except Exception as exc:
                with self._lock:
                    self.stats.internal_errors += 1
                    self.last_error = f"mirror: {exc!r}"
            finally:
                self._mirror_slots.release()

        try:
            self._pool.submit(shadow)
        except RuntimeError:
            self._mirror_slots.release()

    # ---- HTTP

    def _connection(self, endpoint: Endpoint, fresh: bool = False) -> http.client.HTTPConnection:
        conns: dict[str, http.client.HTTPConnection] = self._local.__dict__.setdefault("conns", {})
        conn = conns.get(endpoint.http_address)
        if conn is None or fresh:
            if conn is not None:
                conn.close()
            conn = http.client.HTTPConnection(endpoint.http_address, timeout=self.config.timeout_s)
            conns[endpoint.http_address] = conn
            with self._lock:
                self._all_conns.append(conn)
        return conn

    def _post(
        self, endpoint: Endpoint, body: bytes, extra: Mapping[str, str] | None = None
    ) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json", **(extra or {})}
        for attempt in range(2):  # a kept-alive connection the server closed is retried once
            conn = self._connection(endpoint, fresh=attempt > 0)
            try:
                conn.request("POST", endpoint.infer_path, body=body, headers=headers)
                response = conn.getresponse()
                return response.status, response.read()
            except (OSError, http.client.HTTPException):
                conn.close()
        return UNAVAILABLE, b""

    def _call(
        self,
        endpoint: Endpoint,
        row: int,
        request_id: str,
        client: str,
        route: str,
        *,
        mirror: bool,
        authority: str | None = None,
    ) -> Answer:
        started = time.perf_counter()
        wall = time.time()
        # What the mesh forwards: Envoy's x-request-id (a mirror keeps it) and the authority.
        headers = {"x-request-id": request_id, **({"Host": authority} if authority else {})}
        code, data = self._post(endpoint, self._bodies[row], headers)
        latency_ms = (time.perf_counter() - started) * 1000.0
        self.metrics.observe(endpoint.revision, code, latency_ms)
        label, probabilities, version = parse_answer(data) if code == 200 else (None, None, None)
        answer = Answer(
            request_id,
            row,
            client,
            route,
            endpoint.revision,
            code,
            latency_ms,
            label,
            version,
            mirror,
            authority,
        )
        self.answers.append(answer)
        if code == 200 and self.monitor is not None and (not mirror or self.config.post_mirrors):
            self.monitor.prediction(
                {
                    "request_id": request_id,
                    "model": MODEL_NAME,
                    "revision": endpoint.revision,
                    "timestamp": wall,
                    "inputs": self.holdout.inputs(row),
                    "outputs": {LABEL: label, PROBABILITIES: probabilities},
                }
            )
        return answer

    # ---- views

    def snapshot(self) -> DriverStats:
        """A consistent copy of the counters."""
        with self._lock:
            return copy.deepcopy(self.stats)
