"""One valid object of every kind the fleet loader reads, as parsed YAML (dicts), for tests
that damage them one field at a time. Cluster `eu`, Service `default/web` on port 80
(`http`), its endpoint 127.0.0.7:8080; fleet-wide, a grant and routes in `demo`."""

from __future__ import annotations

import copy
from typing import Any

from kontinuum.control.model import Grant, Service, ServicePort

PROFILE: dict[str, Any] = {
    "apiVersion": "multicluster.x-k8s.io/v1alpha1",
    "kind": "ClusterProfile",
    "metadata": {
        "name": "eu",
        "labels": {"topology.kubernetes.io/region": "eu-1", "kontinuum.io/network": "net"},
    },
}
DNS_PROFILE: dict[str, Any] = {
    "apiVersion": "multicluster.x-k8s.io/v1alpha1",
    "kind": "ClusterProfile",
    "metadata": {
        "name": "dns-site",
        "annotations": {
            "kontinuum.io/source": "dns",
            "kontinuum.io/dns-domain": "example.org",
            "kontinuum.io/dns-services": "demo/hello:http/TCP",
        },
    },
}
GRANT: dict[str, Any] = {
    "apiVersion": "gateway.networking.k8s.io/v1beta1",
    "kind": "ReferenceGrant",
    "metadata": {"name": "anchor", "namespace": "payments"},
    "spec": {
        "from": [{"group": "", "kind": "Namespace", "namespace": "demo"}],
        "to": [{"group": "", "kind": "Service", "name": "billing"}],
    },
}
HTTP_ROUTE: dict[str, Any] = {
    "apiVersion": "gateway.networking.k8s.io/v1",
    "kind": "HTTPRoute",
    "metadata": {"name": "split", "namespace": "demo"},
    "spec": {
        "parentRefs": [{"group": "", "kind": "Service", "name": "hello", "port": 80}],
        "hostnames": ["hello.example.org"],
        "rules": [
            {
                "matches": [
                    {
                        "path": {"type": "PathPrefix", "value": "/v2"},
                        "headers": [{"name": "x-canary", "value": "1"}],
                    }
                ],
                "filters": [
                    {
                        "type": "RequestHeaderModifier",
                        "requestHeaderModifier": {"set": [{"name": "x", "value": "y"}]},
                    }
                ],
                "backendRefs": [{"name": "hello", "port": 80, "weight": 90}],
                "timeouts": {"request": "10s", "backendRequest": "2s"},
            }
        ],
    },
}
GRPC_ROUTE: dict[str, Any] = {
    "apiVersion": "gateway.networking.k8s.io/v1",
    "kind": "GRPCRoute",
    "metadata": {"name": "rpc", "namespace": "demo"},
    "spec": {
        "parentRefs": [{"group": "", "kind": "Service", "name": "hello"}],
        "rules": [
            {
                "matches": [{"method": {"service": "demo.Hello", "method": "Say"}}],
                "backendRefs": [{"name": "hello", "port": 80}],
            }
        ],
    },
}
GATEWAY: dict[str, Any] = {
    "apiVersion": "gateway.networking.k8s.io/v1",
    "kind": "Gateway",
    "metadata": {"name": "ingress", "namespace": "demo", "labels": {"kontinuum.io/cluster": "eu"}},
    "spec": {
        "gatewayClassName": "kontinuum",
        "addresses": [{"type": "IPAddress", "value": "127.0.0.9"}],
        "listeners": [
            {
                "name": "http",
                "port": 8080,
                "protocol": "HTTP",
                "allowedRoutes": {"namespaces": {"from": "Same"}},
            }
        ],
    },
}
POLICY: dict[str, Any] = {
    "apiVersion": "policy.kontinuum.io/v1alpha1",
    "kind": "LocalityPolicy",
    "metadata": {"name": "spread", "namespace": "demo"},
    "spec": {
        "targetRefs": [{"group": "", "kind": "Service", "name": "hello"}],
        "weights": [{"cluster": "eu", "weight": 80}],
    },
}
SERVICE: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
    "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
}
SLICE: dict[str, Any] = {
    "apiVersion": "discovery.k8s.io/v1",
    "kind": "EndpointSlice",
    "metadata": {
        "name": "web-anchor",
        "namespace": "default",
        "labels": {"kubernetes.io/service-name": "web"},
        "annotations": {"example.com/owner": "team-a"},
    },
    "addressType": "IPv4",
    "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    "endpoints": [{"addresses": ["127.0.0.7"], "conditions": {"ready": True}, "zone": "eu-1a"}],
}
EXPORT: dict[str, Any] = {
    "apiVersion": "multicluster.x-k8s.io/v1alpha1",
    "kind": "ServiceExport",
    "metadata": {"name": "web", "namespace": "default"},
}

FLEET_OBJECTS: tuple[dict[str, Any], ...] = (
    DNS_PROFILE,
    GRANT,
    HTTP_ROUTE,
    GRPC_ROUTE,
    GATEWAY,
    POLICY,
)
"""Valid fleet-wide objects of every fleet-wide kind (with `PROFILE`, which names `eu`)."""
CLUSTER_OBJECTS: tuple[dict[str, Any], ...] = (SERVICE, SLICE, EXPORT)
"""Valid objects of cluster `eu`, of every per-cluster kind."""

WEB = Service("eu", "default", "web", (ServicePort(80, "http", "TCP", None, 8080),))
WEB_ADDRESS = "127.0.0.7"
GRANTED = Grant("payments", "demo", "billing")


def fresh(obj: dict[str, Any]) -> dict[str, Any]:
    """A copy of `obj` to change."""
    return copy.deepcopy(obj)
