"""The exchange broker over the in-process venue: kernel parity, idempotency, recovery."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from atra.adapters.journal.records import FillRecord, OrderRecord, PositionRecord
from atra.adapters.orders import OrderRequest, SymbolRules
from atra.core.exits.api import ExitSpec
from atra.core.exits.kernel import REASON_NAMES, STATUS_DONE, simulate_exit_nb
from atra.core.types import Timeframe
from atra.errors import DataError
from atra.live.execution import CANCELLED, ExchangeBroker, round_step, round_tick
from atra.live.paper import Broker, BrokerUpdate, EntryRequest, client_order_id
from atra.sim.local_venue import LocalVenue
from atra.sim.venue import MatchingEngine

TF = Timeframe.H1
STEP = TF.ms
T0 = 1_700_000_000_000 - (1_700_000_000_000 % STEP)
SYM = "BTCUSDT"
RUN = "run-1"
SIG = 2  # signal bar index in the generated frames
RULES = SymbolRules(SYM, step_size=0.001, min_qty=0.001, tick_size=1e-9)
SPEC = ExitSpec(fee_entry=0.0004, fee_tp=0.0002, fee_stop=0.0005)


@dataclass
class Clock:
    """The loop's clock, in seconds, moved by hand to each bar close."""

    t: float = 0.0

    def __call__(self) -> float:
        return self.t

    def at_ms(self, ms: int) -> None:
        self.t = ms / 1000.0


@dataclass
class Book:
    """What the loop would journal: the latest record per order / position, every fill."""

    orders: dict[str, OrderRecord] = field(default_factory=dict)
    positions: dict[str, PositionRecord] = field(default_factory=dict)
    fills: list[FillRecord] = field(default_factory=list)

    def add(self, upd: BrokerUpdate) -> BrokerUpdate:
        keys = {(f.client_order_id, f.leg) for f in self.fills}
        for fill in upd.fills:
            assert (fill.client_order_id, fill.leg) not in keys, f"booked twice: {fill}"
            keys.add((fill.client_order_id, fill.leg))
            self.fills.append(fill)
        for order in upd.orders:
            self.orders[order.client_order_id] = order
        for pos in upd.positions:
            self.positions[pos.position_id] = pos
        return upd

    def live(self) -> list[PositionRecord]:
        return [p for p in self.positions.values() if p.status in ("pending", "open")]


def frame(
    open_: Sequence[float],
    high: Sequence[float],
    low: Sequence[float],
    times: Sequence[int] | None = None,
) -> pd.DataFrame:
    o = np.asarray(open_, np.float64)
    t = np.asarray(times, np.int64) if times is not None else T0 + STEP * np.arange(o.size)
    return pd.DataFrame(
        {
            "open_time": t,
            "open": o,
            "high": np.asarray(high, np.float64),
            "low": np.asarray(low, np.float64),
            "close": np.r_[o[1:], o[-1]],
            "volume": np.ones(o.size),
        }
    )


def random_path(rng: np.random.Generator, n: int) -> pd.DataFrame:
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.008, n)))
    prev = np.r_[100.0, close[:-1]]
    gaps = rng.normal(0.0, 0.004, n) * (rng.random(n) < 0.3)
    open_ = prev * (1.0 + gaps)
    high = np.maximum(open_, close) * (1.0 + rng.exponential(0.004, n))
    low = np.minimum(open_, close) * (1.0 - rng.exponential(0.004, n))
    return frame(open_, high, low)


FLAT = 10  # bars of the scripted frames


def flat(n: int = FLAT) -> tuple[list[float], list[float], list[float]]:
    return [100.0] * n, [100.2] * n, [99.8] * n


ENTRY_MS = T0 + (SIG + 1) * STEP  # the entry bar's open: when the broker submits


def resting_ids(engine: MatchingEngine, symbol: str | None = None) -> set[str]:
    """Client ids of everything resting at the venue: matching-engine orders (``openOrders``)
    and algo orders (``openAlgoOrders``)."""
    regular = {o.client_order_id for o in engine.open_orders(symbol)}
    return regular | {a.client_algo_id for a in engine.open_algo_orders(symbol)}


def engine_for(df: pd.DataFrame, spec: ExitSpec, rules: SymbolRules = RULES) -> MatchingEngine:
    return MatchingEngine({SYM: df}, STEP, slippage_bps=spec.slippage_bps, rules={SYM: rules})


