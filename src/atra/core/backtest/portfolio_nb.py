"""Numba kernel of the shared-equity portfolio backtest: arrays only, ``@njit(cache=True)``.

:func:`portfolio_nb` is the event loop over many symbols (risk sizing, position limits, fees,
slippage, funding, spot shorts' margin interest, isolated-margin liquidation), marked at every
grid bar, on the exit kernel :func:`atra.core.exits.kernel.simulate_exit_nb` (so every trade
exits exactly as its triple-barrier label says). The public, typed API is
:func:`atra.core.backtest.engine.run_backtest`.

Symbols are concatenated into one array per column; symbol ``s`` owns rows
``sym_start[s] .. sym_end[s] - 1``. Bars are positions in each symbol's own rows: a gap in the
data is not a bar (see :mod:`atra.core.backtest.engine`).

One position's kernels (sizing, liquidation) and the outcome / exit-reason codes are in
:mod:`atra.core.backtest.position_nb`; the kernels of WORKLOAD.md's benchmark in
:mod:`atra.core.backtest.workload_nb` and of the union time grid in
:mod:`atra.core.backtest.grid_nb`.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from numba import njit

from atra.core.backtest.position_nb import (
    EV_DAILY_LOSS,
    EV_KILL_SWITCH,
    EV_MAX_GROSS_LEVERAGE,
    EV_MAX_PER_SYMBOL,
    EV_MAX_POSITIONS,
    EV_TAKEN,
    REASON_END,
    REASON_LIQ,
    borrow_charge_nb,
    first_liquidation_nb,
    liquidation_price_nb,
    size_nb,
)
from atra.core.exits.kernel import REASON_NONE, REASON_TIME, STATUS_DONE, simulate_exit_nb
from atra.core.risk import (
    GUARD_DAILY_LOSS,
    GUARD_KILL_SWITCH,
    GUARD_MAX_PER_SYMBOL,
    GUARD_MAX_POSITIONS,
    GUARD_NONE,
    day_start_ms_nb,
    entry_guard_nb,
)

__all__ = ["B1", "F64", "I8", "I64", "portfolio_nb"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
I8 = npt.NDArray[np.int8]
B1 = npt.NDArray[np.bool_]


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
    max_daily_loss: float,
    tp1_fraction: float,
    move_to_be: bool,
    fee_entry: float,
    fee_tp: float,
    fee_stop: float,
    slippage: float,
    borrow_rate: float,
    bar_ms: int,
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
       so is the margin interest of spot shorts for the hours up to the next grid bar (see
       below); positions whose time exit is at this open close;
    2. entries at this open, in event order: sized from the equity marked at the previous
       grid close, checked against the risk guards (:func:`atra.core.risk.entry_guard_nb`, the
       live guards' rule: daily loss, max positions, per symbol, gross leverage; the kill
       switch never trips here), then the exit kernel (and the liquidation scan) fixes the
       trade's legs;
    3. inside the bar: take-profit partials, barrier exits and liquidations of this bar;
    4. the equity is marked at the close (last close of symbols without a bar at ``g``).

    A spot short (``side = -1`` on a symbol that is not ``is_perp``) pays ``borrow_rate`` (per
    hour) x its open quantity x the mark (the open of its symbol's latest bar at or before the
    charge time) at the borrow (the entry) and at every full hour after it, up to its exit: a
    time exit's open, else the close of the exit bar (the exit time inside the bar is unknown;
    charged to its end, like SL-first). Each bar's hours are charged at its open on the
    quantity open at that open; a TP1 partial lowers the quantity from the next bar on.
    ``bar_ms`` is the bar length. Longs and perpetuals pay none.

    Returns per event ``outcome`` (``EV_*``) and, per event (NaN / -1 where not taken):
    ``quantity, equity_at_entry, risk_amount, entry_price, label_ret, leg1_bar, leg1_price,
    leg1_fraction, leg1_reason, leg2_bar, leg2_price, leg2_fraction, leg2_reason, fees,
    slippage, funding, borrow, pnl, label``; then the per-grid ``equity``, ``gross_exposure``
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
    borrow = np.zeros(n_ev)
    pnl = np.zeros(n_ev)
    label = np.zeros(n_ev, np.int8)
    equity_curve = np.empty(n_grid)
    gross_curve = np.empty(n_grid)
    n_open_curve = np.empty(n_grid, np.int64)
    # the daily-loss guard: realised cash at each grid bar's open (every fill of an earlier
    # bar) and the first grid bar of each bar's UTC day; a day's starting equity is the
    # realised cash at its first bar's open
    start_real = np.empty(n_grid)
    day_first = np.zeros(n_grid, np.int64)
    for g in range(1, n_grid):
        same_day = day_start_ms_nb(grid_time[g]) == day_start_ms_nb(grid_time[g - 1])
        day_first[g] = day_first[g - 1] if same_day else g

    n_slots = max(1, min(max_positions, n_ev))
    slot_ev = np.full(n_slots, -1, np.int64)  # event of the position in the slot, -1 free
    slot_rem = np.zeros(n_slots)  # fraction of the quantity still open
    slot_fptr = np.zeros(n_slots, np.int64)  # next funding row of the slot's symbol
    slot_bnext = np.zeros(n_slots, np.int64)  # next margin-interest time (spot shorts)
    slot_bend = np.zeros(n_slots, np.int64)  # borrow ends (exclusive); = slot_bnext if none
    slot_brow = np.zeros(n_slots, np.int64)  # mark row of the margin interest
    per_symbol = np.zeros(n_sym, np.int64)
    last_close = np.full(n_sym, np.nan)
    sym_ptr = sym_start.copy()

    realized = initial_equity  # initial equity + closed P&L - fees - funding - borrow so far
    eq_prev = initial_equity
    ev_ptr = 0
    n_open = 0
    for g in range(n_grid):
        gt = grid_time[g]
        start_real[g] = realized
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
            if slot_bend[k] > slot_bnext[k]:  # a spot short's margin interest
                stop = slot_bend[k]  # all of it in the exit bar, else up to the next grid bar
                if bar_grid[final_bar] != g and g + 1 < n_grid and grid_time[g + 1] < stop:
                    stop = grid_time[g + 1]
                amount, t_next, row = borrow_charge_nb(
                    open_, bar_time, slot_brow[k], sym_end[s], slot_bnext[k], stop,
                    qty_out[i] * slot_rem[k], borrow_rate,
                )  # fmt: skip
                slot_bnext[k] = t_next
                slot_brow[k] = row
                borrow[i] += amount
                pnl[i] -= amount
                realized -= amount
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
            if code != EV_TAKEN:  # the decision's sizing says no before the guards look
                outcome[i] = code
                continue
            gross = 0.0
            for k in range(n_slots):
                j = slot_ev[k]
                if j >= 0:  # open positions at their symbol's last close
                    gross += qty_out[j] * slot_rem[k] * last_close[ev_sym[j]]
            # the day of the signal bar (the decision): its starting equity
            day_eq = start_real[day_first[bar_grid[eb - 1]]]
            guard = entry_guard_nb(
                False,  # no kill switch file in the past
                eq_prev,
                day_eq,
                n_open,
                per_symbol[s],
                gross,
                qty * ref,
                max_positions,
                max_per_symbol,
                max_gross_leverage,
                max_daily_loss,
            )
            if guard != GUARD_NONE:
                if guard == GUARD_KILL_SWITCH:
                    outcome[i] = EV_KILL_SWITCH
                elif guard == GUARD_DAILY_LOSS:
                    outcome[i] = EV_DAILY_LOSS
                elif guard == GUARD_MAX_POSITIONS:
                    outcome[i] = EV_MAX_POSITIONS
                elif guard == GUARD_MAX_PER_SYMBOL:
                    outcome[i] = EV_MAX_PER_SYMBOL
                else:
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
                    slot_bnext[k] = t_entry
                    slot_bend[k] = t_entry
                    slot_brow[k] = eb
                    if side == -1 and not is_perp[s] and borrow_rate > 0.0:
                        # margin interest up to a time exit's open, else the exit bar's close
                        final_b = b2 if b2 >= 0 else b1
                        final_c = c2 if b2 >= 0 else c1
                        stop = bar_time[final_b]
                        if final_c != REASON_TIME:
                            stop += bar_ms
                        slot_bend[k] = stop
                        if bar_grid[final_b] != g and g + 1 < n_grid and grid_time[g + 1] < stop:
                            stop = grid_time[g + 1]
                        amount, t_next, row = borrow_charge_nb(
                            open_, bar_time, eb, sym_end[s], t_entry, stop, qty, borrow_rate
                        )
                        slot_bnext[k] = t_next
                        slot_brow[k] = row
                        borrow[i] += amount
                        pnl[i] -= amount
                        realized -= amount
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
    return (outcome, qty_out, eq_entry, risk_out, entry_out, lret, l1_bar, l1_price, l1_frac,
            l1_reason, l2_bar, l2_price, l2_frac, l2_reason, fees, slip, funding, borrow, pnl,
            label, equity_curve, gross_curve, n_open_curve)  # fmt: skip
