"""The full performance report of a backtest or run: :func:`compute_stats`.

:class:`PerformanceReport` combines the return statistics of the equity curve
(:mod:`atra.core.stats.returns`) and the trade statistics (:mod:`atra.core.stats.trades`) with
exposure (:func:`exposure_from_trades` or per-bar position flags), turnover, trades per day and
costs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from atra.core.stats.returns import (
    _MINUTES_PER_DAY,
    ArrayLike,
    ReturnStats,
    _checked_equity,
    _json_value,
    _return_stats_from_equity,
)
from atra.core.stats.trades import SymbolStats, TradeLike, TradeStats, per_symbol_stats, trade_stats
from atra.core.types import Timeframe
from atra.errors import DataError


@dataclass(frozen=True, slots=True)
class PerformanceReport:
    """Everything :func:`compute_stats` measures."""

    returns: ReturnStats
    trades: TradeStats
    per_symbol: tuple[SymbolStats, ...]
    initial_equity: float
    final_equity: float
    exposure: float
    """Share of bars with an open position (NaN when it cannot be known)."""
    turnover: float
    """Traded notional (entries + exits) / mean equity, over the whole period."""
    turnover_per_year: float
    trades_per_day: float
    costs_fraction_of_initial_equity: float
    """(fees + slippage + funding + borrow) / initial equity."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = _json_value(asdict(self))
        return out


def exposure_from_trades(
    trades: Sequence[TradeLike], open_time_ms: ArrayLike, timeframe: Timeframe
) -> float:
    """Share of bars during which a position was open.

    Bar k covers ``[open_time_ms[k], open_time_ms[k] + bar)``; it counts when a trade's holding
    interval ``[entry_time_ms, exit_time_ms)`` overlaps it with positive length. So a time exit
    at a bar's open does not count that bar; stamp an exit inside a bar after its open time.
    """
    times = np.asarray(open_time_ms, dtype=np.int64)
    if times.ndim != 1 or len(times) == 0:
        raise DataError("open_time_ms: expected a non-empty 1-D array of bar open times")
    if np.any(np.diff(times) <= 0):
        raise DataError("open_time_ms: expected strictly increasing bar open times")
    held = np.zeros(len(times), dtype=bool)
    ends = times + timeframe.ms
    for t in trades:
        # bars with open < exit and end > entry
        lo = int(np.searchsorted(ends, t.entry_time_ms, side="right"))
        hi = int(np.searchsorted(times, t.exit_time_ms, side="left"))
        if hi > lo:
            held[lo:hi] = True
    return float(held.mean())


def compute_stats(
    equity: ArrayLike,
    timeframe: Timeframe,
    trades: Sequence[TradeLike] = (),
    *,
    open_time_ms: ArrayLike | None = None,
    in_position: ArrayLike | None = None,
    benchmark_sharpe: float = 0.0,
    n_trials: int = 1,
    trials_sharpe_variance: float = 0.0,
) -> PerformanceReport:
    """Full report from an equity curve marked at every close and the closed trades.

    Exposure comes from ``in_position`` (one flag per equity point) when given, else from the
    trades and ``open_time_ms``; 0 with no trades; NaN when trades exist but neither is given.
    """
    eq = _checked_equity(equity)
    rs = _return_stats_from_equity(
        eq, timeframe, benchmark_sharpe, n_trials, trials_sharpe_variance
    )
    ts = trade_stats(trades)
    if in_position is not None:
        flags = np.asarray(in_position)
        if flags.shape != eq.shape:
            raise DataError(
                f"in_position: {flags.shape[0] if flags.ndim else 0} flags for {len(eq)} bars"
            )
        exposure = float(np.mean(flags != 0))
    elif not trades:
        exposure = 0.0
    elif open_time_ms is not None:
        if len(open_time_ms) != len(eq):
            raise DataError(f"open_time_ms: {len(open_time_ms)} times for {len(eq)} bars")
        exposure = exposure_from_trades(trades, open_time_ms, timeframe)
    else:
        exposure = math.nan
    traded = math.fsum(abs(t.quantity) * (abs(t.entry_price) + abs(t.exit_price)) for t in trades)
    turnover = traded / float(eq.mean())
    days = rs.n_returns * timeframe.minutes / _MINUTES_PER_DAY
    costs = ts.fees_paid + ts.slippage_paid + ts.funding_paid + ts.borrow_paid
    return PerformanceReport(
        returns=rs,
        trades=ts,
        per_symbol=per_symbol_stats(trades),
        initial_equity=float(eq[0]),
        final_equity=float(eq[-1]),
        exposure=exposure,
        turnover=turnover,
        turnover_per_year=turnover / rs.years,
        trades_per_day=ts.n_trades / days,
        costs_fraction_of_initial_equity=costs / float(eq[0]),
    )
