"""The config cluster: the fleet-wide objects read from a Kubernetes API server, as well as
from the fleet files.

In the Cluster Inventory API's model a fleet has a hub, a cluster that holds its
ClusterProfiles; Istio likewise reads its configuration from a config cluster. kontinuum
can do both: a designated config cluster (`kontinuum serve --config-cluster`) is listed and
watched for the fleet-wide kinds, in all namespaces, and what it holds is read exactly as
the fleet-wide files are (`kontinuum.control.fleet_config`):

    multicluster.x-k8s.io/v1alpha1   ClusterProfile           (the Cluster Inventory API)
    gateway.networking.k8s.io/v1beta1 ReferenceGrant
    gateway.networking.k8s.io/v1     HTTPRoute, GRPCRoute, Gateway
    policy.kontinuum.io/v1alpha1     LocalityPolicy           (deploy/crds/)

Each kind is optional: a cluster without a CRD holds none of that kind, and the source's
status says so. The source yields one `FleetConfig`; the aggregator merges it with the
files' (the files' version of an object both declare wins).

Bad input never breaks the mesh: an object with an error is reported (the source's
status, the log, `kontinuum_source_config_errors`) and, if an earlier version of it was
valid, that version stays in force, and the config's `routing.rejections` say so (for
the object's status); one that never was valid is left out. An object deleted
from the cluster is gone. When the API server cannot be reached, the last objects read
stay in force (there is nothing to expire: routes and grants do not go stale the way
endpoints do) and the status says since when.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Final

from kontinuum.control.fleet import FLEET_KINDS
from kontinuum.control.fleet_config import parse_fleet_config
from kontinuum.control.model import ConfigError, FleetConfig, KubernetesAccess
from kontinuum.control.objects import Document
from kontinuum.control.routing import Rejection
from kontinuum.discovery.kube_view import KindsView, watched_kind
from kontinuum.discovery.kubernetes import ApiSource
from kontinuum.discovery.source import Health, SourceStatus

_GATEWAY_API: Final = "Gateway API"
_PLURALS: Final = {
    "ClusterProfile": ("clusterprofiles", "Cluster Inventory API"),
    "ReferenceGrant": ("referencegrants", _GATEWAY_API),
    "HTTPRoute": ("httproutes", _GATEWAY_API),
    "GRPCRoute": ("grpcroutes", _GATEWAY_API),
    "Gateway": ("gateways", _GATEWAY_API),
    "LocalityPolicy": ("localitypolicies", "kontinuum LocalityPolicy"),
}
CONFIG_KINDS: Final = tuple(
    watched_kind(FLEET_KINDS[kind], kind, plural, crd=crd)
    for kind, (plural, crd) in _PLURALS.items()
)


ObjectId = tuple[str, str, str]  # kind, namespace ("" for a ClusterProfile), name


def _object_id(doc: Document) -> ObjectId:
    """The object a document holds, as the parser names it in its errors."""
    body = doc.body if isinstance(doc.body, Mapping) else {}
    metadata = body.get("metadata")
    meta = metadata if isinstance(metadata, Mapping) else {}
    kind = body.get("kind")
    kind = kind if isinstance(kind, str) else ""
    namespace = "" if kind == "ClusterProfile" else meta.get("namespace") or "default"
    name = meta.get("name")
    return (
        kind,
        namespace if isinstance(namespace, str) else "",
        name if isinstance(name, str) else "",
    )


def _generation(doc: Document) -> int:
    body = doc.body if isinstance(doc.body, Mapping) else {}
    metadata = body.get("metadata")
    generation = metadata.get("generation") if isinstance(metadata, Mapping) else None
    return generation if isinstance(generation, int) else 0


def _error_id(error: ConfigError) -> ObjectId:
    return (error.kind, error.namespace, error.name)


class ConfigView(KindsView):
    """A config cluster's fleet-wide objects and sync state (see the module doc)."""

    def __init__(self, name: str) -> None:
        super().__init__(name, CONFIG_KINDS)
        self._config: FleetConfig | None = None
        self._errors: tuple[ConfigError, ...] = ()
        self._kept: frozenset[ObjectId] = frozenset()  # invalid, their last good version serves
        self._last_good: dict[ObjectId, Document] = {}

    def _parse(self) -> None:
        if not self._dirty and self._config is not None:
            return
        self._dirty = False
        docs = self.documents()
        config, errors = parse_fleet_config(docs)
        invalid = {_error_id(error) for error in errors}
        present = {_object_id(doc) for doc in docs}
        self._last_good = {
            key: doc for key, doc in self._last_good.items() if key in present
        }  # deleted objects are gone, even their last good version
        kept = invalid & set(self._last_good)
        if kept:
            fallback = [self._last_good[i] if (i := _object_id(d)) in kept else d for d in docs]
            config, _ = parse_fleet_config(fallback)
        for doc in docs:
            if _object_id(doc) not in invalid:
                self._last_good[_object_id(doc)] = doc
        self._errors, self._kept = tuple(errors), frozenset(kept)
        routing = replace(config.routing, rejections=self._rejections(docs))
        self._config = replace(config, routing=routing)

    def _rejections(self, docs: list[Document]) -> tuple[Rejection, ...]:
        """The objects whose newest version is invalid while their last good one serves."""
        found = []
        for doc in docs:
            key = _object_id(doc)
            if key not in self._kept:
                continue
            errors = tuple(
                f"{e.field}: {e.message}" if e.field else e.message
                for e in self._errors
                if _error_id(e) == key
            )
            found.append(Rejection(*key, _generation(doc), errors))
        return tuple(sorted(found, key=lambda r: (r.kind, r.namespace, r.name)))

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
            kept = f", {len(self._kept)} keep their last good version" if self._kept else ""
            problems.append(f"{len(self._errors)} error(s) in fleet-wide objects{kept}")
        if self.synced:
            if self._config is None:
                return SourceStatus(Health.STARTING, "listed every kind; reading the objects")
            health = Health.DEGRADED if self._errors else Health.HEALTHY
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
