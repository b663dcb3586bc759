"""The inputs of the features: candle checks and point-in-time joins of side data onto a bar
grid (funding, counterpart candles, any timestamped series).

Pure: frames and arrays in, arrays out. Every join here answers one question: *what was known
when the decision at bar t was taken?* A decision at bar ``t`` (open time ``t``) is taken at its
close, the instant ``t + tf``. The rule used everywhere (the conservative one):

    a record stamped ``time`` with publication lag ``lag`` is usable at bar t
    iff ``time + lag < t + tf``  (strictly before the close instant).

A record stamped exactly at the close instant is *not* usable at that bar, only from the next
one: the publication and the decision would happen at the same instant and nothing proves the
record came first. For Binance funding (lag 0, events at 00:00/08:00/16:00) this means the
08:00 rate is first used by the bar opening at 08:00 (on 1h bars), not by the bar closing at
08:00.

A joined value never lives forever: ``max_age_ms`` bounds how long after it became usable
(``time + lag``) a record may still be used; older -> NaN. Nothing is interpolated or
back-filled. Counterpart candles (the spot or perp twin, BTC) are joined by exact
``open_time``: a missing bar is NaN, never the neighbour's value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

import numpy as np
import numpy.typing as npt
import pandas as pd

from atra.core.types import Timeframe
from atra.errors import ConfigError, DataError

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

FUNDING_MAX_INTERVAL_MS: Final[int] = 8 * 3_600_000
"""Default longest regular spacing of funding events (Binance: 8 h, some symbols 4 h or 1 h)."""

FUNDING_MEAN_WINDOWS: Final[tuple[int, ...]] = (3, 21)
"""Funding means over the last 3 events (1 day at 8 h) and the last 21 (7 days)."""


class Family(StrEnum):
    """Feature families; a feature belongs to exactly one."""

    PRICE = "price"
    VOLUME = "volume"
    FUNDAMENTAL = "fundamental"
    ALTERNATIVE = "alternative"
    CROSS_ASSET = "cross_asset"


_OHLCV: Final[tuple[str, ...]] = ("open", "high", "low", "close", "volume")


def candle_arrays(frame: pd.DataFrame, what: str) -> tuple[I64, dict[str, F64]]:
    """``(open_time, {open, high, low, close, volume})`` of a candle frame, checked."""
    missing = [c for c in ("open_time", *_OHLCV) if c not in frame.columns]
    if missing:
        raise DataError(f"{what}: missing column(s) {', '.join(missing)}")
    if not pd.api.types.is_integer_dtype(frame["open_time"].dtype):
        raise DataError(f"{what}: open_time must be int64 ms, got {frame['open_time'].dtype}")
    open_time: I64 = np.ascontiguousarray(frame["open_time"], dtype=np.int64)
    out = {col: np.ascontiguousarray(frame[col], dtype=np.float64) for col in _OHLCV}
    prices = np.column_stack([out[c] for c in ("open", "high", "low", "close")])
    bad_rows = ~np.isfinite(prices).all(axis=1) | (prices <= 0).any(axis=1)
    bad_rows |= ~np.isfinite(out["volume"]) | (out["volume"] < 0)
    if bad_rows.any():
        row = int(np.flatnonzero(bad_rows)[0])
        raise DataError(
            f"{what}: position {row} (open_time {int(open_time[row])}) needs finite "
            "prices > 0 and a finite volume >= 0"
        )
    steps = np.diff(open_time)
    if (steps <= 0).any():
        row = int(np.flatnonzero(steps <= 0)[0]) + 1
        raise DataError(f"{what}: open_time must be strictly increasing; position {row} is not")
    return open_time, out


def bar_size_ms(open_time: I64, timeframe: Timeframe | None, what: str = "candles") -> int:
    """The bar length in ms (``timeframe``'s, or inferred from the smallest step); every step
    must be a whole number of bars."""
    steps = np.diff(open_time)
    if timeframe is None:
        if steps.size == 0:
            raise DataError(
                f"{what}: cannot infer the bar size from fewer than 2 rows; "
                "pass FeatureContext(timeframe=...)"
            )
        step = int(steps.min())
        try:
            timeframe = Timeframe.from_ms(step)
        except ConfigError:
            raise DataError(f"{what}: smallest open_time step {step} ms is no bar size") from None
    bar = timeframe.ms
    bad = np.flatnonzero(steps % bar != 0)
    if bad.size:
        row = int(bad[0]) + 1
        raise DataError(
            f"{what}: position {row} is {int(steps[bad[0]])} ms after the previous bar, "
            f"not a multiple of the {timeframe} bar"
        )
    return bar


def _time_ms(values: pd.Series, what: str) -> I64:
    """An int64 ms array from an int column or a (tz-aware or naive UTC) datetime column."""
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        stamps = pd.DatetimeIndex(values)
        if stamps.tz is not None:
            stamps = stamps.tz_convert("UTC").tz_localize(None)
        if stamps.hasnans:
            raise DataError(f"{what}: time column has missing values")
        return np.asarray(stamps.as_unit("ms").asi8, dtype=np.int64)
    if pd.api.types.is_integer_dtype(values.dtype):
        return np.asarray(values, dtype=np.int64)
    raise DataError(f"{what}: time column must be int64 ms or a datetime, got {values.dtype}")


def _check_increasing(times: I64, what: str, column: str) -> None:
    bad = np.flatnonzero(np.diff(times) <= 0)
    if bad.size:
        row = int(bad[0]) + 1
        raise DataError(
            f"{what}: {column} must be strictly increasing; position {row} ({int(times[row])}) "
            f"is not after position {row - 1} ({int(times[row - 1])})"
        )


@dataclass(frozen=True, slots=True, eq=False)
class PointInTimeSeries:
    """A timestamped external series (sentiment index, news counts, open interest, market cap).

    ``frame`` has ``time_col`` (int64 ms UTC or a datetime; the time the value refers to) and
    one or more numeric value columns. A value is usable from ``time + lag_ms`` on (see the
    module rule) and for at most ``max_age_ms`` after that. ``family`` is
    :attr:`Family.ALTERNATIVE` for sentiment/news and :attr:`Family.FUNDAMENTAL` for open
    interest / market cap. Each value column ``c`` becomes the features ``{name}_{c}`` (the
    usable value) and ``{name}_{c}_chg{change_bars}`` (its change over that many bars).
    """

    name: str
    frame: pd.DataFrame
    lag_ms: int
    max_age_ms: int
    time_col: str = "time"
    family: Family = Family.ALTERNATIVE
    change_bars: int = 24
    value_columns: tuple[str, ...] = field(default=(), init=False)

    def __post_init__(self) -> None:
        what = f"series {self.name!r}"
        if not self.name.isidentifier():
            raise ConfigError(f"{what}: name must be an identifier (letters, digits, _)")
        if self.lag_ms < 0 or self.max_age_ms <= 0 or self.change_bars < 1:
            raise ConfigError(
                f"{what}: expected lag_ms >= 0, max_age_ms > 0 and change_bars >= 1, got "
                f"{self.lag_ms}, {self.max_age_ms}, {self.change_bars}"
            )
        if self.family not in (Family.ALTERNATIVE, Family.FUNDAMENTAL):
            raise ConfigError(f"{what}: family must be alternative or fundamental")
        if self.time_col not in self.frame.columns:
            raise DataError(f"{what}: missing time column {self.time_col!r}")
        values = tuple(str(c) for c in self.frame.columns if c != self.time_col)
        if not values:
            raise DataError(f"{what}: no value columns beside {self.time_col!r}")
        for col in values:
            if not pd.api.types.is_numeric_dtype(self.frame[col].dtype) or (
                pd.api.types.is_bool_dtype(self.frame[col].dtype)
            ):
                raise DataError(f"{what}: value column {col!r} must be numeric")
        _check_increasing(self.times_ms(), what, self.time_col)
        object.__setattr__(self, "value_columns", values)

    def times_ms(self) -> I64:
        """The record times in ms (before the lag)."""
        return _time_ms(self.frame[self.time_col], f"series {self.name!r}")

    def values(self, column: str) -> F64:
        """One value column as float64 (NaN kept: a NaN record is a NaN feature)."""
        return np.asarray(self.frame[column], dtype=np.float64)


def asof_index(
    available_ms: I64, decision_ms: I64, *, max_age_ms: int | None = None
) -> npt.NDArray[np.intp]:
    """For each decision instant, the index of the last record with ``available < decision``.

    ``available_ms`` must be sorted ascending. -1 where no record qualifies or where the
    newest qualifying one became available more than ``max_age_ms`` before the decision.
    """
    idx = np.searchsorted(available_ms, decision_ms, side="left") - 1
    if max_age_ms is not None and available_ms.size:
        age = decision_ms - available_ms[np.maximum(idx, 0)]
        idx = np.where(age > max_age_ms, -1, idx)
    return idx.astype(np.intp, copy=False)


def take_or_nan(values: F64, idx: npt.NDArray[np.intp]) -> F64:
    """``values[idx]`` with NaN where ``idx == -1``."""
    if values.size == 0:
        return np.full(idx.shape, np.nan)
    out = values[np.maximum(idx, 0)].astype(np.float64, copy=True)
    out[idx < 0] = np.nan
    return out


def align_by_open_time(src_open_time: I64, src_values: F64, dst_open_time: I64) -> F64:
    """``src_values`` at the bars of ``dst_open_time`` by exact open-time match, else NaN."""
    pos = np.searchsorted(src_open_time, dst_open_time, side="left")
    hit = pos < src_open_time.size
    hit[hit] = src_open_time[pos[hit]] == dst_open_time[hit]
    out = np.full(dst_open_time.shape, np.nan)
    out[hit] = src_values[pos[hit]]
    return out


def validate_funding_frame(funding: pd.DataFrame) -> tuple[I64, F64]:
    """``(funding_time, funding_rate)`` arrays of a funding frame, or a one-line DataError."""
    for col in ("funding_time", "funding_rate"):
        if col not in funding.columns:
            raise DataError(f"funding: missing column {col!r}")
    times = _time_ms(funding["funding_time"], "funding")
    _check_increasing(times, "funding", "funding_time")
    rates = np.asarray(funding["funding_rate"], dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(rates))
    if bad.size:
        raise DataError(f"funding: funding_rate is not finite at position {int(bad[0])}")
    return times, rates


def event_means(times: I64, rates: F64, window: int, max_interval_ms: int) -> F64:
    """Mean of each event's last ``window`` rates (itself included), per event.

    NaN for the first ``window - 1`` events and wherever two consecutive events inside the
    window are more than ``max_interval_ms`` apart (a gap in the funding history is never
    bridged).
    """
    n = rates.size
    out = np.full(n, np.nan)
    if n < window:
        return out
    csum = np.concatenate(([0.0], np.cumsum(rates)))
    gap = np.concatenate(([0], (np.diff(times) > max_interval_ms).astype(np.int64)))
    gsum = np.cumsum(gap)
    end = np.arange(window - 1, n)
    means = (csum[end + 1] - csum[end + 1 - window]) / window
    # a gap between events k-1 and k is inside the window ending at e iff e-window+1 < k <= e
    spans_gap = (gsum[end] - gsum[end - window + 1]) > 0
    out[window - 1 :] = np.where(spans_gap, np.nan, means)
    return out


def funding_asof(
    funding: pd.DataFrame,
    decision_ms: I64,
    *,
    windows: Sequence[int] = FUNDING_MEAN_WINDOWS,
    max_interval_ms: int = FUNDING_MAX_INTERVAL_MS,
    lag_ms: int = 0,
) -> dict[str, F64]:
    """Funding known at each decision instant (the bars' close times).

    Returns ``{"rate": last usable rate, "mean_<k>": mean of the last k usable events}``.
    A rate is usable once ``funding_time + lag_ms < decision`` and for ``max_interval_ms``
    after that: a longer silence is a gap in the funding history and gives NaN.
    """
    if max_interval_ms <= 0 or lag_ms < 0:
        raise ConfigError("funding: expected max_interval_ms > 0 and lag_ms >= 0")
    times, rates = validate_funding_frame(funding)
    idx = asof_index(times + lag_ms, decision_ms, max_age_ms=max_interval_ms)
    out = {"rate": take_or_nan(rates, idx)}
    for k in windows:
        if k < 1:
            raise ConfigError(f"funding: mean window must be >= 1, got {k}")
        out[f"mean_{k}"] = take_or_nan(event_means(times, rates, k, max_interval_ms), idx)
    return out


def series_asof(series: PointInTimeSeries, decision_ms: I64) -> dict[str, F64]:
    """Each value column of ``series`` as known at each decision instant (lag and age applied)."""
    available = series.times_ms() + series.lag_ms
    idx = asof_index(available, decision_ms, max_age_ms=series.max_age_ms)
    return {col: take_or_nan(series.values(col), idx) for col in series.value_columns}
