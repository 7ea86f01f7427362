"""Promotion needs evidence: the rollout core, driven through whole steps, never passes a
sequential metric on "no regression detected yet"."""

from __future__ import annotations

from tests.unit.rollout.test_decide import World, deploy_v1, spec_with

from modelpilot.analysis.queries import LABEL_OUTCOMES, PREDICTED_CLASS
from modelpilot.analysis.sequential import horizon_reached
from modelpilot.api.spec import parse_spec
from modelpilot.controller.measure import PrometheusMeasure
from modelpilot.rollout.decide import analysis_request
from modelpilot.rollout.observe import MetricProblem, MetricSample
from modelpilot.routing.istio import TrafficPlan, virtual_service
from modelpilot.serving.manifests import Owner
from modelpilot.validation import validate

SEQ = {"name": "errors", "provider": "istio", "metric": "errorRate", "test": "sequential", "minSamples": 500}


def counts(nc: float, rate_c: float, ns: float, rate_s: float, name: str = "errors") -> dict:
    return {name: MetricSample(name, rate_c, rate_s, nc, ns, nc * rate_c, ns * rate_s)}


def canary(metric: dict, **analysis) -> World:
    steps = [{"setWeight": 10}, {"analysis": {"interval": "30s", "metrics": [metric], **analysis}}]
    w = World(spec_with(steps=steps))
    deploy_v1(w)
    w.spec = spec_with("2", steps=steps)
    w.step()
    w.settle()
    return w


def last_check(w: World) -> dict:
    return w.status["rollout"]["checks"][-1]


def test_no_evidence_either_way_is_inconclusive_and_the_step_extends():
    w = canary(SEQ)
    # 600 candidate requests at the same 1 % as stable: far too few to see a 1 -> 3 % regression.
    w.step(30, counts(600, 0.01, 5400, 0.01))
    check = last_check(w)
    assert check["outcome"] == "inconclusive"
    assert "collecting evidence" in check["metrics"][0]["message"]
    assert 0 < check["metrics"][0]["horizonProgress"] < 1
    assert w.status["stableRevision"] != w.rev and w.status["rollout"]["step"] == 1


def test_the_planned_horizon_passes_a_healthy_candidate_and_says_so():
    w = canary(SEQ)
    d = w.step(30, counts(20_000, 0.01, 180_000, 0.01))
    check = last_check(w)
    assert check["outcome"] == "pass" and check["metrics"][0]["passedBy"] == "horizon"
    passed = [e for e in d.events if e.reason == "AnalysisPassed"]
    assert passed and "errors by horizon" in passed[0].message
    w.settle()
    assert w.status["stableRevision"] == w.rev


def test_a_regression_at_the_horizon_is_rolled_back_not_promoted():
    w = canary(SEQ)
    w.step(30, counts(20_000, 0.02, 180_000, 0.01))
    assert w.status["phase"] == "RolledBack"


def test_relative_tolerance_shows_non_inferiority_early():
    metric = {**SEQ, "toleranceRelative": 1.0, "detectableRatio": 3}  # at most twice stable's errors
    w = canary(metric)
    w.step(30, counts(8_000, 0.005, 72_000, 0.005))
    metric_entry = last_check(w)["metrics"][0]
    assert metric_entry["passedBy"] == "nonInferiority", metric_entry
    # ... while the same traffic without a tolerance is still short of the horizon.
    w = canary(SEQ)
    w.step(30, counts(8_000, 0.005, 72_000, 0.005))
    assert last_check(w)["outcome"] == "inconclusive"


def test_max_samples_sets_the_horizon_directly():
    w = canary({**SEQ, "maxSamples": 1000})
    w.step(30, counts(999, 0.01, 9000, 0.01))
    assert last_check(w)["outcome"] == "inconclusive"
    w.step(30, counts(1200, 0.01, 10_800, 0.01))
    assert last_check(w)["metrics"][0]["passedBy"] == "horizon"


def test_horizon_grows_with_rarer_errors_and_the_detectable_ratio():
    def needed(rate: float, **kw) -> int:
        n = 100
        while not horizon_reached(rate * 9 * n, 9 * n, n, **kw).reached:
            n = int(n * 1.1) + 1
        return n

    assert needed(0.005) > needed(0.01) > needed(0.05)
    assert needed(0.01, detectable_ratio=1.5) > 2 * needed(0.01)


