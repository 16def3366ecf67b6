"""The zones row of the control-plane dashboard and the `KontinuumZoneDisconnected` alert,
from a real Prometheus scraping a global that a real zone dials into (the fleet-wide
telemetry test runs without TLS, and zones prove who they are with the fleet CA)."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest
import yaml

from dashboards.rules import rules
from tests.e2e.test_federation import (  # noqa: F401 (the fixture)
    Federation,
    connect_the_zone,
    federation,
    impostor_of,
    running,
    until,
    until_refused,
)
from tests.e2e.test_telemetry import (  # noqa: F401 (the fixture)
    panel_queries,
    prometheus_binary,
    values,
)
from tests.support.prometheus import Prometheus

pytestmark = pytest.mark.e2e

# The panels of the zones row: what test_telemetry leaves to this test.
ZONE_PANELS = {
    ("control-plane.json", "Zones", 0),
    ("control-plane.json", "Zones", 1),
    ("control-plane.json", "Zones", 2),
    ("control-plane.json", "Time since zones synced", 0),
}


def _scraping(tmp_path: Path, admin: str) -> Path:
    """Prometheus scraping the global's /metrics every 0.5 s, with every alert's `for:` 0."""
    fast = tmp_path / "fast.rules.yaml"
    fast.write_text(yaml.safe_dump(rules(hold=0), sort_keys=False))
    config = {
        "global": {"scrape_interval": "500ms", "evaluation_interval": "500ms"},
        "rule_files": [str(fast)],
        "scrape_configs": [
            {"job_name": "kontinuum", "static_configs": [{"targets": [admin]}]},
        ],
    }
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


async def test_the_zones_row_has_data_and_a_lost_zone_fires_its_alert(
    federation: Federation,  # noqa: F811
    tmp_path: Path,
    prometheus_binary: str,  # noqa: F811 (installed, or the test fails saying how)
) -> None:
    found = federation
    global_, logs = found.global_, found.logs
    await connect_the_zone(found)
    # A refusal, for the panel of refused zones.
    impostor = await impostor_of(found)
    with running(impostor):
        await until_refused(found, impostor)
    queries = [q for q in panel_queries() if q[:3] in ZONE_PANELS]
    assert {q[:3] for q in queries} == ZONE_PANELS
    with Prometheus(_scraping(tmp_path, global_.admin), tmp_path / "prometheus") as prometheus:

        def without_data() -> list[str]:
            return [
                f"{title} [{index}]: {expr}"
                for _, title, index, expr in queries
                if not (found_values := values(prometheus.query(expr)))
                or not all(math.isfinite(v) for v in found_values)
            ]

        missing: list[str] = []
        for _ in range(60):  # scrapes every 0.5 s; a rate needs two
            missing = await asyncio.to_thread(without_data)
            if not missing:
                break
            await asyncio.sleep(0.5)
        assert not missing, f"zone panels without data: {missing}"
        connected = prometheus.query("max by (zone) (kontinuum_federation_zone_connected)")
        assert {s["metric"]["zone"]: values([s])[0] for s in connected} == {"edge-paris": 1.0}
        assert prometheus.firing("KontinuumZoneDisconnected") == []

        found.zone.kill()
        await until(
            lambda: prometheus.firing("KontinuumZoneDisconnected"),
            "the disconnected-zone alert",
            30,
            logs,
        )
        (alert,) = prometheus.firing("KontinuumZoneDisconnected")
        assert alert["zone"] == "edge-paris"
