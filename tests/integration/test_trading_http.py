"""The signed order client over real HTTP on 127.0.0.1: against the fake exchange's order
endpoints (round trips, refusals, lost answers that never double an order, the weight limit)
and against a server of canned replies (the rarer answers of the request path)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest
from aiohttp import web

from atra.adapters.exchange.client import BinanceClient
from atra.adapters.orders import OrderRequest, SymbolRules, verify_signature
from atra.adapters.ratelimit import RateLimiter
from atra.adapters.trading.trader import BinanceTrader
from atra.core.types import Market
from atra.errors import ExchangeError, IPBanned, OrderRejected, TransientExchangeError
from atra.sim.exchange import FakeExchange, Faults
from helpers_http import local_server
from helpers_trading import STEP, T0, perp_venue, sine_candles

KEY, SECRET = "trader-key-1", "trader-secret-Zq81"
RULES = {"BTCUSDT": SymbolRules("BTCUSDT", step_size=0.001, min_qty=0.001, tick_size=0.1)}
NOW_S = (T0 + 5 * STEP) / 1000 + 1.0  # market time: inside bar 5


def venue(
    *,
    faults: Faults | None = None,
    secret: str = SECRET,
    key: str = KEY,
    weight_limit: int = 2400,
    time_scale: float = 1.0,
    timeout_s: float = 2.0,
    max_attempts: int = 5,
) -> AbstractAsyncContextManager[tuple[FakeExchange, BinanceTrader]]:
    """The fake exchange (taking ``KEY``/``SECRET``), a client signing with ``key``/``secret``."""
    return perp_venue(
        sine_candles(),
        lambda: NOW_S,
        key=KEY,
        secret=SECRET,
        rules=RULES,
        faults=faults,
        weight_limit=weight_limit,
        time_scale=time_scale,
        timeout_s=timeout_s,
        max_attempts=max_attempts,
        trader_key=key,
        trader_secret=secret,
    )


def _order(cid: str, side: str = "BUY", typ: str = "MARKET", **kw: object) -> OrderRequest:
    return OrderRequest("BTCUSDT", side, typ, cid, **kw)  # type: ignore[arg-type]


def _posts(fake: FakeExchange) -> list[dict[str, str]]:
    return [dict(r.params) for r in fake.requests if "newClientOrderId" in r.params]


# ---- against the fake exchange ----------------------------------------------------------


async def test_round_trip() -> None:
    async with venue() as (fake, trader):
        assert await trader.symbol_rules("BTCUSDT") == RULES["BTCUSDT"]
        entry = await trader.place_order(_order("e1", quantity=0.1 + 0.2))
        assert (entry.status, entry.side, entry.executed_qty) == ("FILLED", "BUY", 0.3)
        assert entry.avg_price == float(sine_candles()["open"].iloc[5])
        assert _posts(fake)[0]["quantity"] == "0.3"  # the step's decimals, no float noise
        tp = await trader.place_order(
            _order("t1", "SELL", "LIMIT", quantity=0.3, price=41_000.5, reduce_only=True)
        )
        stop = await trader.place_order(
            _order("s1", "SELL", "STOP_MARKET", stop_price=39_000.0, close_position=True)
        )
        assert (tp.status, tp.price, tp.reduce_only) == ("NEW", 41_000.5, True)
        assert (stop.stop_price, stop.close_position) == (39_000.0, True)
        assert (stop.status, stop.algo_status, stop.conditional) == ("NEW", "NEW", True)
        # the stop is an algo order: listed by openAlgoOrders, never by openOrders
        assert [o.client_order_id for o in await trader.open_orders("BTCUSDT")] == ["t1"]
        assert len(await trader.open_orders()) == 1
        listed = await trader.open_conditional_orders("BTCUSDT")
        assert [(o.client_order_id, o.type) for o in listed] == [("s1", "STOP_MARKET")]
        assert await trader.get_order("BTCUSDT", "s1") is None  # not on /fapi/v1/order
        assert await trader.get_order("BTCUSDT", "s1", conditional=True) == stop
        (pos,) = await trader.positions()
        assert (pos.symbol, pos.quantity) == ("BTCUSDT", 0.3)
        assert pos.entry_price == entry.avg_price
        got = await trader.get_order("BTCUSDT", "t1")
        assert got == tp
        assert await trader.get_order("BTCUSDT", "never-placed") is None
        cancelled = await trader.cancel_order("BTCUSDT", "t1")
        assert cancelled is not None
        assert (cancelled.status, cancelled.order_id) == ("CANCELED", tp.order_id)
        again = await trader.cancel_order("BTCUSDT", "t1")  # -2011 -> its final state
        assert again == cancelled
        filled = await trader.cancel_order("BTCUSDT", "e1")  # a FILLED order stays FILLED
        assert filled is not None
        assert filled.status == "FILLED"
        assert await trader.cancel_order("BTCUSDT", "never-placed") is None
        assert await trader.open_orders() == []
        assert [o.client_order_id for o in await trader.open_conditional_orders()] == ["s1"]
        same = await trader.place_order(_order("e1", quantity=0.3))  # -4116 -> the known order
        assert same.order_id == entry.order_id
        assert len(fake.engine.fills) == 1
        # every call was signed and authenticated; weights as Binance charges them
        paths = [(r.path, r.weight) for r in fake.requests]
        assert ("/fapi/v1/openOrders", 40) in paths
        assert ("/fapi/v1/openOrders", 1) in paths
        assert ("/fapi/v2/positionRisk", 5) in paths
        assert ("/fapi/v1/algoOrder", 0) in paths  # New Algo Order: 0 on the IP weight
        assert ("/fapi/v1/openAlgoOrders", 1) in paths
        assert ("/fapi/v1/openAlgoOrders", 40) in paths
        assert {r.status for r in fake.requests} == {200, 400}


async def test_refusals_name_the_order_and_code() -> None:
    async with venue() as (_, trader):
        with pytest.raises(OrderRejected, match=r"^BTCUSDT MARKET r1: Binance error -2022: "):
            await trader.place_order(_order("r1", "SELL", quantity=0.01, reduce_only=True))
        with pytest.raises(OrderRejected, match=r"BTCUSDT STOP_MARKET w1: Binance error -2021"):
            await trader.place_order(_order("w1", "SELL", "STOP_MARKET", stop_price=45_000.0,
                                            quantity=0.01))  # fmt: skip
        with pytest.raises(OrderRejected, match="-4003"):
            await trader.place_order(_order("q1", quantity=0.0005))
        with pytest.raises(OrderRejected, match="-1121"):  # as the in-process venue does
            await trader.open_orders("NOPEUSDT")
        with pytest.raises(OrderRejected, match="-1121"):
            await trader.cancel_order("NOPEUSDT", "x")
        with pytest.raises(OrderRejected, match="no symbol ETHUSDT"):
            await trader.symbol_rules("ETHUSDT")
        with pytest.raises(ExchangeError, match="-1121") as read:
            await trader.get_order("NOPEUSDT", "x")
        assert type(read.value) is ExchangeError


async def test_wrong_secret_is_named_but_never_shown() -> None:
    async with venue(secret="wrong-secret-Xy77") as (fake, trader):
        with pytest.raises(OrderRejected, match="-1022") as placed:
            await trader.place_order(_order("x1", quantity=0.01))
        with pytest.raises(ExchangeError, match="-1022") as read:
            await trader.positions()
        for err in (placed.value, read.value):
            text = str(err)
            assert "wrong-secret-Xy77" not in text
            assert SECRET not in text
            assert "signature" not in text
            assert "timestamp" not in text
            assert "\n" not in text
        assert fake.engine.open_orders() == []
    async with venue(key="some-other-key") as (_, trader):
        with pytest.raises(ExchangeError, match="-2015") as denied:
            await trader.get_order("BTCUSDT", "x1")
        assert "some-other-key" not in str(denied.value)


@pytest.mark.parametrize("seed", [11, 2026])
async def test_lost_answers_never_double_an_order(seed: int) -> None:
    faults = Faults(lost=0.3, p_drop=0.05, p_5xx=0.05, p_timeout=0.03, hang_s=0.4, seed=seed)
    async with venue(
        faults=faults, weight_limit=60, time_scale=60.0, timeout_s=0.15, max_attempts=12
    ) as (fake, trader):
        cids = [f"run1-BTCUSDT-{i:03d}" for i in range(50)]
        prices = [30_000.0 + 10.0 * i for i in range(50)]  # far below the market: they rest
        placed = await asyncio.gather(
            *(
                trader.place_order(_order(c, "BUY", "LIMIT", quantity=0.01, price=p))
                for c, p in zip(cids, prices, strict=True)
            )
        )
        assert [o.client_order_id for o in placed] == cids
        resting = fake.engine.open_orders()
        assert len(resting) == 50
        assert sorted(o.client_order_id for o in resting) == cids
        assert sorted(o.order_id for o in resting) == list(range(1, 51))  # no other order made
        by_cid = {o.client_order_id: o for o in resting}
        assert all(by_cid[o.client_order_id].order_id == o.order_id for o in placed)
        again = await trader.place_order(_order(cids[7], "BUY", "LIMIT", quantity=0.01,
                                                price=prices[7]))  # fmt: skip
        assert again.order_id == placed[7].order_id
        assert len(fake.engine.open_orders()) == 50
        assert len(await trader.open_orders()) == 50  # weight 40 of a budget of 54
        cancelled = await asyncio.gather(*(trader.cancel_order("BTCUSDT", c) for c in cids[:10]))
        assert [c.status if c else None for c in cancelled] == ["CANCELED"] * 10
        assert len(fake.engine.open_orders()) == 40
        # the faults did happen, on the POSTs too, and some POST was sent twice
        faults_seen = {r.fault for r in fake.requests if r.fault}
        assert {"lost", "drop", "5xx", "timeout"} <= faults_seen
        post_cids = [p["newClientOrderId"] for p in _posts(fake)]
        assert len(post_cids) > len(set(post_cids))
        assert any(r.fault == "lost" and "newClientOrderId" in r.params for r in fake.requests)
        # the weight limit was never reached: no 429, the server's count stayed below it
        assert fake.limits.weight_limit is not None
        assert all(r.status not in (418, 429) for r in fake.requests)
        assert max(r.used_weight for r in fake.requests) <= fake.limits.weight_limit
        assert sum(r.weight for r in fake.requests) > fake.limits.weight_limit  # it had to pace


# ---- against canned replies -------------------------------------------------------------


class Canned:
    """A real HTTP server answering each request (any method) with the next canned reply."""

    def __init__(self) -> None:
        self.replies: list[tuple[int, str, dict[str, str]]] = []
        self.seen: list[tuple[str, str, str]] = []
        self.url = ""

    def reply(self, status: int = 200, body: object = None, text: str | None = None,
              **headers: str) -> None:  # fmt: skip
        self.replies.append((status, text if text is not None else json.dumps(body), headers))

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(
            (request.method, request.query_string, request.headers.get("X-MBX-APIKEY", ""))
        )
        status, text, headers = self.replies.pop(0) if self.replies else (200, "[]", {})
        return web.Response(status=status, text=text, headers=headers)


@pytest.fixture
async def canned() -> AsyncIterator[Canned]:
    server = Canned()
    async with local_server(server.handle) as url:
        server.url = url
        yield server


@asynccontextmanager
async def trader_at(url: str, max_attempts: int = 3) -> AsyncIterator[BinanceTrader]:
    client = BinanceClient(
        Market.PERP,
        base_url=url,
        limiter=RateLimiter(2400, name="canned"),
        backoff_s=0.001,
        max_backoff_s=0.002,
        max_attempts=max_attempts,
    )
    async with client:
        yield BinanceTrader(
            client, api_key=KEY, api_secret=SECRET, wall_clock=lambda: 1_700_000_000.5
        )


ORDER = {
    "orderId": 7,
    "symbol": "BTCUSDT",
    "status": "NEW",
    "clientOrderId": "c1",
    "price": "30000",
    "avgPrice": "0",
    "origQty": "0.010",
    "executedQty": "0",
    "type": "LIMIT",
    "side": "BUY",
    "reduceOnly": False,
    "closePosition": False,
    "stopPrice": "0",
    "updateTime": 1,
}
LIMIT = _order("c1", "BUY", "LIMIT", quantity=0.01, price=30_000.0)


async def test_the_signed_query_is_sent_byte_for_byte(canned: Canned) -> None:
    canned.reply(body=ORDER)
    async with trader_at(canned.url) as trader:
        assert (await trader.place_order(LIMIT)).order_id == 7
    ((method, query, key),) = canned.seen
    assert (method, key) == ("POST", KEY)
    assert query.startswith("symbol=BTCUSDT&side=BUY&type=LIMIT&newClientOrderId=c1&quantity=0.01")
    assert "&timestamp=1700000000500&recvWindow=5000&signature=" in query
    assert verify_signature(query, SECRET)


async def test_duplicate_the_venue_does_not_know_is_rejected(canned: Canned) -> None:
    canned.reply(400, {"code": -4116, "msg": "ClientOrderId is duplicated."})
    canned.reply(400, {"code": -2013, "msg": "Order does not exist."})
    async with trader_at(canned.url) as trader:
        with pytest.raises(OrderRejected, match=r"^BTCUSDT LIMIT c1: Binance error -4116: "):
            await trader.place_order(LIMIT)
    assert [m for m, *_ in canned.seen] == ["POST", "GET"]


async def test_post_outcome_unknown_after_every_attempt(canned: Canned) -> None:
    canned.reply(503, text="busy")  # POST 1
    canned.reply(503, text="busy")  # lookup: GET 1
    canned.reply(200, text="<html>proxy</html>")  # lookup: GET 2 (garbled: transient)
    canned.reply(503, text="busy")  # POST 2
    canned.reply(400, {"code": -2013, "msg": "Order does not exist."})  # lookup: not there
    async with trader_at(canned.url, max_attempts=2) as trader:
        with pytest.raises(TransientExchangeError, match="outcome unknown after 2 attempts"):
            await trader.place_order(LIMIT)
    assert [m for m, *_ in canned.seen] == ["POST", "GET", "GET", "POST", "GET"]


async def test_post_lost_then_found_by_lookup(canned: Canned) -> None:
    canned.reply(502, text="bad gateway")
    canned.reply(body=ORDER)
    async with trader_at(canned.url) as trader:
        assert (await trader.place_order(LIMIT)).order_id == 7
    assert [m for m, *_ in canned.seen] == ["POST", "GET"]
    assert "origClientOrderId=c1" in canned.seen[1][1]


async def test_a_ban_is_never_retried(canned: Canned) -> None:
    canned.reply(418, {"code": -1003, "msg": "banned"}, **{"Retry-After": "30"})
    async with trader_at(canned.url) as trader:
        with pytest.raises(IPBanned):
            await trader.place_order(LIMIT)
        with pytest.raises(IPBanned):  # the limiter stops every request during the ban
            await trader.positions()
    assert len(canned.seen) == 1


async def test_reads_retry_and_give_up(canned: Canned) -> None:
    canned.reply(200, text="{trunc")
    canned.reply(body=[{"symbol": "BTCUSDT", "positionAmt": "0.5", "entryPrice": "1.5"}])
    for _ in range(3):
        canned.reply(500, text="oops")
    async with trader_at(canned.url) as trader:
        (pos,) = await trader.positions()
        assert (pos.quantity, pos.entry_price) == (0.5, 1.5)
        with pytest.raises(TransientExchangeError, match="gave up after 3 attempts"):
            await trader.open_orders()


@pytest.mark.parametrize(
    ("status", "text", "match"),
    [
        (400, "{}", "HTTP 400 without a Binance error code"),
        (400, "<html>no</html>", "HTTP 400 body is an HTML page"),
        (200, json.dumps({"orderId": 7}), "field symbol"),
    ],
)
async def test_unusable_answers(canned: Canned, status: int, text: str, match: str) -> None:
    canned.reply(status, text=text)
    async with trader_at(canned.url) as trader:
        with pytest.raises(ExchangeError, match=match) as err:
            await trader.cancel_order("BTCUSDT", "c1")
    assert str(err.value).startswith("binance perp DELETE /fapi/v1/order symbol=BTCUSDT")
    assert len(canned.seen) == 1


async def test_symbol_rules_name_the_missing_filter(canned: Canned) -> None:
    info = {
        "symbols": [
            {"symbol": "AUSDT", "filters": [{"filterType": "PRICE_FILTER", "tickSize": "0.1"}]},
            {"symbol": "BUSDT", "filters": [{"filterType": "LOT_SIZE", "stepSize": "1"}]},
            {
                "symbol": "CUSDT",
                "filters": [
                    {"filterType": "PRICE_FILTER", "tickSize": "0.01"},
                    {"filterType": "LOT_SIZE", "stepSize": "0.1", "minQty": "0.1"},
                ],
            },
        ]
    }
    for _ in range(3):
        canned.reply(body=info)
    async with trader_at(canned.url) as trader:
        with pytest.raises(ExchangeError, match="symbol AUSDT has no LOT_SIZE filter"):
            await trader.symbol_rules("AUSDT")
        with pytest.raises(ExchangeError, match="symbol BUSDT has no PRICE_FILTER filter"):
            await trader.symbol_rules("BUSDT")
        assert await trader.symbol_rules("CUSDT") == SymbolRules("CUSDT", 0.1, 0.1, 0.01)
        assert await trader.symbol_rules("CUSDT") == SymbolRules("CUSDT", 0.1, 0.1, 0.01)
    assert len(canned.seen) == 2  # cached after the first fetch that had it
