"""Gateway API route rules (the routing IR) as Envoy routes.

One Envoy `Route` per match of a rule (a rule without matches is one route matching every
request). How each Gateway API field maps:

- Path `Exact` is `path`; `PathPrefix` is `path_separated_prefix` (element-wise, a trailing
  `/` ignored, as Gateway API defines it; `/` is a plain prefix); `RegularExpression` is a
  RE2 `safe_regex`. Headers and query parameters are `HeaderMatcher`s and
  `QueryParameterMatcher`s; a method is a `:method` header match. A gRPC method match is a
  match on the request path `/<service>/<method>`: `Exact` with both the path, with the
  service only the prefix `/<service>/`, with the method only a regular expression; a
  `RegularExpression` service and method each match their whole part of the path (an
  absent one any name).
- Backends are `weighted_clusters` (one backend: a plain `cluster`). A backend that cannot
  be served keeps its share of the weight and that share is answered with HTTP 500 (a
  GRPCRoute's with 503, which gRPC clients read as UNAVAILABLE), as the Gateway API asks;
  so is every request of a rule with no weight left at all.
- `RequestHeaderModifier` / `ResponseHeaderModifier` set (overwrite), add (append) and
  remove headers: a rule's on the `Route`, a backendRef's on that backend's
  `weighted_clusters` entry (a lone backend with filters is a one-entry split), which Envoy
  applies before the route's; `RequestRedirect` is a `redirect`; `URLRewrite` is a prefix
  rewrite, a whole-path rewrite (`regex_rewrite` of `^/.*$`) and `host_rewrite_literal`;
  `RequestMirror` is a `request_mirror_policies` entry.
- `timeouts.request` is the route timeout (0 disables it); `timeouts.backendRequest` is
  each attempt's timeout. `retry` sets the attempts, the status codes to retry (on top of
  the connection failures a sidecar always retries) and the base back-off interval. A
  GRPCRoute's calls have no route timeout but their own deadline (`grpc-timeout`:
  `max_stream_duration.grpc_timeout_header_max` of 0), so a long call or a stream is not
  cut after Envoy's default 15 s.

Precedence between routes of one host follows the Gateway API: an exact path first, then
(kontinuum's choice where the API leaves it open, as Envoy Gateway does) regular
expressions, longest first, then the longest prefix; then a method match, more header
matches, more query parameter matches; then the older route, its namespace/name, rule
order and match order. A regular expression ranks before prefixes because a prefix `/`
would otherwise hide every expression. On an ingress gateway, the routes of a host are first
ordered by their matching hostname, the more specific first (`virtual_hosts`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from envoy.type.v3 import percent_pb2

from kontinuum.control.cross_serving import route_age
from kontinuum.control.route_binding import BoundRoute, BoundRule, ResolvedBackend
from kontinuum.control.routing import (
    GrpcMethodMatch,
    HeaderModifier,
    PathModifier,
    RequestRedirect,
    RouteKind,
    RouteMatch,
    RouteRule,
    URLRewrite,
)
from kontinuum.control.translate import envoy

# The weighted-cluster entry standing for a backend that cannot be served: no cluster has
# this name, and `cluster_not_found_response_code` turns its share into HTTP 500.
INVALID_BACKEND: Final = "kontinuum-invalid-backend"

BackendCluster = Callable[[ResolvedBackend], "str | None"]
"""The Envoy cluster that serves a resolved backend, or None when it cannot be served here."""

_REDIRECT_CODES: Final = {
    301: rc.RedirectAction.MOVED_PERMANENTLY,
    302: rc.RedirectAction.FOUND,
    303: rc.RedirectAction.SEE_OTHER,
    307: rc.RedirectAction.TEMPORARY_REDIRECT,
    308: rc.RedirectAction.PERMANENT_REDIRECT,
}


@dataclass(frozen=True, slots=True)
class RankedRoute:
    """An Envoy route and the key that puts it in Gateway API precedence order."""

    rank: tuple[Any, ...]
    route: Any


def _regex(pattern: str) -> Any:
    return regex_pb2.RegexMatcher(regex=pattern)


def _string_match(value: str, regex: bool) -> Any:
    if regex:
        return string_pb2.StringMatcher(safe_regex=_regex(value))
    return string_pb2.StringMatcher(exact=value)


def _grpc_path(match: GrpcMethodMatch) -> tuple[str, str]:
    """("path" | "prefix" | "regex", value) matching the request path of a gRPC method."""
    if match.type == "RegularExpression":
        # Each expression matches its whole part: grouped, `a|b` cannot spill into the other.
        return "regex", f"/(?:{match.service or '[^/]+'})/(?:{match.method or '[^/]+'})"
    if match.service and match.method:
        return "path", f"/{match.service}/{match.method}"
    if match.service:
        return "prefix", f"/{match.service}/"
    if match.method:
        return "regex", f"/[^/]+/{_re2_literal(match.method)}"
    return "prefix", "/"


def _re2_literal(text: str) -> str:
    return "".join("\\" + c if not (c.isalnum() or c == "_") else c for c in text)


def envoy_match(match: RouteMatch) -> Any:
    result = rc.RouteMatch()
    if match.grpc is not None:
        kind, value = _grpc_path(match.grpc)
        if kind == "path":
            result.path = value
        elif kind == "prefix":
            result.prefix = value
        else:
            result.safe_regex.CopyFrom(_regex(value))
    elif match.path is None or (match.path.type == "PathPrefix" and match.path.value == "/"):
        result.prefix = "/"
    elif match.path.type == "Exact":
        result.path = match.path.value
    elif match.path.type == "PathPrefix":
        trimmed = match.path.value.rstrip("/")
        if trimmed:
            result.path_separated_prefix = trimmed
        else:
            result.prefix = "/"
    else:
        result.safe_regex.CopyFrom(_regex(match.path.value))
    for header in match.headers:
        result.headers.add(
            name=header.name.lower(),
            string_match=_string_match(header.value, header.type == "RegularExpression"),
        )
    if match.method is not None:
        result.headers.add(name=":method", string_match=_string_match(match.method, False))
    for param in match.query_params:
        result.query_parameters.add(
            name=param.name,
            string_match=_string_match(param.value, param.type == "RegularExpression"),
        )
    return result


def match_rank(match: RouteMatch) -> tuple[int, ...]:
    """Smaller sorts first: the Gateway API's precedence of one match (see the module doc)."""
    if match.grpc is not None:
        grpc = match.grpc
        exactness = 0 if grpc.type == "Exact" else 1
        return (
            exactness,
            -len(grpc.service or ""),
            -len(grpc.method or ""),
            -len(match.headers),
            -len(match.query_params),
        )
    path = match.path
    if path is None:
        kind, length = 2, 1
    else:
        kind = {"Exact": 0, "RegularExpression": 1, "PathPrefix": 2}[path.type]
        length = (
            len(path.value.rstrip("/") or "/") if path.type == "PathPrefix" else len(path.value)
        )
    return (
        kind,
        -length,
        0 if match.method is not None else 1,
        -len(match.headers),
        -len(match.query_params),
    )


