"""Conditional orders over real HTTP on 127.0.0.1: the fake exchange refuses them on
``POST /fapi/v1/order`` with Binance's -4120 and serves the Algo Order API (signed, weighted
and counted as documented, in the documented shapes), and the signed order client places,
looks up, cancels and lists them there, reconciling lost or unreadable answers without ever
sending a second order. A client that still used the old route gets a clear refusal, and the
broker closes the position instead of leaving it without a stop."""

from __future__ import annotations

import asyncio
import json
import time
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from structlog.testing import capture_logs

from atra.adapters.orders import (
    ALGO_ONLY_MSG,
    CONDITIONAL_TYPES,
    OrderRequest,
    OrderState,
    SymbolRules,
    signed_query,
)
from atra.adapters.trading.trader import BinanceTrader
from atra.core.exits.api import ExitSpec
from atra.core.types import Timeframe
from atra.errors import OrderRejected
from atra.live.execution import ExchangeBroker
from atra.live.paper import EntryRequest, client_order_id
from atra.sim.algo_desk import manual_algo_json
from atra.sim.exchange import FakeExchange, Faults
from helpers_trading import STEP, T0, perp_venue

KEY, SECRET = "algo-key-1", "algo-secret-Qe52"
RULES = {"BTCUSDT": SymbolRules("BTCUSDT", step_size=0.001, min_qty=0.001, tick_size=0.1)}
SHAPES = Path(__file__).resolve().parents[1] / "fixtures" / "binance" / "orders"


def _candles(n: int = 24) -> pd.DataFrame:
    """Flat at 40,000 but bar 8, whose low (39,400) reaches a stop at 39,500."""
    open_ = np.full(n, 40_000.0)
    low = np.full(n, 39_950.0)
    low[8] = 39_400.0
    return pd.DataFrame(
        {
            "open_time": T0 + np.arange(n, dtype=np.int64) * STEP,
            "open": open_,
            "high": open_ + 50.0,
            "low": low,
            "close": open_,
            "volume": np.ones(n),
        }
    )


class MarketClock:
    def __init__(self, bar: int) -> None:
        self.to(bar)

    def to(self, bar: int, offset_ms: int = 1_000) -> None:
        self.t_s = (T0 + bar * STEP + offset_ms) / 1000

    def __call__(self) -> float:
        return self.t_s


def venue(
    clock: MarketClock,
    *,
    faults: Faults | None = None,
    weight_limit: int = 2400,
    time_scale: float = 1.0,
    timeout_s: float = 2.0,
    max_attempts: int = 5,
) -> AbstractAsyncContextManager[tuple[FakeExchange, BinanceTrader]]:
    return perp_venue(
        _candles(),
        clock,
        key=KEY,
        secret=SECRET,
        rules=RULES,
        faults=faults,
        weight_limit=weight_limit,
        time_scale=time_scale,
        timeout_s=timeout_s,
        max_attempts=max_attempts,
    )


def algo_params(cid: str, trigger: str) -> dict[str, object]:
    """``POST /fapi/v1/algoOrder`` parameters of a close-position stop."""
    return {
        "algoType": "CONDITIONAL",
        "symbol": "BTCUSDT",
        "side": "SELL",
        "type": "STOP_MARKET",
        "clientAlgoId": cid,
        "triggerPrice": trigger,
        "closePosition": "true",
    }


def stop(cid: str = "s1", trigger: float = 39_500.0) -> OrderRequest:
    return OrderRequest(
        "BTCUSDT", "SELL", "STOP_MARKET", cid, stop_price=trigger, close_position=True
    )


def entry(cid: str = "e1", qty: float = 0.5) -> OrderRequest:
    return OrderRequest("BTCUSDT", "BUY", "MARKET", cid, quantity=qty)


async def raw(
    fake: FakeExchange, method: str, path: str, params: dict[str, object]
) -> httpx.Response:
    """One signed request as a third-party client would send it."""
    query = signed_query({**params, "timestamp": int(time.time() * 1000)}, SECRET)
    async with httpx.AsyncClient(base_url=fake.url, timeout=5.0) as http:
        return await http.request(method, f"{path}?{query}", headers={"X-MBX-APIKEY": KEY})


# ---- the venue -----------------------------------------------------------------------------


