"""How a replay ends and which journal it may write: the summary, ``--compare`` against the
backtest, and journals of other runs refused.

Two synthetic perpetuals served by the fake exchange; the candle window (450 bars) is long
enough that EMA and ATR seeds have decayed, so the replay equals the backtest on the full
history to the last bits.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from atra.adapters.journal.database import Journal
from atra.adapters.journal.records import CycleRecord, JournalBatch
from atra.cli import main
from atra.cli.replay_output import compare_replay
from atra.core.exits.api import ExitSpec
from atra.core.signals.spec import SignalSpec
from atra.core.types import Market, Timeframe
from atra.errors import ConfigError, DataError
from atra.live.compare import BacktestPlan
from atra.live.guards import GuardLimits, RiskGuards
from atra.live.loop import LoopSettings, StrategyDecider
from atra.live.replay import ReplayReport, ReplaySetup, run_replay
from atra.live.replay_run import RUN_KEY, stored_run
from atra.live.summary import read_summary
from atra.obs import reset_logging
from helpers_logging import quiet_structlog

STEP = 3_600_000
TF = Timeframe.H1
T0 = 1_704_067_200_000  # 2024-01-01
SYMBOLS = ("AAAUSDT", "BBBUSDT")
WINDOW = 450
DAYS = 4
STOP = T0 + DAYS * 24 * STEP
SPEC = SignalSpec(ema_fast=5.0, ema_slow=13.0, horizon_bars=12)
EXIT = ExitSpec(fee_entry=0.0005, fee_tp=0.0005, fee_stop=0.0005, slippage_bps=2.0)
LIMITS = GuardLimits(max_open_positions=1, max_per_symbol=1, max_gross_leverage=3.0)
CONFIG = f"""
[live]
market = "perp"
timeframe = "1h"
bar_close_delay_s = 0.0
[strategy]
params = {{ fast = 5.0, slow = 13.0 }}
horizon_bars = 12
[risk]
max_open_positions = {LIMITS.max_open_positions}
[obs]
log_format = "json"
log_level = "INFO"
"""


def _frame(seed: int, n: int = WINDOW + 50 + DAYS * 24 + 40) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    open_ = np.concatenate(([100.0], close[:-1]))
    return pd.DataFrame(
        {
            "open_time": T0 - (WINDOW + 50) * STEP + np.arange(n, dtype=np.int64) * STEP,
            "open": open_,
            "high": np.maximum(open_, close) * 1.003,
            "low": np.minimum(open_, close) * 0.997,
            "close": close,
            "volume": np.full(n, 5.0),
        }
    )


CANDLES = {sym: _frame(k) for k, sym in enumerate(SYMBOLS)}


@pytest.fixture(autouse=True)
def _quiet(request: pytest.FixtureRequest) -> Iterator[None]:
    if "workdir" in request.fixturenames:  # the command configures logging itself
        yield
        return
    with quiet_structlog():
        yield


def _settings(**kw: object) -> LoopSettings:
    base: dict[str, object] = {
        "symbols": SYMBOLS,
        "timeframe": TF,
        "window_bars": WINDOW,
        "bar_close_delay_s": 0.0,
        "start_ms": T0,
        "stop_ms": STOP,
    }
    base.update(kw)
    return LoopSettings(**base)  # type: ignore[arg-type]


def _replay(
    path: Path,
    settings: LoopSettings | None = None,
    exit_spec: ExitSpec = EXIT,
    limits: GuardLimits = LIMITS,
) -> ReplayReport:
    s = settings or _settings()
    return asyncio.run(
        run_replay(
            s,
            {sym: CANDLES[sym] for sym in s.symbols},
            path,
            decider=StrategyDecider(SPEC, TF, costs=exit_spec),
            exit_spec=exit_spec,
            guards=RiskGuards(limits),
            setup=ReplaySetup(market=Market.PERP),
        )
    )


def _plan(exit_spec: ExitSpec = EXIT, limits: GuardLimits = LIMITS) -> BacktestPlan:
    return BacktestPlan.of_replay(
        _settings(),
        decider=StrategyDecider(SPEC, TF, costs=exit_spec),
        exit_spec=exit_spec,
        limits=limits,
        market=Market.PERP,
    )


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished replay (tests copy it before changing anything)."""
    path = tmp_path_factory.mktemp("replay") / "done.sqlite"
    report = _replay(path)
    assert report.cycles == DAYS * 24
    assert not report.resumed
    return path


