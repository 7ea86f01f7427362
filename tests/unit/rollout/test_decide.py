"""The pure rollout core, driven through whole rollouts in microseconds, with no cluster."""

from __future__ import annotations

import copy

import pytest

from modelpilot.api.spec import parse_spec
from modelpilot.rollout.decide import analysis_request, decide
from modelpilot.rollout.observe import MetricProblem, MetricSample, Observations, RevisionState

BASE = {
    "model": {"name": "m", "repository": "s3://b/models", "version": "1", "format": "onnx"},
    "serving": {"replicas": 2, "resources": {"gpus": 1}},
}
ERRORS = {"name": "errors", "provider": "istio", "metric": "errorRate", "max": 0.05, "minSamples": 100}


def spec_with(version: str = "1", **rollout) -> dict:
    spec = copy.deepcopy(BASE)
    spec["model"]["version"] = version
    spec["rollout"] = rollout
    return spec


class World:
    """Replays what the shell would do: keeps status and the Deployments' readiness."""

    def __init__(self, spec: dict, now: float = 1_000_000.0) -> None:
        self.spec = spec
        self.status: dict = {}
        self.now = now
        self.available: set[str] = set()
        self.decision = None
        self.request: str | None = None

    def revisions(self) -> dict[str, RevisionState]:
        out = {}
        if self.decision:
            for rev, replicas in self.decision.replicas.items():
                n = replicas if rev in self.available else 0
                out[rev] = RevisionState(rev, replicas=replicas, ready=n, available=n, updated=replicas)
        return out

    def step(self, advance: float = 0.0, metrics: dict | None = None, invalid=None):
        self.now += advance
        spec = parse_spec(self.spec)
        req = analysis_request(spec, self.status, self.now)
        samples = None
        if req is not None:
            samples = metrics if metrics is not None else {}
        obs = Observations(revisions=self.revisions(), metrics=samples, request=self.request)
        self.decision = decide(spec, 1, self.status, obs, self.now, invalid)
        self.status = self.decision.status
        return self.decision

    def settle(self):
        """Mark every wanted revision Available, as the Deployment controller would."""
        self.available |= set(self.decision.replicas)
        return self.step()

    @property
    def rev(self) -> str:
        return parse_spec(self.spec).revision


def good(n: float = 1000.0) -> dict:
    return {"errors": MetricSample("errors", 0.001, 0.001, n, n, n * 0.001, n * 0.001)}


def bad(n: float = 1000.0) -> dict:
    return {"errors": MetricSample("errors", 0.2, 0.001, n, n, n * 0.2, n * 0.001)}


def deploy_v1(world: World) -> str:
    world.step()
    world.settle()
    assert world.status["phase"] == "Ready"
    return world.status["stableRevision"]


def test_first_revision_becomes_stable_once_available():
    w = World(spec_with())
    d = w.step()
    assert d.replicas == {w.rev: 2} and d.status["phase"] == "Progressing"
    assert [e.reason for e in d.events] == ["RevisionCreated"]
    d = w.settle()
    assert d.status["phase"] == "Ready" and d.status["stableRevision"] == w.rev
    assert {c["type"]: c["status"] for c in d.status["conditions"]}["Ready"] == "True"


def test_without_steps_the_new_revision_replaces_the_old_once_available():
    w = World(spec_with(scaleDownDelaySeconds=30))
    old = deploy_v1(w)
    w.spec = spec_with("2", scaleDownDelaySeconds=30)
    d = w.step()
    assert d.replicas == {old: 2, w.rev: 2}, "the old revision keeps serving until the new one is up"
    assert d.status["stableRevision"] == old and d.weight == 0
    d = w.settle()
    assert d.status["stableRevision"] == w.rev and "Promoted" in [e.reason for e in d.events]
    assert d.replicas[old] == 2, "the old revision is retired only after the scale-down delay"
    d = w.step(advance=31)
    assert old not in d.replicas


