"""Bad or hostile input gets a 4xx naming the field, never a 500 or a silent null; bytes stay bounded."""

from __future__ import annotations

import asyncio
import os

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families
from tests.unit.monitor.monitor_helpers import NOW, as_payload, config, model_entry, predictions

from modelpilot.monitor.api import MonitorService, create_app, runner_options
from modelpilot.monitor.records import Prediction
from modelpilot.monitor.store import PredictionBatch, Store

FEATURES = [{"name": "x"}, {"name": "y", "type": "numeric"}, {"name": "c", "type": "categorical"}]


@pytest.fixture
async def make_client(tmp_path):
    made: list[tuple[MonitorService, TestClient]] = []

    async def make(cfg=None) -> tuple[MonitorService, TestClient]:
        service = MonitorService(
            cfg or config(model_entry(features=FEATURES)), tmp_path / f"h{len(made)}.db", clock=lambda: NOW
        )
        await service.start(analysis=False)
        server = TestServer(create_app(service))
        await server.start_server(**runner_options(service.config))  # the real server's timeouts
        client = TestClient(server)
        await client.start_server()
        made.append((service, client))
        return service, client

    yield make
    for service, client in made:
        await client.close()
        await service.stop()


def _record(
    inputs: str = '{"x": 1.5, "y": 2, "c": "a"}', outputs: str = '{"label": 1}', ts: str = "null"
) -> bytes:
    return (
        f'{{"records": [{{"request_id": "a", "model": "fraud", "revision": "v1", "timestamp": {ts}, '
        f'"inputs": {inputs}, "outputs": {outputs}}}]}}'
    ).encode()


