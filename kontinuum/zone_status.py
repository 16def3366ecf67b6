"""The zones section of `kontinuum status`: each zone of a global, read from the global's
`/metrics` (its admin endpoint), as connected or not and since when, when it last synced,
the objects received from it and the resources sent to it, the objects refused, its
lag (how long it has been behind the global: since the oldest response of the fleet it has
not acknowledged, or since it disconnected), and its replicas connected (with the active
one's id when there are several)."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.table import Table

from kontinuum.cli_output import fitting
from kontinuum.control.wording import plural
from kontinuum.errors import OperatorError

MAX_METRICS_BYTES = 64 * 1024 * 1024

_PREFIX = "kontinuum_federation_zone_"


@dataclass
class ZoneStatus:
    site: str
    connected: bool
    since: float | None = None  # when it last connected or disconnected (Unix time)
    last_sync: float | None = None
    received: int = 0  # objects from the zone that applied
    sent: int = 0  # resources of the fleet sent to the zone
    refused: int = 0  # objects from the zone refused
    lag: float = 0.0
    active: int = 0  # replicas connected whose view is the site's (0 or 1)
    standby: int = 0  # replicas connected besides
    active_replica: str = ""  # the active replica's id


def parse_zones(metrics: str) -> list[ZoneStatus]:
    """The zones of a global's Prometheus exposition, by site."""
    values: dict[str, dict[str, float]] = {}
    active: dict[str, str] = {}
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            site = sample.labels.get("zone")
            if site is None or not sample.name.startswith(_PREFIX):
                continue
            name = sample.name.removeprefix(_PREFIX)
            if name == "replicas":
                name = f"replicas_{sample.labels.get('role', '')}"
            elif name == "active_replica_info":
                active[site] = sample.labels.get("replica", "")
                continue
            values.setdefault(site, {})[name] = sample.value
    zones = []
    for site, of in sorted(values.items()):
        if "connected" not in of:
            continue
        zones.append(
            ZoneStatus(
                site=site,
                connected=of["connected"] == 1,
                since=of.get("last_transition_timestamp_seconds"),
                last_sync=of.get("last_sync_timestamp_seconds"),
                received=int(of.get("objects_received_total", 0)),
                sent=int(of.get("resources_sent_total", 0)),
                refused=int(of.get("objects_refused_total", 0)),
                lag=of.get("lag_seconds", 0.0),
                active=int(of.get("replicas_active", 0)),
                standby=int(of.get("replicas_standby", 0)),
                active_replica=active.get(site, ""),
            )
        )
    return zones


def fetch_zones(admin_address: str, timeout: float = 5.0) -> list[ZoneStatus]:
    """The zones of the global whose admin endpoint is `admin_address`; an OperatorError
    says why they cannot be read."""
    url = f"http://{admin_address}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = response.read(MAX_METRICS_BYTES)
    except (OSError, urllib.error.URLError) as error:
        reason = getattr(error, "reason", error)
        raise OperatorError(
            f"cannot read the zones from {url}: {reason}; check --admin-address"
        ) from error
    return parse_zones(body.decode("utf-8", "replace"))


def age(seconds: float) -> str:
    """A duration as an operator reads it: `4s`, `2m 5s`, `3h 10m`, `2d 4h`."""
    whole = max(0, int(seconds))
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def _state(zone: ZoneStatus, now: float) -> str:
    word = "connected" if zone.connected else "disconnected"
    if zone.since is None:
        return word if zone.connected else "never connected"
    return f"{word} for {age(now - zone.since)}"


def _replicas(zone: ZoneStatus) -> str:
    """The replicas connected: their number, and the active one's id when several are."""
    connected = zone.active + zone.standby
    if connected > 1 and zone.active_replica:
        return f"{connected} (active {zone.active_replica})"
    return str(connected)


def _last_sync(zone: ZoneStatus, now: float) -> str:
    return "never" if zone.last_sync is None else f"{age(now - zone.last_sync)} ago"


def render_zones(
    zones: list[ZoneStatus], console: Console | None = None, now: float | None = None
) -> None:
    """A table of the zones: a column per figure where that fits the terminal, else the
    figures in one column, wrapped between words."""
    console = console or Console()
    now = time.time() if now is None else now
    title = plural(len(zones), "zone")
    names = ("ZONE", "STATE", "REPLICAS", "LAST SYNC", "RECEIVED", "SENT", "REFUSED", "LAG")
    wide = Table(*names, title=title)
    narrow = Table(title=title)
    narrow.add_column("ZONE", overflow="fold")
    narrow.add_column("STATE, REPLICAS, LAST SYNC, OBJECTS, LAG", overflow="fold")
    for zone in zones:
        state, synced, lag = _state(zone, now), _last_sync(zone, now), age(zone.lag)
        replicas = _replicas(zone)
        counts = (str(zone.received), str(zone.sent), str(zone.refused))
        wide.add_row(zone.site, state, replicas, synced, *counts, lag)
        narrow.add_row(
            zone.site,
            f"{state}; replicas {replicas}; last sync {synced}; received {counts[0]}, "
            f"sent {counts[1]}, refused {counts[2]}; lag {lag}",
        )
    console.print(fitting(console, wide, narrow))