def test_canary_walks_its_steps_and_promotes():
    steps = [
        {"setWeight": 10},
        {"analysis": {"interval": "10s", "metrics": [ERRORS]}},
        {"setWeight": 50},
        {"pause": {"duration": "1m"}},
    ]
    w = World(spec_with(steps=steps))
    old = deploy_v1(w)
    w.spec = spec_with("2", steps=steps)
    w.step()
    d = w.settle()
    assert d.weight == 10 and d.candidate == w.rev and w.status["rollout"]["step"] == 1
    d = w.step(advance=10, metrics=good())
    assert d.weight == 50 and w.status["rollout"]["step"] == 3
    d = w.step(advance=30)
    assert d.weight == 50 and w.status["phase"] == "Progressing"
    d = w.step(advance=31)
    assert d.replicas[w.rev] == 2 and w.status["stableRevision"] != w.rev, "scaled to full size first"
    d = w.settle()
    assert w.status["stableRevision"] == w.rev and d.weight == 0 and d.candidate is None
    assert old in d.replicas  # retiring after the delay


def test_failed_analysis_rolls_back_and_does_not_retry_the_same_revision():
    steps = [{"setWeight": 20}, {"analysis": {"interval": "10s", "failureLimit": 1, "metrics": [ERRORS]}}]
    w = World(spec_with(steps=steps))
    old = deploy_v1(w)
    w.spec = spec_with("2", steps=steps)
    w.step()
    w.settle()
    d = w.step(advance=10, metrics=bad())
    assert w.status["phase"] == "Progressing" and d.weight == 20, "one failure is within the limit"
    d = w.step(advance=10, metrics=bad())
    assert w.status["phase"] == "RolledBack"
    assert d.weight == 0 and d.mirror_percent == 0 and d.replicas[w.rev] == 0 and d.replicas[old] == 2
    assert w.status["stableRevision"] == old
    warning = [e for e in d.events if e.reason == "RolledBack"]
    assert warning and warning[0].type == "Warning" and "errors=0.2" in warning[0].message
    degraded = {c["type"]: c for c in w.status["conditions"]}["Degraded"]
    assert degraded["status"] == "True" and degraded["reason"] == "AnalysisFailed"
    # Later passes keep it rolled back: the bad revision is not retried.
    d = w.step(advance=60)
    assert w.status["phase"] == "RolledBack" and d.replicas[w.rev] == 0
    # A retry request starts it again from step 0.
    w.request = "retry@t1"
    d = w.step()
    assert w.status["rollout"]["candidate"] == w.rev and w.status["rollout"]["step"] == 0
    assert d.replicas[w.rev] == 1, "scaled back up, to its 20% share of 2 replicas"


def test_sequential_regression_rolls_back_at_once():
    metric = {
        "name": "errors",
        "provider": "istio",
        "metric": "errorRate",
        "test": "sequential",
        "minSamples": 200,
    }
    steps = [{"setWeight": 50}, {"analysis": {"interval": "10s", "failureLimit": 5, "metrics": [metric]}}]
    w = World(spec_with(steps=steps))
    deploy_v1(w)
    w.spec = spec_with("2", steps=steps)
    w.step()
    w.settle()
    w.step(advance=10, metrics={"errors": MetricSample("errors", 0.06, 0.01, 5000, 5000, 300, 50)})
    assert w.status["phase"] == "RolledBack"
    assert w.status["rollout"]["sequential"]["errors"] < 0.05


