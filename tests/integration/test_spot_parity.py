"""Spot orders replay == backtest: four weeks of two real spot pairs (BTCUSDT, ETHUSDT,
../shared/data) replayed through ``atra live``'s loop with real spot orders (MARKET entry, OCO
lists: LIMIT_MAKER take-profit + STOP_LOSS, a MARKET sell at the time barrier) against the fake
exchange's spot matching engine. The spot settings are the config's (long only, taker fees and
slippage on the stop), with the take-profit filled as a maker: TP1 for the whole quantity (one
OCO per position), and TP1 for half with TP2 for the rest and the stop moved to
break-even after TP1 (two OCO lists, B replaced by B' after TP1). Every decision,
trade (bars, reason, prices, quantity, P&L) and equity mark equals the backtest's; the account
ends holding nothing of either base asset but what is still open.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import helpers_parity
from atra.adapters.journal.database import Journal
from atra.config import AtraConfig
from atra.core.backtest.engine import BacktestConfig, run_backtest
from atra.core.costs import CostModel
from atra.core.features.registry import HISTORY_BARS
from atra.core.signals.events import generate_events
from atra.core.sizing import SizingConfig
from atra.core.types import Market, Timeframe
from atra.live.guards import GuardLimits, RiskGuards
from atra.live.loop import LiveLoop, LoopSettings, StrategyDecider
from atra.live.replay import ReplaySetup, run_replay
from atra.research.pipeline import settings_from_config
from atra.sim.exchange import FakeExchange
from helpers_parity import hourly_candles

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]

SYMBOLS = ("BTCUSDT", "ETHUSDT")
TF = Timeframe.H1
SETTINGS = settings_from_config(AtraConfig(), Market.SPOT)
EXIT = replace(SETTINGS.exit, fee_tp=0.0002)  # the take-profit leg is a LIMIT_MAKER
SIZING = SizingConfig(risk_fraction=0.02, kelly_multiplier=0.5, max_leverage=1.0)
FROM_MS = int(pd.Timestamp("2024-01-01", tz="UTC").value // 1_000_000)
TO_MS = int(pd.Timestamp("2024-01-29", tz="UTC").value // 1_000_000)


_quiet = helpers_parity._quiet


@pytest.fixture(scope="module")
def candles(shared_data_dir: Path) -> dict[str, pd.DataFrame]:
    lo = FROM_MS - (HISTORY_BARS + 10) * TF.ms
    return hourly_candles(shared_data_dir, SYMBOLS, "spot", lo, TO_MS + 100 * TF.ms)


@pytest.mark.parametrize(
    ("tp1_fraction", "move_to_be", "reasons"),
    [(1.0, False, {"TP1", "SL"}), (0.5, True, {"TP2", "BE", "SL"})],
)
def test_spot_orders_replay_equals_the_backtest(
    candles: dict[str, pd.DataFrame], tmp_path: Path, tp1_fraction: float, move_to_be: bool,
    reasons: set[str],
) -> None:  # fmt: skip
    assert SETTINGS.signal.allow_short is False
    assert EXIT.tp1_fraction == 1.0  # the config's default; the split case sets its own
    exit_spec = replace(EXIT, tp1_fraction=tp1_fraction, move_to_be=move_to_be)
    evs = []
    for sym in SYMBOLS:
        ev = generate_events(candles[sym], SETTINGS.signal, symbol=sym, timeframe=TF)
        evs.append(ev[(ev["time_ms"] >= FROM_MS) & (ev["time_ms"] < TO_MS)])
    events = pd.concat(evs, ignore_index=True).sort_values(["time_ms", "symbol"],
                                                           ignore_index=True)  # fmt: skip
    assert (events["side"] == 1).all()
    assert len(events) > 10
    bt = run_backtest(
        candles,
        events,
        BacktestConfig(
            sizing=SIZING,
            costs=CostModel(
                maker_fee_rate=EXIT.fee_tp,
                taker_fee_rate=EXIT.fee_entry,
                slippage_bps=EXIT.slippage_bps,
            ),
            tp_maker=True,
            tp1_fraction=tp1_fraction,
            move_to_be=move_to_be,
            max_positions=2,
            max_per_symbol=1,
            max_gross_leverage=2.0,
        ),
        markets=dict.fromkeys(SYMBOLS, Market.SPOT),
        timeframe=TF,
    )
    engines = []

    def keep_engine(_loop: LiveLoop, fake: FakeExchange) -> None:
        engines.append(fake.spot_orders)

    path = tmp_path / "spot.sqlite"
    report = asyncio.run(
        run_replay(
            LoopSettings(SYMBOLS, TF, start_ms=FROM_MS, stop_ms=TO_MS, bar_close_delay_s=0.0),
            candles,
            path,
            decider=StrategyDecider(SETTINGS.signal, TF, sizing=SIZING, costs=exit_spec),
            exit_spec=exit_spec,
            guards=RiskGuards(
                GuardLimits(
                    max_open_positions=2,
                    max_per_symbol=1,
                    max_gross_leverage=2.0,
                    max_daily_loss=1.0,
                )
            ),
            setup=ReplaySetup(market=Market.SPOT, weight_limit=6000, orders=True),
            on_start=keep_engine,
        )
    )
    assert report.cycles == (TO_MS - FROM_MS) // TF.ms
    assert report.statuses == {200: report.requests}

    async def read() -> tuple[list, list, list]:  # type: ignore[type-arg]
        async with Journal.open(path) as j:
            return await j.signals(), await j.positions(), await j.equity()

    signals, positions, equity = asyncio.run(read())
    by_key = {(s.symbol, s.bar_time_ms): s.take for s in signals}
    key = list(zip(bt.events["symbol"], bt.events["time_ms"].astype(int), strict=True))
    assert sorted(by_key) == sorted(key)
    assert [by_key[k] for k in key] == (bt.events["outcome"] == "taken").tolist()
    trades = bt.trades[bt.trades["exit_time_ms"] < TO_MS].sort_values(
        ["signal_time_ms", "symbol"], ignore_index=True
    )
    closed = sorted((p for p in positions if p.status == "closed"),
                    key=lambda p: (p.signal_time_ms, p.symbol))  # fmt: skip
    assert len(closed) == len(trades) > 5
    got = [(p.symbol, p.signal_time_ms, p.entry_time_ms, p.exit_time_ms, p.reason) for p in closed]
    cols = ["symbol", "signal_time_ms", "entry_time_ms", "exit_time_ms", "reason"]
    assert got == list(trades[cols].itertuples(index=False, name=None))
    assert reasons <= {p.reason for p in closed}  # the legs this case stands for filled
    for col in ("entry_price", "exit_price", "quantity", "pnl"):
        ours = [getattr(p, col) for p in closed]
        np.testing.assert_allclose(ours, trades[col].to_numpy(), rtol=1e-6, err_msg=col)
    curve = bt.equity_frame().set_index("open_time")["equity"]
    marks = pd.Series({e.bar_time_ms: e.equity for e in equity})
    marks = marks[(marks.index >= FROM_MS) & (marks.index < TO_MS)]
    assert len(marks) == (TO_MS - FROM_MS) // TF.ms
    np.testing.assert_allclose(marks.to_numpy(), curve.loc[marks.index].to_numpy(), rtol=1e-6)
    # what is still open at the end is held, the rest was sold: nothing else of either asset
    (desk,) = engines
    entered = [p for p in positions if p.status in ("open", "closed")]
    lists = len(desk.engine.lists)
    if tp1_fraction == 1.0:
        assert lists == len(entered)  # one OCO per position, through the fake
    else:  # A and B per position, B' after each TP1 not followed by TP2 in its bar
        assert 2 * len(entered) < lists <= 3 * len(entered)
    still = {p.symbol: p.quantity for p in positions if p.status == "open"}
    for sym, base in (("BTCUSDT", "BTC"), ("ETHUSDT", "ETH")):
        held = desk.engine.free.get(base, 0.0) + desk.engine.locked.get(base, 0.0)
        assert held == pytest.approx(still.get(sym, 0.0), abs=1e-9)
