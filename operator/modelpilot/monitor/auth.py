"""Authentication and authorization of the monitor's HTTP API.

Two steps, split so that the network call stays out of the handlers:

* **Authentication** (:func:`auth_middleware`, async, before the handler reads the body): the
  ``Authorization: Bearer <token>`` header is checked by a :class:`Verifier`, and the caller's
  :class:`Identity` is stored on the request. No or an invalid token: 401. ``/healthz`` is open
  (kubelet probes carry no token).
* **Authorization** (:class:`PolicyAuthorizer`, the service's ``authorize``, called by every
  handler with the action and the models it touches): the identity must hold the action's role
  for every one of those models, else 403.

Verifiers: :class:`TokenReviewVerifier` (in a cluster: projected ServiceAccount tokens with the
audience :data:`AUDIENCE`, checked with the TokenReview API, answers cached for a short TTL) and
:class:`StaticVerifier` (standalone/local runs: a tokens file). ``--auth=none`` turns all of this
off, explicitly, with a warning.

Roles come from the access document (:class:`AccessPolicy`, ``--access``)::

    readers: [system:serviceaccount:modelpilot-system:modelpilot]   # every model (the operator)
    models:
      fraud:
        writers: [system:serviceaccount:shop:fraud-triton]          # capture sidecars
        labelFeeders: [system:serviceaccount:shop:chargebacks]
        reviewers: [alice@example.com, "group:fraud-reviewers"]
        readers: [bob@example.com]

A principal is a username (a ServiceAccount's is ``system:serviceaccount:<ns>:<name>``) or
``group:<group>``. Actions → roles: ``write_predictions`` → writers; ``write_labels`` →
labelFeeders (labels with ``source: manual_review`` need reviewers: :data:`REVIEW_SOURCE`);
``review`` → reviewers; ``review_queue`` → reviewers or readers; ``read`` and ``status`` → readers;
``metrics`` (``/metrics``) → readers or the top-level ``metricsReaders`` (a scraper), unless the
server runs with open metrics.

Why one module (~400 lines): authentication and authorization share the Identity model and the role
table; splitting them would put the table's two readers apart.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml
from aiohttp import web

log = logging.getLogger(__name__)

AUDIENCE = "modelpilot-monitor"
"""The audience the monitor's bearer tokens are minted for (a projected ServiceAccount token)."""
REVIEW_SOURCE = "manual_review"
OPEN_PATHS = frozenset({"/healthz"})
MONITOR_TOKEN_FILE_ENV = "MODELPILOT_MONITOR_TOKEN_FILE"
"""Where a client (the capture sidecar's shipper, the operator's gate) finds its token file."""
POD_NAME_EXTRA = "authentication.kubernetes.io/pod-name"

ROLES_FOR_ACTION: Mapping[str, tuple[str, ...]] = {
    "write_predictions": ("writers",),
    "write_labels": ("labelFeeders",),
    "review": ("reviewers",),
    "review_queue": ("reviewers", "readers"),
    "read": ("readers",),
    "status": ("readers",),
    "metrics": ("readers", "metricsReaders"),
}
ROLES = ("writers", "labelFeeders", "reviewers", "readers")
METRICS_PATH = "/metrics"


class AuthConfigError(ValueError):
    """A tokens file or access document that cannot be used."""


@dataclass(frozen=True)
class Identity:
    username: str
    groups: frozenset[str] = frozenset()
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def principals(self) -> frozenset[str]:
        return frozenset({self.username, *(f"group:{g}" for g in self.groups)})


IDENTITY_KEY: web.RequestKey[Identity] = web.RequestKey("modelpilot.monitor.identity", "Identity")


class Verifier(Protocol):
    async def verify(self, token: str) -> Identity | None:
        """The token's identity, or None when it is not valid."""


def _json_error(status: type[web.HTTPException], message: str, **headers: str) -> web.HTTPException:
    return status(
        text=json.dumps({"error": message}), content_type="application/json", headers=headers or None
    )


