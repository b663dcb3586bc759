"""The frames people have, turned into ATRA's frame contract (:mod:`atra.core.frames`).

Accepted candle frames:

* ATRA's own: an ``open_time`` column of int64 milliseconds since 1970 UTC (bar open time)
  and ``open high low close volume``;
* a pandas OHLCV frame indexed by a **tz-aware** :class:`~pandas.DatetimeIndex` of bar open
  times (any time zone; converted exactly to UTC milliseconds). A naive index is refused:
  its time zone is never assumed;
* an ``open_time`` column of tz-aware datetimes.

Column names match case-insensitively (``Open High Low Close Volume`` as pandas-datareader or
yfinance write them). Other columns are ignored and listed in
:attr:`CandleInput.ignored_columns`; that includes ``Adj Close``, which is never used as the
close. Two columns that differ only by case (``close`` and ``Close``), a column
:class:`~pandas.MultiIndex` (several tickers) or a non-numeric price are refused.

Then the rows go through the contract (:func:`~atra.core.frames.validate_candles`): times
strictly increasing and on the bar grid, prices finite and > 0, ``low <= open, close <=
high``, volume >= 0. The first broken rule is a one-line :class:`~atra.errors.DataError`
naming the source, the row (1-based, in the order given) and its time. Nothing is sorted,
filled, clipped or dropped; gaps are reported in the :class:`~atra.core.frames.ValidationReport`.

The bar size is the given ``timeframe`` or, when omitted, the most common spacing of the bars;
a given timeframe that is not that spacing is refused.

Pure: frames in, values out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
import pandas as pd

from atra.core.frames import (
    CANDLE_COLUMNS,
    FUNDING_COLUMNS,
    ValidationReport,
    ms_to_iso,
    normalize_candles,
    normalize_funding,
    validate_candles,
    validate_funding,
)
from atra.core.types import Timeframe
from atra.errors import ConfigError, DataError

__all__ = ["CandleInput", "FundingInput", "candles_from_frame", "funding_from_frame"]

I64 = npt.NDArray[np.int64]
_NS_PER_MS: Final[int] = 1_000_000
_LOCALIZE_HINT: Final[str] = (
    "localize it first, e.g. frame.tz_localize('UTC') if its times are UTC "
    "(a time zone is never assumed)"
)


@dataclass(frozen=True, slots=True, eq=False)
class CandleInput:
    """A candle frame in the contract's form, its bar size, report and what was not used."""

    frame: pd.DataFrame
    """``open_time`` (int64 ms, UTC) ``open high low close volume`` (float64), RangeIndex."""
    timeframe: Timeframe
    report: ValidationReport
    """Rows, span, gaps and zero-volume bars: reported, never filled or dropped."""
    ignored_columns: tuple[str, ...]
    """Columns of the input that are not part of the contract (``Adj Close`` among them)."""


@dataclass(frozen=True, slots=True, eq=False)
class FundingInput:
    """A funding frame in the contract's form and its report."""

    frame: pd.DataFrame
    """``funding_time`` (int64 ms, UTC), ``funding_rate`` (float64), RangeIndex."""
    report: ValidationReport
    ignored_columns: tuple[str, ...]


def _where(source: str) -> str:
    return source or "<frame>"


def _column_map(frame: pd.DataFrame, wanted: tuple[str, ...], source: str) -> dict[str, str]:
    """``{contract name: column of frame}`` for the wanted names present (case-insensitive)."""
    if isinstance(frame.columns, pd.MultiIndex):
        raise DataError(
            f"{_where(source)}: the columns are a MultiIndex {list(frame.columns[:3])}...; select "
            "one instrument first, e.g. frame.xs('BTC-USD', axis=1, level=1)"
        )
    found: dict[str, str] = {}
    labels: list[object] = list(frame.columns)
    for col in labels:
        if not isinstance(col, str):
            continue
        key = col.lower()
        if key not in wanted:
            continue
        if key in found:
            raise DataError(
                f"{_where(source)}: columns {found[key]!r} and {col!r} are both {key!r} "
                "(column names match case-insensitively); keep one"
            )
        found[key] = col
    return found


