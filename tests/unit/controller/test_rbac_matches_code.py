"""rbac.py grants exactly what the operator's code asks of the API server: nothing missing, nothing extra.

The test reads the code rather than trusting a list. Starting from `modelpilot.controller.handlers`
(what `modelpilot run` imports) it follows every import inside the package, finds every call on a
`KubeClient` (by convention the client is always named `kube` or `self.kube`), works out the kind
each call touches, and maps calls to RBAC verbs the way the API server authorizes them (see the
docstring of modelpilot.controller.rbac). To those it adds what kopf does on the operator's behalf
(watches of the kinds it has handlers for, read from kopf's registry, plus its own framework
resources) and what admission requires (blockOwnerDeletion on children). The result must equal
rbac.py's rules, rule set by rule set.

Where a call's kind cannot be read from the call itself (a literal, a module constant, a loop over
literals, a manifest literal's "kind"), HINTS below names it; a new call that is neither readable
nor hinted fails the test, and so does a hint that matches no call.
"""

from __future__ import annotations

import ast
import functools
import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from modelpilot.controller import rbac
from modelpilot.controller.kube import KINDS
from modelpilot.monitor.identity import TOKEN_REVIEW_ROLE

PACKAGE = Path(importlib.import_module("modelpilot").__file__).resolve().parent
ENTRY = "modelpilot.controller.handlers"
CLIENT_METHODS = ("get", "list", "apply", "merge_patch", "delete", "create")
RAW_METHODS = ("_call",)

Perm = tuple[str, str, str]  # (apiGroup, resource[/subresource], verb)

# (module, function, method, first argument as written) -> the kinds that call can touch.
HINTS: dict[tuple[str, str, str, str], set[str]] = {
    # Only reached for the claim: `if kind == "PersistentVolumeClaim": ... self.kube.get(kind, ...)`.
    ("modelpilot.controller.monitoring", "NamespaceMonitors.reconcile", "get", "kind"): {
        "PersistentVolumeClaim"
    },
    # Everything monitor_manifests() builds (test_hints_match_the_builders checks it).
    ("modelpilot.controller.monitoring", "NamespaceMonitors.reconcile", "apply", "manifest"): {
        "ConfigMap",
        "PersistentVolumeClaim",
        "ServiceAccount",
        "ClusterRoleBinding",
        "Deployment",
        "Service",
        "NetworkPolicy",
    },
    # NamespaceMonitors.kinds(): the namespaced kinds the settings make.
    ("modelpilot.controller.monitoring", "NamespaceMonitors.reconcile", "list", "kind"): {
        "ConfigMap",
        "Deployment",
        "Service",
        "ServiceAccount",
        "NetworkPolicy",
    },
    # The keys of `live`: what the same function lists.
    ("modelpilot.controller.monitoring", "NamespaceMonitors.reconcile", "delete", "kind"): {
        "ConfigMap",
        "Deployment",
        "Service",
        "ServiceAccount",
        "NetworkPolicy",
        "ClusterRoleBinding",
    },
    ("modelpilot.controller.autoscaling", "Autoscalers.apply", "apply", "manifest"): {
        "HorizontalPodAutoscaler",
        "ScaledObject",
    },
    ("modelpilot.controller.autoscaling", "Autoscalers.apply", "delete", "kind"): {
        "HorizontalPodAutoscaler",
        "ScaledObject",
    },
    ("modelpilot.controller.optimize", "Optimizer.observe", "apply", "compression_job(...)"): {"Job"},
    # Reconciler._apply (directly or through _apply_if_changed): a revision's ConfigMap, Deployment and
    # Services, the DestinationRule and the VirtualService.
    ("modelpilot.controller.reconcile", "Reconciler._apply", "apply", "manifest"): {
        "ConfigMap",
        "Deployment",
        "Service",
        "DestinationRule",
        "VirtualService",
    },
}

