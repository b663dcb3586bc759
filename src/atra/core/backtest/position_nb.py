"""Numba kernels of one position in the portfolio backtest: arrays only, ``@njit(cache=True)``.

:func:`size_nb` sizes a position from the equity (risk per unit from :func:`risk_per_unit_nb`,
fixed-fractional or Kelly, leverage cap) and says why an event is not taken (the ``EV_*``
outcome codes); :func:`liquidation_price_nb` and :func:`first_liquidation_nb` find where an
isolated-margin position is liquidated; :func:`borrow_charge_nb` charges a spot short's hourly
margin interest. The exit-reason codes the portfolio adds to the exit
kernel's (:mod:`atra.core.exits.kernel`) are :data:`REASON_LIQ` and :data:`REASON_END`.

The portfolio loop that runs them is :func:`atra.core.backtest.portfolio_nb.portfolio_nb`.
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np
import numpy.typing as npt
from numba import njit

from atra.core.exits.kernel import REASON_TIME

__all__ = [
    "EV_BAD_STOP",
    "EV_DAILY_LOSS",
    "EV_KILL_SWITCH",
    "EV_MAX_GROSS_LEVERAGE",
    "EV_MAX_PER_SYMBOL",
    "EV_MAX_POSITIONS",
    "EV_NO_EDGE",
    "EV_NO_ENTRY_BAR",
    "EV_NO_EQUITY",
    "EV_TAKEN",
    "EV_ZERO_SIZE",
    "HOUR_MS",
    "REASON_END",
    "REASON_LIQ",
    "borrow_charge_nb",
    "first_liquidation_nb",
    "liquidation_price_nb",
    "risk_per_unit_nb",
    "size_nb",
]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

HOUR_MS: Final[int] = 3_600_000
"""Margin interest is charged per hour: at the borrow and at every full hour after it."""
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
EV_DAILY_LOSS: Final[int] = 9
EV_KILL_SWITCH: Final[int] = 10
"""Never an outcome of a backtest: the kill switch is live-only (no file in the past)."""


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
def borrow_charge_nb(
    open_: F64,
    bar_time: I64,
    mark_row: int,
    row_end: int,
    next_ms: int,
    stop_ms: int,
    quantity: float,
    rate_per_hour: float,
) -> tuple[float, int, int]:
    """Margin interest of a short of ``quantity`` at every charge time in ``[next_ms,
    stop_ms)``: ``quantity x mark x rate_per_hour`` each, ``mark`` = the open of the symbol's
    latest bar at or before that time (rows ``mark_row .. row_end - 1``; ``mark_row`` at or
    before ``next_ms``). Charge times are ``next_ms`` and every full hour after it.

    Returns ``(amount, next charge time, mark row)`` to continue from."""
    amount = 0.0
    t = next_ms
    row = mark_row
    while t < stop_ms:
        while row + 1 < row_end and bar_time[row + 1] <= t:
            row += 1
        amount += quantity * open_[row] * rate_per_hour
        t = (t // HOUR_MS + 1) * HOUR_MS
    return amount, t, row