def _headers_to_add(headers: Sequence[tuple[str, str]], append: bool) -> list[Any]:
    action = (
        base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD
        if append
        else base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
    )
    return [
        base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key=name.lower(), value=value), append_action=action
        )
        for name, value in headers
    ]


def _apply_header_modifier(route: Any, modifier: HeaderModifier) -> None:
    """On a `Route` (a rule's filter) or a `ClusterWeight` (a backendRef's): same fields."""
    options = [*_headers_to_add(modifier.set, False), *_headers_to_add(modifier.add, True)]
    removed = [name.lower() for name in modifier.remove]
    if modifier.response:
        route.response_headers_to_add.extend(options)
        route.response_headers_to_remove.extend(removed)
    else:
        route.request_headers_to_add.extend(options)
        route.request_headers_to_remove.extend(removed)


def _redirect(redirect: RequestRedirect, match: RouteMatch) -> Any:
    action = rc.RedirectAction(response_code=_REDIRECT_CODES[redirect.status_code])
    if redirect.scheme is not None:
        action.scheme_redirect = redirect.scheme
    if redirect.hostname is not None:
        action.host_redirect = redirect.hostname
    if redirect.port is not None:
        action.port_redirect = redirect.port
    if redirect.path is not None:
        _set_path(action, redirect.path, match)
    return action


