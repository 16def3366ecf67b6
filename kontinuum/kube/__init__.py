"""Writing to the Kubernetes API: leader election and the status of ServiceExports, routes,
Gateways and LocalityPolicies.

Discovery only reads clusters; what kontinuum writes back lives here, behind one leader
(principle 6: replicas stay stateless readers, the store that decides who writes is the
API server's own `Lease`, no home-made consensus)."""

from kontinuum.kube.clients import KubeClients
from kontinuum.kube.lease import LeaderElection, LeaseConfig
from kontinuum.kube.status_sync import StatusSync
from kontinuum.kube.status_writer import DesiredStatus, ObjectRef, StatusWriter

__all__ = [
    "DesiredStatus",
    "KubeClients",
    "LeaderElection",
    "LeaseConfig",
    "ObjectRef",
    "StatusSync",
    "StatusWriter",
]