# What kopf itself asks for (kopf/_core/reactor/observation.py, engines/peering.py, engines/posting.py).
KOPF_NAMESPACED: set[Perm] = {
    ("", "events", "create"),  # posting: kopf reports handler warnings and errors as events
    ("kopf.dev", "kopfpeerings", "list"),  # peering of an operator serving named namespaces
    ("kopf.dev", "kopfpeerings", "watch"),
    ("kopf.dev", "kopfpeerings", "patch"),  # keep-alives
}
KOPF_CLUSTER: set[Perm] = {
    ("apiextensions.k8s.io", "customresourcedefinitions", "list"),  # the resource observer
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
    ("", "namespaces", "list"),  # the namespace observer (named namespaces only)
    ("", "namespaces", "watch"),
}
KOPF_CLUSTER_WIDE: set[Perm] = {
    ("kopf.dev", "clusterkopfpeerings", "list"),  # peering of a cluster-wide operator
    ("kopf.dev", "clusterkopfpeerings", "watch"),
    ("kopf.dev", "clusterkopfpeerings", "patch"),
}


# ---- reading the code ---------------------------------------------------------------------------


def module_path(name: str) -> Path | None:
    parts = name.split(".")
    if parts[0] != "modelpilot":
        return None
    base = PACKAGE.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(name: str, tree: ast.Module) -> Iterator[str]:
    path = module_path(name)
    package = name if path is not None and path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                for i in range(1, len(parts) + 1):  # `import a.b.c` imports a, a.b and a.b.c
                    yield ".".join(parts[:i])
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            parts = source.split(".")
            for i in range(1, len(parts) + 1):
                yield ".".join(parts[:i])
            for alias in node.names:
                yield f"{source}.{alias.name}"


@functools.cache
def operator_modules() -> dict[str, ast.Module]:
    """Every package module `modelpilot run` can reach (all imports, also those inside functions)."""
    seen: dict[str, ast.Module] = {}
    todo = [ENTRY]
    while todo:
        name = todo.pop()
        path = module_path(name)
        if name in seen or path is None:
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                child.parent = node  # type: ignore[attr-defined]
        seen[name] = tree
        todo += [m for m in imported_modules(name, tree) if m not in seen]
    return seen


@dataclass(frozen=True)
class Call:
    module: str
    function: str
    method: str
    arg: str
    line: int
    kinds: frozenset[str] | None  # None: not readable from the code
    subresource: str | None


def _parents(node: ast.AST) -> Iterator[ast.AST]:
    while hasattr(node, "parent"):
        node = node.parent  # type: ignore[attr-defined]
        yield node


