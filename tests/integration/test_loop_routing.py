"""The traffic driver follows Istio routes it reads from the real API server, to real Triton servers.

No operator here: each test applies its own DestinationRule and VirtualService. What reached each
revision is checked three ways: the driver's counts, Triton's own ``nv_inference_*`` counters
(what the servers really received) and, for the weights, Prometheus scraping the driver.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from testkit.loop.driver import ClientMix, DriverConfig, TrafficDriver
from testkit.loop.fleet import TritonFleet, triton_counter
from testkit.loop.models import VARIANTS
from testkit.prometheus import ScrapeTarget
from testkit.wait import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.triton]

NAME = "cancer"
STABLE, CANDIDATE, DRIFTING = "stable1", "cand2", "drift2"
SUCCESS = "nv_inference_request_success"


@pytest.fixture(scope="module")
def fleet(zoo) -> Iterator[TritonFleet]:
    with TritonFleet(zoo) as fleet:
        fleet.start({STABLE: "good-v1", CANDIDATE: "good-v2", DRIFTING: "drifting-v2"})
        yield fleet


def host(ns: str) -> str:
    return f"{NAME}.{ns}.svc.cluster.local"


def dest(ns: str, subset: str, weight: int | None = None) -> dict:
    out: dict = {"destination": {"host": host(ns), "subset": subset, "port": {"number": 8000}}}
    if weight is not None:
        out["weight"] = weight
    return out


def apply_routes(kube, ns: str, http: list[dict]) -> None:
    kube.apply(
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "metadata": {"name": NAME, "namespace": ns},
            "spec": {
                "host": host(ns),
                "subsets": [
                    {"name": r, "labels": {"modelpilot.io/revision": r}}
                    for r in (STABLE, CANDIDATE, DRIFTING)
                ],
            },
        }
    )
    kube.apply(
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": NAME, "namespace": ns},
            "spec": {"hosts": [NAME], "gateways": ["mesh"], "http": http},
        }
    )


def primary(ns: str, stable: int, candidate: int = 0, mirror: float | None = None) -> dict:
    route = [dest(ns, STABLE, stable)] + ([dest(ns, CANDIDATE, candidate)] if candidate else [])
    out: dict = {"name": "primary", "route": route}
    if mirror is not None:
        out["mirror"] = {"host": host(ns), "subset": CANDIDATE, "port": {"number": 8000}}
        out["mirrorPercentage"] = {"value": mirror}
    return out


def served(fleet: TritonFleet) -> dict[str, float]:
    return {rev: triton_counter(e, SUCCESS) for rev, e in fleet.endpoints().items()}


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before.get(k, 0.0) for k in after if after[k] - before.get(k, 0.0)}


def test_loop_driver_follows_weight_changes(kube, namespace, fleet, zoo, prometheus):
    apply_routes(kube, namespace, [primary(namespace, 100)])
    before = served(fleet)
    config = DriverConfig(namespace=namespace, name=NAME, rate=400, duration_s=60, poll_interval_s=0.5)
    with TrafficDriver(kube, fleet.endpoint, zoo.holdout, config) as driver:
        prometheus.set_file_targets([ScrapeTarget(driver.metrics_address, {"app": "loop-driver"})])
        try:
            wait_for(lambda: driver.snapshot().sent >= 300, 20, 0.1, what="300 requests at 100/0")
            at_100 = driver.snapshot()
            assert CANDIDATE not in at_100.revisions, at_100

            apply_routes(kube, namespace, [primary(namespace, 80, 20)])
            changed = time.monotonic()
            wait_for(
                lambda: driver.table is not None and driver.table.weights() == {STABLE: 80, CANDIDATE: 20},
                5,
                0.05,
                what="the driver to see 80/20",
            )
            follow_s = time.monotonic() - changed
            start = driver.snapshot()
            wait_for(
                lambda: driver.snapshot().sent - start.sent >= 1500, 30, 0.1, what="1500 requests at 80/20"
            )
            driver.set_rate(0)
            time.sleep(0.5)  # let the last requests in flight be answered
            end = driver.snapshot()
            # Prometheus sees the same counts the driver exported, labelled as Istio labels them.
            query = (
                f'sum(istio_requests_total{{reporter="destination",destination_workload_namespace="{namespace}",'
                f'destination_workload="{NAME}-{CANDIDATE}",destination_version="{CANDIDATE}",response_code="200"}})'
            )
            result = prometheus.wait_until(
                query,
                lambda r: bool(r) and float(r[0]["value"][1]) == end.revisions[CANDIDATE].served,
                timeout_s=15,
            )
        finally:
            prometheus.set_file_targets([])

    assert follow_s < 1.5, f"took {follow_s:.2f}s to follow the VirtualService"
    got = {
        rev: end.revisions[rev].served - (start.revisions.get(rev).served if rev in start.revisions else 0)
        for rev in (STABLE, CANDIDATE)
    }
    share = got[CANDIDATE] / sum(got.values())
    assert 0.16 <= share <= 0.24, got  # binomial sd at n=1500 is ~1 point; this is 4 sd
    assert float(result[0]["value"][1]) == end.revisions[CANDIDATE].served
    assert end.unroutable == end.no_route == end.internal_errors == 0, driver.last_error
    # The servers really answered every request the driver counted.
    assert delta(served(fleet), before) == {
        rev: float(end.revisions[rev].served) for rev in (STABLE, CANDIDATE)
    }
    # And the answers are the trained models' own: each revision's labels equal its weights' predictions.
    for rev, variant in ((STABLE, "good-v1"), (CANDIDATE, "good-v2")):
        answers = [a for a in driver.answers if a.revision == rev and a.code == 200]
        expected = zoo[variant].weights.predict(zoo.holdout.features[[a.row for a in answers]])
        np.testing.assert_array_equal([a.label for a in answers], expected)
        assert {a.model_version for a in answers} == {zoo[variant].version}


def test_loop_drifting_model_biases_its_answers(kube, namespace, fleet, zoo):
    apply_routes(kube, namespace, [{"name": "primary", "route": [dest(namespace, DRIFTING)]}])
    config = DriverConfig(namespace=namespace, name=NAME, rate=400, max_requests=600, duration_s=30)
    with TrafficDriver(kube, fleet.endpoint, zoo.holdout, config) as driver:
        assert driver.wait_done(30)
        stats = driver.snapshot()
        answers = [a for a in driver.answers if a.code == 200]

    assert len(answers) == 600 and stats.revisions[DRIFTING].errors == stats.internal_errors == 0
    honest = zoo["drifting-v2"].weights.predict(zoo.holdout.features[[a.row for a in answers]])
    labels = np.array([a.label for a in answers])
    # Where the trained model says 0, only the injected bias can answer 1: its configured share of those.
    share = VARIANTS["drifting-v2"].bias_share
    flipped = (labels[honest == 0] == 1).mean()
    assert share - 0.1 <= flipped <= share + 0.1, (flipped, share)
    assert (labels[honest == 1] == 1).all()
    accuracy = stats.revisions[DRIFTING].accuracy
    assert accuracy is not None and accuracy < zoo["drifting-v2"].accuracy - 0.1


def test_loop_mirror_copies_half_to_the_candidate(kube, namespace, fleet, zoo):
    apply_routes(kube, namespace, [primary(namespace, 100, mirror=50.0)])
    before = served(fleet)
    config = DriverConfig(namespace=namespace, name=NAME, rate=400, max_requests=1000, duration_s=30)
    with TrafficDriver(kube, fleet.endpoint, zoo.holdout, config) as driver:
        assert driver.wait_done(30)
        time.sleep(0.3)  # mirror copies are fire-and-forget: let the last ones land
        stats = driver.snapshot()
        answers = list(driver.answers)

    assert stats.sent == 1000 and stats.mirror_dropped == stats.internal_errors == 0
    assert 0.44 <= stats.revisions[CANDIDATE].mirrored / stats.sent <= 0.56, stats
    # Users only ever saw the stable revision's answers.
    user = [a for a in answers if not a.mirror]
    assert (
        len(user) == 1000
        and {a.revision for a in user} == {STABLE}
        and {a.model_version for a in user} == {"1"}
    )
    assert stats.revisions[STABLE].served == 1000 and stats.revisions[CANDIDATE].served == 0
    shadows = [a for a in answers if a.mirror]
    assert {a.revision for a in shadows} == {CANDIDATE} and {a.model_version for a in shadows} == {"2"}
    # As Envoy mirrors: the user's x-request-id, and the authority with -shadow appended.
    assert {a.request_id for a in shadows} <= {a.request_id for a in user}
    assert {a.authority for a in user} == {NAME} and {a.authority for a in shadows} == {f"{NAME}-shadow"}
    got = delta(served(fleet), before)
    assert got == {STABLE: 1000.0, CANDIDATE: float(stats.revisions[CANDIDATE].mirrored)}


@pytest.mark.parametrize(
    ("match", "arm", "other"),
    [
        ({"headers": {"x-group": {"exact": "beta"}}}, {"x-group": "beta"}, {"x-group": "alpha"}),
        (
            {"headers": {"cookie": {"regex": "^(.*?;\\s*)?(arm=b)(;.*)?$"}}},
            {"cookie": "session=42; arm=b"},
            {"cookie": "arm=bb; session=1"},
        ),
    ],
    ids=["header", "cookie"],
)
def test_loop_only_matching_requests_reach_the_candidate(kube, namespace, fleet, zoo, match, arm, other):
    flag = {
        "name": f"revision-{CANDIDATE}",
        "match": [{"headers": {"x-modelpilot-revision": {"exact": CANDIDATE}}}],
        "route": [dest(namespace, CANDIDATE)],
    }
    ab = {"name": "ab-candidate", "match": [match], "route": [dest(namespace, CANDIDATE)]}
    apply_routes(kube, namespace, [flag, ab, primary(namespace, 100)])
    before = served(fleet)
    clients = (
        ClientMix("arm-b", 0.3, arm),
        ClientMix("arm-other", 0.2, other),
        ClientMix("flag", 0.05, {"X-ModelPilot-Revision": CANDIDATE}),
    )
    config = DriverConfig(
        namespace=namespace, name=NAME, rate=400, max_requests=800, duration_s=30, clients=clients
    )
    with TrafficDriver(kube, fleet.endpoint, zoo.holdout, config) as driver:
        assert driver.wait_done(30)
        stats = driver.snapshot()
        answers = list(driver.answers)

    by_client: dict[str, set] = {}
    for a in answers:
        by_client.setdefault(a.client, set()).add((a.route, a.revision))
    assert by_client["arm-b"] == {("ab-candidate", CANDIDATE)}
    assert by_client["flag"] == {
        (f"revision-{CANDIDATE}", CANDIDATE)
    }  # header names match case-insensitively
    assert by_client["arm-other"] == by_client["default"] == {("primary", STABLE)}
    assert 0.25 <= stats.by_client["arm-b"] / stats.sent <= 0.35, stats.by_client
    to_candidate = stats.by_client["arm-b"] + stats.by_client["flag"]
    assert delta(served(fleet), before) == {
        STABLE: float(stats.sent - to_candidate),
        CANDIDATE: float(to_candidate),
    }


class _FakeMonitor(BaseHTTPRequestHandler):
    """Records what the driver posts; the real monitor service is exercised through the same HTTP API."""

    received: list[tuple[float, str, dict]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.received.append((time.time(), self.path, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"accepted": true}')

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def fake_monitor() -> Iterator[tuple[str, list]]:
    _FakeMonitor.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeMonitor)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", _FakeMonitor.received
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_loop_predictions_then_delayed_labels_reach_the_monitor(kube, namespace, fleet, zoo, fake_monitor):
    url, received = fake_monitor
    apply_routes(kube, namespace, [primary(namespace, 100, mirror=100.0)])
    config = DriverConfig(
        namespace=namespace,
        name=NAME,
        rate=200,
        max_requests=300,
        duration_s=30,
        monitor_url=url,
        label_share=0.5,
        label_delay_s=(1.0, 1.5),
    )
    with TrafficDriver(kube, fleet.endpoint, zoo.holdout, config) as driver:
        assert driver.wait_done(30)
        wait_for(lambda: driver.monitor.pending() == (0, 0), 15, 0.1, what="every label posted")  # type: ignore[union-attr]
        answers = {a.request_id: a for a in driver.answers if not a.mirror}  # a mirror shares the id
        dropped = driver.stats.mirror_dropped

    labels = [(t, lab) for t, path, body in received if path == "/v1/labels" for lab in body["labels"]]
    # A mirrored request's two arms are posted under the same request id, one per revision.
    records = [(t, r) for t, path, body in received if path == "/v1/predictions" for r in body["records"]]
    predictions = {r["request_id"]: (t, r) for t, r in records if r["revision"] == STABLE}
    user = [p for _, p in predictions.values()]
    shadow = [r for _, r in records if r["revision"] != STABLE]
    assert not any(r["request_id"].endswith(".shadow") for _, r in records)
    assert {r["request_id"] for r in shadow} <= set(predictions)
    assert len(user) == 300 and {p["revision"] for p in user} == {STABLE}
    # Shadow copies are fire-and-forget, as Envoy's are: under load some are dropped, and counted.
    assert len(shadow) + dropped == 300 and dropped <= 30 and {p["revision"] for p in shadow} == {CANDIDATE}
    record = user[0]
    assert record["model"] == "cancer" and set(record["inputs"]) == set(zoo.holdout.feature_names)
    assert record["outputs"]["LABEL"] == answers[record["request_id"]].label
    assert len(record["outputs"]["PROBABILITIES"]) == 2

    assert 100 <= len(labels) <= 200  # a binomial half of 300
    for t, lab in labels:
        _, prediction = predictions[lab["request_id"]]
        assert lab["source"] == "delayed_label"
        assert lab["label"] == int(zoo.holdout.labels[answers[lab["request_id"]].row])
        assert t - prediction["timestamp"] >= 1.0, "labels come after the configured delay"
        assert lab["timestamp"] >= prediction["timestamp"]
    # One label per request: the monitor joins it to both arms, so the shadow gets the same truth.
    assert len({lab["request_id"] for _, lab in labels}) == len(labels)
