"""Fleet YAML for tests that write a fleet directory."""

from __future__ import annotations


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
