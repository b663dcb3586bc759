"""The OHLCV and funding frame contract: validation, gap reports, exact resampling.

Pure: frames in, values out. Every broken rule is a one-line :class:`DataError` naming the
source, the row (1-based data row, header excluded), its time in UTC and the rule. Gaps and
zero-volume bars are *reported* in a :class:`ValidationReport`, never filled or dropped.

Plausibility (:class:`~atra.core.bounds.Limits`): times between the exchange's launch and
one bar past the caller's clock, prices within ``[min_price, max_price)`` and funding rates
within a cap; a refusal of a price or a rate names the ``data.bounds`` key that sets it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
import pandas as pd

from atra.core.plausibility import (
    BOUNDS_SECTION,
    DEFAULT_LIMITS,
    EXCHANGE_LAUNCH_MS,
    LATEST_MS,
    MAX_ABS_FUNDING_RATE,
    MAX_PRICE,
    MIN_PRICE,
    Limits,
    check_bar_spacing,
    check_times_plausible,
    implausible_time,
    ms_to_iso,
)
from atra.core.types import Timeframe
from atra.errors import ConfigError, DataError

__all__ = [
    "BOUNDS_SECTION",
    "CANDLE_COLUMNS",
    "DEFAULT_LIMITS",
    "EXCHANGE_LAUNCH_MS",
    "FUNDING_COLUMNS",
    "FUNDING_INTERVAL_MS",
    "LATEST_MS",
    "MAX_ABS_FUNDING_RATE",
    "MAX_PRICE",
    "MIN_PRICE",
    "PRICE_COLUMNS",
    "Gap",
    "Limits",
    "PartialBucket",
    "ResampleResult",
    "ValidationReport",
    "check_bar_spacing",
    "check_times_plausible",
    "empty_candles",
    "find_gaps",
    "implausible_time",
    "ms_to_iso",
    "normalize_candles",
    "normalize_funding",
    "resample_candles",
    "validate_candles",
    "validate_funding",
]

CANDLE_COLUMNS: Final[tuple[str, ...]] = ("open_time", "open", "high", "low", "close", "volume")
PRICE_COLUMNS: Final[tuple[str, ...]] = ("open", "high", "low", "close")
FUNDING_COLUMNS: Final[tuple[str, ...]] = ("funding_time", "funding_rate")
FUNDING_INTERVAL_MS: Final[int] = 8 * 3_600_000
"""Binance's usual funding interval (8 h); the default step for funding gap reports."""

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Gap:
    """A run of missing bars (or funding events): first and last missing time, inclusive."""

    first_missing_ms: int
    last_missing_ms: int
    missing: int

    def __str__(self) -> str:
        first, last = ms_to_iso(self.first_missing_ms), ms_to_iso(self.last_missing_ms)
        return f"{first}..{last} ({self.missing} missing)"


@dataclass(frozen=True, slots=True)
class ValidationReport:
    """What a valid frame looks like: size, span, gaps and zero-volume bars (reported only)."""

    source: str
    kind: str
    """``"candles"`` or ``"funding"``."""
    rows: int
    first_ms: int | None
    last_ms: int | None
    step_ms: int
    gaps: tuple[Gap, ...]
    zero_volume_ms: tuple[int, ...] = ()

    @property
    def gap_count(self) -> int:
        """Number of gaps (runs of missing bars)."""
        return len(self.gaps)

    @property
    def missing_bars(self) -> int:
        """Total number of missing bars over all gaps."""
        return sum(g.missing for g in self.gaps)


@dataclass(frozen=True, slots=True)
class PartialBucket:
    """A target bar that lacks some source bars: it is reported, not emitted."""

    open_time_ms: int
    bars_present: int
    bars_expected: int

    def __str__(self) -> str:
        return f"{ms_to_iso(self.open_time_ms)} ({self.bars_present}/{self.bars_expected} bars)"


@dataclass(frozen=True, slots=True)
class ResampleResult:
    """Complete target bars only, plus the buckets that were left out for lack of source bars."""

    frame: pd.DataFrame
    src: Timeframe
    dst: Timeframe
    partial: tuple[PartialBucket, ...]
    gaps: tuple[Gap, ...]
    """Gaps of the emitted frame (its missing target bars, partial buckets included)."""