def _copy(src: Path, dst: Path) -> Path:
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)
    return dst


# ---- the summary ------------------------------------------------------------------------------


def test_summary_is_what_the_journal_holds(replayed: Path) -> None:
    s = asyncio.run(read_summary(replayed))

    async def read() -> tuple[list, list, list, list]:  # type: ignore[type-arg]
        async with Journal.open(replayed) as j:
            return await j.signals(), await j.positions(), await j.fills(), await j.equity()

    signals, positions, fills, equity = asyncio.run(read())
    closed = [p for p in positions if p.status == "closed"]
    assert s.trades_closed == len(closed) > 3
    assert s.signals == len(signals) == s.taken + sum(s.blocked.values())
    assert s.blocked.get("max_positions", 0) > 0  # one position at a time: the limit was hit
    assert s.cycles == DAYS * 24
    assert s.range_text == "2024-01-01..2024-01-05"
    assert s.ending_equity == equity[-1].equity
    assert s.net_pnl == pytest.approx(equity[-1].equity - 10_000.0, abs=1e-9)
    assert s.fees > 0.0
    assert s.fees == pytest.approx(sum(f.fee for f in fills))
    won = sum(
        1 for p in closed if sum(f.pnl for f in fills if f.client_order_id == p.position_id) > 0
    )
    assert s.trades_won == won
    peak, worst = 10_000.0, 0.0
    for e in equity:
        peak = max(peak, e.equity)
        worst = max(worst, (peak - e.equity) / peak)
    assert worst > 0.0
    assert s.max_drawdown == pytest.approx(worst)


# ---- --compare --------------------------------------------------------------------------------


def test_compare_finds_a_normal_replay_identical(replayed: Path) -> None:
    result = asyncio.run(compare_replay(replayed, _plan(), CANDLES, None))
    assert result.differences == ()
    assert result.identical
    assert result.decisions > 10
    assert result.trades > 3
    assert result.equity_marks == DAYS * 24
    assert result.replay_equity == pytest.approx(result.backtest_equity, rel=1e-9)


def test_compare_reports_a_tampered_journal(replayed: Path, tmp_path: Path) -> None:
    path = _copy(replayed, tmp_path / "tampered.sqlite")
    with sqlite3.connect(path) as db:
        pid, t = db.execute(
            "SELECT position_id, signal_time_ms FROM positions WHERE status = 'closed'"
            " ORDER BY signal_time_ms LIMIT 1 OFFSET 1"
        ).fetchone()
        db.execute("UPDATE positions SET exit_price = exit_price * 1.001 WHERE position_id = ?",
                   (pid,))  # fmt: skip
    result = asyncio.run(compare_replay(path, _plan(), CANDLES, None))
    assert not result.identical
    assert result.differences[0].startswith("trade ")
    assert "exit_price" in result.differences[0]
    assert pd.Timestamp(t, unit="ms").strftime("%Y-%m-%dT%H:%M") in result.differences[0]


def test_compare_reports_a_flipped_decision(replayed: Path, tmp_path: Path) -> None:
    path = _copy(replayed, tmp_path / "flipped.sqlite")
    with sqlite3.connect(path) as db:
        db.execute(
            "UPDATE signals SET take = 0, blocked_by = 'meta_model' WHERE id ="
            " (SELECT min(id) FROM signals WHERE take = 1)"
        )
    result = asyncio.run(compare_replay(path, _plan(), CANDLES, None))
    assert "replay blocked by meta_model, backtest take" in result.differences[0]


@pytest.mark.parametrize(
    ("exit_spec", "limits"),
    [
        (replace(EXIT, slippage_bps=5.0), LIMITS),
        (EXIT, replace(LIMITS, max_open_positions=2)),
    ],
    ids=["slippage", "max_positions"],
)
def test_compare_reports_a_backtest_with_other_settings(
    replayed: Path, exit_spec: ExitSpec, limits: GuardLimits
) -> None:
    result = asyncio.run(compare_replay(replayed, _plan(exit_spec, limits), CANDLES, None))
    assert not result.identical
    assert result.replay_equity != pytest.approx(result.backtest_equity, rel=1e-9)


# ---- the journal belongs to one run ----------------------------------------------------------


def test_the_same_run_resumes_its_journal(replayed: Path, tmp_path: Path) -> None:
    path = _copy(replayed, tmp_path / "again.sqlite")
    report = _replay(path)
    assert report.resumed
    assert report.cycles == 0
    run = asyncio.run(_stored(path))
    assert run == report.run
    assert run.run_id.startswith("paper-2024-01-01..2024-01-05-")


