"""The order path under faults: a replay through signed REST and exchange-side orders while the
fake exchange answers 5xx, hangs, drops connections and loses answers after acting on them.
Nothing may be doubled, lost or invented: every order the venue holds is one the journal
knows, every fill the journal books happened on the venue, at the venue's price."""

from __future__ import annotations

import asyncio
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
from helpers_live import synthetic
from helpers_logging import quiet_structlog

TF = Timeframe.H1
STEP = TF.ms
T0 = 1_704_067_200_000
N_CYCLES = 300
SPEC = SignalSpec(ema_fast=3, ema_slow=8, atr_n=5, horizon_bars=6)


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    with quiet_structlog():
        yield


@pytest.mark.slow
def test_orders_under_faults_are_never_doubled_lost_or_invented(tmp_path: Path) -> None:
    candles = {s: synthetic(k, N_CYCLES + 150) for k, s in enumerate(("AAAUSDT", "BBBUSDT"))}
    faults = Faults(p_5xx=0.03, p_timeout=0.005, p_drop=0.03, lost=0.05, hang_s=0.5, seed=11)
    fakes: list[FakeExchange] = []

    def start(loop: LiveLoop, fake: FakeExchange) -> None:
        fakes.append(fake)

    exit_spec = ExitSpec(tp1_fraction=0.5, move_to_be=True, slippage_bps=2.0)
    report = asyncio.run(
        run_replay(
            LoopSettings(
                tuple(candles),
                TF,
                window_bars=60,
                bar_close_delay_s=0.0,
                start_ms=T0,
                stop_ms=T0 + N_CYCLES * STEP,
                symbol_timeout_s=2.0,
                cycle_deadline_s=4.0,
            ),
            candles,
            tmp_path / "orders.sqlite",
            decider=StrategyDecider(SPEC, TF),
            exit_spec=exit_spec,
            guards=RiskGuards(GuardLimits(max_open_positions=4, max_gross_leverage=4.0)),
            setup=ReplaySetup(
                weight_limit=1200,
                faults=faults,
                client_timeout_s=0.2,
                max_attempts=4,
                backoff_s=0.01,
                orders=True,
            ),
            on_start=start,
        )
    )
    assert report.cycles == N_CYCLES
    fake = fakes[0]
    seen = Counter(r.fault for r in fake.requests if r.fault)
    assert {"5xx", "drop", "lost"} <= set(seen)
    lost_orders = [r for r in fake.requests if r.fault == "lost" and r.path == "/fapi/v1/order"]
    assert lost_orders  # the venue acted on order calls whose answers never came back

    async def read() -> tuple[list, list, list]:  # type: ignore[type-arg]
        async with Journal.open(tmp_path / "orders.sqlite") as j:
            return await j.orders(), await j.fills(), await j.positions()

    orders, fills, positions = asyncio.run(read())
    engine = fake.engine
    journal_ids = {o.client_order_id for o in orders}
    venue_fills = {f.client_order_id: f for f in engine.fills}
    assert len(venue_fills) == len(engine.fills)  # no order filled twice on the venue
    # nothing lost: every order the venue filled or holds is one the journal knows
    assert set(venue_fills) <= journal_ids
    assert {o.client_order_id for o in engine.open_orders()} <= journal_ids
    # nothing invented: every journalled fill happened on the venue, at its price
    legs = [f for f in fills if f.reason != "FUNDING"]
    assert len(legs) > 20
    for f in legs:
        if f.leg == "entry":
            venue = venue_fills[f.client_order_id]
        else:  # exits are separate orders of the position: find the venue fill at this time
            venue = next(
                v for v in engine.fills
                if v.client_order_id in journal_ids and v.time_ms // STEP * STEP == f.time_ms
                and v.price == f.price
            )  # fmt: skip
        assert venue.price == f.price
    entries = {f.client_order_id for f in legs if f.leg == "entry"}
    assert entries == {p.position_id for p in positions if p.entry_price is not None
                       and p.status in ("open", "closed")}  # fmt: skip
    closed = [p for p in positions if p.status == "closed"]
    assert len(closed) > 10
    # the venue's net position per symbol is what the journal's open positions hold
    net = Counter[str]()
    for pos in positions:
        if pos.status == "open":
            qty = pos.quantity
            done = sum(f.quantity for f in legs if f.client_order_id == pos.position_id
                       and f.leg != "entry")  # fmt: skip
            net[pos.symbol] += pos.side * (qty - done)
    venue_net = {p.symbol: p.quantity for p in engine.positions()}
    for sym in candles:
        assert venue_net.get(sym, 0.0) == pytest.approx(net.get(sym, 0.0), abs=1e-9)
