"""Authentication (401) and scoping by model and role (403) on every monitor endpoint."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from tests.unit.monitor.monitor_helpers import NOW, as_payload, config, model_entry, predictions

from modelpilot.monitor.api import MonitorService, create_app
from modelpilot.monitor.auth import (
    AUDIENCE,
    POD_NAME_EXTRA,
    AccessPolicy,
    AuthConfigError,
    Identity,
    PolicyAuthorizer,
    StaticVerifier,
    TokenReviewVerifier,
    auth_headers,
    pod_revision,
)

SA = "system:serviceaccount:team-a"
ACCESS = {
    "readers": [f"{SA.replace('team-a', 'modelpilot-system')}:modelpilot"],
    "models": {
        "fraud": {
            "writers": [f"{SA}:fraud-triton"],
            "labelFeeders": [f"{SA}:chargebacks"],
            "reviewers": ["alice", "group:fraud-reviewers"],
        },
        "churn": {"writers": [f"{SA}:churn-triton"], "readers": ["group:churn-analysts"]},
    },
}
TOKENS = {
    "tok-fraud-capture": Identity(f"{SA}:fraud-triton"),
    "tok-churn-capture": Identity(f"{SA}:churn-triton"),
    "tok-feeder": Identity(f"{SA}:chargebacks"),
    "tok-alice": Identity("alice"),
    "tok-carol": Identity("carol", frozenset({"fraud-reviewers"})),
    "tok-operator": Identity("system:serviceaccount:modelpilot-system:modelpilot"),
    "tok-analyst": Identity("dave", frozenset({"churn-analysts"})),
    "tok-nobody": Identity(f"{SA}:default"),
}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@contextlib.asynccontextmanager
async def serving(db, cfg, tokens, access, **options) -> AsyncIterator[TestClient]:
    """The monitor's app over a real socket, authenticating ``tokens`` against ``access``."""
    service = MonitorService(
        cfg,
        db,
        clock=lambda: NOW,
        verifier=StaticVerifier(tokens),
        authorize=PolicyAuthorizer(AccessPolicy.from_document(access)),
        **options,
    )
    await service.start(analysis=False)
    client = TestClient(TestServer(create_app(service)))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()
        await service.stop()


@pytest.fixture
async def client(tmp_path):
    cfg = config(model_entry("fraud", reviewSampleRate=1.0), model_entry("churn"))
    async with serving(tmp_path / "auth.db", cfg, TOKENS, ACCESS) as test_client:
        yield test_client


ENDPOINTS = [
    ("post", "/v1/predictions", {"json": as_payload(predictions(1))}),
    ("get", "/v1/predictions/v1-0", {"params": {"model": "fraud"}}),
    ("post", "/v1/labels", {"json": {"labels": [{"request_id": "v1-0", "label": 1, "model": "fraud"}]}}),
    ("get", "/v1/review", {"params": {"model": "fraud"}}),
    ("post", "/v1/review/v1-0", {"json": {"label": 0, "reviewer": "x"}, "params": {"model": "fraud"}}),
    ("get", "/v1/labeled", {"params": {"model": "fraud"}}),
    ("get", "/v1/status", {}),
    ("get", "/v1/shadow", {}),
    ("get", "/metrics", {}),
]


@pytest.mark.parametrize(("method", "path", "kwargs"), ENDPOINTS, ids=[f"{m} {p}" for m, p, _ in ENDPOINTS])
async def test_every_endpoint_needs_a_valid_token_and_scope(client, method, path, kwargs):
    call = getattr(client, method)
    missing = await call(path, **kwargs)
    assert missing.status == 401 and missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await call(path, headers=bearer("not-a-token"), **kwargs)).status == 401
    assert (await call(path, headers={"Authorization": "Basic tok-alice"}, **kwargs)).status == 401
    assert (await call(path, headers=bearer("tok-nobody"), **kwargs)).status == 403


async def test_healthz_stays_open(client):
    assert (await client.get("/healthz")).status == 200


