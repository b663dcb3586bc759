"""Conditional orders on the matching engine and the in-process venue: the order route refuses
them (-4120, as Binance does since 2025-12-09), the algo service holds them, triggers them
exactly as the stops of the exit kernel, and reports the fill of the MARKET order each one
puts in the matching engine."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from atra.adapters.orders import (
    ALGO_ONLY_MSG,
    CONDITIONAL_TYPES,
    ERR_ALGO_ONLY,
    OrderRequest,
    OrderSide,
    VenuePosition,
)
from atra.errors import ExchangeError, OrderRejected
from atra.sim.book import Fill, VenueReject
from atra.sim.local_venue import LocalVenue
from atra.sim.venue import MatchingEngine

STEP = 3_600_000
T0 = 1_704_067_200_000
# bar:    0      1      2      3
OPEN = [100.0, 101.0, 99.0, 96.0]
HIGH = [102.0, 103.0, 100.0, 97.0]
LOW = [99.0, 98.0, 97.0, 94.0]


def engine() -> MatchingEngine:
    o = np.asarray(OPEN)
    frame = pd.DataFrame(
        {
            "open_time": T0 + STEP * np.arange(o.size, dtype=np.int64),
            "open": o,
            "high": np.asarray(HIGH),
            "low": np.asarray(LOW),
            "close": np.r_[o[1:], o[-1]],
            "volume": np.ones(o.size),
        }
    )
    return MatchingEngine({"X": frame}, STEP)


def at(bar: int, offset_ms: int = 7) -> int:
    return T0 + bar * STEP + offset_ms


def order(
    side: OrderSide, type_: str, cid: str, qty: float | None = None, **kw: object
) -> OrderRequest:
    return OrderRequest("X", side, type_, cid, quantity=qty, **kw)  # type: ignore[arg-type]


def stop(cid: str = "sl", trigger: float = 97.5, **kw: object) -> OrderRequest:
    return order("SELL", "STOP_MARKET", cid, stop_price=trigger, close_position=True, **kw)


# ---- the engine ----------------------------------------------------------------------------


@pytest.mark.parametrize("type_", sorted(CONDITIONAL_TYPES))
def test_the_order_route_refuses_every_conditional_type(type_: str) -> None:
    eng = engine()
    with pytest.raises(VenueReject) as info:
        eng.place(order("SELL", type_, "c", 1.0, stop_price=97.5), at(0))
    assert (info.value.status, info.value.code) == (400, ERR_ALGO_ONLY)
    assert info.value.msg == ALGO_ONLY_MSG
    assert ERR_ALGO_ONLY == -4120
    assert (eng.get("X", "c"), eng.get_algo("c")) == (None, None)
    assert (eng.open_orders(), eng.fills) == ([], [])


@pytest.mark.parametrize(
    "type_", ["MARKET", "LIMIT", "STOP", "TAKE_PROFIT", "TRAILING_STOP_MARKET"]
)
def test_the_algo_service_models_stop_and_take_profit_market_only(type_: str) -> None:
    eng = engine()
    with pytest.raises(VenueReject) as info:
        eng.place_algo(order("SELL", type_, "c", 1.0, price=97.0, stop_price=97.5), at(0))
    assert (info.value.code, info.value.msg) == (-1116, "Invalid orderType.")
    assert eng.get_algo("c") is None


def test_an_algo_stop_lives_in_the_algo_service_until_it_triggers() -> None:
    eng = engine()
    eng.place(order("BUY", "MARKET", "e", 2.0), at(0))  # long 2 at 100
    placed = eng.place_algo(stop(), at(0))
    assert (placed.algo_status, placed.client_algo_id, placed.trigger_price) == ("NEW", "sl", 97.5)
    assert (placed.actual_order_id, placed.create_time_ms) == (None, at(0))
    assert [a.client_algo_id for a in eng.open_algo_orders("X")] == ["sl"]
    assert eng.open_orders() == []  # not an order of the matching engine
    assert eng.get("X", "sl") is None
    eng.advance(at(2))  # bars 0 (low 99) and 1 (low 98) close: not reached
    assert eng.get_algo("sl").algo_status == "NEW"  # type: ignore[union-attr]
    eng.advance(at(3))  # bar 2: low 97 reaches 97.5 -> a MARKET order, filled at the stop
    algo = eng.get_algo("sl")
    assert algo is not None
    assert (algo.algo_status, algo.update_time_ms) == ("FINISHED", T0 + 2 * STEP)
    assert (algo.actual_qty, algo.actual_price) == (2.0, 97.5)
    child = eng.get_by_id("X", algo.actual_order_id or -1)
    assert child is not None
    assert (child.type, child.client_order_id, child.status) == ("MARKET", "sl", "FILLED")
    assert (child.executed_qty, child.avg_price, child.close_position) == (2.0, 97.5, True)
    assert eng.get("X", "sl") == child  # found by its client id on the order route too
    assert eng.fills[-1] == Fill("sl", T0 + 2 * STEP, 97.5, 2.0)
    assert eng.positions() == []
    assert eng.open_algo_orders() == []
    ids = [placed.algo_id, child.order_id, eng.get("X", "e").order_id]  # type: ignore[union-attr]
    assert len(set(ids)) == 3  # algo ids and order ids come from one counter


def test_algo_cancel_and_duplicate_rules() -> None:
    eng = engine()
    eng.place(order("BUY", "MARKET", "e", 1.0), at(0))
    eng.place_algo(stop(), at(0))
    for cid in ("nope", "e"):  # unknown to the algo service (an order id is not an algo id)
        with pytest.raises(VenueReject) as info:
            eng.cancel_algo(cid, at(0))
        assert (info.value.code, info.value.msg) == (-2011, "Unknown order sent.")
    with pytest.raises(VenueReject, match="2011"):  # an algo order is not on the order route
        eng.cancel("X", "sl", at(0))
    cancelled = eng.cancel_algo("sl", at(1, 5))
    assert (cancelled.algo_status, cancelled.update_time_ms) == ("CANCELED", at(1, 5))
    with pytest.raises(VenueReject, match="2011"):
        eng.cancel_algo("sl", at(1, 6))
    eng.advance(at(3))  # bar 2 would have triggered it
    assert eng.get_algo("sl").algo_status == "CANCELED"  # type: ignore[union-attr]
    assert eng.positions() == [VenuePosition("X", 1.0, 100.0)]
    limit = order("SELL", "LIMIT", "sl", 1.0, price=120.0)
    for place, request in (
        (eng.place_algo, stop()),
        (eng.place_algo, stop("e")),
        (eng.place, limit),
    ):
        with pytest.raises(VenueReject) as info:  # a client id is used once, on either route
            place(request, at(3))
        assert info.value.code == -4116


def test_a_close_position_stop_when_flat_finishes_expired() -> None:
    eng = engine()
    eng.place_algo(stop(), at(0))  # nothing to close
    eng.advance(at(3))
    algo = eng.get_algo("sl")
    assert algo is not None
    assert (algo.algo_status, algo.actual_qty) == ("FINISHED", 0.0)
    child = eng.get_by_id("X", algo.actual_order_id or -1)
    assert child is not None
    assert child.status == "EXPIRED"
    assert eng.fills == []


def test_algo_would_trigger_and_trigger_price_checks() -> None:
    eng = engine()
    eng.place(order("BUY", "MARKET", "e", 1.0), at(1))  # bar 1 opens at 101
    with pytest.raises(VenueReject) as info:
        eng.place_algo(stop(trigger=101.5), at(1))
    assert (info.value.code, info.value.msg) == (-2021, "Order would immediately trigger.")
    with pytest.raises(VenueReject, match="'triggerPrice' was not sent"):
        eng.place_algo(order("SELL", "STOP_MARKET", "x", close_position=True), at(1))


# ---- the in-process venue ----------------------------------------------------------------


class Clock:
    def __init__(self, t_ms: int) -> None:
        self.t_s = t_ms / 1000

    def __call__(self) -> float:
        return self.t_s

    def to(self, t_ms: int) -> None:
        self.t_s = t_ms / 1000


async def test_local_venue_routes_conditional_orders_to_the_algo_service() -> None:
    eng = engine()
    clock = Clock(at(0))
    venue = LocalVenue(eng, clock)
    await venue.place_order(order("BUY", "MARKET", "e", 2.0))
    placed = await venue.place_order(stop())
    assert (placed.status, placed.algo_status, placed.conditional) == ("NEW", "NEW", True)
    assert (placed.type, placed.stop_price, placed.close_position) == ("STOP_MARKET", 97.5, True)
    assert await venue.place_order(stop()) == placed  # a known client id: no second order
    assert len(eng.open_algo_orders()) == 1
    assert await venue.get_order("X", "sl") is None  # not on the order route
    assert await venue.get_order("X", "sl", conditional=True) == placed
    assert await venue.get_order("X", "nope", conditional=True) is None
    assert [o.client_order_id for o in await venue.open_conditional_orders()] == ["sl"]
    assert await venue.open_orders() == []
    with pytest.raises(ExchangeError, match="algo order sl is on X, not Y"):
        await venue.get_order("Y", "sl", conditional=True)
    clock.to(at(3))  # bar 2 triggered it: the state is the fill of its MARKET order
    done = await venue.get_order("X", "sl", conditional=True)
    assert done is not None
    assert (done.status, done.executed_qty, done.avg_price) == ("FILLED", 2.0, 97.5)
    assert (done.update_time_ms, done.algo_status) == (T0 + 2 * STEP, "FINISHED")
    assert done.order_id == placed.order_id  # the algoId
    assert done.actual_order_id is not None
    assert await venue.cancel_order("X", "sl", conditional=True) == done  # final: its state
    assert await venue.open_conditional_orders("X") == []


async def test_local_venue_cancels_and_refuses_like_the_venue() -> None:
    eng = engine()
    clock = Clock(at(1))
    venue = LocalVenue(eng, clock)
    await venue.place_order(order("BUY", "MARKET", "e", 1.0))
    with pytest.raises(OrderRejected, match=r"^X STOP_MARKET w: Binance error -2021: "):
        await venue.place_order(stop("w", trigger=101.5))
    await venue.place_order(stop())
    cancelled = await venue.cancel_order("X", "sl", conditional=True)
    assert cancelled is not None
    assert (cancelled.status, cancelled.algo_status) == ("CANCELED", "CANCELED")
    assert cancelled.is_final
    assert await venue.cancel_order("X", "nope", conditional=True) is None
    with pytest.raises(OrderRejected, match="-1121"):
        await venue.open_conditional_orders("NOPE")
