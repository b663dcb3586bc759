"""Replay == backtest with everything on: a meta model, Kelly sizing under the 2% cap, position
limits, maker take-profits, slippage, a TP1 partial with break-even, and funding.

January 2024 of five real USDT-M perpetuals and their funding history (../shared/data) are
served by the fake exchange and replayed through ``atra live``'s loop with the default
1,500-bar window. The backtest runs on the full history with the same model (decisions from
:func:`atra.core.decision.decide_events`). The journal must hold the backtest's decisions
(after the limits), its trades with their quantities, fees, funding and P&L, and its equity
curve bar by bar; the paper replay's closed-trades CSV is the backtest's, byte for byte. Each
replay runs once for the module.
"""

from __future__ import annotations

import filecmp
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import helpers_parity
from atra.adapters.trades_csv import write_trades_csv
from atra.cli import main
from atra.cli.live import exit_spec
from atra.cli.replay_output import backtest_of_replay
from atra.config import AtraConfig
from atra.core.backtest.engine import run_backtest
from atra.core.closed_trades import closed_trades_of_backtest
from atra.core.decision import (
    EVENT_FEATURES,
    ModelHandle,
    bar_features,
    decide_events,
    decision_features,
)
from atra.core.features.registry import HISTORY_BARS, FeatureContext
from atra.core.meta import MetaModel, MetaParams
from atra.core.risk import DAILY_LOSS, GUARDS, LEVERAGE, kelly_multiplier_of, sizing_of
from atra.core.signals.events import generate_events
from atra.core.signals.spec import SignalSpec
from atra.core.sizing import SizingConfig
from atra.core.types import Market, Timeframe
from atra.live.compare import BacktestPlan
from atra.live.guards import GuardLimits, RiskGuards
from atra.live.loop import LoopSettings, StrategyDecider
from atra.live.replay import ReplayReport
from atra.research.evaluation.settings import backtest_config_from
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

