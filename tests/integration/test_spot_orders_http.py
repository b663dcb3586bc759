"""Spot orders over real HTTP on 127.0.0.1: the signed spot client (:class:`SpotTrader`) and
the spot broker (:class:`SpotBroker`) against the fake exchange's spot matching engine (OCO
exits, answers lost or unreadable, a balance ATRA does not own)."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

import numpy as np
import pandas as pd
import pytest
from structlog.testing import capture_logs

import helpers_venue
from atra.adapters.orders import OrderRequest, SymbolRules
from atra.adapters.trading.spot_trader import SpotTrader
from atra.adapters.trading.spot_wire import OcoRequest
from atra.core.exits.api import ExitSpec
from atra.core.exits.kernel import REASON_NAMES, STATUS_DONE, simulate_exit_nb
from atra.core.types import Market, Timeframe
from atra.errors import OrderRejected
from atra.live.paper import BrokerUpdate, EntryRequest, client_order_id
from atra.live.spot_execution import SpotBroker
from atra.sim.exchange import STATUS_DROPPED, FakeExchange, Faults
from helpers_venue import T0, Clock, open_fake_and_client, random_path, seed_losing_request

TF = Timeframe.H1
STEP = TF.ms
SYM = "BTCUSDT"
KEY, SECRET = "spot-key-123", "spot-secret-xyz-987"
RUN = "spot-run"
SIG = 2
clock = helpers_venue.clock  # the fixtures, shared
stack = helpers_venue.stack
RULES = SymbolRules(SYM, step_size=0.001, min_qty=0.001, tick_size=1e-9)
SPEC = ExitSpec(tp1_fraction=1.0, move_to_be=False, slippage_bps=5.0)


async def open_venue(
    stack: AsyncExitStack,
    clock: Clock,
    df: pd.DataFrame,
    faults: Faults | None = None,
    spec: ExitSpec = SPEC,
) -> tuple[FakeExchange, SpotTrader, SpotBroker]:
    fx, client = await open_fake_and_client(
        stack, Market.SPOT, df, clock, key=KEY, secret=SECRET, rules=RULES, faults=faults,
        slippage_bps=spec.slippage_bps,
    )  # fmt: skip
    trader = SpotTrader(client, api_key=KEY, api_secret=SECRET)
    broker = SpotBroker(
        trader, spec, strategy="s", run_id=RUN, timeframe=TF, clock=clock, symbols=(SYM,)
    )
    return fx, trader, broker


async def run_trade(
    broker: SpotBroker, clock: Clock, df: pd.DataFrame, req: EntryRequest, calm: bool = False
) -> BrokerUpdate:
    """Submit at the signal bar's close, then ``on_bar`` at every close (faults off after the
    entry when ``calm``)."""
    out = BrokerUpdate()
    times = df["open_time"].to_numpy(np.int64)
    clock.at_ms(int(times[SIG]) + STEP)
    out.extend(await broker.submit(req))
    for k in range(SIG + 1, len(df) - 1):
        clock.at_ms(int(times[k]) + STEP)
        cols = [df[c].to_numpy()[: k + 1] for c in ("open_time", "open", "high", "low")]
        out.extend(await broker.on_bar(SYM, *cols))
    return out


def kernel_legs(df: pd.DataFrame, req: EntryRequest) -> tuple[list[tuple[int, str]], float]:
    o, h, lo = (df[c].to_numpy(np.float64) for c in ("open", "high", "low"))
    r = simulate_exit_nb(
        o, h, lo, SIG + 1, len(df), 1, req.sl_dist, req.tp1_dist, req.tp2_dist,
        req.horizon_bars, *SPEC.kernel_args(),
    )  # fmt: skip
    assert int(r[0]) == STATUS_DONE
    return [(int(r[3]), REASON_NAMES[int(r[5])])], float(r[12])


# ---- the client ------------------------------------------------------------------------


async def test_round_trip_market_buy_oco_and_cancel(clock: Clock, stack: AsyncExitStack) -> None:
    df = random_path(3, 12)
    fx, trader, _ = await open_venue(stack, clock, df)
    clock.at_ms(T0 + 3 * STEP + 1)
    rules = await trader.spot_rules(SYM)
    assert (rules.step_size, rules.min_qty, rules.min_notional) == (0.001, 0.001, 0.0)
    assert await trader.base_asset(SYM) == "BTC"
    buy = await trader.place_order(OrderRequest(SYM, "BUY", "MARKET", "b1", quantity=0.3))
    open3 = float(df["open"].iloc[3])
    assert (buy.status, buy.executed_qty) == ("FILLED", 0.3)
    assert buy.avg_price == pytest.approx(open3 * 1.0005, rel=1e-12)
    oco = OcoRequest(SYM, 0.3, open3 * 1.05, open3 * 0.95, "t1", "s1", "l1")
    take, stop = await trader.place_oco(oco)
    assert (take.type, take.status, take.price) == ("LIMIT", "NEW", pytest.approx(open3 * 1.05))
    assert (stop.type, stop.stop_price) == ("STOP_MARKET", pytest.approx(open3 * 0.95))
    assert sorted(o.client_order_id for o in await trader.open_orders(SYM)) == ["s1", "t1"]
    # the ORDERS count: the buy, then the OCO's two orders (as Binance counts an OCO)
    assert set(fx.limits.order_headers().values()) == {"3"}
    held = {b.asset: (b.balance, b.available) for b in await trader.balances()}
    assert held["BTC"] == (pytest.approx(0.3), pytest.approx(0.0))  # locked by the OCO
    # cancelling one leg ends the list: the other leg is cancelled too
    cancelled = await trader.cancel_order(SYM, "s1")
    assert cancelled is not None
    assert cancelled.status == "CANCELED"
    other = await trader.get_order(SYM, "t1")
    assert other is not None
    assert other.status == "CANCELED"
    assert await trader.cancel_order(SYM, "t1") == other  # -2011: its state
    assert await trader.cancel_order_list(SYM, "l1") is None
    held = {b.asset: b.available for b in await trader.balances()}
    assert held["BTC"] == pytest.approx(0.3)
    assert await trader.get_order(SYM, "nope") is None
    assert await trader.positions() == []
    assert await trader.open_conditional_orders() == []
    # an OCO whose stop is above the market is refused (-2010), as Binance does
    with pytest.raises(OrderRejected, match=r"-2010: Stop price would trigger immediately"):
        await trader.place_oco(OcoRequest(SYM, 0.3, open3 * 1.2, open3 * 1.1, "t2", "s2", "l2"))
    assert "l2" not in fx.spot_orders.engine.lists


async def test_an_oco_leg_filled_expires_the_other(clock: Clock, stack: AsyncExitStack) -> None:
    df = random_path(5, 30)
    _fx, trader, _ = await open_venue(stack, clock, df)
    clock.at_ms(T0 + 1)
    await trader.place_order(OrderRequest(SYM, "BUY", "MARKET", "b1", quantity=1.0))
    hi = float(df["high"].iloc[1:].max())
    open0 = float(df["open"].iloc[0])
    take_at = round(min(hi * 0.999, open0 * 1.5), 6)
    await trader.place_oco(OcoRequest(SYM, 1.0, take_at, open0 * 0.5, "t1", "s1", "l1"))
    clock.at_ms(T0 + 30 * STEP)
    take, stop = await trader.get_order(SYM, "t1"), await trader.get_order(SYM, "s1")
    assert take is not None
    assert stop is not None
    assert (take.status, stop.status) == ("FILLED", "EXPIRED")
    assert take.avg_price >= take_at  # a limit fills at its price or better
    held = {b.asset: b.balance for b in await trader.balances()}
    assert held.get("BTC", 0.0) == 0.0


async def test_an_unreadable_answer_is_looked_up_never_sent_again(
    clock: Clock, stack: AsyncExitStack
) -> None:
    df = random_path(3, 12)
    fx, trader, _ = await open_venue(stack, clock, df)
    clock.at_ms(T0 + 3 * STEP + 1)
    fx.spot_orders.unreadable_posts = 1
    buy = await trader.place_order(OrderRequest(SYM, "BUY", "MARKET", "b1", quantity=0.5))
    assert (buy.client_order_id, buy.status, buy.executed_qty) == ("b1", "FILLED", 0.5)
    again = await trader.place_order(OrderRequest(SYM, "BUY", "MARKET", "b1", quantity=0.5))
    assert again == buy  # remembered as accepted: looked up, not POSTed
    posts = [r for r in fx.requests if r.params.get("newClientOrderId") == "b1"]
    assert len(posts) == 1
    open3 = float(df["open"].iloc[3])
    fx.spot_orders.unreadable_posts = 1
    oco = OcoRequest(SYM, 0.5, open3 * 1.05, open3 * 0.95, "t1", "s1", "l1")
    take, stop = await trader.place_oco(oco)
    assert (take.client_order_id, stop.client_order_id) == ("t1", "s1")
    assert [r.params.get("listClientOrderId") for r in fx.requests].count("l1") == 1
    assert len(fx.spot_orders.engine.lists) == 1
    assert fx.spot_orders.engine.free.get("BTC", 0.0) == 0.0  # one lock, not two


@pytest.mark.parametrize("seed", [11, 2026])
async def test_lost_answers_never_double_an_order(
    clock: Clock, stack: AsyncExitStack, seed: int
) -> None:
    df = random_path(3, 12)
    faults = Faults(lost=0.3, p_drop=0.05, p_5xx=0.05, seed=seed)
    fx, trader, _ = await open_venue(stack, clock, df, faults)
    clock.at_ms(T0 + 3 * STEP + 1)
    cids = [f"{RUN}-{i:03d}" for i in range(30)]
    placed = await asyncio.gather(
        *(
            trader.place_order(OrderRequest(SYM, "BUY", "LIMIT", c, quantity=0.01, price=50.0 + i))
            for i, c in enumerate(cids)
        )
    )
    assert [o.client_order_id for o in placed] == cids
    resting = fx.spot_orders.engine.open_orders(SYM)
    assert sorted(o.cid for o in resting) == cids
    assert sorted(o.order_id for o in resting) == list(range(1, 31))  # no other order made
    posts = [r for r in fx.requests if "newClientOrderId" in r.params]
    # a POST the venue placed (answered, or its answer lost) is the last POST of its id: the
    # look-up finds the order; only a POST that never reached the matching engine (dropped,
    # 5xx) is sent again
    assert any(r.fault == "lost" for r in posts)
    for cid in cids:
        sent = [r for r in posts if r.params["newClientOrderId"] == cid]
        placed = [i for i, r in enumerate(sent) if r.fault == "lost" or r.status == 200]
        assert placed == [len(sent) - 1], cid


# ---- the broker --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seed", "sl", "tp", "horizon", "reason"),
    [(1, 1.2, 0.8, 8, "SL"), (7, 1.2, 0.8, 8, "SL"), (9, 1.2, 0.8, 8, "TP1"),
     (3, 5.0, 5.0, 4, "TIME")],
)  # fmt: skip
async def test_spot_trades_equal_the_exit_kernel(
    clock: Clock, stack: AsyncExitStack, seed: int, sl: float, tp: float, horizon: int,
    reason: str,
) -> None:  # fmt: skip
    """Entry, one OCO, then its take-profit, its stop or the time barrier: the kernel's
    bars, reasons and net return; the holding ends at zero, nothing rests."""
    df = random_path(seed, 16)
    fx, _trader, broker = await open_venue(stack, clock, df)
    req = EntryRequest(SYM, 1, T0 + SIG * STEP, 1.0, sl, tp, tp * 2, horizon)
    upd = await run_trade(broker, clock, df, req)
    legs, ret = kernel_legs(df, req)
    assert [r for _, r in legs] == [reason]  # the case this parameter stands for
    (pos,) = {p.position_id: p for p in upd.positions}.values()
    assert pos.status == "closed"
    got = [((f.time_ms - T0) // STEP, f.reason) for f in upd.fills if f.leg != "entry"]
    assert got == legs
    assert pos.ret_net == pytest.approx(ret, abs=1e-9)
    engine = fx.spot_orders.engine
    assert engine.free.get("BTC", 0.0) == pytest.approx(0.0, abs=1e-12)
    assert engine.open_orders(SYM) == []


async def test_lost_entry_answer_is_reconciled(clock: Clock, stack: AsyncExitStack) -> None:
    df = random_path(7, 14)
    # request 0 is exchangeInfo, request 1 the entry POST: its answer is lost
    faults = Faults(lost=0.3, seed=seed_losing_request(1, 0.3, n=2))
    fx, _trader, broker = await open_venue(stack, clock, df, faults)
    req = EntryRequest(SYM, 1, T0 + SIG * STEP, 1.0, 1.2, 0.8, 2.0, 8)
    clock.at_ms(T0 + (SIG + 1) * STEP)
    fx.faults = faults
    first = await broker.submit(req)
    fx.faults = Faults(seed=1)
    entry_cid = client_order_id(RUN, SYM, T0 + SIG * STEP, "entry")
    assert (fx.requests[1].status, fx.requests[1].fault) == (STATUS_DROPPED, "lost")
    assert fx.requests[1].params["newClientOrderId"] == entry_cid
    engine = fx.spot_orders.engine
    assert [o.cid for o in engine.orders.values()].count(entry_cid) == 1
    assert any(p.status == "open" for p in first.positions)
    assert engine.free["BTC"] == 0.0
    assert engine.locked["BTC"] == 1.0


async def test_a_foreign_balance_is_left_alone(clock: Clock, stack: AsyncExitStack) -> None:
    df = random_path(4, 16)
    fx, _trader, broker = await open_venue(stack, clock, df)
    engine = fx.spot_orders.engine
    engine.free["BTC"] = 2.5  # bought by hand before ATRA started: not ATRA's
    clock.at_ms(T0 + STEP)
    with capture_logs() as logs:
        await broker.recover()
    assert await broker.reconcile_balances() == {SYM: 2.5}
    (seen,) = [e for e in logs if e["event"] == "foreign_balance"]
    assert (seen["symbol"], seen["qty"]) == (SYM, 2.5)
    req = EntryRequest(SYM, 1, T0 + SIG * STEP, 1.0, 1.2, 0.8, 2.0, 8)
    clock.at_ms(T0 + (SIG + 1) * STEP)
    await broker.submit(req)
    (listed,) = engine.lists.values()
    assert listed.legs[0].qty == 1.0  # the OCO protects what ATRA bought, never more
    assert await broker.reconcile_balances() == {SYM: pytest.approx(2.5)}
    upd = await run_trade(broker, clock, df, req)
    assert [p.status for p in upd.positions][-1] == "closed"
    assert engine.free["BTC"] + engine.locked["BTC"] == pytest.approx(2.5, abs=1e-12)
    # a holding smaller than the journal's is a mismatch (logged, nothing sold)
    req2 = EntryRequest(SYM, 1, T0 + 11 * STEP, 1.0, 5.0, 5.0, 8.0, 3)
    clock.at_ms(T0 + 12 * STEP)
    await broker.submit(req2)
    engine.free["BTC"] -= 2.6  # the account lost more than the foreign part
    with capture_logs() as logs:
        assert await broker.reconcile_balances() == {}
    assert [e["event"] for e in logs] == ["position_mismatch"]


async def test_spot_is_long_only(clock: Clock, stack: AsyncExitStack) -> None:
    df = random_path(2, 12)
    fx, _trader, broker = await open_venue(stack, clock, df)
    clock.at_ms(T0 + (SIG + 1) * STEP)
    upd = await broker.submit(EntryRequest(SYM, -1, T0 + SIG * STEP, 1.0, 1.2, 0.8, 2.0, 8))
    assert [p.status for p in upd.positions][-1] == "cancelled"
    assert [o.status for o in upd.orders] == ["rejected"]
    assert fx.spot_orders.engine.orders == {}