def _qualname(node: ast.AST) -> tuple[str, ast.AST | None]:
    names, func = [], None
    for parent in _parents(node):
        if isinstance(parent, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.append(parent.name)
            if func is None and not isinstance(parent, ast.ClassDef):
                func = parent
    return ".".join(reversed(names)) or "<module>", func


def _scope_of(node: ast.AST) -> ast.AST | None:
    for parent in _parents(node):
        if isinstance(
            parent,
            ast.FunctionDef
            | ast.AsyncFunctionDef
            | ast.Lambda
            | ast.ListComp
            | ast.SetComp
            | ast.DictComp
            | ast.GeneratorExp,
        ):
            return parent
    return None


def _is_client(node: ast.AST) -> bool:
    return (isinstance(node, ast.Name) and node.id == "kube") or (
        isinstance(node, ast.Attribute) and node.attr == "kube"
    )


def _arg_text(node: ast.AST) -> str:
    if isinstance(node, ast.Call):
        return f"{ast.unparse(node.func).rpartition('.')[2]}(...)"
    return ast.unparse(node)


class Resolver:
    """The kinds an expression can name, or None when the code does not say."""

    def __init__(self, modules: dict[str, ast.Module]) -> None:
        self.modules = modules

    def constant(self, module: str, name: str, depth: int = 0) -> str | None:
        tree = self.modules.get(module)
        if tree is None or depth > 5:
            return None
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == name for t in node.targets
            ):
                return (
                    node.value.value
                    if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
                    else None
                )
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for alias in node.names:
                    if (alias.asname or alias.name) == name:
                        return self.constant(node.module, alias.name, depth + 1)
        return None

    def bindings(self, name: str, at: ast.AST, func: ast.AST | None) -> list[tuple[str, ast.AST]] | None:
        """("value", expr) for `name = expr`, ("element", iterable) for loops; None if bound otherwise."""
        for parent in _parents(at):  # a comprehension's own variables first (they have their own scope)
            if isinstance(parent, ast.ListComp | ast.SetComp | ast.DictComp | ast.GeneratorExp):
                for gen in parent.generators:
                    if isinstance(gen.target, ast.Name) and gen.target.id == name:
                        return [("element", gen.iter)]
            if parent is func:
                break
        if func is None:
            return None
        found: list[tuple[str, ast.AST]] = []
        for node in ast.walk(func):
            # Comprehension variables and nested functions are other scopes.
            if isinstance(node, ast.comprehension) or _scope_of(node) is not func:
                continue
            if isinstance(node, ast.Assign | ast.For):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Name) and target.id == name:
                        found.append(
                            ("value", node.value) if isinstance(node, ast.Assign) else ("element", node.iter)
                        )
                    elif any(isinstance(n, ast.Name) and n.id == name for n in ast.walk(target)):
                        return None  # unpacked from something else
            elif (
                isinstance(node, ast.AugAssign | ast.AnnAssign | ast.NamedExpr)
                and getattr(node.target, "id", None) == name
            ):
                return None
            elif isinstance(node, ast.arg) and node.arg == name:
                return None  # a parameter: whatever the callers pass
        return found or None

    def kinds(self, expr: ast.AST, module: str, func: ast.AST | None) -> set[str] | None:
        if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
            return {expr.value}
        if isinstance(expr, ast.Dict):
            for key, value in zip(expr.keys, expr.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "kind":
                    return self.kinds(value, module, func)
            return None
        if isinstance(expr, ast.Name):
            bound = self.bindings(expr.id, expr, func)
            if bound is None:
                value = self.constant(module, expr.id)
                return {value} if value is not None else None
            out: set[str] = set()
            for how, node in bound:
                got = self.kinds(node, module, func) if how == "value" else self.elements(node, module, func)
                if got is None:
                    return None
                out |= got
            return out
        return None

    def elements(self, expr: ast.AST, module: str, func: ast.AST | None) -> set[str] | None:
        """The kinds in a collection written with literals: [...], (...), a + b, x if c else y."""
        if isinstance(expr, ast.List | ast.Tuple | ast.Set):
            out: set[str] = set()
            for elt in expr.elts:
                got = self.kinds(elt, module, func)
                if got is None:
                    return None
                out |= got
            return out
        if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Add):
            left, right = self.elements(expr.left, module, func), self.elements(expr.right, module, func)
            return None if left is None or right is None else left | right
        if isinstance(expr, ast.IfExp):
            body, orelse = self.elements(expr.body, module, func), self.elements(expr.orelse, module, func)
            return None if body is None or orelse is None else body | orelse
        if isinstance(expr, ast.Name):
            bound = self.bindings(expr.id, expr, func)
            if not bound or any(how != "value" for how, _ in bound):
                return None
            out = set()
            for _, node in bound:
                got = self.elements(node, module, func)
                if got is None:
                    return None
                out |= got
            return out
        return None


def client_calls() -> tuple[list[Call], list[str]]:
    """Every KubeClient call the operator can make, and any way around the client (raw calls)."""
    modules = operator_modules()
    resolver = Resolver(modules)
    calls, bypasses = [], []
    for module, tree in modules.items():
        for node in ast.walk(tree):
            annotation = (
                ast.unparse(node.annotation)
                if isinstance(node, ast.arg) and node.annotation is not None
                else ""
            )
            if "KubeClient" in annotation and node.arg != "kube":
                bypasses.append(f"{module}:{node.lineno}: a KubeClient named {node.arg!r} (name it kube)")
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and _is_client(node.func.value)
            ):
                continue
            method = node.func.attr
            if method in RAW_METHODS:
                bypasses.append(f"{module}:{node.lineno}: kube.{method} bypasses the client's kind table")
                continue
            if method not in CLIENT_METHODS:
                continue
            function, func = _qualname(node)
            first = (
                node.args[0]
                if node.args
                else next(k.value for k in node.keywords if k.arg in ("kind", "manifest"))
            )
            sub = next((k.value for k in node.keywords if k.arg == "subresource"), None)
            if sub is not None and not (isinstance(sub, ast.Constant) and isinstance(sub.value, str)):
                bypasses.append(f"{module}:{node.lineno}: a subresource the code does not name")
                continue
            kinds = resolver.kinds(first, module, func)
            calls.append(
                Call(
                    module,
                    function,
                    method,
                    _arg_text(first),
                    node.lineno,
                    frozenset(kinds) if kinds is not None else None,
                    sub.value if sub is not None else None,
                )
            )
    return calls, bypasses


