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

    # Prometheus (installed by `make test`) scraped the global, the zone and the six Envoys.
    assert outcome.prometheus is not None
    assert outcome.targets_up == 8, outcome
    assert outcome.prometheus in screen.getvalue()

    # edge-paris is a zone: its link to the global was cut, its own traffic went on, an
    # endpoint added meanwhile served, and the resync sent only that object.
    cut = outcome.partition
    assert cut.cut_seconds > 0, cut
    assert cut.failed_while_cut == 0, cut
    assert cut.new_endpoint_answers > 0, cut
    assert cut.resynced, cut
    assert (cut.held, cut.changed_while_cut, cut.resent, cut.fleet_resent) == (4, 1, 1, 0), cut
    shown = " ".join(screen.getvalue().split())
    assert "edge-paris's requests failed meanwhile: 0" in shown, shown
    assert "unchanged objects re-sent: 0" in shown, shown
