"""The exit kernel: one trade's path through SL / TP1 / TP2 / time barrier, bar by bar.

The triple-barrier labeller (:mod:`atra.core.labels`) and the backtester run this same code,
so a label is exactly what the trade would have done in the backtest.

Rules (WORKLOAD.md's trade, generalised to two take-profits):

* The trade fills at ``P = open[e]`` (``e`` = the bar after the signal), moved adversely by
  ``slippage_bps`` when set. The signal's barrier *distances* are re-anchored at ``P``:
  ``SL = P - side*sl_dist``, ``TP1 = P + side*tp1_dist``, ``TP2 = P + side*tp2_dist``.
* Bars ``e .. e+H-1`` are walked in order (the entry bar included). In each bar the stop is
  checked first, then the take-profits: a bar whose range holds both counts as a stop (the
  conservative order). A long's stop is hit when ``low <= stop``, a take-profit when
  ``high >= TP``; a short mirrors this.
* Fills happen at the barrier price, or at the bar's open when the bar opens beyond the
  barrier (gap-through; a TP gap fills at the better open price).
* TP1 closes ``tp1_fraction`` of the position (1.0: a single take-profit, as in the workload).
  The remainder can reach TP2 in the same bar (the path to TP2 passes TP1 first). With
  ``move_to_be`` the stop moves to the entry fill price ``P`` from the *next* bar on (reason
  BE); otherwise the original SL keeps guarding the remainder.
* Time barrier: whatever is left exits at ``open[e+H]``; no barrier is checked on that bar.
* If the data end (``end_bar``) before the trade resolves, the status is INCOMPLETE: no exit
  is invented, the return is NaN.
* Fees: ``fee_entry`` on entry, ``fee_tp`` on take-profit fills (maker or taker), ``fee_stop``
  on stop and time exits (taker). Slippage hits market fills only (entry, stops, time exit).
* ``ret_net`` is the trade's net return on the equity it committed, ``u * P * (1 + fee_entry)``
  for ``u`` units, which gives WORKLOAD.md's formulas for a single full exit:
  long ``x(1-f)/(1+f) - 1``, short ``((1-f) - x(1+f))/(1+f)``, ``x = exit/P``.
* ``label`` is the triple-barrier label: +1 when a take-profit is touched first (even if the
  remainder later stops out), -1 when the stop is, 0 at the time barrier.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
import pandas as pd
from numba import njit

from atra.errors import ConfigError, DataError

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
I8 = npt.NDArray[np.int8]

# reason codes of an exit leg
REASON_NONE: Final[int] = 0
REASON_SL: Final[int] = 1
REASON_TP1: Final[int] = 2
REASON_TP2: Final[int] = 3
REASON_TIME: Final[int] = 4
REASON_BE: Final[int] = 5
REASON_NAMES: Final[dict[int, str]] = {
    REASON_NONE: "NONE",
    REASON_SL: "SL",
    REASON_TP1: "TP1",
    REASON_TP2: "TP2",
    REASON_TIME: "TIME",
    REASON_BE: "BE",
}

# status of an event
STATUS_DONE: Final[int] = 0
STATUS_INCOMPLETE: Final[int] = 1

_EPS_FRACTION = 1e-12


@njit(cache=True)
def _leg_gain_nb(side: int, entry: float, price: float, fee_entry: float, fee_exit: float) -> float:
    """Net cash of one unit round trip (entry at ``entry``, exit at ``price``), fees included."""
    if side == 1:
        return price * (1.0 - fee_exit) - entry * (1.0 + fee_entry)
    return entry * (1.0 - fee_entry) - price * (1.0 + fee_exit)


@njit(cache=True)
def simulate_exit_nb(
    open_: F64,
    high: F64,
    low: F64,
    entry_bar: int,
    end_bar: int,
    side: int,
    sl_dist: float,
    tp1_dist: float,
    tp2_dist: float,
    horizon: int,
    tp1_fraction: float,
    move_to_be: bool,
    fee_entry: float,
    fee_tp: float,
    fee_stop: float,
    slippage: float,
) -> tuple[int, int, float, int, float, int, float, int, float, int, float, int, float]:
    """Simulate one trade; callable from other ``@njit`` loops (the backtester's).

    ``end_bar`` is the exclusive end of this series' bars in the arrays (several symbols may
    share one concatenated array); ``slippage`` is a fraction (``bps / 1e4``).

    Returns ``(status, label, entry_price, leg1_bar, leg1_price, leg1_reason, leg1_fraction,
    leg2_bar, leg2_price, leg2_reason, leg2_fraction, exit_bar, ret_net)``; unused legs have
    bar -1, NaN price, reason 0 and fraction 0. ``leg*_price`` are the fill prices after
    slippage. An INCOMPLETE event has label 0, exit_bar -1 and NaN return.
    """
    stop_end = min(end_bar, open_.shape[0])
    status = STATUS_INCOMPLETE
    label = 0
    entry = math.nan
    l1_bar = -1
    l1_price = math.nan
    l1_reason = REASON_NONE
    l1_frac = 0.0
    l2_bar = -1
    l2_price = math.nan
    l2_reason = REASON_NONE
    l2_frac = 0.0
    exit_bar = -1
    ret = math.nan
    if entry_bar < 0 or entry_bar >= stop_end:
        return (status, label, entry, l1_bar, l1_price, l1_reason, l1_frac, l2_bar, l2_price,
                l2_reason, l2_frac, exit_bar, ret)  # fmt: skip

    entry = open_[entry_bar] * (1.0 + side * slippage)
    stop = entry - side * sl_dist
    tp1 = entry + side * tp1_dist
    tp2 = entry + side * tp2_dist
    stop_reason = REASON_SL
    remaining = 1.0
    tp1_done = False
    n_legs = 0
    gain = 0.0  # sum over legs of fraction * net cash per unit

    last = entry_bar + horizon
    for j in range(entry_bar, last + 1):
        if j >= stop_end:
            break  # data ended before the trade resolved
        o = open_[j]
        price = math.nan
        reason = REASON_NONE
        frac = 0.0
        fee = 0.0
        if j == last:  # time barrier: market exit at this bar's open
            price = o * (1.0 - side * slippage)
            reason = REASON_TIME
            frac = remaining
            fee = fee_stop
        else:
            h = high[j]
            lo = low[j]
            # 1) the stop, checked first
            if side == 1:
                if o <= stop:
                    price = o
                elif lo <= stop:
                    price = stop
            elif o >= stop:
                price = o
            elif h >= stop:
                price = stop
            if not math.isnan(price):
                price = price * (1.0 - side * slippage)
                reason = stop_reason
                frac = remaining
                fee = fee_stop
                if not tp1_done:
                    label = -1
            elif not tp1_done:
                # 2) TP1
                if side == 1:
                    if o >= tp1:
                        price = o
                    elif h >= tp1:
                        price = tp1
                elif o <= tp1:
                    price = o
                elif lo <= tp1:
                    price = tp1
                if not math.isnan(price):
                    tp1_done = True
                    label = 1
                    frac = min(tp1_fraction, remaining)
                    remaining -= frac
                    reason = REASON_TP1
                    fee = fee_tp
                    if remaining > _EPS_FRACTION:
                        # partial: record TP1 now, the rest may reach TP2 in this same bar
                        gain += frac * _leg_gain_nb(side, entry, price, fee_entry, fee)
                        l1_bar = j
                        l1_price = price
                        l1_reason = reason
                        l1_frac = frac
                        n_legs = 1
                        if move_to_be:
                            stop = entry  # effective from the next bar
                            stop_reason = REASON_BE
                        price = math.nan
                        reason = REASON_NONE
                        frac = 0.0
            if tp1_done and math.isnan(price) and reason == REASON_NONE and remaining > 0.0:
                # 3) TP2 for the remainder (also in the TP1 bar)
                if side == 1:
                    if o >= tp2:
                        price = o
                    elif h >= tp2:
                        price = tp2
                elif o <= tp2:
                    price = o
                elif lo <= tp2:
                    price = tp2
                if not math.isnan(price):
                    reason = REASON_TP2
                    frac = remaining
                    fee = fee_tp
        if reason != REASON_NONE:
            gain += frac * _leg_gain_nb(side, entry, price, fee_entry, fee)
            if n_legs == 0:
                l1_bar = j
                l1_price = price
                l1_reason = reason
                l1_frac = frac
            else:
                l2_bar = j
                l2_price = price
                l2_reason = reason
                l2_frac = frac
            status = STATUS_DONE
            exit_bar = j
            ret = gain / (entry * (1.0 + fee_entry))
            break
    if status != STATUS_DONE:
        label = 0
    return (status, label, entry, l1_bar, l1_price, l1_reason, l1_frac, l2_bar, l2_price,
            l2_reason, l2_frac, exit_bar, ret)  # fmt: skip


@njit(cache=True)
def simulate_exits_nb(
    open_: F64,
    high: F64,
    low: F64,
    entry_bar: I64,
    end_bar: I64,
    side: I8,
    sl_dist: F64,
    tp1_dist: F64,
    tp2_dist: F64,
    horizon: I64,
    tp1_fraction: float,
    move_to_be: bool,
    fee_entry: float,
    fee_tp: float,
    fee_stop: float,
    slippage: float,
) -> tuple[I8, I8, F64, I64, F64, I8, F64, I64, F64, I8, F64, I64, F64]:
    """Run :func:`simulate_exit_nb` for every event; one output array per tuple field."""
    n = entry_bar.shape[0]
    status = np.empty(n, np.int8)
    label = np.empty(n, np.int8)
    entry = np.empty(n, np.float64)
    l1_bar = np.empty(n, np.int64)
    l1_price = np.empty(n, np.float64)
    l1_reason = np.empty(n, np.int8)
    l1_frac = np.empty(n, np.float64)
    l2_bar = np.empty(n, np.int64)
    l2_price = np.empty(n, np.float64)
    l2_reason = np.empty(n, np.int8)
    l2_frac = np.empty(n, np.float64)
    exit_bar = np.empty(n, np.int64)
    ret = np.empty(n, np.float64)
    for i in range(n):
        r = simulate_exit_nb(
            open_, high, low, entry_bar[i], end_bar[i], side[i], sl_dist[i], tp1_dist[i],
            tp2_dist[i], horizon[i], tp1_fraction, move_to_be, fee_entry, fee_tp, fee_stop,
            slippage,
        )  # fmt: skip
        status[i] = r[0]
        label[i] = r[1]
        entry[i] = r[2]
        l1_bar[i] = r[3]
        l1_price[i] = r[4]
        l1_reason[i] = r[5]
        l1_frac[i] = r[6]
        l2_bar[i] = r[7]
        l2_price[i] = r[8]
        l2_reason[i] = r[9]
        l2_frac[i] = r[10]
        exit_bar[i] = r[11]
        ret[i] = r[12]
    return (status, label, entry, l1_bar, l1_price, l1_reason, l1_frac, l2_bar, l2_price,
            l2_reason, l2_frac, exit_bar, ret)  # fmt: skip


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
        arguments of :func:`simulate_exit_nb` / :func:`simulate_exits_nb` (slippage as a
        fraction)."""
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
