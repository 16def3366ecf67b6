"""What the `kontinuum` command shows on an 80-column terminal: help that names every option
whole, refused values in one line, tables that wrap names instead of cutting them, and
counts in proper English. The command runs in-process, as `kontinuum` runs it (`run`)."""

from __future__ import annotations

import io
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from rich.console import Console

from kontinuum.cli import app
from kontinuum.cli_output import run
from kontinuum.route_report import load_binding, render_routes
from kontinuum.status import ProxyStatus, render_status
from kontinuum.xds.state import SyncStatus
from kontinuum.zone_status import ZoneStatus, parse_zones, render_zones

EXAMPLE_FLEET = Path(__file__).parents[2] / "examples" / "fleet"
# Options named *-address that take no port: the IP that DNS answers give.
NOT_HOST_PORT = {"--dns-service-address"}


@pytest.fixture(autouse=True)
def eighty_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.delenv("KONTINUUM_CA_DIR", raising=False)


def commands(
    group: Any = None, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every command of `kontinuum` with the words that run it."""
    group = group if group is not None else typer.main.get_command(app)
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from commands(command, (*path, name))
        else:
            yield (*path, name), command


def option_names(command: Any) -> list[str]:
    names: list[str] = []
    for param in command.params:
        if param.param_type_name == "option":
            names += [*param.opts, *param.secondary_opts]
    return names


def kontinuum(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = run(app, list(args))
    out, err = capsys.readouterr()
    return code, out, err


ALL = list(commands())


def test_every_command_is_found() -> None:
    found = {" ".join(path) for path, _ in ALL}
    assert {"serve", "bootstrap", "status", "routes", "ca issue", "token create"} <= found


@pytest.mark.parametrize(("path", "command"), ALL, ids=[" ".join(p) for p, _ in ALL])
def test_help_names_every_option_whole_at_80_columns(
    capsys: pytest.CaptureFixture[str], path: tuple[str, ...], command: Any
) -> None:
    code, out, _ = kontinuum(capsys, *path, "--help")
    assert code == 0
    for name in option_names(command):
        assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", out), (name, out)
    assert "…" not in out
    assert max(len(line) for line in out.splitlines()) <= 80, out


PORT_OPTIONS = [
    (path, name)
    for path, command in ALL
    for name in option_names(command)
    if name.endswith("-port") or (name.endswith("-address") and name not in NOT_HOST_PORT)
]


@pytest.mark.parametrize(
    ("path", "option"), PORT_OPTIONS, ids=[" ".join(p) + " " + o for p, o in PORT_OPTIONS]
)
@pytest.mark.parametrize("port", ["70000", "99999"])
def test_a_port_outside_1_to_65535_is_refused_in_one_line(
    capsys: pytest.CaptureFixture[str], path: tuple[str, ...], option: str, port: str
) -> None:
    value = port if option.endswith("-port") else f"127.0.0.1:{port}"
    code, out, err = kontinuum(capsys, *path, option, value)
    assert code == 2
    assert out == ""
    assert len(err.splitlines()) == 1, err
    assert option in err, err
    assert "65535" in err, err


def test_a_listening_address_needs_a_real_port(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = kontinuum(capsys, "serve", "--admin-address", "127.0.0.1:0")
    assert code == 2
    assert err.startswith("error: "), err
    assert len(err.splitlines()) == 1, err
    assert "--admin-address" in err


@pytest.mark.parametrize("option", ["--dns-address", "--admin-address", "--xds-address"])
def test_none_is_no_address_of_a_server(capsys: pytest.CaptureFixture[str], option: str) -> None:
    # Only a sidecar's --stats-address may be `none`; a server's address is left out instead.
    code, _, err = kontinuum(capsys, "serve", "--plaintext-xds", option, "none")
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert f"Invalid value for '{option}': expected HOST:PORT, got 'none'" in err, err


def test_a_refused_option_is_one_line_with_the_way_to_help(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = kontinuum(capsys, "bootstrap", "--node-id", "a", "--cluster", "c")
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: Missing option '--namespace' (see '"), err
    assert err.endswith(" bootstrap --help')\n"), err


def test_an_operator_error_is_one_line_and_exit_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = kontinuum(
        capsys, "ca", "issue", "--ca-dir", str(tmp_path / "none"), "--cluster", "c",
        "--namespace", "n", "--service-account", "s", "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 1
    assert err.startswith("error: "), err
    assert len(err.splitlines()) == 1, err
    assert "not a directory" in err


def test_validate_counts_in_proper_english(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    fleet = tmp_path / "fleet"
    shutil.copytree(EXAMPLE_FLEET, fleet)
    (fleet / "clusters" / "nowhere").mkdir()  # one error
    code, _, err = kontinuum(capsys, "validate", str(fleet))
    assert code == 1
    assert "1 error," in err, err
    assert "0 routes" in err, err
    assert "0 status problems" in err, err


def _printed(render: Any, *args: Any, width: int = 80) -> str:
    out = io.StringIO()
    render(*args, Console(file=out, width=width))
    return out.getvalue()


def test_routes_never_cut_a_name_at_80_columns() -> None:
    _, binding, _ = load_binding(EXAMPLE_FLEET)
    shown = _printed(render_routes, binding)
    assert "…" not in shown
    lines = shown.splitlines()
    for gateway in ("east-west-edge-paris", "east-west-eu-central", "east-west-us-east"):
        assert any(f"kontinuum-system/{gateway}" in line for line in lines), shown
    assert max(len(line) for line in lines) <= 80


PROXIES = [
    ProxyStatus(
        "frontend-7f9c6d8b5-x2x9k.demo",
        "eu-central",
        "demo",
        "sidecar",
        {"CDS": SyncStatus.SYNCED, "EDS": SyncStatus.STALE, "RDS": SyncStatus.NACKED},
        ["RDS web: [route] rejected"],
    ),
    ProxyStatus(
        "east-west-paris-5d4c9-q8w7e",
        "edge-paris",
        "kontinuum-system",
        "gateway",
        {"CDS": SyncStatus.SYNCED, "EDS": SyncStatus.SYNCED},
    ),
]


@pytest.mark.parametrize("width", [80, 60])
def test_status_never_cuts_a_name(width: int) -> None:
    shown = _printed(render_status, PROXIES, width=width)
    lines = shown.splitlines()
    assert "…" not in shown
    for proxy in PROXIES:
        for name in (proxy.node_id, proxy.cluster, proxy.workspace):
            assert any(name in line for line in lines), (name, shown)
    assert max(len(line) for line in lines) <= width
    assert "EDS STALE, RDS NACKED" in shown
    assert "[route] rejected" in shown  # a NACK message, not read as markup


def test_status_shows_a_column_per_type_where_it_fits() -> None:
    shown = _printed(render_status, PROXIES, width=200)
    header = next(line for line in shown.splitlines() if "NODE" in line)
    assert all(t in header for t in ("CDS", "EDS", "LDS", "RDS", "SDS")), header
    assert "2 connected proxies" in shown
    one = _printed(render_status, PROXIES[:1], width=200)
    assert re.search(r"\b1 connected proxy\s*$", one, re.MULTILINE), one


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (("bootstrap", "--node-id", "a", "--cluster", "c", "--namespace", "n", "-o"), "--output"),
        (("ca", "init", "--ca-dir"), "--ca-dir"),
    ],
)
def test_a_file_that_cannot_be_written_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, args: tuple[str, ...], option: str
) -> None:
    (tmp_path / "file").write_text("")
    inside_a_file = str(tmp_path / "file" / "below")  # a path whose parent is no directory
    code, _, err = kontinuum(capsys, *args, inside_a_file)
    assert code == 1
    assert err == f"error: cannot write {inside_a_file}: Not a directory; check {option}\n"


def test_an_otlp_endpoint_that_is_no_address_is_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = kontinuum(
        capsys, "serve", "--plaintext-xds", "--config", str(EXAMPLE_FLEET),
        "--otlp-endpoint", "ftp://collector:21",
    )  # fmt: skip
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert "--otlp-endpoint" in err, err


def test_kontinuum_alone_prints_its_commands(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = kontinuum(capsys)
    assert code == 2
    assert err == ""
    for path, _ in ALL:
        assert path[0] in out


NOW = 1_800_000_000.0
ZONES = [
    ZoneStatus(
        "edge-paris",
        True,
        NOW - 65,
        NOW - 4,
        received=3,
        sent=12,
        refused=1,
        lag=0,
        active=1,
        standby=1,
        active_replica="zone-a",
    ),
    ZoneStatus("edge-lisbon-datacenter-north", False, NOW - 7300, NOW - 7310, 40, 9, 0, 7300),
    ZoneStatus("edge-oslo", False),
]


@pytest.mark.parametrize("width", [80, 60, 200])
def test_zones_show_state_sync_objects_and_lag_without_cutting_a_name(width: int) -> None:
    out = io.StringIO()
    render_zones(ZONES, Console(file=out, width=width), now=NOW)
    shown = out.getvalue()
    lines = shown.splitlines()
    assert "…" not in shown
    assert max(len(line) for line in lines) <= width
    assert "3 zones" in shown
    for zone in ZONES:
        assert any(zone.site in line for line in lines), (zone.site, shown)
    if width < 200:  # the figures in one column, wrapped: read it back as one text
        cells = " ".join(line.split("│")[2] for line in lines if line.count("│") == 3)
        text = " ".join(cells.split())
        assert (
            "connected for 1m 5s; replicas 2 (active zone-a); last sync 4s ago; received 3, "
            "sent 12, refused 1; lag 0s" in text
        ), shown
        assert "disconnected for 2h 1m; replicas 0; last sync 2h 1m ago; received 40" in text, shown
        assert "never connected; replicas 0; last sync never;" in text, shown
    if width == 200:
        header = next(line for line in lines if "ZONE" in line)
        names = ("REPLICAS", "LAST SYNC", "RECEIVED", "SENT", "REFUSED", "LAG")
        assert all(h in header for h in names)
        paris = next(line for line in lines if "edge-paris" in line)
        assert re.search(
            r"connected for 1m 5s\s*│\s*2 \(active zone-a\)\s*│\s*4s ago\s*│\s*3\s*│\s*12\s*│"
            r"\s*1\s*│\s*0s",
            paris,
        )


def test_zones_are_read_from_a_globals_metrics() -> None:
    metrics = """# TYPE kontinuum_federation_zone_connected gauge
kontinuum_federation_zone_connected{zone="edge-paris"} 1.0
kontinuum_federation_zone_connected{zone="edge-oslo"} 0.0
# TYPE kontinuum_federation_zone_last_sync_timestamp_seconds gauge
kontinuum_federation_zone_last_sync_timestamp_seconds{zone="edge-paris"} 1.7e9
# TYPE kontinuum_federation_zone_objects_received counter
kontinuum_federation_zone_objects_received_total{zone="edge-paris"} 3.0
kontinuum_federation_zone_objects_received_total{zone="edge-oslo"} 0.0
# TYPE kontinuum_federation_zone_objects_refused counter
kontinuum_federation_zone_objects_refused_total{zone="edge-paris"} 1.0
# TYPE kontinuum_federation_zone_resources_sent counter
kontinuum_federation_zone_resources_sent_total{zone="edge-paris"} 12.0
# TYPE kontinuum_federation_zone_last_transition_timestamp_seconds gauge
kontinuum_federation_zone_last_transition_timestamp_seconds{zone="edge-paris"} 1.6e9
# TYPE kontinuum_federation_zone_lag_seconds gauge
kontinuum_federation_zone_lag_seconds{zone="edge-paris"} 2.5
kontinuum_federation_zone_lag_seconds{zone="edge-oslo"} 0.0
# TYPE kontinuum_federation_zone_replicas gauge
kontinuum_federation_zone_replicas{role="active",zone="edge-paris"} 1.0
kontinuum_federation_zone_replicas{role="standby",zone="edge-paris"} 1.0
kontinuum_federation_zone_replicas{role="active",zone="edge-oslo"} 0.0
kontinuum_federation_zone_replicas{role="standby",zone="edge-oslo"} 0.0
# TYPE kontinuum_federation_zone_active_replica_info gauge
kontinuum_federation_zone_active_replica_info{replica="zone-a",zone="edge-paris"} 1.0
# TYPE kontinuum_source_up gauge
kontinuum_source_up{source="zone:edge-paris"} 1.0
"""
    assert parse_zones(metrics) == [
        ZoneStatus("edge-oslo", False),
        ZoneStatus(
            "edge-paris",
            True,
            1.6e9,
            1.7e9,
            received=3,
            sent=12,
            refused=1,
            lag=2.5,
            active=1,
            standby=1,
            active_replica="zone-a",
        ),
    ]
