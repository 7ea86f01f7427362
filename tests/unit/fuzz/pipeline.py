"""Run one generated spec through everything the operator does with it, and classify what happened.

`check_spec` is the pure pass (parse, validate, every builder, `decide` over a simulated
rollout, and the API server's checks on everything the operator would write); it is cheap
enough for 10,000 specs. `reconcile_scenario` drives the real `Reconciler.reconcile` against
the in-memory API server (tests/unit/fuzz/fakeapi.py): create, become ready, roll out a new
revision step by step, sometimes edit the current step mid-rollout.

Outcomes: `rejected` (the API server would not admit it), `invalid` (InvalidSpec with a status
written), `served` (a rollout ran), or a failure: `escape` (an exception left the operator),
`refused` (the API server refused something the operator wrote), `unreadable` (an InvalidSpec
message too long or naming no field), `hang`.
"""

from __future__ import annotations

import contextlib
import random
import signal
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.unit.fuzz.admission import admit, clone, status_errors
from tests.unit.fuzz.fakeapi import FakeApiServer, FakeKube, validate_object
from tests.unit.fuzz.specgen import Case, Generator

from modelpilot.api.spec import ModelDeploymentSpec, parse_spec
from modelpilot.compress.jobs import compression_job
from modelpilot.controller.optimize import request_from_spec
from modelpilot.controller.reconcile import Reconciler
from modelpilot.gate.result import GateDecision, GateResult
from modelpilot.gate.spec import parse_gate
from modelpilot.monitor.manifests import MonitoredModel, MonitorSettings, monitor_manifests
from modelpilot.rollout.decide import analysis_request, decide, gate_request, load_check_due
from modelpilot.rollout.fallback import LoadObservation
from modelpilot.rollout.observe import MetricSample, Observations, RevisionState
from modelpilot.routing.istio import TrafficPlan, destination_rule, virtual_service
from modelpilot.serving import manifests
from modelpilot.serving.autoscale import autoscaler, parse_autoscaling
from modelpilot.serving.triton import TritonConfigError, render_config_pbtxt
from modelpilot.validation import validate

NS = "fuzz"
NOW = 1_767_225_600.0  # 2026-01-01
OLD = "0ld0ld00"  # a stable revision from an earlier spec
MESSAGE_LIMIT = 1024  # "a readable message of at most about 1 KiB"
PACKAGE = str(Path(manifests.__file__).resolve().parents[1])
PROMETHEUS = "http://prometheus.monitoring:9090"
FAILURES = ("escape", "refused", "unreadable", "hang")


class Hang(Exception):
    pass


@dataclass
class Result:
    outcome: str
    cause: str = ""  # grouping key for failures
    detail: str = ""


@dataclass
class Tally:
    """Counts, and one example of every failure cause."""

    outcomes: Counter = field(default_factory=Counter)
    causes: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    def add(self, result: Result, label: str = "") -> None:
        self.outcomes[result.outcome] += 1
        if result.outcome in FAILURES:
            key = f"{result.outcome}: {result.cause}"
            self.causes[key] += 1
            self.examples.setdefault(key, f"{label} {result.detail}"[:600])

    @property
    def failures(self) -> int:
        return sum(self.outcomes[o] for o in FAILURES)

    def report(self, title: str) -> str:
        lines = [f"{title}: " + ", ".join(f"{k}={v}" for k, v in sorted(self.outcomes.items()))]
        for key, count in self.causes.most_common():
            lines.append(f"  {count:5d}  {key}\n         e.g. {self.examples[key]}")
        return "\n".join(lines)


