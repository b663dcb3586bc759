"""Numba kernels of the shared-equity portfolio backtest: arrays only, ``@njit(cache=True)``.

:func:`portfolio_nb` is the event loop over many symbols (risk sizing, position limits, fees,
slippage, funding, isolated-margin liquidation), marked at every grid bar, on the exit kernel
:func:`atra.core.exits.simulate_exit_nb` (so every trade exits exactly as its triple-barrier
label says). The public, typed API is :func:`atra.core.backtest.engine.run_backtest`.

Symbols are concatenated into one array per column; symbol ``s`` owns rows
``sym_start[s] .. sym_end[s] - 1``. Bars are positions in each symbol's own rows: a gap in the
data is not a bar (see :mod:`atra.core.backtest.engine`).

The kernels of WORKLOAD.md's benchmark (:mod:`atra.core.backtest.workload_nb`) and of the union
time grid
(:mod:`atra.core.backtest.grid_nb`) are re-exported here.
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np
import numpy.typing as npt
from numba import njit

from atra.core.backtest.grid_nb import first_bad_series_nb, grid_index_nb, portfolio_mean_nb
from atra.core.backtest.workload_nb import (
    pandas_alpha_nb,
    workload_indicators_nb,
    workload_symbol_nb,
)
from atra.core.exits import REASON_NONE, REASON_TIME, STATUS_DONE, simulate_exit_nb

__all__ = [
    "B1",
    "EV_BAD_STOP",
    "EV_MAX_GROSS_LEVERAGE",
    "EV_MAX_PER_SYMBOL",
    "EV_MAX_POSITIONS",
    "EV_NO_EDGE",
    "EV_NO_ENTRY_BAR",
    "EV_NO_EQUITY",
    "EV_TAKEN",
    "EV_ZERO_SIZE",
    "F64",
    "I8",
    "I64",
    "REASON_END",
    "REASON_LIQ",
    "first_bad_series_nb",
    "first_liquidation_nb",
    "grid_index_nb",
    "liquidation_price_nb",
    "pandas_alpha_nb",
    "portfolio_mean_nb",
    "portfolio_nb",
    "risk_per_unit_nb",
    "size_nb",
    "workload_indicators_nb",
    "workload_symbol_nb",
]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
I8 = npt.NDArray[np.int8]
B1 = npt.NDArray[np.bool_]

REASON_LIQ: Final[int] = 6
"""Exit reason code of an isolated-margin liquidation (after the exit kernel's codes 0..5)."""
REASON_END: Final[int] = 7
"""Exit reason code of a position still open at the end of the data (closed at the last close)."""

# outcome of an event in the portfolio loop
EV_TAKEN: Final[int] = 0
EV_NO_ENTRY_BAR: Final[int] = 1
EV_MAX_POSITIONS: Final[int] = 2
EV_MAX_PER_SYMBOL: Final[int] = 3
EV_MAX_GROSS_LEVERAGE: Final[int] = 4
EV_NO_EDGE: Final[int] = 5
EV_NO_EQUITY: Final[int] = 6
EV_BAD_STOP: Final[int] = 7
EV_ZERO_SIZE: Final[int] = 8


# --------------------------------------------------------------------------------------------
# the shared-equity portfolio


@njit(cache=True)
def risk_per_unit_nb(
    side: int, entry: float, stop: float, fee_entry: float, fee_stop: float, slippage: float
) -> float:
    """Loss of one unit entered at the fill ``entry`` and stopped at ``stop`` (stop fill moved
    adversely by ``slippage``), entry and stop fees included."""
    if side == 1:
        return entry * (1.0 + fee_entry) - stop * (1.0 - slippage) * (1.0 - fee_stop)
    return stop * (1.0 + slippage) * (1.0 + fee_stop) - entry * (1.0 - fee_entry)


@njit(cache=True)
def size_nb(
    equity: float,
    side: int,
    entry: float,
    sl_dist: float,
    tp1_dist: float,
    probability: float,
    risk_fraction: float,
    risk_cap: float,
    kelly_multiplier: float,
    max_leverage: float,
    fee_entry: float,
    fee_stop: float,
    slippage: float,
) -> tuple[int, float, float]:
    """``(outcome, quantity, risk_amount)``: :func:`atra.core.sizing.size_position`'s rules.

    Fixed-fractional ``risk_fraction`` when ``probability`` is NaN, else ``kelly_multiplier``
    x Kelly ``p - (1 - p) / b`` with ``b = tp1_dist / sl_dist``; the target never exceeds
    ``risk_cap``; ``quantity = target * equity / risk_per_unit``, then
    ``quantity * entry <= max_leverage * equity``.
    """
    if not equity > 0.0:
        return EV_NO_EQUITY, 0.0, 0.0
    stop = entry - side * sl_dist
    if not stop > 0.0:
        return EV_BAD_STOP, 0.0, 0.0
    if math.isnan(probability):
        target = risk_fraction
    else:
        kelly = probability - (1.0 - probability) / (tp1_dist / sl_dist)
        if not kelly > 0.0:
            return EV_NO_EDGE, 0.0, 0.0
        target = kelly_multiplier * kelly
    target = min(target, risk_cap)
    rpu = risk_per_unit_nb(side, entry, stop, fee_entry, fee_stop, slippage)
    qty = target * equity / rpu
    max_qty = max_leverage * equity / entry
    qty = min(qty, max_qty)
    if not qty > 0.0:
        return EV_ZERO_SIZE, 0.0, 0.0
    return EV_TAKEN, qty, qty * rpu


@njit(cache=True)
def liquidation_price_nb(side: int, entry: float, leverage: float, mmr: float) -> float:
    """Isolated-margin liquidation price of a linear (USDT-margined) position: the price where
    the loss equals the margin ``entry / leverage`` less the maintenance margin ``mmr``."""
    if side == 1:
        return entry * (1.0 - 1.0 / leverage) / (1.0 - mmr)
    return entry * (1.0 + 1.0 / leverage) / (1.0 + mmr)


@njit(cache=True)
def first_liquidation_nb(
    open_: F64,
    high: F64,
    low: F64,
    side: int,
    liq: float,
    entry_bar: int,
    exit_bar: int,
    exit_reason: int,
    stop_at_exit: float,
) -> int:
    """First bar in ``entry_bar .. exit_bar`` where the liquidation price is reached, or -1.

    Bars before the exit bar: their whole range. The exit bar of a time exit: only its open
    (the position leaves at that open). The exit bar of a barrier exit: its range, unless the
    exit is the stop and the stop lies before the liquidation price on the way (the stop fills
    first); a take-profit bar whose range also reaches the liquidation price counts as
    liquidated (adverse first, like SL-first).
    """
    for j in range(entry_bar, exit_bar + 1):
        if j == exit_bar:
            if exit_reason == REASON_TIME:
                hit = open_[j] <= liq if side == 1 else open_[j] >= liq
                return j if hit else -1
            # SL / BE: the stop is on the way first
            if (exit_reason == 1 or exit_reason == 5) and side * (stop_at_exit - liq) >= 0.0:
                return -1
        hit = low[j] <= liq if side == 1 else high[j] >= liq
        if hit:
            return j
    return -1


@njit(cache=True)
def portfolio_nb(
    open_: F64,
    high: F64,
    low: F64,
    close: F64,
    bar_time: I64,
    bar_grid: I64,
    sym_start: I64,
    sym_end: I64,
    is_perp: B1,
    grid_time: I64,
    fund_time: I64,
    fund_rate: F64,
    fund_bar: I64,
    fund_start: I64,
    fund_end: I64,
    ev_sym: I64,
    ev_entry: I64,
    ev_side: I8,
    ev_sl: F64,
    ev_tp1: F64,
    ev_tp2: F64,
    ev_horizon: I64,
    ev_prob: F64,
    initial_equity: float,
    risk_fraction: float,
    risk_cap: float,
    kelly_multiplier: float,
    max_leverage: float,
    max_gross_leverage: float,
    leverage: float,
    mmr: float,
    max_positions: int,
    max_per_symbol: int,
    tp1_fraction: float,
    move_to_be: bool,
    fee_entry: float,
    fee_tp: float,
    fee_stop: float,
    slippage: float,
) -> tuple[
    I8,
    F64,
    F64,
    F64,
    F64,
    F64,
    I64,
    F64,
    F64,
    I8,
    I64,
    F64,
    F64,
    I8,
    F64,
    F64,
    F64,
    F64,
    I8,
    F64,
    F64,
    I64,
]:
    """The shared-equity portfolio loop over the grid bars.

    Events must be sorted by the grid bar of their entry (``bar_grid[ev_entry]``); ``ev_entry``
    is the entry row (signal row + 1) in the concatenated arrays, inside its symbol's rows.
    Per grid bar ``g``:

    1. at the open: funding settled at times ``<= grid_time[g]`` is charged to the open
       positions (times in ``(entry_time, exit_time]``, notional at the mark bar's open);
       positions whose time exit is at this open close;
    2. entries at this open, in event order: sized from the equity marked at the previous
       grid close, checked against the limits, then the exit kernel (and the liquidation scan)
       fixes the trade's legs;
    3. inside the bar: take-profit partials, barrier exits and liquidations of this bar;
    4. the equity is marked at the close (last close of symbols without a bar at ``g``).

    Returns per event ``outcome`` (``EV_*``) and, per event (NaN / -1 where not taken):
    ``quantity, equity_at_entry, risk_amount, entry_price, label_ret, leg1_bar, leg1_price,
    leg1_fraction, leg1_reason, leg2_bar, leg2_price, leg2_fraction, leg2_reason, fees,
    slippage, funding, pnl, label``; then the per-grid ``equity``, ``gross_exposure``
    (notional / equity at the close) and ``n_open`` (positions open at the close).
    """
    n_ev = ev_sym.shape[0]
    n_sym = sym_start.shape[0]
    n_grid = grid_time.shape[0]
    outcome = np.full(n_ev, EV_TAKEN, np.int8)
    qty_out = np.full(n_ev, np.nan)
    eq_entry = np.full(n_ev, np.nan)
    risk_out = np.full(n_ev, np.nan)
    entry_out = np.full(n_ev, np.nan)
    lret = np.full(n_ev, np.nan)
    l1_bar = np.full(n_ev, -1, np.int64)
    l1_price = np.full(n_ev, np.nan)
    l1_frac = np.zeros(n_ev)
    l1_reason = np.zeros(n_ev, np.int8)
    l2_bar = np.full(n_ev, -1, np.int64)
    l2_price = np.full(n_ev, np.nan)
    l2_frac = np.zeros(n_ev)
    l2_reason = np.zeros(n_ev, np.int8)
    fees = np.zeros(n_ev)
    slip = np.zeros(n_ev)
    funding = np.zeros(n_ev)
    pnl = np.zeros(n_ev)
    label = np.zeros(n_ev, np.int8)
    equity_curve = np.empty(n_grid)
    gross_curve = np.empty(n_grid)
    n_open_curve = np.empty(n_grid, np.int64)

    n_slots = max(1, min(max_positions, n_ev))
    slot_ev = np.full(n_slots, -1, np.int64)  # event of the position in the slot, -1 free
    slot_rem = np.zeros(n_slots)  # fraction of the quantity still open
    slot_fptr = np.zeros(n_slots, np.int64)  # next funding row of the slot's symbol
    per_symbol = np.zeros(n_sym, np.int64)
    last_close = np.full(n_sym, np.nan)
    sym_ptr = sym_start.copy()

    realized = initial_equity  # initial equity + closed P&L - fees - funding so far
    eq_prev = initial_equity
    ev_ptr = 0
    n_open = 0
    for g in range(n_grid):
        gt = grid_time[g]
        # 1) funding up to this open, then time exits at this open
        for k in range(n_slots):
            i = slot_ev[k]
            if i < 0:
                continue
            s = ev_sym[i]
            side = ev_side[i]
            final_bar = l2_bar[i] if l2_bar[i] >= 0 else l1_bar[i]
            exit_time = bar_time[final_bar]
            p = slot_fptr[k]
            while p < fund_end[s] and fund_time[p] <= gt and fund_time[p] <= exit_time:
                amount = side * qty_out[i] * slot_rem[k] * open_[fund_bar[p]] * fund_rate[p]
                funding[i] += amount
                pnl[i] -= amount
                realized -= amount
                p += 1
            slot_fptr[k] = p
            final_reason = l2_reason[i] if l2_bar[i] >= 0 else l1_reason[i]
            if final_reason == REASON_TIME and bar_grid[final_bar] == g:
                fr = l2_frac[i] if l2_bar[i] >= 0 else l1_frac[i]
                price = l2_price[i] if l2_bar[i] >= 0 else l1_price[i]
                q = qty_out[i] * fr
                fee = q * price * fee_stop
                gain = side * q * (price - entry_out[i])
                fees[i] += fee
                slip[i] += q * price / (1.0 - side * slippage) * slippage
                pnl[i] += gain - fee
                realized += gain - fee
                slot_ev[k] = -1
                per_symbol[s] -= 1
                n_open -= 1

        # 2) entries at this open
        while ev_ptr < n_ev and bar_grid[ev_entry[ev_ptr]] <= g:
            i = ev_ptr
            ev_ptr += 1
            eb = ev_entry[i]
            s = ev_sym[i]
            side = int(ev_side[i])
            if n_open >= max_positions:
                outcome[i] = EV_MAX_POSITIONS
                continue
            if per_symbol[s] >= max_per_symbol:
                outcome[i] = EV_MAX_PER_SYMBOL
                continue
            entry = open_[eb] * (1.0 + side * slippage)
            # sized with what the decision knows: the signal bar's close (moved by the
            # slippage), not the next open it fills at
            ref = close[eb - 1] * (1.0 + side * slippage)
            code, qty, risk = size_nb(
                eq_prev,
                side,
                ref,
                ev_sl[i],
                ev_tp1[i],
                ev_prob[i],
                risk_fraction,
                risk_cap,
                kelly_multiplier,
                max_leverage,
                fee_entry,
                fee_stop,
                slippage,
            )
            if code != EV_TAKEN:
                outcome[i] = code
                continue
            gross = qty * ref
            for k in range(n_slots):
                j = slot_ev[k]
                if j >= 0:  # open positions at their symbol's last close
                    gross += qty_out[j] * slot_rem[k] * last_close[ev_sym[j]]
            if gross > max_gross_leverage * eq_prev * (1.0 + 1e-12):
                outcome[i] = EV_MAX_GROSS_LEVERAGE
                continue
            r = simulate_exit_nb(
                open_,
                high,
                low,
                eb,
                sym_end[s],
                side,
                ev_sl[i],
                ev_tp1[i],
                ev_tp2[i],
                ev_horizon[i],
                tp1_fraction,
                move_to_be,
                fee_entry,
                fee_tp,
                fee_stop,
                slippage,
            )
            outcome[i] = EV_TAKEN
            qty_out[i] = qty
            eq_entry[i] = eq_prev
            risk_out[i] = risk
            entry_out[i] = entry
            label[i] = r[1]
            lret[i] = r[12]
            # the legs the exit kernel found; an unresolved trade ends at the last close
            b1, p1, c1, f1 = r[3], r[4], r[5], r[6]
            b2, p2, c2, f2 = r[7], r[8], r[9], r[10]
            if r[0] != STATUS_DONE:
                last_bar = sym_end[s] - 1
                if b1 >= 0:
                    b2, p2, c2, f2 = last_bar, close[last_bar], REASON_END, 1.0 - f1
                else:
                    b1, p1, c1, f1 = last_bar, close[last_bar], REASON_END, 1.0
            liq = math.nan
            if is_perp[s]:
                liq = liquidation_price_nb(side, entry, leverage, mmr)
                final_b = b2 if b2 >= 0 else b1
                final_c = c2 if b2 >= 0 else c1
                stop_at_exit = entry - side * ev_sl[i]
                if final_c == 5:
                    stop_at_exit = entry
                jl = first_liquidation_nb(
                    open_,
                    high,
                    low,
                    side,
                    liq,
                    eb,
                    final_b,
                    REASON_NONE if final_c == REASON_END else final_c,
                    stop_at_exit,
                )
                if jl >= 0:
                    if b2 >= 0 and b1 < jl:  # the TP1 partial happened before
                        b2, p2, c2, f2 = jl, liq, REASON_LIQ, 1.0 - f1
                    else:
                        b1, p1, c1, f1 = jl, liq, REASON_LIQ, 1.0
                        b2, p2, c2, f2 = -1, math.nan, REASON_NONE, 0.0
            l1_bar[i], l1_price[i], l1_reason[i], l1_frac[i] = b1, p1, c1, f1
            l2_bar[i], l2_price[i], l2_reason[i], l2_frac[i] = b2, p2, c2, f2
            fee = qty * entry * fee_entry
            fees[i] = fee
            slip[i] = qty * open_[eb] * slippage
            pnl[i] = -fee
            realized -= fee
            # funding strictly after the entry time
            p = fund_start[s]
            t_entry = bar_time[eb]
            while p < fund_end[s] and fund_time[p] <= t_entry:
                p += 1
            for k in range(n_slots):
                if slot_ev[k] < 0:
                    slot_ev[k] = i
                    slot_rem[k] = 1.0
                    slot_fptr[k] = p
                    break
            per_symbol[s] += 1
            n_open += 1

        # 3) inside the bar: partials, barrier exits, liquidations
        for k in range(n_slots):
            i = slot_ev[k]
            if i < 0:
                continue
            s = ev_sym[i]
            side = ev_side[i]
            for leg in range(2):
                b = l1_bar[i] if leg == 0 else l2_bar[i]
                if b < 0 or bar_grid[b] != g:
                    continue
                # (a time exit, always the last leg, was settled at this open in step 1)
                c = l1_reason[i] if leg == 0 else l2_reason[i]
                fr = l1_frac[i] if leg == 0 else l2_frac[i]
                price = l1_price[i] if leg == 0 else l2_price[i]
                q = qty_out[i] * fr
                if c == REASON_LIQ:
                    gain = -q * entry_out[i] / leverage  # the leg's isolated margin is lost
                    fee = q * price * fee_stop
                elif c == 2 or c == 3:  # TP1 / TP2: limit fills
                    gain = side * q * (price - entry_out[i])
                    fee = q * price * fee_tp
                else:  # SL / BE / END: market fills
                    gain = side * q * (price - entry_out[i])
                    fee = q * price * fee_stop
                    if c != REASON_END:
                        slip[i] += q * price / (1.0 - side * slippage) * slippage
                fees[i] += fee
                pnl[i] += gain - fee
                realized += gain - fee
                slot_rem[k] -= fr
                if leg == 1 or l2_bar[i] < 0:
                    slot_ev[k] = -1
                    per_symbol[s] -= 1
                    n_open -= 1
                    break

        # 4) mark at the close
        for s in range(n_sym):
            p = sym_ptr[s]
            if p < sym_end[s] and bar_grid[p] == g:
                last_close[s] = close[p]
                sym_ptr[s] = p + 1
        equity = realized
        gross = 0.0
        for k in range(n_slots):
            i = slot_ev[k]
            if i < 0:
                continue
            q = qty_out[i] * slot_rem[k]
            mark = last_close[ev_sym[i]]
            equity += ev_side[i] * q * (mark - entry_out[i])
            gross += q * mark
        equity_curve[g] = equity
        gross_curve[g] = gross / equity if equity > 0.0 else math.inf
        n_open_curve[g] = n_open
        eq_prev = equity
    return (
        outcome,
        qty_out,
        eq_entry,
        risk_out,
        entry_out,
        lret,
        l1_bar,
        l1_price,
        l1_frac,
        l1_reason,
        l2_bar,
        l2_price,
        l2_frac,
        l2_reason,
        fees,
        slip,
        funding,
        pnl,
        label,
        equity_curve,
        gross_curve,
        n_open_curve,
    )
