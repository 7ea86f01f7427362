"""The go/no-go gate on real labeled data: replayed against real Triton servers before any traffic moves.

Users are served by v1 while the driver posts delayed ground-truth labels to the real monitor; a
candidate's gate replays those labeled requests against both revisions and runs the paired
non-inferiority test. A better model passes and is rolled out; a worse one never gets traffic.
"""

from __future__ import annotations

import json

import pytest
from testkit.loop.harness import ClosedLoop
from testkit.loop.manifests import deployment_spec, model_deployment, revision_of
from testkit.loop.models import LABEL
from testkit.loop.monitor_process import running_monitor
from testkit.wait import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.triton, pytest.mark.prometheus]

NAME = "cancer"
GATE = {
    "gate": {
        "task": "classification",
        "output": LABEL,
        "minSamples": 300,
        "maxSamples": 1500,
        "margin": 0.02,
        "window": "1h",
        "timeout": "2m",
    }
}
STEPS = [GATE, {"setWeight": 50}, {"pause": {"duration": "2s"}}]


def test_gate_passes_a_better_model_and_blocks_a_worse_one(
    operator, prometheus, kube, namespace, zoo, endpoints_file, tmp_path
):
    specs = {v: deployment_spec(zoo[v], STEPS) for v in ("good-v1", "good-v2", "drifting-v2")}
    revs = {revision_of(s): v for v, s in specs.items()}
    r1, r2, r3 = (revision_of(specs[v]) for v in ("good-v1", "good-v2", "drifting-v2"))
    with (
        running_monitor(tmp_path / "monitor", namespace) as monitor,
        ClosedLoop(
            kube=kube,
            zoo=zoo,
            namespace=namespace,
            name=NAME,
            prometheus=prometheus,
            revisions=revs,
            rate=150,
            monitor_url=monitor.url,
            label_share=0.8,
            duration_s=300,
        ) as loop,
    ):
        endpoints_file.write_text(
            json.dumps(
                {
                    "monitors": {namespace: monitor.url},
                    "revisions": {
                        f"{namespace}/{NAME}/{rev}": e.http_url for rev, e in loop.fleet.endpoints().items()
                    },
                }
            )
        )
        kube.apply(model_deployment(NAME, namespace, specs["good-v1"]))
        loop.wait_until(
            lambda st: st.get("phase") == "Ready" and st.get("stableRevision") == r1,
            120,
            what="v1 Ready",
            diagnose=lambda: operator.log_tail(40),
        )
        # Enough labeled production traffic for the gate.
        wait_for(lambda: monitor_labeled(monitor.url) >= 400, 60, 0.5, what="labeled records in the monitor")

        kube.apply(model_deployment(NAME, namespace, specs["good-v2"]))
        wait_for(
            lambda: loop.status().get("stableRevision") == r2 and loop.status().get("phase") == "Ready",
            90,
            0.5,
            what="better v2 through the gate and promoted",
            diagnose=lambda: f"{loop.status().get('rollout')}\n{operator.log_tail(40)}",
        )
        events = [e for e in kube.list("Event", namespace) if e["reason"] == "GatePassed"]
        assert events and "accuracy" in events[0]["message"] and "n=" in events[0]["message"]

        kube.apply(model_deployment(NAME, namespace, specs["drifting-v2"]))
        st = loop.wait_until(
            lambda st: st.get("phase") == "RolledBack" and (st.get("rollout") or {}).get("blocked") == r3,
            90,
            what="worse v3 blocked by the gate",
        )
        gate = st["rollout"]["gate"]
        assert gate["decision"] == "failed" and gate["n"] >= 300
        assert gate["candidate"] < gate["stable"]
        assert st["rollout"]["rollbackReason"] == "GateFailed"
        served = loop.stats().revisions.get(r3)
        assert served is None or served.served == 0, "a candidate that fails its gate never serves a user"


def monitor_labeled(url: str) -> int:
    import urllib.request

    with urllib.request.urlopen(f"{url}/v1/labeled?model={NAME}&limit=1000", timeout=5) as resp:
        return len(json.loads(resp.read())["items"])
