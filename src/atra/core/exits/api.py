"""Typed API of the exit kernel (:mod:`atra.core.exits.kernel`): its spec, inputs and results.

:class:`ExitSpec` (how a trade exits: TP1 fraction, break-even, fees, slippage),
:class:`EventArrays` (validated per-event inputs, from :func:`event_arrays`),
:class:`ExitResult` (one row per event), :func:`run_exits` on already-checked arrays and
:func:`simulate_exits`, which validates everything first. Bad input is a one-line
:class:`~atra.errors.DataError` naming the array and the first bad row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from atra.core.exits.kernel import REASON_NONE, STATUS_DONE, simulate_exits_nb
from atra.errors import ConfigError, DataError

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
I8 = npt.NDArray[np.int8]


@dataclass(frozen=True, slots=True)
class ExitSpec:
    """How a trade exits, shared by labels and backtests. Fees are fractions (0.0004 = 4 bps)."""

    tp1_fraction: float = 1.0
    move_to_be: bool = False
    fee_entry: float = 0.0004
    fee_tp: float = 0.0004
    fee_stop: float = 0.0004
    slippage_bps: float = 0.0

    def __post_init__(self) -> None:
        if not (0.0 < self.tp1_fraction <= 1.0):
            raise ConfigError(f"tp1_fraction must be in (0, 1], got {self.tp1_fraction}")
        for name in ("fee_entry", "fee_tp", "fee_stop"):
            fee = getattr(self, name)
            if not (math.isfinite(fee) and 0.0 <= fee < 0.1):
                raise ConfigError(f"{name} must be a fraction in [0, 0.1), got {fee}")
        if not (math.isfinite(self.slippage_bps) and 0.0 <= self.slippage_bps < 1000.0):
            raise ConfigError(f"slippage_bps must be in [0, 1000), got {self.slippage_bps}")

    def kernel_args(self) -> tuple[float, bool, float, float, float, float]:
        """``(tp1_fraction, move_to_be, fee_entry, fee_tp, fee_stop, slippage)``: the trailing
        arguments of :func:`~atra.core.exits.kernel.simulate_exit_nb` /
        :func:`~atra.core.exits.kernel.simulate_exits_nb` (slippage as a fraction)."""
        return (
            float(self.tp1_fraction),
            bool(self.move_to_be),
            float(self.fee_entry),
            float(self.fee_tp),
            float(self.fee_stop),
            float(self.slippage_bps) / 1e4,
        )


@dataclass(frozen=True, slots=True)
class ExitResult:
    """Per-event output of the exit kernel (arrays of equal length, one row per event)."""

    status: I8
    label: I8
    entry_price: F64
    leg1_bar: I64
    leg1_price: F64
    leg1_reason: I8
    leg1_fraction: F64
    leg2_bar: I64
    leg2_price: F64
    leg2_reason: I8
    leg2_fraction: F64
    exit_bar: I64
    ret_net: F64

    def __len__(self) -> int:
        return int(self.status.shape[0])

    @property
    def complete(self) -> npt.NDArray[np.bool_]:
        """True where the trade resolved inside the data."""
        return np.asarray(self.status == STATUS_DONE)

    @property
    def final_reason(self) -> I8:
        """Reason code of the last exit leg (leg 2 when there is one)."""
        return np.where(self.leg2_reason != REASON_NONE, self.leg2_reason, self.leg1_reason)

    def to_frame(self) -> pd.DataFrame:
        """The arrays as columns of a DataFrame (reason codes kept as integers)."""
        return pd.DataFrame({name: getattr(self, name) for name in self.__dataclass_fields__})


def _f64(values: npt.ArrayLike, name: str) -> F64:
    arr = np.ascontiguousarray(np.asarray(values), dtype=np.float64)
    if arr.ndim != 1:
        raise DataError(f"{name}: expected a 1-D array, got shape {arr.shape}")
    return arr


def _int(values: npt.ArrayLike, name: str) -> I64:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise DataError(f"{name}: expected a 1-D array, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"{name}: expected integers, got dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.int64)


def _first_bad(mask: npt.NDArray[np.bool_]) -> int:
    return int(np.flatnonzero(mask)[0])


@dataclass(frozen=True, slots=True)
class EventArrays:
    """Validated per-event inputs of the kernel (see :func:`event_arrays`)."""

    entry_bar: I64
    side: I8
    sl_dist: F64
    tp1_dist: F64
    tp2_dist: F64
    horizon_bars: I64

    def __len__(self) -> int:
        return int(self.entry_bar.shape[0])

    def take(self, rows: npt.NDArray[np.intp] | slice) -> EventArrays:
        """The events at ``rows`` (an index array or a slice)."""
        return EventArrays(
            self.entry_bar[rows],
            self.side[rows],
            self.sl_dist[rows],
            self.tp1_dist[rows],
            self.tp2_dist[rows],
            self.horizon_bars[rows],
        )


def event_arrays(
    entry_bar: npt.ArrayLike,
    side: npt.ArrayLike,
    sl_dist: npt.ArrayLike,
    tp1_dist: npt.ArrayLike,
    tp2_dist: npt.ArrayLike,
    horizon_bars: npt.ArrayLike,
) -> EventArrays:
    """Check the per-event arrays; a bad value is a one-line :class:`DataError` naming the
    array and the first bad row (side not +-1, distances not > 0, ``tp2_dist < tp1_dist``,
    horizon < 1, negative entry bar, lengths that differ)."""
    eb = _int(entry_bar, "entry_bar")
    n = eb.shape[0]
    sd = _int(side, "side")
    sl = _f64(sl_dist, "sl_dist")
    t1 = _f64(tp1_dist, "tp1_dist")
    t2 = _f64(tp2_dist, "tp2_dist")
    hz = _int(horizon_bars, "horizon_bars")
    arrays: dict[str, npt.NDArray[np.generic]] = {
        "side": sd,
        "sl_dist": sl,
        "tp1_dist": t1,
        "tp2_dist": t2,
        "horizon_bars": hz,
        "entry_bar": eb,
    }
    for name, values in arrays.items():
        if values.shape[0] != n:
            raise DataError(f"{name} has {values.shape[0]} rows, entry_bar has {n}")
    checks: tuple[tuple[str, npt.NDArray[np.bool_], str], ...] = (
        ("side", (sd != 1) & (sd != -1), "1 (long) or -1 (short)"),
        ("sl_dist", ~(np.isfinite(sl) & (sl > 0.0)), "a finite distance > 0"),
        ("tp1_dist", ~(np.isfinite(t1) & (t1 > 0.0)), "a finite distance > 0"),
        ("tp2_dist", ~(np.isfinite(t2) & (t2 >= t1)), "a finite distance >= tp1_dist"),
        ("horizon_bars", hz < 1, "at least 1 bar"),
        ("entry_bar", eb < 0, "a bar index >= 0"),
    )
    for name, bad, expected in checks:
        if bad.any():
            row = _first_bad(bad)
            value = arrays[name][row]
            raise DataError(f"event row {row}: {name} = {value}, expected {expected}")
    return EventArrays(eb, sd.astype(np.int8), sl, t1, t2, hz)


def run_exits(
    open_: F64,
    high: F64,
    low: F64,
    events: EventArrays,
    spec: ExitSpec,
    end_bar: I64 | None = None,
) -> ExitResult:
    """Run the kernel on already-checked arrays (float64 prices, :func:`event_arrays`).

    ``end_bar`` defaults to the length of the price arrays for every event.
    """
    end = np.full(len(events), open_.shape[0], np.int64) if end_bar is None else end_bar
    out = simulate_exits_nb(
        open_, high, low, events.entry_bar, end, events.side, events.sl_dist,
        events.tp1_dist, events.tp2_dist, events.horizon_bars, *spec.kernel_args(),
    )  # fmt: skip
    return ExitResult(*out)


def simulate_exits(
    open_: npt.ArrayLike,
    high: npt.ArrayLike,
    low: npt.ArrayLike,
    entry_bar: npt.ArrayLike,
    side: npt.ArrayLike,
    sl_dist: npt.ArrayLike,
    tp1_dist: npt.ArrayLike,
    tp2_dist: npt.ArrayLike,
    horizon_bars: npt.ArrayLike,
    spec: ExitSpec,
    end_bar: npt.ArrayLike | None = None,
) -> ExitResult:
    """Validate the inputs and run the exit kernel for every event.

    ``entry_bar`` is the fill bar ``e`` (signal bar + 1). ``end_bar`` (default: the length of
    the price arrays) is each event's exclusive end of data. Bad input raises a one-line
    :class:`DataError` naming the array and the first bad row.
    """
    o = _f64(open_, "open")
    h = _f64(high, "high")
    lo = _f64(low, "low")
    if not (o.shape == h.shape == lo.shape):
        raise DataError(f"open/high/low lengths differ: {o.shape[0]}, {h.shape[0]}, {lo.shape[0]}")
    for name, arr in (("open", o), ("high", h), ("low", lo)):
        if arr.size and not (arr.min() > 0.0 and arr.max() < np.inf):
            row = _first_bad(~(np.isfinite(arr) & (arr > 0.0)))
            raise DataError(f"{name}[{row}] = {arr[row]}: expected a finite positive price")
    ev = event_arrays(entry_bar, side, sl_dist, tp1_dist, tp2_dist, horizon_bars)
    n = len(ev)
    end = np.full(n, o.shape[0], np.int64) if end_bar is None else _int(end_bar, "end_bar")
    if end.shape[0] != n:
        raise DataError(f"end_bar has {end.shape[0]} rows, entry_bar has {n}")
    bad = (end < 0) | (end > o.shape[0])
    if bad.any():
        row = _first_bad(bad)
        raise DataError(
            f"event row {row}: end_bar = {end[row]}, expected a bar index in [0, {o.shape[0]}]"
        )
    return run_exits(o, h, lo, ev, spec, end)
