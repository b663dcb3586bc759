"""Numba kernels of WORKLOAD.md's benchmark: arrays only, ``@njit(cache=True)``.

:func:`workload_symbol_nb` runs the benchmark on one symbol (indicators, events, an all-in
book, one position at a time) on the exit kernel :func:`atra.core.exits.kernel.simulate_exit_nb`, so
every trade exits exactly as its triple-barrier label says. Bars are positions in the symbol's
own rows: a gap in the data is not a bar. The typed API is
:func:`atra.core.backtest.workload.run_workload`.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit

from atra.core.exits.kernel import REASON_TIME, STATUS_DONE, simulate_exit_nb

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
I8 = npt.NDArray[np.int8]


# --------------------------------------------------------------------------------------------
# indicators (bit-identical to pandas ``ewm(..., adjust=False).mean()``)


@njit(cache=True)
def pandas_alpha_nb(alpha: float) -> float:
    """``alpha`` as pandas re-derives it from ``com = 1/alpha - 1`` (``1 / (1 + com)``)."""
    return 1.0 / (1.0 + (1.0 / alpha - 1.0))


@njit(cache=True)
def workload_indicators_nb(
    high: F64,
    low: F64,
    close: F64,
    start: int,
    end: int,
    ema_fast: int,
    ema_slow: int,
    atr_n: int,
    d: F64,
    atr: F64,
) -> None:
    """``d = EMA_fast - EMA_slow`` of close and Wilder's ATR over rows ``start:end`` (in place).

    One fused loop over the three recursions (independent chains overlap in the CPU), with
    pandas' arithmetic: ``alpha = 1/(1 + com)``, seeded with the first value, each update
    ``((1-a) w + a x) / ((1-a) + a)`` skipped when ``w == x``. The denominator ``fl(fl(1-a) + a)``
    is exactly 1.0 for every ``0 < a < 1`` (``fl(1-a)`` is within half an ulp of ``1-a``, less
    than half an ulp of 1), so the division is the identity and is left out: the values are
    bit-identical to ``ewm(span=n, adjust=False)`` / ``ewm(alpha=1/n, adjust=False)``.
    ``TR_0 = high - low``.
    """
    if end <= start:
        return
    af = 1.0 / (1.0 + (ema_fast - 1) / 2.0)
    as_ = 1.0 / (1.0 + (ema_slow - 1) / 2.0)
    aa = pandas_alpha_nb(1.0 / atr_n)
    of = 1.0 - af
    os_ = 1.0 - as_
    oa = 1.0 - aa
    wf = close[start]
    ws = wf
    wa = high[start] - low[start]
    d[start] = wf - ws
    atr[start] = wa
    for i in range(start + 1, end):
        c = close[i]
        pc = close[i - 1]
        h = high[i]
        lo = low[i]
        tr = max(h - lo, abs(h - pc), abs(lo - pc))
        if wf != c:
            wf = of * wf + af * c
        if ws != c:
            ws = os_ * ws + as_ * c
        if wa != tr:
            wa = oa * wa + aa * tr
        d[i] = wf - ws
        atr[i] = wa


# --------------------------------------------------------------------------------------------
# the benchmark workload


@njit(cache=True)
def workload_symbol_nb(
    open_: F64,
    high: F64,
    low: F64,
    close: F64,
    ema_fast: int,
    ema_slow: int,
    atr_n: int,
    warmup: int,
    horizon: int,
    sl_atr: float,
    tp_atr: float,
    fee: float,
    marks: F64,
    add_marks: bool,
    d: F64,
    atr: F64,
) -> tuple[I64, I8, I8, I64, I64, I64, F64, F64, I8, F64, F64, F64]:
    """WORKLOAD.md on one symbol's rows (bars = positions in these arrays).

    The book (starting at 1) is marked at every close into ``marks`` (length n): added to it
    when ``add_marks`` (to sum the symbols' books in symbol order without a full-length array
    per symbol), else written. ``d`` and ``atr`` are scratch arrays of length >= n.

    Returns ``(ev_t, ev_side, ev_label, tr_event, tr_entry_bar, tr_exit_bar, tr_entry_price,
    tr_exit_price, tr_reason, tr_equity_before, tr_equity_after, tr_net)``; ``tr_event`` is the
    event row of each trade.
    """
    n = open_.shape[0]
    workload_indicators_nb(high, low, close, 0, n, ema_fast, ema_slow, atr_n, d, atr)
    n_ev = 0
    for t in range(warmup, n - warmup + 1):
        dt = d[t]
        dp = d[t - 1]
        if (dt > 0.0 and dp <= 0.0) or (dt < 0.0 and dp >= 0.0):
            n_ev += 1
    ev_t = np.empty(n_ev, np.int64)
    ev_side = np.empty(n_ev, np.int8)
    ev_label = np.empty(n_ev, np.int8)
    tr_event = np.empty(n_ev, np.int64)
    tr_entry = np.empty(n_ev, np.int64)
    tr_exit = np.empty(n_ev, np.int64)
    tr_pin = np.empty(n_ev)
    tr_pout = np.empty(n_ev)
    tr_reason = np.empty(n_ev, np.int8)
    tr_before = np.empty(n_ev)
    tr_after = np.empty(n_ev)
    tr_net = np.empty(n_ev)
    i = 0
    k = 0
    equity = 1.0
    next_entry_min = 0  # first bar at whose open a position may be opened
    mark_from = 0  # bars before this one are already marked
    for t in range(warmup, n - warmup + 1):
        dt = d[t]
        dp = d[t - 1]
        side = 0
        if dt > 0.0 and dp <= 0.0:
            side = 1
        elif dt < 0.0 and dp >= 0.0:
            side = -1
        if side == 0:
            continue
        e = t + 1
        r = simulate_exit_nb(
            open_, high, low, e, n, side, sl_atr * atr[t], tp_atr * atr[t], tp_atr * atr[t],
            horizon, 1.0, False, fee, fee, fee, 0.0,
        )  # fmt: skip
        ev_t[i] = t
        ev_side[i] = side
        ev_label[i] = r[1]
        i += 1
        if e < next_entry_min or r[0] != STATUS_DONE:
            continue
        price = open_[e]
        xbar = r[11]
        xprice = r[4]
        reason = r[5]
        x = xprice / price
        if side == 1:
            net = x * (1.0 - fee) / (1.0 + fee) - 1.0
        else:
            net = ((1.0 - fee) - x * (1.0 + fee)) / (1.0 + fee)
        after = equity * (1.0 + net)
        # mark the book: flat up to the entry bar, then the open position up to the exit bar
        units = equity / (price * (1.0 + fee))
        if side == 1:
            cash = equity - units * price * (1.0 + fee)
        else:
            cash = equity + units * price * (1.0 - fee)
        if add_marks:
            for j in range(mark_from, e):
                marks[j] += equity
            for j in range(e, xbar):
                marks[j] += cash + side * units * close[j]
        else:
            for j in range(mark_from, e):
                marks[j] = equity
            for j in range(e, xbar):
                marks[j] = cash + side * units * close[j]
        mark_from = xbar
        tr_event[k] = i - 1
        tr_entry[k] = e
        tr_exit[k] = xbar
        tr_pin[k] = price
        tr_pout[k] = xprice
        tr_reason[k] = reason
        tr_before[k] = equity
        tr_after[k] = after
        tr_net[k] = net
        k += 1
        equity = after
        next_entry_min = xbar if reason == REASON_TIME else xbar + 1
    if add_marks:
        for j in range(mark_from, n):
            marks[j] += equity
    else:
        for j in range(mark_from, n):
            marks[j] = equity
    return (ev_t, ev_side, ev_label, tr_event[:k], tr_entry[:k], tr_exit[:k], tr_pin[:k],
            tr_pout[:k], tr_reason[:k], tr_before[:k], tr_after[:k], tr_net[:k])  # fmt: skip
