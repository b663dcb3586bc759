"""Retraining while live, the mechanics: the live loop against the fake exchange with a
scripted trainer (:class:`helpers_retrain.PlanTrainer`) that returns registered models, fails,
kills its worker or hangs. It runs in the retrainer's worker process and checks what it is
given: the history of a symbol up to the bar before the retrain, every bar once (the start
history plus the bars the loop fetched).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from atra.adapters.artifacts import save_model
from atra.adapters.journal.database import Journal
from atra.adapters.journal.records import SignalRecord
from atra.core.decision import EVENT_FEATURES, ModelHandle
from atra.core.exits.api import ExitSpec
from atra.core.features.context import ModelInputs
from atra.core.frames import ms_to_iso
from atra.core.meta import MetaModel, MetaParams
from atra.core.retraining import MarketHistory
from atra.core.signals.spec import SignalSpec
from atra.core.types import Timeframe
from atra.live.guards import GuardLimits, RiskGuards
from atra.live.loop import LiveLoop, LoopSettings, StrategyDecider
from atra.live.replay import ReplaySetup, run_replay
from atra.live.retrain import STATE_KEY, Retrainer, RetrainRecord, retrain_log
from atra.sim.exchange import FakeExchange
from helpers_live import synthetic
from helpers_logging import quiet_structlog
from helpers_retrain import PlanTrainer

TF = Timeframe.H1
STEP = TF.ms
DAY = 24 * STEP
T0 = 1_704_067_200_000  # 2024-01-01
SPEC = SignalSpec(ema_fast=3, ema_slow=8, atr_n=5, horizon_bars=6)
WINDOW = 40
LEAD = 100  # bars of history before T0
N_BARS = LEAD + 5 * 24 + 20
SYMBOLS = ("AAAUSDT", "BBBUSDT")
FEATURES = ["ret_1", "rsi_14"]


def _candles() -> dict[str, pd.DataFrame]:
    return {s: synthetic(k + 1, N_BARS, T0 - LEAD * STEP) for k, s in enumerate(SYMBOLS)}


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    with quiet_structlog():
        yield


def _model(seed: int, out: Path) -> ModelHandle:
    rng = np.random.default_rng(seed)
    names = [*FEATURES, *EVENT_FEATURES]
    X = pd.DataFrame({k: rng.normal(size=300) for k in names})
    y = (X["ret_1"] + rng.normal(size=300) > 0).astype(int)
    model = MetaModel(MetaParams(n_estimators=3 + seed, min_child_samples=5, seed=seed)).fit(X, y)
    reg = save_model(model, out, train_start_ms=0, train_end_ms=1, data_hash=f"seed{seed}",
                     inputs=ModelInputs.from_features(FEATURES))  # fmt: skip
    return ModelHandle(reg.model, reg.model_id)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[ModelHandle, str]]:
    out = tmp_path_factory.mktemp("models")
    handles = [_model(seed, out) for seed in range(4)]
    return [(h, str(out / h.model_id)) for h in handles]


def _retrainer(
    plan: tuple[tuple[int, str, str], ...],
    start: ModelHandle,
    *,
    wait: bool = True,
    history_to: int | None = None,
) -> Retrainer:
    """The history given is every candle (up to ``history_to``), as ``atra live --replay``
    gives the range it replays: the retrainer keeps what is before the first bar it runs."""
    frames = _candles()
    if history_to is not None:
        frames = {s: f[f["open_time"] < history_to] for s, f in frames.items()}
    history = MarketHistory(frames)
    decider = StrategyDecider(SPEC, TF, model=start)
    trainer = PlanTrainer(plan, "AAAUSDT", _candles()["AAAUSDT"])
    return Retrainer(
        trainer, days=1, anchor_ms=None, history=history, decider=decider, wait=wait
    )  # fmt: skip


def _replay(
    path: Path,
    retrainer: Retrainer,
    *,
    days: int = 5,
    max_cycles: int | None = None,
    speed: float = float("inf"),
    on_start: object = None,
) -> bool:
    settings = LoopSettings(
        SYMBOLS,
        TF,
        window_bars=WINDOW,
        bar_close_delay_s=0.0,
        start_ms=T0,
        stop_ms=T0 + days * DAY,
        max_cycles=max_cycles,
    )
    report = asyncio.run(
        run_replay(
            settings,
            _candles(),
            path,
            decider=retrainer.decider,
            exit_spec=ExitSpec(),
            guards=RiskGuards(GuardLimits(max_open_positions=4)),
            setup=ReplaySetup(weight_limit=None, speed=speed),
            retrainer=retrainer,
            on_start=on_start,  # type: ignore[arg-type]
        )
    )
    return report.stopped


def _journal(path: Path) -> tuple[list[SignalRecord], list[RetrainRecord], str | None]:
    async def read() -> tuple[list[SignalRecord], list[RetrainRecord], str | None]:
        async with Journal.open(path) as j:
            return await j.signals(), await retrain_log(j), await j.meta_value(STATE_KEY)

    return asyncio.run(read())


def _ids_by_bar(signals: list[SignalRecord], bounds: list[int]) -> list[set[str]]:
    return [
        {s.model_id for s in signals if lo <= s.bar_time_ms < hi}
        for lo, hi in itertools.pairwise(bounds)
    ]


def _plan(models: list[tuple[ModelHandle, str]]) -> tuple[tuple[int, str, str], ...]:
    return (
        (T0 + DAY, "ok", models[1][1]),
        (T0 + 2 * DAY, "raise", "too few events"),
        (T0 + 3 * DAY, "exit", ""),  # the worker dies: a fresh one retrains the next window
        (T0 + 4 * DAY, "ok", models[2][1]),
    )


@pytest.fixture(scope="module")
def full_run(
    models: list[tuple[ModelHandle, str]], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Five days, retrained daily: a model, a failure, a dead worker, a model."""
    path = tmp_path_factory.mktemp("full") / "j.sqlite"
    _replay(path, _retrainer(_plan(models), models[0][0]))
    return path


