"""HTTPRoute and GRPCRoute objects read into the routing IR (see `gateway_api`). Pure: no I/O.

Every rule of the CRDs' schema is checked here, with the CRDs' defaults filled in: an
HTTPRoute without rules gets one rule matching the path prefix `/`, a rule without matches
matches that prefix (an HTTPRoute) or everything (a GRPCRoute), a backendRef's group is the
core group and its weight 1, a redirect's status 302. Of several header matches whose names
differ only in case the first counts, as the API says.
"""

from __future__ import annotations

import re
from typing import Final

from kontinuum.control.gateway_fields import (
    api_group,
    choice,
    duration,
    header_name,
    hostname,
    kind_name,
    length,
    limited,
    number,
    object_meta,
    precise_hostname,
    texts,
)
from kontinuum.control.kube_limits import check_object_meta
from kontinuum.control.objects import ObjectReader, dns_label, dns_subdomain, type_name
from kontinuum.control.routing import (
    CORE_GROUP,
    GATEWAY_GROUP,
    BackendRef,
    ExtensionRef,
    Filter,
    GrpcMethodMatch,
    HeaderMatch,
    HeaderModifier,
    MatchType,
    ParentRef,
    PathMatch,
    PathModifier,
    PathModifierType,
    PathType,
    QueryParamMatch,
    RedirectCode,
    RequestMirror,
    RequestRedirect,
    Retry,
    Route,
    RouteKind,
    RouteMatch,
    RouteRule,
    Timeouts,
    UnsupportedFilter,
    URLRewrite,
)

PATH_TYPES: Final[tuple[PathType, ...]] = ("Exact", "PathPrefix", "RegularExpression")
MATCH_TYPES: Final[tuple[MatchType, ...]] = ("Exact", "RegularExpression")
MODIFIER_TYPES: Final[tuple[PathModifierType, ...]] = ("ReplaceFullPath", "ReplacePrefixMatch")
METHODS: Final = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
SCHEMES: Final = ("http", "https")
REDIRECT_CODES: Final[tuple[RedirectCode, ...]] = (301, 302, 303, 307, 308)
HTTP_FILTERS: Final = {
    "RequestHeaderModifier": "requestHeaderModifier",
    "ResponseHeaderModifier": "responseHeaderModifier",
    "RequestMirror": "requestMirror",
    "RequestRedirect": "requestRedirect",
    "URLRewrite": "urlRewrite",
    "ExtensionRef": "extensionRef",
    "CORS": "cors",
    "ExternalAuth": "externalAuth",
}
GRPC_FILTERS: Final = {
    k: v
    for k, v in HTTP_FILTERS.items()
    if k in ("RequestHeaderModifier", "ResponseHeaderModifier", "RequestMirror", "ExtensionRef")
}
_ONCE: Final = ("RequestHeaderModifier", "ResponseHeaderModifier", "RequestRedirect", "URLRewrite")
MAX_MATCHES: Final = {"HTTPRoute": 64, "GRPCRoute": 8}
MAX_ROUTE_MATCHES: Final = 128
_PATH_CHARS: Final = re.compile(r"^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|%[0-9a-fA-F]{2})+$")
_GRPC_SERVICE: Final = re.compile(r"^\.?[a-zA-Z_][a-zA-Z_0-9]*(\.[a-zA-Z_][a-zA-Z_0-9]*)*$")
_GRPC_METHOD: Final = re.compile(r"^[A-Za-z_][A-Za-z_0-9]*$")


def _path_value(value: str, kind: str) -> str | None:
    """The HTTPPathMatch rules for Exact and PathPrefix values (the CRD's messages)."""
    problem = None
    if not value.startswith("/"):
        problem = "must be an absolute path starting with '/'"
    elif bad := next((s for s in ("//", "/./", "/../", "%2f", "%2F", "#") if s in value), None):
        problem = f"must not contain {bad!r}"
    elif bad := next((s for s in ("/..", "/.") if value.endswith(s)), None):
        problem = f"must not end with {bad!r}"
    elif not _PATH_CHARS.match(value):
        problem = "must only contain path characters (letters, digits, -._~!$&'()*+,;=:@/, %XX)"
    return f"{problem} for a {kind} match, got {value!r}" if problem else None


# --- references ------------------------------------------------------------------------------


