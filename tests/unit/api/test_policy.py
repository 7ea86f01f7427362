"""The operator-side policy: what a ModelDeployment may use (images, ServiceAccounts, Secrets)."""

from __future__ import annotations

import json

import pytest

from modelpilot.api.policy import (
    ENV_FILE,
    ENV_INLINE,
    Policy,
    PolicyError,
    check,
    image_allowed,
    load_policy,
    normalize_image,
    parse_policy,
)
from modelpilot.api.spec import DEFAULT_TRITON_IMAGE, parse_spec

MODEL = {"name": "m", "repository": "s3://bucket/models"}


def spec(**serving):
    return parse_spec({"model": MODEL, "serving": serving})


# ---- parsing --------------------------------------------------------------------------------------


def test_no_policy_allows_anything():
    assert load_policy({}) == Policy() == parse_policy(None) == parse_policy({})
    assert Policy().unrestricted
    assert (
        check(
            spec(image="anything.example/x:1", serviceAccountName="admin", modelStoreSecret="root"), Policy()
        )
        == []
    )


def test_inline_json_yaml_and_a_file(tmp_path):
    doc = {"images": ["nvcr.io/nvidia/"], "serviceAccounts": [], "secrets": ["s3-*"]}
    want = Policy(images=("nvcr.io/nvidia/",), service_accounts=(), secrets=("s3-*",))
    assert load_policy({ENV_INLINE: json.dumps(doc)}) == want
    assert (
        load_policy({ENV_INLINE: "images: [nvcr.io/nvidia/]\nserviceAccounts: []\nsecrets: [s3-*]\n"}) == want
    )
    path = tmp_path / "policy.yaml"
    path.write_text(json.dumps(doc))
    assert load_policy({ENV_FILE: str(path)}) == want
    assert parse_policy(want.to_dict()) == want
    assert not want.unrestricted


def test_a_missing_key_allows_anything_and_an_empty_list_nothing():
    policy = parse_policy({"serviceAccounts": []})
    assert policy.images == ("*",) and policy.secrets == ("*",) and policy.service_accounts == ()
    assert parse_policy({"images": None}).images == ("*",)


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({ENV_INLINE: '{"image": ["nvcr.io/"]}'}, "unknown policy key"),  # a typo must not mean "anything"
        ({ENV_INLINE: '{"images": "nvcr.io/"}'}, "must be a list"),
        ({ENV_INLINE: '{"images": [""]}'}, "is not a pattern"),
        ({ENV_INLINE: '{"secrets": [7]}'}, "is not a pattern"),
        ({ENV_INLINE: '{"images": ["*.corp/"]}'}, "a prefix ending in / is literal"),
        ({ENV_INLINE: "[1, 2]"}, "must be a mapping"),
        ({ENV_INLINE: "images: [a\n"}, "not JSON or YAML"),
        ({ENV_INLINE: "{}", ENV_FILE: "/x"}, "not both"),
        ({ENV_FILE: "/nonexistent/policy.yaml"}, "/nonexistent/policy.yaml"),
    ],
)
def test_a_malformed_policy_stops_the_operator(env, fragment):
    with pytest.raises(PolicyError, match=fragment.replace("*", r"\*").replace(".", r"\.")):
        load_policy(env)