# ---- from calls to permissions ------------------------------------------------------------------


def group_of(kind: str) -> str:
    version = KINDS[kind].api_version
    return "" if version == "v1" else version.split("/")[0]


def verbs_of(method: str, subresource: str | None) -> set[str]:
    if method == "apply":
        # Server-side apply is a PATCH; when it creates the object the API server authorizes it as
        # create too. A subresource is never created by apply.
        return {"patch"} if subresource else {"patch", "create"}
    return {
        "get": {"get"},
        "list": {"list"},
        "delete": {"delete"},
        "create": {"create"},
        "merge_patch": {"patch"},
    }[method]


def kinds_of(call: Call) -> set[str]:
    kinds = (
        call.kinds if call.kinds is not None else HINTS[(call.module, call.function, call.method, call.arg)]
    )
    return set(kinds)


def code_permissions(calls: list[Call]) -> tuple[set[Perm], set[Perm]]:
    """(namespaced, cluster-scoped) permissions the client calls need."""
    namespaced: set[Perm] = set()
    cluster: set[Perm] = set()
    for call in calls:
        for kind in kinds_of(call):
            assert kind in KINDS, f"{call.module}:{call.line}: {kind!r} is not a kind the client knows"
            resource = KINDS[kind].plural + (f"/{call.subresource}" if call.subresource else "")
            target = namespaced if KINDS[kind].namespaced else cluster
            target |= {(group_of(kind), resource, verb) for verb in verbs_of(call.method, call.subresource)}
    return namespaced, cluster


def kopf_registry():
    import kopf

    import modelpilot.controller.handlers  # noqa: F401 - registers the handlers

    return kopf.get_default_registry()


def watched_permissions() -> set[Perm]:
    registry = kopf_registry()
    out: set[Perm] = set()
    for handler in registry._watching.get_all_handlers():
        sel = handler.selector  # kopf.on.event(group, version, plural): the name is the plural
        out |= {(sel.group, sel.plural or sel.any_name, verb) for verb in ("list", "watch")}
    return out


def admission_permissions() -> set[Perm]:
    """blockOwnerDeletion on a child needs update on the owner's finalizers (OwnerReferencesPermissionEnforcement)."""
    from modelpilot.api.reasons import KIND
    from modelpilot.serving.manifests import Owner

    ref = Owner("m", "ns", "uid").reference()
    if not ref.get("blockOwnerDeletion"):
        return set()
    assert ref["kind"] == KIND
    return {(group_of(KIND), f"{KINDS[KIND].plural}/finalizers", "update")}


def granted(rules: list[dict]) -> list[Perm]:
    return [
        (g, r, v)
        for rule in rules
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    ]


def _diff(want: set[Perm], have: list[Perm]) -> str:
    missing, extra = sorted(want - set(have)), sorted(set(have) - want)
    return f"missing (the code needs them): {missing}; extra (nothing uses them): {extra}"


# ---- the tests ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def calls() -> list[Call]:
    found, bypasses = client_calls()
    assert not bypasses, bypasses
    return found


def test_the_scan_sees_the_operator(calls):
    modules = operator_modules()
    for name in (
        "modelpilot.controller.reconcile",
        "modelpilot.controller.monitoring",
        "modelpilot.controller.autoscaling",
        "modelpilot.controller.optimize",
        "modelpilot.serving.manifests",
    ):
        assert name in modules
    assert "modelpilot.cli" not in modules, "the CLI runs with its user's credentials, not the operator's"
    assert len(calls) > 20
    by_method = {c.method for c in calls}
    assert by_method == set(CLIENT_METHODS)


