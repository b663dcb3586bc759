"""The figures of one leg of a run (:mod:`atra.research.runrecord`): statistics, the trials' Sharpe
variance for the DSR and the realised costs per year.

A liquidated leg (its equity reaches zero at some bar and stays there) is measured on that curve
by the core statistics (:func:`atra.core.stats.report.compute_stats`): the return into the
liquidation bar is -100%, the leg holds nothing afterwards (returns 0), so its total return and
CAGR are -100%, its maximum drawdown -100% and never recovered.
"""

from __future__ import annotations

import math
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pandas as pd

from atra.core.costs import ANNUAL_COST_UNIT, CostBreakdown, format_percent
from atra.core.stats.report import PerformanceReport, compute_stats
from atra.core.stats.trades import TradeRecord, trade_records_of
from atra.core.types import Timeframe
from atra.errors import DataError

__all__ = [
    "leg_metrics",
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
# metrics.json of a leg


def leg_metrics(
    series: pd.Series,
    trades: pd.DataFrame | None,
    timeframe: Timeframe,
    n_trials: int,
    trials_sharpe_variance: float | None,
) -> dict[str, Any]:
    """``metrics.json`` of one leg: :func:`compute_stats` as a dict (a leg that is 0 from its
    liquidation on included), the source of the trials' Sharpe variance,
    the costs paid and per year, and the period."""
    records = [] if trades is None else trade_records(trades)
    times = series.index.to_numpy(dtype=np.int64)
    values = series.to_numpy(dtype=np.float64)

    def stats(var: float) -> PerformanceReport:
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
