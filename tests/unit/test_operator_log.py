"""What `serve` tells the operator in its log: a summary of the first fleet, then one line
per applied change (where it came from, what it changed, how many views it updated)."""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

import pytest

from kontinuum.app import running_fleet
from kontinuum.xds import Peer
from tests.support.fleet import fast, rewrite
from tests.support.security import node

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fleet"


def applied_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "kontinuum" and r.getMessage().startswith("applied ")
    ]


async def test_the_first_fleet_is_summed_up_and_each_change_said_in_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="kontinuum")
    fleet_dir = tmp_path / "fleet"
    shutil.copytree(EXAMPLE, fleet_dir)
    async with running_fleet(fast(path=fleet_dir, status=None)) as running:
        (first,) = applied_lines(caplog)
        assert first.startswith(
            "applied the first fleet: 3 clusters (edge-paris, eu-central, us-east), "
        )
        routing = running.aggregator.fleet().routing
        assert f"{len(routing.gateways)} Gateways" in first
        running.mesh.resolve_view(node("web-1", "us-east", "demo"), Peer(address="test"))
        hello = fleet_dir / "clusters" / "us-east" / "hello.yaml"
        rewrite(hello, hello.read_text().replace("127.0.0.22", "127.0.0.23"))
        for _ in range(100):  # at most about 5 s
            if len(applied_lines(caplog)) > 1:
                break
            await asyncio.sleep(0.05)
        change = applied_lines(caplog)[1]
        assert change.startswith(f"applied a change from static:{fleet_dir}: 1 service changed, ")
        assert " 1 view updated in " in change
