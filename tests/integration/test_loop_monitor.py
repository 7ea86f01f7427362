"""Predictions and delayed ground truth from real Triton answers reach the real monitor service.

A canary split sends half the users to good v1 and half to the drifting v2 (which answers class 1
for half of its requests whatever the input); every answer is labelled a second later. The
monitor joins them and reports each revision's accuracy: exactly what the users got.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families
from testkit.loop.driver import DriverConfig, TrafficDriver
from testkit.loop.fleet import TritonFleet
from testkit.loop.monitor_process import MonitorHandle, running_monitor
from testkit.wait import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.triton]

NAME, STABLE, DRIFTING = "cancer", "stable1", "drift2"


@pytest.fixture
def monitor(tmp_path, namespace) -> Iterator[MonitorHandle]:
    with running_monitor(tmp_path / "monitor", namespace) as handle:
        yield handle


def gauge(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


def test_loop_monitor_sees_what_users_got(kube, namespace, zoo, monitor):
    host = f"{NAME}.{namespace}.svc.cluster.local"
    kube.apply(
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "metadata": {"name": NAME, "namespace": namespace},
            "spec": {
                "host": host,
                "subsets": [{"name": r, "labels": {"modelpilot.io/revision": r}} for r in (STABLE, DRIFTING)],
            },
        }
    )
    kube.apply(
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": NAME, "namespace": namespace},
            "spec": {
                "hosts": [NAME],
                "http": [
                    {
                        "name": "primary",
                        "route": [
                            {"destination": {"host": host, "subset": STABLE}, "weight": 50},
                            {"destination": {"host": host, "subset": DRIFTING}, "weight": 50},
                        ],
                    }
                ],
            },
        }
    )
    config = DriverConfig(
        namespace=namespace,
        name=NAME,
        rate=200,
        max_requests=600,
        duration_s=30,
        monitor_url=monitor.url,
        label_share=1.0,
        label_delay_s=(0.5, 1.0),
    )
    with TritonFleet(zoo) as fleet:
        fleet.start({STABLE: "good-v1", DRIFTING: "drifting-v2"})
        with TrafficDriver(kube, fleet.endpoint, zoo.holdout, config) as driver:
            assert driver.wait_done(30)
            wait_for(lambda: driver.monitor.pending() == (0, 0), 15, 0.1, what="every label posted")  # type: ignore[union-attr]
            stats = driver.snapshot()
            sent = driver.monitor.counts  # type: ignore[union-attr]
    assert sent.failed_posts == 0, sent.last_error
    assert sent.predictions_sent == sent.labels_sent == 600

    metrics: dict[str, dict[str, float | None]] = {}

    def evaluated() -> bool:
        text = monitor.metrics_text()
        for rev in (STABLE, DRIFTING):
            labels = {"namespace": namespace, "model": NAME, "revision": rev}
            metrics[rev] = {
                "labeled": gauge(text, "modelpilot_monitor_labeled_predictions", **labels),
                "accuracy": gauge(text, "modelpilot_monitor_performance", metric="accuracy", **labels),
            }
        return all(m["labeled"] == stats.revisions[rev].served for rev, m in metrics.items())

    time.sleep(0.5)
    wait_for(
        evaluated,
        30,
        0.3,
        what="the monitor to join every label",
        diagnose=lambda: f"{metrics}\n{monitor.log_tail()}",
    )
    for rev in (STABLE, DRIFTING):
        assert metrics[rev]["accuracy"] == pytest.approx(stats.revisions[rev].accuracy, abs=1e-9), metrics
    # 80% of the drifting answers are forced to class 1: users get ~0.7 instead of the trained 0.96.
    assert metrics[DRIFTING]["accuracy"] < zoo["drifting-v2"].accuracy - 0.08, metrics  # type: ignore[operator]