def _backend(
    obj: ObjectReader, path: str, raw: dict[str, object], namespace: str, kind: RouteKind | None
) -> BackendRef:
    """A backendRef (with `kind`: a route's, with weight and filters) or a mirror's reference."""
    group = obj.string(raw, "group", f"{path}.group", check=api_group)
    ref_kind = obj.string(raw, "kind", f"{path}.kind", check=kind_name)
    name = obj.string(raw, "name", f"{path}.name", required=True, check=length(253)) or ""
    ns = obj.string(raw, "namespace", f"{path}.namespace", check=dns_label)
    port = number(obj, raw, "port", f"{path}.port", 1, 65535)
    group = CORE_GROUP if group is None else group
    ref_kind = ref_kind or "Service"
    if (group, ref_kind) == (CORE_GROUP, "Service") and raw.get("port") is None:
        obj.error(f"{path}.port", "required for a Service backend")
    weight, filters = 1, tuple[Filter, ...]()
    if kind is not None:
        found = number(obj, raw, "weight", f"{path}.weight", 0, 1_000_000)
        weight = 1 if found is None else found
        filters = _filters(obj, raw, f"{path}.filters", kind, namespace)
    return BackendRef(ref_kind, ns or namespace, name, port, weight, group, filters)


def _parents(obj: ObjectReader, spec: dict[str, object]) -> tuple[ParentRef, ...]:
    parents: list[ParentRef] = []
    same: dict[tuple[str, str, str, str], list[tuple[str, ParentRef]]] = {}
    for path, raw in limited(obj, spec, "parentRefs", "spec.parentRefs", 32):
        group = obj.string(raw, "group", f"{path}.group", check=api_group)
        kind = obj.string(raw, "kind", f"{path}.kind", check=kind_name) or "Gateway"
        ns = obj.string(raw, "namespace", f"{path}.namespace", check=dns_label) or obj.namespace
        name = obj.string(raw, "name", f"{path}.name", required=True, check=length(253)) or ""
        section = obj.string(raw, "sectionName", f"{path}.sectionName", check=dns_subdomain)
        port = number(obj, raw, "port", f"{path}.port", 1, 65535)
        group = GATEWAY_GROUP if group is None else group
        parent = ParentRef(kind, ns, name, port, section, group)
        # Distinct parentRefs: those to one parent set the same optional fields, differently.
        for other_path, other in same.setdefault((group, kind, ns, name), []):
            if (parent.section_name is None, parent.port is None) != (
                other.section_name is None,
                other.port is None,
            ):
                obj.error(
                    path,
                    f"refers to the parent of {other_path}: both must set sectionName "
                    "or port, the same ones",
                )
            elif (parent.section_name, parent.port) == (other.section_name, other.port):
                obj.error(
                    path,
                    f"refers to the same parent as {other_path}: sectionName or port must differ",
                )
        same[group, kind, ns, name].append((path, parent))
        parents.append(parent)
    return tuple(parents)


# --- matches ---------------------------------------------------------------------------------


def _headers(obj: ObjectReader, m: dict[str, object], path: str) -> tuple[HeaderMatch, ...]:
    found: dict[str, HeaderMatch] = {}
    exact: dict[str, str] = {}
    for entry_path, raw in limited(obj, m, "headers", path, 16):
        type_ = choice(obj, raw, "type", f"{entry_path}.type", MATCH_TYPES) or "Exact"
        name = obj.string(raw, "name", f"{entry_path}.name", required=True, check=header_name)
        value = obj.string(raw, "value", f"{entry_path}.value", required=True, check=length(4096))
        if name is None or value is None:
            continue
        if name in exact:
            obj.error(f"{entry_path}.name", f"duplicate header {name!r} (also {exact[name]})")
        exact.setdefault(name, entry_path)
        # Header names are case-insensitive: the API says only the first of equal names counts.
        found.setdefault(name.lower(), HeaderMatch(name, value, type_))
    return tuple(found.values())


def _path_match(obj: ObjectReader, m: dict[str, object], path: str) -> PathMatch:
    if m.get("path") is None:
        return PathMatch("PathPrefix", "/")
    raw = obj.mapping(m, "path", path)
    type_ = choice(obj, raw, "type", f"{path}.type", PATH_TYPES) or "PathPrefix"
    value = obj.string(raw, "value", f"{path}.value", check=length(1024, 0))
    value = "/" if value is None else value
    if type_ != "RegularExpression" and (problem := _path_value(value, type_)):
        obj.error(f"{path}.value", problem)
    return PathMatch(type_, value)


