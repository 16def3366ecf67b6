"""The status kontinuum writes into Kubernetes objects, rendered from what the control layer
decided. Pure: no I/O.

Each renderer takes the object as the API server has it now and returns the `status`
fields kontinuum owns, so that writing them back changes only what must change:

- `lastTransitionTime` stays what the object holds while a condition's status stays the
  same, as the Kubernetes API conventions define it; it is `now` when the status changed
  or the condition is new. Because it is read from the object, not from memory, a new
  leader or a restarted replica keeps the times its predecessor wrote.
- `observedGeneration` is the generation the decision was made from.
- Lists that several controllers share (a route's `status.parents`, a policy's
  `status.ancestors`) keep the other controllers' entries untouched; kontinuum's are those
  with its `controllerName`.

ServiceExport conditions (`Valid`, `Conflict`, `Ready`) are the MCS implementation's own,
so kontinuum owns `status.conditions` whole. A Gateway's `status.conditions` and
`status.listeners` are its controller's, kontinuum's for every Gateway it serves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from kontinuum.control.gateway_binding import GatewayStatus, PolicyStatus
from kontinuum.control.plane import Condition
from kontinuum.control.route_binding import RouteStatus
from kontinuum.control.routing import GATEWAY_CONTROLLER, GATEWAY_GROUP, MCS_GROUP, ParentRef

CONTROLLER: Final = GATEWAY_CONTROLLER

MAX_PARENTS: Final = 32  # the Gateway API's limit of status.parents and status.ancestors

Status = dict[str, Any]
Render = Callable[[Mapping[str, Any], datetime], Status]
"""The status fields to write, given the object as it is now and the time."""


def rfc3339(when: datetime) -> str:
    """Kubernetes `metav1.Time`: UTC, whole seconds, `Z`."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _mappings(value: object) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def _status(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    status = obj.get("status")
    return status if isinstance(status, Mapping) else {}


def conditions_json(
    conditions: Iterable[Condition],
    current: object,
    now: datetime,
    generation: int | None,
) -> list[dict[str, Any]]:
    """`metav1.Condition`s, keeping each one's `lastTransitionTime` from `current` (a list
    of conditions as the object holds them) while its status is unchanged."""
    before = {c.get("type"): c for c in _mappings(current)}
    rendered = []
    for condition in conditions:
        previous = before.get(condition.type)
        since = previous.get("lastTransitionTime") if previous is not None else None
        if previous is None or previous.get("status") != condition.status or not since:
            since = rfc3339(now)
        entry: dict[str, Any] = {
            "type": condition.type,
            "status": condition.status,
            "reason": condition.reason,
            "message": condition.message,
            "lastTransitionTime": since,
        }
        observed = condition.observed_generation
        if observed is not None or generation is not None:
            entry["observedGeneration"] = observed if observed is not None else generation
        rendered.append(entry)
    return rendered


def _generation(obj: Mapping[str, Any]) -> int | None:
    metadata = obj.get("metadata")
    generation = metadata.get("generation") if isinstance(metadata, Mapping) else None
    return generation if isinstance(generation, int) else None


def export_status(conditions: Sequence[Condition]) -> Render:
    """A ServiceExport's `status.conditions`. An export's spec is empty, so its conditions
    follow from the cluster, not from a generation: the object's own is observed."""

    def render(obj: Mapping[str, Any], now: datetime) -> Status:
        current = _status(obj).get("conditions")
        return {"conditions": conditions_json(conditions, current, now, _generation(obj))}

    return render


def parent_ref_json(ref: ParentRef) -> dict[str, Any]:
    """A parentRef as the Gateway API writes it (group and kind always, the rest if set)."""
    rendered: dict[str, Any] = {
        "group": ref.group,
        "kind": ref.kind,
        "namespace": ref.namespace,
        "name": ref.name,
    }
    if ref.section_name:
        rendered["sectionName"] = ref.section_name
    if ref.port:
        rendered["port"] = ref.port
    return rendered