def unauthorized(message: str) -> web.HTTPException:
    return _json_error(
        web.HTTPUnauthorized, message, **{"WWW-Authenticate": 'Bearer realm="modelpilot-monitor"'}
    )


def forbidden(message: str) -> web.HTTPException:
    return _json_error(web.HTTPForbidden, message)


def bearer_token(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def auth_middleware(verifier: Verifier, *, open_metrics: bool = False) -> Any:
    """401 unless the request carries a token the verifier accepts; stores the :class:`Identity`.

    ``open_metrics``: ``/metrics`` needs no token (aggregate counters and scores only: no inputs,
    outputs, labels or request ids), so a cluster's Prometheus scrapes it as it scrapes Triton's and
    Envoy's; the NetworkPolicy still decides who reaches the port."""
    open_paths = OPEN_PATHS | ({METRICS_PATH} if open_metrics else set())

    @web.middleware
    async def authenticate(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path in open_paths:
            return await handler(request)
        token = bearer_token(request)
        if token is None:
            raise unauthorized("a bearer token is required (Authorization: Bearer <token>)")
        try:
            identity = await verifier.verify(token)
        except Exception as error:  # the token service is down: not the caller's fault, retryable
            log.warning("monitor: token verification failed: %s", error)
            raise _json_error(
                web.HTTPServiceUnavailable, "token verification unavailable", **{"Retry-After": "5"}
            ) from None
        if identity is None:
            raise unauthorized("invalid or expired token")
        request[IDENTITY_KEY] = identity
        return await handler(request)

    return authenticate


def identity_of(request: web.Request) -> Identity | None:
    return request.get(IDENTITY_KEY)


# ----------------------------------------------------------------------------- verifiers


class StaticVerifier:
    """Fixed tokens for standalone and local runs. File (YAML/JSON)::

    tokens:
      - {token: "s3cret", username: capture-fraud, groups: [capture]}
      - {tokenFile: /run/secrets/feeder-token, username: feeder}
    """

    def __init__(self, tokens: Mapping[str, Identity]) -> None:
        self._tokens = {hashlib.sha256(t.encode()).digest(): identity for t, identity in tokens.items()}

    @classmethod
    def from_file(cls, path: str | Path) -> StaticVerifier:
        try:
            document = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as error:
            raise AuthConfigError(f"tokens file {path}: {error}") from None
        entries = document.get("tokens") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            raise AuthConfigError(f"tokens file {path}: expected a 'tokens' list")
        tokens: dict[str, Identity] = {}
        for index, entry in enumerate(entries):
            where = f"tokens file {path}: tokens[{index}]"
            if not isinstance(entry, dict) or not isinstance(entry.get("username"), str):
                raise AuthConfigError(f"{where}: needs a username")
            token = entry.get("token")
            if token is None and entry.get("tokenFile"):
                try:
                    token = Path(entry["tokenFile"]).read_text(encoding="utf-8").strip()
                except OSError as error:
                    raise AuthConfigError(f"{where}: {error}") from None
            if not isinstance(token, str) or len(token) < 8:
                raise AuthConfigError(f"{where}: token must be a string of at least 8 characters")
            groups = entry.get("groups") or []
            if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
                raise AuthConfigError(f"{where}: groups must be a list of strings")
            tokens[token] = Identity(entry["username"], frozenset(groups))
        return cls(tokens)

    async def verify(self, token: str) -> Identity | None:
        digest = hashlib.sha256(token.encode()).digest()
        found = None
        for known, identity in self._tokens.items():  # constant time per entry
            if hmac.compare_digest(known, digest):
                found = identity
        return found


TokenReview = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
"""POSTs a TokenReview object, returns the API server's answer (with ``status``)."""


class TokenReviewVerifier:
    """Kubernetes tokens, checked with ``TokenReview`` for :data:`AUDIENCE`; answers are cached
    (by the token's SHA-256) for ``ttl`` seconds, refusals for ``negative_ttl``."""

    def __init__(
        self,
        review: TokenReview,
        *,
        audience: str = AUDIENCE,
        ttl: float = 60.0,
        negative_ttl: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = 4096,
    ) -> None:
        self.review, self.audience, self.ttl, self.negative_ttl = review, audience, ttl, negative_ttl
        self.clock, self.max_entries = clock, max_entries
        self._cache: dict[bytes, tuple[float, Identity | None]] = {}
        self.reviews = 0

    async def verify(self, token: str) -> Identity | None:
        key = hashlib.sha256(token.encode()).digest()
        now = self.clock()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        self.reviews += 1
        answer = await self.review(
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenReview",
                "spec": {"token": token, "audiences": [self.audience]},
            }
        )
        identity = self._identity(answer)
        if len(self._cache) >= self.max_entries:
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
            if len(self._cache) >= self.max_entries:
                self._cache.clear()
        self._cache[key] = (now + (self.ttl if identity else self.negative_ttl), identity)
        return identity

    def _identity(self, answer: Mapping[str, Any]) -> Identity | None:
        status = answer.get("status") or {}
        if not status.get("authenticated"):
            return None
        audiences = status.get("audiences")
        if audiences is not None and self.audience not in audiences:
            return None  # the API server must confirm the audience we asked for
        user = status.get("user") or {}
        username = user.get("username")
        if not isinstance(username, str) or not username:
            return None
        extra = {str(k): tuple(str(x) for x in (v or [])) for k, v in (user.get("extra") or {}).items()}
        return Identity(username, frozenset(user.get("groups") or []), extra)


SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def in_cluster_review(sa_dir: Path = SA_DIR, timeout: float = 5.0) -> TokenReview:
    """A :data:`TokenReview` that POSTs to the API server with the pod's own ServiceAccount token
    (which needs ``create`` on ``tokenreviews``, e.g. the ``system:auth-delegator`` ClusterRole)."""
    import aiohttp

    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if not host:
        raise AuthConfigError("--auth=tokenreview needs to run in a cluster (KUBERNETES_SERVICE_HOST unset)")
    url = f"https://{host}:{port}/apis/authentication.k8s.io/v1/tokenreviews"
    context = ssl.create_default_context(cafile=str(sa_dir / "ca.crt"))

    async def review(body: dict[str, Any]) -> dict[str, Any]:
        own = (sa_dir / "token").read_text(encoding="utf-8").strip()  # kubelet rotates it
        headers = {"Authorization": f"Bearer {own}"}
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.post(url, json=body, ssl=context, headers=headers) as response,
        ):
            if response.status not in (200, 201):
                raise RuntimeError(f"TokenReview answered {response.status}: {(await response.text())[:200]}")
            return await response.json()

    return review