async def test_capture_identity_writes_only_its_own_model(client):
    fraud, churn = as_payload(predictions(3)), as_payload(predictions(3, model="churn"))
    assert (
        await client.post("/v1/predictions", json=fraud, headers=bearer("tok-fraud-capture"))
    ).status == 200
    assert (
        await client.post("/v1/predictions", json=churn, headers=bearer("tok-fraud-capture"))
    ).status == 403
    mixed = {"records": fraud["records"] + churn["records"]}
    assert (
        await client.post("/v1/predictions", json=mixed, headers=bearer("tok-fraud-capture"))
    ).status == 403
    assert (
        await client.post("/v1/predictions", json=churn, headers=bearer("tok-churn-capture"))
    ).status == 200
    # A writer cannot read back what it (or anyone) wrote, nor feed labels.
    read = await client.get(
        "/v1/predictions/v1-0", params={"model": "fraud"}, headers=bearer("tok-fraud-capture")
    )
    assert read.status == 403
    label = {"labels": [{"request_id": "v1-0", "label": 1, "model": "fraud"}]}
    assert (await client.post("/v1/labels", json=label, headers=bearer("tok-fraud-capture"))).status == 403


async def test_label_feeder_cannot_post_manual_review(client):
    await client.post("/v1/predictions", json=as_payload(predictions(2)), headers=bearer("tok-fraud-capture"))
    delayed = {"labels": [{"request_id": "v1-0", "label": 1, "model": "fraud", "source": "delayed_label"}]}
    assert (await client.post("/v1/labels", json=delayed, headers=bearer("tok-feeder"))).status == 200
    manual = {"labels": [{"request_id": "v1-1", "label": 0, "model": "fraud", "source": "manual_review"}]}
    denied = await client.post("/v1/labels", json=manual, headers=bearer("tok-feeder"))
    assert denied.status == 403 and "review" in (await denied.json())["error"]
    assert (await client.post("/v1/labels", json=manual, headers=bearer("tok-alice"))).status == 200
    # The feeder is scoped to fraud: churn labels are refused.
    churn = {"labels": [{"request_id": "v1-0", "label": 1, "model": "churn"}]}
    assert (await client.post("/v1/labels", json=churn, headers=bearer("tok-feeder"))).status == 403
    # A review decision needs a reviewer too; a group membership counts.
    review = {"json": {"label": 1, "reviewer": "x"}, "params": {"model": "fraud"}}
    assert (await client.post("/v1/review/v1-1", headers=bearer("tok-feeder"), **review)).status == 403
    assert (
        await client.get("/v1/review", params={"model": "fraud"}, headers=bearer("tok-carol"))
    ).status == 200
    assert (await client.post("/v1/review/v1-0", headers=bearer("tok-carol"), **review)).status == 200


async def test_reads_need_reader_scope(client):
    await client.post("/v1/predictions", json=as_payload(predictions(2)), headers=bearer("tok-fraud-capture"))
    fraud = {"params": {"model": "fraud"}}
    assert (await client.get("/v1/labeled", headers=bearer("tok-operator"), **fraud)).status == 200
    assert (await client.get("/v1/predictions/v1-0", headers=bearer("tok-operator"), **fraud)).status == 200
    assert (await client.get("/v1/status", headers=bearer("tok-operator"))).status == 200
    assert (await client.get("/metrics", headers=bearer("tok-operator"))).status == 200
    # A reader of churn only: churn yes, fraud no, and "every model" (no ?model=) no.
    assert (await client.get("/v1/labeled", headers=bearer("tok-analyst"), **fraud)).status == 403
    churn = {"params": {"model": "churn"}}
    assert (await client.get("/v1/labeled", headers=bearer("tok-analyst"), **churn)).status == 200
    assert (await client.get("/v1/status", headers=bearer("tok-analyst"), **churn)).status == 200
    assert (await client.get("/v1/status", headers=bearer("tok-analyst"))).status == 403
    # A label feeder writes ground truth but cannot read inputs back.
    assert (await client.get("/v1/labeled", headers=bearer("tok-feeder"), **fraud)).status == 403


async def test_reviewer_name_comes_from_the_token(client):
    await client.post("/v1/predictions", json=as_payload(predictions(1)), headers=bearer("tok-fraud-capture"))
    body = {"label": 1, "reviewer": "someone-else"}
    response = await client.post(
        "/v1/review/v1-0", json=body, params={"model": "fraud"}, headers=bearer("tok-alice")
    )
    assert response.status == 200


# ------------------------------------------------------------------ TokenReview verifier


class FakeTokenReviews:
    """Answers like the API server's ``POST /apis/authentication.k8s.io/v1/tokenreviews``."""

    def __init__(self, tokens: dict[str, dict]) -> None:
        self.tokens, self.requests = tokens, []

    async def __call__(self, body: dict) -> dict:
        self.requests.append(body)
        spec = body["spec"]
        user = self.tokens.get(spec["token"])
        if user is None or AUDIENCE not in user.get("audiences", [AUDIENCE]):
            return {**body, "status": {"authenticated": False, "error": "invalid bearer token"}}
        status = {
            "authenticated": True,
            "user": {k: v for k, v in user.items() if k != "audiences"},
            "audiences": spec["audiences"],
        }
        return {**body, "status": status}


