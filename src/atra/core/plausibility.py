"""Plausible rows: times, prices and funding rates a real exchange could have produced.

Pure: the core has no clock, so callers that have one pass ``now_ms``. Times must lie between
the exchange's launch (:data:`EXCHANGE_LAUNCH_MS`; ``Limits.earliest_ms``) and one
step past ``now_ms`` (or :data:`LATEST_MS`, 2100-01-01, without a clock). A time that looks
like seconds (~1e9), microseconds (~1e15) or nanoseconds (~1e18) rather than milliseconds
(1.5e12..4.1e12 for 2017..2100) is refused with the unit it looks like and how to convert.
Prices and funding rates are bounded by :class:`~atra.core.bounds.Limits` (the config's
``[data.bounds]``).
"""

from __future__ import annotations

import datetime as dt
from typing import Final

import numpy as np
import numpy.typing as npt

from atra.core.bounds import (
    BOUNDS_SECTION,
    DEFAULT_LIMITS,
    EXCHANGE_LAUNCH_MS,
    LATEST_MS,
    MAX_ABS_FUNDING_RATE,
    MAX_PRICE,
    MIN_PRICE,
    Limits,
)
from atra.core.types import Timeframe
from atra.errors import DataError

__all__ = [
    "BOUNDS_SECTION",
    "DEFAULT_LIMITS",
    "EXCHANGE_LAUNCH_MS",
    "LATEST_MS",
    "MAX_ABS_FUNDING_RATE",
    "MAX_PRICE",
    "MIN_PRICE",
    "Limits",
    "check_bar_spacing",
    "check_times_plausible",
    "implausible_time",
    "ms_to_iso",
]

_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

_UNITS: Final[tuple[tuple[str, float, str], ...]] = (
    ("seconds", 1e-3, "multiply by 1,000"),
    ("microseconds", 1e3, "divide by 1,000"),
    ("nanoseconds", 1e6, "divide by 1,000,000"),
)
"""Other epoch units: name, size of one of our milliseconds in that unit, the conversion."""


def _latest_text(limits: Limits, step_ms: int) -> str:
    if limits.now_ms is None:
        return ms_to_iso(LATEST_MS)
    return f"{ms_to_iso(limits.now_ms + step_ms)} (now + one {step_ms:,} ms step)"


def implausible_time(ts_ms: int, step_ms: int, limits: Limits = DEFAULT_LIMITS) -> str | None:
    """Why ``ts_ms`` is not a plausible millisecond time (``None`` if it is). A value that is
    a plausible time in seconds, microseconds or nanoseconds is named as such, with the
    conversion: ``looks like microseconds (1.7e+15); divide by 1,000 to get milliseconds``."""
    return _time_reason(ts_ms, step_ms, limits, "")


def _time_reason(ts_ms: int, step_ms: int, limits: Limits, where: str) -> str | None:
    if limits.earliest_ms <= ts_ms <= limits.latest_ms(step_ms):
        return None
    if ts_ms < 0:
        return f"is negative ({ts_ms:.3g}{where}): times before 1970 are not market data"
    for unit, scale, how in _UNITS:
        if limits.earliest_ms * scale <= ts_ms <= LATEST_MS * scale:
            return f"looks like {unit} ({ts_ms:.3g}{where}); {how} to get milliseconds"
    if ts_ms < limits.earliest_ms:
        return (
            f"{ms_to_iso(ts_ms)}{where} is before the earliest plausible time "
            f"{ms_to_iso(limits.earliest_ms)} (the exchange's launch)"
        )
    return (
        f"{ms_to_iso(ts_ms)}{where} is after the latest plausible time "
        f"{_latest_text(limits, step_ms)}"
    )


def check_times_plausible(
    times: npt.ArrayLike, step_ms: int, *, time_name: str, source: str, limits: Limits
) -> None:
    """Refuse the first implausible time with a one-line DataError naming the row, e.g.
    ``f.parquet: open_time looks like microseconds (1.7e+15 at row 1); divide by 1,000 to get
    milliseconds``."""
    arr = np.asarray(times, dtype=np.int64)
    bad = np.flatnonzero((arr < limits.earliest_ms) | (arr > limits.latest_ms(step_ms)))
    if bad.size:
        row = int(bad[0])
        reason = _time_reason(int(arr[row]), step_ms, limits, f" at row {row + 1}")
        raise DataError(f"{source or '<frame>'}: {time_name} {reason}")


def check_bar_spacing(
    times: npt.ArrayLike, timeframe: Timeframe, *, source: str, named_by: str
) -> None:
    """Refuse bars whose spacing disagrees with ``timeframe`` (which ``named_by`` gave, e.g.
    ``"the file name"``): any step shorter than one bar, or, with two or more steps, no step
    of exactly one bar (1h bars in a file named ``_5m``). Gaps alone are fine."""
    arr = np.asarray(times, dtype=np.int64)
    if arr.size < 2:
        return
    steps = np.diff(arr)
    short = np.flatnonzero((steps > 0) & (steps < timeframe.ms))
    if short.size:
        i = int(short[0])  # the step from data row i + 1 to data row i + 2 (1-based)
        raise DataError(
            f"{source or '<frame>'}: row {i + 2}: bars {_span_text(int(steps[i]))} apart, "
            f"but {named_by} says {timeframe} (expected one bar per {timeframe})"
        )
    positive = steps[steps > 0]
    if positive.size >= 2 and not (positive == timeframe.ms).any():
        smallest = int(positive.min())
        raise DataError(
            f"{source or '<frame>'}: bars are at least {_span_text(smallest)} apart "
            f"(no two rows {timeframe} apart), but {named_by} says {timeframe}"
        )


def _span_text(ms: int) -> str:
    for tf in Timeframe:
        if tf.ms == ms:
            return tf.value
    return f"{ms:,} ms"


def ms_to_iso(ts_ms: int) -> str:
    """``1704067200000`` -> ``"2024-01-01T00:00:00Z"`` (milliseconds shown only when non-zero);
    a value past year 9999 (never a valid time) is shown as ``<n> ms``, never an exception."""
    try:
        stamp = _EPOCH + dt.timedelta(milliseconds=ts_ms)
    except OverflowError:
        return f"{ts_ms} ms"
    text = stamp.strftime("%Y-%m-%dT%H:%M:%S")
    if ts_ms % 1000:
        text += f".{ts_ms % 1000:03d}"
    return text + "Z"
