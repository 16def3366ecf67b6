"""Dashboards and rules as code: the committed files are what the code generates, the
rules pass promtool's checks and unit tests, and every panel's query is valid PromQL."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from dashboards import generate
from dashboards.panels import expressions
from dashboards.rules import ALERTS, rules

RULES_DIR = generate.ROOT / "rules"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is missing: `make test` installs the Debian package prometheus")
    return found


def models() -> dict[str, dict[str, object]]:
    return {name: build() for name, build in generate.DASHBOARDS.items()}


def test_the_committed_files_are_what_the_code_generates() -> None:
    for path, content in generate.files().items():
        assert path.exists(), f"{path} is missing: run `python -m dashboards.generate`"
        assert path.read_text(encoding="utf-8") == content, (
            f"{path} is out of date: run `python -m dashboards.generate`"
        )


def test_each_dashboard_has_a_stable_uid_and_the_mesh_variables() -> None:
    uids = set()
    for name, model in models().items():
        uids.add(model["uid"])
        variables = model["templating"]["list"]  # type: ignore[index]
        by_name = {v["name"]: v for v in variables}
        assert by_name["datasource"]["type"] == "datasource", name
        assert by_name["datasource"]["query"] == "prometheus", name
        for variable in ("cluster", "workspace", "service"):
            assert by_name[variable]["multi"] is True, (name, variable)
            assert by_name[variable]["includeAll"] is True, (name, variable)
        panels = model["panels"]  # type: ignore[index]
        assert panels, name
        assert all(p["datasource"]["uid"] == "${datasource}" for p in panels), name
        assert len({p["id"] for p in panels}) == len(panels), name
    assert uids == {"kontinuum-fleet", "kontinuum-cross-site", "kontinuum-control-plane"}


def concrete(expr: str) -> str:
    """A panel's query as Prometheus runs it: every variable All, Grafana's interval 1m."""
    for variable in ("$cluster", "$workspace", "$service"):
        expr = expr.replace(variable, ".*")
    return expr.replace("$__rate_interval", "1m")


def test_every_panel_query_is_valid_promql(tmp_path: Path) -> None:
    """promtool parses each query, as a recording rule of its own."""
    records = [
        {"record": f"panel:{index}", "expr": concrete(expr)}
        for index, (_, expr) in enumerate(
            e for model in models().values() for e in expressions(model)
        )
    ]
    assert len(records) >= 20
    path = tmp_path / "panels.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": records}]}))
    checked = subprocess.run(
        [promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_rules_pass_promtool_check_and_their_unit_tests() -> None:
    checked = subprocess.run(
        [promtool(), "check", "rules", "kontinuum.rules.yaml"],
        cwd=RULES_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(
        [promtool(), "test", "rules", "kontinuum.rules.test.yaml"],
        cwd=RULES_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_is_unit_tested_and_has_a_runbook() -> None:
    tests = yaml.safe_load((RULES_DIR / "kontinuum.rules.test.yaml").read_text())
    tested = {
        case["alertname"]
        for test in tests["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert tested == {a.name for a in ALERTS}
    guide = (generate.ROOT.parent / "docs" / "operations.md").read_text(encoding="utf-8")
    for alert in ALERTS:
        assert f"### {alert.name}" in guide, alert.name


def test_a_hold_scales_every_alerts_for() -> None:
    fast = rules(hold=0)
    (alerts,) = [g for g in fast["groups"] if g["name"] == "kontinuum.alerts"]
    assert {r["for"] for r in alerts["rules"]} == {"0s"}
    assert json.dumps(rules()) != json.dumps(fast)
