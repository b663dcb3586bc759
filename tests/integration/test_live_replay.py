"""Replay through the live loop == the backtest: signals, decisions, paper trades.

January 2024 of five real USDT-M perpetuals (../shared/data) are served by the fake exchange
over HTTP and replayed bar by bar with a simulated clock; the journal must hold exactly the
backtest's primary signals, the same take / block decisions, and the same trades (entry and
exit bars, prices and reasons) as :func:`atra.core.backtest.engine.run_backtest` on the full
history. The backtest is the one ``atra live --replay --compare`` runs
(:func:`atra.cli.replay_output.backtest_of_replay`), and its comparison finds the two
identical.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from atra.adapters.journal.database import Journal
from atra.cli.replay_output import (
    backtest_of_replay,
    compare_replay,
    decide_replayed,
    replay_universe,
)
from atra.core.exits.api import ExitSpec
from atra.core.signals.spec import SignalSpec
from atra.core.sizing import SizingConfig
from atra.core.types import Market, Timeframe
from atra.live.compare import BacktestPlan
from atra.live.guards import GuardLimits, RiskGuards
from atra.live.loop import LoopSettings, StrategyDecider
from atra.live.replay import ReplaySetup, run_replay
from helpers_logging import quiet_structlog

SYMBOLS = ("ADAUSDT", "BTCUSDT", "ETHUSDT", "LTCUSDT", "XRPUSDT")
TF = Timeframe.H1
FROM_MS = int(pd.Timestamp("2024-01-01", tz="UTC").value // 1_000_000)
TO_MS = int(pd.Timestamp("2024-02-01", tz="UTC").value // 1_000_000)  # 76 signals
WINDOW = 600


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    with quiet_structlog():
        yield


@pytest.fixture(scope="module")
def candles(shared_data_dir: Path) -> dict[str, pd.DataFrame]:
    out = {}
    for sym in SYMBOLS:
        frame = pd.read_parquet(shared_data_dir / f"{sym}_perp_1h.parquet")
        keep = (frame["open_time"] >= FROM_MS - (WINDOW + 10) * TF.ms) & (
            frame["open_time"] < TO_MS + 100 * TF.ms
        )
        out[sym] = frame[keep].reset_index(drop=True)
    return out


@pytest.mark.slow
@pytest.mark.shared_data
def test_replay_equals_backtest(candles: dict[str, pd.DataFrame], tmp_path: Path) -> None:
    spec = SignalSpec()  # EMA 20/50, SL 1.5 / TP 3 ATR, 48 bars
    sizing = SizingConfig()
    exit_spec = ExitSpec()  # taker 4 bps everywhere, no slippage
    limits = GuardLimits(
        max_open_positions=100, max_per_symbol=1, max_gross_leverage=1e6, max_daily_loss=1.0
    )
    guards = RiskGuards(limits)
    decider = StrategyDecider(spec, TF, sizing=sizing, costs=exit_spec)
    settings = LoopSettings(
        SYMBOLS, TF, window_bars=WINDOW, start_ms=FROM_MS, stop_ms=TO_MS, bar_close_delay_s=0.0
    )
    journal_path = tmp_path / "replay.sqlite"
    report = asyncio.run(
        run_replay(
            settings,
            candles,
            journal_path,
            decider=decider,
            exit_spec=exit_spec,
            guards=guards,
            setup=ReplaySetup(weight_limit=2400),
        )
    )
    n_bars = (TO_MS - FROM_MS) // TF.ms
    assert report.cycles == n_bars
    assert report.statuses == {200: report.requests}

    async def read() -> tuple[list, list, list, dict[str, int]]:  # type: ignore[type-arg]
        async with Journal.open(journal_path) as j:
            return await j.signals(), await j.positions(), await j.cycles(), await j.symbol_state()

    signals, positions, cycles, state = asyncio.run(read())
    assert len(cycles) == n_bars
    assert all(c.status == "ok" for c in cycles)
    assert state == dict.fromkeys(SYMBOLS, TO_MS - TF.ms)

    # the backtest's events and decisions on the full history, as --compare runs them
    plan = BacktestPlan.of_replay(
        settings, decider=decider, exit_spec=exit_spec, limits=limits, market=Market.PERP
    )
    events = decided = decide_replayed(plan, replay_universe(plan, candles, None))
    assert len(events) >= 60  # a real test: many signals over a month

    # 1) signals: same bars and sides, same prices (ATR seeds decay inside the window)
    got = pd.DataFrame(
        {
            "symbol": [s.symbol for s in signals],
            "time_ms": [s.bar_time_ms for s in signals],
            "side": [s.side for s in signals],
            "entry": [s.entry for s in signals],
            "sl": [s.sl for s in signals],
            "tp1": [s.tp1 for s in signals],
        }
    ).sort_values(["time_ms", "symbol"])
    got = got.reset_index(drop=True)

    def keys(frame: pd.DataFrame) -> list[tuple[str, int, int]]:
        return list(
            zip(
                frame["symbol"].astype(str),
                frame["time_ms"].astype(int),
                frame["side"].astype(int),
                strict=True,
            )
        )

    assert keys(got) == keys(events)
    np.testing.assert_array_equal(got["entry"], events["entry"])
    np.testing.assert_allclose(got["sl"], events["sl"], rtol=1e-9)
    np.testing.assert_allclose(got["tp1"], events["tp1"], rtol=1e-9)
    assert decided["take"].all()  # primary-only: the decision function takes every signal

    # 2) decisions after the limits: taken / blocked as in the backtest
    bt = backtest_of_replay(plan, candles, None)
    bt_taken = (bt.events["outcome"] == "taken").to_numpy()
    journal_take = {(s.symbol, s.bar_time_ms): s.take for s in signals}
    ours = np.array(
        [journal_take[(s, t)] for s, t in zip(events["symbol"], events["time_ms"], strict=True)]
    )
    np.testing.assert_array_equal(ours, bt_taken)
    blocked = {s.blocked_by for s in signals if not s.take}
    assert blocked <= {"max_per_symbol"}

    # 3) paper trades: the backtest's trades that ended inside the replay
    trades = bt.trades[bt.trades["exit_time_ms"] < TO_MS]
    closed = sorted(
        (
            p.symbol,
            p.signal_time_ms,
            p.entry_time_ms,
            p.entry_price,
            p.exit_time_ms,
            p.exit_price,
            p.reason,
        )
        for p in positions
        if p.status == "closed"
    )
    expected = sorted(
        zip(
            trades["symbol"].astype(str),
            trades["signal_time_ms"].astype(int),
            trades["entry_time_ms"].astype(int),
            trades["entry_price"].astype(float),
            trades["exit_time_ms"].astype(int),
            trades["exit_price"].astype(float),
            trades["reason"].astype(str),
            strict=True,
        )
    )
    assert len(closed) == len(expected) > 20
    exact = [(c[0], c[1], c[2], c[3], c[4], c[6]) for c in closed]  # bars, entry fill, reason
    assert exact == [(e[0], e[1], e[2], e[3], e[4], e[6]) for e in expected]
    # exit prices: barrier distances from the windowed ATR differ from the full-history ATR
    # in the last bits only
    np.testing.assert_allclose([c[5] for c in closed], [e[5] for e in expected], rtol=1e-12)
    still_open = {(p.symbol, p.signal_time_ms) for p in positions if p.status != "closed"}
    late = bt.trades[bt.trades["exit_time_ms"] >= TO_MS]
    assert still_open == set(
        zip(late["symbol"].astype(str), late["signal_time_ms"].astype(int), strict=True)
    )

    # 4) the whole comparison (decisions, trades with fees and P&L, equity bar by bar)
    result = asyncio.run(compare_replay(journal_path, plan, candles, None))
    assert result.differences == ()
    assert result.trades == len(closed)
