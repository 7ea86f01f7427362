"""`query:` on any provider: a user's PromQL template, rendered per arm (`{{revision}}`, `{{model}}`, ...)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelpilot.analysis.observers.base import ARMS, Probe, sample_of
from modelpilot.analysis.queries import RevisionRef, render_for_revision
from modelpilot.rollout.observe import MetricSample


class TemplateObserver:
    def measure(
        self, metric: Mapping[str, Any], refs: Mapping[str, RevisionRef], window: float, probe: Probe
    ) -> MetricSample:
        values = {
            arm: probe.value(render_for_revision(str(metric["query"]), refs[arm], window)) for arm in ARMS
        }
        return sample_of(str(metric["name"]), values)


OBSERVER = TemplateObserver()
