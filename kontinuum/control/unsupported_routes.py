"""What of a route kontinuum cannot serve: the problems that make a route's parents
`Accepted: False` with reason `UnsupportedValue` (`route_binding`).

- a regular expression that Python's `re` rejects or that uses what RE2 (Envoy's dialect)
  lacks (`gateway_fields.regex_problem`);
- a filter kontinuum does not implement (`CORS`, `ExternalAuth`, ...);
- a backendRef filter other than `RequestHeaderModifier` / `ResponseHeaderModifier`.
"""

from __future__ import annotations

from collections.abc import Iterable

from kontinuum.control.gateway_fields import regex_problem
from kontinuum.control.routing import Filter, HeaderModifier, Route, UnsupportedFilter


def _regexes(route: Route) -> Iterable[tuple[str, str]]:
    """The (field path, pattern) of every regular expression of a route."""
    for i, rule in enumerate(route.rules):
        for j, match in enumerate(rule.matches):
            at = f"spec.rules[{i}].matches[{j}]"
            if match.path and match.path.type == "RegularExpression":
                yield f"{at}.path.value", match.path.value
            for k, header in enumerate(match.headers):
                if header.type == "RegularExpression":
                    yield f"{at}.headers[{k}].value", header.value
            for k, param in enumerate(match.query_params):
                if param.type == "RegularExpression":
                    yield f"{at}.queryParams[{k}].value", param.value
            grpc = match.grpc
            if grpc and grpc.type == "RegularExpression":
                for part, value in (("service", grpc.service), ("method", grpc.method)):
                    if value is not None:
                        yield f"{at}.method.{part}", value


def _filter_type(f: Filter) -> str:
    """The Gateway API type of a filter other than a header modifier (classes are so named)."""
    return f.type if isinstance(f, UnsupportedFilter) else type(f).__name__


def unsupported(route: Route) -> list[str]:
    """Every reason kontinuum cannot serve `route`, each with its field path (none: it can)."""
    found = [f"{at}: {problem}" for at, v in _regexes(route) if (problem := regex_problem(v))]
    for i, rule in enumerate(route.rules):
        for j, f in enumerate(rule.filters):
            if isinstance(f, UnsupportedFilter):
                found.append(f"spec.rules[{i}].filters[{j}]: {f.type} filters are not supported")
        for j, backend in enumerate(rule.backends):
            for k, f in enumerate(backend.filters):
                if not isinstance(f, HeaderModifier):
                    found.append(
                        f"spec.rules[{i}].backendRefs[{j}].filters[{k}]: a backendRef's filters "
                        f"may only be RequestHeaderModifier or ResponseHeaderModifier, not "
                        f"{_filter_type(f)}"
                    )
    return found