# ---- images ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "patterns", "allowed"),
    [
        ("nvcr.io/nvidia/tritonserver:24.10-py3", ["nvcr.io/nvidia/"], True),
        ("nvcr.io.evil.example/nvidia/tritonserver:24.10-py3", ["nvcr.io/"], False),  # a prefix ends at the /
        (
            "nvcr.io/nvidia/tritonserver:24.10-py3",
            ["nvcr.io/nvidia/tritonserver"],
            True,
        ),  # a repository: any tag
        ("nvcr.io/nvidia/tritonserver@sha256:" + "a" * 64, ["nvcr.io/nvidia/tritonserver"], True),
        ("nvcr.io/nvidia/tritonserver-evil:1", ["nvcr.io/nvidia/tritonserver"], False),
        ("nvcr.io/nvidia/tritonserver:24.10-py3", ["nvcr.io/nvidia/tritonserver:24.*"], True),
        ("nvcr.io/nvidia/tritonserver:25.01-py3", ["nvcr.io/nvidia/tritonserver:24.*"], False),
        ("nvcr.io/nvidia/sub/tritonserver:1", ["nvcr.io/nvidia/*"], False),  # * stays within a segment
        ("nvcr.io/nvidia/sub/tritonserver:1", ["nvcr.io/nvidia/**"], True),
        ("reg.corp.example/ml/triton:1", ["*.corp.example/**"], True),
        ("tritonserver:24", ["docker.io/library/"], True),  # Docker Hub, normalised
        ("tritonserver:24", ["tritonserver"], True),
        ("evil/tritonserver:24", ["tritonserver"], False),
        ("evil/tritonserver:24", ["docker.io/library/"], False),
        ("index.docker.io/library/triton:1", ["docker.io/library/triton"], True),
        ("localhost:5000/triton:1", ["localhost:5000/"], True),
        (
            "registry.example.com:5000/triton:1",
            ["registry.example.com/"],
            False,
        ),  # another port, another registry
        ("anything/at:all", ["*"], True),
        ("nvcr.io/nvidia/tritonserver:24.10-py3", [], False),
    ],
)
def test_image_patterns(image, patterns, allowed):
    assert image_allowed(image, patterns) is allowed


def test_docker_normalisation():
    assert normalize_image("triton") == "docker.io/library/triton"
    assert normalize_image("org/triton:1") == "docker.io/org/triton:1"
    assert normalize_image("index.docker.io/org/triton") == "docker.io/org/triton"
    assert normalize_image("localhost/triton") == "localhost/triton"
    assert normalize_image("host:5000/triton") == "host:5000/triton"


# ---- the check ------------------------------------------------------------------------------------

STRICT = Policy(
    images=("registry.example.com/",), service_accounts=("triton-*",), secrets=("s3-credentials",)
)


def test_a_complying_spec_passes():
    ok = spec(
        image="registry.example.com/ml/tritonserver:24.10",
        serviceAccountName="triton-reader",
        modelStoreSecret="s3-credentials",
        env=[
            {"name": "A", "value": "1"},
            {"name": "K", "valueFrom": {"secretKeyRef": {"name": "s3-credentials", "key": "k"}}},
            {"name": "P", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ],
    )
    assert check(ok, STRICT) == []


def test_each_violation_names_its_field():
    bad = spec(
        image="docker.io/evil/miner:1",
        serviceAccountName="cluster-admin-sa",
        modelStoreSecret="prod-db",
        env=[
            {"name": "A", "value": "1"},
            {"name": "K", "valueFrom": {"secretKeyRef": {"name": "prod-db", "key": "password"}}},
        ],
    )
    problems = check(bad, STRICT)
    assert [p.split(":")[0] for p in problems] == [
        "spec.serving.image",
        "spec.serving.serviceAccountName",
        "spec.serving.modelStoreSecret",
        "spec.serving.env[1].valueFrom.secretKeyRef.name",
    ]
    assert (
        "'docker.io/evil/miner:1' is not allowed by the operator's policy (allowed images: registry.example.com/)"
        in problems[0]
    )
    assert "allowed ServiceAccounts: triton-*" in problems[1]
    assert "Secret 'prod-db'" in problems[2] and "allowed Secrets: s3-credentials" in problems[2]


def test_the_default_image_is_checked_too():
    problems = check(spec(), Policy(images=("registry.example.com/",)))
    assert len(problems) == 1 and DEFAULT_TRITON_IMAGE in problems[0]
    assert check(spec(), Policy(images=("nvcr.io/nvidia/tritonserver",))) == []


def test_the_namespace_default_service_account_is_always_allowed():
    assert check(spec(), Policy(service_accounts=())) == []
    assert check(spec(serviceAccountName="default"), Policy(service_accounts=())) != []


def test_nothing_allowed_reads_none():
    problems = check(spec(modelStoreSecret="s"), Policy(secrets=()))
    assert problems and problems[0].endswith("(allowed Secrets: none)")
