"""The fake exchange's signed order endpoints, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from atra.adapters.orders import SymbolRules, signed_query
from atra.core.types import Market, Timeframe
from atra.sim.exchange import STATUS_DROPPED, FakeExchange, Faults

HOUR = 3_600_000
T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
KEY = "test-key"
SECRET = "test-secret"


class MarketClock:
    """A settable market clock (seconds)."""

    def __init__(self, t_s: float) -> None:
        self.t_s = t_s

    def __call__(self) -> float:
        return self.t_s

    def to_bar(self, bar: int, offset_ms: int = 5) -> None:
        self.t_s = (T0 + bar * HOUR + offset_ms) / 1000


def bars() -> pd.DataFrame:
    o = np.array([100.0, 101.0, 99.0, 104.0, 103.0, 100.0])
    return pd.DataFrame(
        {
            "open_time": T0 + HOUR * np.arange(o.size, dtype=np.int64),
            "open": o,
            "high": o + 2.0,
            "low": o - 2.0,
            "close": np.roll(o, -1),
            "volume": np.ones(o.size),
        }
    )


class Client:
    """A minimal signed client: the exact query string goes on the URL."""

    def __init__(self, http: httpx.AsyncClient, key: str = KEY, secret: str = SECRET) -> None:
        self.http, self.key, self.secret = http, key, secret

    async def call(
        self,
        method: str,
        path: str,
        params: Mapping[str, str | int | float] | None = None,
        *,
        ts_ms: int | None = None,
        tamper: bool = False,
    ) -> httpx.Response:
        full = dict(params or {})
        full["timestamp"] = ts_ms if ts_ms is not None else int(time.time() * 1000)
        full["recvWindow"] = 5000
        query = signed_query(full, self.secret)
        if tamper:
            query = query.replace("timestamp=", "timestamp=1", 1)
        return await self.http.request(
            method, f"{path}?{query}", headers={"X-MBX-APIKEY": self.key}
        )


@pytest.fixture
def clock() -> MarketClock:
    c = MarketClock(0.0)
    c.to_bar(0)
    return c


def make_fake(clock: MarketClock, **kwargs: Any) -> FakeExchange:
    rules = {"ETHUSDT": SymbolRules("ETHUSDT", step_size=0.001, min_qty=0.001, tick_size=0.01)}
    return FakeExchange(
        {
            (Market.PERP, "BTCUSDT", Timeframe.H1): bars(),
            (Market.PERP, "ETHUSDT", Timeframe.H1): bars(),
            (Market.PERP, "BTCUSDT", Timeframe.M15): bars(),  # another timeframe: not traded
            (Market.SPOT, "BTCUSDT", Timeframe.H1): bars(),
        },
        api_key=KEY,
        api_secret=SECRET,
        market_clock=clock,
        symbol_rules=rules,
        **kwargs,
    )


@pytest.fixture
async def fake(clock: MarketClock) -> AsyncIterator[FakeExchange]:
    async with make_fake(clock, weight_limit=None) as fx:
        yield fx


@pytest.fixture
async def client(fake: FakeExchange) -> AsyncIterator[Client]:
    async with httpx.AsyncClient(base_url=fake.url, timeout=5.0) as http:
        yield Client(http)


def order(side: str, type_: str, cid: str, **extra: str | float) -> dict[str, str | int | float]:
    return {"symbol": "BTCUSDT", "side": side, "type": type_, "newClientOrderId": cid} | extra


async def test_order_life_cycle(fake: FakeExchange, client: Client, clock: MarketClock) -> None:
    r = await client.call(
        "POST",
        "/fapi/v1/order",
        order("BUY", "MARKET", "e1", quantity=2, newOrderRespType="RESULT"),
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body == {
        "orderId": 1,
        "symbol": "BTCUSDT",
        "status": "FILLED",
        "clientOrderId": "e1",
        "price": "0.0",
        "avgPrice": "100.0",
        "origQty": "2.0",
        "executedQty": "2.0",
        "cumQuote": "200.0",
        "timeInForce": "GTC",
        "type": "MARKET",
        "reduceOnly": False,
        "closePosition": False,
        "side": "BUY",
        "positionSide": "BOTH",
        "stopPrice": "0.0",
        "workingType": "CONTRACT_PRICE",
        "origType": "MARKET",
        "updateTime": T0 + 5,
    }
    assert int(r.headers["X-MBX-USED-WEIGHT-1m"]) == 1
    # the stop is a conditional order: the Algo Order API (New Algo Order weighs 0)
    sl = {"algoType": "CONDITIONAL", "symbol": "BTCUSDT", "side": "SELL", "type": "STOP_MARKET",
          "clientAlgoId": "sl", "triggerPrice": 97.5, "closePosition": "true"}  # fmt: skip
    r = await client.call("POST", "/fapi/v1/algoOrder", sl)
    assert (r.status_code, r.json()["algoStatus"]) == (200, "NEW")
    tp = order("SELL", "LIMIT", "tp", quantity=1, price=102.5, reduceOnly="true", timeInForce="GTC")
    r = await client.call("POST", "/fapi/v1/order", tp)
    assert (r.status_code, r.json()["status"]) == (200, "NEW")
    r = await client.call("GET", "/fapi/v1/openOrders", {"symbol": "BTCUSDT"})
    assert [o["clientOrderId"] for o in r.json()] == ["tp"]
    r = await client.call("GET", "/fapi/v1/openAlgoOrders", {"symbol": "BTCUSDT"})
    assert [o["clientAlgoId"] for o in r.json()] == ["sl"]
    assert r.json()[0]["closePosition"] is True
    assert r.json()[0]["triggerPrice"] == "97.5"
    r = await client.call("GET", "/fapi/v1/openOrders")  # every symbol: weight 40
    assert len(r.json()) == 1
    assert int(r.headers["X-MBX-USED-WEIGHT-1m"]) == 1 + 0 + 1 + 1 + 1 + 40
    # bar 0 (high 102) closes: nothing; bar 1 (high 103) closes: tp fills at 102.5
    clock.to_bar(2)
    r = await client.call("GET", "/fapi/v1/order", {"symbol": "BTCUSDT", "origClientOrderId": "tp"})
    got = r.json()
    assert (got["status"], got["avgPrice"], got["updateTime"]) == ("FILLED", "102.5", T0 + HOUR)
    r = await client.call("GET", "/fapi/v2/positionRisk")
    assert int(r.headers["X-MBX-USED-WEIGHT-1m"]) == 1 + 0 + 1 + 1 + 1 + 40 + 1 + 5
    risk = {row["symbol"]: row for row in r.json()}
    assert set(risk) == {"BTCUSDT", "ETHUSDT"}
    assert risk["BTCUSDT"] == {
        "symbol": "BTCUSDT",
        "positionAmt": "1.0",
        "entryPrice": "100.0",
        "markPrice": "99.0",  # the open of bar 2
        "unRealizedProfit": "-1.0",
        "leverage": "1",
        "positionSide": "BOTH",
    }
    assert risk["ETHUSDT"]["positionAmt"] == "0"
    r = await client.call("GET", "/fapi/v2/positionRisk", {"symbol": "ETHUSDT"})
    assert [row["symbol"] for row in r.json()] == ["ETHUSDT"]
    # cancel the stop (by clientAlgoId, no symbol); cancelling again (final) is -2011
    r = await client.call("DELETE", "/fapi/v1/algoOrder", {"clientAlgoId": "sl"})
    assert (r.status_code, r.json()["code"], r.json()["clientAlgoId"]) == (200, "200", "sl")
    r = await client.call("DELETE", "/fapi/v1/algoOrder", {"clientAlgoId": "sl"})
    assert (r.status_code, r.json()) == (400, {"code": -2011, "msg": "Unknown order sent."})
    r = await client.call("GET", "/fapi/v1/algoOrder", {"clientAlgoId": "sl"})
    assert r.json()["algoStatus"] == "CANCELED"
    r = await client.call("GET", "/fapi/v1/openAlgoOrders", {"symbol": "BTCUSDT"})
    assert r.json() == []
    assert [f.client_order_id for f in fake.engine.fills] == ["e1", "tp"]
    # no signature (nor key) is recorded
    assert all("signature" not in rec.params for rec in fake.requests)
    assert fake.requests[0].params["newClientOrderId"] == "e1"
    assert {rec.path for rec in fake.requests} == {
        "/fapi/v1/order",
        "/fapi/v1/openOrders",
        "/fapi/v2/positionRisk",
        "/fapi/v1/algoOrder",
        "/fapi/v1/openAlgoOrders",
    }


async def test_auth_failures(fake: FakeExchange, client: Client) -> None:
    params = order("BUY", "MARKET", "a", quantity=1)
    bad_key = Client(client.http, key="wrong")
    r = await bad_key.call("POST", "/fapi/v1/order", params)
    assert (r.status_code, r.json()["code"]) == (401, -2015)
    assert r.json()["msg"] == "Invalid API-key, IP, or permissions for action."
    r = await client.http.post("/fapi/v1/order", params={"timestamp": 1})  # no key header
    assert (r.status_code, r.json()["code"]) == (401, -2015)
    bad_secret = Client(client.http, secret="other")
    r = await bad_secret.call("POST", "/fapi/v1/order", params)
    assert (r.status_code, r.json()) == (
        400,
        {"code": -1022, "msg": "Signature for this request is not valid."},
    )
    r = await client.call("POST", "/fapi/v1/order", params, tamper=True)
    assert r.json()["code"] == -1022
    stale = int(time.time() * 1000) - 6000
    r = await client.call("POST", "/fapi/v1/order", params, ts_ms=stale)
    assert (r.status_code, r.json()["code"]) == (400, -1021)
    ahead = int(time.time() * 1000) + 2000
    r = await client.call("GET", "/fapi/v2/positionRisk", ts_ms=ahead)
    assert r.json()["code"] == -1021
    r = await client.http.get(  # signed but without a timestamp
        f"/fapi/v2/positionRisk?{signed_query({'recvWindow': 5000}, SECRET)}",
        headers={"X-MBX-APIKEY": KEY},
    )
    assert r.json()["code"] == -1102
    r = await client.http.get(
        f"/fapi/v2/positionRisk?{signed_query({'timestamp': 1, 'recvWindow': 70000}, SECRET)}",
        headers={"X-MBX-APIKEY": KEY},
    )
    assert r.json()["code"] == -1131
    assert fake.engine.fills == []
    assert [rec.status for rec in fake.requests] == [401, 401, 400, 400, 400, 400, 400, 400]


async def test_duplicate_client_id(fake: FakeExchange, client: Client) -> None:
    params = order("BUY", "LIMIT", "dup", quantity=1, price=90)
    r = await client.call("POST", "/fapi/v1/order", params)
    assert r.status_code == 200
    r = await client.call("POST", "/fapi/v1/order", params)
    assert (r.status_code, r.json()) == (
        400,
        {"code": -4116, "msg": "ClientOrderId is duplicated."},
    )
    r = await client.call("GET", "/fapi/v1/openOrders")
    assert [o["clientOrderId"] for o in r.json()] == ["dup"]


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"side": "BUY", "type": "MARKET", "quantity": 1}, -1102),  # no symbol
        ({"symbol": "BTCUSDT", "type": "MARKET", "quantity": 1}, -1102),  # no side
        ({"symbol": "BTCUSDT", "side": "HOLD", "type": "MARKET", "quantity": 1}, -1117),
        ({"symbol": "BTCUSDT", "side": "BUY", "type": "OCO", "quantity": 1}, -1116),
        (order("BUY", "MARKET", "x", quantity=1, positionSide="LONG"), -4061),
        (order("BUY", "LIMIT", "x", quantity=1, price=90, timeInForce="IOC"), -1115),
        (order("BUY", "MARKET", "x", quantity="abc"), -1100),
        (order("BUY", "MARKET", "x", quantity="inf"), -1100),
        (order("SELL", "MARKET", "x", quantity=1, reduceOnly="maybe"), -1100),
        (order("SELL", "MARKET", "x", quantity=1, reduceOnly="true"), -2022),
        (order("SELL", "STOP_MARKET", "x", quantity=1, stopPrice=100.5), -4120),  # algo only
        (order("BUY", "LIMIT", "x", quantity=1), -1102),
        (order("BUY", "MARKET", "x", quantity=0), -4003),
        (order("BUY", "MARKET", "x", quantity=1) | {"symbol": "DOGEUSDT"}, -1121),
        (order("BUY", "MARKET", "x", quantity=0.0005) | {"symbol": "ETHUSDT"}, -4003),
    ],
)
async def test_order_rejections(
    fake: FakeExchange, client: Client, params: dict[str, str | int | float], code: int
) -> None:
    r = await client.call("POST", "/fapi/v1/order", params)
    assert (r.status_code, r.json()["code"]) == (400, code)
    assert fake.engine.fills == []


async def test_query_errors_and_generated_ids(fake: FakeExchange, client: Client) -> None:
    q: dict[str, str | int | float] = {"symbol": "BTCUSDT", "origClientOrderId": "nope"}
    r = await client.call("GET", "/fapi/v1/order", q)
    assert (r.status_code, r.json()) == (400, {"code": -2013, "msg": "Order does not exist."})
    r = await client.call("DELETE", "/fapi/v1/order", q)
    assert r.json()["code"] == -2011
    r = await client.call("GET", "/fapi/v1/order", {"symbol": "BTCUSDT"})
    assert r.json()["code"] == -1102
    r = await client.call("GET", "/fapi/v1/order", q | {"symbol": "DOGEUSDT"})
    assert r.json()["code"] == -1121
    r = await client.call("GET", "/fapi/v1/openOrders", {"symbol": "DOGEUSDT"})
    assert r.json()["code"] == -1121
    r = await client.call("GET", "/fapi/v2/positionRisk", {"symbol": "DOGEUSDT"})
    assert r.json()["code"] == -1121
    params: dict[str, str | int | float] = {
        "symbol": "BTCUSDT",
        "side": "BUY",
        "type": "MARKET",
        "quantity": 1,
    }
    r = await client.call("POST", "/fapi/v1/order", params)
    assert r.json()["clientOrderId"] == "fake-1"


async def test_lost_answer_still_places_the_order(clock: MarketClock) -> None:
    async with (
        make_fake(clock, faults=Faults(lost=1.0)) as fx,
        httpx.AsyncClient(base_url=fx.url, timeout=5.0) as http,
    ):
        client = Client(http)
        params = order("BUY", "LIMIT", "lost-1", quantity=1, price=95)
        with pytest.raises(httpx.TransportError):
            await client.call("POST", "/fapi/v1/order", params)
        fx.faults = Faults()
        r = await client.call(
            "GET", "/fapi/v1/order", {"symbol": "BTCUSDT", "origClientOrderId": "lost-1"}
        )
        assert (r.status_code, r.json()["status"]) == (200, "NEW")
        r = await client.call("POST", "/fapi/v1/order", params)  # a blind retry
        assert r.json()["code"] == -4116
        r = await client.call("GET", "/fapi/v1/openOrders")
        assert [o["clientOrderId"] for o in r.json()] == ["lost-1"]
    assert (fx.requests[0].status, fx.requests[0].fault) == (STATUS_DROPPED, "lost")


def test_lost_is_drawn_last() -> None:
    """Adding ``lost`` does not move the draws of the existing faults."""
    import random

    old = Faults(p_5xx=0.1, p_drop=0.2, seed=3)
    new = Faults(p_5xx=0.1, p_drop=0.2, seed=3, lost=0.3)
    r1, r2 = random.Random(3), random.Random(3)
    a = [old.draw(r1) for _ in range(300)]
    b = [new.draw(r2) for _ in range(300)]
    assert [x for x, y in zip(a, b, strict=True) if x != y] == [None] * sum(y == "lost" for y in b)
    assert "lost" in b


async def test_weight_limit_applies_to_order_endpoints(clock: MarketClock) -> None:
    async with (
        make_fake(clock, weight_limit=45) as fx,
        httpx.AsyncClient(base_url=fx.url, timeout=5.0) as http,
    ):
        client = Client(http)
        r = await client.call("GET", "/fapi/v1/openOrders")
        assert (r.status_code, r.headers["X-MBX-USED-WEIGHT-1m"]) == (200, "40")
        r = await client.call("GET", "/fapi/v2/positionRisk")
        assert r.status_code == 200
        r = await client.call("GET", "/fapi/v2/positionRisk")
        assert r.status_code == 429


async def test_exchange_info_filters_and_open_access(clock: MarketClock) -> None:
    async with (
        FakeExchange(
            {
                (Market.PERP, "BTCUSDT", Timeframe.H1): bars(),
                (Market.SPOT, "BTCUSDT", Timeframe.H1): bars(),
            },
            market_clock=clock,
            symbol_rules={"BTCUSDT": SymbolRules("BTCUSDT", 0.001, 0.002, 0.1)},
        ) as fx,
        httpx.AsyncClient(base_url=fx.url, timeout=5.0) as http,
    ):
        info = (await http.get("/fapi/v1/exchangeInfo")).json()
        (sym,) = info["symbols"]
        assert sym["filters"] == [
            {"filterType": "PRICE_FILTER", "tickSize": "0.1"},
            {
                "filterType": "LOT_SIZE",
                "stepSize": "0.001",
                "minQty": "0.002",
                "maxQty": "1000000",
            },
            {
                "filterType": "MARKET_LOT_SIZE",
                "stepSize": "0.001",
                "minQty": "0.002",
                "maxQty": "1000000",
            },
        ]
        spot = (await http.get("/api/v3/exchangeInfo")).json()
        spot_types = [f["filterType"] for f in spot["symbols"][0]["filters"]]
        assert spot_types == ["PRICE_FILTER", "LOT_SIZE", "MARKET_LOT_SIZE", "NOTIONAL"]
        # no key nor secret configured: any key, no signature check
        r = await http.post(
            "/fapi/v1/order",
            params=order("BUY", "MARKET", "m", quantity=0.004)
            | {"timestamp": int(time.time() * 1000)},
        )
        assert (r.status_code, r.json()["avgPrice"]) == (200, "100.0")
        r = await http.post(
            "/fapi/v1/order",
            params=order("BUY", "MARKET", "m2", quantity=0.0045)
            | {"timestamp": int(time.time() * 1000)},
        )
        assert r.json()["code"] == -4003
    assert fx.symbol_rules("ETHUSDT") == SymbolRules("ETHUSDT", 1e-9, 0.0, 1e-9)


async def test_no_perp_candles_means_no_symbols(clock: MarketClock) -> None:
    async with (
        FakeExchange({(Market.SPOT, "BTCUSDT", Timeframe.H1): bars()}, market_clock=clock) as fx,
        httpx.AsyncClient(base_url=fx.url, timeout=5.0) as http,
    ):
        r = await http.get("/fapi/v2/positionRisk", params={"timestamp": int(time.time() * 1000)})
        assert (r.status_code, r.json()) == (200, [])
    assert fx.engine.symbols == []


def test_order_settings_are_read_through_the_exchange(clock: MarketClock) -> None:
    fx = make_fake(clock, slippage_bps=2.5)
    assert (fx.api_key, fx.api_secret, fx.slippage_bps) == (KEY, SECRET, 2.5)
    assert fx.market_clock is clock
    assert fx.engine is fx.orders.engine
    bare = FakeExchange()
    assert (bare.api_key, bare.api_secret, bare.market_clock) == (None, None, time.time)


DOCUMENTED = Path(__file__).resolve().parents[1] / "fixtures" / "binance" / "orders"
TRAILING_ONLY = {"activatePrice", "priceRate"}  # returned with TRAILING_STOP_MARKET orders only


def documented_keys(name: str) -> set[str]:
    example = json.loads((DOCUMENTED / name).read_text(encoding="utf-8"))
    return set(example[0] if isinstance(example, list) else example) - TRAILING_ONLY


async def test_documented_mode_answers_with_the_documented_keys(
    fake: FakeExchange, client: Client, clock: MarketClock
) -> None:
    """Every answer of the documented mode carries exactly the fields of Binance's example for
    that endpoint (tests/fixtures/binance/orders), numbers as fixed-decimal strings at the
    symbol's precision (ETHUSDT: step 0.001, tick 0.01)."""
    fake.orders.documented = True
    eth = {"symbol": "ETHUSDT"}
    entry = order("BUY", "MARKET", "e1", quantity=2, newOrderRespType="RESULT") | eth
    tp = order("SELL", "LIMIT", "tp", quantity=1, price=102.5, reduceOnly="true",
               timeInForce="GTC") | eth  # fmt: skip
    for params in (entry, tp):
        r = await client.call("POST", "/fapi/v1/order", params)
        assert r.status_code == 200, r.text
        assert set(r.json()) == documented_keys("new_order.json")
    assert r.json()["avgPrice"] == "0.00000"  # the resting tp: nothing executed yet
    r = await client.call("GET", "/fapi/v1/order", {"symbol": "ETHUSDT", "origClientOrderId": "e1"})
    assert set(r.json()) == documented_keys("query_order.json")
    assert r.json()["avgPrice"] == "100.00000"
    r = await client.call("GET", "/fapi/v1/openOrders", {"symbol": "ETHUSDT"})
    assert [set(row) for row in r.json()] == [documented_keys("open_orders.json")]
    r = await client.call(
        "DELETE", "/fapi/v1/order", {"symbol": "ETHUSDT", "origClientOrderId": "tp"}
    )
    assert set(r.json()) == documented_keys("cancel_order.json")
    assert "avgPrice" not in r.json()
    r = await client.call("GET", "/fapi/v2/positionRisk")
    rows = r.json()
    assert [set(row) for row in rows] == [documented_keys("position_risk_oneway.json")] * 2
    eth_row = next(row for row in rows if row["symbol"] == "ETHUSDT")
    assert (eth_row["positionAmt"], eth_row["positionSide"]) == ("2.000", "BOTH")