# ----------------------------------------------------------------------------- policy


@dataclass(frozen=True)
class AccessPolicy:
    readers: frozenset[str] = frozenset()
    """Readers of every model (the operator's ServiceAccount)."""
    models: Mapping[str, Mapping[str, frozenset[str]]] = field(default_factory=dict)
    bind_writers: frozenset[str] = frozenset()
    metrics_readers: frozenset[str] = frozenset()
    """May scrape ``/metrics`` only (Prometheus, with a token for the monitor's audience)."""
    """Models whose writers must present a pod-bound token of one of the model's revision pods
    (``bindWriters: pod``): the pod name in the token must be ``<model>-<revision>-<rs>-<id>``,
    the revision's Triton Deployment's pods, and the records' revision must be that one."""

    @classmethod
    def from_document(cls, document: Any, where: str = "access") -> AccessPolicy:
        if document is None:
            return cls()
        if not isinstance(document, dict):
            raise AuthConfigError(f"{where}: expected a mapping")
        models: dict[str, dict[str, frozenset[str]]] = {}
        bound: set[str] = set()
        for name, roles in (document.get("models") or {}).items():
            if not isinstance(roles, dict):
                raise AuthConfigError(f"{where}: models.{name}: expected a mapping")
            bind = roles.get("bindWriters")
            if bind not in (None, "pod", "serviceAccount"):
                raise AuthConfigError(f"{where}: models.{name}.bindWriters: must be pod or serviceAccount")
            if bind == "pod":
                bound.add(str(name))
            unknown = sorted(set(roles) - set(ROLES) - {"bindWriters"})
            if unknown:
                raise AuthConfigError(
                    f"{where}: models.{name}: unknown roles {unknown} (known: {list(ROLES)})"
                )
            models[str(name)] = {
                role: _principals(roles.get(role), f"{where}: models.{name}.{role}") for role in ROLES
            }
        return cls(
            _principals(document.get("readers"), f"{where}: readers"),
            models,
            frozenset(bound),
            _principals(document.get("metricsReaders"), f"{where}: metricsReaders"),
        )

    @classmethod
    def from_file(cls, path: str | Path) -> AccessPolicy:
        try:
            document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as error:
            raise AuthConfigError(f"access file {path}: {error}") from None
        return cls.from_document(document, f"access file {path}")

    def allows(self, identity: Identity, action: str, model: str) -> bool:
        principals = identity.principals
        roles = ROLES_FOR_ACTION.get(action, ())
        if "readers" in roles and principals & self.readers:
            return True
        if "metricsReaders" in roles and principals & self.metrics_readers:
            return True
        entry = self.models.get(model) or {}
        return any(principals & entry.get(role, frozenset()) for role in roles)


