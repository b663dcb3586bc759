"""Config, result and frame layout of :func:`atra.core.backtest.engine.run_backtest`.

:class:`BacktestConfig` (validated on construction), :class:`BacktestResult` (trades, event
outcomes, equity curve; stats and a trades fingerprint), the event / trade columns and the
names of the kernels' outcome and exit-reason codes.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pandas as pd

from atra.core.backtest.position_nb import (
    EV_BAD_STOP,
    EV_DAILY_LOSS,
    EV_KILL_SWITCH,
    EV_MAX_GROSS_LEVERAGE,
    EV_MAX_PER_SYMBOL,
    EV_MAX_POSITIONS,
    EV_NO_EDGE,
    EV_NO_ENTRY_BAR,
    EV_NO_EQUITY,
    EV_TAKEN,
    EV_ZERO_SIZE,
    REASON_END,
    REASON_LIQ,
)
from atra.core.costs import CostModel
from atra.core.exits.kernel import REASON_NAMES
from atra.core.risk import (
    DAILY_LOSS,
    GUARDS,
    KILL_SWITCH,
    LEVERAGE,
    MAX_PER_SYMBOL,
    MAX_POSITIONS,
)
from atra.core.sizing import SizingConfig
from atra.core.stats.report import PerformanceReport, compute_stats
from atra.core.stats.trades import TradeRecord, trade_records_of
from atra.core.types import Timeframe
from atra.errors import ConfigError

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

ALL_REASON_NAMES: Final[dict[int, str]] = {**REASON_NAMES, REASON_LIQ: "LIQ", REASON_END: "END"}
OUTCOME_NAMES: Final[dict[int, str]] = {
    EV_TAKEN: "taken",
    EV_NO_ENTRY_BAR: "no_entry_bar",
    EV_MAX_POSITIONS: "max_positions",
    EV_MAX_PER_SYMBOL: "max_per_symbol",
    EV_MAX_GROSS_LEVERAGE: "max_gross_leverage",
    EV_NO_EDGE: "no_edge",
    EV_NO_EQUITY: "no_equity",
    EV_BAD_STOP: "stop_not_positive",
    EV_ZERO_SIZE: "zero_size",
    EV_DAILY_LOSS: "daily_loss",
    EV_KILL_SWITCH: "kill_switch",
}
BLOCKED_SIZING: Final[str] = "sizing"
"""``blocked_by`` of an event the sizing refused (the decision's name,
:data:`atra.core.decision.BLOCKED_SIZING`)."""
BLOCKED_BY: Final[dict[int, str]] = {
    EV_KILL_SWITCH: KILL_SWITCH,
    EV_DAILY_LOSS: DAILY_LOSS,
    EV_MAX_POSITIONS: MAX_POSITIONS,
    EV_MAX_PER_SYMBOL: MAX_PER_SYMBOL,
    EV_MAX_GROSS_LEVERAGE: LEVERAGE,
    EV_NO_EDGE: BLOCKED_SIZING,
    EV_NO_EQUITY: BLOCKED_SIZING,
    EV_BAD_STOP: BLOCKED_SIZING,
    EV_ZERO_SIZE: BLOCKED_SIZING,
    EV_NO_ENTRY_BAR: OUTCOME_NAMES[EV_NO_ENTRY_BAR],
}
"""Outcome code -> ``blocked_by`` of a not-taken event: the live guards' names
(:data:`atra.core.risk.GUARDS`) for the guards, ``sizing`` for the sizing's refusals."""
NOT_TAKEN_DECISION: Final[str] = "decision_false"
"""``outcome`` of an event whose decision column is False."""
EVENT_COLUMNS: Final[tuple[str, ...]] = (
    "symbol",
    "t",
    "side",
    "sl_dist",
    "tp1_dist",
    "tp2_dist",
    "horizon_bars",
)
TRADE_COLUMNS: Final[tuple[str, ...]] = (
    "symbol",
    "side",
    "event_row",
    "signal_time_ms",
    "entry_bar",
    "entry_time_ms",
    "entry_price",
    "exit_bar",
    "exit_time_ms",
    "exit_price",
    "reason",
    "leg1_bar",
    "leg1_price",
    "leg1_fraction",
    "leg1_reason",
    "leg2_bar",
    "leg2_price",
    "leg2_fraction",
    "leg2_reason",
    "quantity",
    "notional",
    "pnl",
    "fees",
    "slippage",
    "funding",
    "borrow",
    "risk_amount",
    "equity_at_entry",
    "label",
    "label_ret",
)


def categorical(codes: npt.NDArray[np.integer[Any]], names: Sequence[str]) -> pd.Categorical:
    """``codes`` (0-based positions in ``names``) as a categorical column over ``names``."""
    categories: pd.Index[Any] = pd.Index(list(names))
    return pd.Categorical.from_codes(codes.astype(np.int64), categories=categories)


