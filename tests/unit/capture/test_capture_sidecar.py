"""Sidecar container spec, configuration from the environment, and deterministic sampling."""

from __future__ import annotations

import copy

import pytest

from modelpilot.capture import EXPORTED_METRICS, CaptureConfig, sidecar_container
from modelpilot.capture.config import parse_listen
from modelpilot.capture.manifests import CAPTURE_PORT_NAME
from modelpilot.capture.metrics import CaptureMetrics
from modelpilot.capture.sampling import sample_point, should_sample


def _env(container: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"]}


def test_sidecar_env_round_trips_into_the_proxy_config() -> None:
    container = sidecar_container("iris", "r-3f2a", "http://monitor.modelpilot:8080", 0.1, "ghcr.io/x/mp:1")
    config = CaptureConfig.from_env(_env(container))
    assert (config.model, config.revision, config.monitor_url) == (
        "iris",
        "r-3f2a",
        "http://monitor.modelpilot:8080",
    )
    assert config.sample_rate == 0.1
    assert config.upstream == "http://127.0.0.1:8000"
    assert parse_listen(config.listen) == ("0.0.0.0", 8080)
    assert config.capture_enabled
    assert container["image"] == "ghcr.io/x/mp:1" and container["args"] == ["capture"]


def test_sidecar_is_restricted_probed_and_bounded() -> None:
    container = sidecar_container("iris", "r1", "https://monitor", 1, "img")
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] > 0
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["ports"] == [{"name": CAPTURE_PORT_NAME, "containerPort": 8080, "protocol": "TCP"}]
    assert len(CAPTURE_PORT_NAME) <= 15  # IANA service name limit Kubernetes enforces
    probe = container["readinessProbe"]["httpGet"]
    assert probe == {"path": "/capture/healthz", "port": CAPTURE_PORT_NAME}
    resources = container["resources"]
    assert "memory" in resources["limits"] and "cpu" not in resources["limits"]
    assert set(resources["requests"]) == {"cpu", "memory"}
    assert _env(container)["MODELPILOT_SAMPLE_RATE"] == "1.0"


def test_sidecar_spec_is_deterministic_and_fresh() -> None:
    args = ("iris", "r1", "http://m", 0.25, "img")
    first = sidecar_container(*args)
    snapshot = copy.deepcopy(first)
    first["env"].append({"name": "X", "value": "y"})
    assert sidecar_container(*args) == snapshot


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("", "r1", "http://m", 0.5, "img"), "model and revision"),
        (("iris", "", "http://m", 0.5, "img"), "model and revision"),
        (("iris", "r1", "monitor:8080", 0.5, "img"), "monitor_url"),
        (("iris", "r1", "http://m", 1.5, "img"), "sample_rate"),
        (("iris", "r1", "http://m", -0.1, "img"), "sample_rate"),
        (("iris", "r1", "http://m", 0.5, ""), "image"),
    ],
)
def test_sidecar_rejects_bad_input(args, message) -> None:
    with pytest.raises(ValueError, match=message):
        sidecar_container(*args)


def test_config_defaults_env_and_overrides() -> None:
    default = CaptureConfig.from_env({})
    assert default.listen == "0.0.0.0:8080" and default.upstream == "http://127.0.0.1:8000"
    assert not default.capture_enabled  # no monitor: a plain proxy
    env = {
        "MODELPILOT_SAMPLE_RATE": "0.5",
        "MODELPILOT_MONITOR_URL": "http://m",
        "MODELPILOT_LISTEN": "[::]:9000",
        "MODELPILOT_REVISION": "r1",
    }
    config = CaptureConfig.from_env(env, listen="127.0.0.1:7000", model=None)
    assert config.sample_rate == 0.5 and config.listen == "127.0.0.1:7000"
    assert (config.revision, config.model) == ("r1", "")
    # The monitor refuses records without a revision: better to fail at start than drop everything.
    with pytest.raises(ValueError, match="revision is required"):
        CaptureConfig.from_env({**env, "MODELPILOT_REVISION": ""})
    assert parse_listen("[::]:9000") == ("::", 9000)
    assert not CaptureConfig.from_env({**env, "MODELPILOT_SAMPLE_RATE": "0"}).capture_enabled
    for bad in (
        {"MODELPILOT_SAMPLE_RATE": "2"},
        {"MODELPILOT_UPSTREAM": "127.0.0.1:8000"},
        {"MODELPILOT_LISTEN": "8080"},
    ):
        with pytest.raises(ValueError):
            CaptureConfig.from_env(bad)
    with pytest.raises(ValueError, match="batch_size"):
        CaptureConfig(batch_size=0)


def test_sampling_is_deterministic_and_close_to_the_rate() -> None:
    ids = [f"request-{i}" for i in range(20_000)]
    assert [should_sample(i, 0.2) for i in ids[:100]] == [should_sample(i, 0.2) for i in ids[:100]]
    fraction = sum(should_sample(i, 0.2) for i in ids) / len(ids)
    assert 0.19 < fraction < 0.21
    # Nested rates: whatever is sampled at 10% is also sampled at 20%.
    assert all(should_sample(i, 0.2) for i in ids if should_sample(i, 0.1))
    assert all(should_sample(i, 1.0) for i in ids[:10]) and not any(should_sample(i, 0.0) for i in ids[:10])
    assert sample_point("abc") == sample_point("abc") and 0 <= sample_point("abc") < 1


def test_exported_metric_names_match_the_registry() -> None:
    metrics = CaptureMetrics()
    exposed = {s.name for family in metrics.registry.collect() for s in family.samples}
    assert set(EXPORTED_METRICS) <= exposed
    assert {n for n in exposed if not n.endswith("_created")} == set(EXPORTED_METRICS)


def test_sidecar_resources_can_be_sized_for_traffic() -> None:
    sized = {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}
    container = sidecar_container("iris", "r1", "http://m", 0.1, "img", resources=sized)
    assert container["resources"] == sized
    container["resources"]["requests"]["cpu"] = "1"
    assert sized["requests"]["cpu"] == "500m"  # the caller's mapping is copied, not shared