async def test_the_order_route_refuses_conditional_types_with_4120() -> None:
    documented = json.loads((SHAPES / "order_type_algo_only.json").read_text(encoding="utf-8"))
    async with venue(MarketClock(5)) as (fake, _):
        for type_ in sorted(CONDITIONAL_TYPES):
            params = {"symbol": "BTCUSDT", "side": "SELL", "type": type_, "quantity": "0.1",
                      "stopPrice": "39000", "newClientOrderId": f"old-{type_}"}  # fmt: skip
            r = await raw(fake, "POST", "/fapi/v1/order", params)
            assert (r.status_code, r.json()) == (400, documented), type_
        assert fake.engine.open_orders() == fake.engine.open_algo_orders() == []
        assert fake.engine.fills == []


async def test_the_algo_api_is_signed_weighted_and_counted_as_documented() -> None:
    async with venue(MarketClock(5)) as (fake, trader):
        await trader.place_order(entry())
        placed = await trader.place_order(stop())
        assert (placed.status, placed.algo_status, placed.conditional) == ("NEW", "NEW", True)
        assert await trader.get_order("BTCUSDT", "s1", conditional=True) == placed
        assert [o.client_order_id for o in await trader.open_conditional_orders()] == ["s1"]
        assert len(await trader.open_conditional_orders("BTCUSDT")) == 1
        post = next(r for r in fake.requests if r.path == "/fapi/v1/algoOrder")
        assert post.params | {"timestamp": "", "recvWindow": ""} == {
            "algoType": "CONDITIONAL",
            "symbol": "BTCUSDT",
            "side": "SELL",
            "type": "STOP_MARKET",
            "clientAlgoId": "s1",
            "triggerPrice": "39500",
            "workingType": "CONTRACT_PRICE",
            "closePosition": "true",
            "timestamp": "",
            "recvWindow": "",
        }
        weights = [(r.path, r.params.get("clientAlgoId", r.params.get("symbol")), r.weight)
                   for r in fake.requests if "lgo" in r.path]  # fmt: skip
        assert weights == [
            ("/fapi/v1/algoOrder", "s1", 0),  # New Algo Order: 0 on the IP weight
            ("/fapi/v1/algoOrder", "s1", 1),  # Query Algo Order
            ("/fapi/v1/openAlgoOrders", None, 40),  # every symbol
            ("/fapi/v1/openAlgoOrders", "BTCUSDT", 1),
        ]
        # a new algo order counts against the ORDERS limits like a new order
        r = await raw(fake, "POST", "/fapi/v1/algoOrder", algo_params("s2", "39000"))
        assert r.status_code == 200, r.text
        assert r.headers["X-MBX-ORDER-COUNT-10S"] == "3"  # e1, s1, s2
        unsigned = await raw(fake, "GET", "/fapi/v1/algoOrder", {"clientAlgoId": "s1"})
        assert unsigned.status_code == 200
        async with httpx.AsyncClient(base_url=fake.url) as http:
            bad = await http.get("/fapi/v1/algoOrder?clientAlgoId=s1&timestamp=1&signature=00",
                                 headers={"X-MBX-APIKEY": KEY})  # fmt: skip
        assert (bad.status_code, bad.json()["code"]) == (400, -1022)


