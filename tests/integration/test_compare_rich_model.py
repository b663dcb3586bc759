"""``atra live --replay --model M --compare`` with a model that reads funding, the spot
counterpart (basis) and BTC: the comparison's backtest decides on the same inputs as the
replay, through the research path of ``atra backtest --model``, and finds the two identical.

A small model is trained the way ``atra train --market perp`` trains (the research dataset of
the universe, :func:`train_model`) on every built-in funding, basis, cross-asset and candle
feature of ETHUSDT and XRPUSDT (their perpetual candles and funding, their spot candles, BTCUSDT
as context), January to May 2023. Two weeks of July 2023 are then replayed by the command with
``--compare``: exit 0, ``identical``. Tampering with one journalled p(take) makes the same
command exit 4 naming that decision; a comparison given the replay's frames without BTC is
refused rather than reported as a difference.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from atra.cli import main
from atra.cli.models import load_decision_model
from atra.cli.replay_output import (
    backtest_of_replay,
    decide_replayed,
    replay_universe,
)
from atra.config import AtraConfig
from atra.core.backtest.results import BacktestResult
from atra.core.decision import ModelHandle
from atra.core.features.context import ModelInputs
from atra.core.features.registry import HISTORY_BARS, feature_registry
from atra.core.signals.spec import SignalSpec
from atra.core.types import Market, Timeframe
from atra.errors import ConfigError, DataError
from atra.live.compare import BacktestPlan, backtest_replay
from atra.live.guards import GuardLimits
from atra.live.loop import LoopSettings, StrategyDecider
from atra.live.replay_run import day_text
from atra.obs import reset_logging
from atra.research.pipeline import SymbolData, Universe, build_dataset, train_model
from atra.research.pipeline import settings_from_config as research_settings
from helpers_logging import quiet_structlog

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]

SYMBOLS = ("ETHUSDT", "XRPUSDT")
BTC = "BTCUSDT"
TF = Timeframe.H1
DAY_MS = 86_400_000


def _ms(day: str) -> int:
    return int(pd.Timestamp(day, tz="UTC").value // 1_000_000)


TRAIN_FROM, TRAIN_TO = _ms("2023-01-01"), _ms("2023-06-01")
FROM, TO = "2023-07-01", "2023-07-15"
FROM_MS, TO_MS = _ms(FROM), _ms(TO)
SETTINGS = research_settings(AtraConfig(), Market.PERP)
RICH_INPUTS = {"candles", "funding", "counterpart", "btc"}
CONFIG = """
[live]
market = "perp"
timeframe = "1h"
[obs]
log_format = "json"
log_level = "INFO"
"""


@dataclass(frozen=True)
class Frames:
    """The shared files' perpetual and spot candles, funding and BTC over the test's span."""

    perp: dict[str, pd.DataFrame]
    spot: dict[str, pd.DataFrame]
    funding: dict[str, pd.DataFrame]
    btc: pd.DataFrame

    def universe(self, lo_ms: int, hi_ms: int) -> Universe:
        """What ``load_universe`` reads for ``[lo_ms, hi_ms)`` (warm-up bars before it)."""
        read_from = lo_ms - HISTORY_BARS * TF.ms

        def cut(frame: pd.DataFrame, col: str = "open_time", lo: int = read_from) -> pd.DataFrame:
            keep = (frame[col] >= lo) & (frame[col] < hi_ms)
            return frame[keep].reset_index(drop=True)

        data = {
            s: SymbolData(
                s,
                cut(self.perp[s]),
                cut(self.funding[s], "funding_time", read_from - 31 * DAY_MS),
                cut(self.spot[s]),
            )
            for s in SYMBOLS
        }
        return Universe("binance", Market.PERP, TF, lo_ms, hi_ms, data, cut(self.btc))


@pytest.fixture(autouse=True)
def _quiet(request: pytest.FixtureRequest) -> Iterator[None]:
    if "workdir" in request.fixturenames:  # the command configures logging itself
        yield
        return
    with quiet_structlog():
        yield


@pytest.fixture(scope="module")
def frames(shared_data_dir: Path) -> Frames:
    lo = TRAIN_FROM - (HISTORY_BARS + 10) * TF.ms - 40 * DAY_MS
    hi = TO_MS + 100 * TF.ms

    def read(name: str, col: str = "open_time") -> pd.DataFrame:
        frame = pd.read_parquet(shared_data_dir / name)
        return frame[(frame[col] >= lo) & (frame[col] < hi)].reset_index(drop=True)

    return Frames(
        {s: read(f"{s}_perp_1h.parquet") for s in SYMBOLS},
        {s: read(f"{s}_spot_1h.parquet") for s in SYMBOLS},
        {s: read(f"{s}_perp_funding.parquet", "funding_time") for s in SYMBOLS},
        read(f"{BTC}_perp_1h.parquet"),
    )


@pytest.fixture(scope="module")
def model(frames: Frames, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Every built-in feature of the candles, funding, basis and BTC families, trained as
    ``atra train`` trains and saved to a models folder; (folder, model id)."""
    names = [n for n, spec in feature_registry().items() if set(spec.inputs) <= RICH_INPUTS]
    dataset = build_dataset(
        frames.universe(TRAIN_FROM, TRAIN_TO), SETTINGS.signal, SETTINGS.exit, names
    )
    assert not dataset.report.absent_inputs
    out = tmp_path_factory.mktemp("models")
    trained = train_model(dataset, out, replace(SETTINGS.meta, n_estimators=40))
    return out, trained.registered.model_id