@dataclass(frozen=True, slots=True)
class BacktestConfig:
    """Parameters of :func:`run_backtest`, validated on construction (:class:`ConfigError`)."""

    initial_equity: float = 10_000.0
    sizing: SizingConfig = field(default_factory=SizingConfig)
    """Risk fraction (2%), cap (<= 2%), Kelly multiplier, per-position notional cap
    (``max_leverage``). Its ``fee_rate`` is not used: the risk counts the actual fees."""
    costs: CostModel = field(default_factory=CostModel)
    tp_maker: bool = False
    """Take-profit fills pay the maker fee (resting limit orders) instead of the taker fee."""
    tp1_fraction: float = 1.0
    move_to_be: bool = False
    max_positions: int = 10
    max_per_symbol: int = 1
    max_gross_leverage: float = 1.0
    max_daily_loss: float = 1.0
    """The daily-loss guard (``risk.max_daily_loss``): no new entry once the P&L since 00:00
    UTC is at or below this share of the day's starting equity; 1.0 = only a wiped-out day."""
    leverage: float = 1.0
    """Margin leverage of perpetual positions (isolated margin = notional / leverage)."""
    maintenance_margin_rate: float = 0.005
    spot_borrow_rate_per_hour: float = 0.0
    """Margin interest of a spot short per hour held, a fraction of its notional at the mark
    (``1e-5`` = 0.1 bps/h); longs and perpetuals pay none. 0: spot shorts borrow for free."""
    probability_column: str | None = None
    """Per-event probability column (e.g. the meta model's ``p_take``): Kelly sizing when set."""
    decision_column: str | None = "take"
    """Bool column; rows with False are not traded. Ignored when absent or None."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.initial_equity) and self.initial_equity > 0.0):
            raise ConfigError(f"initial_equity must be > 0, got {self.initial_equity}")
        if not 0.0 < self.tp1_fraction <= 1.0:
            raise ConfigError(f"tp1_fraction must be in (0, 1], got {self.tp1_fraction}")
        if self.max_positions < 1 or self.max_per_symbol < 1:
            raise ConfigError(
                f"max_positions ({self.max_positions}) and max_per_symbol "
                f"({self.max_per_symbol}) must be >= 1"
            )
        gross = self.max_gross_leverage
        if not (math.isfinite(gross) and gross > 0.0):
            raise ConfigError(f"max_gross_leverage must be a finite number > 0, got {gross}")
        daily = self.max_daily_loss
        if not (math.isfinite(daily) and 0.0 < daily <= 1.0):
            raise ConfigError(f"max_daily_loss must be in (0, 1], got {daily}")
        if not (math.isfinite(self.leverage) and self.leverage >= 1.0):
            raise ConfigError(f"leverage must be a finite number >= 1, got {self.leverage}")
        mmr = self.maintenance_margin_rate
        if not (math.isfinite(mmr) and 0.0 <= mmr < 0.5):
            raise ConfigError(f"maintenance_margin_rate must be in [0, 0.5), got {mmr}")
        rate = self.spot_borrow_rate_per_hour
        if not (math.isfinite(rate) and 0.0 <= rate < 0.01):
            raise ConfigError(f"spot_borrow_rate_per_hour must be in [0, 0.01), got {rate}")


@dataclass(frozen=True, slots=True)
class BacktestResult:
    """Trades, the events' outcomes and the equity curve of one backtest."""

    trades: pd.DataFrame
    """One row per trade (``TRADE_COLUMNS``), in entry order; bars are rows of the symbol's
    candles, ``exit_*`` the final leg, ``label`` / ``label_ret`` what the triple-barrier label
    of the event says (exit kernel, no leverage or liquidation)."""
    events: pd.DataFrame
    """The input events with an ``outcome`` column (``taken``, a limit's name, ...) and a
    ``blocked_by`` column (None when taken; else the live guard's name that blocked it, the
    same names the live loop journals, ``sizing``, or the decision stage's own
    ``blocked_by`` when the decision column was False)."""
    open_time_ms: I64
    equity: F64
    """Equity marked at every close of the grid."""
    gross_leverage: F64
    """Open notional at the close / equity."""
    n_open: I64
    initial_equity: float
    timeframe: Timeframe

    @property
    def returns(self) -> F64:
        """Per-bar returns of the equity, starting from the initial equity (N values)."""
        prev = np.concatenate(([self.initial_equity], self.equity[:-1]))
        return np.asarray(self.equity / prev - 1.0, dtype=np.float64)

    @property
    def final_equity(self) -> float:
        return float(self.equity[-1])

    def equity_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "open_time": self.open_time_ms,
                "equity": self.equity,
                "returns": self.returns,
                "gross_leverage": self.gross_leverage,
                "n_open": self.n_open,
            }
        )

    def blocks_by_guard(self) -> dict[str, int]:
        """Events each risk guard blocked, by guard name (every guard, zeros included)."""
        counts = self.events["blocked_by"].value_counts()
        return {name: int(counts.get(name, 0)) for name in GUARDS}

    def trade_records(self) -> list[TradeRecord]:
        tr = self.trades
        cols = ("symbol", "quantity", "entry_price", "exit_price", "entry_time_ms",
                "exit_time_ms", "pnl", "fees", "slippage", "funding", "borrow")  # fmt: skip
        return trade_records_of([tr[c].tolist() for c in cols])

    def stats(
        self,
        timeframe: Timeframe | None = None,
        *,
        n_trials: int = 1,
        benchmark_sharpe: float = 0.0,
        trials_sharpe_variance: float = 0.0,
    ) -> PerformanceReport:
        """:func:`atra.core.stats.report.compute_stats` on the curve (the initial equity prepended)
        and the trades. Annualised with ``sqrt(timeframe.bars_per_year)`` (365-day year; 1h ->
        sqrt(8760) = 93.59), carried in ``report.returns.annualization_factor``."""
        tf = timeframe if timeframe is not None else self.timeframe
        equity = np.concatenate(([self.initial_equity], self.equity))
        held = np.concatenate(([False], self.n_open > 0))
        return compute_stats(
            equity,
            tf,
            self.trade_records(),
            in_position=held,
            benchmark_sharpe=benchmark_sharpe,
            n_trials=n_trials,
            trials_sharpe_variance=trials_sharpe_variance,
        )

    def trades_sha256(self) -> str:
        """SHA-256 of the trade list (values, in order): a run's fingerprint."""
        digest = hashlib.sha256()
        for col in TRADE_COLUMNS:
            values = self.trades[col]
            digest.update(col.encode())
            digest.update(values.astype(str).str.cat(sep="|").encode())
        return digest.hexdigest()