def test_missing_data_never_promotes_and_pauses_after_the_inconclusive_limit():
    steps = [{"analysis": {"interval": "5s", "inconclusiveLimit": 3, "metrics": [ERRORS]}}]
    w = World(spec_with(steps=steps))
    old = deploy_v1(w)
    w.spec = spec_with("2", steps=steps)
    w.step()
    w.settle()
    no_data = {"errors": MetricSample("errors", None, None, reason="no data")}
    too_few = {"errors": MetricSample("errors", 0.0, 0.0, 10, 10, 0, 0)}
    for samples in (no_data, too_few, no_data, too_few, no_data):
        w.step(advance=5, metrics=samples)
        assert w.status["stableRevision"] == old
    assert w.status["phase"] == "Paused"
    assert w.status["rollout"]["pausedReason"] == "Inconclusive"
    # Good data later does not resume a paused rollout by itself...
    w.step(advance=5, metrics=good())
    assert w.status["stableRevision"] == old
    # ... a person does.
    w.request = "resume@t2"
    w.step(advance=5, metrics=good())
    w.settle()
    assert w.status["stableRevision"] == w.rev


def test_unreachable_prometheus_pauses_with_a_condition_and_resumes():
    steps = [{"analysis": {"interval": "5s", "metrics": [ERRORS]}}]
    w = World(spec_with(steps=steps))
    deploy_v1(w)
    w.spec = spec_with("2", steps=steps)
    w.step()
    w.settle()
    down = {
        "errors": MetricSample(
            "errors",
            None,
            None,
            reason="Prometheus at http://x unreachable: refused",
            problem=MetricProblem.UNREACHABLE,
        )
    }
    w.step(advance=5, metrics=down)
    assert w.status["phase"] == "Paused"
    cond = {c["type"]: c for c in w.status["conditions"]}["AnalysisHealthy"]
    assert cond["status"] == "False" and cond["reason"] == "MetricsUnavailable"
    w.step(advance=5, metrics=good())
    w.settle()
    assert w.status["stableRevision"] == w.rev and w.status["phase"] == "Ready"


def test_shadow_then_ab_then_blue_green_plans():
    steps = [
        {"shadow": {"mirrorPercentage": 25, "duration": "10s", "analysis": False}},
        {"abTest": {"header": {"name": "x-group", "exact": "beta"}, "duration": "10s"}},
        {"blueGreen": {"duration": "10s"}},
    ]
    w = World(spec_with(steps=steps))
    deploy_v1(w)
    w.spec = spec_with("2", steps=steps)
    w.step()
    d = w.settle()
    assert d.mirror_percent == 25 and d.weight == 0 and d.candidate == w.rev and d.match is None
    d = w.step(advance=10)
    assert d.mirror_percent == 0 and d.match == {"header": {"name": "x-group", "exact": "beta"}}
    d = w.step(advance=10)
    assert d.preview == w.rev and d.match is None and d.weight == 0
    d = w.step(advance=10)
    assert w.status["stableRevision"] == w.rev and d.preview is None


def test_kill_switch_sends_everything_to_stable_and_holds():
    steps = [{"setWeight": 30}, {"pause": {}}]
    w = World(spec_with(steps=steps))
    old = deploy_v1(w)
    w.spec = spec_with("2", steps=steps)
    w.step()
    d = w.settle()
    assert d.weight == 30 and w.status["phase"] == "Paused"  # paused until promoted
    w.spec = spec_with("2", steps=steps, killSwitch=True)
    d = w.step()
    assert (
        d.weight == 0 and w.status["stableRevision"] == old and "KillSwitch" in [e.reason for e in d.events]
    )
    # 100% stable for everyone: no candidate to route to, no pods for it, flag routes withdrawn.
    assert d.candidate is None and d.replicas[w.rev] == 0 and d.suspend_flags
    w.spec = spec_with("2", steps=steps)
    d = w.step()
    assert not d.suspend_flags and d.replicas[w.rev] > 0
    assert d.weight == 0  # the candidate's pods are coming back: no traffic until they are Available
    d = w.settle()
    assert d.weight == 30 and d.candidate == w.rev


