"""PromQL builders: label matchers round-trip any value, durations normalise, templates fail loudly."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from modelpilot.analysis.queries import (
    IstioMatch,
    IstioSelector,
    RevisionRef,
    TemplateError,
    TritonLabels,
    builtin_query,
    count_queries,
    escape_label_value,
    escape_regex,
    istio_error_rate,
    istio_latency_quantile,
    label_selector,
    promql_duration,
    render_for_revision,
    render_template,
    triton_count_queries,
)

# A PromQL label matcher: name, operator, double-quoted string with backslash escapes.
MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)(=~|!=|=)"((?:[^"\\]|\\.)*)"')
SELECTOR = re.compile(r'\{((?:[a-zA-Z_][a-zA-Z0-9_]*(?:=~|!=|=)"(?:[^"\\]|\\.)*",?)*)\}')
UNESCAPES = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def parse_selectors(query: str) -> list[dict[str, tuple[str, str]]]:
    """Every ``{...}`` label selector in ``query`` as {label: (operator, unescaped value)}."""
    selectors = []
    for body in SELECTOR.findall(query):
        matchers = {}
        for name, op, raw in MATCHER.findall(body):
            matchers[name] = (op, re.sub(r"\\.", lambda m: UNESCAPES[m.group(0)], raw))
        assert MATCHER.sub("", body).replace(",", "") == "", f"unparsed text in {body!r}"
        selectors.append(matchers)
    return selectors


REF = RevisionRef(namespace="prod", name="fraud", revision="v2", model="fraud")
HOSTILE = RevisionRef(
    namespace="prod", name="fraud", revision='v2",destination_workload=~".*\\', model='m"\n'
)


def test_escape_label_value() -> None:
    assert escape_label_value('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    assert escape_label_value("fraud-v2") == "fraud-v2"


def test_label_selector_round_trips_hostile_values() -> None:
    values = {"a": 'x"}', "b": "back\\slash", "c": "new\nline"}
    assert parse_selectors(label_selector(values)) == [{k: ("=", v) for k, v in values.items()}]


@pytest.mark.parametrize("name", ["", "1abc", "a-b", 'a"', "a b"])
def test_label_selector_rejects_bad_label_names(name: str) -> None:
    with pytest.raises(ValueError):
        label_selector({name: "x"})


def test_istio_queries_select_exactly_one_revision() -> None:
    expected = {
        "reporter": ("=", "destination"),
        "destination_workload_namespace": ("=", "prod"),
        "destination_workload": ("=", "fraud-v2"),
    }
    selectors = parse_selectors(istio_error_rate(REF, "1m"))
    assert expected in selectors
    assert {**expected, "response_code": ("=~", "5..")} in selectors
    assert all(s in (expected, {**expected, "response_code": ("=~", "5..")}) for s in selectors)


def test_hostile_revision_stays_inside_its_label_value() -> None:
    (selector, *_) = parse_selectors(istio_latency_quantile(HOSTILE, 0.99, "1m"))
    assert selector["destination_workload"] == ("=", f"fraud-{HOSTILE.revision}")
    assert len(selector) == 3


@pytest.mark.parametrize(
    ("match", "present", "absent"),
    [
        (IstioMatch.WORKLOAD, {"destination_workload"}, {"destination_version"}),
        (IstioMatch.VERSION, {"destination_version"}, {"destination_workload"}),
        (IstioMatch.BOTH, {"destination_workload", "destination_version"}, set()),
    ],
)
def test_istio_match_styles(match: IstioMatch, present: set[str], absent: set[str]) -> None:
    selector = IstioSelector(match=match, reporter=None, extra={"destination_service_name": "fraud"})
    for parsed in parse_selectors(count_queries("istio", REF, "10m", istio=selector).total):
        assert present <= parsed.keys()
        assert not absent & parsed.keys()
        assert "reporter" not in parsed
        assert parsed["destination_service_name"] == ("=", "fraud")
        if "destination_version" in parsed:
            assert parsed["destination_version"] == ("=", "v2")


def test_latency_quantile_shape() -> None:
    query = istio_latency_quantile(REF, 0.95, "30s")
    assert query.startswith(
        "histogram_quantile(0.95, sum by (le) (rate(istio_request_duration_milliseconds_bucket{"
    )
    assert query.endswith("[30s])))")


@pytest.mark.parametrize("quantile", [0.0, 1.0, 1.5, -0.1])
def test_quantile_range(quantile: float) -> None:
    with pytest.raises(ValueError):
        istio_latency_quantile(REF, quantile, "1m")


def test_triton_selects_model_namespace_and_revision_labels() -> None:
    labels = TritonLabels(model="model", namespace="kubernetes_namespace", revision="modelpilot_revision")
    queries = triton_count_queries(REF, "5m", labels)
    expected = {
        "model": ("=", "fraud"),
        "kubernetes_namespace": ("=", "prod"),
        "modelpilot_revision": ("=", "v2"),
    }
    for query in queries:
        assert parse_selectors(query) and all(s == expected for s in parse_selectors(query))
    assert "nv_inference_request_failure" in queries.errors
    assert "nv_inference_request_success" in queries.total and "nv_inference_request_failure" in queries.total


def test_triton_pod_regex_matches_only_this_revisions_pods() -> None:
    query = builtin_query("errorRate", "triton", REF, "1m", triton=TritonLabels(revision=None))
    op, pattern = parse_selectors(query)[0]["pod"]
    assert op == "=~"
    assert re.fullmatch(pattern, "fraud-v2-5d8f7c9b6d-x2x7q")
    assert not re.fullmatch(pattern, "fraud-v2-1-5d8f7c9b6d-x2x7q")  # revision "v2-1"
    assert not re.fullmatch(pattern, "fraud-v20-5d8f7c9b6d-x2x7q")
    assert not re.fullmatch(pattern, "fraud-v1-5d8f7c9b6d-x2x7q")


def test_escape_regex_makes_metacharacters_literal() -> None:
    pattern = escape_regex("a.b+(c)")
    assert re.fullmatch(pattern, "a.b+(c)")
    assert not re.fullmatch(pattern, "axbb(c)")


def test_triton_needs_model_and_a_revision_label() -> None:
    with pytest.raises(ValueError, match="model"):
        builtin_query("errorRate", "triton", RevisionRef("prod", "fraud", "v2"), "1m")
    with pytest.raises(ValueError):
        TritonLabels(revision=None, pod=None)
    with pytest.raises(ValueError):
        TritonLabels(model="bad-label")


def test_triton_durations_are_milliseconds() -> None:
    query = builtin_query("requestDuration", "triton", REF, "1m")
    assert "nv_inference_request_duration_us" in query and query.endswith("/ 1000")
    assert "nv_inference_queue_duration_us" in builtin_query("queueTime", "triton", REF, "1m")


@pytest.mark.parametrize(
    ("metric", "provider"), [("latencyP99", "triton"), ("queueTime", "istio"), ("errorRate", "monitor")]
)
def test_unsupported_builtin_combinations(metric: str, provider: str) -> None:
    with pytest.raises(ValueError):
        builtin_query(metric, provider, REF, "1m")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1m", "1m"),
        ("1.5m", "90s"),
        ("1h30m", "90m"),
        ("2h", "2h"),
        ("500ms", "500ms"),
        ("0.5s", "500ms"),
        (90, "90s"),
        (0.25, "250ms"),
        (timedelta(hours=3), "3h"),
    ],
)
def test_promql_duration(value, expected: str) -> None:
    assert promql_duration(value) == expected


@pytest.mark.parametrize("value", ["", "1", "m", "1x", "-1m", "1m ", "1.5ms", 0, -5, "1m;drop"])
def test_promql_duration_rejects(value) -> None:
    with pytest.raises(ValueError):
        promql_duration(value)


def test_render_template_substitutes_and_escapes() -> None:
    template = 'sum(rate(x{ns="{{namespace}}", w="{{ workload }}", m="{{model}}"}[{{interval}}]))'
    rendered = render_for_revision(template, HOSTILE, "1.5m")
    assert rendered.endswith("[90s]))")
    assert parse_selectors(rendered.replace(", ", ",")) == [
        {"ns": ("=", "prod"), "w": ("=", HOSTILE.workload), "m": ("=", HOSTILE.model)}
    ]


def test_render_template_unknown_variable() -> None:
    with pytest.raises(TemplateError, match="target"):
        render_for_revision('x{t="{{target}}"}', REF, "1m")


def test_render_template_unset_variable() -> None:
    with pytest.raises(TemplateError, match="model"):
        render_for_revision('x{m="{{model}}"}', RevisionRef("prod", "fraud", "v2"), "1m")


@pytest.mark.parametrize("template", ['x{a="{{name"}', 'x{a="{{ }}"}', 'x{a="{{na-me}}"}', 'x{a="}}"}'])
def test_render_template_malformed(template: str) -> None:
    with pytest.raises(TemplateError):
        render_template(template, {"name": "fraud"})


def test_render_template_without_placeholders_is_unchanged() -> None:
    query = 'sum(rate(http_requests_total{job="api"}[5m]))'
    assert render_template(query, {}) == query
