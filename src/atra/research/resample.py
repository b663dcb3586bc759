"""A universe at a coarser bar size, resampled exactly from the bars it was read with.

``atra search`` treats the timeframe as a searched parameter (``1h`` / ``4h`` / ``1d``): the
stored 1h bars are read once, with enough warm-up for the coarsest timeframe searched
(:func:`warmup_bars_for`), and each trial's universe is :func:`universe_at` its timeframe.

The resampling is :func:`atra.core.frames.resample_candles`, the code of ``atra data resample``
(first open, max high, min low, last close, summed volume; buckets aligned to the epoch, so 1d
bars open at 00:00 UTC). A bucket with a bar missing (a gap, or the partial bucket at the start
or the end of the span read) is left out, as ``atra data resample`` leaves it out; nothing is
filled. The result is then cut to the rows :func:`atra.research.dataset.load_universe` reads at
that bar size (``warmup_bars`` bars before the range start), so a trial at 4h sees the very
bars that ``atra data resample --to 4h`` followed by a 4h run would see.

Funding events are timestamps, not bars: they stay as read, cut the same way as
``load_universe`` cuts them (a month before the first bar). External series are whole.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import pandas as pd

from atra.core.features.registry import HISTORY_BARS
from atra.core.frames import resample_candles
from atra.core.types import Timeframe
from atra.core.validation import DAY_MS
from atra.errors import ConfigError, DataError
from atra.research.dataset import SymbolData, Universe

__all__ = ["check_timeframes", "universe_at", "warmup_bars_for"]

_FUNDING_LOOKBACK_MS = 31 * DAY_MS
"""As :func:`atra.research.dataset.load_universe`: a month of funding before the first bar."""


def check_timeframes(base: Timeframe, timeframes: Iterable[Timeframe], *, source: str) -> None:
    """Each of ``timeframes`` must be ``base`` or a whole multiple of it (one line naming
    ``source`` otherwise)."""
    for tf in timeframes:
        if tf.ms < base.ms or tf.ms % base.ms:
            raise ConfigError(
                f"{source}: {tf} is not a whole multiple of the {base} bars read "
                f"(resampling is exact: coarser bars are built from finer ones only)"
            )


def warmup_bars_for(base: Timeframe, timeframes: Iterable[Timeframe]) -> int:
    """Bars of ``base`` to read before the range start so the coarsest of ``timeframes`` has
    its :data:`~atra.core.features.registry.HISTORY_BARS` of warm-up."""
    coarsest = max((tf.ms for tf in timeframes), default=base.ms)
    return HISTORY_BARS * max(coarsest, base.ms) // base.ms


def _cut(frame: pd.DataFrame, column: str, start_ms: int | None) -> pd.DataFrame:
    if start_ms is None:
        return frame
    return frame.loc[frame[column].to_numpy() >= start_ms].reset_index(drop=True)


def _bars(frame: pd.DataFrame, src: Timeframe, dst: Timeframe, where: str) -> pd.DataFrame:
    if dst is src:
        return frame
    return resample_candles(frame, src, dst, source=where).frame


def universe_at(
    universe: Universe, timeframe: Timeframe, *, warmup_bars: int = HISTORY_BARS
) -> Universe:
    """``universe`` with ``timeframe`` bars (resampled exactly, see the module docstring),
    cut to ``warmup_bars`` bars of ``timeframe`` before its start. A symbol left without a
    bar in the range is a :class:`DataError`."""
    base = universe.timeframe
    check_timeframes(base, (timeframe,), source="timeframe")
    if warmup_bars < 0:
        raise ConfigError(f"warmup_bars must be >= 0, got {warmup_bars}")
    start = universe.start_ms
    read_from = None if start is None else start - warmup_bars * timeframe.ms
    fund_from = None if read_from is None else read_from - _FUNDING_LOOKBACK_MS
    name = f"{universe.exchange}/{universe.market}"

    def bars(frame: pd.DataFrame, where: str) -> pd.DataFrame:
        return _cut(_bars(frame, base, timeframe, where), "open_time", read_from)

    symbols: dict[str, SymbolData] = {}
    for sym, data in universe.symbols.items():
        candles = bars(data.candles, f"{name}/{sym}/{base}")
        if candles.empty:
            raise DataError(
                f"{name}/{sym}: no complete {timeframe} bar in the range "
                f"({len(data.candles)} {base} bars read)"
            )
        counterpart = None
        if data.counterpart is not None:
            counterpart = bars(data.counterpart, f"{sym} counterpart/{base}")
        funding = None if data.funding is None else _cut(data.funding, "funding_time", fund_from)
        symbols[sym] = SymbolData(
            sym,
            candles,
            funding,
            counterpart if counterpart is not None and not counterpart.empty else None,
        )
    btc = None if universe.btc is None else bars(universe.btc, f"{name}/BTC context/{base}")
    return dataclasses.replace(
        universe,
        timeframe=timeframe,
        symbols=symbols,
        btc=btc if btc is not None and not btc.empty else None,
    )
