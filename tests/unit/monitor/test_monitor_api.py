"""The HTTP API in-process: validation, ingest, labels, review, replay, back-pressure, metrics."""

from __future__ import annotations

import asyncio
import os

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families
from tests.unit.monitor.monitor_helpers import NOW, as_payload, config, model_entry, predictions

from modelpilot.monitor.api import MonitorService, create_app


@pytest.fixture
async def make_client(tmp_path):
    made: list[tuple[MonitorService, TestClient]] = []

    async def make(cfg=None, *, writer: bool = True) -> tuple[MonitorService, TestClient]:
        service = MonitorService(cfg or config(), tmp_path / f"api{len(made)}.db", clock=lambda: NOW)
        await service.start(writer=writer, analysis=False)
        client = TestClient(TestServer(create_app(service)))
        await client.start_server()
        made.append((service, client))
        return service, client

    yield make
    for service, client in made:
        await client.close()
        await service.stop()


def _samples(text: str, name: str) -> dict[tuple, float]:
    result = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                result[tuple(sorted(sample.labels.items()))] = sample.value
    return result


async def test_predictions_are_acknowledged_after_commit(make_client):
    service, client = await make_client()
    rows = predictions(30)
    response = await client.post("/v1/predictions", json=as_payload(rows))
    assert response.status == 200
    assert (await response.json())["accepted"] == 30
    # Acknowledged means committed: another connection sees all rows right away.
    assert service.reader_store.count("predictions") == 30
    again = await client.post("/v1/predictions", json=as_payload(rows[:10]))
    assert (await again.json()) | {} == {
        "accepted": 10,
        "inserted": 0,
        "duplicates": 10,
        "joined": 0,
        "queued_for_review": 0,
    }
    fetched = await client.get(f"/v1/predictions/{rows[3].request_id}")
    assert (await fetched.json())["inputs"] == rows[3].inputs
    assert (await client.get("/v1/predictions/nope")).status == 404


async def test_missing_timestamp_defaults_to_now(make_client):
    service, client = await make_client()
    body = {
        "records": [
            {"request_id": "a", "model": "fraud", "revision": "v1", "inputs": {"x": 1}, "outputs": {"y": 0}}
        ]
    }
    assert (await client.post("/v1/predictions", json=body)).status == 200
    assert service.reader_store.get_prediction("fraud", "a")["timestamp"] == NOW


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"records": [{"model": "fraud", "revision": "v1"}]}, "records[0].request_id"),
        (
            {"records": [{"request_id": "a", "model": "fraud", "revision": "v1", "inputs": {"x": [1, 2]}}]},
            "records[0].inputs.x",
        ),
        (
            {"records": [{"request_id": "a", "model": "fraud", "revision": "v1", "timestamp": "yesterday"}]},
            "timestamp",
        ),
        (
            {
                "records": [
                    {"request_id": "a", "model": "fraud", "revision": "v1", "outputs": {"p": {"a": 1}}}
                ]
            },
            "outputs.p",
        ),
        ({"records": []}, "empty"),
        ({"rows": []}, "records"),
        ({"records": [{"request_id": "a", "model": "other", "revision": "v1"}]}, "not configured"),
    ],
)
async def test_bad_predictions_get_400_with_a_readable_error(make_client, body, message):
    service, client = await make_client()
    response = await client.post("/v1/predictions", json=body)
    assert response.status == 400
    assert message in (await response.json())["error"]
    assert service.reader_store.count("predictions") == 0