def pod_revision(pod: str, model: str, revision: str) -> bool:
    """Whether ``pod`` is a pod of the revision's Deployment ``<model>-<revision>`` (whose pods are
    ``<model>-<revision>-<replicaset hash>-<suffix>``); exact, so revision ``v1`` does not match
    a pod of ``v1-b``."""
    prefix = f"{model}-{revision}-"
    if not pod.startswith(prefix):
        return False
    rest = pod[len(prefix) :].split("-")
    return len(rest) == 2 and all(part.isalnum() for part in rest)


def _principals(value: Any, where: str) -> frozenset[str]:
    if value is None:
        return frozenset()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise AuthConfigError(f"{where}: expected a list of usernames or group:<name>")
    return frozenset(value)


class PolicyAuthorizer:
    """The service's ``authorize``: 401 without an identity, 403 when any model is out of scope."""

    def __init__(self, policy: AccessPolicy) -> None:
        self.policy = policy

    def __call__(self, request: web.Request, action: str, models: Iterable[str]) -> None:
        identity = identity_of(request)
        if identity is None:
            raise unauthorized("a bearer token is required")
        refused = sorted(m for m in models if not self.policy.allows(identity, action, m))
        if refused:
            raise forbidden(f"{identity.username} may not {action.replace('_', ' ')} for models {refused}")

    def check_revisions(self, request: web.Request, written: Iterable[tuple[str, str]]) -> None:
        """403 when a model with ``bindWriters: pod`` gets records for a revision other than the
        one of the pod the token was issued to (after :meth:`__call__` allowed the models)."""
        identity = identity_of(request)
        if identity is None:
            raise unauthorized("a bearer token is required")
        pods = identity.extra.get(POD_NAME_EXTRA, ())
        refused = sorted(
            f"{model}/{revision}"
            for model, revision in set(written)
            if model in self.policy.bind_writers and not any(pod_revision(p, model, revision) for p in pods)
        )
        if refused:
            pod = pods[0] if pods else "no pod-bound token"
            raise forbidden(f"{identity.username} ({pod}) may not write records of {refused}")


def load_token(path: str | Path | None) -> str | None:
    """A client's bearer token from a (projected, rotated) token file; None when there is none.
    Read per request: kubelet rewrites the file before the token expires."""
    if not path:
        return None
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return token or None


def auth_headers(token_path: str | Path | None) -> dict[str, str]:
    token = load_token(token_path)
    return {"Authorization": f"Bearer {token}"} if token else {}
