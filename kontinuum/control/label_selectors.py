"""Kubernetes label selectors, and the labels of namespaces they select. Pure: no I/O.

A Gateway listener's `allowedRoutes.namespaces.selector` (with `from: Selector`) is a
`metav1.LabelSelector`: every `matchLabels` entry and every `matchExpressions` requirement
must hold (an empty selector selects every namespace). Requirements are those of
Kubernetes: `In` (the label is set to one of `values`), `NotIn` (it is not set, or set to
none of them), `Exists`, `DoesNotExist` (no `values`).

The Gateway API's CRDs check only the selector's types, so a selector with an unknown
operator or a malformed key is accepted by the API server; it is the listener that is not
accepted (`selector_problems` says why, each problem `field: message`, with the checks of
`kube_limits`).

A namespace's labels are those of its `v1 Namespace` object, if the fleet declares one,
plus `kubernetes.io/metadata.name: <name>`, which Kubernetes sets on every namespace.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from kontinuum.control.kube_limits import label_value, qualified_name

OPERATORS: Final = ("In", "NotIn", "Exists", "DoesNotExist")
NAME_LABEL: Final = "kubernetes.io/metadata.name"

Labels = tuple[tuple[str, str], ...]  # (key, value), sorted by key


@dataclass(frozen=True, slots=True)
class LabelRequirement:
    """One `matchExpressions` entry, as written (`operator` may be one Kubernetes lacks)."""

    key: str
    operator: str
    values: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LabelSelector:
    match_labels: Labels = ()
    match_expressions: tuple[LabelRequirement, ...] = ()


def selector_problems(selector: LabelSelector, at: str) -> list[str]:
    """What makes `selector` (at field path `at`) invalid for Kubernetes, if anything."""
    found: list[str] = []
    for key, value in selector.match_labels:
        if problem := qualified_name(key):
            found.append(f"{at}.matchLabels[{key}]: the key {problem}")
        if problem := label_value(value):
            found.append(f"{at}.matchLabels[{key}]: {problem}")
    for i, requirement in enumerate(selector.match_expressions):
        where = f"{at}.matchExpressions[{i}]"
        if problem := qualified_name(requirement.key):
            found.append(f"{where}.key: {problem}")
        operator, values = requirement.operator, requirement.values
        if operator not in OPERATORS:
            found.append(
                f"{where}.operator: must be one of {', '.join(OPERATORS)}, got {operator!r}"
            )
        elif operator in ("In", "NotIn") and not values:
            found.append(f"{where}.values: must hold at least one value for {operator}")
        elif operator in ("Exists", "DoesNotExist") and values:
            found.append(f"{where}.values: must be empty for {operator}")
        for j, value in enumerate(values):
            if problem := label_value(value):
                found.append(f"{where}.values[{j}]: {problem}")
    return found


def _holds(requirement: LabelRequirement, labels: Mapping[str, str]) -> bool:
    value = labels.get(requirement.key)
    match requirement.operator:
        case "In":
            return value is not None and value in requirement.values
        case "NotIn":
            return value is None or value not in requirement.values
        case "Exists":
            return value is not None
        case "DoesNotExist":
            return value is None
    return False  # an invalid selector selects nothing


def selects(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """Whether `labels` satisfy every part of `selector`."""
    return all(labels.get(k) == v for k, v in selector.match_labels) and all(
        _holds(r, labels) for r in selector.match_expressions
    )


def namespace_labels(name: str, declared: Labels = ()) -> dict[str, str]:
    """A namespace's labels: its Namespace object's, and the one Kubernetes always sets."""
    return {**dict(declared), NAME_LABEL: name}
