"""Kubernetes' own formats and limits on the objects kontinuum reads, as its API server
enforces them. Pure: no I/O.

From `k8s.io/apimachinery` (`pkg/util/validation`, `pkg/api/validation/objectmeta.go`) and
`k8s.io/kubernetes` (`pkg/apis/discovery/validation`):

- `metadata.name`: a DNS-1123 subdomain (at most 253 characters) unless the kind says
  otherwise; a Service's a DNS-1035 label (at most 63, starting with a letter); `namespace`
  a DNS-1123 label (at most 63);
- label keys, and annotation keys (in lowercase): an optional DNS subdomain prefix of at most
  253 characters and `/`, then a name of at most 63 letters, digits, `-`, `_` and `.` that
  starts and ends with a letter or digit; label values the same as that name, or empty;
- annotations: keys and values together at most 256 KiB (262,144 bytes of UTF-8);
- an EndpointSlice: at most 1,000 endpoints, each with 1 to 100 addresses, and at most
  20,000 ports (the API reference still says 100: the API server has accepted 20,000 since
  Kubernetes 1.21, kubernetes/kubernetes#99795).

As the API server does, a list past its limit is one error and its entries are not read, so
reading an object costs what its limits allow, whatever its input holds.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:  # the reader imports this module's checks
    from kontinuum.control.objects import ObjectReader

MAX_SUBDOMAIN: Final = 253
MAX_LABEL: Final = 63
MAX_ANNOTATIONS_BYTES: Final = 256 * 1024
MAX_ENDPOINTS_PER_SLICE: Final = 1000
MAX_ADDRESSES_PER_ENDPOINT: Final = 100
MAX_PORTS_PER_SLICE: Final = 20_000
_MAX_KEY: Final = MAX_SUBDOMAIN + 1 + MAX_LABEL

_DNS1123_LABEL: Final = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1035_LABEL: Final = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_QUALIFIED_NAME: Final = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE_FORMAT: Final = (
    "letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
)


def shown(text: str, most: int = MAX_SUBDOMAIN) -> str:
    """`text` as an error line may show it: non-printable characters escaped (one line
    stays one line) and what is past `most` characters cut, saying how long it was."""
    cut = text[:most]
    if not cut.isprintable():
        cut = "".join(c if c.isprintable() else repr(c)[1:-1] for c in cut)
    return cut if len(text) <= most else f"{cut}... ({len(text)} characters)"


def _too_long(what: str, most: int, value: str) -> str:
    return f"must be {what} of at most {most} characters, got {len(value)} characters"


def dns_label(value: str) -> str | None:
    if len(value) > MAX_LABEL:
        return _too_long("a DNS label", MAX_LABEL, value)
    if _DNS1123_LABEL.match(value):
        return None
    return f"must be a DNS label (a-z, 0-9 and '-', at most 63 characters), got {value!r}"


def dns1035_label(value: str) -> str | None:
    if len(value) > MAX_LABEL:
        return _too_long("a DNS label", MAX_LABEL, value)
    if _DNS1035_LABEL.match(value):
        return None
    return (
        "must be a DNS label starting with a letter (a-z, 0-9 and '-', at most 63 "
        f"characters), got {value!r}"
    )


def dns_subdomain(value: str) -> str | None:
    if len(value) > MAX_SUBDOMAIN:
        return _too_long("a DNS subdomain", MAX_SUBDOMAIN, value)
    if value and all(_DNS1123_LABEL.match(p) for p in value.split(".")):
        return None
    return f"must be a DNS subdomain (DNS labels joined by '.'), got {value!r}"


def label_value(value: str) -> str | None:
    if len(value) > MAX_LABEL:
        return _too_long("a label value", MAX_LABEL, value)
    if not value or _QUALIFIED_NAME.match(value):
        return None
    return f"must be a label value (at most 63 characters: {_LABEL_VALUE_FORMAT}), got {value!r}"


def qualified_name(value: str) -> str | None:
    """The format of label and annotation keys (and of `appProtocol`): `[prefix/]name`."""
    prefix, slash, name = value.rpartition("/")
    if slash and not prefix:
        return f"the prefix before '/' must not be empty, got {shown(value)!r}"
    if "/" in prefix:
        return f"must hold at most one '/' (prefix/name), got {shown(value)!r}"
    if len(prefix) > MAX_SUBDOMAIN:
        return f"the prefix before '/' must be at most 253 characters, got {len(prefix)}"
    if prefix and (problem := dns_subdomain(prefix)):
        return f"the prefix before '/' {problem}"
    if len(name) > MAX_LABEL:
        return f"the name after any 'prefix/' must be at most 63 characters, got {len(name)}"
    if not _QUALIFIED_NAME.match(name):
        return (
            f"must be a name of {_LABEL_VALUE_FORMAT}, after an optional DNS subdomain and '/' "
            f"(such as example.com/my-name), got {shown(value)!r}"
        )
    return None


def within(
    obj: ObjectReader,
    m: dict[str, object],
    key: str,
    path: str,
    most: int,
    what: str = "entries",
    hint: str = "",
) -> bool:
    """Whether `m[key]`, when a list, holds at most `most` entries; if not, the error is
    recorded and the caller reads none of them."""
    value = m.get(key)
    if isinstance(value, list) and len(value) > most:
        obj.error(path, f"must hold at most {most} {what}, got {len(value)}{hint}")
        return False
    return True


def check_object_meta(obj: ObjectReader) -> None:
    """Record what is wrong with an object's labels and annotations (its name and namespace
    are the header's): the formats of their keys and values, and the annotations' size."""
    metadata = obj.body.get("metadata")
    if not isinstance(metadata, dict):
        return  # reported by the header
    labels = obj.mapping(metadata, "labels", "metadata.labels")
    for key in labels:
        path = f"metadata.labels[{_key_shown(key)}]"
        if problem := _key_problem(key, lowercase=False):
            obj.error(path, problem)
        obj.string(labels, key, path, check=label_value)  # null: empty, as kubectl reads it
    annotations = obj.mapping(metadata, "annotations", "metadata.annotations")
    size = 0
    for key in annotations:
        path = f"metadata.annotations[{_key_shown(key)}]"
        if problem := _key_problem(key, lowercase=True):
            obj.error(path, problem)
        value = obj.string(annotations, key, path)
        if isinstance(key, str) and value is not None:
            size += _utf8_length(key) + _utf8_length(value)
    if size > MAX_ANNOTATIONS_BYTES:
        obj.error(
            "metadata.annotations",
            f"keys and values must total at most {MAX_ANNOTATIONS_BYTES} bytes (256 KiB), "
            f"got {size}",
        )


def _key_shown(key: object) -> str:
    return shown(key if isinstance(key, str) else repr(key), _MAX_KEY)


def _key_problem(key: object, lowercase: bool) -> str | None:
    if not isinstance(key, str):
        return "the key must be a string (quote it)"
    return qualified_name(key.lower() if lowercase else key)


def _utf8_length(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