def broker_for(engine: MatchingEngine, clock: Clock, spec: ExitSpec) -> ExchangeBroker:
    return ExchangeBroker(
        LocalVenue(engine, clock), spec, strategy="s1", run_id=RUN, timeframe=TF, clock=clock
    )


@dataclass
class Rig:
    """The in-process venue over ``df``, the loop's clock, and a broker on both."""

    df: pd.DataFrame
    spec: ExitSpec
    clock: Clock
    engine: MatchingEngine
    broker: ExchangeBroker

    def restart(self) -> ExchangeBroker:
        """A new process: a fresh broker on the same venue."""
        self.broker = broker_for(self.engine, self.clock, self.spec)
        return self.broker

    async def close_bar(self, k: int, at_ms: int | None = None) -> BrokerUpdate:
        """Bar ``k`` has closed (the clock at its close, or at ``at_ms``): ``on_bar``."""
        self.clock.at_ms(T0 + (k + 1) * STEP if at_ms is None else at_ms)
        return await self.broker.on_bar(SYM, *arrays(self.df, k))

    def assert_flat(self) -> None:
        """Nothing left behind at the venue: no position, no resting order."""
        assert self.engine.position(SYM).quantity == 0.0
        assert resting_ids(self.engine, SYM) == set()


def make_rig(
    df: pd.DataFrame | None = None,
    spec: ExitSpec = SPEC,
    rules: SymbolRules = RULES,
    *,
    at_ms: int = ENTRY_MS,
) -> Rig:
    """A rig over ``df`` (flat bars by default), its clock at ``at_ms``."""
    frame_ = frame(*flat()) if df is None else df
    clock = Clock()
    clock.at_ms(at_ms)
    engine = engine_for(frame_, spec, rules)
    return Rig(frame_, spec, clock, engine, broker_for(engine, clock, spec))


def enter_by_hand(engine: MatchingEngine, now_ms: int = ENTRY_MS, qty: float = 1.0) -> None:
    """The entry POST of an earlier process reached the venue; its answer was lost."""
    engine.place(OrderRequest(SYM, "BUY", "MARKET", cid("entry"), quantity=qty), now_ms)


def events(logs: Sequence[Mapping[str, Any]]) -> list[str]:
    return [e["event"] for e in logs]


def arrays(df: pd.DataFrame, k: int) -> tuple[Any, Any, Any, Any]:
    """The loop's window: bars up to ``k`` (closed)."""
    o, h, lo = (df[c].to_numpy(np.float64)[: k + 1] for c in ("open", "high", "low"))
    return df["open_time"].to_numpy(np.int64)[: k + 1], o, h, lo


def cid(kind: str, signal: int = SIG) -> str:
    return client_order_id(RUN, SYM, T0 + signal * STEP, kind)


def request(
    side: int = 1,
    qty: float = 1.0,
    sl: float = 1.0,
    tp1: float = 1.0,
    tp2: float = 2.0,
    horizon: int = 5,
    signal: int = SIG,
) -> EntryRequest:
    return EntryRequest(SYM, side, T0 + signal * STEP, qty, sl, tp1, tp2, horizon)


def pending_record(qty: float = 1.0, signal: int = SIG, **changes: Any) -> PositionRecord:
    """The journal's record of a pending entry (``changes`` make it open, partial, ...)."""
    pos = PositionRecord(
        position_id=cid("entry", signal),
        strategy="s1",
        symbol=SYM,
        side=1,
        signal_time_ms=T0 + signal * STEP,
        quantity=qty,
        sl_dist=1.0,
        tp1_dist=1.0,
        tp2_dist=2.0,
        horizon_bars=5,
        status="pending",
        entry_price=100.0,
    )
    return replace(pos, **changes)


async def drive(
    df: pd.DataFrame,
    spec: ExitSpec,
    req: EntryRequest,
    *,
    twice: bool = False,
    restart_bar: int = -1,
) -> tuple[Book, MatchingEngine]:
    """Submit at the signal bar's close, then ``on_bar`` at every following close (twice per
    bar, or with a crash-and-restart before processing ``restart_bar``)."""
    rig = make_rig(df, spec)
    book = Book()
    book.add(await rig.broker.submit(req, reference_price=float(df["close"].iloc[SIG])))
    for k in range(SIG + 1, len(df) - 1):
        rig.clock.at_ms(T0 + (k + 1) * STEP)
        if k == restart_bar:
            rig.restart().load(book.positions.values())
            book.add(await rig.broker.recover())
        for _ in range(2 if twice else 1):
            book.add(await rig.close_bar(k))
    return book, rig.engine


