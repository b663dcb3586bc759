"""Shared setup of the replay-versus-backtest parity tests on real data (../shared/data): the
quiet-logging fixture, the readers of a window of hourly candles and funding, the replay they
run and the comparisons of its journal with the backtest."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import pytest

from atra.adapters.journal.database import Journal
from atra.adapters.journal.records import (
    EquityRecord,
    FillRecord,
    GuardEvent,
    OrderRecord,
    PositionRecord,
    SignalRecord,
)
from atra.core.backtest.engine import BacktestConfig, run_backtest
from atra.core.backtest.results import BacktestResult
from atra.core.costs import CostModel
from atra.core.exits.api import ExitSpec
from atra.core.features.registry import HISTORY_BARS
from atra.core.sizing import SizingConfig
from atra.core.types import Market, Timeframe
from atra.live.deciders import DecisionFn
from atra.live.guards import GuardLimits, RiskGuards
from atra.live.loop import LoopSettings
from atra.live.replay import ReplayReport, ReplaySetup, run_replay
from helpers_logging import quiet_structlog

K = TypeVar("K")

TAKER, MAKER, SLIP_BPS = 0.0005, 0.0002, 2.0
PARITY_EXIT = ExitSpec(
    tp1_fraction=0.5,
    move_to_be=True,
    fee_entry=TAKER,
    fee_tp=MAKER,
    fee_stop=TAKER,
    slippage_bps=SLIP_BPS,
)
"""Taker entries and stops, maker take-profits, 2 bps slippage, a TP1 partial with
break-even: every cost and exit path the live side can get wrong."""


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    """Warnings and above only: assign it in a test module (``_quiet = helpers_parity._quiet``)
    to quiet every test there."""
    with quiet_structlog():
        yield


def hourly_candles(
    data_dir: Path, symbols: tuple[str, ...], market: str, lo_ms: int, hi_ms: int
) -> dict[str, pd.DataFrame]:
    """Each symbol's ``{symbol}_{market}_1h.parquet`` candles opening in ``[lo_ms, hi_ms)``."""
    out = {}
    for sym in symbols:
        frame = pd.read_parquet(data_dir / f"{sym}_{market}_1h.parquet")
        keep = (frame["open_time"] >= lo_ms) & (frame["open_time"] < hi_ms)
        out[sym] = frame[keep].reset_index(drop=True)
    return out


def perp_funding(
    data_dir: Path, symbols: tuple[str, ...], hi_ms: int | None = None
) -> dict[str, pd.DataFrame]:
    """Each symbol's ``{symbol}_perp_funding.parquet`` rates, those before ``hi_ms`` (all of
    them when ``hi_ms`` is None)."""
    out = {}
    for sym in symbols:
        fr = pd.read_parquet(data_dir / f"{sym}_perp_funding.parquet")
        out[sym] = fr if hi_ms is None else fr[fr["funding_time"] < hi_ms].reset_index(drop=True)
    return out


def replay_window(
    candles: Mapping[K, pd.DataFrame], start_ms: int, timeframe: Timeframe
) -> dict[K, pd.DataFrame]:
    """Each frame from ``HISTORY_BARS + 10`` bars before ``start_ms`` on: what a replay from
    ``start_ms`` serves (its first window and a little more)."""
    lo = start_ms - (HISTORY_BARS + 10) * timeframe.ms
    return {k: c[c["open_time"] >= lo].reset_index(drop=True) for k, c in candles.items()}


def parity_backtest(
    candles: Mapping[str, pd.DataFrame],
    decided: pd.DataFrame,
    *,
    exit_spec: ExitSpec,
    sizing: SizingConfig,
    max_positions: int,
    max_gross: float,
    funding: Mapping[str, pd.DataFrame],
    timeframe: Timeframe,
    probability_column: str | None = None,
) -> BacktestResult:
    """The backtest a replay must equal: ``exit_spec``'s fees (maker take-profits, one taker
    rate for entries and stops), TP1 and break-even, the limits of :func:`limit_guards`, perp
    funding charged."""
    assert exit_spec.fee_stop == exit_spec.fee_entry  # the cost model has one taker rate
    return run_backtest(
        candles,
        decided,
        BacktestConfig(
            sizing=sizing,
            costs=CostModel(
                maker_fee_rate=exit_spec.fee_tp,
                taker_fee_rate=exit_spec.fee_entry,
                slippage_bps=exit_spec.slippage_bps,
            ),
            tp_maker=True,
            tp1_fraction=exit_spec.tp1_fraction,
            move_to_be=exit_spec.move_to_be,
            max_positions=max_positions,
            max_per_symbol=1,
            max_gross_leverage=max_gross,
            probability_column=probability_column,
        ),
        funding=funding,
        markets=dict.fromkeys(candles, Market.PERP),
        timeframe=timeframe,
    )


def limit_guards(max_positions: int, max_gross: float) -> RiskGuards:
    """The backtest's position limits as live guards: ``max_positions`` open, one per symbol,
    ``max_gross`` gross leverage, no daily-loss stop."""
    return RiskGuards(
        GuardLimits(
            max_open_positions=max_positions,
            max_per_symbol=1,
            max_gross_leverage=max_gross,
            max_daily_loss=1.0,
        )
    )