def test_swaps_at_the_scheduled_bars_and_survives_failures(
    full_run: Path, models: list[tuple[ModelHandle, str]]
) -> None:
    (m0, _), (m1, _), (m2, d2) = models[:3]
    signals, log, state = _journal(full_run)
    assert [(r.window_ms, r.status) for r in log] == [
        (T0 + DAY, "registered"),
        (T0 + 2 * DAY, "failed"),
        (T0 + 3 * DAY, "failed"),
        (T0 + 4 * DAY, "registered"),
    ]
    assert log[0].swapped_at_ms == T0 + DAY
    assert log[0].n_train == LEAD + 24  # every bar before the window, start history included
    assert log[1].error == "ModelError: too few events"
    assert log[2].error is not None
    assert "BrokenProcessPool" in log[2].error
    assert log[3].swapped_at_ms == T0 + 4 * DAY
    assert log[3].n_train == LEAD + 4 * 24
    # the journal says which model made each decision: the old one kept deciding on failures
    bounds = [T0, T0 + DAY, T0 + 4 * DAY, T0 + 5 * DAY]
    assert _ids_by_bar(signals, bounds) == [{m0.model_id}, {m1.model_id}, {m2.model_id}]
    assert state is not None
    assert m2.model_id in state
    assert d2 in state


def test_a_restart_resumes_with_the_retrained_model(
    tmp_path: Path, full_run: Path, models: list[tuple[ModelHandle, str]]
) -> None:
    parts = tmp_path / "parts.sqlite"
    for max_cycles in (30, 30, None):  # killed after the first swap and after a failed
        # retrain; a new process resumes each time, with the journal's model and history
        _replay(parts, _retrainer(_plan(models), models[0][0]), max_cycles=max_cycles)
    a, b = _journal(full_run), _journal(parts)
    assert [(r.window_ms, r.status, r.model_id, r.swapped_at_ms) for r in b[1]] == [
        (r.window_ms, r.status, r.model_id, r.swapped_at_ms) for r in a[1]
    ]
    assert [(s.bar_time_ms, s.symbol, s.model_id) for s in b[0]] == [
        (s.bar_time_ms, s.symbol, s.model_id) for s in a[0]
    ]

    async def snapshots() -> tuple[object, object]:
        async with Journal.open(full_run) as x, Journal.open(parts) as y:
            return await x.snapshot(), await y.snapshot()

    snap_once, snap_parts = asyncio.run(snapshots())
    assert snap_once == snap_parts


