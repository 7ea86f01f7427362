"""A small OpenAPI v3 (structural schema) validator: enough to check builders against CRDs."""

from __future__ import annotations

from typing import Any

_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "number": (int, float),
    "integer": int,
}


def validate(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Errors (path: problem) of ``value`` against ``schema``; unknown fields are errors."""
    errors: list[str] = []
    if schema.get("x-kubernetes-int-or-string"):
        if not isinstance(value, int | str):
            errors.append(f"{path}: want int or string")
        return errors
    kind = schema.get("type")
    if kind:
        expected = _TYPES[kind]
        if (isinstance(value, bool) and kind in ("integer", "number")) or not isinstance(value, expected):
            return [f"{path}: want {kind}, got {type(value).__name__}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} not in {schema['enum']}")
    if "minimum" in schema and isinstance(value, int | float) and value < schema["minimum"]:
        errors.append(f"{path}: {value} < minimum {schema['minimum']}")
    if "minLength" in schema and isinstance(value, str) and len(value) < schema["minLength"]:
        errors.append(f"{path}: shorter than {schema['minLength']}")
    if isinstance(value, dict):
        props = schema.get("properties")
        for name in schema.get("required", []):
            if name not in value:
                errors.append(f"{path}.{name}: required")
        for name, child in value.items():
            if props is not None and name in props:
                errors += validate(child, props[name], f"{path}.{name}")
            elif isinstance(schema.get("additionalProperties"), dict):
                errors += validate(child, schema["additionalProperties"], f"{path}.{name}")
            elif props is not None and not schema.get("x-kubernetes-preserve-unknown-fields"):
                errors.append(f"{path}.{name}: unknown field")
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            errors += validate(item, schema["items"], f"{path}[{i}]")
    return errors
