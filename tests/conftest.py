"""Shared fixtures. Keep this file short: module-specific fixtures live beside their tests."""

from __future__ import annotations

from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """``../shared/data`` (real Binance data); tests needing it are skipped where it is absent."""
    if not (SHARED_DATA / "README.md").exists():
        pytest.skip("../shared/data is not beside the project")
    return SHARED_DATA


@pytest.fixture(scope="session")
def shared_series_dir(shared_data_dir: Path) -> Path:
    """``../shared/series`` (real daily sentiment and on-chain series); skipped where absent."""
    path = shared_data_dir.parent / "series"
    if not (path / "README.md").exists():
        pytest.skip("../shared/series is not beside the project")
    return path