def _set_path(message: Any, path: PathModifier, match: RouteMatch) -> None:
    """A redirect's or rewrite's new path: the whole path, or the matched prefix replaced."""
    if path.type == "ReplaceFullPath":
        if isinstance(message, rc.RedirectAction):
            message.path_redirect = path.value
        else:
            message.regex_rewrite.pattern.regex = "^/.*$"
            message.regex_rewrite.substitution = path.value
        return
    prefix = match.path.value.rstrip("/") if match.path is not None else ""
    replacement = path.value.rstrip("/")
    rewrite = message.regex_rewrite
    if not prefix:  # the prefix "/": the new prefix goes in front of the whole path
        rewrite.pattern.regex, rewrite.substitution = "^/", replacement + "/"
    elif not replacement:  # "/foo/x" -> "/x" and "/foo" -> "/"
        rewrite.pattern.regex, rewrite.substitution = f"^{_re2_literal(prefix)}/?", "/"
    else:  # element-wise: "/foo/x" -> "/bar/x" and "/foo" -> "/bar"
        rewrite.pattern.regex = f"^{_re2_literal(prefix)}(/|$)"
        rewrite.substitution = replacement + "\\1"


def _percent(value: float | None) -> Any:
    fraction = base_pb2.RuntimeFractionalPercent()
    fraction.default_value.numerator = round((100.0 if value is None else value) * 10_000)
    fraction.default_value.denominator = percent_pb2.FractionalPercent.MILLION
    return fraction


def _backends(action: Any, bound: BoundRule, clusters: BackendCluster) -> bool:
    """Fill the action's clusters; False when no request can be served."""
    entries: list[tuple[ResolvedBackend | None, int, str | None]] = [
        (b, b.weight, clusters(b)) for b in bound.backends if b.weight > 0
    ]
    if bound.invalid_weight > 0:
        entries.append((None, bound.invalid_weight, None))
    if not entries or all(cluster is None for _, _, cluster in entries):
        return False
    first, _, first_cluster = entries[0]
    if len(entries) == 1 and (first is None or not first.ref.filters):
        action.cluster = first_cluster
        return True
    # A backend's own header modifiers go on its weighted-cluster entry (a lone backend with
    # filters is a one-entry split), so Envoy applies them to the requests sent to it only.
    for backend, weight, cluster in entries:
        entry = action.weighted_clusters.clusters.add(name=cluster or INVALID_BACKEND)
        entry.weight.value = weight
        for modifier in backend.ref.filters if backend else ():
            if isinstance(modifier, HeaderModifier):
                _apply_header_modifier(entry, modifier)
    return True


def _seconds(value: float) -> Any:
    return envoy.duration(timedelta(seconds=value))


def _retry_policy(rule: RouteRule) -> Any | None:
    """The rule's retries on top of a sidecar's connection-failure retries, if it sets any."""
    retry = rule.retry
    backend_timeout = rule.timeouts.backend_request if rule.timeouts else None
    if retry is None and backend_timeout is None:
        return None
    policy = envoy.default_retry_policy()
    if retry is not None:
        if retry.attempts is not None:
            policy.num_retries.value = retry.attempts
        if retry.codes:
            policy.retry_on += ",retriable-status-codes"
            policy.retriable_status_codes.extend(retry.codes)
        if retry.backoff is not None and retry.backoff > 0:
            policy.retry_back_off.base_interval.CopyFrom(_seconds(retry.backoff))
    if backend_timeout:
        policy.per_try_timeout.CopyFrom(_seconds(backend_timeout))
    return policy