async def test_token_review_verifier_maps_the_answer_and_caches():
    now = [0.0]
    reviews = FakeTokenReviews(
        {
            "pod-token": {
                "username": f"{SA}:fraud-triton",
                "uid": "u1",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:team-a"],
                "extra": {"authentication.kubernetes.io/pod-name": ["fraud-v2-abc"]},
            },
            "other-audience": {
                "username": f"{SA}:fraud-triton",
                "audiences": ["https://kubernetes.default.svc"],
            },
        }
    )
    verifier = TokenReviewVerifier(reviews, ttl=60, negative_ttl=5, clock=lambda: now[0])
    identity = await verifier.verify("pod-token")
    assert identity is not None and identity.username == f"{SA}:fraud-triton"
    assert "group:system:serviceaccounts:team-a" in identity.principals
    assert identity.extra["authentication.kubernetes.io/pod-name"] == ("fraud-v2-abc",)
    assert reviews.requests[0]["spec"] == {"token": "pod-token", "audiences": [AUDIENCE]}
    assert await verifier.verify("pod-token") == identity and verifier.reviews == 1  # cached
    now[0] = 61.0
    await verifier.verify("pod-token")
    assert verifier.reviews == 2  # expired, asked again
    assert await verifier.verify("other-audience") is None
    assert await verifier.verify("garbage") is None
    assert await verifier.verify("garbage") is None and verifier.reviews == 4  # refusals cached too


async def test_token_review_refuses_an_answer_for_another_audience():
    async def lying(body: dict) -> dict:
        return {"status": {"authenticated": True, "user": {"username": "x"}, "audiences": ["other"]}}

    assert await TokenReviewVerifier(lying).verify("t") is None


async def test_token_service_down_is_503_not_401(tmp_path):
    async def down(body: dict) -> dict:
        raise OSError("connection refused")

    service = MonitorService(
        config(),
        tmp_path / "d.db",
        clock=lambda: NOW,
        verifier=TokenReviewVerifier(down),
        authorize=PolicyAuthorizer(AccessPolicy()),
    )
    await service.start(analysis=False)
    client = TestClient(TestServer(create_app(service)))
    await client.start_server()
    try:
        response = await client.get("/v1/status", headers=bearer("anything"))
        assert response.status == 503 and response.headers["Retry-After"]
    finally:
        await client.close()
        await service.stop()


# ------------------------------------------------------------------ files


def test_static_tokens_file_and_access_document(tmp_path):
    secret = tmp_path / "feeder.token"
    secret.write_text("feeder-secret-123\n")
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(
        "tokens:\n  - {token: capture-secret-1, username: capture, groups: [capture]}\n"
        f"  - {{tokenFile: {secret}, username: feeder}}\n"
    )
    verifier = StaticVerifier.from_file(tokens)
    assert verifier._tokens  # both entries loaded
    with pytest.raises(AuthConfigError, match="at least 8"):
        bad = tmp_path / "bad.yaml"
        bad.write_text("tokens: [{token: short, username: x}]\n")
        StaticVerifier.from_file(bad)
    with pytest.raises(AuthConfigError, match="unknown roles"):
        AccessPolicy.from_document({"models": {"fraud": {"writer": ["x"]}}})
    policy = AccessPolicy.from_document(ACCESS)
    assert policy.allows(Identity("alice"), "review", "fraud")
    assert not policy.allows(Identity("alice"), "review", "churn")
    assert not policy.allows(Identity("alice"), "read", "fraud")


def test_auth_headers_read_the_token_file_each_time(tmp_path):
    path = tmp_path / "token"
    assert auth_headers(path) == {} and auth_headers(None) == {}
    path.write_text("abc\n")
    assert auth_headers(path) == {"Authorization": "Bearer abc"}
    path.write_text("rotated")
    assert auth_headers(path) == {"Authorization": "Bearer rotated"}