def kernel_legs(
    df: pd.DataFrame, spec: ExitSpec, req: EntryRequest
) -> tuple[float, list[tuple[int, float, str, float]], float]:
    o, h, lo = (df[c].to_numpy(np.float64) for c in ("open", "high", "low"))
    r = simulate_exit_nb(
        o, h, lo, SIG + 1, len(df), req.side, req.sl_dist, req.tp1_dist, req.tp2_dist,
        req.horizon_bars, *spec.kernel_args(),
    )  # fmt: skip
    assert int(r[0]) == STATUS_DONE
    legs = [(int(r[3]), float(r[4]), REASON_NAMES[int(r[5])], float(r[6]))]
    if int(r[7]) >= 0:
        legs.append((int(r[7]), float(r[8]), REASON_NAMES[int(r[9])], float(r[10])))
    return float(r[2]), legs, float(r[12])


def assert_matches_kernel(book: Book, engine: MatchingEngine, df: pd.DataFrame,
                          spec: ExitSpec, req: EntryRequest) -> None:  # fmt: skip
    entry, legs, ret = kernel_legs(df, spec, req)
    times = df["open_time"].to_numpy(np.int64)
    (pos,) = book.positions.values()
    assert pos.status == "closed"
    assert pos.entry_time_ms == int(times[SIG + 1])
    assert pos.entry_price == pytest.approx(entry, rel=1e-12)
    got = [
        (int(np.searchsorted(times, f.time_ms)), f.price, f.reason, f.quantity / pos.quantity)
        for f in book.fills
        if f.leg != "entry"
    ]
    assert [(g[0], g[2]) for g in got] == [(k[0], k[2]) for k in legs]
    for g, k in zip(got, legs, strict=True):
        assert g[1] == pytest.approx(k[1], rel=1e-9)
        assert g[3] == pytest.approx(k[3], abs=1e-9)
    assert pos.ret_net is not None
    assert pos.ret_net == pytest.approx(ret, abs=1e-9)
    assert pos.pnl == pytest.approx(sum(f.pnl for f in book.fills), abs=1e-9)
    assert pos.legs_done == len(legs)
    assert (pos.exit_time_ms, pos.reason) == (int(times[legs[-1][0]]), legs[-1][2])
    # nothing left behind at the venue
    assert engine.position(SYM).quantity == 0.0
    assert resting_ids(engine, SYM) == set()
    assert all(o.status in ("filled", "cancelled", "rejected") for o in book.orders.values())


# ---- rounding ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("qty", "step", "expected"),
    [(0.3, 0.1, 0.3), (1.23456, 0.001, 1.234), (0.0999, 0.1, 0.0), (17.0, 5.0, 15.0)],
)
def test_round_step_down(qty: float, step: float, expected: float) -> None:
    assert round_step(qty, step) == expected


@pytest.mark.parametrize(
    ("price", "tick", "expected"),
    [(99.00000000000001, 1e-9, 99.0), (100.126, 0.01, 100.13), (1234.4, 0.5, 1234.5)],
)
def test_round_tick_nearest(price: float, tick: float, expected: float) -> None:
    assert round_tick(price, tick) == expected


# ---- parity with the exit kernel -----------------------------------------------------------


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
@given(
    seed=st.integers(0, 2**32 - 1),
    side=st.sampled_from([1, -1]),
    tp1_fraction=st.sampled_from([1.0, 0.5]),
    move_to_be=st.booleans(),
    slippage_bps=st.sampled_from([0.0, 5.0]),
    horizon=st.integers(1, 8),
    restart=st.integers(0, 9),
)
def test_parity_with_kernel(
    seed: int,
    side: int,
    tp1_fraction: float,
    move_to_be: bool,
    slippage_bps: float,
    horizon: int,
    restart: int,
) -> None:
    rng = np.random.default_rng(seed)
    df = random_path(rng, SIG + horizon + 4)
    spec = replace(
        SPEC, tp1_fraction=tp1_fraction, move_to_be=move_to_be, slippage_bps=slippage_bps
    )
    tp1 = float(rng.uniform(0.2, 1.5))
    req = request(
        side=side,
        qty=round(2 * int(rng.integers(1, 2000)) * 0.001, 3),
        sl=float(rng.uniform(0.2, 1.5)),
        tp1=tp1,
        tp2=tp1 * float(rng.uniform(1.0, 2.5)),
        horizon=horizon,
    )
    restart_bar = SIG + 1 + restart % (horizon + 1)
    books = []
    for kwargs in ({}, {"twice": True}, {"restart_bar": restart_bar}):
        book, engine = asyncio.run(drive(df, spec, req, **kwargs))
        assert_matches_kernel(book, engine, df, spec, req)
        books.append(book)
    # bars seen twice, a restart mid-trade: the same fills, the same final order states
    for other in books[1:]:
        assert other.fills == books[0].fills
        assert other.positions == books[0].positions
        assert {k: o.status for k, o in other.orders.items()} == {
            k: o.status for k, o in books[0].orders.items()
        }


