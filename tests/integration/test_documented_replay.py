"""Replay through the order path against Binance's documented answer shapes == the backtest.

Three weeks of two real USDT-M perpetuals (../shared/data) are replayed through ``atra live``'s
loop with the real order path (signed REST, exchange-side stops and take-profits on the fake's
matching engine, funding) while the fake exchange answers in the shapes Binance documents
(tests/fixtures/binance/orders: fixed-decimal strings, cancel answers without ``avgPrice``) and
the account holds a TRAILING_STOP_MARKET order placed by hand. The manual order is listed with
the account's open orders, never touched, and the journal equals the backtest on the same bars:
every decision, every trade (bars, reasons, prices, quantities, funding, P&L) and the equity
curve bar by bar.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import helpers_parity
from atra.adapters.journal.database import Journal
from atra.core.backtest.engine import BacktestConfig, run_backtest
from atra.core.costs import CostModel
from atra.core.decision import decide_events
from atra.core.exits.api import ExitSpec
from atra.core.features.registry import HISTORY_BARS
from atra.core.signals.events import generate_events
from atra.core.signals.spec import SignalSpec
from atra.core.sizing import SizingConfig
from atra.core.types import Market, Timeframe
from atra.live.guards import GuardLimits, RiskGuards
from atra.live.loop import LiveLoop, LoopSettings, StrategyDecider
from atra.live.replay import ReplaySetup, run_replay
from atra.sim.exchange import FakeExchange
from atra.sim.order_desk import trailing_stop_json
from helpers_parity import hourly_candles, perp_funding

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]

SYMBOLS = ("BTCUSDT", "ETHUSDT")
TF = Timeframe.H1
FROM_MS = int(pd.Timestamp("2024-01-01", tz="UTC").value // 1_000_000)
TO_MS = int(pd.Timestamp("2024-01-22", tz="UTC").value // 1_000_000)
LOAD_FROM = FROM_MS - (HISTORY_BARS + 400) * TF.ms
SPEC = SignalSpec()
SIZING = SizingConfig(risk_fraction=0.01, max_leverage=1.0)
TAKER, MAKER, SLIP_BPS = 0.0005, 0.0002, 2.0
EXIT = ExitSpec(
    tp1_fraction=0.5,
    move_to_be=True,
    fee_entry=TAKER,
    fee_tp=MAKER,
    fee_stop=TAKER,
    slippage_bps=SLIP_BPS,
)
MANUAL_CID = "web_manual_trail"


_quiet = helpers_parity._quiet


@pytest.fixture(scope="module")
def market(shared_data_dir: Path) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    hi = TO_MS + 100 * TF.ms
    candles = hourly_candles(shared_data_dir, SYMBOLS, "perp", LOAD_FROM, hi)
    return candles, perp_funding(shared_data_dir, SYMBOLS, hi)


def _backtest(
    candles: dict[str, pd.DataFrame], funding: dict[str, pd.DataFrame]
) -> tuple[pd.DataFrame, object]:
    evs = []
    for sym in SYMBOLS:
        ev = generate_events(candles[sym], SPEC, symbol=sym, timeframe=TF)
        evs.append(ev[(ev["time_ms"] >= FROM_MS) & (ev["time_ms"] < TO_MS)])
    events = pd.concat(evs, ignore_index=True)
    order = np.lexsort((events["symbol"].to_numpy(), events["time_ms"].to_numpy()))
    events = events.iloc[order].reset_index(drop=True)
    decided = decide_events(events, pd.DataFrame(index=events.index), None)  # no model: all
    bt = run_backtest(
        candles,
        decided,
        BacktestConfig(
            sizing=SIZING,
            costs=CostModel(maker_fee_rate=MAKER, taker_fee_rate=TAKER, slippage_bps=SLIP_BPS),
            tp_maker=True,
            tp1_fraction=EXIT.tp1_fraction,
            move_to_be=EXIT.move_to_be,
            max_positions=2,
            max_per_symbol=1,
            max_gross_leverage=2.0,
        ),
        funding=funding,
        markets=dict.fromkeys(SYMBOLS, Market.PERP),
        timeframe=TF,
    )
    return decided, bt


def test_documented_shapes_and_a_manual_trailing_stop_replay_equals_the_backtest(
    market: tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]], tmp_path: Path
) -> None:
    candles, funding = market
    decided, bt = _backtest(candles, funding)
    fakes: list[FakeExchange] = []

    def documented_with_a_manual_order(_loop: LiveLoop, fx: FakeExchange) -> None:
        fx.orders.documented = True
        fx.orders.hold_manual_order(
            trailing_stop_json("BTCUSDT", MANUAL_CID, 9_000_000_001, quantity="0.010")
        )
        fakes.append(fx)

    journal_path = tmp_path / "documented.sqlite"
    settings = LoopSettings(
        SYMBOLS, TF, start_ms=FROM_MS, stop_ms=TO_MS, bar_close_delay_s=0.0, funding=True
    )
    replay_candles = {
        s: c[c["open_time"] >= FROM_MS - (HISTORY_BARS + 10) * TF.ms].reset_index(drop=True)
        for s, c in candles.items()
    }
    report = asyncio.run(
        run_replay(
            settings,
            replay_candles,
            journal_path,
            decider=StrategyDecider(
                SPEC, TF, model=None, sizing=SIZING, use_kelly=False, costs=EXIT
            ),
            exit_spec=EXIT,
            guards=RiskGuards(
                GuardLimits(
                    max_open_positions=2,
                    max_per_symbol=1,
                    max_gross_leverage=2.0,
                    max_daily_loss=1.0,
                )
            ),
            setup=ReplaySetup(weight_limit=2400, orders=True),
            funding=funding,
            on_start=documented_with_a_manual_order,
        )
    )
    assert report.cycles == (TO_MS - FROM_MS) // TF.ms
    assert report.statuses == {200: report.requests}

    # the manual order: listed with the account's orders, never queried, cancelled or matched
    (fx,) = fakes
    assert fx.orders.documented
    listed = [r for r in fx.requests if r.path == "/fapi/v1/openOrders"]
    assert listed
    assert [r for r in fx.requests if MANUAL_CID in r.params.values()] == []
    assert all(f.client_order_id != MANUAL_CID for f in fx.engine.fills)

    async def read() -> tuple[list, list, list, list, list]:  # type: ignore[type-arg]
        async with Journal.open(journal_path) as j:
            return (await j.signals(), await j.positions(), await j.fills(), await j.equity(),
                    await j.orders())  # fmt: skip

    signals, positions, fills, equity, orders = asyncio.run(read())
    assert any(o.status == "cancelled" for o in orders)  # documented cancel answers were read

    # 1) every primary signal, decided (and blocked by the limits) as the backtest did
    key = list(zip(decided["symbol"], decided["time_ms"].astype(int), strict=True))
    by_key = {(s.symbol, s.bar_time_ms): s for s in signals}
    assert sorted(by_key) == sorted(key)
    assert [by_key[k].take for k in key] == (bt.events["outcome"] == "taken").tolist()

    # 2) trades: bars, reasons, prices, quantities, funding and P&L (quantities at the
    # venue's 1e-9 step: amounts agree to 1e-6)
    trades = bt.trades[bt.trades["exit_time_ms"] < TO_MS].sort_values(
        ["signal_time_ms", "symbol"], ignore_index=True
    )
    closed = sorted(
        (p for p in positions if p.status == "closed"), key=lambda p: (p.signal_time_ms, p.symbol)
    )
    assert len(closed) == len(trades) >= 5
    got = [(p.symbol, p.signal_time_ms, p.entry_time_ms, p.exit_time_ms, p.reason) for p in closed]
    cols = ["symbol", "signal_time_ms", "entry_time_ms", "exit_time_ms", "reason"]
    assert got == list(trades[cols].itertuples(index=False, name=None))
    for col, ours in (
        ("entry_price", [p.entry_price for p in closed]),
        ("exit_price", [p.exit_price for p in closed]),
        ("quantity", [p.quantity for p in closed]),
        ("pnl", [p.pnl for p in closed]),
    ):
        np.testing.assert_allclose(ours, trades[col].to_numpy(), rtol=1e-6, err_msg=col)
    paid = {p.position_id: 0.0 for p in closed}
    for f in fills:
        if f.reason == "FUNDING" and f.client_order_id in paid:
            paid[f.client_order_id] -= f.pnl
    funded = np.array([paid[p.position_id] for p in closed])
    np.testing.assert_allclose(funded, trades["funding"].to_numpy(), rtol=1e-6, atol=1e-12)

    # 3) the equity curve, bar by bar
    curve = bt.equity_frame().set_index("open_time")["equity"]
    ours_eq = pd.Series({e.bar_time_ms: e.equity for e in equity})
    ours_eq = ours_eq[(ours_eq.index >= FROM_MS) & (ours_eq.index < TO_MS)]
    assert len(ours_eq) == (TO_MS - FROM_MS) // TF.ms
    np.testing.assert_allclose(ours_eq.to_numpy(), curve.loc[ours_eq.index].to_numpy(), rtol=1e-6)
