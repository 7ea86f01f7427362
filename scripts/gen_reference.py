#!/usr/bin/env python3
"""Generate docs/reference.md, the ModelDeployment field reference, from the CRD schema.

The CRD is the contract the API server enforces, so the reference is derived from it rather
than written by hand: every field with its type, default, bounds or enum and description, plus
the CEL rules. `--check` exits 1 when docs/reference.md is stale (tests run the same check).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
CRD = REPO / "crds" / "modelpilot.io_modeldeployments.yaml"
OUTPUT = REPO / "docs" / "reference.md"


@dataclass(frozen=True)
class Field:
    path: str
    type: str
    default: str
    constraints: str
    description: str
    required: bool


def type_name(schema: dict[str, Any]) -> str:
    """A readable type: arrays show their item type, maps their value type."""
    if schema.get("x-kubernetes-int-or-string"):
        return "int-or-string"
    kind = schema.get("type")
    if kind == "array":
        return f"[]{type_name(schema.get('items') or {})}"
    if kind == "object":
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            return f"map[string]{type_name(extra)}"
        if schema.get("x-kubernetes-preserve-unknown-fields") and not schema.get("properties"):
            return "object (free-form)"
        return "object"
    if kind is None and schema.get("x-kubernetes-preserve-unknown-fields"):
        return "any"
    return f"{kind}({schema['format']})" if schema.get("format") else str(kind)


_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")


def _value(value: Any) -> str:
    """Words as they are; anything a reader could mistake ("1", "True", "") in JSON spelling."""
    if isinstance(value, str) and _PLAIN.fullmatch(value) and value.lower() not in ("true", "false", "null"):
        return value
    return json.dumps(value, separators=(", ", ": "))


def constraints(schema: dict[str, Any]) -> str:
    """Bounds, enum, pattern and list/map limits, in the schema's own words."""
    parts = []
    if "enum" in schema:
        parts.append("one of " + ", ".join(f"`{_value(v)}`" for v in schema["enum"]))
    for key, label in (("minimum", ">="), ("maximum", "<=")):
        if key in schema:
            parts.append(f"{label} {_value(schema[key])}")
    for key in ("minLength", "maxLength", "minItems", "maxItems", "maxProperties"):
        if key in schema:
            parts.append(f"{key} {schema[key]}")
    if "pattern" in schema:
        parts.append(f"pattern `{schema['pattern']}`")
    if schema.get("x-kubernetes-list-type"):
        keys = schema.get("x-kubernetes-list-map-keys")
        parts.append(
            f"list-type {schema['x-kubernetes-list-type']}" + (f" (keys {', '.join(keys)})" if keys else "")
        )
    return "; ".join(parts)


def walk(schema: dict[str, Any], path: str, required: bool = False) -> Iterator[Field]:
    """Every field under `schema`, depth first, in the CRD's declaration order."""
    item = schema
    yield Field(
        path=path,
        type=type_name(schema),
        default=_value(schema["default"]) if "default" in schema else "",
        constraints=constraints(schema),
        description=" ".join(str(schema.get("description", "")).split()),
        required=required,
    )
    while item.get("type") == "array" and isinstance(item.get("items"), dict):
        item = item["items"]
        path += "[]"
        if item.get("properties"):
            break
        if item.get("type") != "array":
            extra = constraints(item)
            if extra:
                yield Field(
                    path,
                    type_name(item),
                    _value(item["default"]) if "default" in item else "",
                    extra,
                    " ".join(str(item.get("description", "")).split()),
                    False,
                )
            return
    needed = set(item.get("required") or ())
    for name, child in (item.get("properties") or {}).items():
        yield from walk(child, f"{path}.{name}", name in needed)
    extra = item.get("additionalProperties")
    if isinstance(extra, dict) and (extra.get("properties") or constraints(extra)):
        yield from walk(extra, f"{path}.<key>")