async def test_pod_bound_writer_is_scoped_to_its_revision(tmp_path):
    pod = {POD_NAME_EXTRA: ("fraud-v2-7d9f8c6b5-x2x9q",)}
    tokens = {
        "tok-v2-pod": Identity(f"{SA}:default", extra=pod),
        "tok-no-pod": Identity(f"{SA}:default"),
        "tok-other-pod": Identity(f"{SA}:default", extra={POD_NAME_EXTRA: ("fraud-v2-b-7d9f8c6b5-x2x9q",)}),
    }
    access = {"models": {"fraud": {"writers": [f"{SA}:default"], "bindWriters": "pod"}}}
    service = MonitorService(
        config(),
        tmp_path / "p.db",
        clock=lambda: NOW,
        verifier=StaticVerifier(tokens),
        authorize=PolicyAuthorizer(AccessPolicy.from_document(access)),
    )
    await service.start(analysis=False)
    client = TestClient(TestServer(create_app(service)))
    await client.start_server()
    try:
        v2, v1 = as_payload(predictions(2, revision="v2")), as_payload(predictions(2, revision="v1"))
        assert (await client.post("/v1/predictions", json=v2, headers=bearer("tok-v2-pod"))).status == 200
        assert (await client.post("/v1/predictions", json=v1, headers=bearer("tok-v2-pod"))).status == 403
        assert (await client.post("/v1/predictions", json=v2, headers=bearer("tok-no-pod"))).status == 403
        # A pod of revision "v2-b" is not a pod of revision "v2".
        assert (await client.post("/v1/predictions", json=v2, headers=bearer("tok-other-pod"))).status == 403
    finally:
        await client.close()
        await service.stop()


def test_pod_revision_is_exact():
    assert pod_revision("fraud-v2-7d9f8c6b5-x2x9q", "fraud", "v2")
    assert not pod_revision("fraud-v2-b-7d9f8c6b5-x2x9q", "fraud", "v2")
    assert not pod_revision("fraud-v2-7d9f8c6b5-x2x9q", "fraud", "v1")
    assert not pod_revision("fraudx-v2-7d9f8c6b5-x2x9q", "fraud", "v2")


async def test_the_gates_labeled_reads_send_the_operators_token(client, tmp_path, monkeypatch):
    import asyncio

    from modelpilot.controller.gate import fetch_labeled

    await client.post("/v1/predictions", json=as_payload(predictions(2)), headers=bearer("tok-fraud-capture"))
    labels = {"labels": [{"request_id": "v1-0", "label": 1, "model": "fraud"}]}
    assert (await client.post("/v1/labels", json=labels, headers=bearer("tok-feeder"))).status == 200
    url = str(client.make_url("")).rstrip("/")
    token = tmp_path / "operator-token"
    token.write_text("tok-operator\n")
    monkeypatch.setenv("MODELPILOT_MONITOR_TOKEN_FILE", str(token))
    items = await asyncio.to_thread(fetch_labeled, url, "fraud", 0.0, 10)
    assert [item["request_id"] for item in items] == ["v1-0"]
    token.write_text("tok-feeder")  # rotated to an identity without read scope: refused
    with pytest.raises(Exception, match="403"):
        await asyncio.to_thread(fetch_labeled, url, "fraud", 0.0, 10)


async def test_metrics_readers_scrape_and_nothing_else(tmp_path):
    """A scraper's token (a top-level metricsReaders principal) reads /metrics, and no data."""
    access = {**ACCESS, "metricsReaders": ["system:serviceaccount:monitoring:prometheus"]}
    tokens = {**TOKENS, "tok-prometheus": Identity("system:serviceaccount:monitoring:prometheus")}
    cfg = config(model_entry("fraud"), model_entry("churn"))
    async with serving(tmp_path / "m.db", cfg, tokens, access) as client:
        assert (await client.get("/metrics", headers=bearer("tok-prometheus"))).status == 200
        assert (await client.get("/metrics")).status == 401
        assert (await client.get("/metrics", headers=bearer("tok-fraud-capture"))).status == 403
        fraud = {"params": {"model": "fraud"}}
        for path in ("/v1/labeled", "/v1/status", "/v1/predictions/v1-0"):
            assert (await client.get(path, headers=bearer("tok-prometheus"), **fraud)).status == 403, path


async def test_open_metrics_needs_no_token_but_the_data_still_does(tmp_path):
    """--open-metrics: the cluster's Prometheus scrapes without a token; every data route keeps its 401."""
    async with serving(
        tmp_path / "m.db", config(model_entry("fraud")), TOKENS, ACCESS, open_metrics=True
    ) as client:
        scraped = await client.get("/metrics")
        assert scraped.status == 200 and "modelpilot_monitor" in await scraped.text()
        for method, path, kwargs in ENDPOINTS:
            if path != "/metrics":
                assert (await getattr(client, method)(path, **kwargs)).status == 401, path