async def _stored(path: Path):  # type: ignore[no-untyped-def]
    async with Journal.open(path) as j:
        return await stored_run(j)


def test_an_interrupted_run_resumes_where_it_stopped(tmp_path: Path) -> None:
    path = tmp_path / "parts.sqlite"
    first = _replay(path, _settings(max_cycles=30))
    assert first.cycles == 30
    rest = _replay(path)
    assert rest.resumed
    assert rest.cycles == DAYS * 24 - 30
    assert rest.run == first.run


@pytest.mark.parametrize(
    ("settings", "exit_spec", "says"),
    [
        (_settings(stop_ms=STOP - 24 * STEP), EXIT, "range 2024-01-01..2024-01-04"),
        (_settings(symbols=("AAAUSDT",)), EXIT, "symbols AAAUSDT"),
        (_settings(), replace(EXIT, fee_entry=0.0004, fee_stop=0.0004), "other settings"),
        (_settings(run_id="other"), EXIT, "run id other-2024-01-01..2024-01-05-"),
    ],
    ids=["range", "symbols", "config", "name"],
)
def test_a_journal_of_another_run_is_refused(
    replayed: Path, tmp_path: Path, settings: LoopSettings, exit_spec: ExitSpec, says: str
) -> None:
    path = _copy(replayed, tmp_path / "other.sqlite")
    before = asyncio.run(_snapshot(path))
    with pytest.raises(ConfigError) as err:
        _replay(path, settings, exit_spec)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"--journal {path} holds run paper-2024-01-01..2024-01-05-")
    assert "(AAAUSDT,BBBUSDT)" in msg
    assert says in msg
    assert asyncio.run(_snapshot(path)) == before  # nothing written


async def _snapshot(path: Path) -> tuple[object, str | None]:
    async with Journal.open(path) as j:
        return await j.snapshot(), await j.meta_value(RUN_KEY)


def test_a_journal_without_replay_identity_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "live.sqlite"

    async def live_run() -> None:  # what a live run (or an older replay) leaves
        async with Journal.open(path) as j:
            await j.meta("run_id", "paper")
            await j.write(JournalBatch(cycle=CycleRecord(T0, "paper", 0, 1, 2, {}, 1.0, "ok")))

    asyncio.run(live_run())
    with pytest.raises(ConfigError, match=r"^--journal .*live\.sqlite holds 1 cycles of a run "
                       r"with no replay identity"):  # fmt: skip
        _replay(path)


def test_an_empty_journal_of_an_older_schema_is_claimed(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"

    async def create() -> None:
        async with Journal.open(path, target_version=1):
            pass

    asyncio.run(create())
    report = _replay(path, _settings(max_cycles=5))
    assert report.cycles == 5
    assert asyncio.run(_stored(path)) == report.run


# ---- the command -----------------------------------------------------------------------------


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    for name in list(__import__("os").environ):
        if name.upper().startswith("ATRA__"):
            monkeypatch.delenv(name)
    (tmp_path / "flat").mkdir()
    for sym in SYMBOLS:
        CANDLES[sym].to_parquet(tmp_path / "flat" / f"{sym}_perp_1h.parquet")
    (tmp_path / "atra.toml").write_text(CONFIG)
    level = logging.getLogger().level
    yield tmp_path
    reset_logging()
    logging.getLogger().setLevel(level)


ARGS = ["live", "--config", "atra.toml", "--replay", "--from", "2024-01-01", "--to",
        "2024-01-05", "--data", "flat", "--symbols", ",".join(SYMBOLS), "--journal", "j.sqlite",
        "--window-bars", str(WINDOW), "--no-metrics"]  # fmt: skip


def _events(out: str, name: str) -> list[dict[str, object]]:
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return [r for r in rows if r.get("event") == name]


def test_the_command_prints_the_summary_and_compares(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*ARGS, "--compare"]) == 0
    out = capsys.readouterr().out
    summary = asyncio.run(read_summary(workdir / "j.sqlite"))
    assert f"{DAYS * 24} cycles journalled in j.sqlite" in out
    assert f"Replay {summary.run_id}" in out
    (row,) = [line for line in out.splitlines() if "trades closed" in line]
    assert row.split()[-2] == str(summary.trades_closed)
    (done,) = _events(out, "replay_completed")
    assert done["run_id"] == summary.run_id
    assert done["trades_closed"] == summary.trades_closed > 3
    assert done["ending_equity"] == summary.ending_equity
    assert done["blocked"] == dict(summary.blocked)
    (compared,) = _events(out, "replay_compared")
    assert compared["identical"] is True
    assert "identical" in out

    # tampered: the resumed run has nothing left to do, the comparison fails with exit 4
    with sqlite3.connect(workdir / "j.sqlite") as db:
        db.execute("UPDATE equity SET equity = equity + 1 WHERE bar_time_ms = ?",
                   (STOP - 10 * STEP,))  # fmt: skip
    assert main([*ARGS, "--compare"]) == DataError.exit_code
    captured = capsys.readouterr()
    assert "0 cycles journalled" in captured.out
    assert "DIFFERENT" in captured.out
    err = captured.err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("DataError: --compare: the replay in j.sqlite and the backtest of")
    assert "first: equity at 2024-01-04T14:00" in err[0]


