"""`kontinuum routes` and the route part of `kontinuum validate`: Gateway API status, read
from a fleet directory as `kontinuum serve` would bind it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from kontinuum.cli_output import fitting
from kontinuum.control.mcs import build_plane
from kontinuum.control.model import ConfigError, Fleet
from kontinuum.control.plane import Condition
from kontinuum.control.route_binding import RouteBinding, bind_routes
from kontinuum.discovery.static import load_fleet


@dataclass(frozen=True, slots=True)
class StatusLine:
    """One object's condition toward one parent (route), target (policy) or itself."""

    file: str
    object: str  # `HTTPRoute demo/hello`
    toward: str  # `Service demo/hello`, a listener, or "" for the object itself
    condition: Condition

    @property
    def ok(self) -> bool:
        """Whether the condition is as it should be (Conflicted/Conflict False is good)."""
        healthy = "False" if self.condition.type in ("Conflicted", "Conflict") else "True"
        return self.condition.status == healthy

    def __str__(self) -> str:
        where = f" {self.toward}:" if self.toward else ""
        c = self.condition
        message = f": {c.message}" if c.message else ""
        return f"{self.file}: {self.object}:{where} {c.type}={c.status} {c.reason}{message}"


def status_lines(binding: RouteBinding) -> Iterator[StatusLine]:
    """Every condition of every route, Gateway (and listener) and LocalityPolicy."""
    for route in binding.statuses:
        name = f"{route.kind} {route.namespace}/{route.name}"
        for parent in route.parents:
            for condition in parent.conditions:
                yield StatusLine(route.file, name, str(parent.ref), condition)
    for gateway in binding.gateway_statuses:
        name = f"Gateway {gateway.namespace}/{gateway.name}"
        for condition in gateway.conditions:
            yield StatusLine(gateway.file, name, "", condition)
        for listener in gateway.listeners:
            for condition in listener.conditions:
                yield StatusLine(gateway.file, name, f"listener {listener.name}", condition)
    for policy in binding.policy_statuses:
        name = f"LocalityPolicy {policy.namespace}/{policy.name}"
        kind, target = policy.target
        for condition in policy.conditions:
            yield StatusLine(policy.file, name, f"{kind} {policy.namespace}/{target}", condition)


def load_binding(path: Path) -> tuple[Fleet, RouteBinding, list[ConfigError]]:
    """The fleet directory, its routing bound to its service plane, and the files' errors."""
    fleet, errors = load_fleet(path)
    plane = build_plane(fleet)
    return fleet, bind_routes(fleet.routing, plane, fleet.grants), errors


def render_routes(binding: RouteBinding, console: Console | None = None) -> None:
    """Every condition in a table: one column per part where that fits the terminal, else
    three columns whose cells wrap; names are never cut."""
    console = console or Console()
    wide = Table("object", "toward", "condition", "reason", "message", title="routing status")
    narrow = Table(title="routing status")
    for column in ("object / toward", "condition", "message"):
        narrow.add_column(column, overflow="fold")
    for line in status_lines(binding):
        c = line.condition
        style = "" if line.ok else "bold red"
        condition = f"{c.type}={c.status}"
        wide.add_row(line.object, line.toward, condition, c.reason, c.message, style=style)
        where = f"{line.object}\n{line.toward}" if line.toward else line.object
        narrow.add_row(where, f"{condition} {c.reason}", c.message, style=style)
    console.print(fitting(console, wide, narrow))
