"""Reading Kubernetes-style objects field by field, with an error for each problem.

`ObjectReader` wraps one parsed YAML document; its getters check the type (and optionally the
format) of a field and record a `ConfigError` under the field's path (`spec.ports[1].port`)
instead of raising, so one pass reports every problem of an object (its first
`MAX_ERRORS_PER_OBJECT`, then how many more). The format checks are the ones the Kubernetes
API server applies to names, labels and ports (`kube_limits`). Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Final

from kontinuum.control.kube_limits import (
    dns1035_label,
    dns_label,
    dns_subdomain,
    label_value,
    qualified_name,
    shown,
)
from kontinuum.control.model import ConfigError, PortProtocol

__all__ = [  # the name and label formats are Kubernetes' (kube_limits), read from here too
    "PROTOCOLS",
    "Document",
    "ObjectReader",
    "dns1035_label",
    "dns_label",
    "dns_subdomain",
    "iana_port_name",
    "label_value",
    "port_number",
    "type_name",
]

_IANA_SVC_NAME: Final = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
PROTOCOLS: Final[tuple[PortProtocol, ...]] = ("TCP", "UDP", "SCTP")
# An object reports its first errors, then how many more it has: enough to fix it, and
# bounded whatever its input holds. A message is cut where it would echo a huge value.
MAX_ERRORS_PER_OBJECT: Final = 100
MAX_MESSAGE: Final = 1000


@dataclass(frozen=True, slots=True)
class Document:
    """One parsed YAML document and where it came from (`index` counts from 1 in its file)."""

    file: str
    body: object
    index: int = 1


def type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "mapping"
    if isinstance(value, list):
        return "list"
    if isinstance(value, date):
        return "timestamp"
    return type(value).__name__


def port_number(value: int) -> str | None:
    return None if 1 <= value <= 65535 else f"must be between 1 and 65535, got {value}"


class ObjectReader:
    """Reads one object's fields, recording an error for each problem under its field path."""

    def __init__(self, doc: Document, kind: str, namespace: str, name: str) -> None:
        self.doc = doc
        self.kind, self.namespace, self.name = kind, namespace, name
        self.errors: list[ConfigError] = []
        self._more = 0  # errors past MAX_ERRORS_PER_OBJECT, counted only
        # Errors name the object as it is, unless it could not be valid (huge, or not one line).
        self._shown = (shown(kind, 64), shown(namespace, 64), shown(name))

    def error(self, path: str, message: str) -> None:
        if len(self.errors) >= MAX_ERRORS_PER_OBJECT:
            self._more += 1
            path = ""
            message = (
                f"and {self._more} more error(s): an object's first {MAX_ERRORS_PER_OBJECT} "
                "are listed"
            )
            del self.errors[MAX_ERRORS_PER_OBJECT:]
        elif len(message) > MAX_MESSAGE:
            message = f"{message[:MAX_MESSAGE]}... ({len(message)} characters)"
        self.errors.append(
            ConfigError(
                file=self.doc.file,
                message=message,
                kind=self._shown[0],
                namespace=self._shown[1],
                name=self._shown[2],
                field=path,
                document=self.doc.index,
            )
        )

    def _get(self, m: dict[str, object], key: str, path: str, required: bool) -> object:
        value = m.get(key)
        if value is None and required:
            self.error(path, "required")
        return value

    def mapping(
        self, m: dict[str, object], key: str, path: str, required: bool = False
    ) -> dict[str, object]:
        value = self._get(m, key, path, required)
        if value is None:
            return {}
        if isinstance(value, dict):
            return value
        self.error(path, f"must be a mapping, got {type_name(value)}")
        return {}

    def items(
        self, m: dict[str, object], key: str, path: str, required: bool = False
    ) -> Iterator[tuple[str, dict[str, object]]]:
        """The (path, mapping) of each element of a list of mappings."""
        value = self._get(m, key, path, required)
        if value is None:
            return
        if not isinstance(value, list):
            self.error(path, f"must be a list, got {type_name(value)}")
            return
        for i, item in enumerate(value):
            if isinstance(item, dict):
                yield f"{path}[{i}]", item
            else:
                self.error(f"{path}[{i}]", f"must be a mapping, got {type_name(item)}")

    def string(
        self,
        m: dict[str, object],
        key: str,
        path: str,
        required: bool = False,
        check: Callable[[str], str | None] | None = None,
    ) -> str | None:
        value = self._get(m, key, path, required)
        if value is None:
            return None
        if not isinstance(value, str):
            self.error(path, f"must be a string, got {type_name(value)}")
            return None
        problem = check(value) if check else None
        if problem:
            self.error(path, problem)
            return None
        return value

    def integer(self, m: dict[str, object], key: str, path: str, required: bool = False) -> int:
        """A port number; 0 when absent or invalid (the error is recorded)."""
        value = self._get(m, key, path, required)
        if value is None:
            return 0
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(path, f"must be an integer, got {type_name(value)}")
            return 0
        problem = port_number(value)
        if problem:
            self.error(path, problem)
            return 0
        return value

    def boolean(self, m: dict[str, object], key: str, path: str) -> bool | None:
        value = m.get(key)
        if value is None or isinstance(value, bool):
            return value
        self.error(path, f"must be true or false, got {type_name(value)}")
        return None

    def protocol(self, m: dict[str, object], path: str) -> PortProtocol:
        value = self.string(m, "protocol", f"{path}.protocol") or "TCP"
        for known in PROTOCOLS:
            if value == known:
                return known
        self.error(f"{path}.protocol", f"must be one of TCP, UDP, SCTP, got {value!r}")
        return "TCP"

    def labels(self) -> dict[str, str]:
        """The object's valid labels; `kube_limits.check_object_meta` reports the others."""
        metadata = self.body.get("metadata")
        raw = metadata.get("labels") if isinstance(metadata, dict) else None
        if not isinstance(raw, dict):
            return {}
        return {
            key: value
            for key, value in raw.items()
            if isinstance(key, str)
            and isinstance(value, str)
            and qualified_name(key) is None
            and label_value(value) is None
        }

    def strings(self, m: dict[str, object], key: str, path: str) -> Iterator[tuple[str, str]]:
        """The (path, string) of each element of a required list of strings."""
        value = self._get(m, key, path, required=True)
        if value is None:
            return
        if not isinstance(value, list):
            self.error(path, f"must be a list, got {type_name(value)}")
            return
        for i, item in enumerate(value):
            if isinstance(item, str):
                yield f"{path}[{i}]", item
            else:
                self.error(f"{path}[{i}]", f"must be a string, got {type_name(item)}")

    def created(self) -> datetime | None:
        """`metadata.creationTimestamp` (RFC 3339), as UTC when it names no zone."""
        metadata = self.body.get("metadata")
        assert isinstance(metadata, dict)
        raw = metadata.get("creationTimestamp")
        path = "metadata.creationTimestamp"
        created: datetime | None = None
        if isinstance(raw, datetime):
            created = raw
        elif isinstance(raw, str):
            try:
                created = datetime.fromisoformat(raw)
            except ValueError:
                self.error(
                    path, f"must be an RFC 3339 time such as 2025-01-31T12:00:00Z, got {raw!r}"
                )
        elif raw is not None:
            self.error(path, f"must be an RFC 3339 time, got {type_name(raw)}")
        if created is not None and created.tzinfo is None:
            created = created.replace(tzinfo=UTC)
        return created

    @property
    def body(self) -> dict[str, object]:
        assert isinstance(self.doc.body, dict)
        return self.doc.body


def iana_port_name(value: str) -> str | None:
    if (
        len(value) <= 15
        and _IANA_SVC_NAME.match(value)
        and "--" not in value
        and any(c.isalpha() for c in value)
    ):
        return None
    return (
        "must be a port number or a port name (at most 15 characters: a-z, 0-9 and '-', "
        f"with at least one letter), got {value!r}"
    )