def test_parity_also_over_a_jitted_batch() -> None:
    """A handful of fixed seeds, long horizons: the same legs as the jitted kernel."""
    for seed in range(6):
        rng = np.random.default_rng(1000 + seed)
        df = random_path(rng, 40)
        spec = replace(SPEC, tp1_fraction=0.5, move_to_be=bool(seed % 2), slippage_bps=5.0)
        req = request(side=1 if seed < 3 else -1, qty=2.0, sl=2.5, tp1=1.5, tp2=3.5, horizon=30)
        book, engine = asyncio.run(drive(df, spec, req))
        assert_matches_kernel(book, engine, df, spec, req)


# ---- scripted paths --------------------------------------------------------------------------


async def test_time_exit_at_the_horizon_open() -> None:
    o, h, lo = flat()
    o[SIG + 4] = 100.5
    df = frame(o, h, lo)
    req = request(qty=1.0, sl=5.0, tp1=5.0, tp2=6.0, horizon=3)
    book, engine = await drive(df, SPEC, req)
    (pos,) = book.positions.values()
    assert pos.reason == "TIME"
    assert pos.exit_time_ms == T0 + (SIG + 4) * STEP
    assert pos.exit_price == 100.5
    assert book.orders[cid("time")].status == "filled"
    assert book.orders[cid("sl")].status == "cancelled"
    assert book.orders[cid("tp1")].status == "cancelled"
    fee_in, fee_out = 100.0 * SPEC.fee_entry, 100.5 * SPEC.fee_stop
    assert pos.pnl == pytest.approx(0.5 - fee_in - fee_out)
    assert pos.ret_net == pytest.approx((0.5 - fee_in - fee_out) / (100.0 * (1 + SPEC.fee_entry)))
    assert_matches_kernel(book, engine, df, SPEC, req)


async def test_split_take_profits_and_break_even_gap() -> None:
    o, h, lo = flat()
    h[SIG + 1] = 101.5  # TP1 at 101
    o[SIG + 2], h[SIG + 2], lo[SIG + 2] = 99.9, 100.0, 99.5  # opens below entry: BE gap
    df = frame(o, h, lo)
    spec = replace(SPEC, tp1_fraction=0.5, move_to_be=True)
    req = request(qty=1.0, sl=2.0, tp1=1.0, tp2=3.0)
    book, engine = await drive(df, spec, req)
    assert [(f.leg, f.reason, f.price, f.quantity) for f in book.fills] == [
        ("entry", "ENTRY", 100.0, 1.0),
        ("leg1", "TP1", 101.0, 0.5),
        ("leg2", "BE", 99.9, 0.5),
    ]
    assert book.orders[cid("sl")].status == "cancelled"
    assert book.orders[cid("tp2")].status == "cancelled"
    assert_matches_kernel(book, engine, df, spec, req)


async def test_break_even_stop_rests_then_fills() -> None:
    o, h, lo = flat()
    h[SIG + 1] = 101.5
    o[SIG + 2], lo[SIG + 2] = 100.4, 99.5
    df = frame(o, h, lo)
    spec = replace(SPEC, tp1_fraction=0.5, move_to_be=True)
    req = request(side=1, qty=1.0, sl=2.0, tp1=1.0, tp2=3.0)
    book, engine = await drive(df, spec, req)
    (pos,) = book.positions.values()
    assert (pos.reason, pos.exit_price) == ("BE", 100.0)
    assert book.orders[cid("be")].status == "filled"
    assert_matches_kernel(book, engine, df, spec, req)