def test_every_call_names_its_kinds_in_code_or_in_a_hint(calls):
    unreadable = [
        c for c in calls if c.kinds is None and (c.module, c.function, c.method, c.arg) not in HINTS
    ]
    assert not unreadable, "add these calls' kinds to HINTS: " + "; ".join(
        f"{c.module}:{c.line} {c.function} kube.{c.method}({c.arg}, ...)" for c in unreadable
    )
    keys = {(c.module, c.function, c.method, c.arg) for c in calls}
    stale = [key for key in HINTS if key not in keys]
    assert not stale, f"hints that match no call any more: {stale}"
    needless = [
        (c.module, c.function, c.method, c.arg)
        for c in calls
        if c.kinds is not None and (c.module, c.function, c.method, c.arg) in HINTS
    ]
    assert not needless, f"the code names these kinds itself; drop the hints: {needless}"


def test_hints_match_the_builders():
    """The hinted kinds are what the builders behind those calls produce."""
    from modelpilot.api.spec import parse_spec
    from modelpilot.compress.jobs import CompressionRequest, compression_job
    from modelpilot.monitor.manifests import MonitoredModel, MonitorSettings, monitor_manifests
    from modelpilot.routing.istio import TrafficPlan, destination_rule, virtual_service
    from modelpilot.serving import autoscale, manifests

    owner = manifests.Owner("m", "ns", "uid")
    monitored = monitor_manifests(
        "ns",
        [MonitoredModel("m", {"enabled": True, "task": "classification"}, "uid")],
        MonitorSettings(auth="tokenreview", network_policy=True, token_review_role=TOKEN_REVIEW_ROLE),
    )
    assert {m["kind"] for m in monitored} == HINTS[
        ("modelpilot.controller.monitoring", "NamespaceMonitors.reconcile", "apply", "manifest")
    ]
    settings = autoscale.parse_autoscaling({"minReplicas": 1, "maxReplicas": 4})
    scalers = {
        autoscale.autoscaler(
            owner, "r1", settings, model="m", keda_installed=keda, prometheus_url="http://p:9090", weight=100
        )["kind"]
        for keda in (False, True)
    }
    assert scalers == HINTS[("modelpilot.controller.autoscaling", "Autoscalers.apply", "apply", "manifest")]
    request = CompressionRequest(
        method="tensorrt", repository="pvc://models/triton", model="m", source_version=1, target_version=2
    )
    assert compression_job(owner, request, triton_image="t", operator_image="o")["kind"] == "Job"
    spec = parse_spec(
        {"model": {"name": "m", "repository": "pvc://models/triton", "version": "1", "format": "onnx"}}
    )
    plan = TrafficPlan(stable="r1", revisions=("r1",))
    children = [
        manifests.config_map(owner, spec, "r1"),
        manifests.deployment(owner, spec, "r1", 1),
        manifests.revision_service(owner, "r1"),
        manifests.stable_service(owner),
        destination_rule(owner, spec, plan),
    ]
    children.append(virtual_service(owner, spec, plan))
    assert {c["kind"] for c in children} == HINTS[
        ("modelpilot.controller.reconcile", "Reconciler._apply", "apply", "manifest")
    ]


def test_kopf_runs_only_event_handlers():
    """Change, daemon, index and webhook handlers make kopf patch the objects (and need more verbs)."""
    registry = kopf_registry()
    assert registry._watching.get_all_handlers(), "no kopf.on.event handlers found"
    for other in (registry._changing, registry._spawning, registry._indexing, registry._webhooks):
        assert not other.get_all_handlers(), (
            f"{other}: update test_rbac_matches_code (and rbac.py) for these handlers"
        )


def test_kopf_framework_resources_are_what_this_test_assumes():
    from kopf._cogs.structs import references as kref

    def named(sel) -> tuple[str, str]:
        return sel.group, sel.plural or sel.any_name

    assert named(kref.CRDS) == ("apiextensions.k8s.io", "customresourcedefinitions")
    assert named(kref.NAMESPACES) == ("", "namespaces")
    assert named(kref.EVENTS) == ("", "events")
    assert named(kref.NAMESPACED_PEERINGS_K) == ("kopf.dev", "kopfpeerings")
    assert named(kref.CLUSTER_PEERINGS_K) == ("kopf.dev", "clusterkopfpeerings")


def test_namespaced_rules_are_exactly_what_the_code_and_kopf_need(calls):
    namespaced, _ = code_permissions(calls)
    want = namespaced | watched_permissions() | admission_permissions() | KOPF_NAMESPACED
    have = granted(rbac.NAMESPACED_RULES)
    assert len(have) == len(set(have)), "a permission is granted twice"
    assert want == set(have), _diff(want, have)


