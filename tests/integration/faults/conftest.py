"""One fault stack per test module: rows share it, and each row ends by serving a new call."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.integration.faults.fault_stack import FaultStack, fault_stack


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FaultStack]:
    """`voice-agent dev` with a test-held Redis and scripted models, for this module's rows."""
    async with fault_stack(tmp_path_factory.mktemp("faults")) as running:
        yield running
