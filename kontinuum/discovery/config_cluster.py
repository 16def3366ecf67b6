"""The config cluster: the fleet-wide objects read from a Kubernetes API server, as well as
from the fleet files.

In the Cluster Inventory API's model a fleet has a hub, a cluster that holds its
ClusterProfiles; Istio likewise reads its configuration from a config cluster. kontinuum
can do both: a designated config cluster (`kontinuum serve --config-cluster`) is listed and
watched for the fleet-wide kinds, in all namespaces, and what it holds is read exactly as
the fleet-wide files are (`kontinuum.control.fleet_config`):

    multicluster.x-k8s.io/v1alpha1   ClusterProfile           (the Cluster Inventory API)
    gateway.networking.k8s.io/v1beta1 ReferenceGrant
    gateway.networking.k8s.io/v1     HTTPRoute, GRPCRoute, Gateway, GatewayClass
    policy.kontinuum.io/v1alpha1     LocalityPolicy           (deploy/crds/)
    v1                               Secret                   (type kubernetes.io/tls only)
    v1                               Namespace                (its labels)

Only what is kontinuum's is read: the Gateways of its GatewayClasses and the routes
attached to them or to Services (`kontinuum.discovery.config_objects`), and of the Secrets
those of type `kubernetes.io/tls` (HTTPS listeners' certificates; others are dropped
unread); other controllers' objects share the cluster untouched.

Each kind but the built-in Secret and Namespace is optional: a cluster without a CRD holds
none of that kind, and the source's status says so. A kind kontinuum may not list from the
start (its RBAC lacks it), Namespaces included, is read as none. The source yields one
`FleetConfig`; the aggregator merges it with the files' (the files' version of an object
both declare wins).

Bad input never breaks the mesh: an object with an error is reported (the source's
status, the log, `kontinuum_source_config_errors`, and the config's `routing.rejections`
for the object's own status) and, if an earlier version of it was valid, that version
stays in force; one that never was valid is left out. An object deleted
from the cluster is gone. When the API server cannot be reached, the last objects read
stay in force (there is nothing to expire: routes and grants do not go stale the way
endpoints do) and the status says since when.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Final

from kontinuum.control.fleet import FLEET_KINDS
from kontinuum.control.fleet_bodies import FleetBodies, FleetBodiesBuilder
from kontinuum.control.fleet_config import parse_fleet_config
from kontinuum.control.model import ConfigError, FleetConfig, KubernetesAccess
from kontinuum.control.objects import Document
from kontinuum.control.routing import GATEWAY_GROUP
from kontinuum.discovery.config_objects import (
    ObjectId,
    error_id,
    kontinuum_objects,
    object_id,
    rejection_of,
    uid,
)
from kontinuum.discovery.kube_view import KindsView, watched_kind
from kontinuum.discovery.kubernetes import ApiSource
from kontinuum.discovery.source import Health, SourceStatus, SourceUpdate

log = logging.getLogger("kontinuum.discovery.config_cluster")

_GATEWAY_API: Final = "Gateway API"
_PLURALS: Final = {
    "ClusterProfile": ("clusterprofiles", "Cluster Inventory API"),
    "ReferenceGrant": ("referencegrants", _GATEWAY_API),
    "HTTPRoute": ("httproutes", _GATEWAY_API),
    "GRPCRoute": ("grpcroutes", _GATEWAY_API),
    "Gateway": ("gateways", _GATEWAY_API),
    "LocalityPolicy": ("localitypolicies", "kontinuum LocalityPolicy"),
    "Secret": ("secrets", ""),  # built in: HTTPS listeners' certificates
}
CONFIG_KINDS: Final = (
    *(
        watched_kind(FLEET_KINDS[kind], kind, plural, crd=crd)
        for kind, (plural, crd) in _PLURALS.items()
    ),
    # which Gateways are kontinuum's (kontinuum.discovery.config_objects)
    watched_kind(f"{GATEWAY_GROUP}/v1", "GatewayClass", "gatewayclasses", crd=_GATEWAY_API),
    # their labels, for listeners' namespace selectors (built in: always served)
    watched_kind(
        FLEET_KINDS["Namespace"],
        "Namespace",
        "namespaces",
        missing="a namespace has only its kubernetes.io/metadata.name label",
        spared=True,
    ),
)


class ConfigView(KindsView):
    """A config cluster's fleet-wide objects and sync state (see the module doc)."""

    def __init__(self, name: str) -> None:
        super().__init__(name, CONFIG_KINDS)
        self._config: FleetConfig | None = None
        self._errors: tuple[ConfigError, ...] = ()
        self._last_good: dict[ObjectId, Document] = {}
        self._missing_classes: tuple[str, ...] = ()
        self._bodies = FleetBodiesBuilder()
        self._declared: dict[str, object] = {}  # by object: the body set in `_bodies`

    def _parse(self) -> None:
        if not self._dirty and self._config is not None:
            return
        self._dirty = False
        owned = kontinuum_objects(self.documents())
        docs = list(owned.docs)
        self._missing_classes = owned.missing_classes
        config, errors = parse_fleet_config(docs)
        invalid = {error_id(error) for error in errors}
        current = {object_id(doc): doc for doc in docs}
        # A deleted object is gone, even its last good version; so is one deleted and
        # created again (another uid) in between.
        self._last_good = {
            key: doc
            for key, doc in self._last_good.items()
            if key in current and uid(current[key]) == uid(doc)
        }
        kept = invalid & set(self._last_good)
        in_force = docs
        if kept:
            in_force = [self._last_good[i] if (i := object_id(d)) in kept else d for d in docs]
            config, _ = parse_fleet_config(in_force)
        for key, doc in current.items():
            if key not in invalid:
                self._last_good[key] = doc
        rejections = tuple(
            rejection_of(doc, [e for e in errors if error_id(e) == key], key in kept)
            for key, doc in sorted(current.items())
            if key in invalid
        )
        self._errors = tuple(errors)
        routing = replace(
            config.routing,
            rejections=rejections,
            gateway_classes=owned.classes,
            disowned=owned.disowned,
        )
        self._config = replace(config, routing=routing, bodies=self._declare(current, kept))

    def _declare(self, current: dict[ObjectId, Document], kept: set[ObjectId]) -> FleetBodies:
        """The bodies in force (an invalid object's last good one), each object set again
        only when its body is another: what changed is all the federation catalog looks at."""
        declared = {
            "/".join(key): (self._last_good[key] if key in kept else doc).body
            for key, doc in current.items()
        }
        for group in self._declared.keys() - declared.keys():
            self._bodies.remove(group)
        for group, body in declared.items():
            if self._declared.get(group) is not body:
                self._bodies.set(group, (body,))
        self._declared = declared
        return self._bodies.publish()

    def result(self) -> FleetConfig | None:
        """The fleet-wide objects, None before every kind was listed once. Out of sync, the
        last ones read in sync."""
        if self.synced:
            self._parse()
        return self._config

    def lost_sync(self) -> None:
        self._parse()

    def status(self, now: float) -> SourceStatus:
        notes = self._notes_of()
        problems = []
        if self._errors:
            rejections = self._config.routing.rejections if self._config else ()
            kept = sum(1 for r in rejections if r.kept)
            keep = f", {kept} keep their last good version" if kept else ""
            problems.append(f"{len(self._errors)} error(s) in fleet-wide objects{keep}")
        if self._missing_classes:
            names = ", ".join(self._missing_classes)
            problems.append(
                f"Gateways name the GatewayClass(es) {names}, which do not exist: their "
                "Gateways are not read (apply deploy/gatewayclasses.yaml)"
            )
        if self.synced:
            if self._config is None:
                return SourceStatus(Health.STARTING, "listed every kind; reading the objects")
            troubled = self._errors or self.forbidden or self._missing_classes
            health = Health.DEGRADED if troubled else Health.HEALTHY
            return SourceStatus(health, "; ".join([*problems, *notes]), self._errors)
        if self._lost is None:
            return SourceStatus(Health.STARTING, self._listing())
        detail = f"{self._since()}: the last fleet-wide objects read stay in force"
        return SourceStatus(Health.DEGRADED, "; ".join([detail, *problems, *notes]), self._errors)


def config_source_name(access: KubernetesAccess) -> str:
    """`kubernetes-config:<context>` (`in-cluster`, or `default` for the current context)."""
    label = "in-cluster" if access.in_cluster else access.context or "default"
    return f"kubernetes-config:{label}"


class ConfigClusterSource(ApiSource):
    """The fleet-wide objects of a config cluster, as a `Source` (see the module doc)."""

    @property
    def name(self) -> str:
        return config_source_name(self._access)

    @property
    def access(self) -> KubernetesAccess:
        return self._access

    def new_view(self) -> ConfigView:
        return ConfigView(self.name)

    def report(self, update: SourceUpdate) -> None:
        assert isinstance(update, FleetConfig)
        routing = update.routing
        log.info(
            "%s: %d ClusterProfile(s), %d route(s), %d Gateway(s), %d grant(s), "
            "%d LocalityPolicy(ies)",
            self.name,
            len(update.sites),
            len(routing.routes),
            len(routing.gateways),
            len(update.grants),
            len(routing.policies),
        )
