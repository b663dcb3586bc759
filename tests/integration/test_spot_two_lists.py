"""Spot exits with a TP1 partial: two SELL OCO lists (A: TP1 + stop, B: TP2 + stop), B replaced
by B' (TP2 + break-even stop) once TP1 filled, both stops filled on one trade, the time barrier,
a restart at every step, all over real HTTP against the fake exchange's spot matching engine;
the trades are the exit kernel's."""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from structlog.testing import capture_logs

import helpers_venue
from atra.adapters.journal.records import PositionRecord
from atra.adapters.orders import SymbolRules
from atra.adapters.trading.spot_trader import SpotTrader
from atra.core.exits.api import ExitSpec
from atra.core.exits.kernel import REASON_NAMES, STATUS_DONE, simulate_exit_nb
from atra.core.types import Market, Timeframe
from atra.live.paper import BrokerUpdate, EntryRequest, client_order_id
from atra.live.spot_execution import SpotBroker
from atra.sim.exchange import FakeExchange
from atra.sim.spot_engine import SpotEngine
from helpers_venue import T0, Clock, open_fake_and_client, random_path

TF = Timeframe.H1
STEP = TF.ms
SYM = "BTCUSDT"
KEY, SECRET = "spot-key-2l", "spot-secret-2l-987"
RUN = "spot-2l"
SIG = 2
N = 20
clock = helpers_venue.clock  # the fixtures, shared
stack = helpers_venue.stack
RULES = SymbolRules(SYM, step_size=0.001, min_qty=0.001, tick_size=1e-9)
BE = ExitSpec(tp1_fraction=0.5, move_to_be=True, slippage_bps=5.0)
NO_BE = replace(BE, move_to_be=False)


def cid(kind: str) -> str:
    return client_order_id(RUN, SYM, T0 + SIG * STEP, kind)


async def open_venue(
    stack: AsyncExitStack, clock: Clock, df: pd.DataFrame, spec: ExitSpec,
    rules: SymbolRules = RULES,
) -> tuple[FakeExchange, SpotBroker]:  # fmt: skip
    fx, client = await open_fake_and_client(
        stack, Market.SPOT, df, clock, key=KEY, secret=SECRET, rules=rules, faults=None,
        slippage_bps=spec.slippage_bps,
    )  # fmt: skip
    return fx, broker_on(client_trader(client), spec, clock)


def client_trader(client: object) -> SpotTrader:
    return SpotTrader(client, api_key=KEY, api_secret=SECRET)  # type: ignore[arg-type]


def broker_on(trader: SpotTrader, spec: ExitSpec, clock: Clock) -> SpotBroker:
    return SpotBroker(
        trader, spec, strategy="s", run_id=RUN, timeframe=TF, clock=clock, symbols=(SYM,)
    )


async def step_bars(
    broker: SpotBroker, clock: Clock, df: pd.DataFrame, first: int, last: int
) -> BrokerUpdate:
    """``on_bar`` at the close of bars ``first .. last - 1``."""
    out = BrokerUpdate()
    times = df["open_time"].to_numpy(np.int64)
    for k in range(first, last):
        clock.at_ms(int(times[k]) + STEP)
        cols = [df[c].to_numpy()[: k + 1] for c in ("open_time", "open", "high", "low")]
        out.extend(await broker.on_bar(SYM, *cols))
    return out


async def enter(broker: SpotBroker, clock: Clock, req: EntryRequest) -> BrokerUpdate:
    clock.at_ms(T0 + (SIG + 1) * STEP)
    return await broker.submit(req)


def kernel(df: pd.DataFrame, req: EntryRequest, spec: ExitSpec) -> tuple[list[tuple[int, str]],
                                                                          float]:  # fmt: skip
    """The kernel's exit legs ``(bar, reason)`` and net return for ``req``."""
    o, h, lo = (df[c].to_numpy(np.float64) for c in ("open", "high", "low"))
    r = simulate_exit_nb(
        o, h, lo, SIG + 1, len(df), 1, req.sl_dist, req.tp1_dist, req.tp2_dist,
        req.horizon_bars, *spec.kernel_args(),
    )  # fmt: skip
    assert int(r[0]) == STATUS_DONE
    legs = [(int(r[3]), REASON_NAMES[int(r[5])])]
    if int(r[9]) != 0:
        legs.append((int(r[7]), REASON_NAMES[int(r[9])]))
    return legs, float(r[12])