async def test_documented_mode_answers_with_the_documented_algo_shapes() -> None:
    def keys(name: str) -> list[str]:
        example = json.loads((SHAPES / name).read_text(encoding="utf-8"))
        return list(example[0] if isinstance(example, list) else example)

    clock = MarketClock(5)
    async with venue(clock) as (fake, _):
        fake.orders.documented = True
        market = {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.5"}
        await raw(fake, "POST", "/fapi/v1/order", market)
        r = await raw(fake, "POST", "/fapi/v1/algoOrder", algo_params("s1", "39500"))
        assert list(r.json()) == keys("new_algo_order.json")
        r = await raw(fake, "GET", "/fapi/v1/algoOrder", {"clientAlgoId": "s1"})
        assert list(r.json()) == keys("query_algo_order.json")
        assert (r.json()["triggerPrice"], r.json()["actualOrderId"]) == ("39500.0", "")
        r = await raw(fake, "GET", "/fapi/v1/openAlgoOrders", {"symbol": "BTCUSDT"})
        assert [list(row) for row in r.json()] == [keys("open_algo_orders.json")]
        clock.to(9)  # bar 8 triggered it
        r = await raw(fake, "GET", "/fapi/v1/algoOrder", {"algoId": r.json()[0]["algoId"]})
        assert (r.json()["algoStatus"], r.json()["actualPrice"]) == ("FINISHED", "39500.00000")
        child = await raw(fake, "GET", "/fapi/v1/order",
                          {"symbol": "BTCUSDT", "orderId": r.json()["actualOrderId"]})  # fmt: skip
        assert (child.json()["type"], child.json()["status"]) == ("MARKET", "FILLED")
        r = await raw(fake, "POST", "/fapi/v1/algoOrder", algo_params("s2", "39000"))
        r = await raw(fake, "DELETE", "/fapi/v1/algoOrder", {"clientAlgoId": "s2"})
        assert list(r.json()) == keys("cancel_algo_order.json")
        assert r.json()["code"] == "200"


# ---- the order client ----------------------------------------------------------------------


async def test_a_triggered_stop_reads_as_the_fill_of_its_order() -> None:
    clock = MarketClock(5)
    async with venue(clock) as (fake, trader):
        await trader.place_order(entry())
        placed = await trader.place_order(stop())
        clock.to(9)
        done = await trader.get_order("BTCUSDT", "s1", conditional=True)
        assert done is not None
        assert (done.status, done.executed_qty, done.avg_price) == ("FILLED", 0.5, 39_500.0)
        assert (done.update_time_ms, done.algo_status) == (T0 + 8 * STEP, "FINISHED")
        assert done.order_id == placed.order_id  # the algoId; the fill's order is apart
        assert done.actual_order_id is not None
        assert done.actual_order_id != placed.order_id
        lookups = [r for r in fake.requests if r.path == "/fapi/v1/order" and "orderId" in r.params]
        assert [r.params["orderId"] for r in lookups] == [str(done.actual_order_id)]
        assert await trader.cancel_order("BTCUSDT", "s1", conditional=True) == done  # final
        assert await trader.cancel_order("BTCUSDT", "never", conditional=True) is None
        assert await trader.positions() == []


async def test_cancel_on_the_algo_api_then_its_state() -> None:
    async with venue(MarketClock(5)) as (fake, trader):
        await trader.place_order(entry())
        await trader.place_order(stop())
        cancelled = await trader.cancel_order("BTCUSDT", "s1", conditional=True)
        assert cancelled is not None
        assert (cancelled.status, cancelled.algo_status) == ("CANCELED", "CANCELED")
        deletes = [r for r in fake.requests if r.path == "/fapi/v1/algoOrder" and r.weight == 1]
        assert "symbol" not in deletes[0].params  # by clientAlgoId only, as documented
        assert await trader.open_conditional_orders() == []


async def test_an_unreadable_algo_answer_is_reconciled_not_resent() -> None:
    async with venue(MarketClock(5)) as (fake, trader):
        await trader.place_order(entry())
        fake.orders.unreadable_posts = 1
        with capture_logs() as logs:
            placed = await trader.place_order(stop())
        assert (placed.client_order_id, placed.algo_status) == ("s1", "NEW")
        assert [e["event"] for e in logs] == ["order_answer_unreadable"]
        assert sum(r.path == "/fapi/v1/algoOrder" and r.weight == 0 for r in fake.requests) == 1
        assert await trader.place_order(stop()) == placed  # never sent again, only looked up
        assert sum(r.path == "/fapi/v1/algoOrder" and r.weight == 0 for r in fake.requests) == 1


@pytest.mark.parametrize("seed", [5, 2027])
async def test_lost_algo_answers_never_double_a_stop(seed: int) -> None:
    faults = Faults(lost=0.3, p_drop=0.05, p_5xx=0.05, p_timeout=0.03, hang_s=0.4, seed=seed)
    async with venue(
        MarketClock(5), faults=faults, weight_limit=600, time_scale=60.0, timeout_s=0.15,
        max_attempts=12,
    ) as (fake, trader):  # fmt: skip
        cids = [f"run1-BTCUSDT-sl-{i:03d}" for i in range(30)]
        triggers = [30_000.0 + 10.0 * i for i in range(30)]  # below the market: they rest
        placed = await asyncio.gather(
            *(trader.place_order(stop(c, p)) for c, p in zip(cids, triggers, strict=True))
        )
        assert [o.client_order_id for o in placed] == cids
        resting = fake.engine.open_algo_orders()
        assert sorted(a.client_algo_id for a in resting) == cids  # each exactly once
        by_cid = {a.client_algo_id: a.algo_id for a in resting}
        assert all(by_cid[o.client_order_id] == o.order_id for o in placed)
        assert {r.fault for r in fake.requests if r.path == "/fapi/v1/algoOrder"} >= {"lost"}


async def test_the_old_route_is_a_clear_refusal() -> None:
    async with venue(MarketClock(5)) as (fake, trader):
        with pytest.raises(OrderRejected) as refused:
            await trader.place_regular(stop())
        assert str(refused.value) == f"BTCUSDT STOP_MARKET s1: Binance error -4120: {ALGO_ONLY_MSG}"
        assert fake.engine.open_algo_orders() == []


# ---- the broker ----------------------------------------------------------------------------


class OldRoute:
    """The order API of a client that still sends conditional orders to ``/fapi/v1/order``
    (before 2025-12-09): everything else is the real client's."""

    def __init__(self, trader: BinanceTrader) -> None:
        self.trader = trader

    async def place_order(self, order: OrderRequest) -> OrderState:
        return await self.trader.place_regular(order)

    def __getattr__(self, name: str) -> object:
        return getattr(self.trader, name)


async def test_a_refused_stop_is_reported_and_the_position_closed_not_left_unprotected() -> None:
    clock = MarketClock(5)
    async with venue(clock) as (fake, trader):
        broker = ExchangeBroker(
            OldRoute(trader),  # type: ignore[arg-type]
            ExitSpec(),
            strategy="s1",
            run_id="r1",
            timeframe=Timeframe.H1,
            clock=clock,
        )
        req = EntryRequest("BTCUSDT", 1, T0 + 4 * STEP, 0.5, 500.0, 300.0, 600.0, 6)
        with capture_logs() as logs:
            upd = await broker.submit(req)
        (refusal,) = [e for e in logs if e["event"] == "protective_order_rejected"]
        assert refusal["kind"] == "sl"
        assert f"Binance error -4120: {ALGO_ONLY_MSG}" in refusal["error"]
        assert refusal["log_level"] == "error"
        sl = client_order_id("r1", "BTCUSDT", T0 + 4 * STEP, "sl")
        assert [(o.kind, o.status) for o in upd.orders if o.client_order_id == sl] == [
            ("sl", "rejected")
        ]
        (pos,) = [p for p in upd.positions if p.status == "closed"]
        assert (pos.reason, pos.exit_price) == ("SL", 40_000.0)  # closed at market at once
        assert await trader.positions() == []
        assert fake.engine.open_orders() == []  # nothing left resting without its stop


async def test_a_manual_algo_order_is_reported_and_never_touched() -> None:
    clock = MarketClock(5)
    async with venue(clock) as (fake, trader):
        fake.orders.documented = True
        fake.orders.hold_manual_algo_order(manual_algo_json("BTCUSDT", "web_tp", 9_000_000_002))
        broker = ExchangeBroker(
            trader, ExitSpec(), strategy="s1", run_id="r1", timeframe=Timeframe.H1, clock=clock
        )
        req = EntryRequest("BTCUSDT", 1, T0 + 4 * STEP, 0.5, 500.0, 300.0, 600.0, 6)
        await broker.submit(req)
        with capture_logs() as logs:
            await broker.recover()
        (seen,) = [e for e in logs if e["event"] == "foreign_order_seen"]
        assert (seen["client_order_id"], seen["type"]) == ("web_tp", "TAKE_PROFIT")
        assert seen["algo"] is True
        assert seen["order_id"] == 9_000_000_002
        listed = [o.client_order_id for o in await trader.open_conditional_orders("BTCUSDT")]
        ours = client_order_id("r1", "BTCUSDT", T0 + 4 * STEP, "sl")
        assert sorted(listed) == sorted(["web_tp", ours])
        touched = [r for r in fake.requests if "web_tp" in r.params.values()]
        assert touched == []
