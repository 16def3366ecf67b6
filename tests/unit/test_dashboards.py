"""Dashboards and rules as code: the committed files are what the code generates, the
rules pass promtool's checks and unit tests, every panel's query is valid PromQL and
filters by the variables in the labels the series have, and the Kubernetes scrape
configuration of deploy/README.md names the jobs the alerts select."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from dashboards import generate, queries
from dashboards.panels import VARIABLES, expressions
from dashboards.rules import ALERTS, ENVOY_JOB, JOB, rules
from kontinuum.telemetry.envoy_stats import INCLUDED_STATS

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


def every_expression() -> list[tuple[str, str]]:
    """(where, PromQL) of every panel, recording rule, alert and variable."""
    found = [(f"{n} / {t}", e) for n, m in models().items() for t, e in expressions(m)]
    found += [(name, expr) for name, expr in queries.RECORDING_RULES]
    found += [(alert.name, alert.expr) for alert in ALERTS]
    found += [(f"${name}", series) for name, _, series, _ in VARIABLES]
    return found


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


def test_the_variables_are_chained_and_in_the_series_own_labels() -> None:
    model = models()["fleet-overview.json"]
    by_name: dict[str, Any] = {v["name"]: v for v in model["templating"]["list"]}  # type: ignore[index]
    assert by_name["cluster"]["query"] == "label_values(kontinuum_xds_proxies, kontinuum_cluster)"
    assert '{kontinuum_cluster=~"$cluster"}, kontinuum_workspace)' in by_name["workspace"]["query"]
    service = by_name["service"]["query"]
    assert 'kontinuum_cluster=~"$cluster"' in service
    assert 'kontinuum_workspace=~"$workspace"' in service
    assert service.endswith(", kontinuum_service)")
    # Every use of a variable matches the label of the same name in kontinuum's vocabulary.
    for where, expr in every_expression():
        for variable in ("cluster", "workspace", "service"):
            for found in re.finditer(rf'(\w+)=~"\${variable}"', expr):
                assert found.group(1) == f"kontinuum_{variable}", (where, expr)


# Panels over what kontinuum counts for the whole fleet: no cluster or workspace to filter.
FLEET_WIDE = {
    "Refused xDS streams",
    "Pushes",
    "Convergence",
    "NACKs",
    "Sources",
    "Time since sources were in sync",
    "Zones",
    "Time since zones synced",
    "Configuration errors",
    "Translation time",
    "Configuration size",
}


def test_every_panel_honours_the_variables_or_says_it_is_fleet_wide() -> None:
    for name, model in models().items():
        for panel in model["panels"]:  # type: ignore[attr-defined]
            where = f"{name} / {panel['title']}"
            exprs = [t["expr"] for t in panel["targets"]]
            if panel["title"] in FLEET_WIDE:
                assert name == "control-plane.json", where
                assert "not filtered" in panel["description"], where
                assert not any("$" in e.replace("$__rate_interval", "") for e in exprs), where
                continue
            for expr in exprs:
                assert '"$cluster"' in expr, (where, expr)
                assert '"$workspace"' in expr, (where, expr)
                # kontinuum's proxy gauges have no service, nor do the inbound listeners'
                # authorization counters (they count on the called proxy).
                if name != "control-plane.json" and panel["title"] != "Authorization denials":
                    assert '"$service"' in expr, (where, expr)


def test_every_envoy_traffic_selector_leaves_out_the_east_west_gateways() -> None:
    """A gateway counts again what a sidecar in another cluster counted."""
    selectors = 0
    for where, expr in every_expression():
        for found in re.finditer(r"envoy_cluster_(?!name\b)\w+(\{[^}]*\})?", expr):
            selectors += 1
            assert 'kontinuum_role!="gateway"' in (found.group(1) or ""), (where, found.group(0))
    assert selectors >= 8


_HELLO = "cluster.outbound|80||hello.demo.svc.clusterset.local"
# Each Envoy metric the dashboards, rules and alerts read, and a stat Envoy names so.
ENVOY_STATS = {
    "envoy_http_rbac_denied": "http.inbound.rbac.denied",
    "envoy_cluster_upstream_rq_completed": f"{_HELLO}.upstream_rq_completed",
    "envoy_cluster_upstream_rq_xx": f"{_HELLO}.upstream_rq_5xx",
    "envoy_cluster_upstream_cx_tx_bytes_total": f"{_HELLO}.upstream_cx_tx_bytes_total",
    "envoy_cluster_upstream_cx_rx_bytes_total": f"{_HELLO}.upstream_cx_rx_bytes_total",
    "envoy_cluster_zone_upstream_rq_completed": f"{_HELLO}.zone.eu.us.upstream_rq_completed",
    "envoy_cluster_zone_upstream_rq_xx": f"{_HELLO}.zone.eu.us.upstream_rq_5xx",
    "envoy_cluster_zone_upstream_rq_time_bucket": f"{_HELLO}.zone.eu.us.upstream_rq_time",
    "envoy_control_plane_connected_state": "control_plane.connected_state",
}


def included(stat: str) -> bool:
    """Whether Envoy creates `stat` (a regex of the list must match it whole, as RE2's)."""
    return any(
        stat.startswith(pattern) if kind == "prefix" else re.fullmatch(pattern, stat) is not None
        for kind, pattern in INCLUDED_STATS
    )


def test_envoy_creates_every_stat_the_dashboards_rules_and_alerts_read() -> None:
    used = {
        name
        for _, expr in every_expression()
        for name in re.findall(r"\benvoy_[a-z_]+(?=[{\[\s)]|$)", expr)
        if name != "envoy_cluster_name" and not name.startswith("envoy_response_code")
    }
    assert used == set(ENVOY_STATS)
    for name, stat in ENVOY_STATS.items():
        assert included(stat), (name, stat)
    # What else stays out: the admin and xDS clusters, the stats listener, per-stat noise.
    assert not included("cluster.kontinuum-xds.upstream_rq_completed")
    assert not included(f"{_HELLO}.upstream_rq_retry")
    assert not included("http.kontinuum_stats.downstream_rq_total")


def test_service_rates_count_every_request_and_the_matrix_only_those_served() -> None:
    """A request that found no healthy endpoint is in the cluster's counters only."""
    expr = dict(queries.RECORDING_RULES)
    assert "envoy_cluster_upstream_rq_completed{" in expr[queries.SERVICE_REQUESTS]
    assert "envoy_cluster_upstream_rq_xx{" in expr[queries.SERVICE_REQUESTS_5XX]
    assert "envoy_cluster_zone_upstream_rq_completed{" in expr[queries.REQUESTS]
    fleet = dict(expressions(models()["fleet-overview.json"]))
    for title in ("Request rate", "Error ratio", "Services"):
        assert queries.SERVICE_REQUESTS in fleet[title], title
    # A quantile over all the callers' requests: of summed buckets, not a max of quantiles.
    for title in ("Latency p50", "Latency p99"):
        assert fleet[title].startswith("histogram_quantile("), title
        assert queries.LATENCY_BUCKETS in fleet[title], title
        assert "max" not in fleet[title], title


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


def test_runbooks_are_references_unless_a_base_url_makes_them_urls(tmp_path: Path) -> None:
    def annotations(model: dict[str, Any]) -> list[dict[str, str]]:
        (alerts,) = [g for g in model["groups"] if g["name"] == "kontinuum.alerts"]
        return [rule["annotations"] for rule in alerts["rules"]]

    for found in annotations(rules()):
        assert "runbook_url" not in found  # a repository path is not a URL
        assert re.fullmatch(r"docs/operations\.md#kontinuum[a-z0-9]+", found["runbook"])
    base = "https://docs.example.org/kontinuum/operations.html"
    for found in annotations(rules(runbook_base=base)):
        assert "runbook" not in found
        assert found["runbook_url"].startswith(base + "#kontinuum")
    target = tmp_path / "kontinuum.rules.yaml"
    assert generate.main(["--runbook-base", base, "--rules-to", str(target)]) == 0
    written = yaml.safe_load(target.read_text())
    assert annotations(written) == annotations(rules(runbook_base=base))


def readme_scrape_config() -> dict[str, Any]:
    """The Kubernetes scrape configuration deploy/README.md gives (its `yaml` block that
    starts with `scrape_configs:`)."""
    readme = (generate.ROOT.parent / "deploy" / "README.md").read_text(encoding="utf-8")
    (block,) = re.findall(r"```yaml\n(scrape_configs:\n.*?)```", readme, re.DOTALL)
    loaded: dict[str, Any] = yaml.safe_load(block)
    return loaded


def test_the_kubernetes_scrape_configuration_names_the_jobs_the_alerts_select(
    tmp_path: Path,
) -> None:
    config = readme_scrape_config()
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {JOB, ENVOY_JOB}
    assert jobs[ENVOY_JOB]["metrics_path"] == "/stats/prometheus"
    selected = {alert.name for alert in ALERTS if "job=" in alert.expr}
    assert selected == {"KontinuumProxyDown", "KontinuumDown"}
    for alert in ALERTS:
        for job in re.findall(r'job="([^"]+)"', alert.expr):
            assert job in jobs, (alert.name, job)
    # Debian's Prometheus is built without Kubernetes discovery: promtool checks the rest
    # (the relabelling) with a static target in its place; the end-to-end test runs the
    # relabelling on the labels Kubernetes discovery gives pods.
    for job in config["scrape_configs"]:
        for discovery in job.pop("kubernetes_sd_configs"):
            assert discovery["role"] == "pod"
            assert set(discovery) <= {"role", "namespaces"}
        job["static_configs"] = [{"targets": ["127.0.0.1:9"]}]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    checked = subprocess.run(
        [promtool(), "check", "config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_hold_scales_every_alerts_for() -> None:
    fast = rules(hold=0)
    (alerts,) = [g for g in fast["groups"] if g["name"] == "kontinuum.alerts"]
    assert {r["for"] for r in alerts["rules"]} == {"0s"}
    assert json.dumps(rules()) != json.dumps(fast)
