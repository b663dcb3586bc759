"""Same trades, same file: the closed-trades CSV of a replay's journal (``atra journal trades
--csv``) and of the backtest of the same range (the writer ``atra backtest --trades-csv`` uses)
are identical byte for byte.

A month of three real USDT-M perpetuals with their funding (../shared/data) is served by the
fake exchange and replayed through the live loop with a meta model, half-Kelly sizing, a TP1
partial with break-even and maker take-profits. The backtest runs on the same candles up to
the replay's end (the plan ``atra live --replay --compare`` builds,
:func:`atra.cli.replay_output.backtest_of_replay`): trades still open at the end are open in the
journal and ``END`` in the backtest, and neither file lists them.
"""

from __future__ import annotations

import asyncio
import filecmp
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import helpers_parity
from atra.adapters.trades_csv import write_trades_csv
from atra.cli import main
from atra.cli.replay_output import backtest_of_replay
from atra.core.closed_trades import closed_trades_of_backtest
from atra.core.decision import EVENT_FEATURES, ModelHandle, bar_features, decision_features
from atra.core.exits.api import ExitSpec
from atra.core.features.registry import HISTORY_BARS, FeatureContext
from atra.core.meta import MetaModel, MetaParams
from atra.core.signals.events import generate_events
from atra.core.signals.spec import SignalSpec
from atra.core.sizing import SizingConfig
from atra.core.types import Market, Timeframe
from atra.live.compare import BacktestPlan
from atra.live.guards import GuardLimits, RiskGuards
from atra.live.loop import LoopSettings, StrategyDecider
from atra.live.replay import ReplaySetup, run_replay
from helpers_parity import hourly_candles, perp_funding

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]

SYMBOLS = ("BTCUSDT", "ETHUSDT", "XRPUSDT")
TF = Timeframe.H1
FROM_MS = int(pd.Timestamp("2024-01-01", tz="UTC").value // 1_000_000)
TO_MS = int(pd.Timestamp("2024-02-01", tz="UTC").value // 1_000_000)
TRAIN_FROM_MS = int(pd.Timestamp("2023-07-01", tz="UTC").value // 1_000_000)
BAR_FEATURES = ["ret_24", "rv_24", "rsi_14", "er_24"]
SPEC = SignalSpec()
SIZING = SizingConfig(risk_fraction=0.02, kelly_multiplier=0.5, max_leverage=1.0)
EXIT = ExitSpec(
    tp1_fraction=0.5, move_to_be=True, fee_entry=0.0005, fee_tp=0.0002, fee_stop=0.0005,
    slippage_bps=2.0,
)  # fmt: skip
LIMITS = GuardLimits(
    max_open_positions=3, max_per_symbol=1, max_gross_leverage=2.0, max_daily_loss=1.0
)


_quiet = helpers_parity._quiet


@pytest.fixture(scope="module")
def market(shared_data_dir: Path) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    lo = TRAIN_FROM_MS - 300 * TF.ms
    candles = hourly_candles(shared_data_dir, SYMBOLS, "perp", lo, TO_MS)
    return candles, perp_funding(shared_data_dir, SYMBOLS)


def _model(candles: dict[str, pd.DataFrame]) -> ModelHandle:
    """A small meta model fitted on 2023 H2 signals (label: price 24 bars later is better)."""
    xs, ys = [], []
    for sym in SYMBOLS:
        c = candles[sym]
        ev = generate_events(c, SPEC, symbol=sym, timeframe=TF)
        ev = ev[(ev["time_ms"] >= TRAIN_FROM_MS) & (ev["time_ms"] < FROM_MS - 48 * TF.ms)]
        ev = ev.reset_index(drop=True)
        feats, _ = bar_features(c, FeatureContext(timeframe=TF), BAR_FEATURES)
        xs.append(decision_features(ev, feats, BAR_FEATURES))
        close = c["close"].to_numpy()
        ys += [
            int(s * (close[t + 24] - close[t]) > 0)
            for t, s in zip(ev["t"], ev["side"], strict=True)
        ]
    X = pd.concat(xs, ignore_index=True)[[*BAR_FEATURES, *EVENT_FEATURES]]
    meta = MetaModel(MetaParams(n_estimators=30, min_child_samples=10)).fit(X, pd.Series(ys))
    meta.threshold = float(np.quantile(meta.predict_proba(X), 0.3))  # blocks some, takes most
    return ModelHandle(meta, "csv-parity-model")


def test_journal_and_backtest_write_the_same_trades_csv(
    market: tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]], tmp_path: Path
) -> None:
    candles, funding = market
    decider = StrategyDecider(
        SPEC, TF, model=_model(candles), sizing=SIZING, use_kelly=True, costs=EXIT
    )
    settings = LoopSettings(
        SYMBOLS, TF, start_ms=FROM_MS, stop_ms=TO_MS, bar_close_delay_s=0.0, funding=True
    )
    replay_candles = {
        s: c[c["open_time"] >= FROM_MS - (HISTORY_BARS + 10) * TF.ms].reset_index(drop=True)
        for s, c in candles.items()
    }
    journal = tmp_path / "replay.sqlite"
    asyncio.run(
        run_replay(
            settings, replay_candles, journal, decider=decider, exit_spec=EXIT,
            guards=RiskGuards(LIMITS), setup=ReplaySetup(weight_limit=2400), funding=funding,
        )
    )  # fmt: skip

    # the journal's file, through the command
    from_journal = tmp_path / "journal_trades.csv"
    assert main(["journal", "trades", str(journal), "--csv", str(from_journal)]) == 0

    # the backtest's file: the same range and settings, the data ending where the replay ended
    plan = BacktestPlan.of_replay(
        settings, decider=decider, exit_spec=EXIT, limits=LIMITS, market=Market.PERP
    )
    bt = backtest_of_replay(plan, candles, funding)
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
