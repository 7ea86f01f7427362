"""The closed-loop driver mirrors as Envoy does, and the monitor pairs what it records (no cluster, no Triton).

Envoy copies a mirrored request with its headers, so the copy carries the user's ``x-request-id``;
only the authority changes, to ``<host>-shadow``. The driver must do exactly that (it used to
rename the copy ``<id>.shadow``, which hid the monitor's duplicate-id bug). Fake Triton servers
record what reached them, a fake monitor records what the driver posts, and the real monitor
store and analyzer then pair the two arms of every mirrored request.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from testkit.loop.driver import DriverConfig, TrafficDriver
from testkit.loop.fleet import Endpoint
from testkit.loop.models import LABEL, PROBABILITIES, Holdout

from modelpilot.monitor.analyzer import Analyzer
from modelpilot.monitor.config import RuntimeRevisions, parse_config
from modelpilot.monitor.records import parse_labels, parse_predictions
from modelpilot.monitor.store import LabelBatch, PredictionBatch, Store

NS, NAME, STABLE, CANDIDATE = "ns", "cancer", "stable1", "cand2"
HOST = f"{NAME}.{NS}.svc.cluster.local"


class _Recorder(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler], revision: str = "") -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.revision = revision
        self.seen: list[dict] = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join(5)


class _Triton(BaseHTTPRequestHandler):
    """Answers a KServe v2 infer: class 1 when the first feature is positive; the candidate flips
    its answer when that feature is above 1."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        server: _Recorder = self.server  # type: ignore[assignment]
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        first = float(body["inputs"][0]["data"][0])
        label = int(first > 0)
        if server.revision == CANDIDATE and first > 1:
            label = 1 - label
        with server.lock:
            server.seen.append(
                {"request_id": self.headers.get("x-request-id"), "host": self.headers.get("Host")}
            )
        answer = json.dumps(
            {
                "model_version": "1",
                "outputs": [
                    {"name": LABEL, "data": [label]},
                    {"name": PROBABILITIES, "data": [1.0 - label, float(label)]},
                ],
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *_: object) -> None:
        pass


class _Monitor(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        server: _Recorder = self.server  # type: ignore[assignment]
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with server.lock:
            server.seen.append({"path": self.path, "body": body})
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *_: object) -> None:
        pass


class _Kube:
    def get(self, kind: str, name: str, namespace: str | None = None) -> dict | None:
        if kind == "VirtualService":
            return {
                "metadata": {"resourceVersion": "1"},
                "spec": {
                    "hosts": [NAME],
                    "http": [
                        {
                            "name": "primary",
                            "route": [{"destination": {"host": HOST, "subset": STABLE}}],
                            "mirror": {"host": HOST, "subset": CANDIDATE},
                            "mirrorPercentage": {"value": 100.0},
                        }
                    ],
                },
            }
        return {
            "metadata": {"resourceVersion": "1"},
            "spec": {
                "host": HOST,
                "subsets": [
                    {"name": r, "labels": {"modelpilot.io/revision": r}} for r in (STABLE, CANDIDATE)
                ],
            },
        }


@pytest.fixture
def servers() -> Iterator[dict[str, _Recorder]]:
    made = {
        STABLE: _Recorder(_Triton, STABLE),
        CANDIDATE: _Recorder(_Triton, CANDIDATE),
        "monitor": _Recorder(_Monitor),
    }
    yield made
    for server in made.values():
        server.stop()


def test_mirrors_carry_the_request_id_and_a_shadow_authority_and_both_arms_pair(servers, tmp_path):
    rng = np.random.default_rng(0)
    holdout = Holdout(rng.normal(size=(40, 2)).astype(np.float32), rng.integers(0, 2, 40), ("a", "b"))
    endpoints = {r: Endpoint(r, r, NAME, "1", servers[r].url, "", None) for r in (STABLE, CANDIDATE)}  # type: ignore[arg-type]
    config = DriverConfig(
        namespace=NS,
        name=NAME,
        rate=100,
        max_requests=120,
        duration_s=30,
        monitor_url=servers["monitor"].url,
        label_share=1.0,
        label_delay_s=(0.05, 0.1),
    )
    with TrafficDriver(_Kube(), endpoints.get, holdout, config) as driver:
        assert driver.wait_done(30)
        deadline = time.monotonic() + 15
        while driver.monitor.pending() != (0, 0) and time.monotonic() < deadline:  # type: ignore[union-attr]
            time.sleep(0.05)
        stats = driver.snapshot()
    assert stats.internal_errors == 0, driver.last_error
    users, mirrors = servers[STABLE].seen, servers[CANDIDATE].seen
    assert len(users) == 120 and len(mirrors) + stats.mirror_dropped == 120 and mirrors
    assert {u["host"] for u in users} == {NAME} and {m["host"] for m in mirrors} == {f"{NAME}-shadow"}
    user_ids = {u["request_id"] for u in users}
    assert len(user_ids) == 120 and {m["request_id"] for m in mirrors} <= user_ids  # the same x-request-id

    posted = servers["monitor"].seen
    records = [r for p in posted if p["path"] == "/v1/predictions" for r in p["body"]["records"]]
    labels = [x for p in posted if p["path"] == "/v1/labels" for x in p["body"]["labels"]]
    arms = Counter(r["request_id"] for r in records)
    assert not any(rid.endswith(".shadow") for rid in arms)
    assert {rid for rid, n in arms.items() if n == 2} == {m["request_id"] for m in mirrors}
    assert sorted(x["request_id"] for x in labels) == sorted(user_ids)  # one label per request, not per arm

    # The real monitor store and analyzer keep both arms and pair them, exactly.
    monitor_config = parse_config(
        {"models": [{"name": NAME, "namespace": NS, "outputs": {"prediction": LABEL}}]}
    )
    now = time.time() + 1
    with Store(tmp_path / "loop.db", clock=lambda: now) as store:
        store.write_one(PredictionBatch(parse_predictions({"records": records}, now=now, max_records=10_000)))
        store.write_one(
            LabelBatch(parse_labels({"labels": labels}, now=now, max_records=10_000, default_model=NAME))
        )
        analyzer = Analyzer(monitor_config, store, clock=lambda: now)
        # The operator declares the stable (revisions.yaml): here both revisions start together.
        analyzer.set_revisions({NAME: RuntimeRevisions(stable=STABLE, candidate=CANDIDATE)})
        evaluation = analyzer.evaluate(now)[NAME]
        assert store.count("joins") == len(records)  # every arm got its request's label
    answers = {(a.request_id, a.mirror): a.label for a in driver.answers}
    expected = Counter(
        "agree" if answers[(m["request_id"], False)] == answers[(m["request_id"], True)] else "disagree"
        for m in mirrors
    )
    assert evaluation.stable == STABLE
    pairs = evaluation.revision(CANDIDATE).shadow_pairs
    assert pairs == {(STABLE, "agree"): expected["agree"], (STABLE, "disagree"): expected["disagree"]}
    assert expected["disagree"] > 0  # the candidate flips where the first feature is above 1
    assert evaluation.revision(CANDIDATE).shadow.features[0].name == "a"  # ... and the view says so
