"""The live loop against the fake exchange on 127.0.0.1: cycles, failures, deadlines, stops,
backfill, restarts, guards, metrics."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from atra.adapters.exchange.client import BinanceClient
from atra.adapters.journal.database import Journal
from atra.adapters.ratelimit import RateLimiter
from atra.core.decision import EVENT_FEATURES, ModelHandle
from atra.core.exits.api import ExitSpec
from atra.core.meta import MetaModel, MetaParams
from atra.core.signals.spec import SignalSpec
from atra.core.types import Market, Timeframe
from atra.errors import ConfigError
from atra.live.guards import GuardLimits, RiskGuards
from atra.live.loop import (
    LiveLoop,
    LoopSettings,
    SimClock,
    StrategyDecider,
    next_bar_close_ms,
    run_until_signal,
)
from atra.live.replay import ReplaySetup, run_replay
from atra.obs import Metrics
from atra.sim.exchange import FakeExchange, Faults
from helpers_live import CountingDecider, synthetic
from helpers_logging import quiet_structlog

TF = Timeframe.H1
STEP = TF.ms
T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
SPEC = SignalSpec(ema_fast=3, ema_slow=8, atr_n=5, horizon_bars=6)
WINDOW = 40


CANDLES = {"AAAUSDT": synthetic(1), "BBBUSDT": synthetic(2), "CCCUSDT": synthetic(3)}


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    with quiet_structlog():
        yield


def _settings(**kw: object) -> LoopSettings:
    base: dict[str, object] = {
        "symbols": tuple(CANDLES),
        "timeframe": TF,
        "window_bars": WINDOW,
        "bar_close_delay_s": 0.0,
        "symbol_timeout_s": 2.0,
        "cycle_deadline_s": 3.0,
    }
    base.update(kw)
    return LoopSettings(**base)  # type: ignore[arg-type]


@asynccontextmanager
async def harness(
    path: Path,
    settings: LoopSettings,
    *,
    faults: Faults | None = None,
    guards: RiskGuards | None = None,
    clock_s: float = T0 / 1000,
    page_limit: int = 1000,
    candles: dict[str, pd.DataFrame] | None = None,
) -> AsyncIterator[tuple[LiveLoop, FakeExchange, CountingDecider]]:
    frames = {(Market.PERP, s, TF): f for s, f in (candles or CANDLES).items()}
    async with FakeExchange(frames, weight_limit=None, faults=faults) as fake:
        client = BinanceClient(
            Market.PERP,
            base_url=fake.url,
            limiter=RateLimiter(1_000_000),
            timeout_s=1.0,
            max_attempts=2,
            backoff_s=0.01,
            page_limit=page_limit,
        )
        decider = CountingDecider(StrategyDecider(SPEC, TF))
        async with client, Journal.open(path) as journal:
            loop = LiveLoop(
                settings,
                client=client,
                journal=journal,
                decider=decider,
                exit_spec=ExitSpec(),
                guards=guards or RiskGuards(GuardLimits(max_open_positions=10)),
                clock=SimClock(clock_s),
                metrics=Metrics(),
            )
            yield loop, fake, decider


def test_schedule_and_clock() -> None:
    assert next_bar_close_ms(T0, STEP) == T0 + STEP
    assert next_bar_close_ms(T0 + 1, STEP) == T0 + STEP
    assert next_bar_close_ms(T0 - 1, STEP) == T0

    async def go() -> tuple[float, float]:
        clock = SimClock(100.0, speed=1000.0)
        t = time.perf_counter()
        await clock.sleep(2.0)
        await clock.sleep(-1.0)
        return clock.time() + clock.monotonic() * 0, time.perf_counter() - t

    now, real = asyncio.run(go())
    assert now == 102.0
    assert 0.001 <= real < 0.5
    with pytest.raises(ConfigError, match="speed"):
        SimClock(0.0, speed=0.0)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"symbols": ()}, "at least one symbol"),
        ({"symbols": ("A", "A")}, "each once"),
        ({"window_bars": 2}, "window_bars"),
        ({"cycle_deadline_s": 0.0}, "cycle_deadline_s"),
        ({"bar_close_delay_s": -1.0}, "bar_close_delay_s"),
    ],
)
def test_bad_settings(kw: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        _settings(**kw)


async def test_window_must_cover_the_horizon(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must exceed the signal horizon"):
        async with harness(tmp_path / "j.sqlite", _settings(window_bars=8)):
            pass  # pragma: no cover


async def test_cycle_decides_every_symbol_once_and_journals(tmp_path: Path) -> None:
    async with harness(tmp_path / "j.sqlite", _settings()) as (loop, fake, decider):
        res = await loop.run_cycle(T0 + STEP)
        assert res is not None
        assert res.status == "ok"
        assert res.decisions == 3
        assert decider.calls == [(s, T0) for s in sorted(CANDLES)]
        # the window was filled in one request per symbol
        assert len(fake.requests) == 3
        again = await loop.run_cycle(T0 + STEP)  # same bar: nothing new, nothing decided
        assert again is not None
        assert again.decisions == 0
        assert len(decider.calls) == 3
        # three bars later: the missed bars are fetched and decided, oldest first
        res = await loop.run_cycle(T0 + 4 * STEP)
        assert res is not None
        assert res.decisions == 9
        assert [t for s, t in decider.calls[3:] if s == "AAAUSDT"] == [
            T0 + STEP,
            T0 + 2 * STEP,
            T0 + 3 * STEP,
        ]
        assert await loop.journal.symbol_state() == dict.fromkeys(CANDLES, T0 + 3 * STEP)
        assert [e.bar_time_ms for e in await loop.journal.equity()] == [
            T0 + k * STEP for k in range(4)
        ]
        cycles = await loop.journal.cycles()
        assert [c.bar_time_ms for c in cycles] == [T0, T0 + 3 * STEP]
        ok = loop.metrics.cycles_total.labels(status="ok")._value.get()
        assert ok == 3


async def test_failed_symbol_is_skipped_and_reported(tmp_path: Path) -> None:
    settings = _settings(symbols=("AAAUSDT", "NOPEUSDT"))
    async with harness(tmp_path / "j.sqlite", settings) as (loop, _fake, decider):
        res = await loop.run_cycle(T0 + STEP)
        assert res is not None
        assert res.status == "partial"
        assert res.symbols_ok == ("AAAUSDT",)
        assert "Invalid symbol" in res.symbols_failed["NOPEUSDT"]
        assert decider.calls == [("AAAUSDT", T0)]
        (cycle,) = await loop.journal.cycles()
        assert cycle.status == "partial"
        assert "NOPEUSDT" in cycle.symbols_failed
        assert loop.metrics.errors_total.labels(type="ExchangeError")._value.get() == 1


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        ({"symbol_timeout_s": 0.1}, "TimeoutError"),
        ({"cycle_deadline_s": 0.1}, "cycle deadline"),
    ],
)
async def test_slow_symbols_hit_the_deadline(
    tmp_path: Path, kw: dict[str, float], reason: str
) -> None:
    faults = Faults(latency_s=(1.5, 1.5))
    async with harness(tmp_path / "j.sqlite", _settings(**kw), faults=faults) as (loop, _, dec):
        t = time.perf_counter()
        res = await loop.run_cycle(T0 + STEP)
        assert time.perf_counter() - t < 1.2
        assert res is not None
        assert res.status == "failed"
        assert all(reason in why for why in res.symbols_failed.values())
        assert dec.calls == []
        (cycle,) = await loop.journal.cycles()
        assert cycle.symbols_ok == 0


async def test_stop_cancels_requests_in_flight(tmp_path: Path) -> None:
    faults = Faults(latency_s=(3.0, 3.0))
    async with harness(tmp_path / "j.sqlite", _settings(), faults=faults) as (loop, _, dec):
        task = asyncio.create_task(loop.run_cycle(T0 + STEP))
        await asyncio.sleep(0.2)
        t = time.perf_counter()
        loop.stop()
        assert await task is None
        assert time.perf_counter() - t < 1.5
        assert await loop.journal.cycles() == []
        assert dec.calls == []
        assert await loop.run() == 0  # already stopped


async def test_paged_window_fill(tmp_path: Path) -> None:
    async with harness(tmp_path / "j.sqlite", _settings(), page_limit=16) as (loop, fake, _):
        res = await loop.run_cycle(T0 + STEP)
        assert res is not None
        assert res.status == "ok"
        assert len(fake.requests) == 3 * math.ceil(WINDOW / 16)


async def test_kill_switch_blocks_every_entry(tmp_path: Path) -> None:
    kill = tmp_path / "KILL"
    kill.touch()
    guards = RiskGuards(GuardLimits(kill_switch_file=kill))
    settings = _settings(start_ms=T0, stop_ms=T0 + 100 * STEP)
    async with harness(tmp_path / "j.sqlite", settings, guards=guards) as (loop, _, _dec):
        assert await loop.run() == 100
        signals = await loop.journal.signals()
        assert len(signals) > 10
        assert not any(s.take for s in signals)
        assert {s.blocked_by for s in signals} == {"kill_switch"}
        events = await loop.journal.guard_events()
        assert len(events) == len(signals)
        assert await loop.journal.orders() == []
        breaches = loop.metrics.risk_guard_breaches_total.labels(guard="kill_switch")
        assert breaches._value.get() == len(signals)


async def test_live_mode_starts_at_the_latest_closed_bar(tmp_path: Path) -> None:
    now_s = (T0 + 10 * STEP) / 1000 + 123.0
    settings = _settings(max_cycles=2)
    async with harness(tmp_path / "j.sqlite", settings, clock_s=now_s) as (loop, _, dec):
        assert await loop.run() == 2
    assert sorted({t for _, t in dec.calls}) == [T0 + 9 * STEP, T0 + 10 * STEP]


async def test_run_stops_on_a_signal(tmp_path: Path) -> None:
    settings = _settings(start_ms=T0, stop_ms=T0 + 300 * STEP)
    async with harness(tmp_path / "j.sqlite", settings) as (loop, _, _dec):

        async def poke() -> None:
            await asyncio.sleep(0.3)
            os.kill(os.getpid(), signal.SIGUSR1)

        poker = asyncio.create_task(poke())
        cycles = await run_until_signal(loop, [signal.SIGUSR1])
        await poker
        assert 0 < cycles < 300
        assert loop.stop_event.is_set()
        assert len(await loop.journal.cycles()) == cycles


def _replay(path: Path, start: int, stop: int, max_cycles: int | None = None) -> None:
    """Replay ``start`` .. ``stop``; ``max_cycles`` stops it early, as a crash would (the
    journal belongs to the run of that range and resumes it)."""
    settings = _settings(start_ms=start, stop_ms=stop, max_cycles=max_cycles)
    resume = _resume(path, start)
    report = asyncio.run(
        run_replay(
            settings,
            CANDLES,
            path,
            decider=StrategyDecider(SPEC, TF),
            exit_spec=ExitSpec(slippage_bps=2.0),
            guards=RiskGuards(GuardLimits(max_open_positions=2)),
            setup=ReplaySetup(weight_limit=600),
        )
    )
    left = (stop - resume) // STEP
    assert report.cycles == (left if max_cycles is None else min(left, max_cycles))
    assert report.statuses.keys() <= {200}


def _resume(path: Path, start: int) -> int:
    async def read() -> int:
        async with Journal.open(path) as j:
            state = await j.symbol_state()
        return min(state.values()) + STEP if state else start

    return asyncio.run(read()) if path.exists() else start


def test_restarts_continue_without_duplicates(tmp_path: Path) -> None:
    once = tmp_path / "once.sqlite"
    _replay(once, T0, T0 + 120 * STEP)
    parts = tmp_path / "parts.sqlite"
    for max_cycles in (37, 1, None):
        _replay(parts, T0, T0 + 120 * STEP, max_cycles)

    async def snapshots() -> tuple[object, object, int]:
        async with Journal.open(once) as a, Journal.open(parts) as b:
            n = len(await a.positions())
            return await a.snapshot(), await b.snapshot(), n

    snap_once, snap_parts, n_positions = asyncio.run(snapshots())
    assert n_positions > 5
    assert snap_parts == snap_once


async def test_replay_needs_a_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="start time"):
        await run_replay(
            replace(_settings(), start_ms=None),
            CANDLES,
            tmp_path / "j.sqlite",
            decider=StrategyDecider(SPEC, TF),
            exit_spec=ExitSpec(),
            guards=RiskGuards(GuardLimits()),
        )


def _meta_model() -> ModelHandle:
    rng = np.random.default_rng(0)
    names = ["ret_1", "rsi_14", *EVENT_FEATURES]
    X = pd.DataFrame({k: rng.normal(size=400) for k in names})
    y = (X["ret_1"] + rng.normal(size=400) > 0).astype(int)
    model = MetaModel(MetaParams(n_estimators=5, min_child_samples=5)).fit(X, y)
    return ModelHandle(model, "meta-test-1")


async def test_meta_model_probability_and_reasons_are_journalled(tmp_path: Path) -> None:
    settings = _settings(start_ms=T0, stop_ms=T0 + 60 * STEP)
    async with harness(tmp_path / "j.sqlite", settings) as (loop, _, dec):
        handle = _meta_model()
        dec.inner = StrategyDecider(SPEC, TF, model=handle)
        assert await loop.run() == 60
        signals = await loop.journal.signals()
        observed = loop.metrics.meta_probability._sum.get()
    assert len(signals) > 5
    for s in signals:
        assert s.model_id == "meta-test-1"
        assert s.p_take is not None
        assert 0.0 <= s.p_take <= 1.0
        assert s.threshold == handle.threshold
        assert len(s.reasons) == 3
        assert s.take == (s.p_take >= s.threshold and s.blocked_by is None)
        if s.p_take < s.threshold:
            assert s.blocked_by == "meta_model"
    assert observed == pytest.approx(sum(s.p_take for s in signals if s.p_take is not None))


def test_early_decisions_change_nothing(tmp_path: Path) -> None:
    snaps = []
    for early in (False, True):
        path = tmp_path / f"early_{early}.sqlite"
        settings = _settings(start_ms=T0, stop_ms=T0 + 120 * STEP, early_decisions=early)
        asyncio.run(
            run_replay(
                settings,
                CANDLES,
                path,
                decider=StrategyDecider(SPEC, TF),
                exit_spec=ExitSpec(),
                guards=RiskGuards(GuardLimits(max_open_positions=2)),
            )
        )

        async def read(p: Path = path) -> dict[str, list[tuple[object, ...]]]:
            async with Journal.open(p) as j:
                return await j.snapshot()

        snaps.append(asyncio.run(read()))
    assert len(snaps[0]["signals"]) > 10
    assert snaps[0] == snaps[1]


async def test_a_bar_still_forming_is_never_decided(tmp_path: Path) -> None:
    now_ms = int(time.time() * 1000)
    if STEP - now_ms % STEP < 15_000:  # pragma: no cover  (the bar would close mid-test)
        pytest.skip("too close to the top of the hour")
    forming = now_ms // STEP * STEP  # the exchange's current, open bar
    candles = {"AAAUSDT": synthetic(5, n=100, start_ms=forming - 99 * STEP)}
    settings = _settings(symbols=("AAAUSDT",))
    clock_s = (forming + STEP) / 1000  # a clock running ahead of the exchange
    async with harness(tmp_path / "j.sqlite", settings, clock_s=clock_s, candles=candles) as (
        loop,
        fake,
        dec,
    ):
        res = await loop.run_cycle(forming)  # the last closed bar: decided
        assert res is not None
        assert dec.calls == [("AAAUSDT", forming - STEP)]
        res = await loop.run_cycle(forming + STEP)  # asks for the open bar: dropped
        assert res is not None
        assert res.decisions == 0
        assert dec.calls == [("AAAUSDT", forming - STEP)]
        assert fake.requests[-1].params["endTime"] == str(forming)