def test_extrapolated_counts_above_totals_still_roll_back_a_failing_candidate():
    w = canary(SEQ)
    # increase() extrapolates: errors may come out a little above requests.
    w.step(30, {"errors": MetricSample("errors", 1.0, 0.01, 1000, 9000, 1003.5, 90)})
    assert w.status["phase"] == "RolledBack"


DRIFT = {"name": "drift", "provider": "monitor", "metric": "predictionDrift"}


def classes(nc: float, share_c: float, ns: float, share_s: float) -> dict:
    return {
        "drift": MetricSample(
            "drift",
            None,
            candidate_classes={"label/0": nc * share_c, "label/1": nc * (1 - share_c)},
            stable_classes={"label/0": ns * share_s, "label/1": ns * (1 - share_s)},
            candidate_count=nc,
            stable_count=ns,
        )
    }


def test_prediction_drift_rolls_back_a_biased_candidate_with_drift_detected():
    w = canary(DRIFT)
    w.step(30, classes(2000, 0.57, 18_000, 0.37))  # 20 points more class 0
    assert w.status["phase"] == "RolledBack" and w.status["rollout"]["rollbackReason"] == "DriftDetected"


def test_prediction_drift_within_tolerance_passes_on_evidence_only():
    w = canary(DRIFT)
    w.step(30, classes(400, 0.38, 3600, 0.37))  # below minSamples: no verdict at all
    assert last_check(w)["outcome"] == "inconclusive"
    w.step(30, classes(520, 0.38, 4680, 0.37))  # a 1-point move: equivalence within 10 points shown
    assert last_check(w)["metrics"][0]["passedBy"] == "nonInferiority"
    w = canary(DRIFT)
    w.step(30, classes(520, 0.45, 4680, 0.37))  # an 8-point move: neither drift nor equivalence shown yet
    assert last_check(w)["outcome"] == "inconclusive" and w.status["phase"] != "RolledBack"


def test_accuracy_from_labels_uses_the_sequential_test_with_min_relative():
    metric = {"name": "acc", "provider": "monitor", "metric": "accuracy", "minRelative": 0.98}

    def labels(nc, acc_c, ns, acc_s):
        return {"acc": MetricSample("acc", acc_c, acc_s, nc, ns, nc * (1 - acc_c), ns * (1 - acc_s))}

    w = canary(metric)
    w.step(30, labels(3000, 0.80, 27_000, 0.95))
    assert w.status["phase"] == "RolledBack"
    w = canary(metric)
    w.step(30, labels(20_000, 0.95, 180_000, 0.95))
    assert last_check(w)["outcome"] == "pass"


def test_a_horizon_that_can_never_be_reached_is_invalid_spec():
    spec = parse_spec(
        spec_with(
            steps=[
                {
                    "analysis": {
                        "metrics": [
                            {**SEQ, "tolerance": 0.01, "detectableRatio": 1.01, "detectableIncrease": 0.005}
                        ]
                    }
                }
            ]
        )
    )
    assert any("could never pass" in p for p in validate(spec))


class RecordingProvider:
    """Answers every query and remembers it, as Prometheus would be asked."""

    def __init__(self) -> None:
        self.queries: list[str] = []

    def evaluate(self, query, *, at=None):
        from modelpilot.analysis.providers import MetricValue

        self.queries.append(query)
        return MetricValue.of(1.0)

    def evaluate_grouped(self, query, labels, *, at=None):
        self.queries.append(query)
        return {"/".join(["x"] * len(labels)): 10.0}


def test_triton_metrics_and_model_templates_are_measured_with_the_model_name():
    metrics = [
        {"name": "queue", "provider": "triton", "metric": "queueTime", "max": 20},
        {
            "name": "f",
            "provider": "prometheus",
            "metric": "custom",
            "max": 1,
            "query": 'sum(rate(nv_inference_request_failure{model="{{model}}"}[{{interval}}]))',
        },
    ]
    w = canary(metrics[0])
    w.spec["rollout"]["steps"][1]["analysis"]["metrics"] = metrics
    w.now += 30
    request = analysis_request(parse_spec(w.spec), w.status, w.now)
    assert request is not None and request.model == "m"
    provider = RecordingProvider()
    samples = PrometheusMeasure("http://unused", provider=provider)(request, Owner("d", "ns", "uid"))
    assert all(s.candidate is not None for s in samples.values()), samples
    assert any('model="m"' in q and "nv_inference_queue_duration_us" in q for q in provider.queries)


