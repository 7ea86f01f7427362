"""Real Prometheus: the operator reads the monitor's batch counters exactly, not extrapolated.

The monitor bumps its persisted counters once per evaluation, in batches. `increase()` extrapolates
a batch's slope to the window's edges, and over a shadow step it reported about 10 % more pairs
than the monitor had counted, so a `minSamples: 500` floor let a promotion through on 452 pairs
(seen in `test_loop_shadow`). These tests drive the operator's own path (PrometheusMeasure and the
monitor observer) against a real Prometheus scraping a counter that moves the way the monitor's do.

Needs Debian's prometheus binary: apt-get update && apt-get install -y --no-install-recommends prometheus
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter, start_http_server
from testkit.prometheus import PrometheusServer, ScrapeTarget, free_port, prometheus_binary

from modelpilot.analysis.prometheus import PrometheusProvider
from modelpilot.controller.measure import PrometheusMeasure
from modelpilot.rollout.decision import AnalysisRequest
from modelpilot.serving.manifests import Owner

pytestmark = [
    pytest.mark.prometheus,
    pytest.mark.skipif(prometheus_binary() is None, reason="needs Debian's prometheus binary"),
]

NAMESPACE, NAME = "prod", "fraud"
LABELS = ("namespace", "model", "revision", "baseline", "outcome")
SHADOW = {"name": "shadow", "provider": "monitor", "metric": "shadowAgreement", "min": 0.97}


class MonitorCounters:
    """The monitor's shadow-pair counter on its own port: a test decides every batch."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.pairs = Counter("modelpilot_monitor_shadow_pairs", "pairs", LABELS, registry=self.registry)
        self.port = free_port()
        self.server, self.thread = start_http_server(self.port, addr="127.0.0.1", registry=self.registry)

    def count(self, revision: str, baseline: str, agree: int, disagree: int) -> None:
        for outcome, n in (("agree", agree), ("disagree", disagree)):
            child = self.pairs.labels(NAMESPACE, NAME, revision, baseline, outcome)
            if n:
                child.inc(n)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def world() -> Iterator[tuple[MonitorCounters, PrometheusServer, PrometheusProvider]]:
    counters = MonitorCounters()
    try:
        with (
            PrometheusServer([ScrapeTarget(f"127.0.0.1:{counters.port}")]) as server,
            PrometheusProvider(server.url, timeout_s=5) as provider,
        ):
            server.wait_until("up == 1", bool)
            yield counters, server, provider
    finally:
        counters.close()


def scraped(server: PrometheusServer, revision: str, baseline: str, agree: int, disagree: int) -> None:
    """Wait until Prometheus holds these totals, then one more scrape interval of them."""
    for outcome, n in (("agree", agree), ("disagree", disagree)):
        query = (
            f'modelpilot_monitor_shadow_pairs_total{{revision="{revision}",baseline="{baseline}",'
            f'outcome="{outcome}"}}'
        )
        server.wait_until(query, lambda r, n=n: bool(r) and float(r[0]["value"][1]) == n)
    time.sleep(1.2)


def pairs_seen(
    provider: PrometheusProvider, candidate: str, stable: str, since: float
) -> tuple[float, float]:
    """What one analysis look on the operator's path counts since ``since``: (pairs, disagreeing)."""
    request = AnalysisRequest(
        metrics=(SHADOW,), candidate=candidate, stable=stable, window=float(round(time.time() - since))
    )
    sample = PrometheusMeasure(provider.url, provider=provider)(request, Owner(NAME, NAMESPACE, "uid"))[
        "shadow"
    ]
    return sample.candidate_count, sample.candidate_errors


def test_batches_counted_since_the_step_started_exactly(world) -> None:
    counters, server, provider = world
    # An earlier step already counted 300 pairs of this candidate against this stable.
    counters.count("v2", "v1", 290, 10)
    scraped(server, "v2", "v1", 290, 10)
    started = time.time()
    time.sleep(1.5)
    agree, disagree = 290, 10
    for batch in range(5):  # one evaluation's batch every 1.5 s, as the monitor's counters move
        counters.count("v2", "v1", 95, 5 if batch % 2 else 0)
        agree, disagree = agree + 95, disagree + (5 if batch % 2 else 0)
        time.sleep(1.5)
    scraped(server, "v2", "v1", agree, disagree)
    assert pairs_seen(provider, "v2", "v1", started) == (5 * 95 + 10, 10)


def test_a_series_born_inside_the_step_counts_from_zero(world) -> None:
    counters, server, provider = world
    started = time.time()
    time.sleep(1.5)
    counters.count("v3", "v1", 0, 0)  # the monitor exposes a new pair's series at 0 first
    scraped(server, "v3", "v1", 0, 0)
    for _ in range(3):
        counters.count("v3", "v1", 150, 2)
        time.sleep(1.5)
    scraped(server, "v3", "v1", 450, 6)
    assert pairs_seen(provider, "v3", "v1", started) == (456, 6)
    # Pairs against another stable are not this rollout's.
    counters.count("v3", "v0", 1000, 0)
    scraped(server, "v3", "v0", 1000, 0)
    assert pairs_seen(provider, "v3", "v1", started) == (456, 6)
