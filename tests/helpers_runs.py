"""Hand-made backtest output for run-record and report tests: trade rows with the costs the
backtester reports, and an equity curve stepping by each trade's P&L at its exit bar."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest

from atra.core.types import Timeframe
from atra.research.runrecord import setup as rs

T0_MS = 1_704_067_200_000  # 2024-01-01 00:00 UTC
INITIAL = 10_000.0
SLIPPAGE_RATE = 0.0001
REASONS = ("SL", "TP1", "TP2", "TIME")


def bar_times(n_bars: int, tf: Timeframe) -> npt.NDArray[np.int64]:
    """Open times (ms) of ``n_bars`` consecutive bars from :data:`T0_MS`."""
    return T0_MS + np.arange(n_bars, dtype=np.int64) * tf.ms


def trade_row(
    tf: Timeframe,
    *,
    symbol: str,
    side: int,
    entry_bar: int,
    exit_bar: int,
    entry: float,
    exit_: float,
    qty: float,
    fee_rate: float,
    funding: float,
    reason: str,
) -> dict[str, Any]:
    """One trade as the backtester lists it: fees at ``fee_rate`` and slippage at
    :data:`SLIPPAGE_RATE` of both fills' notional, funding paid, net ``pnl``; ``exit_bar``
    kept for :func:`step_equity`."""
    fees = qty * (entry + exit_) * fee_rate
    slip = qty * (entry + exit_) * SLIPPAGE_RATE
    return {
        "symbol": symbol,
        "side": side,
        "entry_time_ms": T0_MS + entry_bar * tf.ms,
        "exit_time_ms": T0_MS + exit_bar * tf.ms,
        "entry_price": entry,
        "exit_price": exit_,
        "quantity": qty,
        "pnl": side * qty * (exit_ - entry) - fees - slip - funding,
        "fees": fees,
        "slippage": slip,
        "funding": funding,
        "reason": reason,
        "exit_bar": exit_bar,
    }


def step_equity(trades: pd.DataFrame | None, n_bars: int, tf: Timeframe) -> pd.Series:
    """:data:`INITIAL` plus the P&L of every trade from its exit bar on, by bar open time."""
    eq = np.full(n_bars, INITIAL)
    if trades is not None:
        for bar, pnl in zip(trades["exit_bar"], trades["pnl"], strict=True):
            eq[int(bar) :] += pnl
    return pd.Series(eq, index=bar_times(n_bars, tf))


def fake_trades(
    n: int, tf: Timeframe, keep: Callable[[int], bool] = lambda i: True
) -> pd.DataFrame:
    """``n`` trades (those ``keep`` accepts) of two symbols, long and short in turn, 20 bars
    apart, every exit reason, fees, slippage and funding paid or received."""
    rows: list[dict[str, Any]] = []
    for i in range(n):
        if not keep(i):
            continue
        entry_bar = 5 + 20 * i
        side = 1 if i % 2 == 0 else -1
        entry = 100.0 + i * 1.5
        move = ((i * 7) % 11 - 4) / 100.0
        rows.append(
            trade_row(
                tf,
                symbol="BTCUSDT" if i % 3 else "ETHUSDT",
                side=side,
                entry_bar=entry_bar,
                exit_bar=entry_bar + 3 + i % 5,
                entry=entry,
                exit_=entry * (1.0 + side * move),
                qty=10.0,
                fee_rate=0.0004,
                funding=0.05 * (i % 3 - 1),
                reason=REASONS[i % 4],
            )
        )
    return pd.DataFrame(rows)


def one_line_error(exc: pytest.ExceptionInfo[BaseException], *fragments: str) -> str:
    """The message of ``exc``: one line, containing every fragment."""
    msg = str(exc.value)
    assert "\n" not in msg
    for fragment in fragments:
        assert fragment in msg
    return msg


def sample_setup(models: int = 2) -> rs.RunSetup:
    """What a perpetual walk-forward run on BTCUSDT and ETHUSDT ran (hand-made numbers)."""
    hour = Timeframe.H1.ms
    return rs.RunSetup(
        exchange="binance", market="perp", symbols=("BTCUSDT", "ETHUSDT"), timeframe="1h",
        rule="ema_cross", rule_params={"fast": 10, "slow": 30},
        barriers=rs.BarrierSetup("atr", 1.0, 1.5, 3.0, 14, 24, 1.0, False),
        costs=rs.CostSetup(2.0, 5.0, "taker", 2.0, True),
        sizing=rs.SizingSetup("fixed_fractional", 10_000.0, 0.01, 0.02, None, 1.0, 3.0, 5, 1, 1.0),
        dates=rs.DateRange(T0_MS, T0_MS + 99 * hour, T0_MS + 50 * hour, T0_MS + 199 * hour),
        walkforward=rs.WalkForwardSetup(30, 48.0, "expanding", None, 180, 200, models),
        models=tuple(
            rs.FoldModel(k, f"{k:x}" * 12, T0_MS, T0_MS + (k + 1) * hour, T0_MS + (k + 2) * hour,
                        T0_MS + (k + 3) * hour, 250 + k, 0.55)
            for k in range(models)
        ),
        sides="long/short (perp)",
    )  # fmt: skip
