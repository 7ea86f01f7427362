"""The operator-side policy: which images, ServiceAccounts and Secrets a ModelDeployment may use.

Whoever may edit a ModelDeployment chooses what its pods run (image, args, env) and as whom
(ServiceAccount, Secrets). Kubernetes RBAC cannot narrow that down field by field, so the platform
team sets a policy for the operator (chart values `policy`, passed as the `MODELPILOT_POLICY`
environment variable) and a spec that breaks it is InvalidSpec: the operator creates nothing for it.

Pure: parsing and checking only. Patterns:

- images (`spec.serving.image`, the effective one: the default Triton image counts too), each one of
  - `"*"`: any image;
  - a prefix ending in `/`: a registry or a path in it, e.g. `registry.example.com/` or
    `nvcr.io/nvidia/`;
  - a glob where `*` and `?` stay within one path segment and `**` crosses segments. Without a tag or
    digest it names a repository and allows any tag and digest of it (`nvcr.io/nvidia/tritonserver`);
    with one it is matched against the whole reference (`nvcr.io/nvidia/tritonserver:24.*`).
  References and patterns are normalised as Docker does (`tritonserver:24` is
  `docker.io/library/tritonserver:24`), so Docker Hub images cannot slip past a registry prefix.
- serviceAccounts (`spec.serving.serviceAccountName`) and secrets (`spec.serving.modelStoreSecret`,
  `spec.serving.env[].valueFrom.secretKeyRef.name`): globs (`*`, `?`, `[...]`) over names.

A missing key allows anything (`["*"]`); an empty list allows nothing. A ModelDeployment that sets
no serviceAccountName runs as its namespace's `default` ServiceAccount, which is always allowed.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelpilot.api.spec import ModelDeploymentSpec

ENV_INLINE = "MODELPILOT_POLICY"
ENV_FILE = "MODELPILOT_POLICY_FILE"
ANY = ("*",)
KEYS = {"images": "images", "serviceAccounts": "service_accounts", "secrets": "secrets"}


class PolicyError(ValueError):
    """The policy itself is malformed: the operator must not start with it (nor without it)."""


@dataclass(frozen=True)
class Policy:
    images: tuple[str, ...] = ANY
    service_accounts: tuple[str, ...] = ANY
    secrets: tuple[str, ...] = ANY

    @property
    def unrestricted(self) -> bool:
        return self.images == ANY and self.service_accounts == ANY and self.secrets == ANY

    def to_dict(self) -> dict[str, list[str]]:
        return {key: list(getattr(self, attr)) for key, attr in KEYS.items()}


# ---- parsing ------------------------------------------------------------------------------------


def parse_policy(raw: Mapping[str, Any] | None) -> Policy:
    """A Policy from its document form (`{"images": [...], "serviceAccounts": [...], "secrets": [...]}`)."""
    if raw is None:
        return Policy()
    if not isinstance(raw, Mapping):
        raise PolicyError(f"the policy must be a mapping, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        # A typo ("image") must not silently mean "anything goes".
        raise PolicyError(f"unknown policy key(s) {', '.join(map(repr, unknown))}; known: {', '.join(KEYS)}")
    values: dict[str, tuple[str, ...]] = {}
    for key, attr in KEYS.items():
        if key not in raw or raw[key] is None:
            continue
        patterns = raw[key]
        if isinstance(patterns, str) or not isinstance(patterns, Sequence):
            raise PolicyError(f"policy.{key} must be a list of patterns, got {patterns!r}")
        for p in patterns:
            if not isinstance(p, str) or not p.strip() or p != p.strip():
                raise PolicyError(
                    f"policy.{key}: {p!r} is not a pattern (a non-empty string without spaces around it)"
                )
            if key == "images" and p.endswith("/") and any(c in p for c in "*?["):
                raise PolicyError(
                    f"policy.images: {p!r}: a prefix ending in / is literal; write {p + '**'!r} for a glob"
                )
        values[attr] = tuple(patterns)
    return Policy(**values)


def parse_policy_text(text: str, source: str = ENV_INLINE) -> Policy:
    """JSON or YAML text (YAML is a superset of JSON); empty text is the unrestricted policy."""
    if not text.strip():
        return Policy()
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        import yaml

        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise PolicyError(f"{source}: not JSON or YAML: {exc}") from None
    try:
        return parse_policy(doc)
    except PolicyError as exc:
        raise PolicyError(f"{source}: {exc}") from None


def load_policy(env: Mapping[str, str] | None = None) -> Policy:
    """The policy the operator runs with: `MODELPILOT_POLICY` (inline) or `MODELPILOT_POLICY_FILE` (a path).

    Neither set: unrestricted. Both set, or a malformed policy: PolicyError (refuse to start).
    """
    env = os.environ if env is None else env
    inline, path = env.get(ENV_INLINE), env.get(ENV_FILE)
    if inline and path:
        raise PolicyError(f"set {ENV_INLINE} or {ENV_FILE}, not both")
    if path:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise PolicyError(f"{ENV_FILE}={path}: {exc}") from None
        return parse_policy_text(text, source=path)
    return parse_policy_text(inline or "")


# ---- matching -----------------------------------------------------------------------------------


def normalize_image(ref: str) -> str:
    """Docker's normalisation: no registry means Docker Hub, and a single name is in `library/`."""
    first, slash, rest = ref.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        return f"docker.io/{rest}" if first == "index.docker.io" else ref
    return f"docker.io/{ref}" if slash else f"docker.io/library/{ref}"