def envoy_route(
    name: str,
    kind: RouteKind,
    bound: BoundRule,
    match: RouteMatch,
    clusters: BackendCluster,
    *,
    retries: bool = True,
) -> Any:
    """The Envoy route of one match of one rule (see the module doc)."""
    rule = bound.rule
    route = rc.Route(name=name, match=envoy_match(match))
    unavailable = 503 if kind == "GRPCRoute" else 500
    redirect = next((f for f in rule.filters if isinstance(f, RequestRedirect)), None)
    for modifier in rule.filters:
        if isinstance(modifier, HeaderModifier):
            _apply_header_modifier(route, modifier)
    if redirect is not None and not bound.invalid_filters:
        route.redirect.CopyFrom(_redirect(redirect, match))
        return route
    if bound.invalid_backends or not _backends(route.route, bound, clusters):
        route.ClearField("route")
        route.direct_response.status = unavailable
        return route
    action = route.route
    action.cluster_not_found_response_code = (
        rc.RouteAction.SERVICE_UNAVAILABLE
        if kind == "GRPCRoute"
        else rc.RouteAction.INTERNAL_SERVER_ERROR
    )
    for rewrite in (f for f in rule.filters if isinstance(f, URLRewrite)):
        if rewrite.hostname is not None:
            action.host_rewrite_literal = rewrite.hostname
        if rewrite.path is not None:
            _set_path(action, rewrite.path, match)
    for mirror in bound.mirrors:
        cluster = clusters(mirror.backend)
        if cluster is not None:
            action.request_mirror_policies.add(
                cluster=cluster, runtime_fraction=_percent(mirror.percent)
            )
    if kind == "GRPCRoute":
        # A call lasts as long as its deadline (`grpc-timeout`) says, a stream included:
        # Envoy's default route timeout (15 s) would cut every longer one.
        action.timeout.CopyFrom(_seconds(0))
        action.max_stream_duration.grpc_timeout_header_max.CopyFrom(_seconds(0))
    timeouts = rule.timeouts
    if timeouts is not None and timeouts.request is not None:
        action.timeout.CopyFrom(_seconds(timeouts.request))
    elif timeouts is not None and timeouts.backend_request and not retries:
        action.timeout.CopyFrom(_seconds(timeouts.backend_request))
    if retries and (policy := _retry_policy(rule)) is not None:
        action.retry_policy.CopyFrom(policy)
    return route


def ranked_routes(
    routes: Sequence[BoundRoute],
    clusters: BackendCluster,
    *,
    retries: bool = True,
    hostname_rank: Callable[[BoundRoute], tuple[int, ...]] | None = None,
    built: dict[tuple[str, str], Any] | None = None,
) -> list[Any]:
    """Every rule and match of `routes` as Envoy routes, in Gateway API precedence order;
    `hostname_rank` (smaller first) orders the routes by their matching hostname before
    their matches are compared. `built` keeps the Envoy routes made, for a caller that
    ranks the same routes again (one virtual host per hostname)."""
    built = {} if built is None else built
    ranked: list[RankedRoute] = []
    for bound in routes:
        route = bound.route
        host = hostname_rank(bound) if hostname_rank is not None else ()
        age = route_age(route)
        for r, rule in enumerate(bound.rules):
            matches = rule.rule.matches or (RouteMatch(),)
            for m, match in enumerate(matches):
                name = f"{route.namespace}/{route.name}/rule/{r}/match/{m}"
                rank = (host, match_rank(match), *age, r, m)
                envoy_rule = built.get((route.kind, name))
                if envoy_rule is None:
                    envoy_rule = envoy_route(
                        name, route.kind, rule, match, clusters, retries=retries
                    )
                    built[(route.kind, name)] = envoy_rule
                ranked.append(RankedRoute(rank, envoy_rule))
    return [r.route for r in sorted(ranked, key=lambda r: r.rank)]
