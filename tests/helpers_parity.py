"""Shared setup of the replay-versus-backtest parity tests on real data (../shared/data): the
quiet-logging fixture and the readers of a window of hourly candles and funding."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from helpers_logging import quiet_structlog


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    """Warnings and above only: assign it in a test module (``_quiet = helpers_parity._quiet``)
    to quiet every test there."""
    with quiet_structlog():
        yield


def hourly_candles(
    data_dir: Path, symbols: tuple[str, ...], market: str, lo_ms: int, hi_ms: int
) -> dict[str, pd.DataFrame]:
    """Each symbol's ``{symbol}_{market}_1h.parquet`` candles opening in ``[lo_ms, hi_ms)``."""
    out = {}
    for sym in symbols:
        frame = pd.read_parquet(data_dir / f"{sym}_{market}_1h.parquet")
        keep = (frame["open_time"] >= lo_ms) & (frame["open_time"] < hi_ms)
        out[sym] = frame[keep].reset_index(drop=True)
    return out


def perp_funding(
    data_dir: Path, symbols: tuple[str, ...], hi_ms: int | None = None
) -> dict[str, pd.DataFrame]:
    """Each symbol's ``{symbol}_perp_funding.parquet`` rates, those before ``hi_ms`` (all of
    them when ``hi_ms`` is None)."""
    out = {}
    for sym in symbols:
        fr = pd.read_parquet(data_dir / f"{sym}_perp_funding.parquet")
        out[sym] = fr if hi_ms is None else fr[fr["funding_time"] < hi_ms].reset_index(drop=True)
    return out
