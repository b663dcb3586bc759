"""Candle columns as arrays, and the indicators the rules compute on them.

:func:`candle_arrays` checks a candle frame against its contract (:data:`CANDLE_COLUMNS`,
``open_time`` int64 ms strictly increasing, finite prices > 0) and returns
:class:`CandleArrays`; :func:`segment_starts` finds the gap-free segments and
:func:`infer_step_ms` the bar length.

EMA: ``alpha = 2/(n+1)`` seeded with the first close; ATR: Wilder's, ``alpha = 1/n`` seeded with
``TR_0 = high_0 - low_0`` (both exactly as WORKLOAD.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from atra.core.signals.ewm_nb import alpha_com, ewm_mean, span_com
from atra.errors import DataError

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

CANDLE_COLUMNS = ("open_time", "open", "high", "low", "close", "volume")


def ema(close: npt.ArrayLike, n: int) -> F64:
    """EMA with ``alpha = 2/(n+1)`` seeded with the first value (``ewm(span=n, adjust=False)``,
    bit for bit: :mod:`atra.core.signals.ewm_nb`)."""
    if n < 1:
        raise ValueError("span must satisfy: span >= 1")
    return ewm_mean(close, span_com(n))


def atr_wilder(high: npt.ArrayLike, low: npt.ArrayLike, close: npt.ArrayLike, n: int) -> F64:
    """Wilder's ATR: ``alpha = 1/n``, seeded with ``TR_0 = high_0 - low_0``."""
    h = np.asarray(high, dtype=np.float64)
    lo = np.asarray(low, dtype=np.float64)
    c = np.asarray(close, dtype=np.float64)
    prev = np.concatenate(([np.nan], c[:-1])) if c.size else c
    tr = np.fmax(h - lo, np.fmax(np.abs(h - prev), np.abs(lo - prev)))
    if not 0 < 1.0 / n <= 1:
        raise ValueError("alpha must satisfy: 0 < alpha <= 1")
    return ewm_mean(tr, alpha_com(1.0 / n))


@dataclass(frozen=True, slots=True)
class CandleArrays:
    """The columns of a validated candle frame as float64 / int64 numpy arrays."""

    open_time: I64
    open: F64
    high: F64
    low: F64
    close: F64

    def __len__(self) -> int:
        return int(self.open_time.shape[0])


def candle_arrays(candles: pd.DataFrame, symbol: str) -> CandleArrays:
    """Check ``candles`` against the frame contract and return its columns as arrays.

    Raises a one-line :class:`DataError` naming the symbol, column and row that break it
    (missing column, ``open_time`` not int64 ms or not strictly increasing, a price that is
    not finite and > 0).
    """
    missing = [c for c in CANDLE_COLUMNS if c not in candles.columns]
    if missing:
        raise DataError(f"candles {symbol}: missing column(s) {', '.join(missing)}")
    open_time = candles["open_time"]
    if not pd.api.types.is_integer_dtype(open_time.dtype):
        raise DataError(
            f"candles {symbol}: open_time has dtype {open_time.dtype}, "
            "expected int64 epoch milliseconds"
        )
    prices = (candles[c].to_numpy(dtype=np.float64) for c in ("open", "high", "low", "close"))
    return checked_arrays(symbol, open_time.to_numpy(dtype=np.int64), *prices)


def checked_arrays(
    symbol: str, times: I64, open_: F64, high: F64, low: F64, close: F64
) -> CandleArrays:
    """:func:`candle_arrays` on columns already typed (int64 ms, float64): ``times`` strictly
    increasing, every price finite and > 0, else a one-line :class:`DataError`."""
    bad = np.flatnonzero(times[1:] <= times[:-1])
    if bad.size:
        row = int(bad[0]) + 1
        raise DataError(
            f"candles {symbol}: open_time not strictly increasing at row {row} "
            f"({times[row - 1]} then {times[row]})"
        )
    cols: dict[str, F64] = {}
    for col, values in zip(
        ("open", "high", "low", "close"), (open_, high, low, close), strict=True
    ):
        # two reductions instead of boolean temporaries: min() is NaN when any value is NaN
        if values.size and not (values.min() > 0.0 and values.max() < np.inf):
            row = int(np.flatnonzero(~(np.isfinite(values) & (values > 0.0)))[0])
            raise DataError(f"candles {symbol}: {col}[{row}] = {values[row]}, expected a price > 0")
        cols[col] = values
    return CandleArrays(times, cols["open"], cols["high"], cols["low"], cols["close"])


def segment_starts(open_time: npt.ArrayLike, step_ms: int) -> I64:
    """Row indices where a gap-free segment starts (always includes 0 for a non-empty frame)."""
    times = np.asarray(open_time, dtype=np.int64)
    if times.size == 0:
        return np.zeros(0, np.int64)
    breaks = np.flatnonzero(np.diff(times) != step_ms) + 1
    return np.concatenate(([0], breaks)).astype(np.int64)


def infer_step_ms(open_time: npt.ArrayLike) -> int:
    """The bar length: the most common spacing of ``open_time`` (ms)."""
    diffs = np.diff(np.asarray(open_time, dtype=np.int64))
    if diffs.size == 0:
        raise DataError("cannot infer the bar length from fewer than 2 candles")
    if 2 * int(np.count_nonzero(diffs == diffs[0])) > diffs.size:  # fast path: a majority
        return int(diffs[0])
    values, counts = np.unique(diffs, return_counts=True)
    return int(values[np.argmax(counts)])