def _same_ref(entry: Mapping[str, Any], key: str, ref: Mapping[str, Any]) -> bool:
    """Whether a status entry's `key` (parentRef, ancestorRef) names `ref`. The API server
    defaults group and kind, and a ref may leave its namespace out."""
    found = entry.get(key)
    if not isinstance(found, Mapping):
        return False
    return all(found.get(field) == ref.get(field) for field in ("group", "kind", "name")) and (
        found.get("namespace") in (None, ref["namespace"])
        and found.get("sectionName") == ref.get("sectionName")
        and found.get("port") == ref.get("port")
    )


def _shared_list(
    current: object,
    key: str,
    ours: Sequence[tuple[dict[str, Any], Sequence[Condition]]],
    now: datetime,
    generation: int | None,
) -> list[dict[str, Any]]:
    """A list of per-ref entries several controllers share: the others' kept in place,
    kontinuum's replaced by `ours` (ref, conditions), within the Gateway API's limit."""
    entries = _mappings(current)
    others = [dict(e) for e in entries if e.get("controllerName") != CONTROLLER]
    mine = [e for e in entries if e.get("controllerName") == CONTROLLER]
    rendered = []
    for ref, conditions in ours:
        previous = next((e for e in mine if _same_ref(e, key, ref)), None)
        before = previous.get("conditions") if previous is not None else None
        rendered.append(
            {
                key: ref,
                "controllerName": CONTROLLER,
                "conditions": conditions_json(conditions, before, now, generation),
            }
        )
    return [*others, *rendered][:MAX_PARENTS]


def route_status(status: RouteStatus) -> Render:
    """An HTTPRoute's or GRPCRoute's `status.parents`, an entry per parentRef."""
    ours = [(parent_ref_json(p.ref), p.conditions) for p in status.parents]

    def render(obj: Mapping[str, Any], now: datetime) -> Status:
        current = _status(obj).get("parents")
        return {"parents": _shared_list(current, "parentRef", ours, now, status.generation)}

    return render


def gateway_status(status: GatewayStatus) -> Render:
    """A Gateway's `status.conditions` and `status.listeners`."""

    def render(obj: Mapping[str, Any], now: datetime) -> Status:
        current = _status(obj)
        before = {
            entry.get("name"): entry.get("conditions")
            for entry in _mappings(current.get("listeners"))
        }
        listeners = [
            {
                "name": listener.name,
                "supportedKinds": [
                    {"group": GATEWAY_GROUP, "kind": kind} for kind in listener.supported_kinds
                ],
                "attachedRoutes": listener.attached_routes,
                "conditions": conditions_json(
                    listener.conditions, before.get(listener.name), now, status.generation
                ),
            }
            for listener in status.listeners
        ]
        conditions = conditions_json(
            status.conditions, current.get("conditions"), now, status.generation
        )
        return {"conditions": conditions, "listeners": listeners}

    return render


_TARGET_GROUPS: Final = {"Service": "", "ServiceImport": MCS_GROUP}


def policy_status(statuses: Sequence[PolicyStatus]) -> Render:
    """A LocalityPolicy's `status.ancestors` (GEP-713): an entry per target, each one of
    the policy's `statuses`."""
    generation = max((s.generation for s in statuses), default=0)
    ours = [
        (
            {
                "group": _TARGET_GROUPS.get(s.target[0], ""),
                "kind": s.target[0],
                "namespace": s.namespace,
                "name": s.target[1],
            },
            s.conditions,
        )
        for s in statuses
    ]

    def render(obj: Mapping[str, Any], now: datetime) -> Status:
        current = _status(obj).get("ancestors")
        return {"ancestors": _shared_list(current, "ancestorRef", ours, now, generation)}

    return render


__all__ = [
    "CONTROLLER",
    "Render",
    "conditions_json",
    "export_status",
    "gateway_status",
    "parent_ref_json",
    "policy_status",
    "rfc3339",
    "route_status",
]