def test_monitor_sequential_metrics_read_the_monitor_counters():
    provider = RecordingProvider()
    w = canary(DRIFT)
    w.spec["rollout"]["steps"][1]["analysis"]["metrics"] = [
        DRIFT,
        {"name": "acc", "provider": "monitor", "metric": "accuracy"},
    ]
    w.now += 30
    request = analysis_request(parse_spec(w.spec), w.status, w.now)
    samples = PrometheusMeasure("http://unused", provider=provider)(request, Owner("d", "ns", "uid"))
    assert samples["drift"].candidate_classes == {"x/x": 10.0}
    assert any(PREDICTED_CLASS in q for q in provider.queries) and any(
        LABEL_OUTCOMES in q for q in provider.queries
    )


def test_kill_switch_withdraws_flag_and_candidate_routes():
    spec = parse_spec(
        {
            **spec_with("2"),
            "rollout": {
                "killSwitch": True,
                "flags": [
                    {"name": "beta", "revision": "candidate", "header": {"name": "x-beta", "exact": "1"}}
                ],
            },
        }
    )
    owner = Owner("d", "ns", "uid")
    live = virtual_service(
        owner, spec, TrafficPlan(stable="a", revisions=("a", "b"), candidate="b", weight=0)
    )
    killed = virtual_service(owner, spec, TrafficPlan(stable="a", revisions=("a",), suspend_flags=True))
    assert any(r["name"] == "flag-beta" for r in live["spec"]["http"])
    names = [r["name"] for r in killed["spec"]["http"]]
    assert names == ["revision-a", "primary"]
    assert all(d["destination"]["subset"] == "a" for r in killed["spec"]["http"] for d in r["route"])


def test_relative_latency_is_withheld_while_the_fallback_relieves_stable():
    p99 = {"name": "p99", "provider": "istio", "metric": "latencyP99", "maxRelative": 1.2, "minSamples": 10}
    sample = {"p99": MetricSample("p99", 500.0, 100.0, 1000, 9000, 0, 0)}  # candidate 5x slower
    w = canary(p99)
    w.status["fallback"] = {"active": True, "over": 0, "under": 0}
    w.step(30, sample)
    entry = last_check(w)["metrics"][0]
    assert entry["outcome"] == "inconclusive" and "confounded" in entry["message"]
    w.status["fallback"] = {"active": False}
    w.step(30, sample)
    assert last_check(w)["metrics"][0]["outcome"] == "fail"


def test_crd_schema_defaults_come_from_the_defaults_module():
    from pathlib import Path

    import yaml

    from modelpilot.api import defaults

    crd = yaml.safe_load((Path(__file__).parents[3] / "crds/modelpilot.io_modeldeployments.yaml").read_text())
    rollout = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][
        "rollout"
    ]
    props = rollout["properties"]
    assert props["progressDeadlineSeconds"]["default"] == defaults.PROGRESS_DEADLINE_SECONDS
    assert props["scaleDownDelaySeconds"]["default"] == defaults.SCALE_DOWN_DELAY_SECONDS
    spec = parse_spec({"model": {"name": "m", "repository": "s3://b/m"}})
    assert spec.rollout.progress_deadline_seconds == defaults.PROGRESS_DEADLINE_SECONDS
    assert spec.rollout.scale_down_delay_seconds == defaults.SCALE_DOWN_DELAY_SECONDS
    docs = (Path(__file__).parents[3] / "docs/analysis.md").read_text()
    for value in (
        f"minSamples: {defaults.MIN_SAMPLES}",
        f"power {defaults.POWER:g}",
        f"detectableRatio {defaults.DETECTABLE_RATIO:g}",
    ):
        assert value in docs, value


def test_a_long_metric_outage_takes_the_candidates_traffic_until_data_returns():
    w = canary({**SEQ, "maxSamples": 2000}, outageTimeout="2m")
    down = {
        "errors": MetricSample(
            "errors",
            None,
            reason="Prometheus at http://p unreachable: refused",
            problem=MetricProblem.UNREACHABLE,
        )
    }
    d = w.step(30, down)
    assert w.status["phase"] == "Paused" and d.weight == 10  # a short outage only waits
    w.step(5)  # between checks the step still waits, and says why
    held = next(c for c in w.status["conditions"] if c["type"] == "AnalysisHealthy")
    assert held["reason"] == "MetricsUnavailable" and "unreachable" in held["message"]
    for _ in range(4):
        d = w.step(30, down)
    assert d.weight == 0 and w.status["phase"] == "Paused"
    assert any(e.reason == "MetricsUnavailable" and "share is 0" in e.message for e in d.events)
    between = w.step(5)  # no check due: the share stays at 0
    assert between.weight == 0
    d = w.step(30, counts(1000, 0.01, 9000, 0.01))  # data is back: the step resumes at its weight
    assert d.weight == 10 and w.status["rollout"]["step"] == 1 and "metricsOutage" not in w.status["rollout"]
    w.step(30, counts(2500, 0.01, 22_500, 0.01))
    w.settle()
    assert w.status["stableRevision"] == w.rev


