"""The exchange broker over real HTTP: the signed order client (:class:`BinanceTrader`) against
the fake exchange's order endpoints on 127.0.0.1, with answers lost, 5xx and dropped
connections."""

from __future__ import annotations

import random
from collections.abc import Callable
from contextlib import AsyncExitStack

import numpy as np
import pandas as pd
import pytest
from structlog.testing import capture_logs

import helpers_venue
from atra.adapters.orders import OrderRequest, SymbolRules
from atra.adapters.trading.trader import BinanceTrader
from atra.core.exits.api import ExitSpec
from atra.core.exits.kernel import REASON_NAMES, STATUS_DONE, simulate_exit_nb
from atra.core.types import Market, Timeframe
from atra.errors import OrderRejected, TransientExchangeError
from atra.live.execution import ExchangeBroker
from atra.live.paper import BrokerUpdate, EntryRequest, client_order_id
from atra.sim.exchange import STATUS_DROPPED, FakeExchange, Faults
from atra.sim.order_desk import trailing_stop_json
from helpers_venue import T0, Clock, open_fake_and_client, random_path, seed_losing_request

TF = Timeframe.H1
STEP = TF.ms
SYM = "BTCUSDT"
KEY, SECRET = "test-key-123", "test-secret-xyz-987"
RUN = "http-run"
SIG = 2
clock = helpers_venue.clock  # the fixtures, shared
stack = helpers_venue.stack
RULES = SymbolRules(SYM, step_size=0.001, min_qty=0.001, tick_size=1e-9)


async def open_venue(
    stack: AsyncExitStack,
    clock: Clock,
    df: pd.DataFrame,
    faults: Faults,
    spec: ExitSpec,
    max_attempts: int | None = None,
) -> tuple[FakeExchange, BinanceTrader, ExchangeBroker]:
    """The fake exchange on 127.0.0.1, the signed order client on it, a broker over that."""
    fx, client = await open_fake_and_client(
        stack, Market.PERP, df, clock, key=KEY, secret=SECRET, rules=RULES, faults=faults,
        slippage_bps=spec.slippage_bps,
    )  # fmt: skip
    trader = BinanceTrader(client, api_key=KEY, api_secret=SECRET, max_attempts=max_attempts)
    broker = ExchangeBroker(trader, spec, strategy="s", run_id=RUN, timeframe=TF, clock=clock)
    return fx, trader, broker


async def run_trade(
    broker: ExchangeBroker,
    clock: Clock,
    df: pd.DataFrame,
    req: EntryRequest,
    *,
    calm: Callable[[], None] = lambda: None,
) -> BrokerUpdate:
    """Submit at the signal bar's close, then ``calm()`` and ``on_bar`` at every close."""
    out = BrokerUpdate()
    times = df["open_time"].to_numpy(np.int64)
    clock.at_ms(int(times[SIG]) + STEP)
    out.extend(await broker.submit(req))
    calm()
    for k in range(SIG + 1, len(df) - 1):
        clock.at_ms(int(times[k]) + STEP)
        cols = [df[c].to_numpy()[: k + 1] for c in ("open_time", "open", "high", "low")]
        out.extend(await broker.on_bar(SYM, *cols))
    return out


