"""Replay == backtest with everything on: a meta model, Kelly sizing under the 2% cap, position
limits, maker take-profits, slippage, a TP1 partial with break-even, and funding.

Two months of five real USDT-M perpetuals and their funding history (../shared/data) are
served by the fake exchange and replayed through ``atra live``'s loop with the default
1,500-bar window. The backtest runs on the full history with the same model (decisions from
:func:`atra.core.decision.decide_events`). The journal must hold the backtest's decisions
(after the limits), its trades with their quantities, fees, funding and P&L, and its equity
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
from atra.cli.live import exit_spec
from atra.config import AtraConfig
from atra.core.backtest.engine import BacktestConfig, run_backtest
from atra.core.costs import CostModel
from atra.core.decision import (
    EVENT_FEATURES,
    ModelHandle,
    bar_features,
    decide_events,
    decision_features,
)
from atra.core.exits.api import ExitSpec
from atra.core.features.registry import HISTORY_BARS, FeatureContext
from atra.core.meta import MetaModel, MetaParams
from atra.core.risk import DAILY_LOSS, GUARDS, LEVERAGE, kelly_multiplier_of, sizing_of
from atra.core.signals.events import generate_events
from atra.core.signals.spec import SignalSpec
from atra.core.sizing import SizingConfig
from atra.core.types import Market, Timeframe
from atra.live.guards import GuardLimits, RiskGuards
from atra.live.loop import LoopSettings, StrategyDecider
from atra.live.replay import ReplaySetup, run_replay
from atra.research.evaluation.settings import backtest_config_from
from helpers_parity import hourly_candles, perp_funding

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]

SYMBOLS = ("ADAUSDT", "BTCUSDT", "ETHUSDT", "LTCUSDT", "XRPUSDT")
TF = Timeframe.H1
FROM_MS = int(pd.Timestamp("2024-01-01", tz="UTC").value // 1_000_000)
TO_MS = int(pd.Timestamp("2024-03-01", tz="UTC").value // 1_000_000)
TRAIN_FROM_MS = int(pd.Timestamp("2023-01-01", tz="UTC").value // 1_000_000)
BAR_FEATURES = ["ret_24", "rv_24", "rsi_14", "vol_ratio_24", "er_24", "ema_dist_50"]
SPEC = SignalSpec()
SIZING = SizingConfig(risk_fraction=0.02, kelly_multiplier=0.5, max_leverage=1.0)
TAKER, MAKER, SLIP_BPS = 0.0005, 0.0002, 2.0
EXIT = ExitSpec(
    tp1_fraction=0.5,
    move_to_be=True,
    fee_entry=TAKER,
    fee_tp=MAKER,
    fee_stop=TAKER,
    slippage_bps=SLIP_BPS,
)
MAX_POSITIONS, MAX_GROSS = 3, 2.0


_quiet = helpers_parity._quiet


@pytest.fixture(scope="module")
def market(shared_data_dir: Path) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    hi = TO_MS + 100 * TF.ms
    candles = hourly_candles(shared_data_dir, SYMBOLS, "perp", TRAIN_FROM_MS, hi)
    return candles, perp_funding(shared_data_dir, SYMBOLS, hi)


def _features(candles: pd.DataFrame) -> pd.DataFrame:
    feats, _ = bar_features(candles, FeatureContext(timeframe=TF), BAR_FEATURES)
    return feats


def _events_and_X(
    candles: dict[str, pd.DataFrame], lo_ms: int, hi_ms: int, spec: SignalSpec = SPEC
) -> tuple[pd.DataFrame, pd.DataFrame]:
    evs, xs = [], []
    for sym in SYMBOLS:
        ev = generate_events(candles[sym], spec, symbol=sym, timeframe=TF)
        ev = ev[(ev["time_ms"] >= lo_ms) & (ev["time_ms"] < hi_ms)].reset_index(drop=True)
        evs.append(ev)
        xs.append(decision_features(ev, _features(candles[sym]), BAR_FEATURES))
    events = pd.concat(evs, ignore_index=True)
    X = pd.concat(xs, ignore_index=True)
    order = np.lexsort((events["symbol"].to_numpy(), events["time_ms"].to_numpy()))
    return events.iloc[order].reset_index(drop=True), X.iloc[order].reset_index(drop=True)


@pytest.fixture(scope="module")
def model(market: tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]) -> ModelHandle:
    """A small meta model trained on 2023 only (labels: price 24 bars later beyond entry)."""
    candles, _ = market
    events, X = _events_and_X(candles, TRAIN_FROM_MS + HISTORY_BARS * TF.ms, FROM_MS - 48 * TF.ms)
    later = []
    for sym, t, side in zip(events["symbol"], events["t"], events["side"], strict=True):
        c = candles[sym]["close"].to_numpy()
        later.append(int(side * (c[min(t + 24, len(c) - 1)] - c[t]) > 0))
    inputs = X[[*BAR_FEATURES, *EVENT_FEATURES]]
    meta = MetaModel(MetaParams(n_estimators=40, min_child_samples=20)).fit(
        inputs, pd.Series(later)
    )
    # a threshold that blocks about half of the training signals
    meta.threshold = float(np.median(meta.predict_proba(inputs)))
    return ModelHandle(meta, "parity-model")


@pytest.mark.parametrize("orders", [False, True], ids=["paper", "orders"])
def test_replay_equals_backtest_with_model_sizing_and_funding(
    market: tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]],
    model: ModelHandle,
    tmp_path: Path,
    orders: bool,
) -> None:
    """``orders``: the real order path (signed REST, exchange-side stops and take-profits on
    the fake's matching engine) instead of the paper broker. Quantities are rounded to the
    venue's step (1e-9) there, so amounts agree to 1e-6 instead of 1e-9."""
    rtol = 1e-6 if orders else 1e-9
    candles, funding = market
    # the backtest: full history, the model's vectorised decisions
    events, X = _events_and_X(candles, FROM_MS, TO_MS)
    decided = decide_events(events, X[list(model.model.feature_names)], model)
    assert 0 < int(decided["take"].sum()) < len(decided)  # the model blocks some, takes some
    bt = run_backtest(
        candles,
        decided,
        BacktestConfig(
            sizing=SIZING,
            costs=CostModel(maker_fee_rate=MAKER, taker_fee_rate=TAKER, slippage_bps=SLIP_BPS),
            tp_maker=True,
            tp1_fraction=EXIT.tp1_fraction,
            move_to_be=EXIT.move_to_be,
            max_positions=MAX_POSITIONS,
            max_per_symbol=1,
            max_gross_leverage=MAX_GROSS,
            probability_column="p_take",
        ),
        funding=funding,
        markets=dict.fromkeys(SYMBOLS, Market.PERP),
        timeframe=TF,
    )

    # the replay: the live loop against the fake exchange, candles and funding over HTTP
    journal_path = tmp_path / "parity.sqlite"
    settings = LoopSettings(
        SYMBOLS, TF, start_ms=FROM_MS, stop_ms=TO_MS, bar_close_delay_s=0.0, funding=True
    )
    assert settings.window_bars == HISTORY_BARS
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
                SPEC, TF, model=model, sizing=SIZING, use_kelly=True, costs=EXIT
            ),
            exit_spec=EXIT,
            guards=RiskGuards(
                GuardLimits(
                    max_open_positions=MAX_POSITIONS,
                    max_per_symbol=1,
                    max_gross_leverage=MAX_GROSS,
                    max_daily_loss=1.0,
                )
            ),
            setup=ReplaySetup(weight_limit=2400, orders=orders),
            funding=funding,
        )
    )
    assert report.cycles == (TO_MS - FROM_MS) // TF.ms
    assert report.statuses == {200: report.requests}
    assert report.max_used_weight <= 2400

    async def read() -> tuple[list, list, list, list]:  # type: ignore[type-arg]
        async with Journal.open(journal_path) as j:
            return await j.signals(), await j.positions(), await j.fills(), await j.equity()

    signals, positions, fills, equity = asyncio.run(read())

    # 1) every primary signal, with the model's probability, decided as the backtest did
    key = list(zip(decided["symbol"], decided["time_ms"].astype(int), strict=True))
    by_key = {(s.symbol, s.bar_time_ms): s for s in signals}
    assert sorted(by_key) == sorted(key)
    np.testing.assert_allclose(
        [by_key[k].p_take for k in key], decided["p_take"].to_numpy(), rtol=1e-9
    )
    bt_taken = (bt.events["outcome"] == "taken").to_numpy()
    np.testing.assert_array_equal([by_key[k].take for k in key], bt_taken)
    blocked = {s.blocked_by for s in signals if not s.take}
    assert "meta_model" in blocked
    assert blocked & {"max_positions", "max_per_symbol", "leverage"}  # limits were hit too

    # 2) trades: bars, prices, reasons, quantities, funding and P&L
    trades = bt.trades[bt.trades["exit_time_ms"] < TO_MS].sort_values(
        ["signal_time_ms", "symbol"], ignore_index=True
    )
    closed = sorted(
        (p for p in positions if p.status == "closed"), key=lambda p: (p.signal_time_ms, p.symbol)
    )
    assert len(closed) == len(trades) > 20
    got = pd.DataFrame(
        {
            "symbol": [p.symbol for p in closed],
            "signal_time_ms": [p.signal_time_ms for p in closed],
            "entry_time_ms": [p.entry_time_ms for p in closed],
            "exit_time_ms": [p.exit_time_ms for p in closed],
            "reason": [p.reason for p in closed],
        }
    )
    cols = list(got.columns)
    assert list(got.itertuples(index=False)) == list(trades[cols].itertuples(index=False))
    for col, ours in (
        ("entry_price", [p.entry_price for p in closed]),
        ("exit_price", [p.exit_price for p in closed]),
        ("quantity", [p.quantity for p in closed]),
        ("pnl", [p.pnl for p in closed]),
    ):
        np.testing.assert_allclose(ours, trades[col].to_numpy(), rtol=rtol, err_msg=col)
    paid = {p.position_id: 0.0 for p in closed}
    for f in fills:
        if f.reason == "FUNDING" and f.client_order_id in paid:
            paid[f.client_order_id] -= f.pnl
    funded = np.array([paid[p.position_id] for p in closed])
    np.testing.assert_allclose(funded, trades["funding"].to_numpy(), rtol=rtol, atol=1e-12)
    assert np.count_nonzero(funded) > 10  # funding really was charged

    # 3) the equity curve, bar by bar
    curve = bt.equity_frame().set_index("open_time")["equity"]
    ours_eq = pd.Series({e.bar_time_ms: e.equity for e in equity})
    ours_eq = ours_eq[(ours_eq.index >= FROM_MS) & (ours_eq.index < TO_MS)]
    assert len(ours_eq) == (TO_MS - FROM_MS) // TF.ms
    np.testing.assert_allclose(ours_eq.to_numpy(), curve.loc[ours_eq.index].to_numpy(), rtol=rtol)