def _http_match(obj: ObjectReader, path: str, raw: dict[str, object]) -> RouteMatch:
    params: list[QueryParamMatch] = []
    seen: dict[str, str] = {}
    for entry_path, entry in limited(obj, raw, "queryParams", f"{path}.queryParams", 16):
        type_ = choice(obj, entry, "type", f"{entry_path}.type", MATCH_TYPES) or "Exact"
        name = obj.string(entry, "name", f"{entry_path}.name", required=True, check=header_name)
        value = obj.string(entry, "value", f"{entry_path}.value", required=True, check=length(1024))
        if name is not None and name in seen:
            obj.error(
                f"{entry_path}.name", f"duplicate query parameter {name!r} (also {seen[name]})"
            )
        elif name is not None and value is not None:
            seen[name] = entry_path
            params.append(QueryParamMatch(name, value, type_))
    return RouteMatch(
        path=_path_match(obj, raw, f"{path}.path"),
        headers=_headers(obj, raw, f"{path}.headers"),
        query_params=tuple(params),
        method=choice(obj, raw, "method", f"{path}.method", METHODS),
    )


def _grpc_match(obj: ObjectReader, path: str, raw: dict[str, object]) -> RouteMatch:
    method: GrpcMethodMatch | None = None
    if raw.get("method") is not None:
        body = obj.mapping(raw, "method", f"{path}.method")
        type_ = choice(obj, body, "type", f"{path}.method.type", MATCH_TYPES) or "Exact"
        service = obj.string(body, "service", f"{path}.method.service", check=length(1024, 0))
        name = obj.string(body, "method", f"{path}.method.method", check=length(1024, 0))
        if service is None and name is None:
            obj.error(f"{path}.method", "one or both of service and method must be set")
        if type_ == "Exact" and service is not None and not _GRPC_SERVICE.match(service):
            obj.error(f"{path}.method.service", f"must be a gRPC service name, got {service!r}")
        if type_ == "Exact" and name is not None and not _GRPC_METHOD.match(name):
            obj.error(f"{path}.method.method", f"must be a gRPC method name, got {name!r}")
        method = GrpcMethodMatch(service, name, type_)
    return RouteMatch(headers=_headers(obj, raw, f"{path}.headers"), grpc=method)


# --- filters ---------------------------------------------------------------------------------


def _header_modifier(
    obj: ObjectReader, body: dict[str, object], path: str, response: bool
) -> HeaderModifier:
    """One action per header name (case-insensitive), as the API requires."""
    seen: dict[str, str] = {}

    def named(name: str, at: str) -> bool:
        if name.lower() in seen:
            obj.error(
                at, f"header {name!r} already has an action in this filter ({seen[name.lower()]})"
            )
            return False
        seen[name.lower()] = at
        return True

    def headers(key: str) -> tuple[tuple[str, str], ...]:
        found: list[tuple[str, str]] = []
        for entry_path, raw in limited(obj, body, key, f"{path}.{key}", 16):
            name = obj.string(raw, "name", f"{entry_path}.name", required=True, check=header_name)
            value = obj.string(
                raw, "value", f"{entry_path}.value", required=True, check=length(4096)
            )
            if name is not None and named(name, f"{entry_path}.name") and value is not None:
                found.append((name, value))
        return tuple(found)

    set_, add = headers("set"), headers("add")
    remove = tuple(
        name
        for at, name in texts(obj, body, "remove", f"{path}.remove", 16, header_name)
        if named(name, at)
    )
    return HeaderModifier(set_, add, remove, response)


def _path_modifier(obj: ObjectReader, m: dict[str, object], path: str) -> PathModifier | None:
    if m.get("path") is None:
        return None
    body = obj.mapping(m, "path", path)
    type_ = choice(obj, body, "type", f"{path}.type", MODIFIER_TYPES, required=True)
    value: str | None = None
    for option in MODIFIER_TYPES:
        key = option[0].lower() + option[1:]
        found = obj.string(body, key, f"{path}.{key}", check=length(1024, 0))
        if option == type_ and found is None:
            obj.error(f"{path}.{key}", f"required when type is {option}")
        elif found is not None and type_ is not None and option != type_:
            obj.error(f"{path}.{key}", f"must not be set when type is {type_}")
        elif option == type_:
            value = found
    return PathModifier(type_, value) if type_ is not None and value is not None else None