def exit_legs(upd: BrokerUpdate) -> list[tuple[int, str]]:
    """The booked exit fills ``(bar, reason)``, the two stops of one trade as one leg."""
    got = [((f.time_ms - T0) // STEP, f.reason) for f in upd.fills if f.leg != "entry"]
    return list(dict.fromkeys(got))


def last_position(upd: BrokerUpdate) -> PositionRecord:
    (pos,) = {p.position_id: p for p in upd.positions}.values()
    return pos


def assert_flat(engine: SpotEngine) -> None:
    """Nothing held, nothing resting: every list ended, nothing sold twice (a sale beyond
    the holding would have been refused for balance, a holding left shows here)."""
    assert engine.free.get("BTC", 0.0) == pytest.approx(0.0, abs=1e-12)
    assert engine.locked.get("BTC", 0.0) == pytest.approx(0.0, abs=1e-12)
    assert engine.open_orders(SYM) == []
    assert all(s.status == "ALL_DONE" for s in engine.lists.values())


# ---- the kernel's trades -------------------------------------------------------------------

CASES = [
    # seed, sl, tp1, tp2, horizon, spec, the kernel's legs (bar, reason)
    (0, 1.2, 0.8, 2.0, 10, BE, [(6, "TP1"), (7, "TP2")]),
    (0, 2.0, 0.6, 1.2, 10, BE, [(4, "TP1"), (5, "BE")]),
    (5, 2.0, 0.6, 1.2, 10, BE, [(4, "TP1"), (4, "TP2")]),
    (9, 1.0, 0.5, 3.0, 6, BE, [(3, "TP1"), (9, "TIME")]),
    (1, 1.2, 0.8, 2.0, 10, BE, [(3, "SL")]),
    (4, 1.2, 0.8, 2.0, 10, NO_BE, [(4, "TP1"), (6, "SL")]),
    (0, 1.0, 0.5, 3.0, 6, NO_BE, [(4, "TP1"), (9, "TIME")]),
    (3, 5.0, 5.0, 8.0, 4, BE, [(7, "TIME")]),
]


@pytest.mark.parametrize(("seed", "sl", "tp1", "tp2", "horizon", "spec", "legs"), CASES)
async def test_two_lists_give_the_kernels_trade(
    clock: Clock, stack: AsyncExitStack, seed: int, sl: float, tp1: float, tp2: float,
    horizon: int, spec: ExitSpec, legs: list[tuple[int, str]],
) -> None:  # fmt: skip
    df = random_path(seed, N)
    fx, broker = await open_venue(stack, clock, df, spec)
    req = EntryRequest(SYM, 1, T0 + SIG * STEP, 1.0, sl, tp1, tp2, horizon)
    upd = await enter(broker, clock, req)
    engine = fx.spot_orders.engine
    assert [(s.cid, s.legs[0].qty) for s in engine.lists.values()] == [
        (cid("oco"), 0.5), (cid("oco2"), 0.5)
    ]  # fmt: skip
    upd.extend(await step_bars(broker, clock, df, SIG + 1, N - 1))
    want, ret = kernel(df, req, spec)
    assert want == legs  # the case this parameter stands for
    assert exit_legs(upd) == legs
    pos = last_position(upd)
    assert (pos.status, pos.reason) == ("closed", legs[-1][1])
    assert pos.ret_net == pytest.approx(ret, abs=1e-9)
    assert_flat(engine)
    sold = sum(f.quantity for f in upd.fills if f.leg != "entry")
    assert sold == pytest.approx(1.0, abs=1e-12)


async def test_tp1_fill_replaces_b_with_a_break_even_list(
    clock: Clock, stack: AsyncExitStack
) -> None:
    df = random_path(0, N)  # TP1 at bar 6, TP2 at bar 7
    fx, broker = await open_venue(stack, clock, df, BE)
    req = EntryRequest(SYM, 1, T0 + SIG * STEP, 1.0, 1.2, 0.8, 2.0, 10)
    upd = await enter(broker, clock, req)
    entry = last_position(upd).entry_price
    assert entry is not None
    engine = fx.spot_orders.engine
    upd.extend(await step_bars(broker, clock, df, SIG + 1, 6))
    assert set(engine.lists) == {cid("oco"), cid("oco2")}  # TP1 not filled yet
    with capture_logs() as logs:
        upd.extend(await step_bars(broker, clock, df, 6, 7))  # the close of the TP1 bar
    a, b, b2 = (engine.lists[cid(k)] for k in ("oco", "oco2", "ocobe"))
    assert [leg.status for leg in a.legs] == ["FILLED", "EXPIRED"]
    assert [leg.status for leg in b.legs] == ["CANCELED", "CANCELED"]
    assert b2.status == "EXECUTING"
    take, stop = b2.legs
    assert (take.cid, stop.cid) == (cid("tp2be"), cid("be"))
    assert len({cid(k) for k in ("tp2", "sl2", "tp2be", "be", "oco2", "ocobe")}) == 6
    assert (take.price, take.qty, stop.qty) == (pytest.approx(entry + 2.0), 0.5, 0.5)
    assert stop.stop_price == pytest.approx(entry)  # the kernel's break-even level
    assert engine.locked["BTC"] == pytest.approx(0.5)  # what is left, locked once
    cancelled = [e for e in logs if e["event"] == "order_updated" and e["status"] == "cancelled"]
    trader = broker.spot
    assert isinstance(trader, SpotTrader)
    lists = {k: await trader.get_order_list(cid(k)) for k in ("oco", "oco2", "ocobe")}
    assert {k: v.list_order_status for k, v in lists.items() if v} == {
        "oco": "ALL_DONE", "oco2": "ALL_DONE", "ocobe": "EXECUTING"
    }  # fmt: skip
    assert lists["ocobe"] is not None
    assert lists["ocobe"].leg_client_ids == (cid("be"), cid("tp2be"))  # below leg first
    assert await trader.get_order_list(cid("nope")) is None
    # A's stop expired by the venue, B's two legs cancelled by the broker
    assert sorted(e["kind"] for e in cancelled) == ["sl", "sl2", "tp2"]
    upd.extend(await step_bars(broker, clock, df, 7, N - 1))
    assert exit_legs(upd) == [(6, "TP1"), (7, "TP2")]
    assert_flat(engine)


async def test_break_even_below_the_open_sells_at_once(clock: Clock, stack: AsyncExitStack) -> None:
    """The bar after TP1 opens below the entry: B' is refused (its stop would trigger at
    once) and the rest is sold at that open, the kernel's BE gap-through fill."""
    df = random_path(0, N)
    df.loc[5, "open"] = df.loc[4, "open"] * 0.95  # the bar after TP1 (bar 4) gaps down
    df.loc[5, "low"] = min(df.loc[5, "low"], df.loc[5, "open"])
    df.loc[5, "high"] = max(df.loc[5, "high"], df.loc[5, "open"])
    fx, broker = await open_venue(stack, clock, df, BE)
    req = EntryRequest(SYM, 1, T0 + SIG * STEP, 1.0, 2.0, 0.6, 1.2, 10)
    upd = await enter(broker, clock, req)
    with capture_logs() as logs:
        upd.extend(await step_bars(broker, clock, df, SIG + 1, N - 1))
    legs, ret = kernel(df, req, BE)
    assert legs == [(4, "TP1"), (5, "BE")]
    assert exit_legs(upd) == legs
    assert last_position(upd).ret_net == pytest.approx(ret, abs=1e-9)
    assert "stop_would_trigger" in [e["event"] for e in logs]
    assert cid("ocobe") not in fx.spot_orders.engine.lists
    assert fx.spot_orders.engine.orders[cid("be")].type == "MARKET"
    assert_flat(fx.spot_orders.engine)


async def test_a_stop_fills_both_lists_on_one_trade(clock: Clock, stack: AsyncExitStack) -> None:
    df = random_path(1, N)  # the stop at bar 3, before any take-profit
    fx, broker = await open_venue(stack, clock, df, BE)
    req = EntryRequest(SYM, 1, T0 + SIG * STEP, 1.0, 1.2, 0.8, 2.0, 10)
    upd = await enter(broker, clock, req)
    upd.extend(await step_bars(broker, clock, df, SIG + 1, N - 1))
    engine = fx.spot_orders.engine
    a, b = engine.lists[cid("oco")], engine.lists[cid("oco2")]
    assert [leg.status for leg in (*a.legs, *b.legs)] == ["EXPIRED", "FILLED"] * 2
    stops = [f for f in upd.fills if f.leg != "entry"]
    assert [(f.reason, f.quantity) for f in stops] == [("SL", 0.5), ("SL", 0.5)]
    assert stops[0].price == stops[1].price
    assert not any(o.type == "MARKET" and o.side == "SELL" for o in engine.orders.values())
    assert last_position(upd).reason == "SL"
    assert_flat(engine)


async def test_one_stop_filled_alone_ends_the_other_list(
    clock: Clock, stack: AsyncExitStack
) -> None:
    """The venue's triggers are not one transaction: A's stop filled, B still rests at the
    bar close. B is cancelled and the rest sold at market: sold once, nothing left."""
    df = random_path(0, N)
    fx, broker = await open_venue(stack, clock, df, BE)
    req = EntryRequest(SYM, 1, T0 + SIG * STEP, 1.0, 1.2, 0.8, 2.0, 10)
    upd = await enter(broker, clock, req)
    engine = fx.spot_orders.engine
    a_stop = engine.orders[cid("sl")]
    price = float(df["open"].iloc[SIG + 1]) * 0.99
    engine._fill(a_stop, price, T0 + (SIG + 1) * STEP)  # the venue fills A's stop only
    with capture_logs() as logs:
        upd.extend(await step_bars(broker, clock, df, SIG + 1, SIG + 2))
    assert "stop_filled_rest_held" in [e["event"] for e in logs]
    assert [leg.status for leg in engine.lists[cid("oco2")].legs] == ["CANCELED", "CANCELED"]
    exits = [(f.reason, f.quantity) for f in upd.fills if f.leg != "entry"]
    assert exits == [("SL", 0.5), ("SL", 0.5)]  # A's stop, then the rest at market (close)
    assert engine.orders[cid("close")].qty == 0.5
    assert last_position(upd).status == "closed"
    assert_flat(engine)


async def test_a_leg_ended_by_the_venue_sells_the_holding(
    clock: Clock, stack: AsyncExitStack
) -> None:
    """A's stop expired while its take-profit rests (what Binance does when the take-profit
    fills in part, or a leg cancelled by hand): never re-placed, every list is cancelled and
    the holding sold at market."""
    df = random_path(0, N)
    fx, broker = await open_venue(stack, clock, df, BE)
    req = EntryRequest(SYM, 1, T0 + SIG * STEP, 1.0, 1.2, 0.8, 2.0, 10)
    upd = await enter(broker, clock, req)
    engine = fx.spot_orders.engine
    engine._end(engine.orders[cid("sl")], "EXPIRED")  # the venue ends A's stop only
    with capture_logs() as logs:
        upd.extend(await step_bars(broker, clock, df, SIG + 1, SIG + 2))
    (lost,) = [e for e in logs if e["event"] == "protective_order_lost"]
    assert (lost["kind"], lost["status"]) == ("sl", "EXPIRED")
    assert engine.orders[cid("tp1")].status == "CANCELED"
    assert engine.lists[cid("oco2")].status == "ALL_DONE"
    sale = engine.orders[cid("close")]
    assert (sale.type, sale.qty) == ("MARKET", 1.0)
    assert exit_legs(upd) == [(SIG + 2, "SL")]
    assert cid("ocobe") not in engine.lists
    assert_flat(engine)


async def test_time_barrier_cancels_both_lists_and_sells(
    clock: Clock, stack: AsyncExitStack
) -> None:
    df = random_path(3, N)
    fx, broker = await open_venue(stack, clock, df, BE)
    req = EntryRequest(SYM, 1, T0 + SIG * STEP, 1.0, 5.0, 5.0, 8.0, 4)
    upd = await enter(broker, clock, req)
    upd.extend(await step_bars(broker, clock, df, SIG + 1, N - 1))
    engine = fx.spot_orders.engine
    for kind in ("oco", "oco2"):
        assert [leg.status for leg in engine.lists[cid(kind)].legs] == ["CANCELED", "CANCELED"]
    sale = engine.orders[cid("time")]
    assert (sale.type, sale.qty, sale.update_ms) == ("MARKET", 1.0, T0 + 7 * STEP)
    assert exit_legs(upd) == [(7, "TIME")]
    assert_flat(engine)


async def test_small_positions_fall_back_to_one_list(clock: Clock, stack: AsyncExitStack) -> None:
    df = random_path(0, N)
    rules = replace(RULES, min_qty=0.6)  # half of 1.0 is below the minimum quantity
    fx, broker = await open_venue(stack, clock, df, BE, rules)
    req = EntryRequest(SYM, 1, T0 + SIG * STEP, 1.0, 1.2, 0.8, 2.0, 10)
    with capture_logs() as logs:
        await enter(broker, clock, req)
        await step_bars(broker, clock, df, SIG + 1, SIG + 3)
    (listed,) = fx.spot_orders.engine.lists.values()
    assert (listed.cid, listed.legs[0].qty) == (cid("oco"), 1.0)
    (fallback,) = [e for e in logs if e["event"] == "tp_split_fallback"]
    assert "minimum quantity 0.6" in fallback["error"]


# ---- restarts ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seed", "sl", "tp1", "tp2", "horizon", "spec"),
    [(0, 1.2, 0.8, 2.0, 10, BE), (0, 2.0, 0.6, 1.2, 10, BE), (4, 1.2, 0.8, 2.0, 10, NO_BE)],
)
async def test_a_restart_at_any_bar_gives_the_same_trade(
    clock: Clock, stack: AsyncExitStack, seed: int, sl: float, tp1: float, tp2: float,
    horizon: int, spec: ExitSpec,
) -> None:  # fmt: skip
    """The process stops after the close of bar ``k - 1`` and restarts from the journal's
    records alone, in bar ``k`` (``down`` 0: the close of bar ``k - 1`` is run twice), in
    bar ``k + 1`` (the restart runs bar ``k``'s close) or three bars later: the venue's lists
    are found by their client ids, the fills booked once, B replaced if TP1 filled, nothing
    sold twice and nothing left; the trade is the kernel's but after a long downtime (the
    break-even move, the time barrier, ... then happen late)."""
    df = random_path(seed, N)
    req = EntryRequest(SYM, 1, T0 + SIG * STEP, 1.0, sl, tp1, tp2, horizon)
    want, ret = kernel(df, req, spec)
    for k in range(SIG + 1, want[-1][0] + 1):
        for down in (0, 1, 3):
            async with AsyncExitStack() as inner:
                fx, first = await open_venue(inner, clock, df, spec)
                upd = await enter(first, clock, req)
                upd.extend(await step_bars(first, clock, df, SIG + 1, k))
                records = {p.position_id: p for p in upd.positions}
                second = broker_on(first.spot, spec, clock)  # type: ignore[arg-type]
                second.load(records.values())
                clock.at_ms(int(df["open_time"].iloc[k + down]) + 1)
                upd.extend(await second.recover())
                upd.extend(await step_bars(second, clock, df, k + down, N - 1))
                assert last_position(upd).status == "closed"
                sold = [f.quantity for f in upd.fills if f.leg != "entry"]
                assert sum(sold) == pytest.approx(1.0, abs=1e-12), (k, down)
                assert_flat(fx.spot_orders.engine)
                if down <= 1:
                    assert exit_legs(upd) == want, (k, down)
                    assert last_position(upd).ret_net == pytest.approx(ret, abs=1e-9)


async def test_a_restart_between_the_cancel_of_b_and_b_prime(
    clock: Clock, stack: AsyncExitStack
) -> None:
    """The process died after cancelling B and before placing B' (the holding's rest had no
    stop): the restart finds B cancelled and TP1 filled, and places B'."""
    df = random_path(0, N)  # TP1 at bar 6
    fx, first = await open_venue(stack, clock, df, BE)
    req = EntryRequest(SYM, 1, T0 + SIG * STEP, 1.0, 1.2, 0.8, 2.0, 10)
    upd = await enter(first, clock, req)
    upd.extend(await step_bars(first, clock, df, SIG + 1, 6))
    clock.at_ms(T0 + 7 * STEP)
    assert await first.spot.cancel_order_list(SYM, cid("oco2")) is not None  # then it died
    second = broker_on(first.spot, BE, clock)  # type: ignore[arg-type]
    second.load({p.position_id: p for p in upd.positions}.values())
    upd.extend(await second.recover())
    engine = fx.spot_orders.engine
    assert engine.lists[cid("ocobe")].status == "EXECUTING"
    upd.extend(await step_bars(second, clock, df, 7, N - 1))
    assert exit_legs(upd) == [(6, "TP1"), (7, "TP2")]
    assert_flat(engine)