def test_a_hole_in_the_history_fails_the_retrain(
    tmp_path: Path, models: list[tuple[ModelHandle, str]]
) -> None:
    """A start history that ends before the loop's first candle window (a stale store): the
    bars between were never seen, the retrain fails naming them, the old model decides."""
    (m0, _), (_, d1) = models[:2]
    hole_to = T0 - WINDOW * STEP  # the window starts WINDOW - 1 bars before T0
    retrainer = _retrainer(((T0 + DAY, "ok", d1),), m0, history_to=hole_to)
    path = tmp_path / "j.sqlite"
    _replay(path, retrainer, days=2)
    signals, log, _ = _journal(path)
    assert [(r.window_ms, r.status) for r in log] == [(T0 + DAY, "failed")]
    assert log[0].error is not None
    last, first = ms_to_iso(hole_to - STEP), ms_to_iso(T0 - (WINDOW - 1) * STEP)
    assert f"hole: AAAUSDT candles: nothing between {last} and {first}" in log[0].error
    assert {s.model_id for s in signals} == {m0.model_id}


@pytest.mark.parametrize("how", ["stop", "cancel"])
def test_stopping_terminates_a_running_retrain(
    tmp_path: Path, models: list[tuple[ModelHandle, str]], how: str
) -> None:
    m0 = models[0][0]
    pid_file = tmp_path / "worker.pid"
    retrainer = _retrainer(((T0 + DAY, "hang", str(pid_file)),), m0)
    path = tmp_path / "j.sqlite"

    async def stop_when_training(loop: LiveLoop, task: asyncio.Task[object] | None) -> None:
        while not pid_file.exists():
            await asyncio.sleep(0.05)
        if task is None:
            loop.stop()
        else:
            task.cancel()

    def on_start(loop: LiveLoop, _: FakeExchange) -> None:
        current = asyncio.current_task() if how == "cancel" else None
        asyncio.get_running_loop().create_task(stop_when_training(loop, current))

    started = time.monotonic()
    if how == "stop":
        assert _replay(path, retrainer, on_start=on_start)
    else:
        with pytest.raises(asyncio.CancelledError):
            _replay(path, retrainer, on_start=on_start)
    assert time.monotonic() - started < 60  # not the worker's 120 s
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # terminated and reaped
    signals, log, _ = _journal(path)
    assert log == []  # nothing resolved: the bar at the retrain was not decided
    assert all(s.bar_time_ms < T0 + DAY for s in signals)


def test_live_swaps_at_the_first_bar_after_the_worker_is_done(
    tmp_path: Path, models: list[tuple[ModelHandle, str]]
) -> None:
    """``wait=False`` (live): the loop keeps deciding with the old model while the worker
    fits (0.3 s, bars every 0.05 s here) and swaps at the first bar after it is done.
    The first retrain also starts the worker process: if that takes longer than a day of
    bars, the next window's retrain supersedes it (journalled)."""
    (m0, _), (m1, d1), (m2, d2) = models[:3]
    plan = ((T0 + DAY, "slow", d1), (T0 + 2 * DAY, "slow", d2))
    retrainer = _retrainer(plan, m0, wait=False)
    path = tmp_path / "j.sqlite"
    _replay(path, retrainer, days=3, speed=72_000.0)
    signals, log, _ = _journal(path)
    last = log[-1]
    assert (last.window_ms, last.status) == (T0 + 2 * DAY, "registered")
    assert last.swapped_at_ms is not None
    assert T0 + 2 * DAY < last.swapped_at_ms < T0 + 3 * DAY  # the loop did not wait
    before = m0.model_id
    if log[0].window_ms == T0 + DAY and log[0].status == "registered":
        first = log[0].swapped_at_ms
        assert first is not None
        assert T0 + DAY < first < T0 + 2 * DAY
        assert _ids_by_bar(signals, [T0, first]) == [{m0.model_id}]
        before = m1.model_id
    else:
        assert log[0].error is not None
        assert log[0].error.startswith("superseded")
    bounds = [T0 + 2 * DAY, last.swapped_at_ms, T0 + 3 * DAY]
    assert _ids_by_bar(signals, bounds) == [{before}, {m2.model_id}]
