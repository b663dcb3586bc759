"""Fault test: 1,000 replayed cycles against a fake exchange that answers 5xx, hangs, sends
garbage and truncated bodies, drops connections, is rate limited (injected 429 windows) and is
shared with another client eating weight. The loop must not crash, must decide every fetched
bar exactly once, and must never send a request over the weight limit."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from atra.adapters.journal.database import Journal
from atra.core.exits.api import ExitSpec
from atra.core.signals.spec import SignalSpec
from atra.core.types import Timeframe
from atra.live.guards import GuardLimits, RiskGuards
from atra.live.loop import LiveLoop, LoopSettings, StrategyDecider
from atra.live.replay import ReplaySetup, run_replay
from atra.sim.exchange import FakeExchange, Faults
from helpers_live import CountingDecider, synthetic
from helpers_logging import quiet_structlog

TF = Timeframe.H1
STEP = TF.ms
T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
SPEC = SignalSpec(ema_fast=3, ema_slow=8, atr_n=5, horizon_bars=6)


N_CYCLES = 1_000
WEIGHT_LIMIT = 600
CANDLES = {
    s: synthetic(k, n=N_CYCLES + 200) for k, s in enumerate(("AAAUSDT", "BBBUSDT", "CCCUSDT"))
}


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    with quiet_structlog(logging.ERROR):
        yield


@pytest.mark.slow
def test_thousand_faulty_cycles(tmp_path: Path) -> None:
    faults = Faults(
        p_5xx=0.03,
        p_timeout=0.003,
        p_truncated=0.02,
        p_garbage=0.02,
        p_drop=0.02,
        hang_s=1.0,
        seed=7,
    )
    decider = CountingDecider(StrategyDecider(SPEC, TF))
    injected: list[tuple[float, float]] = []  # 429 windows, fake-exchange seconds
    tasks: list[asyncio.Task[None]] = []

    async def inject(loop: LiveLoop, fake: FakeExchange) -> None:
        seen = 0
        while not loop.stop_event.is_set():
            await asyncio.sleep(0.005)
            if loop.cycles_done // 199 > seen:
                seen = loop.cycles_done // 199
                now = fake.now_s()
                # another client on our IP uses the whole minute's weight: the exchange
                # answers 429 until its window rolls
                fake.charge_external(WEIGHT_LIMIT)
                window_s = fake.limits.window_s
                injected.append((now, (now // window_s + 1) * window_s + 1.0))

    def start(loop: LiveLoop, fake: FakeExchange) -> None:
        tasks.append(asyncio.get_running_loop().create_task(inject(loop, fake)))
        fakes.append(fake)

    fakes: list[FakeExchange] = []
    settings = LoopSettings(
        tuple(CANDLES),
        TF,
        window_bars=40,
        bar_close_delay_s=0.0,
        start_ms=T0,
        stop_ms=T0 + N_CYCLES * STEP,
        symbol_timeout_s=1.5,
        cycle_deadline_s=2.5,
    )
    report = asyncio.run(
        run_replay(
            settings,
            CANDLES,
            tmp_path / "faults.sqlite",
            decider=decider,
            exit_spec=ExitSpec(),
            guards=RiskGuards(GuardLimits(max_open_positions=3)),
            setup=ReplaySetup(
                weight_limit=WEIGHT_LIMIT,
                faults=faults,
                client_timeout_s=0.2,
                max_attempts=2,
                backoff_s=0.05,
            ),
            on_start=start,
        )
    )
    assert report.cycles == N_CYCLES

    # the faults did happen
    faults_seen = Counter(r.fault for r in fakes[0].requests if r.fault)
    assert set(faults_seen) == {"5xx", "timeout", "truncated", "garbage", "drop"}
    assert len(injected) >= 4

    # zero requests over the weight limit: every 429 came from an injected window, no 418
    statuses = Counter(r.status for r in fakes[0].requests)
    assert 418 not in statuses
    per_window: Counter[int] = Counter()
    for rec in fakes[0].requests:
        if rec.status == 429:
            assert any(a <= rec.t_s <= b for a, b in injected), rec
        else:  # admitted and counted by the exchange
            per_window[int(rec.t_s // fakes[0].limits.window_s)] += rec.weight
    assert max(per_window.values()) <= WEIGHT_LIMIT

    # exactly one decision per fetched bar, in time order, no bar left out
    counts = Counter(decider.calls)
    assert max(counts.values()) == 1

    async def read() -> tuple[dict[str, int], int, int]:
        async with Journal.open(tmp_path / "faults.sqlite") as j:
            cycles = await j.cycles()
            partial = sum(1 for c in cycles if c.status != "ok")
            return await j.symbol_state(), len(cycles), partial

    state, n_cycles, partial = asyncio.run(read())
    assert n_cycles == N_CYCLES
    assert partial > 5  # symbols were skipped and reported
    for sym in CANDLES:
        bars = sorted(t for s, t in decider.calls if s == sym)
        assert bars == list(range(T0, state[sym] + STEP, STEP))
        assert state[sym] >= T0 + (N_CYCLES - 5) * STEP
