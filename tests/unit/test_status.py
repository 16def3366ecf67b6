"""`kontinuum status` folds CSDS into one line per proxy, most urgent state per type."""

from __future__ import annotations

import io

from envoy.service.status.v3 import csds_pb2
from rich.console import Console

from kontinuum.bootstrap import proxy_metadata
from kontinuum.status import render_status, summarize
from kontinuum.xds import SyncStatus, types


def test_summary_shows_declared_workspace_role_and_the_most_urgent_state() -> None:
    config = csds_pb2.ClientConfig()
    config.node.id = "web-1"
    config.node.cluster = "eu-central"
    config.node.metadata.update(proxy_metadata(namespace="demo", role="sidecar"))
    for name, status in [("a", csds_pb2.SYNCED), ("b", csds_pb2.ERROR), ("c", csds_pb2.STALE)]:
        entry = config.generic_xds_configs.add(type_url=types.CLUSTER, name=name)
        entry.config_status = status
        if status == csds_pb2.ERROR:
            entry.error_state.details = "bad cluster b"
    config.generic_xds_configs.add(type_url=types.ENDPOINT, name="a", config_status=csds_pb2.STALE)
    config.generic_xds_configs.add(type_url=types.LISTENER, name="l", config_status=csds_pb2.SYNCED)

    proxy = summarize(config)

    assert (proxy.workspace, proxy.role) == ("demo", "sidecar")
    assert proxy.by_type == {
        "CDS": SyncStatus.NACKED,
        "EDS": SyncStatus.STALE,
        "LDS": SyncStatus.SYNCED,
    }
    assert proxy.errors == ["CDS b: bad cluster b"]
    out = io.StringIO()
    render_status([proxy], Console(file=out, width=200))
    line = next(line for line in out.getvalue().splitlines() if "web-1" in line)
    for cell in ("eu-central", "demo", "sidecar", "NACKED", "STALE", "SYNCED"):
        assert cell in line
    assert "bad cluster b" in out.getvalue()