async def test_stop_that_would_trigger_closes_at_market() -> None:
    spec = replace(SPEC, slippage_bps=5.0)  # entry 100.05, stop 100.04 >= the open 100
    rig = make_rig(spec=spec)
    req = request(qty=1.0, sl=0.01, tp1=1.0, tp2=2.0)
    with capture_logs() as logs:
        upd = await rig.broker.submit(req)
    assert "stop_would_trigger" in events(logs)
    (pos,) = upd.positions
    assert (pos.status, pos.reason, pos.exit_time_ms) == ("closed", "SL", ENTRY_MS)
    assert pos.exit_price == pytest.approx(100.0 * (1 - 5e-4))
    rig.assert_flat()
    book = Book()
    book.add(upd)
    assert_matches_kernel(book, rig.engine, rig.df, spec, req)


async def test_split_falls_back_to_one_take_profit_below_min_qty() -> None:
    rules = SymbolRules(SYM, step_size=0.001, min_qty=0.01, tick_size=0.01)
    rig = make_rig(spec=replace(SPEC, tp1_fraction=0.5), rules=rules)
    await rig.broker.submit(request(qty=0.015, tp1=1.004, tp2=2.0))
    resting = {o.client_order_id: o for o in rig.engine.open_orders(SYM)}
    assert set(resting) == {cid("tp1")}
    # the stop is an algo order (the Algo Order API), never in openOrders
    assert [a.client_algo_id for a in rig.engine.open_algo_orders(SYM)] == [cid("sl")]
    assert resting[cid("tp1")].orig_qty == 0.015
    assert resting[cid("tp1")].price == 101.0  # rounded to the tick
    (pos,) = rig.broker.positions()
    assert rig.broker.remaining(pos) == 0.015


# ---- idempotency and lost answers ------------------------------------------------------------


async def test_lost_entry_answer_is_found_not_doubled() -> None:
    rig = make_rig()
    enter_by_hand(rig.engine)
    upd = await rig.broker.submit(request(qty=1.0))
    (pos,) = upd.positions
    assert pos.status == "open"
    assert rig.engine.position(SYM).quantity == 1.0
    assert [f.client_order_id for f in rig.engine.fills] == [cid("entry")]
    assert resting_ids(rig.engine, SYM) == {cid("sl"), cid("tp1")}
    # the same decision again books nothing
    assert await rig.broker.submit(request(qty=1.0)) == BrokerUpdate()


async def test_pending_entry_found_at_recover() -> None:
    rig = make_rig()
    enter_by_hand(rig.engine)
    rig.clock.at_ms(ENTRY_MS + 60_000)  # restarted a minute later, still in the entry bar
    rig.restart().load([pending_record()])
    upd = await rig.broker.recover()
    assert [f.leg for f in upd.fills] == ["entry"]
    assert upd.positions[-1].status == "open"
    assert rig.engine.position(SYM).quantity == 1.0
    assert len(resting_ids(rig.engine, SYM)) == 2


async def test_pending_entry_placed_again_in_its_bar() -> None:
    """A transient error left the entry unknown: still in the entry bar, it is placed."""
    rig = make_rig()
    rig.broker.load([pending_record(qty=1.0004)])
    assert rig.broker.remaining(rig.broker.positions()[0]) == 1.0004
    upd = await rig.close_bar(SIG, at_ms=ENTRY_MS + 5_000)
    assert upd.positions[-1].status == "open"
    assert upd.positions[-1].quantity == 1.0  # rounded down to the step
    assert rig.engine.position(SYM).quantity == 1.0


async def test_pending_entry_missed_is_cancelled() -> None:
    rig = make_rig()
    rig.broker.load([pending_record()])
    with capture_logs() as logs:
        upd = await rig.close_bar(SIG + 1)  # the entry bar is over
    assert [p.status for p in upd.positions] == [CANCELLED]
    assert [o.status for o in upd.orders] == ["cancelled"]
    assert "entry_missed" in events(logs)
    assert rig.engine.fills == []
    assert rig.broker.open_count() == 0


async def test_late_submit_never_enters() -> None:
    rig = make_rig(at_ms=T0 + (SIG + 3) * STEP)
    upd = await rig.broker.submit(request())
    assert [p.status for p in upd.positions] == [CANCELLED]
    assert rig.engine.fills == []


