"""Fixtures for every test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True, scope="session")
def _state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every `kontinuum serve` the tests start keeps its last good fleet files in a directory
    of the test run, not in the user's own (`--state-dir` defaults to it)."""
    path = tmp_path_factory.mktemp("state")
    before = os.environ.get("KONTINUUM_STATE_DIR")
    os.environ["KONTINUUM_STATE_DIR"] = str(path)
    yield path
    if before is None:
        del os.environ["KONTINUUM_STATE_DIR"]
    else:
        os.environ["KONTINUUM_STATE_DIR"] = before
