"""`kontinuum status --admin-address` of a real global shows its zones: a real
`kontinuum zone` connected, then disconnected once it is killed, with the objects the
global received from it and its lag read from the global's `/metrics`."""

from __future__ import annotations

import asyncio
import re
import subprocess
from pathlib import Path

import pytest

from tests.e2e.test_federation import KONTINUUM, Federation, _env, federation, issue, until
from tests.support.net import free_port

pytestmark = pytest.mark.e2e
__all__ = ["federation"]  # the fixture, used by name


def run_status(found: Federation, operator: Path, admin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *KONTINUUM, "status", "--xds-address", f"127.0.0.1:{found.xds_port}",
            "--credentials", str(operator), "--admin-address", admin,
        ],
        capture_output=True, text=True, timeout=60, env={**_env(), "COLUMNS": "200"},
    )  # fmt: skip


def status(found: Federation, operator: Path) -> str:
    done = run_status(found, operator, found.global_.admin)
    assert done.returncode == 0, done.stderr
    return done.stdout


def zone_row(shown: str, site: str) -> list[str]:
    row = next((line for line in shown.splitlines() if f"│ {site} " in line), None)
    assert row is not None, shown
    return [cell.strip() for cell in row.split("│")[1:-1]]


async def test_status_lists_a_zone_connected_then_disconnected(federation: Federation) -> None:
    found = federation
    global_, logs = found.global_, found.logs
    labels = {"zone": "edge-paris"}
    operator = await asyncio.to_thread(
        issue, found.ca, found.root / "operator", "eu-central", "kontinuum-system", "operator"
    )
    found.zone.start()

    async def synced() -> bool:
        return await global_.metric("kontinuum_federation_zone_objects", labels) == 3

    await until(synced, "the zone's 3 objects held by the global", 60, logs)
    assert await global_.metric("kontinuum_federation_zone_lag_seconds", labels) == 0
    shown = await asyncio.to_thread(status, found, operator)
    assert "1 zone" in shown, shown
    _, state, replicas, last_sync, received, _sent, refused, lag = zone_row(shown, "edge-paris")
    assert re.fullmatch(r"connected for (\d+m )?\d+s", state), shown
    assert re.fullmatch(r"\d+s ago", last_sync), shown
    assert (replicas, received, refused, lag) == ("1", "3", "0", "0s"), shown

    found.zone.kill()

    async def disconnected() -> bool:
        return await global_.metric("kontinuum_federation_zone_connected", labels) == 0

    await until(disconnected, "the global sees the zone disconnected", 30, logs)
    shown = await asyncio.to_thread(status, found, operator)
    _, state, replicas, _, received, _, _, _ = zone_row(shown, "edge-paris")
    assert re.fullmatch(r"disconnected for (\d+m )?\d+s", state), shown
    assert (replicas, received) == ("0", "3"), shown

    # The lag grows while the zone is away: it hears nothing of the fleet meanwhile.
    async def lagging() -> bool:
        lag = await global_.metric("kontinuum_federation_zone_lag_seconds", labels)
        return lag is not None and lag >= 1

    await until(lagging, "the zone's lag counted from its disconnection", 10, logs)

    # An admin address where nothing answers: one line saying which option to check.
    nowhere = f"127.0.0.1:{free_port()}"
    done = await asyncio.to_thread(run_status, found, operator, nowhere)
    assert done.returncode == 1
    assert done.stderr.startswith(f"error: cannot read the zones from http://{nowhere}/metrics")
    assert done.stderr.rstrip().endswith("check --admin-address"), done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