def run_parity_replay(
    candles: Mapping[str, pd.DataFrame],
    journal_path: Path,
    *,
    timeframe: Timeframe,
    start_ms: int,
    stop_ms: int,
    decider: DecisionFn,
    exit_spec: ExitSpec,
    guards: RiskGuards,
    funding: Mapping[str, pd.DataFrame],
    orders: bool = False,
    **more: Any,
) -> ReplayReport:
    """The live loop from ``start_ms`` to ``stop_ms`` over the symbols of ``candles`` (in that
    order), perp funding charged, against the fake exchange (weight limit 2,400; ``orders``:
    the real order path); ``more`` goes to :func:`run_replay` as it is."""
    settings = LoopSettings(
        tuple(candles),
        timeframe,
        start_ms=start_ms,
        stop_ms=stop_ms,
        bar_close_delay_s=0.0,
        funding=True,
    )
    return asyncio.run(
        run_replay(
            settings,
            replay_window(candles, start_ms, timeframe),
            journal_path,
            decider=decider,
            exit_spec=exit_spec,
            guards=guards,
            setup=ReplaySetup(weight_limit=2400, orders=orders),
            funding=funding,
            **more,
        )
    )


@dataclass(frozen=True)
class Journalled:
    """What a replay journalled."""

    signals: list[SignalRecord]
    positions: list[PositionRecord]
    fills: list[FillRecord]
    equity: list[EquityRecord]
    orders: list[OrderRecord]
    guard_events: list[GuardEvent]


def read_journal(path: Path) -> Journalled:
    """Everything the journal at ``path`` holds that the parity tests compare."""

    async def read() -> Journalled:
        async with Journal.open(path) as j:
            return Journalled(
                await j.signals(),
                await j.positions(),
                await j.fills(),
                await j.equity(),
                await j.orders(),
                await j.guard_events(),
            )

    return asyncio.run(read())


def assert_trades_match(
    positions: Sequence[PositionRecord], bt_trades: pd.DataFrame, stop_ms: int, rtol: float
) -> tuple[list[PositionRecord], pd.DataFrame]:
    """The journal's closed positions are the backtest's trades closed before ``stop_ms``, in
    (signal time, symbol) order: symbol, bars and exit reason exactly, prices, quantities and
    P&L to ``rtol``. Returns both, in that order."""
    trades = bt_trades[bt_trades["exit_time_ms"] < stop_ms].sort_values(
        ["signal_time_ms", "symbol"], ignore_index=True
    )
    closed = sorted(
        (p for p in positions if p.status == "closed"), key=lambda p: (p.signal_time_ms, p.symbol)
    )
    assert len(closed) == len(trades)
    got = [(p.symbol, p.signal_time_ms, p.entry_time_ms, p.exit_time_ms, p.reason) for p in closed]
    cols = ["symbol", "signal_time_ms", "entry_time_ms", "exit_time_ms", "reason"]
    assert got == list(trades[cols].itertuples(index=False, name=None))
    for col, ours in (
        ("entry_price", [p.entry_price for p in closed]),
        ("exit_price", [p.exit_price for p in closed]),
        ("quantity", [p.quantity for p in closed]),
        ("pnl", [p.pnl for p in closed]),
    ):
        got_col = np.array(ours, dtype=np.float64)  # None (never on a closed one): NaN
        np.testing.assert_allclose(got_col, trades[col].to_numpy(), rtol=rtol, err_msg=col)
    return closed, trades


def assert_funding_matches(
    closed: Sequence[PositionRecord],
    fills: Sequence[FillRecord],
    trades: pd.DataFrame,
    rtol: float,
) -> np.ndarray[Any, np.dtype[np.float64]]:
    """The funding the journal's FUNDING fills charged each closed position is the backtest's
    (to ``rtol``); returns it."""
    paid = {p.position_id: 0.0 for p in closed}
    for f in fills:
        if f.reason == "FUNDING" and f.client_order_id in paid:
            paid[f.client_order_id] -= f.pnl
    funded = np.array([paid[p.position_id] for p in closed], dtype=np.float64)
    np.testing.assert_allclose(funded, trades["funding"].to_numpy(), rtol=rtol, atol=1e-12)
    return funded


def assert_equity_matches(
    equity: Sequence[EquityRecord],
    bt: BacktestResult,
    start_ms: int,
    stop_ms: int,
    timeframe: Timeframe,
    rtol: float,
) -> pd.Series:
    """The journal's equity is the backtest's bar by bar over ``[start_ms, stop_ms)``, one
    value a bar; returns the journal's curve."""
    curve = bt.equity_frame().set_index("open_time")["equity"]
    ours = pd.Series({e.bar_time_ms: e.equity for e in equity})
    ours = ours[(ours.index >= start_ms) & (ours.index < stop_ms)]
    assert len(ours) == (stop_ms - start_ms) // timeframe.ms
    np.testing.assert_allclose(ours.to_numpy(), curve.loc[ours.index].to_numpy(), rtol=rtol)
    return ours
