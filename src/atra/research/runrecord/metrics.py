"""The figures of one leg of a run (:mod:`atra.research.runrecord`): statistics, the trials' Sharpe
variance for the DSR and the realised costs per year.

A liquidated leg (its equity reaches zero at some bar and stays there) is measured on that curve
by :func:`liquidated_report`: the return into the liquidation bar is -100%, the leg holds
nothing afterwards (returns 0), so its total return and CAGR are -100%, its maximum drawdown
-100% and never recovered; Sharpe, Sortino, PSR and DSR use the same per-bar returns.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pandas as pd

from atra.core.costs import ANNUAL_COST_UNIT, CostBreakdown, format_percent
from atra.core.stats.report import PerformanceReport, compute_stats, exposure_from_trades
from atra.core.stats.returns import ReturnStats, expected_max_sharpe, probabilistic_sharpe_ratio
from atra.core.stats.trades import TradeRecord, per_symbol_stats, trade_records_of, trade_stats
from atra.core.types import Timeframe
from atra.errors import DataError
from atra.research.runrecord.legs import liquidation_row

__all__ = [
    "leg_metrics",
    "liquidated_report",
    "liquidated_return_stats",
    "sharpe_estimator_variance",
    "trade_records",
]

_MS_PER_DAY: Final[float] = 86_400_000.0
_MINUTES_PER_DAY: Final[float] = 1440.0
_ZERO_STD_REL: Final[float] = 1e-12
"""A standard deviation below this share of |mean| is float noise (as in the core statistics)."""
F64 = npt.NDArray[np.float64]


def trade_records(trades: pd.DataFrame) -> list[TradeRecord]:
    """The normalised trade list as :class:`TradeRecord` rows (quantity NaN when absent; borrow
    0 when absent: trade lists written before spot shorts paid margin interest had none)."""
    qty = (
        pd.to_numeric(trades["quantity"], errors="coerce").to_numpy(dtype=float)
        if "quantity" in trades.columns
        else np.full(len(trades), math.nan)
    )
    cols = [
        trades[c].tolist()
        for c in (
            "symbol",
            "entry_price",
            "exit_price",
            "entry_ms",
            "exit_ms",
            "pnl",
            "fees",
            "slippage",
            "funding",
        )
    ]
    borrow = [0.0] * len(trades)
    if "borrow" in trades.columns:
        values = pd.to_numeric(trades["borrow"], errors="coerce").to_numpy(dtype=float)
        bad = np.flatnonzero(~(np.isfinite(values) & (values >= 0.0)))
        if bad.size:
            row = int(bad[0])
            raise DataError(
                f"trades: borrow at row {row} is {trades['borrow'].iloc[row]!r}, expected a "
                "finite amount >= 0"
            )
        borrow = values.tolist()
    return trade_records_of([cols[0], qty.tolist(), *cols[1:], borrow])


def sharpe_estimator_variance(report: PerformanceReport, bars_per_year: int) -> float:
    """Annualised variance of the Sharpe estimator of the leg itself (Lo 2002 / Mertens):
    ``(1 - g3 SR + (g4 - 1)/4 SR^2) / (n - 1)`` per bar, x ``bars_per_year``. The spread of
    the Sharpes of unskilled trials when no cross-trial variance is known; 0 if undefined."""
    r = report.returns
    sr = r.sharpe / r.annualization_factor
    terms = (sr, r.skew, r.kurtosis)
    if r.n_returns < 2 or not all(map(math.isfinite, terms)):
        return 0.0
    var_bar = (1.0 - r.skew * sr + (r.kurtosis - 1.0) / 4.0 * sr * sr) / (r.n_returns - 1)
    return max(var_bar, 0.0) * bars_per_year


# --------------------------------------------------------------------------------------------
# a liquidated leg


def _liquidated(equity: F64) -> int:
    """The liquidation row of a curve that starts above zero and is 0 from that row on."""
    row = liquidation_row(equity)
    if row is None or row == 0 or np.any(equity[row:] != 0.0) or not np.all(np.isfinite(equity)):
        raise DataError("equity: expected a positive curve that is 0 from its liquidation on")
    return row


def _drawdown_bars(equity: F64) -> tuple[int, int]:
    """(bars of the spell of the deepest drawdown, bars of the longest spell), each from the
    peak before it to its recovery or the last bar (the core statistics' definition)."""
    dd = equity / np.maximum.accumulate(equity) - 1.0
    n = len(equity)
    under = np.diff(np.concatenate(([0], (dd < 0.0).astype(np.int8), [0])))
    starts, stops = np.flatnonzero(under == 1), np.flatnonzero(under == -1)
    durations = np.where(stops < n, stops + 1, n) - starts
    spell = int(np.searchsorted(starts, int(np.argmin(dd)), side="right")) - 1
    return int(durations[spell]), int(durations.max())


def liquidated_return_stats(
    equity: F64, timeframe: Timeframe, n_trials: int = 1, trials_sharpe_variance: float = 0.0
) -> ReturnStats:
    """:class:`ReturnStats` of an equity curve that reaches zero and stays there (see the module
    docstring); the same definitions as :func:`atra.core.stats.returns.equity_stats` otherwise."""
    row = _liquidated(equity)
    bpy = timeframe.bars_per_year
    ann = math.sqrt(bpy)
    r = np.zeros(len(equity) - 1)
    r[: row - 1] = equity[1:row] / equity[: row - 1] - 1.0
    r[row - 1] = -1.0
    n = r.size
    mean = float(r.mean())
    std = float(r.std(ddof=1)) if n > 1 else math.nan
    sharpe_bar = mean / std if n > 1 and std > _ZERO_STD_REL * abs(mean) else math.nan
    c = r - mean
    m2 = float(np.mean(c * c))
    skew = float(np.mean(c**3)) / m2**1.5 if m2 > 0.0 else math.nan
    kurt = float(np.mean(c**4)) / (m2 * m2) if m2 > 0.0 else math.nan
    dd_bars, longest = _drawdown_bars(equity)
    days_per_bar = timeframe.minutes / _MINUTES_PER_DAY
    sr0_bar = expected_max_sharpe(n_trials, trials_sharpe_variance / bpy)
    return ReturnStats(
        timeframe=timeframe.value,
        n_returns=n,
        bars_per_year=bpy,
        annualization_factor=ann,
        years=n / bpy,
        total_return=-1.0,
        cagr=-1.0,
        volatility=std * ann,
        sharpe=sharpe_bar * ann,
        sortino=mean / math.sqrt(float(np.mean(np.minimum(r, 0.0) ** 2))) * ann,
        calmar=-1.0,
        max_drawdown=-1.0,
        max_drawdown_bars=dd_bars,
        max_drawdown_days=dd_bars * days_per_bar,
        max_drawdown_recovered=False,
        longest_drawdown_bars=longest,
        longest_drawdown_days=longest * days_per_bar,
        skew=skew,
        kurtosis=kurt,
        benchmark_sharpe=0.0,
        psr=probabilistic_sharpe_ratio(sharpe_bar, 0.0, n, skew, kurt),
        n_trials=n_trials,
        trials_sharpe_variance=trials_sharpe_variance,
        expected_max_sharpe=sr0_bar * ann,
        dsr=probabilistic_sharpe_ratio(sharpe_bar, sr0_bar, n, skew, kurt),
    )


def liquidated_report(
    equity: F64,
    timeframe: Timeframe,
    trades: Sequence[TradeRecord],
    open_time_ms: npt.NDArray[np.int64],
    n_trials: int = 1,
    trials_sharpe_variance: float = 0.0,
) -> PerformanceReport:
    """:func:`atra.core.stats.report.compute_stats` for a liquidated curve: its return
    statistics from :func:`liquidated_return_stats`, the trade figures as usual."""
    rs = liquidated_return_stats(equity, timeframe, n_trials, trials_sharpe_variance)
    ts = trade_stats(trades)
    exposure = exposure_from_trades(trades, open_time_ms, timeframe) if trades else 0.0
    traded = math.fsum(abs(t.quantity) * (abs(t.entry_price) + abs(t.exit_price)) for t in trades)
    turnover = traded / float(equity.mean())
    days = rs.n_returns * timeframe.minutes / _MINUTES_PER_DAY
    return PerformanceReport(
        returns=rs,
        trades=ts,
        per_symbol=per_symbol_stats(trades),
        initial_equity=float(equity[0]),
        final_equity=0.0,
        exposure=exposure,
        turnover=turnover,
        turnover_per_year=turnover / rs.years,
        trades_per_day=ts.n_trades / days,
        costs_fraction_of_initial_equity=(
            ts.fees_paid + ts.slippage_paid + ts.funding_paid + ts.borrow_paid
        )
        / float(equity[0]),
    )


# --------------------------------------------------------------------------------------------
# metrics.json of a leg


def leg_metrics(
    series: pd.Series,
    trades: pd.DataFrame | None,
    timeframe: Timeframe,
    n_trials: int,
    trials_sharpe_variance: float | None,
) -> dict[str, Any]:
    """``metrics.json`` of one leg: :func:`compute_stats` as a dict (:func:`liquidated_report`
    for a leg that is 0 from its liquidation on), the source of the trials' Sharpe variance,
    the costs paid and per year, and the period."""
    records = [] if trades is None else trade_records(trades)
    times = series.index.to_numpy(dtype=np.int64)
    values = series.to_numpy(dtype=np.float64)
    liquidated = liquidation_row(values) is not None

    def stats(var: float) -> PerformanceReport:
        if liquidated:
            return liquidated_report(values, timeframe, records, times, n_trials, var)
        return compute_stats(
            values, timeframe, records, open_time_ms=times, n_trials=n_trials,
            trials_sharpe_variance=var,
        )  # fmt: skip

    if trials_sharpe_variance is not None:
        variance, source = trials_sharpe_variance, "given"
    elif n_trials > 1:
        variance = sharpe_estimator_variance(stats(0.0), timeframe.bars_per_year)
        source = "sharpe_estimator_variance"
    else:
        variance, source = 0.0, "single_trial"
    report = stats(variance)
    out = report.to_dict()
    out["trials_sharpe_variance_source"] = source
    out["has_trades"] = trades is not None
    if trades is None:  # no trade list (buy-and-hold): exposure and trade rate are unknown
        out["exposure"] = None
        out["trades_per_day"] = None
    costs = CostBreakdown.from_trades(records, report.initial_equity)
    years = report.returns.years
    per_year = {
        "fees": costs.fees / costs.reference_equity / years,
        "slippage": costs.slippage / costs.reference_equity / years,
        "funding": costs.funding / costs.reference_equity / years,
        "borrow": costs.borrow / costs.reference_equity / years,
        "total": costs.total_fraction / years,
    }
    out["costs"] = {
        "paid": costs.to_dict(),
        "per_year_fraction": per_year,
        "per_year_percent": {k: format_percent(v, 2) for k, v in per_year.items()},
        "per_year_unit": ANNUAL_COST_UNIT.replace("equity", "initial equity"),
    }
    out["period"] = {
        "start_ms": int(times[0]),
        "end_ms": int(times[-1]),
        "days": float((times[-1] - times[0]) / _MS_PER_DAY),
    }
    return out
