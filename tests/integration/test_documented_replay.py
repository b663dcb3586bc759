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

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import helpers_parity
from atra.core.backtest.results import BacktestResult
from atra.core.decision import decide_events
from atra.core.features.registry import HISTORY_BARS
from atra.core.signals.events import generate_events
from atra.core.signals.spec import SignalSpec
from atra.core.sizing import SizingConfig
from atra.core.types import Timeframe
from atra.live.loop import LiveLoop, StrategyDecider
from atra.sim.exchange import FakeExchange
from atra.sim.order_desk import trailing_stop_json
from helpers_parity import (
    PARITY_EXIT,
    assert_equity_matches,
    assert_funding_matches,
    assert_trades_match,
    hourly_candles,
    limit_guards,
    parity_backtest,
    perp_funding,
    read_journal,
    run_parity_replay,
)

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]

SYMBOLS = ("BTCUSDT", "ETHUSDT")
TF = Timeframe.H1
FROM_MS = int(pd.Timestamp("2024-01-01", tz="UTC").value // 1_000_000)
TO_MS = int(pd.Timestamp("2024-01-22", tz="UTC").value // 1_000_000)
LOAD_FROM = FROM_MS - (HISTORY_BARS + 400) * TF.ms
SPEC = SignalSpec()
SIZING = SizingConfig(risk_fraction=0.01, max_leverage=1.0)
EXIT = PARITY_EXIT
MANUAL_CID = "web_manual_trail"


_quiet = helpers_parity._quiet


@pytest.fixture(scope="module")
def market(shared_data_dir: Path) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    hi = TO_MS + 100 * TF.ms
    candles = hourly_candles(shared_data_dir, SYMBOLS, "perp", LOAD_FROM, hi)
    return candles, perp_funding(shared_data_dir, SYMBOLS, hi)


def _backtest(
    candles: dict[str, pd.DataFrame], funding: dict[str, pd.DataFrame]
) -> tuple[pd.DataFrame, BacktestResult]:
    evs = []
    for sym in SYMBOLS:
        ev = generate_events(candles[sym], SPEC, symbol=sym, timeframe=TF)
        evs.append(ev[(ev["time_ms"] >= FROM_MS) & (ev["time_ms"] < TO_MS)])
    events = pd.concat(evs, ignore_index=True)
    order = np.lexsort((events["symbol"].to_numpy(), events["time_ms"].to_numpy()))
    events = events.iloc[order].reset_index(drop=True)
    decided = decide_events(events, pd.DataFrame(index=events.index), None)  # no model: all
    bt = parity_backtest(
        candles,
        decided,
        exit_spec=EXIT,
        sizing=SIZING,
        max_positions=2,
        max_gross=2.0,
        funding=funding,
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
    report = run_parity_replay(
        candles,
        journal_path,
        timeframe=TF,
        start_ms=FROM_MS,
        stop_ms=TO_MS,
        decider=StrategyDecider(SPEC, TF, model=None, sizing=SIZING, use_kelly=False, costs=EXIT),
        exit_spec=EXIT,
        guards=limit_guards(2, 2.0),
        funding=funding,
        orders=True,
        on_start=documented_with_a_manual_order,
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

    journal = read_journal(journal_path)
    signals = journal.signals
    assert any(o.status == "cancelled" for o in journal.orders)  # documented cancels were read

    # 1) every primary signal, decided (and blocked by the limits) as the backtest did
    key = list(zip(decided["symbol"], decided["time_ms"].astype(int), strict=True))
    by_key = {(s.symbol, s.bar_time_ms): s for s in signals}
    assert sorted(by_key) == sorted(key)
    assert [by_key[k].take for k in key] == (bt.events["outcome"] == "taken").tolist()

    # 2) trades: bars, reasons, prices, quantities, funding and P&L (quantities at the
    # venue's 1e-9 step: amounts agree to 1e-6)
    closed, trades = assert_trades_match(journal.positions, bt.trades, TO_MS, 1e-6)
    assert len(closed) >= 5
    assert_funding_matches(closed, journal.fills, trades, 1e-6)

    # 3) the equity curve, bar by bar
    assert_equity_matches(journal.equity, bt, FROM_MS, TO_MS, TF, 1e-6)
