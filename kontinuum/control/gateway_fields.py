"""Reading Gateway API fields: the formats and limits its CRDs state. Pure: no I/O.

`ObjectReader` knows Kubernetes core fields; the Gateway API adds its own formats
(hostnames, header names, GEP-2257 durations, API groups and kinds) and bounded lists;
`regex_problem` says whether Envoy's RE2 can use a regular expression. These
readers record a `ConfigError` under the field's path, as `ObjectReader` does, for
`gateway_routes` and `gateway_api`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Final, TypeVar

from kontinuum.control.kube_limits import within
from kontinuum.control.objects import ObjectReader, dns_subdomain, type_name

_HOSTNAME: Final = re.compile(
    r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_HEADER_NAME: Final = re.compile(r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$")
_KIND: Final = re.compile(r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$")
_DURATION: Final = re.compile(r"^([0-9]{1,5}(h|m|s|ms)){1,4}$")
_DURATION_PART: Final = re.compile(r"([0-9]{1,5})(ms|h|m|s)")
_UNIT_MS: Final = {"h": 3_600_000, "m": 60_000, "s": 1000, "ms": 1}
_QUANTIFIER_BRACES: Final = re.compile(r"\{[0-9]+(,[0-9]*)?\}|\{,[0-9]+\}")
# What follows "(?" in constructs Python accepts and RE2 refuses.
_RE2_LACKS: Final = (
    ("<=", "a lookbehind"),
    ("<!", "a negative lookbehind"),
    ("=", "a lookahead"),
    ("!", "a negative lookahead"),
    (">", "an atomic group"),
    ("(", "a conditional"),
    ("#", "a comment"),
    ("P=", "a backreference"),
)

T = TypeVar("T", bound=str)
Check = Callable[[str], str | None]


# --- field formats, as the Gateway API CRDs state them ---------------------------------------


def hostname(value: str) -> str | None:
    if len(value) <= 253 and _HOSTNAME.match(value):
        return None
    return (
        "must be a hostname (lowercase DNS labels joined by '.', optionally starting with "
        f"'*.'), got {value!r}"
    )


def precise_hostname(value: str) -> str | None:
    if not value.startswith("*") and hostname(value) is None:
        return None
    return f"must be a hostname (lowercase DNS labels joined by '.'), got {value!r}"


def header_name(value: str) -> str | None:
    if len(value) <= 256 and _HEADER_NAME.match(value):
        return None
    return f"must be an HTTP header name (letters, digits and !#$%&'*+-.^_`|~), got {value!r}"


def api_group(value: str) -> str | None:
    return None if value == "" else dns_subdomain(value)


def kind_name(value: str) -> str | None:
    if len(value) <= 63 and _KIND.match(value):
        return None
    return f"must be a kind (a letter, then letters, digits and '-'), got {value!r}"


def length(most: int, least: int = 1) -> Check:
    def check(value: str) -> str | None:
        if least <= len(value) <= most:
            return None
        return f"must be {least} to {most} characters long, got {len(value)}"

    return check


def parse_duration(value: str) -> float | None:
    """A Gateway API Duration (GEP-2257: `10s`, `500ms`, `1h30m`) in seconds; None if not one."""
    if not _DURATION.match(value):
        return None
    return sum(int(n) * _UNIT_MS[unit] for n, unit in _DURATION_PART.findall(value)) / 1000


def regex_problem(pattern: str) -> str | None:
    """Why Envoy could not match with `pattern`, or None.

    It must compile with Python's `re` and use nothing RE2 (Envoy's dialect) lacks; the scan
    walks the pattern once, skipping escapes and character classes.
    """
    try:
        re.compile(pattern)
    except re.error as exc:
        return f"not a valid regular expression: {exc}"
    lacks = "which RE2 (Envoy's regular expression dialect) lacks"
    i, in_class = 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            escaped = pattern[i + 1 : i + 2]
            if not in_class and escaped in tuple("123456789"):
                return f"uses \\{escaped} (a backreference), {lacks}"
            if escaped == "Z":
                return f"uses \\Z, {lacks}: use $"
            i += 2
        elif in_class:
            in_class = c != "]"
            i += 1
        elif c == "[":
            i += 1 + (pattern[i + 1 : i + 2] == "^")
            i += pattern[i : i + 1] == "]"  # a leading ] is a literal
            in_class = True
        elif c == "(" and pattern.startswith("?", i + 1):
            rest = pattern[i + 2 :]
            for prefix, what in _RE2_LACKS:
                if rest.startswith(prefix):
                    return f"uses (?{prefix} ({what}), {lacks}"
            flags = re.match(r"[a-zA-Z-]*", rest)
            named = rest.startswith("P<")  # a named group, which RE2 has
            bad = sorted(set(flags.group() if flags and not named else "") - set("ims-"))
            if bad:
                return f"uses the inline flag {bad[0]}, {lacks} (it has i, m and s)"
            i += 2
        elif c in "*+?" or (c == "{" and _QUANTIFIER_BRACES.match(pattern, i)):
            found = _QUANTIFIER_BRACES.match(pattern, i) if c == "{" else None
            end = found.end() if found else i + 1
            if pattern[end : end + 1] == "+":
                return f"uses {pattern[i : end + 1]} (a possessive quantifier), {lacks}"
            i = end + (pattern[end : end + 1] == "?")
        else:
            i += 1
    return None


# --- readers for what ObjectReader does not know ---------------------------------------------


def limited(
    obj: ObjectReader,
    m: dict[str, object],
    key: str,
    path: str,
    most: int,
    required: bool = False,
) -> list[tuple[str, dict[str, object]]]:
    """The (path, mapping) of each entry of a list of mappings that holds at most `most`
    (past that, none: as the API server, one error for the list)."""
    if not within(obj, m, key, path, most):
        return []
    entries = list(obj.items(m, key, path, required))
    raw = m.get(key)
    if isinstance(raw, list) and required and not raw:
        obj.error(path, "must hold at least one entry")
    return entries


def texts(
    obj: ObjectReader, m: dict[str, object], key: str, path: str, most: int, check: Check
) -> list[tuple[str, str]]:
    """The (path, string) of each valid entry of an optional list of strings."""
    if m.get(key) is None or not within(obj, m, key, path, most):
        return []
    found: list[tuple[str, str]] = []
    items = list(obj.strings(m, key, path))
    for item_path, value in items:
        if problem := check(value):
            obj.error(item_path, problem)
        else:
            found.append((item_path, value))
    return found


def number(
    obj: ObjectReader,
    m: dict[str, object],
    key: str,
    path: str,
    least: int,
    most: int,
    required: bool = False,
) -> int | None:
    """An integer in [least, most]; None when absent or invalid (the error is recorded)."""
    value = m.get(key)
    if value is None:
        if required:
            obj.error(path, "required")
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        obj.error(path, f"must be an integer, got {type_name(value)}")
        return None
    if not least <= value <= most:
        obj.error(path, f"must be between {least} and {most}, got {value}")
        return None
    return value


def choice(
    obj: ObjectReader,
    m: dict[str, object],
    key: str,
    path: str,
    choices: tuple[T, ...],
    required: bool = False,
) -> T | None:
    value = obj.string(m, key, path, required)
    if value is None:
        return None
    for option in choices:
        if value == option:
            return option  # typed as the choices are (a Literal), unlike `value`
    obj.error(path, f"must be one of {', '.join(choices)}, got {value!r}")
    return None


def duration(obj: ObjectReader, m: dict[str, object], key: str, path: str) -> float | None:
    """A GEP-2257 duration in seconds (0: disabled); None when absent or invalid."""
    raw = obj.string(m, key, path)
    if raw is None:
        return None
    seconds = parse_duration(raw)
    if seconds is None:
        obj.error(path, f"must be a duration such as 10s, 500ms or 1h30m (GEP-2257), got {raw!r}")
    return seconds


def object_meta(obj: ObjectReader) -> tuple[datetime | None, int]:
    """`metadata.creationTimestamp` (as UTC when it has no zone) and `metadata.generation`."""
    created = obj.created()
    metadata = obj.body.get("metadata")
    assert isinstance(metadata, dict)
    generation = number(obj, metadata, "generation", "metadata.generation", 0, 2**63 - 1)
    return created, generation or 0