async def test_recover_books_fills_while_down_and_closes_on_lost_protection() -> None:
    o, h, lo = flat()
    h[SIG + 2] = 101.5  # TP1 while the process is down
    rig = make_rig(frame(o, h, lo), replace(SPEC, tp1_fraction=0.5))
    book = Book()
    book.add(await rig.broker.submit(request(qty=1.0, sl=2.0, tp1=1.0, tp2=3.0)))
    # crashed; the TP2 order was lost with the process (cancelled, as a stand-in)
    rig.clock.at_ms(ENTRY_MS + 2 * STEP + 1_000)
    rig.engine.cancel(SYM, cid("tp2"), int(rig.clock() * 1000))
    rig.restart().load(book.live())
    with capture_logs() as logs:
        book.add(await rig.broker.recover())
    # the TP1 fill while down is booked once; the cancelled TP2 is a lost protective order
    assert [f.leg for f in book.fills] == ["entry", "leg1", "leg2"]
    assert book.fills[1].reason == "TP1"
    assert book.fills[2].reason == "SL"
    assert "protective_order_lost" in events(logs)
    rig.assert_flat()


async def test_recover_places_protection_that_never_made_it() -> None:
    rig = make_rig()
    enter_by_hand(rig.engine)
    rig.clock.at_ms(ENTRY_MS + 10_000)
    rig.broker.load([pending_record(status="open", entry_time_ms=ENTRY_MS, entry_price=100.0)])
    upd = await rig.broker.recover()
    assert upd.fills == []
    assert resting_ids(rig.engine, SYM) == {cid("sl"), cid("tp1")}
    # a second recover changes nothing
    again = await rig.broker.recover()
    assert again.fills == []
    assert again.orders == []


async def test_remaining_of_a_loaded_partial_before_recover() -> None:
    broker = make_rig(spec=replace(SPEC, tp1_fraction=0.5)).broker
    opened = pending_record(status="open", entry_time_ms=T0, legs_done=1)
    broker.load([opened, replace(opened, position_id="x", status="closed")])
    assert broker.open_count() == 1
    assert broker.remaining(opened) == 0.5


# ---- venue refusals and surprises ------------------------------------------------------------


def _no_market_at_entry() -> Rig:
    o, h, lo = flat()
    times = [T0 + i * STEP for i in range(FLAT)]
    times[SIG + 1 :] = [t + STEP for t in times[SIG + 1 :]]  # no bar SIG+1: no market
    return make_rig(frame(o, h, lo, times))


@pytest.mark.parametrize(
    ("venue", "req", "sent_qty"),
    [
        pytest.param(
            lambda: make_rig(rules=replace(RULES, min_qty=0.01, tick_size=0.01)),
            request(qty=0.0099),
            0.009,  # rounded down to the step, then below the minimum: never sent
            id="below-min-qty",
        ),
        pytest.param(_no_market_at_entry, request(), 1.0, id="refused-by-the-venue"),
        pytest.param(make_rig, replace(request(), symbol="DOGEUSDT"), 1.0, id="unknown-symbol"),
    ],
)
async def test_rejected_entry_cancels_the_position(
    venue: Callable[[], Rig], req: EntryRequest, sent_qty: float
) -> None:
    rig = venue()
    with capture_logs() as logs:
        upd = await rig.broker.submit(req)
    assert [(o.kind, o.status, o.quantity) for o in upd.orders] == [("entry", "rejected", sent_qty)]
    assert [p.status for p in upd.positions] == [CANCELLED]
    assert "order_rejected" in events(logs)
    assert rig.engine.fills == []
    assert rig.broker.open_count() == 0


async def test_submit_checks_quantity() -> None:
    with pytest.raises(DataError, match="quantity must be > 0"):
        await make_rig().broker.submit(request(qty=0.0))


async def test_external_cancel_closes_at_market() -> None:
    rig = make_rig()
    book = Book()
    book.add(await rig.broker.submit(request(horizon=5)))
    rig.engine.cancel_algo(cid("sl"), ENTRY_MS + 60_000)  # by hand, on the venue
    with capture_logs() as logs:
        book.add(await rig.close_bar(SIG + 1))
    assert "protective_order_lost" in events(logs)
    (pos,) = book.positions.values()
    assert (pos.status, pos.reason, pos.exit_price) == ("closed", "SL", 100.0)
    assert book.orders[cid("close")].status == "filled"
    rig.assert_flat()


async def test_rejected_protective_order_closes_at_market() -> None:
    rig = make_rig()
    with capture_logs() as logs:  # a short's TP at a negative price: refused by the venue
        upd = await rig.broker.submit(request(side=-1, tp1=150.0, tp2=160.0))
    assert "protective_order_rejected" in events(logs)
    assert upd.positions[-1].status == "closed"
    assert {o.kind: o.status for o in upd.orders}["tp1"] == "rejected"
    rig.assert_flat()


