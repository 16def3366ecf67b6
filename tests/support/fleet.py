"""Fleet YAML for tests that write a fleet directory."""

from __future__ import annotations

from pathlib import Path

from kontinuum.discovery.static import load_fleet
from kontinuum.mesh import Mesh


def cluster_profile(name: str, region: str, network: str = "backbone") -> str:
    """A ClusterProfile placing cluster `name` in `region` (zone `<region>a`)."""
    return f"""apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ClusterProfile
metadata:
  name: {name}
  namespace: fleet
  labels:
    topology.kubernetes.io/region: {region}
    topology.kubernetes.io/zone: {region}a
    kontinuum.io/network: {network}
spec:
  displayName: {name}
"""


def load_into(mesh: Mesh, path: Path) -> None:
    """Read the fleet directory at `path` and apply it to `mesh`; the fleet must be valid."""
    fleet, errors = load_fleet(path)
    assert errors == [], errors
    mesh.apply(fleet)