def _handle(model: tuple[Path, str]) -> tuple[ModelHandle, ModelInputs]:
    return load_decision_model(
        model[1], model[0], market=Market.PERP, timeframe=TF, signal=SETTINGS.signal,
        exit_spec=SETTINGS.exit,
    )  # fmt: skip


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.upper().startswith("ATRA__"):
            monkeypatch.delenv(name)
    (tmp_path / "atra.toml").write_text(CONFIG)
    level = logging.getLogger().level
    yield tmp_path
    reset_logging()
    logging.getLogger().setLevel(level)


def _args(shared_data_dir: Path, model: tuple[Path, str]) -> list[str]:
    return ["live", "--config", "atra.toml", "--replay", "--from", FROM, "--to", TO,
            "--data", str(shared_data_dir), "--symbols", ",".join(SYMBOLS),
            "--journal", "j.sqlite", "--model", model[1], "--models-dir", str(model[0]),
            "--no-metrics", "--compare"]  # fmt: skip


def _event(out: str, name: str) -> dict[str, object]:
    rows: list[dict[str, object]] = [
        json.loads(line) for line in out.splitlines() if line.startswith("{")
    ]
    (row,) = [r for r in rows if r.get("event") == name]
    return row


def test_rich_model_replay_compares_identical_and_a_tampered_journal_exits_4(
    workdir: Path,
    shared_data_dir: Path,
    model: tuple[Path, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, inputs = _handle(model)
    assert (inputs.needs_funding, inputs.needs_counterpart, inputs.needs_btc) == (True,) * 3
    args = _args(shared_data_dir, model)
    assert main(args) == 0
    out = capsys.readouterr().out
    compared = _event(out, "replay_compared")
    assert compared["identical"] is True, compared["first_difference"]
    assert "identical" in out
    with sqlite3.connect(workdir / "j.sqlite") as db:
        rows = db.execute("SELECT p_take, take, blocked_by FROM signals").fetchall()
    # a real test: p(take) on every signal, the model blocks some and passes others
    assert compared["decisions"] == len(rows) >= 10
    assert all(p is not None and 0.0 < p < 1.0 for p, _, _ in rows)
    assert 0 < sum(by == "meta_model" for _, _, by in rows) < len(rows)
    assert any(take for _, take, _ in rows)

    # tampered: the resumed run has nothing left to do, the comparison fails with exit 4
    with sqlite3.connect(workdir / "j.sqlite") as db:
        sym, t = db.execute(
            "SELECT symbol, bar_time_ms FROM signals ORDER BY bar_time_ms, symbol LIMIT 1"
        ).fetchone()
        db.execute("UPDATE signals SET p_take = p_take * 0.999 WHERE symbol = ? AND "
                   "bar_time_ms = ?", (sym, t))  # fmt: skip
    assert main(args) == DataError.exit_code
    captured = capsys.readouterr()
    assert "0 cycles journalled" in captured.out
    assert "DIFFERENT" in captured.out
    (err,) = captured.err.strip().splitlines()
    assert err.startswith(
        f"DataError: --compare: the replay in j.sqlite and the backtest of {FROM}..{TO} differ; "
        f"first: decision {sym} {day_text(t)}: p(take) replay "
    )


def _plan(handle: ModelHandle) -> BacktestPlan:
    settings = LoopSettings(SYMBOLS, TF, start_ms=FROM_MS, stop_ms=TO_MS, funding=True)
    return BacktestPlan.of_replay(
        settings,
        decider=StrategyDecider(SETTINGS.signal, TF, model=handle, costs=SETTINGS.exit),
        exit_spec=SETTINGS.exit,
        limits=GuardLimits(),
        market=Market.PERP,
    )


def _served(
    frames: Frames,
) -> tuple[dict[str, pd.DataFrame], dict[tuple[Market, str], pd.DataFrame]]:
    """The candles and side candles a replay of the range is served (the window before it)."""
    lo = FROM_MS - HISTORY_BARS * TF.ms

    def cut(frame: pd.DataFrame) -> pd.DataFrame:
        return frame[frame["open_time"] >= lo].reset_index(drop=True)

    side = {(Market.SPOT, s): cut(frames.spot[s]) for s in SYMBOLS}
    side[(Market.PERP, BTC)] = cut(frames.btc)
    return {s: cut(frames.perp[s]) for s in SYMBOLS}, side


def test_the_comparison_decides_like_research_and_refuses_frames_without_an_input(
    frames: Frames, model: tuple[Path, str]
) -> None:
    handle, _ = _handle(model)
    plan = _plan(handle)
    candles, side = _served(frames)
    decided = decide_replayed(plan, replay_universe(plan, candles, frames.funding, side))
    # the research path (atra signals / backtest --model) on the stored universe of the range
    research = build_dataset(
        frames.universe(FROM_MS, TO_MS), SETTINGS.signal, SETTINGS.exit,
        [n for n in handle.model.feature_names if n in feature_registry()],
    )  # fmt: skip
    expected = research.events[research.events["time_ms"] < TO_MS]
    assert len(expected) >= 10
    assert list(zip(decided["symbol"], decided["time_ms"], strict=True)) == list(
        zip(expected["symbol"], expected["time_ms"], strict=True)
    )
    p_research = handle.model.predict_proba(
        research.X.loc[expected.index, list(handle.model.feature_names)]
    )
    np.testing.assert_allclose(decided["p_take"].to_numpy(), p_research, rtol=0, atol=1e-12)

    # the backtest takes the range's events in (time, symbol) order only
    with pytest.raises(ConfigError, match=r"^--compare: the decided events are not in \(time, "):
        backtest_replay(plan, decided.iloc[::-1], candles, frames.funding)
    late = decided.copy()
    late.loc[len(late) - 1, "time_ms"] = TO_MS
    with pytest.raises(ConfigError, match=rf"^--compare: decided event row {len(late) - 1} .* lies "
                       rf"outside the replay's range {FROM} \.\. {TO}$"):  # fmt: skip
        backtest_replay(plan, late, candles, frames.funding)

    no_btc = {k: v for k, v in side.items() if k != (Market.PERP, BTC)}
    with pytest.raises(ConfigError) as err:
        decide_replayed(plan, replay_universe(plan, candles, frames.funding, no_btc))
    assert str(err.value) == (
        f"--compare: the backtest has no btc for {SYMBOLS[0]}, which the model reads (the "
        "replay's frames were not all given to the comparison)"
    )


def test_a_range_without_a_signal_compares_a_flat_backtest() -> None:
    n = HISTORY_BARS + 100
    times = FROM_MS - HISTORY_BARS * TF.ms + np.arange(n, dtype=np.int64) * TF.ms
    flat = pd.DataFrame({"open_time": times, "open": 1.0, "high": 1.001, "low": 0.999,
                         "close": 1.0, "volume": 10.0})  # fmt: skip
    settings = LoopSettings(("AAAUSDT",), TF, start_ms=FROM_MS, stop_ms=FROM_MS + 48 * TF.ms)
    spec = SignalSpec()
    plan = BacktestPlan.of_replay(
        settings, decider=StrategyDecider(spec, TF), exit_spec=SETTINGS.exit,
        limits=GuardLimits(), market=Market.PERP,
    )  # fmt: skip
    bt: BacktestResult = backtest_of_replay(plan, {"AAAUSDT": flat}, None)
    assert bt.events.empty
    assert bt.trades.empty
    assert np.all(bt.equity == plan.initial_equity)
