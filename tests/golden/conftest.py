"""`pytest tests/golden --update-golden` rewrites every `<case>.out.yaml` and deletes orphans."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite tests/golden/*.out.yaml from the translator and delete orphaned ones",
    )


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    # `default`: when pytest runs from the repository root this conftest is not an initial
    # one and its option may not be registered; then outputs are only compared.
    return bool(request.config.getoption("--update-golden", default=False))
