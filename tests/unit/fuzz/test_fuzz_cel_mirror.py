"""The fuzz suite's Python mirror of the CRD's CEL rules agrees with CEL itself (cel-python).

The mirror is what makes admitting 10,000 specs fast; this keeps it honest: every rule in the
CRD must have a mirror, and on a fixed sample of generated objects, mirror and CEL must give
the same answer (true, false, or an evaluation error) at every place each rule applies.
"""

from __future__ import annotations

import pytest
from tests.unit.fuzz.admission import (
    CEL_MIRROR,
    CelError,
    admit,
    celpy_eval,
    compiled,
    root_schema,
    rule_sites,
    rules_in,
)
from tests.unit.fuzz.specgen import Generator

pytestmark = pytest.mark.fuzz

SEED = 4242
SAMPLE = 400


def test_every_crd_rule_has_a_python_mirror():
    missing = [rule for rule in rules_in(root_schema()) if rule not in CEL_MIRROR]
    assert not missing, "add these CEL rules to tests/unit/fuzz/admission.py CEL_MIRROR:\n" + "\n".join(
        missing
    )
    stale = [rule for rule in CEL_MIRROR if rule not in rules_in(root_schema())]
    assert not stale, "rules no longer in the CRD (remove from CEL_MIRROR):\n" + "\n".join(stale)


def _answer(fn, *args) -> object:
    try:
        return bool(fn(*args))
    except CelError:
        return "error"


def test_the_mirror_agrees_with_cel_on_generated_objects():
    pytest.importorskip("celpy", reason="cel-python is a test dependency (pip install -e '.[test]')")
    gen = Generator(SEED)
    root = compiled("root")
    compared, disagreements = 0, []
    for i in range(SAMPLE):
        case = gen.case(i)
        result = admit(case.body())
        if "spec" not in result.body or not isinstance(result.body["metadata"].get("name"), str):
            continue
        schema_errors: list[str] = []
        root.props["spec"].errors(result.body["spec"], ".spec", schema_errors)
        if schema_errors:  # the API server evaluates CEL on schema-valid objects only
            continue
        for where, rule, _, value, node in rule_sites(result.body, root):
            mirror = _answer(CEL_MIRROR[rule], value) if rule in CEL_MIRROR else None
            cel = _answer(celpy_eval, rule, value, node)
            compared += 1
            if mirror != cel:
                disagreements.append(f"{where}: {rule}\n  mirror={mirror} cel={cel} self={value!r:.300}")
    assert compared > 1000, compared
    assert not disagreements, f"{len(disagreements)} of {compared} evaluations differ:\n" + "\n".join(
        disagreements[:10]
    )