def test_an_invalid_spec_mid_rollout_takes_the_candidates_traffic_and_keeps_the_step():
    from modelpilot.rollout.decide import decide_invalid

    w = canary(SEQ)
    d = decide_invalid(1, w.status, ["spec.x: broken"], w.now)
    assert d.withdraw_candidate == w.rev and not d.apply_children
    assert (
        d.status["phase"] == "InvalidSpec"
        and d.status["rollout"]["step"] == 1
        and d.status["canaryWeight"] == 0
    )


class AgedMonitor(RecordingProvider):
    def __init__(self, age: float) -> None:
        super().__init__()
        self.age = age

    def evaluate(self, query, *, at=None):
        from modelpilot.analysis.providers import MetricValue

        self.queries.append(query)
        return MetricValue.of(self.age if "timestamp(" in query else 0.1)


def test_stale_monitor_gauges_are_inconclusive():
    share = {"name": "share", "provider": "monitor", "metric": "dataDriftShare", "max": 0.5}
    w = canary(share)
    w.now += 30
    request = analysis_request(parse_spec(w.spec), w.status, w.now)
    fresh = PrometheusMeasure("http://unused", provider=AgedMonitor(10.0))(request, Owner("d", "ns", "uid"))
    stale = PrometheusMeasure("http://unused", provider=AgedMonitor(31.0))(request, Owner("d", "ns", "uid"))
    assert fresh["share"].candidate == 0.1
    assert stale["share"].candidate is None and "stale" in stale["share"].reason


SHADOW_METRIC = {"name": "agree", "provider": "monitor", "metric": "shadowAgreement"}


def pairs(n: float, disagreement: float) -> dict:
    return {
        "agree": MetricSample(
            "agree", 1 - disagreement, None, candidate_count=n, candidate_errors=n * disagreement
        )
    }


def test_shadow_agreement_rolls_back_a_shadow_that_disagrees_on_ten_percent():
    w = canary(SHADOW_METRIC)
    w.step(30, pairs(1500, 0.10))
    assert (
        w.status["phase"] == "RolledBack" and "disagrees too often" in w.status["rollout"]["rollbackMessage"]
    )


def test_an_equally_good_shadow_passes_on_evidence_only():
    w = canary(SHADOW_METRIC)
    w.step(30, pairs(300, 0.0))  # below minSamples
    assert last_check(w)["outcome"] == "inconclusive"
    w.step(30, pairs(1500, 0.005))
    assert last_check(w)["metrics"][0]["passedBy"] in ("nonInferiority", "horizon")
    w.settle()
    assert w.status["stableRevision"] == w.rev


def test_shadow_agreement_reads_the_monitor_pair_counters():
    from modelpilot.analysis.queries import SHADOW_PAIRS

    class Pairs(RecordingProvider):
        def evaluate_grouped(self, query, labels, *, at=None):
            self.queries.append(query)
            return {"agree": 970.0, "disagree": 30.0}

    w = canary(SHADOW_METRIC)
    w.now += 30
    request = analysis_request(parse_spec(w.spec), w.status, w.now)
    provider = Pairs()
    sample = PrometheusMeasure("http://unused", provider=provider)(request, Owner("d", "ns", "uid"))["agree"]
    assert sample.candidate == 0.97 and sample.candidate_count == 1000 and sample.candidate_errors == 30
    assert any(SHADOW_PAIRS in q and f'baseline="{request.stable}"' in q for q in provider.queries)


def test_an_analysis_step_without_candidate_traffic_is_invalid_spec():
    steps = [{"abTest": {"header": {"name": "x-g", "exact": "b"}}}, {"analysis": {"metrics": [SEQ]}}]
    problems = validate(parse_spec(spec_with(steps=steps)))
    assert any(
        "steps[1].analysis: the candidate gets no traffic here (weight 0 after steps[0].abTest)" in p
        for p in problems
    ), problems
    assert not validate(parse_spec(spec_with(steps=[{"setWeight": 10}, {"analysis": {"metrics": [SEQ]}}])))