def rules(schema: dict[str, Any], path: str) -> Iterator[tuple[str, str, str]]:
    """(path, CEL rule, message) for every x-kubernetes-validations entry."""
    for rule in schema.get("x-kubernetes-validations") or ():
        yield path, rule["rule"], rule.get("message", "")
    if isinstance(schema.get("items"), dict):
        yield from rules(schema["items"], path + "[]")
    for name, child in (schema.get("properties") or {}).items():
        yield from rules(child, f"{path}.{name}")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(fields: list[Field]) -> list[str]:
    lines = ["| Field | Type | Default | Bounds / enum | Description |", "| --- | --- | --- | --- | --- |"]
    for f in fields:
        name = f"`{f.path}`" + (" (required)" if f.required else "")
        default = f"`{f.default}`" if f.default else ""
        lines.append(
            f"| {_cell(name)} | {_cell(f.type)} | {_cell(default)} | {_cell(f.constraints)} | {_cell(f.description)} |"
        )
    return lines


def render(crd: dict[str, Any]) -> str:
    spec = crd["spec"]
    version = next(v for v in spec["versions"] if v.get("storage"))
    root = version["schema"]["openAPIV3Schema"]
    group, kind = spec["group"], spec["names"]["kind"]
    out = [
        f"# {kind} reference",
        "",
        "<!-- Generated by scripts/gen_reference.py from crds/modelpilot.io_modeldeployments.yaml; do not edit. -->",
        "",
        f"`apiVersion: {group}/{version['name']}`, `kind: {kind}`, scope {spec['scope']}, "
        f"short name{'s' if len(spec['names'].get('shortNames', [])) > 1 else ''} "
        f"{', '.join(f'`{s}`' for s in spec['names'].get('shortNames', []))}, "
        f"categories {', '.join(f'`{c}`' for c in spec['names'].get('categories', []))}.",
        "",
        " ".join(str(root.get("description", "")).split()),
        "",
        "Paths use `[]` for list items and `<key>` for map keys. Durations are Go-style strings such as "
        "`30s`, `1.5m` or `1h30m`. The API server applies the defaults, checks the bounds and evaluates "
        "the CEL rules below; the operator adds semantic checks (InvalidSpec condition).",
        "",
    ]
    out += ["## Contents", ""]
    for name in root["properties"]["spec"]["properties"]:
        out.append(f"- [`spec.{name}`](#spec{name.lower()})")
    out += [
        "- [`status`](#status)",
        "- [Validation rules](#validation-rules)",
        "- [kubectl columns](#kubectl-columns)",
        "",
    ]
    out += [
        "## metadata",
        "",
        "Standard object metadata. `metadata.name` is limited to 45 characters (see the rules below).",
        "",
    ]
    spec_schema = root["properties"]["spec"]
    needed = set(spec_schema.get("required") or ())
    for name, child in spec_schema["properties"].items():
        out += [f"## spec.{name}", ""]
        out += _table(list(walk(child, f"spec.{name}", name in needed)))
        out.append("")
    out += ["## status", "", "Written by the operator only (status subresource).", ""]
    out += _table([f for f in walk(root["properties"]["status"], "status") if f.path != "status"])
    out.append("")
    out += [
        "## Validation rules",
        "",
        "CEL rules the API server evaluates on create and update.",
        "",
        "| Where | Rule | Message |",
        "| --- | --- | --- |",
    ]
    for where, rule, message in rules(root, ""):
        out.append(f"| `{_cell(where.lstrip('.') or '(object)')}` | `{_cell(rule)}` | {_cell(message)} |")
    out += [
        "",
        "## kubectl columns",
        "",
        "`kubectl get modeldeployments` (`-o wide` adds the priority-1 columns).",
        "",
        "| Column | JSONPath | Type | Wide only |",
        "| --- | --- | --- | --- |",
    ]
    for col in version.get("additionalPrinterColumns") or ():
        wide = "yes" if col.get("priority", 0) > 0 else ""
        out.append(f"| {col['name']} | `{col['jsonPath']}` | {col['type']} | {wide} |")
    out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/reference.md is out of date")
    args = parser.parse_args(argv)
    text = render(yaml.safe_load(CRD.read_text()))
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            print(f"{OUTPUT.relative_to(REPO)} is out of date: run scripts/gen_reference.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
