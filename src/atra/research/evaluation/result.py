"""The result of an evaluation: :class:`Evaluation` (the written run, its report, the backtests)
and :class:`LegFigures`, the headline numbers of each leg side by side."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from atra.core.backtest.engine import BacktestResult
from atra.research.evaluation.buy_hold import BuyHold
from atra.research.evaluation.oos import OOSEvents
from atra.research.report.page import terminal_summary
from atra.research.runrecord.record import LoadedRun

__all__ = ["Evaluation", "LegFigures", "leg_figures", "metric_number"]


@dataclass(frozen=True, slots=True)
class LegFigures:
    """The headline numbers of one leg (costs as positive amounts paid, quote currency)."""

    total_return: float | None
    cagr: float | None
    sharpe: float | None
    sortino: float | None
    psr: float | None
    dsr: float | None
    max_drawdown: float | None
    win_rate: float | None
    profit_factor: float | None
    n_trades: int | None
    fees_paid: float | None
    slippage_paid: float | None
    funding_paid: float | None
    borrow_paid: float | None
    """Margin interest of spot shorts (0 for buy-and-hold and for runs written before it)."""


def metric_number(value: Any) -> float | None:
    """A ``metrics.json`` number: ``None`` stays None, ``"inf"`` / ``"-inf"`` are infinities."""
    if value is None:
        return None
    if isinstance(value, str):
        return {"inf": math.inf, "-inf": -math.inf}.get(value)
    return float(value)


def leg_figures(leg: Mapping[str, Any], costs: BuyHold | None) -> LegFigures:
    """The figures of one leg of ``metrics.json``; ``costs`` for buy-and-hold (no trade list)."""
    r, t = leg["returns"], leg["trades"]
    has_trades = bool(leg.get("has_trades", True))

    def trade(key: str) -> float | None:
        return metric_number(t[key]) if has_trades else None

    n = t["n_trades"] if has_trades else None
    return LegFigures(
        total_return=metric_number(r["total_return"]),
        cagr=metric_number(r["cagr"]),
        sharpe=metric_number(r["sharpe"]),
        sortino=metric_number(r["sortino"]),
        psr=metric_number(r["psr"]),
        dsr=metric_number(r["dsr"]),
        max_drawdown=metric_number(r["max_drawdown"]),
        win_rate=trade("win_rate"),
        profit_factor=trade("profit_factor"),
        n_trades=None if n is None else int(n),
        fees_paid=costs.fees if costs is not None else trade("fees_paid"),
        slippage_paid=costs.slippage if costs is not None else trade("slippage_paid"),
        funding_paid=costs.funding if costs is not None else trade("funding_paid"),
        borrow_paid=0.0 if costs is not None or "borrow_paid" not in t else trade("borrow_paid"),
    )


@dataclass(frozen=True, slots=True, eq=False)
class Evaluation:
    """The written run, its report and the side-by-side figures."""

    run_dir: Path
    report_path: Path | None
    run: LoadedRun
    oos: OOSEvents
    backtests: dict[str, BacktestResult]
    buy_hold: BuyHold
    figures: dict[str, LegFigures] = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        return self.run.record.run_id

    @property
    def annualization(self) -> str:
        """E.g. ``Sharpe annualised x sqrt(8760) (1h bars, 365-day year)``."""
        return self.run.record.annualization

    @property
    def trades_sha256(self) -> dict[str, str]:
        return dict(self.run.record.trades_sha256)

    def table(self) -> Table:
        """The legs side by side (rich), the annualisation, scope and liquidations in the
        caption."""
        return terminal_summary(self.run)
