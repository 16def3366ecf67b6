"""Errors are contained in their file: a file with an error (a typo, a half-written file, one
too big, a link to nothing) keeps its last good version in force while every other file's
changes apply, and with a state directory that version also serves after a restart."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from kontinuum.control.model import Fleet
from kontinuum.discovery.static import MAX_FILE_BYTES, SETTLE_SECONDS, FleetReader

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fleet"


@pytest.fixture
def fleet_dir(tmp_path: Path) -> Path:
    shutil.copytree(EXAMPLE, tmp_path / "fleet")
    return tmp_path / "fleet"


def addresses(fleet: Fleet, cluster: str, service: str = "hello") -> set[str]:
    snapshot = next(s for s in fleet.snapshots if s.cluster == cluster)
    return {a for e in snapshot.endpoints if e.service == service for a in e.addresses}


def services(fleet: Fleet, cluster: str) -> set[str]:
    snapshot = next(s for s in fleet.snapshots if s.cluster == cluster)
    return {s.name for s in snapshot.services}


def hello(root: Path, cluster: str) -> Path:
    return root / "clusters" / cluster / "hello.yaml"


def rewrite(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_an_error_in_one_cluster_holds_back_nothing_in_another(fleet_dir: Path) -> None:
    reader = FleetReader(fleet_dir)
    reader.read()
    rewrite(hello(fleet_dir, "eu-central"), "port: 80\n", "port: eighty\n")  # a typo in one
    rewrite(hello(fleet_dir, "us-east"), '"127.0.0.22"', '"127.0.0.29"')  # a change in another
    fleet, errors = reader.read()
    assert [e.file for e in errors] == ["clusters/eu-central/hello.yaml"]
    assert "127.0.0.29" in addresses(fleet, "us-east")  # applied at once
    assert "hello" in services(fleet, "eu-central")  # the typo's file, as it last was
    assert reader.held == ("clusters/eu-central/hello.yaml",)


def test_a_file_with_an_error_keeps_its_whole_last_good_version(fleet_dir: Path) -> None:
    reader = FleetReader(fleet_dir)
    before, _ = reader.read()
    path = hello(fleet_dir, "us-east")
    # One object broken, another changed in the same file: neither applies, the file is a unit.
    text = path.read_text().replace('"127.0.0.21"', '"127.0.0.31"')
    path.write_text(text.replace('"127.0.0.22"', '"not-an-address"'))
    fleet, errors = reader.read()
    assert len(errors) == 1
    assert "not-an-address" in errors[0].message
    assert addresses(fleet, "us-east") == addresses(before, "us-east")
    path.write_text(text)  # fixed: the whole new version applies
    fleet, errors = reader.read()
    assert errors == []
    assert "127.0.0.31" in addresses(fleet, "us-east")
    assert reader.held == ()


def test_a_file_caught_mid_write_is_an_error_not_a_deletion(fleet_dir: Path) -> None:
    reader = FleetReader(fleet_dir, watching=True)
    before, _ = reader.read()
    path = hello(fleet_dir, "us-east")
    good = path.read_text()
    path.write_text("")  # `kubectl get -o yaml > file` truncates first
    fleet, errors = reader.read()
    assert [e.file for e in errors] == ["clusters/us-east/hello.yaml"]
    assert "has no objects (being written?)" in errors[0].message
    assert services(fleet, "us-east") == services(before, "us-east")
    path.write_text(good[: good.index("127.0.0.22") + 5])  # cut in the middle of a line
    fleet, errors = reader.read()
    assert [e.file for e in errors] == ["clusters/us-east/hello.yaml"]
    assert "ends in the middle of a line (being written?)" in errors[0].message
    assert addresses(fleet, "us-east") == addresses(before, "us-east")
    assert reader.settling  # read again soon, not only on the next event
    path.write_text(good)
    assert reader.read()[1] == []


def test_deleting_a_file_removes_its_objects(fleet_dir: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    reader = FleetReader(fleet_dir, state)
    reader.read()
    hello(fleet_dir, "us-east").unlink()
    fleet, errors = reader.read()
    assert errors == []
    assert "hello" not in services(fleet, "us-east")
    fleet, _ = FleetReader(fleet_dir, state).read()  # nor does a restart bring it back
    assert "hello" not in services(fleet, "us-east")


def test_a_file_too_big_is_refused_unread(fleet_dir: Path) -> None:
    reader = FleetReader(fleet_dir)
    before, _ = reader.read()
    path = hello(fleet_dir, "us-east")
    path.write_text(path.read_text() + "#" * MAX_FILE_BYTES + "\n")
    rewrite(hello(fleet_dir, "eu-central"), '"127.0.0.11"', '"127.0.0.19"')
    fleet, errors = reader.read()
    assert [str(e) for e in errors] == [
        "clusters/us-east/hello.yaml: is larger than the 5 MiB a fleet file may hold: split it"
    ]
    assert addresses(fleet, "us-east") == addresses(before, "us-east")
    assert "127.0.0.19" in addresses(fleet, "eu-central")  # other changes still apply


def test_a_link_to_nothing_is_an_error_not_a_silence(fleet_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.yaml"
    shutil.move(hello(fleet_dir, "us-east"), target)
    os.symlink(target, hello(fleet_dir, "us-east"))
    reader = FleetReader(fleet_dir)
    before, errors = reader.read()
    assert errors == []
    assert "hello" in services(before, "us-east")  # a link is read through
    target.unlink()
    fleet, errors = reader.read()
    assert [str(e) for e in errors] == [
        f"clusters/us-east/hello.yaml: is a symbolic link to {target}, which does not exist"
    ]
    assert services(fleet, "us-east") == services(before, "us-east")
    (fleet_dir / "clusters" / "eu-central" / "new.yaml").symlink_to(tmp_path / "none.yaml")
    assert len(reader.read()[1]) == 2


def test_a_restart_with_a_typo_serves_the_last_good_version(
    fleet_dir: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    before, errors = FleetReader(fleet_dir, state).read()
    assert errors == []
    rewrite(hello(fleet_dir, "us-east"), "port: 80\n", "port: eighty\n")
    rewrite(fleet_dir / "gateways.yaml", "port: 15443", "port: fifteen")
    # Without the stored versions a restart loses what has the typo ...
    fleet, errors = FleetReader(fleet_dir).read()
    assert errors
    assert "hello" not in services(fleet, "us-east")
    # ... with them, the restarted reader serves the fleet as it was, and says why.
    restarted = FleetReader(fleet_dir, state)
    fleet, errors = restarted.read()
    assert {e.file for e in errors} == {"clusters/us-east/hello.yaml", "gateways.yaml"}
    assert fleet == before
    assert set(restarted.held) == {"clusters/us-east/hello.yaml", "gateways.yaml"}


def test_a_stored_version_is_replaced_by_each_good_one(fleet_dir: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    reader = FleetReader(fleet_dir, state)
    reader.read()
    rewrite(hello(fleet_dir, "us-east"), '"127.0.0.22"', '"127.0.0.28"')
    changed, _ = reader.read()
    rewrite(hello(fleet_dir, "us-east"), '"127.0.0.28"', '"bad"')
    fleet, errors = FleetReader(fleet_dir, state).read()
    assert errors
    assert addresses(fleet, "us-east") == addresses(changed, "us-east")


def test_a_file_left_without_a_final_line_break_applies_once_settled(fleet_dir: Path) -> None:
    reader = FleetReader(fleet_dir, watching=True)
    reader.read()
    path = hello(fleet_dir, "us-east")
    path.write_text(path.read_text().replace('"127.0.0.22"', '"127.0.0.27"').rstrip("\n"))
    assert reader.read()[1]  # just written: taken as unfinished
    settled = time.time_ns() - int((SETTLE_SECONDS + 1) * 1e9)
    os.utime(path, ns=(settled, settled))  # as if left alone since
    fleet, errors = reader.read()
    assert errors == []
    assert "127.0.0.27" in addresses(fleet, "us-east")
    assert not reader.settling


def test_a_single_read_takes_a_file_without_a_final_line_break_as_it_is(fleet_dir: Path) -> None:
    # `kontinuum validate` right after an editor saved a file so: nothing is being written.
    path = hello(fleet_dir, "us-east")
    path.write_text(path.read_text().replace('"127.0.0.22"', '"127.0.0.27"').rstrip("\n"))
    fleet, errors = FleetReader(fleet_dir).read()
    assert errors == []
    assert "127.0.0.27" in addresses(fleet, "us-east")