# Cluster-scoped writes only a cluster-wide operator makes (in namespace scope the chart makes them).
CLUSTER_WIDE_KINDS = {"ClusterRoleBinding"}
# Creating a binding needs `bind` on the role it refers to (or holding all of the role's permissions).
BIND_TOKEN_REVIEW: set[Perm] = {("rbac.authorization.k8s.io", "clusterroles", "bind")}


def test_cluster_rules_are_exactly_what_the_code_and_kopf_need(calls):
    _, cluster = code_permissions(calls)
    wide_resources = {KINDS[k].plural for k in CLUSTER_WIDE_KINDS}
    wide = {p for p in cluster if p[1] in wide_resources}
    want = (cluster - wide) | KOPF_CLUSTER
    have = granted(rbac.CLUSTER_RULES)
    assert len(have) == len(set(have))
    assert want == set(have), _diff(want, have)
    want_wide = KOPF_CLUSTER_WIDE | wide | BIND_TOKEN_REVIEW
    have_wide = granted(rbac.CLUSTER_WIDE_RULES)
    assert set(have_wide) == want_wide, _diff(want_wide, have_wide)


def test_server_side_apply_is_granted_create_too(calls):
    """An apply that creates is authorized as create: every applied kind has both verbs."""
    have = set(granted(rbac.NAMESPACED_RULES + rbac.CLUSTER_RULES + rbac.CLUSTER_WIDE_RULES))
    for call in calls:
        if call.method == "apply" and not call.subresource:
            for kind in kinds_of(call):
                assert {(group_of(kind), KINDS[kind].plural, v) for v in ("patch", "create")} <= have, kind


def test_nothing_unused_is_granted():
    everything = {r for rule in rbac.cluster_role()["rules"] for r in rule["resources"]}
    assert "nodes" not in everything and "secrets" not in everything
    verbs = {v for rule in rbac.cluster_role()["rules"] for v in rule["verbs"]}
    assert not verbs & {"*", "deletecollection", "escalate", "impersonate"}
    # `bind` on one role only: the monitors' TokenReview role, which allows nothing but that.
    (bind,) = [r for r in rbac.cluster_role()["rules"] if "bind" in r["verbs"]]
    assert bind == {
        "apiGroups": ["rbac.authorization.k8s.io"],
        "resources": ["clusterroles"],
        "verbs": ["bind"],
        "resourceNames": [TOKEN_REVIEW_ROLE],
    }
    (review,) = [
        o for o in rbac.service_account_bindings("mp", "op") if o["metadata"]["name"] == TOKEN_REVIEW_ROLE
    ]
    assert review["rules"] == [
        {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]}
    ]
    assert [r["resources"] for r in rbac.cluster_role()["rules"] if "update" in r["verbs"]] == [
        ["modeldeployments/finalizers"]
    ]
    md = next(r for r in rbac.NAMESPACED_RULES if r["resources"] == ["modeldeployments"])
    assert "patch" not in md["verbs"], "the operator never writes a ModelDeployment's spec or metadata"


def test_namespace_mode_bindings_cover_each_watched_namespace():
    objs = rbac.service_account_bindings("mp-system", "op", cluster_wide=False, watch_namespaces=["a", "b"])
    roles = [o for o in objs if o["kind"] == "Role"]
    bindings = [o for o in objs if o["kind"] == "RoleBinding"]
    assert (
        [r["metadata"]["namespace"] for r in roles]
        == [b["metadata"]["namespace"] for b in bindings]
        == ["a", "b"]
    )
    assert all(
        b["subjects"] == [{"kind": "ServiceAccount", "name": "op", "namespace": "mp-system"}]
        for b in bindings
    )

    def operator_roles(objects):
        return [
            o for o in objects if o["kind"] == "ClusterRole" and o["metadata"]["name"] != TOKEN_REVIEW_ROLE
        ]

    (reader,) = operator_roles(objs)
    assert reader["rules"] == rbac.CLUSTER_RULES
    (cluster,) = operator_roles(rbac.service_account_bindings("mp-system", "op"))
    assert cluster["rules"] == rbac.NAMESPACED_RULES + rbac.CLUSTER_RULES + rbac.CLUSTER_WIDE_RULES
