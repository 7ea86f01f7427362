"""The layer rules of docs/architecture.md, enforced: a new import that breaks one fails here.

- `api/` (the CRD's types, defaults, reasons) imports nothing else of ours.
- The rollout core (`rollout/` and the pure statistics it calls) imports only `api`, itself and
  the pure modules listed in ROLLOUT_CORE_MAY_IMPORT, and loads no HTTP, Kubernetes or Prometheus
  client and no clock: `decide` gets the time and every observation as arguments.
- Packages whose submodules the core uses (`analysis`, `gate`) load nothing in `__init__`.

Imports inside functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "modelpilot"
ROLLOUT_CORE = ("modelpilot.rollout",)
ROLLOUT_CORE_MAY_IMPORT = (
    "modelpilot.api",
    "modelpilot.rollout",
    "modelpilot.analysis.sequential",
    "modelpilot.analysis.thresholds",
    "modelpilot.gate.spec",
    "modelpilot.gate.stats",
    "modelpilot.gate.result",
)
# Standard and third-party modules the core may use: arithmetic and data shapes, nothing that talks.
CORE_MAY_USE = {
    "__future__",
    "collections",
    "copy",
    "dataclasses",
    "datetime",
    "enum",
    "math",
    "re",
    "typing",
    "numpy",
    "scipy",
}
FORBIDDEN_AT_RUNTIME = (
    "requests",
    "urllib3",
    "prometheus_client",
    "prometheus_api_client",
    "kubernetes",
    "kopf",
    "aiohttp",
    "tritonclient",
    "sqlite3",
)
EMPTY_PACKAGES = ("analysis", "gate")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, at any depth of the file (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                found.add(".".join([*base, *([node.module] if node.module else [])]))
            else:
                found.add(node.module or "")
    return found


def modules_under(prefix: str) -> list[Path]:
    folder = PACKAGE.joinpath(*prefix.split(".")[1:])
    return sorted(folder.rglob("*.py")) if folder.is_dir() else [folder.with_suffix(".py")]


def _within(name: str, allowed: tuple[str, ...]) -> bool:
    return any(name == a or name.startswith(a + ".") for a in allowed)


def test_api_imports_nothing_else_of_ours():
    leaks = {
        f"{module_name(p)} -> {m}"
        for p in modules_under("modelpilot.api")
        for m in imports_of(p)
        if m.startswith("modelpilot") and not _within(m, ("modelpilot.api",))
    }
    assert not leaks, sorted(leaks)


def test_the_rollout_core_imports_only_pure_modules():
    core = [p for prefix in (*ROLLOUT_CORE, *ROLLOUT_CORE_MAY_IMPORT[2:]) for p in modules_under(prefix)]
    leaks = set()
    for path in core:
        for name in imports_of(path):
            if name.startswith("modelpilot"):
                if not _within(name, ROLLOUT_CORE_MAY_IMPORT) and name not in (
                    "modelpilot",
                    "modelpilot.gate",
                ):
                    leaks.add(f"{module_name(path)} -> {name}")
            elif name.split(".")[0] not in CORE_MAY_USE:
                leaks.add(f"{module_name(path)} -> {name}")
    assert not leaks, sorted(leaks)


def test_the_rollout_core_reads_no_clock():
    calls = []
    for path in modules_under("modelpilot.rollout"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and node.attr in ("now", "utcnow", "time", "monotonic", "today")
                and isinstance(node.value, ast.Name)
                and node.value.id in ("datetime", "time", "date")
            ):
                calls.append(f"{module_name(path)}:{node.lineno} {node.value.id}.{node.attr}")
    assert not calls, calls


@pytest.mark.parametrize("package", EMPTY_PACKAGES)
def test_packages_the_core_reaches_into_load_nothing_themselves(package):
    assert not imports_of(PACKAGE / package / "__init__.py") - {"__future__"}


def test_importing_decide_loads_no_client():
    """What the interpreter really loads (transitive third-party imports included), in a fresh process."""
    code = (
        "import json, sys; import modelpilot.rollout.decide; "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    loaded = set(
        json.loads(
            subprocess.run(
                [sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=PACKAGE.parent
            ).stdout
        )
    )
    assert not loaded & set(FORBIDDEN_AT_RUNTIME), sorted(loaded & set(FORBIDDEN_AT_RUNTIME))


def test_the_scan_sees_a_leak():
    """The rules are not vacuous: the reconciler (a shell module) does import what the core may not."""
    reconcile = imports_of(PACKAGE / "controller" / "reconcile.py")
    assert any(not _within(m, ROLLOUT_CORE_MAY_IMPORT) for m in reconcile if m.startswith("modelpilot"))
    assert "modelpilot.rollout.decide" in reconcile


def test_the_test_trees_share_testkit_and_import_nothing_from_each_other():
    """tests/ and e2e/ both import testkit; testkit imports neither (e2e/cluster is tooling, not a test tree)."""
    repo = PACKAGE.parents[1]
    leaks = []
    for tree, forbidden in (
        ("testkit", ("tests", "e2e.loop", "e2e.demo", "e2e.test_demo")),
        ("e2e", ("tests",)),
        ("tests", ("e2e.loop", "e2e.demo", "e2e.test_demo")),
    ):
        for path in sorted((repo / tree).rglob("*.py")):
            tree_imports = ast.walk(ast.parse(path.read_text()))
            for node in tree_imports:
                names = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                    if isinstance(node, ast.ImportFrom) and not node.level
                    else []
                )
                leaks += [f"{path.relative_to(repo)} -> {n}" for n in names if _within(n, forbidden)]
    assert not leaks, leaks


def test_a_module_over_400_lines_says_why_at_its_top():
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        if text.count("\n") > 400 and "Why one module" not in (ast.get_docstring(ast.parse(text)) or ""):
            long.append(f"{module_name(path)}: {text.count(chr(10))} lines")
    assert not long, long


def test_every_message_template_is_used_and_the_core_writes_no_other():
    """api/messages.py is the one list of what users read (Argo's utils/conditions): no template is dead,
    and the rollout core passes every event a template, never an inline f-string."""
    from modelpilot.api import messages

    templates = {n for n in vars(messages) if n.isupper()}
    core = "\n".join(p.read_text() for p in modules_under("modelpilot.rollout"))
    assert not {n for n in templates if f"messages.{n}" not in core}
    inline = [line.strip() for line in core.splitlines() if "self.event(" in line and 'f"' in line]
    assert not inline, inline


def test_no_module_imports_another_modules_private_names():
    leaks = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("modelpilot"):
                leaks += [
                    f"{module_name(path)} -> {node.module}.{a.name}"
                    for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")
                ]
    assert not leaks, leaks
