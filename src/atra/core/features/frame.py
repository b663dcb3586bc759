"""What feature functions (:mod:`atra.core.features.registry`) work on: the side-data context, one
symbol's bars split into gap-free segments with shared building blocks, and the spec of a
registered feature."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import pandas as pd
import talib

from atra.core.features.sources import (
    F64,
    FUNDING_MAX_INTERVAL_MS,
    I64,
    Family,
    PointInTimeSeries,
    align_by_open_time,
    bar_size_ms,
    candle_arrays,
)
from atra.core.types import Market, Timeframe

if TYPE_CHECKING:
    from pandas.core.window.rolling import Rolling

__all__ = ["FeatureContext", "FeatureFrame", "FeatureSpec", "roll", "shift", "to_f64"]


@dataclass(frozen=True, slots=True, eq=False)
class FeatureContext:
    """Side data for :func:`compute_features`; every field is optional.

    - ``timeframe``: the bar size; inferred from the smallest ``open_time`` step when None
      (pass it for short histories: two bars across a gap would be taken for a longer bar).
    - ``funding``: perp funding history (``funding_time``, ``funding_rate``) of the symbol;
      ``funding_lag_ms`` delays it, ``funding_max_interval_ms`` is the longest regular
      spacing of events (a longer silence is a gap -> NaN).
    - ``counterpart``: candles of the same symbol on the other market, for the basis;
      ``counterpart_market`` is *its* market (default PERP: the main candles are spot).
    - ``btc``: BTCUSDT candles of the same bar size (cross-asset context).
    - ``series``: timestamped external series (open interest, market cap, sentiment, ...).
    """

    timeframe: Timeframe | None = None
    funding: pd.DataFrame | None = None
    funding_lag_ms: int = 0
    funding_max_interval_ms: int = FUNDING_MAX_INTERVAL_MS
    counterpart: pd.DataFrame | None = None
    counterpart_market: Market = Market.PERP
    btc: pd.DataFrame | None = None
    series: tuple[PointInTimeSeries, ...] = ()


class FeatureFrame:
    """One symbol's bars prepared for feature functions (arrays, segments, shared results).

    Public attributes: ``open_time`` (int64 ms), ``open high low close volume`` (float64),
    ``bar_ms``, ``close_ms`` (each bar's close instant = decision time), ``bars_since_gap``
    (0 on the first bar of each contiguous segment), ``ctx``.
    """

    def __init__(self, candles: pd.DataFrame, ctx: FeatureContext, *, what: str = "candles"):
        open_time, arrays = candle_arrays(candles, what)
        self.ctx = ctx
        self.open_time: I64 = open_time
        self.open: F64 = arrays["open"]
        self.high: F64 = arrays["high"]
        self.low: F64 = arrays["low"]
        self.close: F64 = arrays["close"]
        self.volume: F64 = arrays["volume"]
        n = self.close.size
        self.bar_ms = bar_size_ms(self.open_time, ctx.timeframe, what) if n else 0
        self.close_ms: I64 = self.open_time + self.bar_ms
        new_segment = np.ones(n, dtype=bool)
        new_segment[1:] = np.diff(self.open_time) != self.bar_ms
        starts = np.flatnonzero(new_segment)
        self.segment_starts: npt.NDArray[np.intp] = starts
        seg_id = np.cumsum(new_segment) - 1
        self.bars_since_gap: I64 = (np.arange(n) - starts[seg_id]).astype(np.int64)
        self._cache: dict[str, F64] = {}
        self._btc: FeatureFrame | None = None

    def __len__(self) -> int:
        return int(self.close.size)

    def segments(self) -> Iterator[slice]:
        """The contiguous runs of bars, as slices."""
        bounds = [*self.segment_starts.tolist(), len(self)]
        for a, b in itertools.pairwise(bounds):
            yield slice(a, b)

    def mask(self, values: F64, need: int) -> F64:
        """``values`` with NaN where fewer than ``need`` earlier bars of the segment exist."""
        return np.where(self.bars_since_gap >= need, values, np.nan)

    def cached(self, key: str, make: Callable[[], F64]) -> F64:
        """Compute ``make()`` once per frame (EMAs and returns are shared by many features)."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def per_segment(self, fn: Callable[[slice], F64]) -> F64:
        """Concatenate ``fn(segment)`` over the segments: recursions restart after gaps."""
        out = np.full(len(self), np.nan)
        for seg in self.segments():
            out[seg] = fn(seg)
        return out

    # shared building blocks ------------------------------------------------------------
    def log_close(self) -> F64:
        return self.cached("log_close", lambda: np.log(self.close))

    def logret(self, h: int) -> F64:
        """ln(close_t / close_{t-h}) inside a segment, else NaN."""

        def make() -> F64:
            lc = self.log_close()
            return self.mask(lc - shift(lc, h), h)

        return self.cached(f"ret_{h}", make)

    def rv(self, w: int) -> F64:
        """Sample std (ddof 1) of the last w one-bar log returns."""
        return self.cached(f"rv_{w}", lambda: self.mask(to_f64(roll(self.logret(1), w).std()), w))

    def ema(self, n: int) -> F64:
        """TA-Lib EMA(n) of close (seed: SMA of a segment's first n closes), per segment."""
        return self.cached(
            f"ema_{n}", lambda: self.per_segment(lambda s: talib.EMA(self.close[s], timeperiod=n))
        )

    def btc_frame(self) -> FeatureFrame:
        """The BTC candles of the context as their own frame (their own gaps and warm-ups)."""
        if self._btc is None:
            assert self.ctx.btc is not None  # guaranteed by the inputs check
            self._btc = FeatureFrame(
                self.ctx.btc, FeatureContext(timeframe=Timeframe.from_ms(self.bar_ms)), what="btc"
            )
        return self._btc

    def btc_aligned(self, values: F64) -> F64:
        """A BTC-frame array on this frame's bars (exact open_time; missing BTC bar -> NaN)."""
        return align_by_open_time(self.btc_frame().open_time, values, self.open_time)


# array helpers -----------------------------------------------------------------------
def shift(x: F64, h: int) -> F64:
    """``x`` moved ``h`` bars later (the first ``h`` values NaN)."""
    out = np.full(x.shape, np.nan)
    if h < x.size:
        out[h:] = x[: x.size - h]
    return out


def roll(x: F64, w: int) -> Rolling[pd.Series]:
    """A pandas rolling window of ``w`` values (``min_periods = w``)."""
    return pd.Series(x).rolling(w, min_periods=w)


def to_f64(s: pd.Series) -> F64:
    """A float64 array of ``s`` (missing values as NaN)."""
    return np.asarray(s.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """A registered feature: its column name, family, definition, warm-up and inputs.

    ``warmup_bars``: contiguous earlier bars the value needs (NaN before; restarts after a
    gap). For cross-asset features they are BTC bars. ``inputs`` name the data it reads:
    ``candles``, ``funding``, ``counterpart``, ``btc`` or ``series:<name>``.
    """

    name: str
    family: Family
    definition: str
    warmup_bars: int
    inputs: tuple[str, ...]
    compute: Callable[[FeatureFrame], F64]
