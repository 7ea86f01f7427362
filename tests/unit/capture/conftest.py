"""Fixtures for the capture tests; the fakes themselves live in testkit/capture_fakes.py."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from testkit.capture_fakes import FakeMonitor, FakeTriton, running_fake_triton, running_monitor


@pytest.fixture
async def monitor() -> AsyncIterator[FakeMonitor]:
    async with running_monitor() as fake:
        yield fake


@pytest.fixture
async def triton() -> AsyncIterator[FakeTriton]:
    async with running_fake_triton() as fake:
        yield fake