def test_replay_equals_backtest_with_the_default_config(
    market: tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]],
    model: ModelHandle,
    tmp_path: Path,
) -> None:
    """``AtraConfig()``'s ``[risk]`` and ``[costs]`` as they are, every guard on:
    ``atra backtest`` / ``walkforward``'s settings (:func:`backtest_config_from`) against the
    live loop built as ``atra live`` builds it (half Kelly from p(take) under the 2% cap, one
    position's notional under the 3x gross cap, five positions, one per symbol, the 5% daily
    loss). The signal rule is this module's ``SPEC`` (the one the model was trained on).
    January 2024: the daily-loss guard and the leverage cap both block entries; every decision,
    with who blocked it, is the same."""
    candles, funding = market
    cfg = AtraConfig()
    lo_ms, hi_ms = FROM_MS, int(pd.Timestamp("2024-02-01", tz="UTC").value // 1_000_000)
    spec = SPEC
    events, X = _events_and_X(candles, lo_ms, hi_ms, spec)
    decided = decide_events(events, X[list(model.model.feature_names)], model)
    bt = run_backtest(
        candles,
        decided,
        backtest_config_from(cfg),
        funding=funding,
        markets=dict.fromkeys(SYMBOLS, Market.PERP),
        timeframe=TF,
    )
    blocks = bt.blocks_by_guard()
    assert blocks[DAILY_LOSS] >= 1  # both guards really bind
    assert blocks[LEVERAGE] >= 1

    journal_path = tmp_path / "defaults.sqlite"
    settings = LoopSettings(
        SYMBOLS, TF, start_ms=lo_ms, stop_ms=hi_ms, bar_close_delay_s=0.0, funding=True
    )
    replay_candles = {
        s: c[c["open_time"] >= lo_ms - (HISTORY_BARS + 10) * TF.ms].reset_index(drop=True)
        for s, c in candles.items()
    }
    decider = StrategyDecider(
        spec,
        TF,
        model=model,
        sizing=sizing_of(cfg.risk),
        use_kelly=kelly_multiplier_of(cfg.risk.kelly) is not None,
        costs=exit_spec(cfg),
    )
    asyncio.run(
        run_replay(
            settings,
            replay_candles,
            journal_path,
            decider=decider,
            exit_spec=exit_spec(cfg),
            guards=RiskGuards(GuardLimits.from_config(cfg.risk, base_dir=tmp_path)),
            setup=ReplaySetup(weight_limit=2400),
            funding=funding,
        )
    )

    async def read() -> tuple[list, list, list]:  # type: ignore[type-arg]
        async with Journal.open(journal_path) as j:
            return await j.signals(), await j.equity(), await j.guard_events()

    signals, equity, guard_events = asyncio.run(read())
    key = list(zip(decided["symbol"], decided["time_ms"].astype(int), strict=True))
    by_key = {(s.symbol, s.bar_time_ms): s for s in signals}
    assert sorted(by_key) == sorted(key)
    assert [by_key[k].take for k in key] == (bt.events["outcome"] == "taken").tolist()
    assert [by_key[k].blocked_by for k in key] == bt.events["blocked_by"].tolist()
    np.testing.assert_allclose(
        [by_key[k].quantity for k in key if by_key[k].take],
        bt.trades.sort_values(["signal_time_ms", "symbol"])["quantity"].to_numpy(),
        rtol=1e-9,
    )
    journalled = {g: sum(1 for e in guard_events if e.guard == g) for g in GUARDS}
    assert journalled == blocks
    curve = bt.equity_frame().set_index("open_time")["equity"]
    ours = pd.Series({e.bar_time_ms: e.equity for e in equity})
    ours = ours[(ours.index >= lo_ms) & (ours.index < hi_ms)]
    assert len(ours) == (hi_ms - lo_ms) // TF.ms
    np.testing.assert_allclose(ours.to_numpy(), curve.loc[ours.index].to_numpy(), rtol=1e-9)