def test_the_command_refuses_another_runs_journal(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*ARGS, "--max-cycles", "3"]) == 0
    capsys.readouterr()
    other = [a if a != "2024-01-05" else "2024-01-04" for a in ARGS]
    assert main(other) == ConfigError.exit_code
    err = capsys.readouterr().err.strip()
    assert err.startswith("ConfigError: --journal j.sqlite holds run paper-2024-01-01..2024-01-05-")
    assert "use a new file" in err


def test_compare_needs_a_replay(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["live", "--config", "atra.toml", "--compare", "--no-metrics"]) == 3
    assert "--compare needs --replay" in capsys.readouterr().err


def test_compare_with_a_model_and_kelly_sizing(tmp_path: Path) -> None:
    """p(take) of every decision compared too; the backtest sizes by Kelly from it."""
    from atra.core.decision import EVENT_FEATURES, ModelHandle, bar_features, decision_features
    from atra.core.features.registry import FeatureContext
    from atra.core.meta import MetaModel, MetaParams
    from atra.core.signals.events import generate_events
    from atra.core.sizing import SizingConfig

    names = ["ret_24", "rv_24", "rsi_14"]
    xs, ys = [], []
    for sym in SYMBOLS:  # trained on the bars before the replay only
        c = CANDLES[sym]
        ev = generate_events(c, SPEC, symbol=sym, timeframe=TF)
        ev = ev[(ev["time_ms"] >= T0 - 400 * STEP) & (ev["time_ms"] < T0 - 24 * STEP)]
        ev = ev.reset_index(drop=True)
        feats, _ = bar_features(c, FeatureContext(timeframe=TF), names)
        xs.append(decision_features(ev, feats, names))
        close = c["close"].to_numpy()
        ys.extend(
            int(s * (close[t + 12] - close[t]) > 0)
            for t, s in zip(ev["t"], ev["side"], strict=True)
        )
    X = pd.concat(xs, ignore_index=True)[[*names, *EVENT_FEATURES]]
    meta = MetaModel(MetaParams(n_estimators=20, min_child_samples=5)).fit(X, pd.Series(ys))
    meta.threshold = float(np.median(meta.predict_proba(X)))
    model = ModelHandle(meta, "tiny-model")
    sizing = SizingConfig(risk_fraction=0.02, kelly_multiplier=0.5, max_leverage=1.0)
    decider = StrategyDecider(SPEC, TF, model=model, sizing=sizing, use_kelly=True, costs=EXIT)
    path = tmp_path / "model.sqlite"
    report = asyncio.run(
        run_replay(
            _settings(),
            CANDLES,
            path,
            decider=decider,
            exit_spec=EXIT,
            guards=RiskGuards(LIMITS),
        )
    )
    assert report.run.model_id == "tiny-model"
    plan = BacktestPlan.of_replay(
        _settings(), decider=decider, exit_spec=EXIT, limits=LIMITS, market=Market.PERP
    )
    result = asyncio.run(compare_replay(path, plan, CANDLES, None))
    assert result.differences == ()
    summary = asyncio.run(read_summary(path))
    assert summary.blocked.get("meta_model", 0) > 0
    assert summary.trades_closed > 0
    # a model with another threshold decides otherwise: the comparison names the decision
    other = MetaModel(meta.params).fit(X, pd.Series(ys))
    other.threshold = 0.01
    plan2 = replace(plan, decider=replace(decider, model=ModelHandle(other, "tiny-model")))
    result2 = asyncio.run(compare_replay(path, plan2, CANDLES, None))
    assert result2.differences[0].startswith("decision ")