def _mirror(obj: ObjectReader, body: dict[str, object], path: str, namespace: str) -> RequestMirror:
    ref = obj.mapping(body, "backendRef", f"{path}.backendRef", required=True)
    backend = (
        _backend(obj, f"{path}.backendRef", ref, namespace, None)
        if isinstance(body.get("backendRef"), dict)
        else BackendRef("Service", namespace, "")  # the error is recorded: never used
    )
    percent: float | None = number(obj, body, "percent", f"{path}.percent", 0, 100)
    if body.get("fraction") is not None:
        fraction = obj.mapping(body, "fraction", f"{path}.fraction")
        top = number(obj, fraction, "numerator", f"{path}.fraction.numerator", 0, 2**31 - 1, True)
        bottom = number(obj, fraction, "denominator", f"{path}.fraction.denominator", 1, 2**31 - 1)
        bottom = 100 if bottom is None else bottom
        if body.get("percent") is not None:
            obj.error(f"{path}.fraction", "only one of percent or fraction may be set")
        elif top is not None and top > bottom:
            obj.error(f"{path}.fraction.numerator", f"must not exceed the denominator ({bottom})")
        elif top is not None:
            percent = 100 * top / bottom
    return RequestMirror(backend, None if percent is None else float(percent))


def _filter(
    obj: ObjectReader, type_: str, body: dict[str, object], path: str, namespace: str
) -> Filter:
    if type_ in ("RequestHeaderModifier", "ResponseHeaderModifier"):
        return _header_modifier(obj, body, path, response=type_ == "ResponseHeaderModifier")
    if type_ == "RequestMirror":
        return _mirror(obj, body, path, namespace)
    if type_ == "RequestRedirect":
        raw = body.get("statusCode", 302)
        code = next((c for c in REDIRECT_CODES if c == raw and not isinstance(raw, bool)), None)
        if code is None:
            codes = ", ".join(map(str, REDIRECT_CODES))
            obj.error(f"{path}.statusCode", f"must be one of {codes}, got {raw!r}")
        return RequestRedirect(
            scheme=choice(obj, body, "scheme", f"{path}.scheme", SCHEMES),
            hostname=obj.string(body, "hostname", f"{path}.hostname", check=precise_hostname),
            port=number(obj, body, "port", f"{path}.port", 1, 65535),
            path=_path_modifier(obj, body, f"{path}.path"),
            status_code=code or 302,
        )
    if type_ == "URLRewrite":
        return URLRewrite(
            hostname=obj.string(body, "hostname", f"{path}.hostname", check=precise_hostname),
            path=_path_modifier(obj, body, f"{path}.path"),
        )
    if type_ == "ExtensionRef":
        return ExtensionRef(
            group=obj.string(body, "group", f"{path}.group", required=True, check=api_group) or "",
            kind=obj.string(body, "kind", f"{path}.kind", required=True, check=kind_name) or "",
            name=obj.string(body, "name", f"{path}.name", required=True, check=length(253)) or "",
        )
    return UnsupportedFilter(type_)  # CORS, ExternalAuth: valid, not served (see route_binding)


def _filters(
    obj: ObjectReader, m: dict[str, object], path: str, kind: RouteKind, namespace: str
) -> tuple[Filter, ...]:
    fields = HTTP_FILTERS if kind == "HTTPRoute" else GRPC_FILTERS
    filters: list[Filter] = []
    seen: dict[str, str] = {}
    for entry_path, raw in limited(obj, m, "filters", path, 16):
        type_ = choice(obj, raw, "type", f"{entry_path}.type", tuple(fields), required=True)
        for other, key in fields.items():
            if type_ is not None and other != type_ and raw.get(key) is not None:
                obj.error(f"{entry_path}.{key}", f"must not be set for a {type_} filter")
        if type_ is None:
            continue
        if type_ in _ONCE and type_ in seen:
            obj.error(
                f"{entry_path}.type", f"a {type_} filter cannot be repeated (also {seen[type_]})"
            )
        clash = {"RequestRedirect": "URLRewrite", "URLRewrite": "RequestRedirect"}.get(type_)
        if clash in seen:
            obj.error(
                f"{entry_path}.type", f"{type_} and {clash} cannot be combined ({seen[clash]})"
            )
        seen.setdefault(type_, entry_path)
        key = fields[type_]
        body = obj.mapping(raw, key, f"{entry_path}.{key}", required=True)
        filters.append(_filter(obj, type_, body, f"{entry_path}.{key}", namespace))
    return tuple(filters)


# --- rules and routes ------------------------------------------------------------------------