def _repository(ref: str) -> str:
    """The reference without its tag and digest."""
    name = ref.partition("@")[0]
    colon = name.rfind(":")
    return name[:colon] if colon > name.rfind("/") else name


def _has_tag_or_digest(pattern: str) -> bool:
    return "@" in pattern or pattern.rfind(":") > pattern.rfind("/")


def _segment_glob(pattern: str) -> re.Pattern[str]:
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        ch = pattern[i]
        out.append("[^/]*" if ch == "*" else "[^/]" if ch == "?" else re.escape(ch))
        i += 1
    return re.compile("".join(out) + r"\Z")


def image_allowed(image: str, patterns: Iterable[str]) -> bool:
    ref = normalize_image(image)
    for pattern in patterns:
        if pattern == "*":
            return True
        if pattern.endswith("/"):
            if ref.startswith(_normalize_pattern(pattern + "x")[:-1]):
                return True
            continue
        target = ref if _has_tag_or_digest(pattern) else _repository(ref)
        if _segment_glob(_normalize_pattern(pattern)).match(target):
            return True
    return False


def _normalize_pattern(pattern: str) -> str:
    """Like normalize_image; a glob in the first segment stands for registries, so it stays."""
    first = pattern.partition("/")[0]
    return pattern if "*" in first or "?" in first else normalize_image(pattern)


def name_allowed(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


# ---- the check ----------------------------------------------------------------------------------


def _allowed_list(patterns: Sequence[str]) -> str:
    return ", ".join(patterns) if patterns else "none"


def check(spec: ModelDeploymentSpec, policy: Policy) -> list[str]:
    """Every way `spec` breaks `policy`, one message per field (named by its path); empty when it complies."""
    problems: list[str] = []
    serving = spec.serving
    if not image_allowed(serving.image, policy.images):
        problems.append(
            f"spec.serving.image: {serving.image!r} is not allowed by the operator's policy "
            f"(allowed images: {_allowed_list(policy.images)})"
        )
    sa = serving.service_account_name
    if sa and not name_allowed(sa, policy.service_accounts):
        problems.append(
            f"spec.serving.serviceAccountName: {sa!r} is not allowed by the operator's policy "
            f"(allowed ServiceAccounts: {_allowed_list(policy.service_accounts)})"
        )
    secrets: list[tuple[str, str]] = []
    if serving.model_store_secret:
        secrets.append(("spec.serving.modelStoreSecret", str(serving.model_store_secret)))
    for i, env in enumerate(serving.env):
        ref = ((env or {}).get("valueFrom") or {}).get("secretKeyRef") if isinstance(env, Mapping) else None
        if isinstance(ref, Mapping):
            secrets.append((f"spec.serving.env[{i}].valueFrom.secretKeyRef.name", str(ref.get("name") or "")))
    for path, name in secrets:
        if not name_allowed(name, policy.secrets):
            problems.append(
                f"{path}: Secret {name!r} is not allowed by the operator's policy "
                f"(allowed Secrets: {_allowed_list(policy.secrets)})"
            )
    return problems