async def test_lost_entry_answer_over_http_keeps_kernel_parity(
    clock: Clock, stack: AsyncExitStack
) -> None:
    df = random_path(7, 14)
    spec = ExitSpec(tp1_fraction=0.5, move_to_be=True, slippage_bps=5.0)
    # request 0 is the rules (exchangeInfo), request 1 the entry POST: its answer is lost
    faults = Faults(lost=0.3, seed=seed_losing_request(1, 0.3))
    fx, _trader, broker = await open_venue(stack, clock, df, faults, spec)
    req = EntryRequest(SYM, 1, T0 + SIG * STEP, 1.0, 1.2, 0.8, 2.0, 8)

    def calm() -> None:
        fx.faults = Faults(seed=1)

    upd = await run_trade(broker, clock, df, req, calm=calm)
    entry_cid = client_order_id(RUN, SYM, T0 + SIG * STEP, "entry")
    assert (fx.requests[1].status, fx.requests[1].fault) == (STATUS_DROPPED, "lost")
    assert fx.requests[1].params["newClientOrderId"] == entry_cid
    assert [f.client_order_id for f in fx.engine.fills].count(entry_cid) == 1
    (pos,) = {p.position_id: p for p in upd.positions}.values()
    assert pos.status == "closed"
    o, h, lo = (df[c].to_numpy(np.float64) for c in ("open", "high", "low"))
    r = simulate_exit_nb(
        o, h, lo, SIG + 1, len(df), 1, 1.2, 0.8, 2.0, 8, *spec.kernel_args()
    )  # fmt: skip
    assert int(r[0]) == STATUS_DONE
    legs = [(int(r[3]), REASON_NAMES[int(r[5])])]
    if int(r[7]) >= 0:
        legs.append((int(r[7]), REASON_NAMES[int(r[9])]))
    got = [((f.time_ms - T0) // STEP, f.reason) for f in upd.fills if f.leg != "entry"]
    assert got == legs
    assert pos.ret_net == pytest.approx(float(r[12]), abs=1e-9)
    assert fx.engine.position(SYM).quantity == 0.0
    assert fx.engine.open_orders(SYM) == []


async def test_entry_the_client_gave_up_on_is_placed_once_more(
    clock: Clock, stack: AsyncExitStack
) -> None:
    """A client with one attempt: the entry POST is dropped before the venue sees it, the
    look-up finds nothing and the client gives up; the broker places it once more (same id)."""
    df = random_path(7, 14)
    faults = Faults(p_drop=0.3, seed=seed_losing_request(1, 0.3))
    fx, _trader, broker = await open_venue(stack, clock, df, faults, ExitSpec(), max_attempts=1)
    clock.at_ms(T0 + (SIG + 1) * STEP)
    with capture_logs() as logs:
        upd = await broker.submit(EntryRequest(SYM, 1, T0 + SIG * STEP, 1.0, 1.2, 0.8, 2.0, 8))
    entry_cid = client_order_id(RUN, SYM, T0 + SIG * STEP, "entry")
    assert (fx.requests[1].fault, fx.requests[1].params["newClientOrderId"]) == ("drop", entry_cid)
    (unknown,) = [e for e in logs if e["event"] == "order_outcome_unknown"]
    assert (unknown["client_order_id"], unknown["kind"]) == (entry_cid, "entry")
    assert [f.client_order_id for f in fx.engine.fills] == [entry_cid]
    assert [p.status for p in upd.positions] == ["open"]
    assert [f.leg for f in upd.fills] == ["entry"]


@pytest.mark.parametrize("seed", [1, 3, 4, 6, 8, 11])
async def test_flaky_venue_never_doubles_an_order(
    clock: Clock, stack: AsyncExitStack, seed: int
) -> None:
    """5xx, dropped connections and lost answers everywhere: every order exists at most once,
    every fill is booked once, and the venue ends flat with nothing resting."""
    df = random_path(100 + seed, 20)
    spec = ExitSpec(tp1_fraction=0.5, move_to_be=bool(seed % 2))
    faults = Faults(p_5xx=0.08, p_drop=0.08, lost=0.08, seed=seed)
    fx, trader, broker = await open_venue(stack, clock, df, faults, spec)
    req = EntryRequest(SYM, -1 if seed % 2 else 1, T0 + SIG * STEP, 1.0, 1.0, 0.7, 1.6, 6)
    upd = await run_trade(broker, clock, df, req)
    assert {rec.fault for rec in fx.requests} > {None}  # faults did happen
    cids = [f.client_order_id for f in fx.engine.fills]
    assert len(cids) == len(set(cids))
    keys = [(f.client_order_id, f.leg) for f in upd.fills]
    assert len(keys) == len(set(keys))
    final = {p.position_id: p for p in upd.positions}
    (pos,) = final.values()
    assert pos.status in ("closed", "cancelled")
    if pos.status == "closed":
        assert pos.pnl == pytest.approx(sum(f.pnl for f in upd.fills), abs=1e-9)
        booked = sum(f.quantity for f in upd.fills if f.leg != "entry")
        assert booked == pytest.approx(pos.quantity, abs=1e-9)
    fx.faults = Faults(seed=0)
    assert fx.engine.position(SYM).quantity == 0.0
    assert fx.engine.open_orders(SYM) == []
    assert broker.open_count() == 0
    with pytest.raises(OrderRejected):  # the client maps refusals to OrderRejected
        await trader.place_order(OrderRequest(SYM, "BUY", "MARKET", "x", quantity=-1.0))


async def test_entry_for_a_symbol_the_venue_does_not_list_is_cancelled(
    clock: Clock, stack: AsyncExitStack
) -> None:
    df = random_path(7, 14)
    fx, _trader, broker = await open_venue(stack, clock, df, Faults(), ExitSpec())
    req = EntryRequest("DOGEUSDT", 1, T0 + SIG * STEP, 1.0, 1.2, 0.8, 2.0, 8)
    await run_trade(broker, clock, df, req)
    assert fx.engine.fills == []
    assert broker.open_count() == 0


def kernel_legs(df: pd.DataFrame, spec: ExitSpec) -> tuple[list[tuple[int, str]], float]:
    """The exit kernel's legs ``(bar, reason)`` and net return for the entry at SIG + 1."""
    o, h, lo = (df[c].to_numpy(np.float64) for c in ("open", "high", "low"))
    r = simulate_exit_nb(
        o, h, lo, SIG + 1, len(df), 1, 1.2, 0.8, 2.0, 8, *spec.kernel_args()
    )  # fmt: skip
    assert int(r[0]) == STATUS_DONE
    legs = [(int(r[3]), REASON_NAMES[int(r[5])])]
    if int(r[7]) >= 0:
        legs.append((int(r[7]), REASON_NAMES[int(r[9])]))
    return legs, float(r[12])


@pytest.mark.parametrize("seed", [7, 21, 33])
async def test_documented_shapes_and_a_manual_trailing_stop_keep_kernel_parity(
    clock: Clock, stack: AsyncExitStack, seed: int
) -> None:
    """The fake answers in Binance's documented shapes (fixed decimals, cancel answers without
    avgPrice) and the account holds a TRAILING_STOP_MARKET placed by hand: the broker reports
    it once, never touches it, and books exactly the kernel's trade."""
    df = random_path(seed, 14)
    spec = ExitSpec(tp1_fraction=0.5, move_to_be=True, slippage_bps=5.0)
    fx, trader, broker = await open_venue(stack, clock, df, Faults(), spec)
    fx.orders.documented = True
    manual = trailing_stop_json(SYM, "web_manual_trail", 9_000_000_001, quantity="0.010")
    fx.orders.hold_manual_order(manual)
    clock.at_ms(T0 + (SIG + 1) * STEP)
    req = EntryRequest(SYM, 1, T0 + SIG * STEP, 1.0, 1.2, 0.8, 2.0, 8)
    with capture_logs() as logs:
        await broker.recover()  # what a live run does first
        upd = await run_trade(broker, clock, df, req)
        await broker.recover()  # seen again: reported once only
    (seen,) = [e for e in logs if e["event"] == "foreign_order_seen"]
    assert (seen["client_order_id"], seen["type"], seen["order_id"]) == (
        "web_manual_trail", "TRAILING_STOP_MARKET", 9_000_000_001,
    )  # fmt: skip
    (pos,) = {p.position_id: p for p in upd.positions}.values()
    assert pos.status == "closed"
    legs, ret_net = kernel_legs(df, spec)
    got = [((f.time_ms - T0) // STEP, f.reason) for f in upd.fills if f.leg != "entry"]
    assert got == legs
    assert pos.ret_net == pytest.approx(ret_net, abs=1e-9)
    assert fx.engine.position(SYM).quantity == 0.0
    (left,) = await trader.open_orders(SYM)  # the manual order rests untouched
    assert (left.client_order_id, left.status, left.foreign) == ("web_manual_trail", "NEW", True)
    touched = [r for r in fx.requests if "web_manual_trail" in r.params.values()]
    assert touched == []
    assert any(o.status == "cancelled" for o in upd.orders)  # cancel answers were read


async def test_an_unreadable_answer_to_an_accepted_post_is_reconciled_not_resent(
    clock: Clock, stack: AsyncExitStack
) -> None:
    """HTTP 200 with JSON that is not an order: the venue has the order; the client looks it
    up by client id and never POSTs it again, not even when asked to place it once more."""
    df = random_path(7, 14)
    fx, trader, broker = await open_venue(stack, clock, df, Faults(), ExitSpec())
    fx.orders.documented = True
    fx.orders.unreadable_posts = 1
    clock.at_ms(T0 + (SIG + 1) * STEP)
    with capture_logs() as logs:
        upd = await broker.submit(EntryRequest(SYM, 1, T0 + SIG * STEP, 1.0, 1.2, 0.8, 2.0, 8))
    entry_cid = client_order_id(RUN, SYM, T0 + SIG * STEP, "entry")
    posts = [r for r in fx.requests if r.params.get("newClientOrderId") == entry_cid]
    assert len(posts) == 1
    (unreadable,) = [e for e in logs if e["event"] == "order_answer_unreadable"]
    assert unreadable["client_order_id"] == entry_cid
    assert [f.client_order_id for f in fx.engine.fills] == [entry_cid]
    assert [p.status for p in upd.positions] == ["open"]
    assert [f.leg for f in upd.fills] == ["entry"]
    again = await trader.place_order(OrderRequest(SYM, "BUY", "MARKET", entry_cid, quantity=1.0))
    assert (again.client_order_id, again.status) == (entry_cid, "FILLED")
    assert len([r for r in fx.requests if r.params.get("newClientOrderId") == entry_cid]) == 1


async def test_an_accepted_post_the_venue_never_reports_is_not_sent_twice(
    clock: Clock, stack: AsyncExitStack
) -> None:
    """The look-ups after an unreadable 200 keep failing: the call ends with a one-line
    TransientExchangeError saying so, and a second place_order only looks the order up."""
    df = random_path(7, 14)
    # request 0 (the POST) answers, requests 1-4 (two look-ups of two tries each) are 5xx
    seed = next(
        s
        for s in range(100_000)
        if [(r := random.Random(s)).random() < 0.5] + [r.random() < 0.5 for _ in range(4)]
        == [False, True, True, True, True]
    )
    faults = Faults(p_5xx=0.5, seed=seed)
    fx, trader, _broker = await open_venue(stack, clock, df, faults, ExitSpec(), max_attempts=2)
    fx.orders.unreadable_posts = 1
    clock.at_ms(T0 + (SIG + 1) * STEP)
    order = OrderRequest(SYM, "BUY", "MARKET", "cid-unreadable", quantity=1.0)
    with pytest.raises(TransientExchangeError, match="not sent again") as err:
        await trader.place_order(order)
    assert "\n" not in str(err.value)
    assert [r.fault for r in fx.requests] == [None, "5xx", "5xx", "5xx", "5xx"]
    fx.faults = Faults()
    st = await trader.place_order(order)  # a look-up only
    assert (st.client_order_id, st.status) == ("cid-unreadable", "FILLED")
    posts = [r for r in fx.requests if "newClientOrderId" in r.params]
    assert len(posts) == 1
    assert [f.client_order_id for f in fx.engine.fills] == ["cid-unreadable"]