async def test_invalid_json_and_oversized_batches_are_rejected(make_client):
    _, client = await make_client(config(model_entry(), ingest={"maxRecordsPerRequest": 5}))
    response = await client.post(
        "/v1/predictions", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status == 400 and "JSON" in (await response.json())["error"]
    response = await client.post("/v1/predictions", json=as_payload(predictions(6)))
    assert response.status == 400 and "at most 5" in (await response.json())["error"]
    metrics = await (await client.get("/metrics")).text()
    assert _samples(metrics, "modelpilot_monitor_dropped_total")[(("reason", "invalid"),)] == 7


async def test_full_queue_answers_429_with_retry_after_and_counts_the_rejection(make_client):
    service, client = await make_client(config(model_entry(), ingest={"queueSize": 1}), writer=False)
    first = asyncio.create_task(client.post("/v1/predictions", json=as_payload(predictions(3, prefix="a-"))))
    for _ in range(200):
        if service.queue.depth == 1:
            break
        await asyncio.sleep(0.01)
    assert service.queue.depth == 1
    rejected = await client.post("/v1/predictions", json=as_payload(predictions(7, prefix="b-")))
    assert rejected.status == 429
    assert rejected.headers["Retry-After"] == "1"
    metrics = await (await client.get("/metrics")).text()
    assert _samples(metrics, "modelpilot_monitor_dropped_total")[(("reason", "queue_full"),)] == 7
    assert _samples(metrics, "modelpilot_monitor_queue_depth")[()] == 1
    assert not first.done()  # still waiting for its commit: nothing acknowledged early
    service.queue.start()
    response = await asyncio.wait_for(first, 5)
    assert response.status == 200
    assert service.reader_store.count("predictions") == 3


async def test_labels_join_and_report_pending(make_client):
    _service, client = await make_client()
    rows = predictions(4)
    await client.post("/v1/predictions", json=as_payload(rows[:2]))
    body = {"labels": [{"request_id": r.request_id, "label": 1, "timestamp": NOW + 60} for r in rows]}
    response = await client.post("/v1/labels", json=body)
    assert await response.json() == {
        "accepted": 4,
        "joined": 2,
        "joined_predictions": 2,
        "pending": 2,
        "outside_window": 0,
    }
    await client.post("/v1/predictions", json=as_payload(rows[2:]))
    labeled = await (await client.get("/v1/labeled", params={"model": "fraud"})).json()
    assert len(labeled["items"]) == 4
    assert labeled["items"][0]["label_source"] == "delayed_label"
    bad = await client.post(
        "/v1/labels", json={"labels": [{"request_id": "a", "label": 1, "source": "oracle"}]}
    )
    assert bad.status == 400 and "source" in (await bad.json())["error"]
    bad = await client.post("/v1/labels", json={"labels": [{"request_id": "a", "label": None}]})
    assert bad.status == 400 and "labels[0].label" in (await bad.json())["error"]


async def test_labeled_requires_a_model_and_pages(make_client):
    _, client = await make_client()
    rows = predictions(5)
    await client.post("/v1/predictions", json=as_payload(rows))
    await client.post("/v1/labels", json={"labels": [{"request_id": r.request_id, "label": 0} for r in rows]})
    assert (await client.get("/v1/labeled")).status == 400
    assert (await client.get("/v1/labeled", params={"model": "fraud", "limit": "0"})).status == 400
    page = await (await client.get("/v1/labeled", params={"model": "fraud", "limit": "3"})).json()
    assert len(page["items"]) == 3 and page["next_cursor"]
    rest = await (
        await client.get("/v1/labeled", params={"model": "fraud", "cursor": page["next_cursor"]})
    ).json()
    assert len(rest["items"]) == 2 and rest["next_cursor"] is None
    ids = [i["request_id"] for i in page["items"] + rest["items"]]
    assert sorted(ids) == sorted(r.request_id for r in rows)


async def test_manual_review_flow(make_client):
    _service, client = await make_client(config(model_entry(reviewSampleRate=1.0)))
    rows = predictions(3)
    await client.post("/v1/predictions", json=as_payload(rows))
    queue = await (await client.get("/v1/review", params={"model": "fraud", "limit": "10"})).json()
    assert [item["request_id"] for item in queue["items"]] == sorted(r.request_id for r in rows)
    target = rows[1].request_id
    response = await client.post(f"/v1/review/{target}", json={"label": 0, "reviewer": "alice"})
    assert await response.json() == {"request_id": target, "joined": True}
    record = await (await client.get(f"/v1/predictions/{target}")).json()
    assert (record["label"], record["label_source"]) == (0, "manual_review")
    queue = await (await client.get("/v1/review", params={"model": "fraud"})).json()
    assert target not in {item["request_id"] for item in queue["items"]}
    assert (await client.post("/v1/review/unknown", json={"label": 0, "reviewer": "alice"})).status == 404
    assert (await client.post(f"/v1/review/{target}", json={"label": 0})).status == 400


async def test_health_and_metrics(make_client):
    service, client = await make_client()
    assert (await client.get("/healthz")).status == 200
    await client.post("/v1/predictions", json=as_payload(predictions(4, revision="v2")))
    metrics = await (await client.get("/metrics")).text()
    records = _samples(metrics, "modelpilot_monitor_records_total")
    assert records[(("model", "fraud"), ("namespace", "team-a"), ("revision", "v2"))] == 4
    await service.queue.stop()
    assert (await client.get("/healthz")).status == 503


async def test_status_reports_the_latest_evaluation_as_json(make_client):
    service, client = await make_client()
    await client.post("/v1/predictions", json=as_payload(predictions(50, ts=NOW - 60)))
    before = await (await client.get("/v1/status")).json()
    assert (before["models"], before["skipped"]) == ([], [])  # not evaluated yet
    # No retention.maxBytes: 80 % of the file system the database is on.
    volume = os.statvfs(service.reader_store.path.rsplit("/", 1)[0])
    assert before["store"]["used_bytes"] > 0
    assert before["store"]["max_bytes"] == int(volume.f_blocks * volume.f_frsize * 0.8)
    await service.evaluate_now()
    status = await (await client.get("/v1/status", params={"model": "fraud"})).json()
    (model,) = status["models"]
    assert (model["model"], model["stable"], model["reference"]["source"]) == ("fraud", "v1", "profile")
    (revision,) = model["revisions"]
    assert (revision["revision"], revision["role"], revision["window_rows"]) == ("v1", "stable", 50)
    assert revision["data_drift"]["status"] in ("stable", "inconclusive", "drifted")
    assert revision["label_coverage"] == 0.0


async def test_oversized_bodies_get_413(make_client):
    service, client = await make_client(config(model_entry(), ingest={"maxBodyBytes": 2048}))
    response = await client.post("/v1/predictions", json=as_payload(predictions(50)))
    assert response.status == 413
    assert service.reader_store.count("predictions") == 0
