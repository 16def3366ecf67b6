"""xDS protocol library: resources, snapshots, the cache and the ADS/CSDS server.

It knows Envoy's wire types but nothing about services, sites or workspaces.
"""

from kontinuum.xds.cache import SnapshotCache, Watcher
from kontinuum.xds.identity import (
    Authenticator,
    LimitExceededError,
    Peer,
    ViewResolver,
    ViewRevokedError,
    ViewUnavailableError,
)
from kontinuum.xds.listen import ListenError
from kontinuum.xds.resource import Resource, content_version
from kontinuum.xds.server import XdsServer
from kontinuum.xds.snapshot import InconsistentSnapshotError, Snapshot
from kontinuum.xds.state import SyncStatus

__all__ = [
    "Authenticator",
    "InconsistentSnapshotError",
    "LimitExceededError",
    "ListenError",
    "Peer",
    "Resource",
    "Snapshot",
    "SnapshotCache",
    "SyncStatus",
    "ViewResolver",
    "ViewRevokedError",
    "ViewUnavailableError",
    "Watcher",
    "XdsServer",
    "content_version",
]
