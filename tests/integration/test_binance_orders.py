"""The signed order client against the fake exchange's order endpoints on 127.0.0.1: round
trips, refusals, and retries that never double an order under lost answers, drops and 5xx."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from atra.adapters.binance_orders import (
    BinanceTrader,
    credentials_from_env,
    format_decimal,
    parse_order,
    parse_symbol_rules,
)
from atra.adapters.exchange import BinanceClient
from atra.adapters.fake_exchange import FakeExchange, Faults
from atra.adapters.orders import OrderRequest, SymbolRules, signed_query
from atra.adapters.ratelimit import RateLimiter
from atra.core.types import Market, Timeframe
from atra.errors import ConfigError, ExchangeError, OrderRejected, TransientExchangeError

STEP = Timeframe.H1.ms
T0 = 1_704_067_200_000
KEY, SECRET = "test-key-123", "test-secret-xyz-987"
RULES = {"BTCUSDT": SymbolRules("BTCUSDT", step_size=0.001, min_qty=0.001, tick_size=0.1)}


class MarketClock:
    def __init__(self) -> None:
        self.now_s = (T0 + 5 * STEP) / 1000 + 1.0

    def __call__(self) -> float:
        return self.now_s


def _candles(n: int = 48) -> pd.DataFrame:
    close = 40_000.0 + 100.0 * np.sin(np.arange(n) / 3.0)
    open_ = np.concatenate(([40_000.0], close[:-1]))
    return pd.DataFrame(
        {
            "open_time": T0 + np.arange(n, dtype=np.int64) * STEP,
            "open": open_,
            "high": np.maximum(open_, close) + 50.0,
            "low": np.minimum(open_, close) - 50.0,
            "close": close,
            "volume": np.ones(n),
        }
    )


async def _setup(
    faults: Faults | None = None, secret: str = SECRET, weight_limit: int | None = 2400
) -> AsyncIterator[tuple[FakeExchange, BinanceTrader]]:
    fake = FakeExchange(
        {(Market.PERP, "BTCUSDT", Timeframe.H1): _candles()},
        api_key=KEY,
        api_secret=SECRET,
        market_clock=MarketClock(),
        symbol_rules=RULES,
        faults=faults,
        weight_limit=weight_limit,
    )
    async with fake:
        limiter = RateLimiter(weight_limit or 1_000_000, name="fake", enabled=bool(weight_limit))
        client = BinanceClient(
            Market.PERP, base_url=fake.url, limiter=limiter, timeout_s=0.5, backoff_s=0.01,
            max_attempts=8,
        )  # fmt: skip
        async with client:
            yield fake, BinanceTrader(client, api_key=KEY, api_secret=secret)


def _order(cid: str, side: str = "BUY", typ: str = "MARKET", **kw: object) -> OrderRequest:
    return OrderRequest("BTCUSDT", side, typ, cid, **kw)  # type: ignore[arg-type]


async def test_round_trip() -> None:
    async for fake, trader in _setup():
        rules = await trader.symbol_rules("BTCUSDT")
        assert rules == RULES["BTCUSDT"]
        entry = await trader.place_order(_order("e1", quantity=0.01))
        assert (entry.status, entry.executed_qty, entry.side) == ("FILLED", 0.01, "BUY")
        assert entry.avg_price == pytest.approx(float(_candles()["open"].iloc[5]))
        stop = await trader.place_order(
            _order("s1", "SELL", "STOP_MARKET", stop_price=39_000.0, close_position=True)
        )
        tp = await trader.place_order(
            _order("t1", "SELL", "LIMIT", quantity=0.01, price=41_000.5, reduce_only=True)
        )
        assert {o.client_order_id for o in await trader.open_orders("BTCUSDT")} == {"s1", "t1"}
        assert len(await trader.open_orders()) == 2
        (pos,) = await trader.positions()
        assert (pos.symbol, pos.quantity) == ("BTCUSDT", 0.01)
        assert await trader.get_order("BTCUSDT", "nope") is None
        cancelled = await trader.cancel_order("BTCUSDT", "t1")
        assert cancelled is not None
        assert cancelled.status == "CANCELED"
        again = await trader.cancel_order("BTCUSDT", "t1")  # final: its state, no error
        assert again is not None
        assert again.status == "CANCELED"
        assert await trader.cancel_order("BTCUSDT", "never") is None
        same = await trader.place_order(_order("e1", quantity=0.01))  # a retry of a known id
        assert same.order_id == entry.order_id
        assert stop.stop_price == 39_000.0
        assert tp.price == 41_000.5
        assert len(fake.engine.fills) == 1
        # the signature never leaves the client in what the exchange records
        assert all("signature" not in r.params for r in fake.requests)
        with pytest.raises(OrderRejected, match="-2022"):  # reduce-only while long? no: flat
            await trader.place_order(_order("r1", "BUY", quantity=0.01, reduce_only=True))
        with pytest.raises(ExchangeError, match="no symbol ETHUSDT"):
            await trader.symbol_rules("ETHUSDT")


async def test_a_wrong_secret_is_refused_without_leaking_it() -> None:
    async for _fake, trader in _setup(secret="wrong-secret-456"):
        with pytest.raises(OrderRejected, match="-1022") as info:
            await trader.place_order(_order("x1", quantity=0.01))
        assert "wrong-secret-456" not in str(info.value)
        assert "signature=" not in str(info.value)
        with pytest.raises(ExchangeError, match="-1022"):
            await trader.positions()
        assert "wrong-secret" not in repr(trader)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_faults_never_double_an_order(seed: int) -> None:
    faults = Faults(lost=0.2, p_drop=0.1, p_5xx=0.1, p_garbage=0.05, seed=seed)
    async for fake, trader in _setup(faults=faults):
        placed = []
        for k in range(25):
            side = "BUY" if k % 2 == 0 else "SELL"
            try:
                placed.append(await trader.place_order(_order(f"o{k}", side, quantity=0.001)))
            except TransientExchangeError:  # pragma: no cover - 8 attempts at these odds
                continue
        engine = fake.engine
        ids = [f.client_order_id for f in engine.fills]
        assert len(ids) == len(set(ids))  # no order filled twice
        assert {p.client_order_id for p in placed} <= set(ids)
        assert len(placed) == 25
        lost = [r for r in fake.requests if r.fault == "lost"]
        assert lost  # answers really were lost, and the orders were found again
        assert max(r.used_weight for r in fake.requests) <= 2400


def test_wire_helpers() -> None:
    # Binance's documented example: the same query and secret give the same signature
    secret = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
    params: dict[str, str | int | float] = {
        "symbol": "LTCBTC",
        "side": "BUY",
        "type": "LIMIT",
        "timeInForce": "GTC",
        "quantity": 1,
        "price": "0.1",
        "recvWindow": 5000,
        "timestamp": 1499827319559,
    }
    assert signed_query(params, secret).endswith(
        "signature=c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"
    )
    query = signed_query({"a": 1}, "k")
    assert query == "a=1&signature=" + hmac.new(b"k", b"a=1", hashlib.sha256).hexdigest()
    assert format_decimal(1e-05) == "0.00001"
    assert format_decimal(40000.0) == "40000"
    assert format_decimal(0.1 + 0.2) == "0.30000000000000004"
    with pytest.raises(ExchangeError, match="not a finite number"):
        format_decimal(float("nan"))
    assert credentials_from_env({"ATRA__EXCHANGE__API_KEY": "k",
                                 "ATRA__EXCHANGE__API_SECRET": "s"}) == ("k", "s")  # fmt: skip
    with pytest.raises(ConfigError, match="ATRA__EXCHANGE__API_SECRET") as info:
        credentials_from_env({"ATRA__EXCHANGE__API_KEY": "visible-key"})
    assert "visible-key" not in str(info.value)


@given(st.decimals(min_value="0.00000001", max_value="100000", places=8))
def test_format_decimal_round_trips(value: object) -> None:
    x = float(value)  # type: ignore[arg-type]
    assert float(format_decimal(x)) == x
    assert "e" not in format_decimal(x).lower()


GOOD = {
    "orderId": 7, "symbol": "BTCUSDT", "status": "FILLED", "clientOrderId": "c",
    "price": "0", "avgPrice": "40000.5", "origQty": "0.01", "executedQty": "0.01",
    "type": "MARKET", "side": "BUY", "reduceOnly": False, "closePosition": False,
    "stopPrice": "0", "updateTime": 1,
}  # fmt: skip


@pytest.mark.parametrize(
    ("patch", "match"),
    [
        ({"avgPrice": "x"}, "avgPrice is not a number"),
        ({"orderId": "7"}, "orderId is not an integer"),
        ({"status": "WEIRD"}, "status is 'WEIRD'"),
        ({"side": "UP"}, "side is 'UP'"),
        ({"type": "OCO"}, "type is 'OCO'"),
        ({"reduceOnly": "false"}, "reduceOnly is not a boolean"),
        ({"symbol": ""}, "symbol missing"),
    ],
)
def test_malformed_orders_name_the_field(patch: dict[str, object], match: str) -> None:
    assert parse_order(GOOD, "here").avg_price == 40000.5
    with pytest.raises(ExchangeError, match=match):
        parse_order({**GOOD, **patch}, "here")
    with pytest.raises(ExchangeError, match="expected an object"):
        parse_order([GOOD], "here")


def test_symbol_rules_need_their_filters() -> None:
    info = {"symbols": [{"symbol": "X", "filters": [
        {"filterType": "PRICE_FILTER", "tickSize": "0.1"},
        {"filterType": "LOT_SIZE", "stepSize": "0.001", "minQty": "0.001"},
    ]}]}  # fmt: skip
    assert parse_symbol_rules(info, "w")["X"] == SymbolRules("X", 0.001, 0.001, 0.1)
    with pytest.raises(ExchangeError, match="X has no PRICE_FILTER filter"):
        parse_symbol_rules({"symbols": [{"symbol": "X", "filters": []}]}, "w")
    with pytest.raises(ExchangeError, match="symbols missing"):
        parse_symbol_rules({}, "w")


async def test_spot_clients_cannot_trade() -> None:
    async with BinanceClient(Market.SPOT, base_url="http://127.0.0.1:9") as client:
        with pytest.raises(ExchangeError, match="USDT-M futures only"):
            BinanceTrader(client, api_key=KEY, api_secret=SECRET)
    perp = BinanceClient(Market.PERP, base_url="http://127.0.0.1:9")
    with pytest.raises(ConfigError, match="API key and secret"):
        BinanceTrader(perp, api_key="", api_secret="")
    with pytest.raises(ExchangeError, match="not open"):
        await BinanceTrader(perp, api_key=KEY, api_secret=SECRET).positions()
