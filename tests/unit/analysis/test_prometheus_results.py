"""The Prometheus provider turns every answer, and every failure, into a MetricValue."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from modelpilot.analysis.prometheus import PrometheusProvider, interpret_result
from modelpilot.analysis.providers import MetricProblem, MetricProvider


def vector(*values: str) -> list[dict]:
    return [{"metric": {"pod": f"p{i}"}, "value": [1700000000.0, v]} for i, v in enumerate(values)]


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        (vector("0.25"), 0.25),
        (vector("+Inf"), float("inf")),  # histogram_quantile beyond the last bucket
        ([1700000000.0, "3"], 3.0),  # scalar result
    ],
)
def test_values(result, expected: float) -> None:
    value = interpret_result(result)
    assert (value.ok, value.value, value.problem) == (True, expected, None)


@pytest.mark.parametrize(
    ("result", "problem"),
    [
        ([], MetricProblem.NO_DATA),
        (vector("NaN"), MetricProblem.NOT_A_NUMBER),
        ([1700000000.0, "NaN"], MetricProblem.NOT_A_NUMBER),
        (vector("1", "2"), MetricProblem.AMBIGUOUS),
        (vector("not-a-number"), MetricProblem.QUERY_ERROR),
        ([{"metric": {}}], MetricProblem.QUERY_ERROR),
        ({"unexpected": True}, MetricProblem.QUERY_ERROR),
    ],
)
def test_missing_values(result, problem: MetricProblem) -> None:
    value = interpret_result(result)
    assert (value.ok, value.value, value.problem) == (False, None, problem)
    assert value.reason


class FakePrometheus(BaseHTTPRequestHandler):
    """Answers /api/v1/query with whatever the test put in ``server.reply``."""

    def do_GET(self) -> None:
        self.server.queries.append(parse_qs(urlparse(self.path).query))
        status, body = self.server.reply
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def fake() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakePrometheus)
    server.queries, server.reply = [], (200, "{}")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def success(result: list) -> str:
    return json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}})


def provider_for(server: ThreadingHTTPServer) -> PrometheusProvider:
    return PrometheusProvider(f"http://127.0.0.1:{server.server_port}", timeout_s=2)


def test_provider_sends_query_and_time(fake: ThreadingHTTPServer) -> None:
    fake.reply = (200, success(vector("0.5")))
    with provider_for(fake) as provider:
        assert isinstance(provider, MetricProvider)
        value = provider.evaluate("sum(up)", at=1700000000.5)
    assert (value.ok, value.value) == (True, 0.5)
    assert fake.queries == [{"query": ["sum(up)"], "time": ["1700000000.500"]}]


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        ((400, '{"status":"error","error":"parse error"}'), MetricProblem.QUERY_ERROR),
        ((500, "internal"), MetricProblem.QUERY_ERROR),
        ((503, "overloaded"), MetricProblem.UNREACHABLE),
        ((200, "<html>proxy login</html>"), MetricProblem.QUERY_ERROR),
        ((200, '{"status":"success"}'), MetricProblem.QUERY_ERROR),
        ((200, success([])), MetricProblem.NO_DATA),
    ],
)
def test_provider_reports_failures_without_raising(fake: ThreadingHTTPServer, reply, problem) -> None:
    fake.reply = reply
    with provider_for(fake) as provider:
        value = provider.evaluate("sum(up)")
    assert (value.ok, value.value, value.problem) == (False, None, problem)
    assert len(fake.queries) == 1  # no retries by default


def test_provider_unreachable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with PrometheusProvider(f"http://127.0.0.1:{port}", timeout_s=1) as provider:
        value = provider.evaluate("up")
    assert (value.ok, value.value, value.problem) == (False, None, MetricProblem.UNREACHABLE)
    assert str(port) in value.reason