async def test_time_exit_refused_when_flattened_by_hand() -> None:
    rig = make_rig()
    await rig.broker.submit(request(horizon=1))
    by_hand = OrderRequest(SYM, "SELL", "MARKET", "by-hand", quantity=1.0)
    rig.engine.place(by_hand, ENTRY_MS + 1)
    with capture_logs() as logs:
        upd = await rig.close_bar(SIG + 1)
    assert "exit_rejected" in events(logs)
    assert upd.fills == []
    assert rig.broker.open_count() == 1  # loud, retried at the next bar
    with capture_logs() as logs:
        await rig.broker.recover()
    (warn,) = [e for e in logs if e["event"] == "position_mismatch"]
    assert (warn["symbol"], warn["qty"]) == (SYM, 0.0)


async def test_unmanaged_venue_position_is_only_reported() -> None:
    frames = {SYM: frame(*flat()), "ETHUSDT": frame(*flat())}
    engine = MatchingEngine(frames, STEP)
    clock = Clock()
    now = T0 + 3 * STEP
    clock.at_ms(now)
    engine.place(OrderRequest("ETHUSDT", "BUY", "MARKET", "by-hand", quantity=2.0), now)
    broker = broker_for(engine, clock, SPEC)
    with capture_logs() as logs:
        upd = await broker.recover()
    assert upd == BrokerUpdate()
    (warn,) = [e for e in logs if e["event"] == "unmanaged_position"]
    assert (warn["symbol"], warn["qty"], warn["log_level"]) == ("ETHUSDT", 2.0, "warning")
    assert engine.position("ETHUSDT").quantity == 2.0
    assert resting_ids(engine) == set()


async def test_sync_failure_is_logged_and_retried() -> None:
    rig = make_rig(at_ms=T0 + 4 * STEP)
    ghost = pending_record(symbol="DOGEUSDT", status="open", entry_time_ms=T0, legs_done=0)
    rig.broker.load([ghost])
    with capture_logs() as logs:
        upd = await rig.broker.on_bar("DOGEUSDT", *arrays(rig.df, 3))
    assert upd == BrokerUpdate()
    assert "position_sync_failed" in events(logs)
    assert rig.broker.open_count("DOGEUSDT") == 1


async def test_on_bar_without_bars_does_nothing() -> None:
    no_prices = np.empty(0, np.float64)
    upd = await make_rig().broker.on_bar(
        SYM, np.empty(0, np.int64), no_prices, no_prices, no_prices
    )
    assert upd == BrokerUpdate()


def test_close_pnl_is_the_sum_of_fills() -> None:
    df = frame(*flat())
    book, _engine = asyncio.run(drive(df, SPEC, request(horizon=2)))
    (pos,) = book.positions.values()
    assert pos.pnl is not None
    assert math.isclose(pos.pnl, sum(f.pnl for f in book.fills), abs_tol=1e-12)


async def test_protection_placed_before_a_crash_is_not_doubled() -> None:
    rig = make_rig()
    # the previous process placed the entry and the stop, then died before journaling
    enter_by_hand(rig.engine)
    stop = OrderRequest(SYM, "SELL", "STOP_MARKET", cid("sl"), stop_price=99.0, close_position=True)
    rig.engine.place_algo(stop, ENTRY_MS)
    upd = await rig.broker.submit(request(qty=1.0))
    assert upd.positions[-1].status == "open"
    assert resting_ids(rig.engine, SYM) == {cid("sl"), cid("tp1")}
    assert len(rig.engine.open_algo_orders(SYM)) == 1  # the stop was found, not placed again


async def test_entry_cancelled_or_resting_at_the_venue() -> None:
    """The entry id is known to the venue but not filled: resting -> wait, cancelled ->
    the position is cancelled."""
    rig = make_rig()
    limit = OrderRequest(SYM, "BUY", "LIMIT", cid("entry"), quantity=1.0, price=90.0)
    rig.engine.place(limit, ENTRY_MS)
    rig.broker.load([pending_record()])
    upd = await rig.broker.recover()
    assert [o.status for o in upd.orders] == ["open"]
    assert rig.broker.positions()[0].status == "pending"
    rig.engine.cancel(SYM, cid("entry"), ENTRY_MS + 1_000)
    with capture_logs() as logs:
        upd = await rig.close_bar(SIG)
    assert "entry_cancelled" in events(logs)
    assert [p.status for p in upd.positions] == [CANCELLED]
    assert rig.broker.open_count() == 0


