"""The data directory the CLI's views are tried on, built once per session and only read."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_testkit import build_two_nights


@pytest.fixture(scope="session")
def two_nights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two nights, the second with a failed file."""
    return build_two_nights(tmp_path_factory.mktemp("two-nights"), failed_file=True)


@pytest.fixture(scope="session")
def two_clean_nights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two nights that pass every check."""
    return build_two_nights(tmp_path_factory.mktemp("two-clean-nights"), failed_file=False)
