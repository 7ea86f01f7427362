"""The README's main command, as an e2e test: every closed-loop scenario must end as expected."""

from __future__ import annotations

import uuid

import pytest

pytestmark = pytest.mark.integration


def test_closed_loop_demo(cluster):
    from e2e.demo import main

    assert main(["--namespace", f"demo-{uuid.uuid4().hex[:6]}"]) == 0