async def test_pending_before_its_entry_bar_waits() -> None:
    rig = make_rig(at_ms=T0 + SIG * STEP + 60_000)  # the signal bar has not closed yet
    rig.broker.load([pending_record()])
    assert await rig.broker.recover() == BrokerUpdate()
    assert rig.broker.open_count() == 1
    assert rig.engine.fills == []


async def test_journal_legs_the_venue_does_not_know_are_reported() -> None:
    rig = make_rig()
    enter_by_hand(rig.engine)
    opened = pending_record(status="open", entry_time_ms=ENTRY_MS, entry_price=100.0, legs_done=1)
    rig.broker.load([opened])
    with capture_logs() as logs:
        await rig.broker.recover()
    assert "journal_legs_unmatched" in events(logs)


def test_is_a_broker() -> None:
    """The live loop's protocol (mypy checks the assignment; the loop reads ``spec``)."""
    broker: Broker = make_rig().broker
    assert broker.spec is SPEC


# ---- conditional (algo) orders -------------------------------------------------------------


async def test_stops_are_algo_orders_and_their_fill_is_booked() -> None:
    """The stop rests in the algo service (never in openOrders); when it triggers, the fill of
    the MARKET order it put in the matching engine closes the position at the stop."""
    df = frame([100.0] * 6, [100.2] * 6, [99.8, 99.8, 99.8, 99.8, 98.5, 99.8])  # bar 4 hits 99
    rig = make_rig(df)
    book = Book()
    book.add(await rig.broker.submit(request(horizon=5)))
    assert [o.client_order_id for o in rig.engine.open_orders(SYM)] == [cid("tp1")]
    (sl,) = rig.engine.open_algo_orders(SYM)
    assert (sl.client_algo_id, sl.order_type, sl.close_position, sl.trigger_price) == (
        cid("sl"), "STOP_MARKET", True, 99.0
    )  # fmt: skip
    for k in range(SIG + 1, 5):
        book.add(await rig.close_bar(k))
    (pos,) = book.positions.values()
    assert (pos.status, pos.reason, pos.exit_price, pos.exit_time_ms) == (
        "closed", "SL", 99.0, T0 + 4 * STEP
    )  # fmt: skip
    algo = rig.engine.get_algo(cid("sl"))
    assert algo is not None
    assert algo.algo_status == "FINISHED"
    assert book.orders[cid("sl")].status == "filled"
    rig.assert_flat()


async def test_a_manual_algo_order_is_reported_once_and_left_alone() -> None:
    """A take-profit placed by hand on the Algo Order API (another client id, a type ATRA never
    places): reported at the start and not again, never cancelled, never booked; one placed
    later on a symbol with a position is found by the next bar's read of its openOrders and
    openAlgoOrders."""
    rig = make_rig()
    await rig.broker.submit(request(horizon=5))
    manual = OrderRequest(SYM, "SELL", "TAKE_PROFIT_MARKET", "web_tp", quantity=0.5,
                          stop_price=150.0, reduce_only=True)  # fmt: skip
    rig.engine.place_algo(manual, ENTRY_MS + 1)
    held = rig.broker.positions()
    rig.restart().load(held)
    with capture_logs() as logs:
        await rig.broker.recover()
        await rig.close_bar(SIG + 1)
    seen = [e for e in logs if e["event"] == "foreign_order_seen"]
    assert [(e["client_order_id"], e["type"], e["algo"]) for e in seen] == [
        ("web_tp", "TAKE_PROFIT_MARKET", True)
    ]
    later = OrderRequest(SYM, "SELL", "STOP_MARKET", "web_sl", stop_price=50.0, close_position=True)
    rig.engine.place_algo(later, T0 + (SIG + 2) * STEP + 1)
    with capture_logs() as logs:
        await rig.close_bar(SIG + 2)
        await rig.close_bar(SIG + 2)  # the same bar again: no second scan, no second report
    seen = [e for e in logs if e["event"] == "foreign_order_seen"]
    assert [e["client_order_id"] for e in seen] == ["web_sl"]
    resting = {a.client_algo_id for a in rig.engine.open_algo_orders(SYM)}
    assert {"web_tp", "web_sl", cid("sl")} <= resting  # nothing of the manual orders touched