def test_manual_promote_and_abort():
    steps = [{"setWeight": 10}, {"pause": {}}]
    w = World(spec_with(steps=steps))
    deploy_v1(w)
    w.spec = spec_with("2", steps=steps)
    w.step()
    w.settle()
    w.request = "promote@a"  # moves past the pause: the last step, so the candidate is promoted
    w.step()
    w.settle()
    assert w.status["stableRevision"] == w.rev
    w.spec = spec_with("3", steps=steps)
    w.step()
    w.settle()
    w.request = "abort@b"
    d = w.step()
    assert w.status["phase"] == "RolledBack" and w.status["rollout"]["rollbackReason"] == "ManualAbort"
    assert d.weight == 0
    # The same request seen again (a restart re-reads the annotation) is not acted on twice.
    d = w.step()
    assert w.status["phase"] == "RolledBack"


def test_progress_deadline_rolls_back_with_insufficient_gpu():
    w = World(spec_with(progressDeadlineSeconds=60, steps=[{"setWeight": 10}]))
    old = deploy_v1(w)
    w.spec = spec_with("2", progressDeadlineSeconds=60, steps=[{"setWeight": 10}])
    d = w.step()
    pending = RevisionState(
        w.rev,
        replicas=2,
        unschedulable=2,
        unschedulable_reason="InsufficientGPU",
        unschedulable_message="0/5 nodes are available: 2 Insufficient nvidia.com/gpu.",
    )
    revisions = {old: RevisionState(old, 2, 2, 2, 2), w.rev: pending}
    spec = parse_spec(w.spec)
    d = decide(spec, 1, w.status, Observations(revisions=revisions), w.now + 30)
    assert d.status["phase"] == "Progressing"
    assert {c["type"]: c for c in d.status["conditions"]}["Degraded"]["reason"] == "InsufficientGPU"
    d = decide(spec, 1, d.status, Observations(revisions=revisions), w.now + 61)
    assert d.status["phase"] == "RolledBack" and d.status["rollout"]["rollbackReason"] == "InsufficientGPU"


def test_invalid_spec_changes_nothing_and_reports():
    w = World(spec_with())
    deploy_v1(w)
    d = w.step(invalid=["spec.serving.args sets --model-repository"])
    assert d.apply_children is False
    assert w.status["phase"] == "InvalidSpec" and d.events[0].type == "Warning"
    cond = {c["type"]: c for c in w.status["conditions"]}["InvalidSpec"]
    assert cond["status"] == "True" and "--model-repository" in cond["message"]


def test_decide_is_deterministic_and_resumable():
    """A fresh operator given the stored status decides exactly what the old one would have."""
    steps = [
        {"setWeight": 10},
        {"analysis": {"interval": "10s", "metrics": [ERRORS]}},
        {"setWeight": 40},
        {"pause": {}},
    ]
    w = World(spec_with(steps=steps))
    deploy_v1(w)
    w.spec = spec_with("2", steps=steps)
    w.step()
    w.settle()
    stored = copy.deepcopy(w.status)
    spec = parse_spec(w.spec)
    obs = Observations(revisions=w.revisions(), metrics=good())
    a = decide(spec, 1, stored, obs, w.now + 10)
    b = decide(spec, 1, copy.deepcopy(stored), obs, w.now + 10)
    assert a.status == b.status and a.weight == b.weight == 40


@pytest.mark.parametrize("now_offset", [0, 5])
def test_analysis_is_requested_only_when_due(now_offset):
    steps = [{"analysis": {"interval": "10s", "metrics": [ERRORS]}}]
    w = World(spec_with(steps=steps))
    deploy_v1(w)
    w.spec = spec_with("2", steps=steps)
    w.step()
    w.settle()
    assert analysis_request(parse_spec(w.spec), w.status, w.now + now_offset) is None
    req = analysis_request(parse_spec(w.spec), w.status, w.now + 10)
    assert req is not None and req.candidate == w.rev and req.window >= 10


