"""Fixtures for every test."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _state_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every `kontinuum serve` a test starts keeps its last good fleet files and cluster
    views in a directory of that test (`--state-dir` defaults to it), never in the user's
    own nor in another test's."""
    path = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("KONTINUUM_STATE_DIR", str(path))
    return path
