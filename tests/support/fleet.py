"""Fleet YAML for tests that write a fleet directory, and fleet options for tests."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from kontinuum.app import FleetOptions
from kontinuum.discovery.aggregate import Debounce
from kontinuum.discovery.static import load_fleet
from kontinuum.mesh import Mesh

FAST = FleetOptions(poll_interval=0.1, debounce=Debounce(after=0.05, max=0.5), status=None)
"""Fleet options that apply a change within a fraction of a second; no status written."""


def fast(**changes: Any) -> FleetOptions:
    """`FAST` with `changes` (FleetOptions fields)."""
    return dataclasses.replace(FAST, **changes)


def rewrite(path: Path, text: str) -> None:
    """Replace a fleet file at once (as `kubectl`-style tools and editors that rename do), so
    that a source polling the directory never reads it half written."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


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


def ingress_gateway(listeners: str, namespace: str = "demo", name: str = "front") -> str:
    """An ingress Gateway of eu-central listening on 127.0.0.1 with `listeners` (YAML list
    items, indented two spaces), as the end-to-end gateway tests declare it."""
    return f"""apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: {name}
  namespace: {namespace}
  labels: {{kontinuum.io/cluster: eu-central}}
spec:
  gatewayClassName: kontinuum
  addresses: [{{type: IPAddress, value: 127.0.0.1}}]
  listeners:
{listeners}"""