SYMBOLS = ("ADAUSDT", "BTCUSDT", "ETHUSDT", "LTCUSDT", "XRPUSDT")
TF = Timeframe.H1
FROM_MS = int(pd.Timestamp("2024-01-01", tz="UTC").value // 1_000_000)
# a month: 76 signals, 28 taken, blocked by the model (35), the leverage cap (8) and
# max_per_symbol (5); 26 closed trades, 19 of them charged funding
TO_MS = int(pd.Timestamp("2024-02-01", tz="UTC").value // 1_000_000)
TRAIN_FROM_MS = int(pd.Timestamp("2023-01-01", tz="UTC").value // 1_000_000)
BAR_FEATURES = ["ret_24", "rv_24", "rsi_14", "vol_ratio_24", "er_24", "ema_dist_50"]
SPEC = SignalSpec()
SIZING = SizingConfig(risk_fraction=0.02, kelly_multiplier=0.5, max_leverage=1.0)
EXIT = PARITY_EXIT
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


@dataclass(frozen=True)
class Replayed:
    """One replay of ``[FROM_MS, TO_MS)`` with the model: its journal, report and decider."""

    journal_path: Path
    report: ReplayReport
    decider: StrategyDecider


@pytest.fixture(scope="module")
def replays(
    market: tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]],
    model: ModelHandle,
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[[bool], Replayed]:
    """The live loop against the fake exchange, candles and funding over HTTP (the default
    1,500-bar window: the backtest's warm-up), on the paper broker (False) or the order path
    (True); each run once for the tests of this module that assert on it."""
    candles, funding = market
    done: dict[bool, Replayed] = {}

    def replay(orders: bool) -> Replayed:
        if orders not in done:
            path = tmp_path_factory.mktemp("parity") / "parity.sqlite"
            decider = StrategyDecider(
                SPEC, TF, model=model, sizing=SIZING, use_kelly=True, costs=EXIT
            )
            report = run_parity_replay(
                candles,
                path,
                timeframe=TF,
                start_ms=FROM_MS,
                stop_ms=TO_MS,
                decider=decider,
                exit_spec=EXIT,
                guards=limit_guards(MAX_POSITIONS, MAX_GROSS),
                funding=funding,
                orders=orders,
            )
            done[orders] = Replayed(path, report, decider)
        return done[orders]

    return replay


@pytest.mark.parametrize("orders", [False, True], ids=["paper", "orders"])
def test_replay_equals_backtest_with_model_sizing_and_funding(
    market: tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]],
    model: ModelHandle,
    replays: Callable[[bool], Replayed],
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
    bt = parity_backtest(
        candles,
        decided,
        exit_spec=EXIT,
        sizing=SIZING,
        max_positions=MAX_POSITIONS,
        max_gross=MAX_GROSS,
        funding=funding,
        timeframe=TF,
        probability_column="p_take",
    )

    # the replay (the default window is the backtest's warm-up)
    assert LoopSettings(SYMBOLS, TF).window_bars == HISTORY_BARS
    replayed = replays(orders)
    journal_path, report = replayed.journal_path, replayed.report
    assert report.cycles == (TO_MS - FROM_MS) // TF.ms
    assert report.statuses == {200: report.requests}
    assert report.max_used_weight <= 2400
    journal = read_journal(journal_path)
    signals = journal.signals

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
    closed, trades = assert_trades_match(journal.positions, bt.trades, TO_MS, rtol)
    assert len(closed) > 20
    funded = assert_funding_matches(closed, journal.fills, trades, rtol)
    assert np.count_nonzero(funded) > 10  # funding really was charged

    # 3) the equity curve, bar by bar
    assert_equity_matches(journal.equity, bt, FROM_MS, TO_MS, TF, rtol)


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
    The first two weeks of January 2024 (42 signals, 16 taken): the daily-loss guard (1), the
    leverage cap (1) and max_per_symbol (5) block entries; every decision, with who blocked
    it, is the same."""
    candles, funding = market
    cfg = AtraConfig()
    lo_ms, hi_ms = FROM_MS, int(pd.Timestamp("2024-01-15", tz="UTC").value // 1_000_000)
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
    decider = StrategyDecider(
        spec,
        TF,
        model=model,
        sizing=sizing_of(cfg.risk),
        use_kelly=kelly_multiplier_of(cfg.risk.kelly) is not None,
        costs=exit_spec(cfg),
    )
    run_parity_replay(
        candles,
        journal_path,
        timeframe=TF,
        start_ms=lo_ms,
        stop_ms=hi_ms,
        decider=decider,
        exit_spec=exit_spec(cfg),
        guards=RiskGuards(GuardLimits.from_config(cfg.risk, base_dir=tmp_path)),
        funding=funding,
    )
    journal = read_journal(journal_path)
    signals = journal.signals
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
    journalled = {g: sum(1 for e in journal.guard_events if e.guard == g) for g in GUARDS}
    assert journalled == blocks
    assert_equity_matches(journal.equity, bt, lo_ms, hi_ms, TF, 1e-9)


def test_journal_and_backtest_write_the_same_trades_csv(
    market: tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]],
    replays: Callable[[bool], Replayed],
    tmp_path: Path,
) -> None:
    """Same trades, same file: the closed-trades CSV of the paper replay's journal (``atra
    journal trades --csv``) and of the backtest of the same range (the writer ``atra backtest
    --trades-csv`` uses) are identical byte for byte. The backtest runs on the same candles up
    to the replay's end (the plan ``atra live --replay --compare`` builds,
    :func:`atra.cli.replay_output.backtest_of_replay`): trades still open at the end are open
    in the journal and ``END`` in the backtest, and neither file lists them."""
    candles, funding = market
    paper = replays(False)

    # the journal's file, through the command
    from_journal = tmp_path / "journal_trades.csv"
    assert main(["journal", "trades", str(paper.journal_path), "--csv", str(from_journal)]) == 0

    # the backtest's file: the same range and settings, the data ending where the replay ended
    settings = LoopSettings(
        SYMBOLS, TF, start_ms=FROM_MS, stop_ms=TO_MS, bar_close_delay_s=0.0, funding=True
    )
    plan = BacktestPlan.of_replay(
        settings,
        decider=paper.decider,
        exit_spec=EXIT,
        limits=limit_guards(MAX_POSITIONS, MAX_GROSS).limits,
        market=Market.PERP,
    )
    served = {s: c[c["open_time"] < TO_MS].reset_index(drop=True) for s, c in candles.items()}
    bt = backtest_of_replay(plan, served, funding)
    trades, still_open = closed_trades_of_backtest(bt.trades)
    from_backtest = tmp_path / "backtest_trades.csv"
    write_trades_csv(from_backtest, trades)

    # a real test: many trades, TP1 partials (two exit legs) among them, funding paid
    closed = bt.trades[bt.trades["reason"] != "END"]
    assert len(closed) >= 20
    assert closed["leg2_bar"].notna().sum() >= 3
    assert (closed["funding"].abs() > 0).sum() >= 5
    assert 0 < int(bt.events["take"].sum()) < len(bt.events)  # the model blocks some
    assert len(from_journal.read_text().splitlines()) == len(trades) + 1
    assert still_open == int((bt.trades["reason"] == "END").sum())

    assert from_journal.read_bytes() == from_backtest.read_bytes()
    assert filecmp.cmp(from_journal, from_backtest, shallow=False)
    if shutil.which("cmp") is not None:
        assert subprocess.run(["cmp", str(from_journal), str(from_backtest)]).returncode == 0
