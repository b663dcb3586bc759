"""``LoopSettings.settle_heap``: after the first cycle the heap is collected once and frozen
(no full collection lands in a later cycle); off by default."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.helpers_live import STEP, T0, synthetic
from tests.helpers_logging import quiet_structlog

from atra.core.exits.api import ExitSpec
from atra.core.signals.spec import SignalSpec
from atra.core.types import Timeframe
from atra.live.guards import GuardLimits, RiskGuards
from atra.live.loop import LiveLoop, LoopSettings, StrategyDecider
from atra.live.replay import ReplaySetup, run_replay
from atra.sim.exchange import FakeExchange

TF = Timeframe.H1
SPEC = SignalSpec(ema_fast=3, ema_slow=8, atr_n=5, horizon_bars=6)


@pytest.fixture(autouse=True)
def _unfrozen() -> Iterator[None]:
    gc.unfreeze()
    with quiet_structlog(logging.ERROR):
        yield
    gc.unfreeze()  # the rest of the session runs with the collector as usual


def _frozen_after_each_cycle(path: Path, settle: bool) -> list[int]:
    """``gc.get_freeze_count()`` after each of three cycles."""
    counts: list[int] = []

    def start(loop: LiveLoop, _fake: FakeExchange) -> None:
        inner = loop.run_cycle

        async def counted(close_ms: int):  # type: ignore[no-untyped-def]
            result = await inner(close_ms)
            counts.append(gc.get_freeze_count())
            return result

        loop.run_cycle = counted  # type: ignore[method-assign]

    settings = LoopSettings(
        ("AAAUSDT",),
        TF,
        window_bars=20,
        bar_close_delay_s=0.0,
        start_ms=T0,
        stop_ms=T0 + 3 * STEP,
        **({"settle_heap": True} if settle else {}),
    )
    asyncio.run(
        run_replay(
            settings,
            {"AAAUSDT": synthetic(3, n=140)},
            path,
            decider=StrategyDecider(SPEC, TF),
            exit_spec=ExitSpec(),
            guards=RiskGuards(GuardLimits()),
            setup=ReplaySetup(weight_limit=None),
            on_start=start,
        )
    )
    return counts


def test_heap_frozen_after_the_first_cycle(tmp_path: Path) -> None:
    counts = _frozen_after_each_cycle(tmp_path / "on.sqlite", settle=True)
    assert len(counts) == 3
    assert all(c > 0 for c in counts)  # frozen from the first cycle on


def test_heap_not_frozen_by_default(tmp_path: Path) -> None:
    assert not LoopSettings(("AAAUSDT",), TF).settle_heap
    counts = _frozen_after_each_cycle(tmp_path / "off.sqlite", settle=False)
    assert counts == [0, 0, 0]
