"""`kontinuum demo` (what `make demo` runs): three sites, real Envoys, failover without errors."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from kontinuum.demo import FAILING_SITE, run_demo

pytestmark = pytest.mark.e2e

FLEET = Path(__file__).parents[2] / "examples" / "fleet"


async def test_each_site_prefers_itself_and_eu_central_fails_over_to_its_region() -> None:
    screen = io.StringIO()
    outcome = await run_demo(duration=10.0, fleet_path=FLEET, console=Console(file=screen))
    consumers = outcome.consumers

    by_site = {c.site: c.answers for c in consumers}
    assert set(by_site) == {"eu-central", "us-east", "edge-paris"}
    for site, answers in by_site.items():
        assert answers[site] > 0, (site, answers)  # its own site first
        assert answers["failed"] == 0 or site == FAILING_SITE, (site, answers)
    eu = by_site[FAILING_SITE]
    assert eu["edge-paris"] > 0, eu  # the same region takes over
    assert eu["us-east"] == 0, eu  # before the other region
    assert all(c.failed_after_window == 0 for c in consumers), consumers

    # Prometheus (installed by `make test`) scraped kontinuum and the six Envoys.
    assert outcome.prometheus is not None
    assert outcome.targets_up == 7, outcome
    assert outcome.prometheus in screen.getvalue()
