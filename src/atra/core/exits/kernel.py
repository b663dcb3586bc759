"""The exit kernel: one trade's path through SL / TP1 / TP2 / time barrier, bar by bar.

The triple-barrier labeller (:mod:`atra.core.labels`) and the backtester run this same code,
so a label is exactly what the trade would have done in the backtest. Its typed API (spec,
validated inputs, results) is :mod:`atra.core.exits.api`.

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
from typing import Final

import numpy as np
import numpy.typing as npt
from numba import njit

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