def _rule(obj: ObjectReader, path: str, raw: dict[str, object], kind: RouteKind) -> RouteRule:
    read = _http_match if kind == "HTTPRoute" else _grpc_match
    matches = tuple(
        read(obj, match_path, match)
        for match_path, match in limited(obj, raw, "matches", f"{path}.matches", MAX_MATCHES[kind])
    )
    if not matches and kind == "HTTPRoute":
        matches = (RouteMatch(path=PathMatch("PathPrefix", "/")),)  # the CRD's default
    filters = _filters(obj, raw, f"{path}.filters", kind, obj.namespace)
    backends = tuple(
        _backend(obj, backend_path, backend, obj.namespace, kind)
        for backend_path, backend in limited(obj, raw, "backendRefs", f"{path}.backendRefs", 16)
    )
    if backends and any(isinstance(f, RequestRedirect) for f in filters):
        obj.error(f"{path}.filters", "a RequestRedirect filter cannot be used with backendRefs")
    for filters_path, group in [(f"{path}.filters", filters)] + [
        (f"{path}.backendRefs[{i}].filters", b.filters) for i, b in enumerate(backends)
    ]:
        prefix = any(
            isinstance(f, RequestRedirect | URLRewrite)
            and f.path is not None
            and f.path.type == "ReplacePrefixMatch"
            for f in group
        )
        if prefix and not (
            len(matches) == 1 and matches[0].path and matches[0].path.type == "PathPrefix"
        ):
            obj.error(
                filters_path,
                "a ReplacePrefixMatch path modifier needs exactly one match, a PathPrefix one",
            )
    timeouts = retry = None
    if kind == "HTTPRoute" and raw.get("timeouts") is not None:
        body = obj.mapping(raw, "timeouts", f"{path}.timeouts")
        request = duration(obj, body, "request", f"{path}.timeouts.request")
        backend = duration(obj, body, "backendRequest", f"{path}.timeouts.backendRequest")
        if request and backend is not None and backend > request:
            obj.error(
                f"{path}.timeouts.backendRequest",
                f"must not be longer than timeouts.request ({body['request']})",
            )
        timeouts = Timeouts(request, backend)
    if kind == "HTTPRoute" and raw.get("retry") is not None:
        body = obj.mapping(raw, "retry", f"{path}.retry")
        codes: list[int] = []
        value = body.get("codes")
        if value is not None and not isinstance(value, list):
            obj.error(f"{path}.retry.codes", f"must be a list, got {type_name(value)}")
        for i, code in enumerate(value if isinstance(value, list) else []):
            at = f"{path}.retry.codes[{i}]"
            if isinstance(code, bool) or not isinstance(code, int):
                obj.error(at, f"must be an integer, got {type_name(code)}")
            elif not 400 <= code <= 599:
                obj.error(at, f"must be an HTTP status code between 400 and 599, got {code}")
            elif code in codes:
                obj.error(at, f"duplicate status code {code}")
            else:
                codes.append(code)
        retry = Retry(
            attempts=number(obj, body, "attempts", f"{path}.retry.attempts", 0, 2**31 - 1),
            codes=tuple(codes),
            backoff=duration(obj, body, "backoff", f"{path}.retry.backoff"),
        )
    name = obj.string(raw, "name", f"{path}.name", check=dns_subdomain) or ""
    return RouteRule(name, matches, filters, backends, timeouts, retry)


def read_route(obj: ObjectReader, kind: RouteKind) -> Route:
    """An HTTPRoute or GRPCRoute whose header `_header` has checked."""
    check_object_meta(obj)
    spec = obj.mapping(obj.body, "spec", "spec", required=True)
    created, generation = object_meta(obj)
    hostnames = tuple(v for _, v in texts(obj, spec, "hostnames", "spec.hostnames", 16, hostname))
    parents = _parents(obj, spec)
    raw_rules = limited(obj, spec, "rules", "spec.rules", 16)
    if spec.get("rules") == [] and kind == "HTTPRoute":
        obj.error("spec.rules", "must hold at least one entry")
    rules = [_rule(obj, path, raw, kind) for path, raw in raw_rules]
    if spec.get("rules") is None and kind == "HTTPRoute":
        rules = [RouteRule(matches=(RouteMatch(path=PathMatch("PathPrefix", "/")),))]
    total = sum(len(r.matches) for r in rules)
    if total > MAX_ROUTE_MATCHES:
        obj.error(
            "spec.rules", f"must hold at most {MAX_ROUTE_MATCHES} matches in all, got {total}"
        )
    names: dict[str, str] = {}
    for (path, _), rule in zip(raw_rules, rules, strict=False):
        if rule.name in names:
            obj.error(
                f"{path}.name", f"duplicate rule name {rule.name!r} (also {names[rule.name]})"
            )
        elif rule.name:
            names[rule.name] = path
    return Route(
        kind,
        obj.namespace,
        obj.name,
        obj.doc.file,
        hostnames,
        parents,
        tuple(rules),
        created,
        generation,
    )
