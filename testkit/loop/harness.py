"""The closed loop for one ModelDeployment: Triton fleet + traffic driver + Prometheus targets.

    with ClosedLoop(kube=kube, zoo=zoo, namespace=ns, name="cancer", prometheus=prom,
                    revisions={rev1: "good-v1", rev2: "failing-v2"}, rate=100) as loop:
        kube.apply(model_deployment(...))
        loop.wait_phase("Ready")

Prometheus scrapes each revision's real Triton ``/metrics`` with the target labels Kubernetes
service discovery would attach to a pod (``namespace``, ``pod`` = ``<name>-<rev>-<hash>-<id>``,
``revision``) and the driver's ``/metrics`` for Istio's request metrics; the operator reads
both through its ordinary queries.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, TextIO

from testkit.loop.driver import DriverConfig, DriverStats, KubeReader, TrafficDriver
from testkit.loop.fleet import Endpoint, TritonFleet
from testkit.loop.models import ModelZoo
from testkit.prometheus import ScrapeTarget


class TargetSink(Protocol):
    """What the harness needs of Prometheus: file-SD targets and (optionally) queries."""

    def set_file_targets(self, targets: list[ScrapeTarget]) -> None: ...

    def query(self, promql: str) -> list[Any]: ...


def pod_name(name: str, revision: str) -> str:
    """A Deployment-style pod name, ``<name>-<rev>-<template hash>-<suffix>``, stable per revision."""
    digest = hashlib.sha256(f"{name}/{revision}".encode()).hexdigest()
    return f"{name}-{revision}-{digest[:9]}-{digest[9:14]}"


class ClosedLoop:
    """A context manager; everything it starts is stopped on exit, in reverse order."""

    def __init__(
        self,
        *,
        kube: KubeReader,
        zoo: ModelZoo,
        namespace: str,
        name: str,
        revisions: Mapping[str, str],
        prometheus: TargetSink | None = None,
        out: TextIO | None = None,
        log_dir: Path | None = None,
        **driver_options: Any,
    ) -> None:
        self.kube, self.zoo, self.namespace, self.name = kube, zoo, namespace, name
        self.revisions = dict(revisions)
        self.prometheus = prometheus
        self.out = out if out is not None else sys.stdout
        self.fleet = TritonFleet(zoo, log_dir=log_dir)
        self.config = DriverConfig(namespace=namespace, name=name, **driver_options)
        self.driver: TrafficDriver | None = None
        self._started = time.monotonic()
        self._last_line = ""
        self._last_print = 0.0

    # ---- lifecycle

    def __enter__(self) -> ClosedLoop:
        try:
            self.fleet.start(self.revisions)
            self.driver = TrafficDriver(self.kube, self.fleet.endpoint, self.zoo.holdout, self.config)
            for revision in self.revisions:
                self.driver.metrics.precreate(revision)
            self.driver.start()
            self._register_targets(wait=True)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        self._started = time.monotonic()
        return self

    def __exit__(self, *_: object) -> None:
        if self.prometheus is not None:
            self.prometheus.set_file_targets([])
        if self.driver is not None:
            self.driver.stop()
        self.fleet.close()

    def add_revisions(self, revisions: Mapping[str, str]) -> list[Endpoint]:
        """Start servers for more revisions while the loop runs (a later model version)."""
        self.revisions.update(revisions)
        endpoints = self.fleet.start(revisions)
        assert self.driver is not None
        for revision in revisions:
            self.driver.metrics.precreate(revision)
        self._register_targets(wait=True)
        return endpoints

    # ---- Prometheus

    def targets(self) -> list[ScrapeTarget]:
        out = [
            ScrapeTarget(
                e.metrics_address,
                {"namespace": self.namespace, "pod": pod_name(self.name, rev), "revision": rev},
            )
            for rev, e in sorted(self.fleet.endpoints().items())
        ]
        if self.driver is not None:
            out.append(ScrapeTarget(self.driver.metrics_address, {"app": "modelpilot-loop-driver"}))
        return out

    def _register_targets(self, *, wait: bool, timeout: float = 30.0) -> None:
        if self.prometheus is None:
            return
        targets = self.targets()
        self.prometheus.set_file_targets(targets)
        if not wait:
            return
        # Every target scraped once: the zero-valued series are in before any traffic counts.
        deadline = time.monotonic() + timeout
        pending = {t.address for t in targets}
        while pending and time.monotonic() < deadline:
            for address in list(pending):
                if self.prometheus.query(f'up{{instance="{address}"}} == 1'):
                    pending.discard(address)
            time.sleep(0.2)
        if pending:
            raise TimeoutError(f"Prometheus never scraped {sorted(pending)}")

    # ---- status and progress

    def status(self) -> dict[str, Any]:
        body = self.kube.get("ModelDeployment", self.name, self.namespace) or {}
        return body.get("status") or {}

    def stats(self) -> DriverStats:
        assert self.driver is not None
        return self.driver.snapshot()

    def progress_line(self, status: Mapping[str, Any] | None = None) -> str:
        """One line: rollout phase and weight, then what each revision served as the driver saw it."""
        st = self.status() if status is None else status
        parts = [
            f"{time.monotonic() - self._started:5.1f}s {st.get('phase', '-')}",
            f"stable={st.get('stableRevision', '-')}",
        ]
        if st.get("canaryRevision"):
            parts.append(f"canary={st['canaryRevision']}@{st.get('canaryWeight', 0)}%")
        stats = self.stats()
        for rev, counts in sorted(stats.revisions.items()):
            variant = self.revisions.get(rev, "?")
            acc = f" acc {counts.accuracy:.2f}" if counts.accuracy is not None else ""
            mirror = f" +{counts.mirrored} mirrored" if counts.mirrored else ""
            parts.append(f"{rev}({variant}) {counts.served} req {counts.errors} 5xx{acc}{mirror}")
        checks = (st.get("rollout") or {}).get("checks") or []
        if checks:
            last = checks[-1]
            verdicts = ",".join(f"{m['name']}={m.get('outcome')}" for m in last.get("metrics", []))
            parts.append(f"check {last.get('outcome')} [{verdicts}]")
        return " | ".join(parts)

    def show(
        self, status: Mapping[str, Any] | None = None, *, every_s: float = 1.0, force: bool = False
    ) -> None:
        """Rewrite the line in place on a terminal; elsewhere print it at most every ``every_s``."""
        line = self.progress_line(status)
        now = time.monotonic()
        if self.out.isatty():
            self.out.write("\r\x1b[2K" + line[:200] + ("\n" if force else ""))
            self.out.flush()
        elif (force or now - self._last_print >= every_s) and line.split(" ", 1)[1] != self._last_line:
            print(line, file=self.out, flush=True)
            self._last_print, self._last_line = now, line.split(" ", 1)[1]

    def wait_until(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        timeout: float,
        *,
        what: str = "condition",
        progress: bool = True,
        interval: float = 0.3,
        diagnose: Callable[[], str] | None = None,
    ) -> dict[str, Any]:
        """Poll the ModelDeployment's status until ``predicate(status)``; returns that status."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.status()
            done = predicate(st)
            if progress:
                self.show(st, force=done)
            if done:
                return st
            if time.monotonic() > deadline:
                conditions = "; ".join(
                    f"{c.get('type')}={c.get('status')} {c.get('reason')}: {c.get('message')}"
                    for c in st.get("conditions") or []
                )
                raise TimeoutError(
                    f"timed out after {timeout:.0f}s waiting for {what}; last: {self.progress_line(st)}\n"
                    f"message: {st.get('message')!r}\nconditions: {conditions}"
                    + (f"\n{diagnose()}" if diagnose else "")
                )
            time.sleep(interval)

    def wait_phase(self, phase: str, timeout: float = 60.0, **kwargs: Any) -> dict[str, Any]:
        return self.wait_until(lambda st: st.get("phase") == phase, timeout, what=f"phase {phase}", **kwargs)