def test_promote_skips_one_step_and_promote_full_skips_all():
    steps = [
        {"setWeight": 10},
        {"pause": {}},
        {"setWeight": 40},
        {"pause": {}},
        {"setWeight": 80},
        {"pause": {}},
    ]
    w = World(spec_with(steps=steps))
    deploy_v1(w)
    w.spec = spec_with("2", steps=steps)
    w.request = "promote@early"  # asked while the candidate's pods are still starting: kept
    d = w.step()
    assert w.status["rollout"].get("skipStep") is True and d.weight == 0, "kept until the candidate is up"
    d = w.settle()
    assert d.weight == 40 and w.status["rollout"]["step"] == 3, (
        "the first waiting step (the pause) was skipped"
    )
    d = w.step()
    assert d.weight == 40 and w.status["rollout"]["step"] == 3, "one request skips one step"
    w.request = "resume@x"  # resume does not pass a pause that waits for promotion
    d = w.step()
    assert d.weight == 40 and w.status["phase"] == "Paused"
    w.request = "promote-full@y"
    w.step()
    w.settle()
    assert w.status["stableRevision"] == w.rev and w.status["phase"] == "Ready"


def test_candidate_replicas_follow_its_traffic_share():
    steps = [
        {"setWeight": 10},
        {"pause": {"duration": "10s"}},
        {"setWeight": 50},
        {"pause": {"duration": "10s"}},
    ]
    spec = spec_with(steps=steps)
    spec["serving"]["replicas"] = 10
    w = World(spec)
    deploy_v1(w)
    w.spec = copy.deepcopy(spec)
    w.spec["model"]["version"] = "2"
    d = w.step()
    assert d.replicas[w.rev] == 1, "a 10% canary holds 1 of 10 replicas' worth of GPUs"
    d = w.settle()
    assert d.weight == 10 and d.replicas[w.rev] == 1
    d = w.step(advance=10)
    assert d.weight == 50 and d.replicas[w.rev] == 5
    d = w.step(advance=10)
    assert w.status["stableRevision"] != w.rev and d.replicas[w.rev] == 10, "full size before any promotion"
    assert w.status["phase"] == "Progressing"
    d = w.settle()
    assert w.status["stableRevision"] == w.rev and d.weight == 0
    assert all(n == 10 for n in d.replicas.values())


def test_scaling_limited_by_gpus_is_a_condition():
    spec = spec_with()
    spec["serving"]["autoscaling"] = {"minReplicas": 1, "maxReplicas": 8}
    w = World(spec)
    deploy_v1(w)
    rev = w.status["stableRevision"]
    scaled_up = RevisionState(
        rev,
        replicas=8,
        ready=4,
        available=4,
        updated=8,
        unschedulable=4,
        unschedulable_reason="InsufficientGPU",
        unschedulable_message="4 Insufficient nvidia.com/gpu",
        short_of=("nvidia.com/gpu",),
    )
    d = decide(parse_spec(spec), 1, w.status, Observations(revisions={rev: scaled_up}), w.now + 1)
    cond = {c["type"]: c for c in d.status["conditions"]}["ScalingLimited"]
    assert cond["status"] == "True" and cond["reason"] == "InsufficientGPU"
    assert "4/8 replicas ready; 4 pending pods wait for nvidia.com/gpu" in cond["message"]
    assert d.status["phase"] == "Ready", "serving at its floor is still Ready"


def _gate(decision: str, n: int = 1500):
    from modelpilot.gate.result import GateDecision, GateResult

    return GateResult(
        GateDecision(decision),
        "test",
        n,
        0.95,
        0.91,
        0.001 if decision == "passed" else 0.4,
        0.01,
        0.05,
        metric="accuracy",
        test="score",
    )