def _datetimes_ms(index: pd.DatetimeIndex, what: str, source: str) -> I64:
    """Exact UTC milliseconds of tz-aware datetimes; naive ones, NaT and sub-ms are refused."""
    if index.tz is None:
        raise DataError(f"{_where(source)}: {what} has no time zone (naive); {_LOCALIZE_HINT}")
    missing = np.flatnonzero(index.isna())
    if missing.size:
        raise DataError(f"{_where(source)}: row {int(missing[0]) + 1}: {what} is missing (NaT)")
    ns = index.tz_convert("UTC").as_unit("ns").asi8
    partial = np.flatnonzero(ns % _NS_PER_MS)
    if partial.size:
        row = int(partial[0])
        raise DataError(
            f"{_where(source)}: row {row + 1}: {what} {index[row]} is not a whole millisecond"
        )
    out: I64 = (ns // _NS_PER_MS).astype(np.int64)
    return out


def _times_ms(frame: pd.DataFrame, time_col: str | None, name: str, source: str) -> I64:
    """The time of each row from the ``name`` column (``time_col``: its name in ``frame``) or,
    without one, from a tz-aware DatetimeIndex."""
    index = frame.index
    if time_col is None:
        if isinstance(index, pd.DatetimeIndex):
            return _datetimes_ms(index, "the DatetimeIndex", source)
        raise DataError(
            f"{_where(source)}: expected a tz-aware DatetimeIndex of bar times or a {name} "
            f"column (int64 ms since 1970 UTC); got a {type(index).__name__} and columns "
            f"{[str(c) for c in frame.columns]}"
        )
    if isinstance(index, pd.DatetimeIndex) and index.tz is None:
        raise DataError(
            f"{_where(source)}: the DatetimeIndex beside the {name} column has no time zone; "
            f"{_LOCALIZE_HINT}, or drop it with frame.reset_index(drop=True)"
        )
    col = frame[time_col]
    if pd.api.types.is_datetime64_any_dtype(col.dtype):
        times = _datetimes_ms(pd.DatetimeIndex(col), f"column {time_col!r}", source)
    elif pd.api.types.is_integer_dtype(col.dtype) and not pd.api.types.is_bool_dtype(col.dtype):
        if col.isna().any():  # a nullable integer column
            row = int(np.flatnonzero(col.isna().to_numpy())[0])
            raise DataError(f"{_where(source)}: row {row + 1}: {time_col} is missing")
        times = col.to_numpy(dtype=np.int64)
    else:
        raise DataError(
            f"{_where(source)}: column {time_col!r} has dtype {col.dtype}; expected int64 "
            "milliseconds since 1970 UTC or tz-aware datetimes"
        )
    if isinstance(index, pd.DatetimeIndex):
        from_index = _datetimes_ms(index, "the DatetimeIndex", source)
        differ = np.flatnonzero(from_index != times)
        if differ.size:
            row = int(differ[0])
            said, col_said = ms_to_iso(int(from_index[row])), ms_to_iso(int(times[row]))
            raise DataError(
                f"{_where(source)}: row {row + 1}: the DatetimeIndex says {said} but "
                f"{time_col} says {col_said}"
            )
    return times


def _numbers(frame: pd.DataFrame, col: str, source: str) -> npt.NDArray[np.float64]:
    """A numeric column as float64 (missing values as NaN, which validation refuses by row)."""
    series = frame[col]
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype) or not pd.api.types.is_numeric_dtype(dtype):
        raise DataError(f"{_where(source)}: column {col!r} has dtype {dtype}; expected numbers")
    return series.to_numpy(dtype=np.float64, na_value=np.nan)