@pytest.mark.parametrize(
    ("body", "field", "what"),
    [
        (_record(inputs='{"x": NaN, "y": 2, "c": "a"}'), "records[0].inputs.x", "finite"),
        (_record(outputs='{"label": 1, "score": Infinity}'), "records[0].outputs.score", "finite"),
        (_record(outputs='{"p": [0.5, -Infinity]}'), "records[0].outputs.p[1]", "finite"),
        (_record(inputs='{"x": 1, "y": 2}'), "records[0].inputs", "missing 'c'"),
        (
            _record(inputs='{"x": 1, "y": 2, "c": "a", "z": 3}'),
            "records[0].inputs.z",
            "not a configured feature",
        ),
        (_record(inputs='{"x": "12.5", "y": 2, "c": "a"}'), "records[0].inputs.x", "numeric feature"),
        (_record(inputs='{"x": true, "y": 2, "c": "a"}'), "records[0].inputs.x", "numeric feature"),
        (_record(inputs='{"x": 1, "y": 2, "c": 0.5}'), "records[0].inputs.c", "categorical feature"),
        (_record(inputs='{"x": [[[[1]]]], "y": 2, "c": "a"}'), "records[0].inputs.x", "expected a number"),
        (_record(ts=repr(NOW + 301)), "records[0].timestamp", "in the future"),
        (b"[" * 100_000 + b"]" * 100_000, "body", "nested too deeply"),
        (b'{"records": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5000 + b"}", "body", "nested too deeply"),
    ],
)
async def test_each_bad_input_class_gets_400_naming_the_field(make_client, body, field, what):
    service, client = await make_client()
    response = await client.post("/v1/predictions", data=body, headers={"Content-Type": "application/json"})
    assert response.status == 400, await response.text()
    error = (await response.json())["error"]
    assert error.startswith(field) and what in error, error
    assert service.reader_store.count("predictions") == 0


async def test_null_is_the_one_missing_value_marker_and_small_skew_is_accepted(make_client):
    service, client = await make_client()
    body = _record(inputs='{"x": null, "y": 2, "c": null}', ts=repr(NOW + 299))
    response = await client.post("/v1/predictions", data=body, headers={"Content-Type": "application/json"})
    assert response.status == 200, await response.text()
    assert service.reader_store.get_prediction("fraud", "a")["inputs"] == {"x": None, "y": 2, "c": None}


async def test_bad_labels_get_400_naming_the_field(make_client):
    _, client = await make_client(config(model_entry(), model_entry("churn")))
    cases = [
        ({"request_id": "a", "label": 1, "model": "fraud", "timestamp": NOW + 3600}, "labels[0].timestamp"),
        ({"request_id": "a", "label": 1}, "labels[0].model"),  # two models: ids are scoped per model
        ({"request_id": "a", "label": 1, "model": "nope"}, "not configured"),
    ]
    for label, message in cases:
        response = await client.post("/v1/labels", json={"labels": [label]})
        assert response.status == 400 and message in (await response.json())["error"], label
    ok = await client.post("/v1/labels", json={"labels": [{"request_id": "a", "label": 1, "model": "churn"}]})
    assert ok.status == 200


async def test_a_stalled_body_gets_408_and_the_connection_is_closed(make_client):
    _, client = await make_client(config(model_entry(), ingest={"readTimeout": "300ms"}))
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(
        b"POST /v1/predictions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: 1000\r\n\r\n{"records": ['
    )
    await writer.drain()
    status = await asyncio.wait_for(reader.readline(), 5)
    assert status.startswith(b"HTTP/1.1 408"), status
    rest = await asyncio.wait_for(reader.read(), 5)  # EOF: the server closed the connection
    assert b"not received within 0.3 s" in rest
    writer.close()


async def test_idle_and_header_stalling_connections_are_closed(make_client):
    _, client = await make_client(config(model_entry(), ingest={"idleTimeout": "500ms"}))
    for opening in (b"", b"POST /v1/predictions HTTP/1.1\r\nHost: x\r\n"):  # idle; headers never end
        reader, writer = await asyncio.open_connection(client.host, client.port)
        writer.write(opening)
        await writer.drain()
        started = asyncio.get_running_loop().time()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server, unanswered
        assert asyncio.get_running_loop().time() - started < 3
        writer.close()


def _big(n: int, start: int, revision: str = "v1") -> list[Prediction]:
    blob = "z" * 4000
    return [
        Prediction(
            f"r{i}", "fraud", revision, NOW - 3600 + i, {"x": float(i), "blob": blob}, {"label": i % 2}
        )
        for i in range(start, start + n)
    ]


def test_byte_retention_holds_under_a_flood_oldest_first(tmp_path):
    path = tmp_path / "flood.db"
    limit = 3 * 1024 * 1024
    batch = 50  # ~200 KB a batch; the flood writes ~12 MB, four times the bound
    with Store(path, clock=lambda: NOW, max_bytes=limit) as store:
        for round_ in range(60):
            store.write_one(PredictionBatch(_big(batch, round_ * batch)))
            assert store.used_bytes() <= limit  # the writer deleted old rows right after the commit
            # The file never grows past the bound plus one batch (freed pages are reused).
            assert os.path.getsize(path) <= limit + 2 * batch * 4200, round_
        kept = {row[0] for row in store.conn.execute("SELECT request_id FROM predictions")}
        assert {f"r{i}" for i in range(59 * batch, 60 * batch)} <= kept  # the newest batch is whole
        assert "r0" not in kept and len(kept) < 60 * batch
        assert store.bytes_evicted == 60 * batch - len(kept)


def test_retention_by_bytes_runs_with_the_other_bounds(tmp_path):
    with Store(tmp_path / "tick.db", clock=lambda: NOW) as store:  # no write-side bound here
        for round_ in range(10):
            store.write_one(PredictionBatch(_big(50, round_ * 50)))
        result = store.enforce_retention(
            max_rows=10_000, max_age=86_400, label_max_age=86_400, max_bytes=512 * 1024, now=NOW
        )
        assert result.by_bytes == result.predictions_deleted > 0
        assert store.used_bytes() <= 512 * 1024


async def test_store_bytes_are_exported_and_evictions_counted(make_client):
    _, client = await make_client(config(model_entry(), retention={"maxBytes": 2 * 1024 * 1024}))
    for round_ in range(25):
        rows = _big(50, round_ * 50)
        assert (await client.post("/v1/predictions", json=as_payload(rows))).status == 200
    text = await (await client.get("/metrics")).text()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }
    assert samples[("modelpilot_monitor_store_max_bytes", ())] == 2 * 1024 * 1024
    assert samples[("modelpilot_monitor_store_bytes", ())] > 0
    assert samples[("modelpilot_monitor_retention_deleted_total", (("reason", "bytes"),))] > 0
    assert samples[("modelpilot_monitor_retention_deleted_total", (("reason", "age"),))] == 0


async def test_predictions_of_a_model_without_features_are_not_schema_checked(make_client):
    _, client = await make_client(config(model_entry()))
    response = await client.post("/v1/predictions", json=as_payload(predictions(3)))
    assert response.status == 200