def find_gaps(times_ms: npt.ArrayLike, step_ms: int) -> tuple[Gap, ...]:
    """Runs of missing steps in a sorted, unique time array on a ``step_ms`` grid.

    A step of ``k * step_ms`` (rounded to the nearest whole step) means ``k - 1`` missing
    times. Steps shorter than ``step_ms`` (a finer funding interval) are not gaps.
    """
    if step_ms <= 0:
        raise ConfigError(f"gap step must be positive, got {step_ms} ms")
    times = np.asarray(times_ms, dtype=np.int64)
    if times.size < 2:
        return ()
    diffs = np.diff(times)
    steps = (diffs + step_ms // 2) // step_ms
    where = np.flatnonzero(steps > 1)
    return tuple(
        Gap(
            first_missing_ms=int(times[i]) + step_ms,
            last_missing_ms=int(times[i]) + int(steps[i] - 1) * step_ms,
            missing=int(steps[i] - 1),
        )
        for i in where
    )


def _fail(source: str, row: int, ts_ms: int | None, time_name: str, rule: str) -> DataError:
    when = f" ({time_name} {ms_to_iso(ts_ms)})" if ts_ms is not None else ""
    return DataError(f"{source or '<frame>'}: row {row + 1}{when}: {rule}")


def _check_columns(frame: pd.DataFrame, columns: tuple[str, ...], source: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    extra = [str(c) for c in frame.columns if c not in columns]
    if missing or extra:
        raise DataError(
            f"{source or '<frame>'}: expected columns {', '.join(columns)}; "
            f"missing: {', '.join(missing) or 'none'}; extra: {', '.join(extra) or 'none'}"
        )
    time_col = columns[0]
    if not pd.api.types.is_integer_dtype(frame[time_col].dtype):
        raise DataError(
            f"{source or '<frame>'}: {time_col} must be int64 milliseconds, "
            f"got dtype {frame[time_col].dtype}"
        )
    for col in columns[1:]:
        dtype = frame[col].dtype
        if not (pd.api.types.is_float_dtype(dtype) or pd.api.types.is_integer_dtype(dtype)):
            raise DataError(f"{source or '<frame>'}: {col} must be numeric, got dtype {dtype}")


def _time_rules(times: I64, step_ms: int | None) -> list[tuple[npt.NDArray[np.bool_], str]]:
    """Row masks of the time rules: unique, strictly increasing, aligned to the grid."""
    diffs = np.empty_like(times)
    if times.size:
        diffs[0] = 1
        np.subtract(times[1:], times[:-1], out=diffs[1:])
    rules: list[tuple[npt.NDArray[np.bool_], str]] = [
        (diffs == 0, "duplicate time (times must be unique)"),
        (diffs < 0, "time goes backwards (times must be strictly increasing)"),
    ]
    if step_ms is not None:
        rules.insert(0, (times % step_ms != 0, f"time not aligned to the {step_ms} ms bar grid"))
    return rules


def _first_violation(
    rules: list[tuple[npt.NDArray[np.bool_], str]],
) -> tuple[int, str] | None:
    best: tuple[int, str] | None = None
    for mask, rule in rules:
        hits = np.flatnonzero(mask)
        if hits.size and (best is None or int(hits[0]) < best[0]):
            best = (int(hits[0]), rule)
    return best


def validate_candles(
    frame: pd.DataFrame,
    timeframe: Timeframe,
    *,
    source: str,
    limits: Limits = DEFAULT_LIMITS,
) -> ValidationReport:
    """Check a candle frame against the contract; a broken rule is a one-line DataError.

    Rules: exactly the columns ``open_time, open, high, low, close, volume``; open times
    plausible (see :class:`Limits`; checked first, so a file in another unit is named as
    such), unique, strictly increasing and aligned to ``timeframe``; no NaN/inf; prices
    positive and in ``[limits.min_price, limits.max_price)`` (a refusal names the
    ``data.bounds`` key); ``low <= open, close <= high``; volume >= 0. The first offending row
    (lowest row number) is reported.
    """
    _check_columns(frame, CANDLE_COLUMNS, source)
    times = frame["open_time"].to_numpy(dtype=np.int64)
    check_times_plausible(times, timeframe.ms, time_name="open_time", source=source, limits=limits)
    o, h, lo, c, v = (frame[col].to_numpy(dtype=np.float64) for col in CANDLE_COLUMNS[1:])
    finite = np.isfinite(o) & np.isfinite(h) & np.isfinite(lo) & np.isfinite(c) & np.isfinite(v)
    top, bottom = limits.max_price, limits.min_price
    rules = [
        (~finite, "NaN or infinite value (every price and volume must be finite)"),
        ((o <= 0) | (h <= 0) | (lo <= 0) | (c <= 0), "price <= 0 (prices must be positive)"),
        (
            (o < bottom) | (h < bottom) | (lo < bottom) | (c < bottom),
            f"price < {bottom:g} (implausible; prices must be at least "
            f"{BOUNDS_SECTION}.min_price = {bottom:g})",
        ),
        (
            (o >= top) | (h >= top) | (lo >= top) | (c >= top),
            f"price >= {top:g} (implausible; prices must be below "
            f"{BOUNDS_SECTION}.max_price = {top:g})",
        ),
        (lo > h, "low > high"),
        ((o < lo) | (o > h), "open outside [low, high]"),
        ((c < lo) | (c > h), "close outside [low, high]"),
        (v < 0, "negative volume"),
        *_time_rules(times, timeframe.ms),
    ]
    bad = _first_violation(rules)
    if bad is not None:
        row, rule = bad
        raise _fail(source, row, int(times[row]), "open_time", rule)
    zero = times[v == 0]
    return ValidationReport(
        source=source,
        kind="candles",
        rows=int(times.size),
        first_ms=int(times[0]) if times.size else None,
        last_ms=int(times[-1]) if times.size else None,
        step_ms=timeframe.ms,
        gaps=find_gaps(times, timeframe.ms),
        zero_volume_ms=tuple(int(t) for t in zero),
    )


def validate_funding(
    frame: pd.DataFrame,
    *,
    source: str,
    interval_ms: int = FUNDING_INTERVAL_MS,
    limits: Limits = DEFAULT_LIMITS,
) -> ValidationReport:
    """Check a funding frame: columns ``funding_time, funding_rate``; times plausible (see
    :class:`Limits`), unique and strictly increasing; rates finite and within
    ``limits.max_abs_funding_rate``. Gaps are steps longer than ``interval_ms`` (reported
    only)."""
    _check_columns(frame, FUNDING_COLUMNS, source)
    times = frame["funding_time"].to_numpy(dtype=np.int64)
    check_times_plausible(
        times, interval_ms, time_name="funding_time", source=source, limits=limits
    )
    rate = frame["funding_rate"].to_numpy(dtype=np.float64)
    cap = limits.max_abs_funding_rate
    rules = [
        (~np.isfinite(rate), "NaN or infinite funding_rate"),
        (
            np.abs(rate) > cap,
            f"|funding_rate| > {cap:g} per interval (implausible; the bound is "
            f"{BOUNDS_SECTION}.max_abs_funding_rate = {cap:g}; Binance caps rates near 0.03)",
        ),
        *_time_rules(times, None),
    ]
    bad = _first_violation(rules)
    if bad is not None:
        row, rule = bad
        raise _fail(source, row, int(times[row]), "funding_time", rule)
    return ValidationReport(
        source=source,
        kind="funding",
        rows=int(times.size),
        first_ms=int(times[0]) if times.size else None,
        last_ms=int(times[-1]) if times.size else None,
        step_ms=interval_ms,
        gaps=find_gaps(times, interval_ms),
    )


def resample_candles(
    frame: pd.DataFrame, src: Timeframe, dst: Timeframe, *, source: str = "resample input"
) -> ResampleResult:
    """Exact resample ``src`` -> ``dst``: first open, max high, min low, last close, sum volume.

    Buckets are aligned to the epoch (``open_time // dst.ms``, so 1d bars open at 00:00 UTC,
    like Binance's). Only complete buckets are emitted; incomplete ones are listed in
    ``partial`` with the bars present and expected. Nothing is invented.
    """
    if dst.ms <= src.ms or dst.ms % src.ms:
        raise ConfigError(
            f"cannot resample {src} to {dst}: the target must be a whole multiple of the source"
        )
    validate_candles(frame, src, source=source)
    expected = dst.ms // src.ms
    times = frame["open_time"].to_numpy(dtype=np.int64)
    buckets = times - times % dst.ms
    if times.size:
        starts = np.flatnonzero(np.r_[True, buckets[1:] != buckets[:-1]])
    else:
        starts = np.empty(0, dtype=np.int64)
    counts = np.diff(np.r_[starts, times.size])
    complete = counts == expected
    partial = tuple(
        PartialBucket(int(buckets[s]), int(n), expected)
        for s, n in zip(starts[~complete], counts[~complete], strict=True)
    )
    cols = {c: frame[c].to_numpy(dtype=np.float64) for c in CANDLE_COLUMNS[1:]}
    ends = starts + counts - 1
    if times.size:
        high = np.maximum.reduceat(cols["high"], starts)
        low = np.minimum.reduceat(cols["low"], starts)
        volume = _bucket_sums(cols["volume"], starts)
    else:
        high = low = volume = np.empty(0, dtype=np.float64)
    out = pd.DataFrame(
        {
            "open_time": buckets[starts][complete],
            "open": cols["open"][starts][complete],
            "high": high[complete],
            "low": low[complete],
            "close": cols["close"][ends][complete],
            "volume": volume[complete],
        }
    )
    out_times = out["open_time"].to_numpy(dtype=np.int64)
    return ResampleResult(
        frame=out, src=src, dst=dst, partial=partial, gaps=find_gaps(out_times, dst.ms)
    )


def _bucket_sums(values: F64, starts: npt.NDArray[np.intp]) -> F64:
    """Per-bucket sums, exact for decimal data.

    Exchange volumes are decimals with at most 8 places; summing their float images drifts by
    an ulp (3590.06669 becomes 3590.0666900000006). When every value is the float nearest to
    an 8-place decimal, the sum is done in integers of 1e-8 and rounded once, which gives the
    float nearest the exact decimal total, as the exchange's own coarser bar has it. Other
    data falls back to a plain float sum.
    """
    scaled = np.round(values * _DECIMAL_SCALE)
    exact = bool(np.all(np.abs(scaled) < _INT_SAFE)) and bool(
        np.array_equal(scaled / _DECIMAL_SCALE, values)
    )
    if not exact:
        return np.add.reduceat(values, starts)
    totals = np.add.reduceat(scaled.astype(np.int64), starts)
    if np.all(np.abs(totals) < _INT_SAFE):
        return totals / _DECIMAL_SCALE
    # int / int is correctly rounded in Python at any size
    return np.array([int(t) / 10**8 for t in totals], dtype=np.float64)


_DECIMAL_SCALE: Final[float] = 1e8
_INT_SAFE: Final[float] = 2.0**53


def empty_candles() -> pd.DataFrame:
    """A zero-row candle frame with the contract's columns and dtypes."""
    frame = pd.DataFrame({c: np.empty(0, dtype=np.float64) for c in CANDLE_COLUMNS})
    return frame.astype({"open_time": np.int64})


def normalize_candles(frame: pd.DataFrame) -> pd.DataFrame:
    """The contract's column order and dtypes (int64 ``open_time``, float64 rest), RangeIndex."""
    data = {"open_time": frame["open_time"].to_numpy(dtype=np.int64)}
    for col in CANDLE_COLUMNS[1:]:
        data[col] = frame[col].to_numpy(dtype=np.float64)
    return pd.DataFrame(data)


def normalize_funding(frame: pd.DataFrame) -> pd.DataFrame:
    """``funding_time`` int64, ``funding_rate`` float64, RangeIndex."""
    return pd.DataFrame(
        {
            "funding_time": frame["funding_time"].to_numpy(dtype=np.int64),
            "funding_rate": frame["funding_rate"].to_numpy(dtype=np.float64),
        }
    )