def _most_common_step(times: I64) -> int | None:
    """The most common positive spacing of ``times`` (None with fewer than two bars)."""
    diffs = np.diff(times)
    diffs = diffs[diffs > 0]
    if diffs.size == 0:
        return None
    values, counts = np.unique(diffs, return_counts=True)
    return int(values[np.argmax(counts)])


def _bar_size(times: I64, timeframe: Timeframe | None, source: str) -> Timeframe:
    step = _most_common_step(times)
    if timeframe is not None:
        if step is not None and step != timeframe.ms:
            raise DataError(
                f"{_where(source)}: timeframe {timeframe} given, but the bars are mostly "
                f"{step // 60_000} minutes apart"
            )
        return timeframe
    if step is None:
        raise DataError(
            f"{_where(source)}: cannot infer the bar size from {times.size} bar(s) in time "
            "order; pass timeframe (e.g. '1h')"
        )
    try:
        return Timeframe.from_ms(step)
    except ConfigError:
        allowed = ", ".join(tf.value for tf in Timeframe)
        raise DataError(
            f"{_where(source)}: the bars are mostly {step} ms apart, which is no supported bar "
            f"size ({allowed})"
        ) from None


def candles_from_frame(
    frame: pd.DataFrame, *, source: str, timeframe: Timeframe | None = None
) -> CandleInput:
    """Check and convert a candle frame (see the module docstring)."""
    if not isinstance(frame, pd.DataFrame):
        raise DataError(
            f"{_where(source)}: expected a pandas DataFrame, got {type(frame).__name__}"
        )
    if frame.empty:
        raise DataError(f"{_where(source)}: no rows (expected OHLCV bars)")
    cols = _column_map(frame, CANDLE_COLUMNS, source)
    missing = [c for c in CANDLE_COLUMNS[1:] if c not in cols]
    if missing:
        adj = [str(c) for c in frame.columns if str(c).lower() == "adj close"]
        note = f" ({adj[0]!r} is not used as the close)" if adj and "close" in missing else ""
        raise DataError(
            f"{_where(source)}: missing column(s) {', '.join(missing)}{note}; expected "
            "open, high, low, close, volume (any case)"
        )
    times = _times_ms(frame, cols.get("open_time"), "open_time", source)
    data: dict[str, npt.NDArray[np.int64] | npt.NDArray[np.float64]] = {"open_time": times}
    for name in CANDLE_COLUMNS[1:]:
        data[name] = _numbers(frame, cols[name], source)
    contract = pd.DataFrame(data)
    tf = _bar_size(times, timeframe, source)
    report = validate_candles(contract, tf, source=source)
    used = set(cols.values())
    ignored = tuple(str(c) for c in frame.columns if c not in used)
    return CandleInput(normalize_candles(contract), tf, report, ignored)


def funding_from_frame(frame: pd.DataFrame, *, source: str) -> FundingInput:
    """Check and convert a funding frame: ``funding_time`` (int64 ms or tz-aware datetimes) or
    a tz-aware DatetimeIndex, and ``funding_rate`` (a fraction per settlement)."""
    if not isinstance(frame, pd.DataFrame):
        raise DataError(
            f"{_where(source)}: expected a pandas DataFrame, got {type(frame).__name__}"
        )
    if frame.empty:
        raise DataError(f"{_where(source)}: no rows (expected funding events)")
    cols = _column_map(frame, FUNDING_COLUMNS, source)
    if "funding_rate" not in cols:
        raise DataError(f"{_where(source)}: missing column funding_rate (a fraction, 1e-4 = 0.01%)")
    times = _times_ms(frame, cols.get("funding_time"), "funding_time", source)
    contract = pd.DataFrame(
        {"funding_time": times, "funding_rate": _numbers(frame, cols["funding_rate"], source)}
    )
    report = validate_funding(contract, source=source)
    used = set(cols.values())
    ignored = tuple(str(c) for c in frame.columns if c not in used)
    return FundingInput(normalize_funding(contract), report, ignored)