def test_gate_step_proceeds_fails_or_waits_before_any_traffic_moves():
    from modelpilot.rollout.decide import gate_request

    steps = [
        {"gate": {"task": "classification", "minSamples": 200, "timeout": "2m"}},
        {"setWeight": 50},
        {"pause": {}},
    ]
    w = World(spec_with(steps=steps))
    deploy_v1(w)
    w.spec = spec_with("2", steps=steps)
    w.step()
    d = w.settle()
    assert d.weight == 0 and d.replicas[w.rev] == 1, "one warm pod to replay against, no user traffic"
    request = gate_request(parse_spec(w.spec), w.status, w.now)
    assert request is not None and request.candidate == w.rev
    spec = parse_spec(w.spec)
    # Inconclusive: wait (and do not ask again until the retry interval passed).
    d = decide(
        spec, 1, w.status, Observations(revisions=w.revisions(), gate=_gate("inconclusive", 12)), w.now + 1
    )
    assert (
        d.weight == 0
        and d.status["rollout"]["step"] == 0
        and d.status["rollout"]["gate"]["decision"] == "inconclusive"
    )
    assert (
        gate_request(spec, d.status, w.now + 2) is None
        and gate_request(spec, d.status, w.now + 40) is not None
    )
    # Passed: the gate's result is in status and an event; traffic starts moving.
    passed = decide(
        spec, 1, d.status, Observations(revisions=w.revisions(), gate=_gate("passed")), w.now + 40
    )
    assert passed.weight == 50 and passed.status["rollout"]["gate"]["pValue"] == 0.001
    assert any(e.reason == "GatePassed" and "n=1500" in e.message for e in passed.events)
    # Failed: rolled back with the evidence, no traffic ever moved.
    failed = decide(
        spec, 1, d.status, Observations(revisions=w.revisions(), gate=_gate("failed")), w.now + 40
    )
    assert (
        failed.status["phase"] == "RolledBack" and failed.status["rollout"]["rollbackReason"] == "GateFailed"
    )
    assert (
        failed.weight == 0
        and "accuracy candidate 0.95 vs stable 0.91" in failed.status["rollout"]["rollbackMessage"]
    )
    # Inconclusive past the timeout fails instead of passing silently.
    late = decide(
        spec, 1, d.status, Observations(revisions=w.revisions(), gate=_gate("inconclusive", 12)), w.now + 200
    )
    assert late.status["phase"] == "RolledBack"


def test_an_optimised_revision_deploys_only_after_its_job_succeeds():
    spec = spec_with("2")
    spec["model"]["optimize"] = {"method": "onnx-int8", "sourceVersion": "1", "maxAbsDiff": 0.05}
    w = World(spec_with())
    old = deploy_v1(w)
    w.spec = spec
    s = parse_spec(spec)
    running = decide(
        s,
        1,
        w.status,
        Observations(revisions=w.revisions(), optimization=("running", "m-onnx-int8-v2")),
        w.now,
    )
    assert set(running.replicas) == {old}, "nothing of the new revision runs before its model exists"
    assert running.status["phase"] == "Progressing" and "Job m-onnx-int8-v2" in running.status["message"]
    failed = decide(
        s,
        1,
        w.status,
        Observations(revisions=w.revisions(), optimization=("failed", "m-onnx-int8-v2")),
        w.now,
    )
    assert set(failed.replicas) == {old} and failed.weight == 0
    assert failed.status["phase"] == "Degraded" and [e.reason for e in failed.events] == [
        "OptimizationFailed"
    ]
    again = decide(
        s,
        1,
        failed.status,
        Observations(revisions=w.revisions(), optimization=("failed", "m-onnx-int8-v2")),
        w.now + 5,
    )
    assert again.events == [], "reported once"
    done = decide(
        s,
        1,
        w.status,
        Observations(revisions=w.revisions(), optimization=("succeeded", "m-onnx-int8-v2")),
        w.now,
    )
    assert done.replicas.get(s.revision) == 2 and done.status["rollout"]["candidate"] == s.revision


def test_the_first_revision_waits_for_its_optimisation_too():
    spec = spec_with("2")
    spec["model"]["optimize"] = {"method": "tensorrt", "sourceVersion": "1"}
    d = decide(parse_spec(spec), 1, {}, Observations(optimization=("running", "m-tensorrt-v2")), 1000.0)
    assert d.apply_children is False and d.status["phase"] == "Progressing"
    assert {c["type"]: c["reason"] for c in d.status["conditions"]}["Progressing"] == "Optimizing"
