"""300 generated ModelDeployments against the real API server, with the real operator running.

The unit fuzz suite (tests/unit/fuzz/) approximates the API server's admission in Python and the
API server itself in memory; here the real ones judge. Every generated spec is created for real:

- the API server admits exactly the specs the Python approximation admits (schema, defaults and
  every CEL rule: the unit suite's 10,000-spec run is only as good as that approximation);
- every admitted spec gets a status from the operator (a phase, observedGeneration ==
  generation), again after a pod-affecting edit of some of them;
- the operator stays up, and reports no failed reconcile (`Reconciled=False`, or a logged
  "reconcile of <namespace>/<name> failed") for any of them.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import kubernetes
import pytest
from tests.unit.fuzz.admission import admit
from tests.unit.fuzz.specgen import Generator

pytestmark = pytest.mark.integration

SEED = 20261203
SPECS = 300
EDITS = 40
STATUS_TIMEOUT = 120.0
PARALLEL = 8  # concurrent creates: the API server answers them in parallel


def _create(api: kubernetes.client.CustomObjectsApi, namespace: str, body: dict) -> tuple[bool, str]:
    try:
        api.create_namespaced_custom_object("modelpilot.io", "v1alpha1", namespace, "modeldeployments", body)
    except kubernetes.client.ApiException as exc:
        if exc.status in (400, 422):
            return False, (json.loads(exc.body).get("message") or "")[:300]
        raise
    return True, ""


def _statuses(api: kubernetes.client.CustomObjectsApi, namespace: str) -> dict[str, dict]:
    items = api.list_namespaced_custom_object("modelpilot.io", "v1alpha1", namespace, "modeldeployments")[
        "items"
    ]
    return {i["metadata"]["name"]: i for i in items}


def _settled(item: dict) -> bool:
    status = item.get("status") or {}
    return bool(status.get("phase")) and status.get("observedGeneration") == item["metadata"]["generation"]


def _wait(pending, timeout: float = STATUS_TIMEOUT) -> list[str]:
    """Poll until nothing is pending or the timeout passes; what is still pending then."""
    end = time.monotonic() + timeout
    left = pending()
    while left and time.monotonic() < end:
        time.sleep(2.0)
        left = pending()
    return left


def _failed(item: dict) -> list[str]:
    return [
        f"{c.get('reason')}: {c.get('message', '')[:200]}"
        for c in (item.get("status") or {}).get("conditions") or ()
        if c.get("type") == "Reconciled" and c.get("status") == "False"
    ]


def _drain(api_client, namespace: str, timeout: float = 180.0) -> None:
    """Delete every generated ModelDeployment and wait for its pods to go.

    Hundreds of fuzzed deployments hold node capacity and keep the session's operator busy; the
    namespace's own deletion is asynchronous, so without this the next test would start on a full
    cluster behind a long work queue.
    """
    api = kubernetes.client.CustomObjectsApi(api_client)
    core = kubernetes.client.CoreV1Api(api_client)
    api.delete_collection_namespaced_custom_object("modelpilot.io", "v1alpha1", namespace, "modeldeployments")
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        left = _statuses(api, namespace)
        pods = core.list_namespaced_pod(namespace).items
        if not left and not pods:
            return
        time.sleep(2.0)


@pytest.fixture
def drained_afterwards(api_client, namespace):
    yield
    _drain(api_client, namespace)


def test_real_admission_matches_and_every_admitted_spec_gets_a_status(
    operator, api_client, namespace, capsys, drained_afterwards
):
    api = kubernetes.client.CustomObjectsApi(api_client)
    gen = Generator(SEED)
    started = time.monotonic()
    used: set[str] = set()
    bodies = []
    for index in range(SPECS):
        case = gen.case(index)
        body = case.body()
        name = body["metadata"]["name"]
        if (
            name in used
        ):  # one namespace: names must differ (the suffix keeps a valid name valid but for length)
            body["metadata"]["name"] = name = f"{name}-{index}"
        used.add(name)
        bodies.append((index, case.origin, body))
    with ThreadPoolExecutor(PARALLEL) as pool:
        answers = list(pool.map(lambda item: _create(api, namespace, item[2]), bodies))
    admitted: list[str] = []
    disagreements: list[str] = []
    for (index, origin, body), (ok, message) in zip(bodies, answers, strict=True):
        expected = admit(body)
        name = body["metadata"]["name"]
        if ok != expected.admitted:
            disagreements.append(
                f"#{index} {origin} {name!r}: API server admitted={ok} ({message}); "
                f"Python admitted={expected.admitted} ({expected.errors[:2]})"
            )
        if ok:
            admitted.append(name)
    created_s = time.monotonic() - started

    def pending() -> list[str]:
        live = _statuses(api, namespace)
        return [n for n in admitted if not _settled(live[n])]

    _wait(pending)
    settled_s = time.monotonic() - started

    # A new revision for some: the operator must see (observedGeneration) and report the new generation.
    live = _statuses(api, namespace)
    edits = [
        (name, spec)
        for name in admitted[:EDITS]
        if admit(
            {"metadata": {"name": name}, "spec": (spec := gen.pod_affecting_change(live[name]["spec"]))}
        ).admitted
    ]
    with ThreadPoolExecutor(PARALLEL) as pool:
        list(
            pool.map(
                lambda e: api.patch_namespaced_custom_object(
                    "modelpilot.io", "v1alpha1", namespace, "modeldeployments", e[0], {"spec": e[1]}
                ),
                edits,
            )
        )
    edited = len(edits)
    unsettled = _wait(pending)

    live = _statuses(api, namespace)
    phases: dict[str, int] = {}
    for name in admitted:
        phase = (live[name].get("status") or {}).get("phase", "(none)")
        phases[phase] = phases.get(phase, 0) + 1
    failed = {n: _failed(live[n]) for n in admitted if _failed(live[n])}
    log = "\n".join(p.read_text(errors="replace") for p in sorted(operator.log_dir.glob("operator-*.log")))
    crashes = [line for line in log.splitlines() if f"reconcile of {namespace}/" in line and "failed" in line]
    with capsys.disabled():
        print(
            f"\nfuzz admission: seed {SEED}: generated {SPECS}, admitted {len(admitted)} (Python agrees on "
            f"{SPECS - len(disagreements)}), edited {edited}, phases {phases}, failed reconciles {len(failed)}, "
            f"operator log failures {len(crashes)}, without a status {len(unsettled)}; created in {created_s:.0f}s, "
            f"first statuses by {settled_s:.0f}s, "
            f"all done in {time.monotonic() - started:.0f}s"
        )
    assert operator.proc is not None and operator.proc.poll() is None, (
        f"the operator exited:\n{operator.log_tail()}"
    )
    assert not disagreements, f"{len(disagreements)} admission differences:\n" + "\n".join(disagreements[:10])
    assert not unsettled, (
        f"{len(unsettled)} admitted specs without a status for their generation: "
        + "\n".join(
            f"{n}: generation {live[n]['metadata']['generation']}, status {json.dumps(live[n].get('status'))[:300]}"
            for n in unsettled[:8]
        )
    )
    assert not failed, f"{len(failed)} failed reconciles: " + json.dumps(
        dict(list(failed.items())[:5]), indent=1
    )
    assert not crashes, "\n".join(crashes[:10])
    assert len(admitted) >= SPECS // 5
