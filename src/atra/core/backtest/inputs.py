"""Candle and funding frames -> the concatenated arrays the backtest kernels take.

Candles of several symbols are checked against the candle contract and concatenated in
sorted symbol order (symbol ``k`` owns rows ``start[k]:end[k]``), with the union of their open
times as the common time grid (:class:`CandleBundle`). Funding histories of perpetual symbols
become one concatenated array per column, each funding time mapped to its mark bar
(:func:`funding_arrays`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
import pandas as pd

from atra.core.backtest.grid_nb import first_bad_series_nb, grid_index_nb
from atra.core.signals.candles import CANDLE_COLUMNS, candle_arrays
from atra.errors import DataError

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
_PRICE_COLUMNS: Final[tuple[str, ...]] = ("open", "high", "low", "close")


@dataclass(frozen=True, slots=True)
class CandleBundle:
    """Several symbols' candles concatenated (symbol ``k`` owns rows ``start[k]:end[k]``)."""

    symbols: tuple[str, ...]
    open_time: I64
    open: F64
    high: F64
    low: F64
    close: F64
    start: I64
    end: I64
    grid_time: I64
    """Union of the symbols' open times, sorted."""
    row_grid: I64 | None
    """Position of each row's open time in ``grid_time``; None with one calendar (then it is
    the row's position in its symbol: see :meth:`bar_grid`)."""
    one_calendar: bool
    """Every symbol has the same open times (then ``grid_time`` is any symbol's times)."""

    @property
    def bars(self) -> int:
        return int(self.open_time.shape[0])

    def bar_grid(self) -> I64:
        """Position of each row's open time in ``grid_time``."""
        if self.row_grid is not None:
            return self.row_grid
        n = self.grid_time.shape[0]
        return np.tile(np.arange(n, dtype=np.int64), len(self.symbols))

    def rows(self, symbol: str) -> slice:
        k = self.symbols.index(symbol)
        return slice(int(self.start[k]), int(self.end[k]))


Columns = tuple[I64, F64, F64, F64, F64]
"""``open_time, open, high, low, close`` of one symbol."""


def checked_columns(candles: Mapping[str, pd.DataFrame]) -> tuple[tuple[str, ...], list[Columns]]:
    """Symbols in sorted order and each frame's columns as arrays (views where the dtypes
    already match), checked against the candle contract.

    One compiled pass per symbol checks the rows (``open_time`` strictly increasing, prices
    finite and > 0); a frame that fails is handed to
    :func:`atra.core.signals.candles.candle_arrays`, whose one-line :class:`DataError` names the
    symbol, column and row.
    """
    if not candles:
        raise DataError("candles: no symbol given")
    symbols = tuple(sorted(candles))
    out: list[Columns] = []
    start = np.zeros(1, np.int64)
    for sym in symbols:
        df = candles[sym]
        if len(df) == 0:
            raise DataError(f"candles {sym}: no rows")
        if any(c not in df.columns for c in CANDLE_COLUMNS) or not (
            pd.api.types.is_integer_dtype(df["open_time"].dtype)
        ):
            candle_arrays(df, sym)  # raises the one-line error
        times = df["open_time"].to_numpy(dtype=np.int64)
        o, h, lo, c = (df[col].to_numpy(dtype=np.float64) for col in _PRICE_COLUMNS)
        end = np.array([times.shape[0]], np.int64)
        if first_bad_series_nb(times, o, h, lo, c, start, end) >= 0:
            candle_arrays(df, sym)  # raises the one-line error naming the row
            raise DataError(f"candles {sym}: invalid rows")
        out.append((times, o, h, lo, c))
    return symbols, out


def bundle_candles(candles: Mapping[str, pd.DataFrame]) -> CandleBundle:
    """:func:`checked_columns`, concatenated in sorted symbol order, with the union grid."""
    symbols, cols = checked_columns(candles)
    lengths = np.array([c[0].shape[0] for c in cols], np.int64)
    end = np.cumsum(lengths)
    start = end - lengths
    times, o, h, lo, c = (np.concatenate([col[k] for col in cols]) for k in range(5))
    first = cols[0][0]
    one_calendar = all(np.array_equal(col[0], first) for col in cols[1:])
    if one_calendar:
        grid = first.copy()  # one calendar: the grid is any symbol's times
        bar_grid = None
    else:
        grid = np.unique(times)
        bar_grid = grid_index_nb(times, start, end, grid)
    return CandleBundle(
        symbols=symbols,
        open_time=times,
        open=o,
        high=h,
        low=lo,
        close=c,
        start=start,
        end=end,
        grid_time=grid,
        row_grid=bar_grid,
        one_calendar=one_calendar,
    )


def funding_arrays(
    cb: CandleBundle,
    perp: npt.NDArray[np.bool_],
    funding: Mapping[str, pd.DataFrame],
) -> tuple[I64, F64, I64, I64, I64]:
    """``(funding_time, funding_rate, mark_row, start, end)`` of the symbols with ``perp[k]``,
    concatenated in bundle order (symbol ``k`` owns rows ``start[k]:end[k]``, none when spot).
    ``mark_row`` is the bundle row of the symbol's latest bar at or before the funding time
    (its first bar when there is none). A bad frame raises a one-line :class:`DataError`."""
    times: list[I64] = []
    rates: list[F64] = []
    bars: list[I64] = []
    lengths: list[int] = []
    for k, sym in enumerate(cb.symbols):
        if not perp[k]:
            lengths.append(0)
            continue
        if sym not in funding:
            raise DataError(f"funding: perpetual symbol {sym} has no funding history")
        fr = funding[sym]
        for col in ("funding_time", "funding_rate"):
            if col not in fr.columns:
                raise DataError(f"funding {sym}: missing column {col}")
        if not pd.api.types.is_integer_dtype(fr["funding_time"].dtype):
            raise DataError(f"funding {sym}: funding_time must be int64 epoch milliseconds")
        ft = fr["funding_time"].to_numpy(dtype=np.int64)
        rate = fr["funding_rate"].to_numpy(dtype=np.float64)
        bad = np.flatnonzero(np.diff(ft) <= 0)
        if bad.size:
            raise DataError(
                f"funding {sym}: funding_time not strictly increasing at row {bad[0] + 1}"
            )
        nonfinite = np.flatnonzero(~np.isfinite(rate))
        if nonfinite.size:
            row = int(nonfinite[0])
            raise DataError(f"funding {sym}: funding_rate[{row}] = {rate[row]}, expected finite")
        rows = cb.rows(sym)
        local = np.searchsorted(cb.open_time[rows], ft, side="right") - 1
        bars.append(rows.start + np.maximum(local, 0))
        times.append(ft)
        rates.append(rate)
        lengths.append(int(ft.shape[0]))
    fend = np.cumsum(np.asarray(lengths, np.int64))
    fstart = fend - np.asarray(lengths, np.int64)
    if times:
        return (np.concatenate(times), np.concatenate(rates), np.concatenate(bars), fstart, fend)
    return np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int64), fstart, fend
