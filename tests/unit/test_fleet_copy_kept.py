"""The zone's copy of the global kept on disk (`kontinuum.federation.fleet_copy`): each
resource is checked against its recorded version when loaded, and the copy is written whole
with no temporary file left behind when the write fails."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from envoy.service.discovery.v3 import discovery_pb2

from kontinuum.control.model import Service, ServiceExport, ServicePort, SiteSnapshot
from kontinuum.federation.catalog import FleetCatalog
from kontinuum.federation.fleet_copy import STATE_FILE, FleetCopy
from kontinuum.federation.objects import ZONE_RESOURCE_TYPE_URL


def profile(name: str, region: str) -> dict[str, Any]:
    return {
        "apiVersion": "multicluster.x-k8s.io/v1alpha1",
        "kind": "ClusterProfile",
        "metadata": {
            "name": name,
            "namespace": "fleet",
            "labels": {"topology.kubernetes.io/region": region},
        },
    }


def eu(port: int) -> SiteSnapshot:
    return SiteSnapshot(
        "eu",
        services=(Service("eu", "demo", "hello", (ServicePort(port, "http"),)),),
        exports=(ServiceExport("eu", "demo", "hello"),),
    )


def catalog(region: str = "eu-west-1", port: int = 80) -> FleetCatalog:
    found = FleetCatalog()
    found.update([profile("eu", region), profile("edge-paris", "eu-central-1")], [eu(port)])
    return found


def filled(state_dir: Path) -> FleetCopy:
    """A copy that took the whole catalog in one response."""
    copy = FleetCopy("edge-paris", state_dir)
    response = discovery_pb2.DeltaDiscoveryResponse(type_url=ZONE_RESOURCE_TYPE_URL, nonce="1")
    for resource in catalog().for_zone("edge-paris").values():
        added = response.resources.add(name=resource.name, version=resource.version)
        added.resource.Pack(resource.message)
    copy.subscription()
    assert not copy.take(response).HasField("error_detail")
    return copy


def kept_copy(state_dir: Path) -> FleetCopy:
    copy = filled(state_dir)
    copy.save()
    return copy


def alter(path: Path, name: str, message: Any) -> None:
    """Put another (valid) message in a resource of the kept copy, its version unchanged."""
    kept = json.loads(path.read_text())
    kept["resources"][name]["message"] = base64.b64encode(message.SerializeToString()).decode()
    path.write_text(json.dumps(kept))


def test_a_kept_resource_whose_content_does_not_match_its_version_is_dropped(
    tmp_path: Path, caplog: Any
) -> None:
    before = kept_copy(tmp_path)
    other = catalog("us-east-1", port=81).for_zone("edge-paris")
    alter(
        tmp_path / STATE_FILE,
        "fleet/ClusterProfile/fleet/eu",
        other["fleet/ClusterProfile/fleet/eu"].message,
    )
    alter(tmp_path / STATE_FILE, "site/eu/demo/hello", other["site/eu/demo/hello"].message)

    copy = FleetCopy("edge-paris", tmp_path)
    copy.load()
    # The rest serves; the two are not named to the global, which sends them again.
    expected = {
        name: version
        for name, (version, _) in before.resources.items()
        if name not in ("fleet/ClusterProfile/fleet/eu", "site/eu/demo/hello")
    }
    assert expected
    assert {name: version for name, (version, _) in copy.resources.items()} == expected
    assert dict(copy.subscription().initial_resource_versions) == expected
    assert copy.stats.kept_altered == 2
    lines = [r.getMessage() for r in caplog.records if "does not match" in r.getMessage()]
    assert len(lines) == 1
    assert lines[0].startswith("dropping 2 resource(s) of the kept copy of the global")
    assert lines[0].endswith(": fleet/ClusterProfile/fleet/eu, site/eu/demo/hello")


def test_a_failed_write_of_the_copy_leaves_no_temporary_file(tmp_path: Path) -> None:
    # global.json cannot be replaced (a directory is in its place): the write fails.
    (tmp_path / STATE_FILE).mkdir()
    (tmp_path / STATE_FILE / "keep").write_text("")
    filled(tmp_path).save()
    assert sorted(p.name for p in tmp_path.iterdir()) == [STATE_FILE]