def cause_of(exc: BaseException) -> str:
    """The exception type and the innermost operator frame that raised it."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.startswith(PACKAGE)]
    where = (
        f"{Path(frames[-1].filename).relative_to(PACKAGE).as_posix()}:{frames[-1].name}" if frames else "?"
    )
    return f"{type(exc).__name__} in {where}"


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise Hang if the block runs longer than `seconds` (main thread only, SIGALRM)."""

    def alarm(*_: Any) -> None:
        raise Hang(f"no answer within {seconds}s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# --------------------------------------------------------------------------- observations, simulated


def samples_for(metrics: tuple[Mapping[str, Any], ...], rng: random.Random) -> dict[str, MetricSample]:
    out = {}
    for metric in metrics:
        name = str(metric["name"])
        count = rng.choice([0.0, 100.0, 5000.0, 1e6])
        errors = min(count, rng.choice([0.0, 5.0, 50.0, count * 0.5]))
        value = rng.choice([None, 0.0, 0.01, 0.5, 1.0, 150.0])
        classes = {"a": count * 0.6, "b": count * 0.4}
        out[name] = MetricSample(
            name,
            value,
            value if rng.random() < 0.8 else None,
            candidate_count=count,
            stable_count=count,
            candidate_errors=errors,
            stable_errors=errors / 2,
            candidate_classes=classes,
            stable_classes=dict(classes),
            reason="" if value is not None else "no data",
        )
    return out


def gate_result(gate: Mapping[str, Any], rng: random.Random) -> GateResult:
    gspec = parse_gate(gate)  # the real GateRunner parses first, and a GateSpecError escapes from there
    decision = rng.choice(list(GateDecision))
    return GateResult(
        decision,
        "fuzz",
        500,
        0.9,
        0.91,
        0.01 if decision is GateDecision.PASSED else 0.4,
        gspec.margin,
        gspec.alpha,
        gspec.metric,
        gspec.test,
    )


def load_for(rng: random.Random) -> LoadObservation:
    return LoadObservation(
        queue_p95_ms=rng.choice([None, 1.0, 80.0]), request_rate=rng.choice([None, 10.0, 900.0])
    )


# --------------------------------------------------------------------------- the pure pass


def spec_children(owner: manifests.Owner, spec: ModelDeploymentSpec) -> list[dict[str, Any]]:
    """What the reconciler writes that depends on the spec alone (the current revision's pods and Services)."""
    rev = spec.revision
    capture = manifests.capture_enabled(spec)
    out = [manifests.deployment(owner, spec, rev, replicas) for replicas in (spec.serving.replicas, None)]
    cm = manifests.config_map(owner, spec, rev)
    if cm:
        out.append(cm)
    out += [manifests.revision_service(owner, rev, capture), manifests.stable_service(owner, capture)]
    if spec.monitoring.get("enabled"):
        out += monitor_manifests(
            owner.namespace, [MonitoredModel(owner.name, dict(spec.monitoring), owner.uid)], MonitorSettings()
        )
    return out


def decision_children(
    owner: manifests.Owner, spec: ModelDeploymentSpec, decision: Any, *, keda: bool
) -> list[dict[str, Any]]:
    """What `Reconciler._act_children` writes that depends on the decision: autoscalers, preview, routes."""
    out: list[dict[str, Any]] = []
    current = spec.revision
    capture = manifests.capture_enabled(spec)
    settings = parse_autoscaling((spec.raw.get("serving") or {}).get("autoscaling"))
    if settings is not None:
        out += [
            autoscaler(
                owner,
                rev,
                settings,
                model=str(spec.model["name"]),
                keda_installed=keda,
                prometheus_url=PROMETHEUS,
                weight=share,
            )
            for rev, share in decision.shares.items()
        ]
    if decision.preview:
        preview = manifests.revision_service(owner, decision.preview, capture)
        preview["metadata"]["name"] = f"{owner.name}-preview"
        out.append(preview)
    plan = TrafficPlan.of(decision, current)
    out += [destination_rule(owner, spec, plan), virtual_service(owner, spec, plan)]
    return out


def _refused(objs: list[dict[str, Any]]) -> Result | None:
    for obj in objs:
        errors = validate_object(obj)
        if errors:
            field_ = errors[0].split(":")[0]
            return Result(
                "refused", f"{obj['kind']} {field_}", f"{obj['metadata'].get('name')!r}: {errors[0]}"
            )
    return None


def _status_refused(status: Mapping[str, Any]) -> Result | None:
    errors = status_errors(status)
    if errors:
        return Result("refused", "ModelDeployment status " + errors[0].split(":")[0], errors[0][:300])
    return None


def check_spec(case: Case, rng: random.Random, *, keda: bool = True) -> tuple[bool, Result]:
    """(admitted, what happened). Exceptions are classified, never raised (but Hang)."""
    admission = admit(case.body())
    if not admission.admitted:
        return False, Result("rejected", admission.errors[0].split(":")[0])
    body = admission.body
    owner = manifests.Owner(body["metadata"]["name"], NS, "uid-1")
    raw = body["spec"]
    try:
        spec = parse_spec(raw)
        problems = validate(spec)
    except Hang:
        raise
    except Exception as exc:
        return True, Result("escape", cause_of(exc), f"parse/validate: {exc!r}"[:300])
    message = "; ".join(problems)
    if problems and (
        len(message) > MESSAGE_LIMIT or not all("spec." in p or "metadata." in p for p in problems)
    ):
        return True, Result("unreadable", "validate() message over 1 KiB or naming no field", message[:300])
    invalid = list(problems)
    try:
        render_config_pbtxt(spec.model)  # as the reconciler does, after validate()
    except (TritonConfigError, ValueError, TypeError, KeyError) as exc:
        invalid.append(str(exc))
    except Hang:
        raise
    except Exception as exc:
        return True, Result("escape", cause_of(exc), f"render: {exc!r}"[:300])
    if invalid:
        decision = decide(spec, 1, {}, Observations(), NOW, invalid)
        return True, _status_refused(decision.status) or Result(
            "invalid", problems[0][:80] if problems else invalid[0][:80]
        )
    try:
        return True, _lifecycle(owner, spec, rng, keda=keda)
    except Hang:
        raise
    except Exception as exc:
        return True, Result("escape", cause_of(exc), repr(exc)[:300])


MAX_PASSES = 12  # decide passes per rollout in the pure pass
RECONCILE_PASSES = 7  # reconcile passes per rollout against the fake server


def _lifecycle(
    owner: manifests.Owner, spec: ModelDeploymentSpec, rng: random.Random, *, keda: bool
) -> Result:
    desired = spec.revision
    wanted = (
        int(((spec.raw.get("serving") or {}).get("autoscaling") or {}).get("minReplicas", 0))
        or spec.serving.replicas
    )
    up = RevisionState(desired, wanted, wanted, wanted, wanted)
    old = RevisionState(OLD, wanted, wanted, wanted, wanted)
    refused = _refused(spec_children(owner, spec))
    if refused:
        return refused
    seen: set[str] = set()

    def check(decision: Any) -> Result | None:
        """The status write, and (once per distinct routing) what the decision makes the reconciler write."""
        refused = _status_refused(decision.status)
        if refused or not decision.apply_children:
            return refused
        key = repr(
            (
                sorted(decision.replicas.items()),
                sorted(decision.shares.items()),
                decision.preview,
                decision.weight,
                decision.mirror_percent,
                decision.match,
                decision.fallback,
            )
        )
        if key in seen:
            return None
        seen.add(key)
        return _refused(decision_children(owner, spec, decision, keda=keda))

    # A new object: nothing runs yet, then its pods are up.
    status: dict[str, Any] = {}
    for revisions in ({}, {desired: up}):
        decision = decide(spec, 1, status, Observations(revisions=revisions), NOW)
        if failure := check(decision):
            return failure
        status = decision.status
    # A rollout from an older stable revision, one pass per simulated interval.
    status = {"rollout": {"stable": OLD, "state": "idle"}, "stableRevision": OLD}
    now = NOW
    compress = request_from_spec(spec)
    optimization = None
    if compress is not None:
        job = compression_job(
            owner,
            compress,
            triton_image=spec.serving.image,
            deadline_seconds=int(spec.model["optimize"].get("deadlineSeconds", 3600)),
        )
        if refused := _refused([job]):
            return refused
        optimization = ("succeeded", job["metadata"]["name"])
    for _ in range(min(MAX_PASSES, len(spec.rollout.steps) + 4)):
        request = analysis_request(spec, status, now)
        wanted_gate = gate_request(spec, status, now)
        obs = Observations(
            revisions={desired: up, OLD: old},
            metrics=samples_for(request.metrics, rng) if request else None,
            gate=gate_result(wanted_gate.gate, rng) if wanted_gate else None,
            load=load_for(rng) if load_check_due(spec, status, now) else None,
            optimization=optimization,
        )
        try:
            decision = decide(spec, 2, status, obs, now, namespace=NS)
        except ValueError as exc:  # the reconciler turns these into InvalidSpec mid-rollout
            return Result("escape", "late InvalidSpec: " + cause_of(exc), repr(exc)[:300])
        if failure := check(decision):
            return failure
        status = decision.status
        if (status.get("rollout") or {}).get("state") in ("idle", "rolledBack") and status.get(
            "stableRevision"
        ) != OLD:
            break
        now += rng.choice([60.0, 900.0, 7200.0])
    return Result("served")


# --------------------------------------------------------------------------- reconcile against the fake server


@dataclass
class Clock:
    now: float = NOW

    def __call__(self) -> float:
        return self.now


def _fake_measure(rng: random.Random) -> Callable[..., Mapping[str, MetricSample]]:
    return lambda request, owner, *_: samples_for(request.metrics, rng)


def _fake_gate(rng: random.Random) -> Callable[..., GateResult]:
    return lambda owner, spec, gate, candidate, stable, now: gate_result(gate, rng)


def _status_ok(server: FakeApiServer, name: str) -> str:
    body = server.model(NS, name)
    status = body.get("status") or {}
    if not status.get("phase"):
        return "no status.phase"
    if status.get("observedGeneration") != body["metadata"].get("generation"):
        observed, generation = status.get("observedGeneration"), body["metadata"].get("generation")
        return f"observedGeneration {observed} != generation {generation}"
    return ""


def reconcile_scenario(case: Case, gen: Generator, rng: random.Random, *, keda: bool) -> tuple[Result, int]:
    """(what happened, reconcile passes made). The case must be admitted."""
    server = FakeApiServer()
    if keda:
        server.installed.add("ScaledObject")
        server.crds.add("scaledobjects.keda.sh")
    kube = FakeKube(server)
    clock = Clock()
    rec = Reconciler(
        kube,
        measure=_fake_measure(rng),
        measure_load=lambda *_: load_for(rng),
        run_gate=_fake_gate(rng),
        clock=clock,
        prometheus_url=PROMETHEUS if rng.random() < 0.75 else None,
    )
    ok, errors = server.create_model(NS, case.body())
    assert ok, errors
    name = case.name
    passes = 0

    def one_pass() -> Result | None:
        nonlocal passes
        passes += 1
        try:
            rec.reconcile(NS, name)
        except Hang:
            raise
        except Exception as exc:
            detail = repr(exc)
            if getattr(exc, "body", None):
                detail = f"{exc.status} {exc.body}"
            return Result("escape", cause_of(exc), detail[:400])
        problem = _status_ok(server, name)
        failed = [
            c
            for c in (server.model(NS, name).get("status") or {}).get("conditions") or ()
            if c.get("type") == "Reconciled" and c.get("status") == "False"
        ]
        if failed:  # the reconciler caught an error and reported it: the cause is in the condition
            message = failed[0].get("message", "")
            return Result(
                "escape", f"caught and reported: {failed[0].get('reason')}: {message[:70]}", message[:400]
            )
        if problem:
            return Result("escape", f"no status written ({problem})", "")
        clock.now += rng.choice([30.0, 600.0, 3600.0, 7200.0])
        return None

    for _ in range(2):
        if failure := one_pass():
            return failure, passes
    # A new revision: walk its steps.
    spec = gen.pod_affecting_change(server.model(NS, name)["spec"])
    ok, _ = server.update_model_spec(NS, name, spec)
    steps = len(spec.get("rollout", {}).get("steps") or ())
    edited = False
    for _ in range(min(steps + 3, RECONCILE_PASSES)):
        if failure := one_pass():
            return failure, passes
        if not edited and rng.random() < 0.25:
            # A user edits the step the rollout sits on (a gate's fields, an analysis ...).
            edited = True
            live = server.model(NS, name)
            index = int(((live.get("status") or {}).get("rollout") or {}).get("step", 0))
            mutated = clone(live["spec"])
            current = (mutated.get("rollout") or {}).get("steps") or []
            try:
                current[index] = gen.mutate({"rollout": {"steps": [current[index]]}})["rollout"]["steps"][0]
            except (KeyError, TypeError, IndexError):
                mutated = gen.mutate(mutated)
            server.update_model_spec(NS, name, mutated)  # refused by admission: the old spec stays
    phase = (server.model(NS, name).get("status") or {}).get("phase")
    return Result("invalid" if phase == "InvalidSpec" else "served"), passes
