"""`kontinuum demo` (what `make demo` runs) works end to end and fails over cleanly."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from kontinuum.demo import run_demo

pytestmark = pytest.mark.e2e


async def test_demo_serves_both_sites_and_fails_over_without_errors() -> None:
    counts = await run_demo(duration=6.0, console=Console(file=io.StringIO()))

    assert counts["failed"] == 0, counts
    assert counts["hello-eu-1"] > 0, counts
    assert counts["hello-eu-2"] > 0, counts
    # Before the failover the remote site gets nothing (priority 1), after it everything.
    assert counts["hello-edge-1"] > 0, counts
