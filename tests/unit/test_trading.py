"""The pure parts of the signed order client: signing, wire formats, strict parsing, rounding
helpers and credentials."""

from __future__ import annotations

import hashlib
import hmac
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from atra.adapters.exchange.client import BinanceClient
from atra.adapters.orders import OrderRequest, SymbolRules, signed_query, verify_signature
from atra.adapters.ratelimit import RateLimiter
from atra.adapters.trading.trader import (
    API_KEY_ENV,
    API_SECRET_ENV,
    BinanceTrader,
    credentials_from_env,
)
from atra.adapters.trading.wire import (
    describe,
    format_decimal,
    missing_filters,
    order_params,
    parse_order,
    parse_orders,
    parse_positions,
    parse_symbol_rules,
    round_step,
    round_tick,
)
from atra.core.types import Market
from atra.errors import ConfigError, DataError, ExchangeError, OrderRejected

# Binance API docs, "SIGNED endpoint examples"
DOC_SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
DOC_QUERY = (
    "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1"
    "&recvWindow=5000&timestamp=1499827319559"
)
DOC_SIGNATURE = "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"
WHERE = "binance perp GET /fapi/v1/order"


# ---- signing ------------------------------------------------------------------------------


def test_signature_matches_the_binance_docs_vector() -> None:
    params: dict[str, str | int | float] = {
        "symbol": "LTCBTC",
        "side": "BUY",
        "type": "LIMIT",
        "timeInForce": "GTC",
        "quantity": "1",
        "price": "0.1",
        "recvWindow": 5000,
        "timestamp": 1499827319559,
    }
    query = signed_query(params, DOC_SECRET)
    assert query == f"{DOC_QUERY}&signature={DOC_SIGNATURE}"
    assert verify_signature(query, DOC_SECRET)
    assert not verify_signature(query, DOC_SECRET[:-1] + "k")


def test_order_params_sign_to_the_exact_query_sent() -> None:
    order = OrderRequest("BTCUSDT", "BUY", "LIMIT", "c-1", quantity=0.1 + 0.2, price=40_000.5)
    rules = SymbolRules("BTCUSDT", step_size=0.1, min_qty=0.1, tick_size=0.1)
    params = order_params(order, rules)
    query = signed_query(params, "s3cret")
    body, _, sig = query.rpartition("&signature=")
    assert body == (
        "symbol=BTCUSDT&side=BUY&type=LIMIT&newClientOrderId=c-1&quantity=0.3"
        "&price=40000.5&timeInForce=GTC&newOrderRespType=RESULT"
    )
    assert sig == hmac.new(b"s3cret", body.encode(), hashlib.sha256).hexdigest()


# ---- order parameters ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("order", "expected"),
    [
        (
            OrderRequest("BTCUSDT", "SELL", "MARKET", "m", quantity=1e-05),
            {"quantity": "0.00001"},
        ),
        (
            OrderRequest(
                "BTCUSDT",
                "SELL",
                "STOP_MARKET",
                "s",
                stop_price=39_000.0,
                close_position=True,
                reduce_only=True,
            ),
            {"stopPrice": "39000", "closePosition": "true"},
        ),
        (
            OrderRequest(
                "BTCUSDT",
                "SELL",
                "TAKE_PROFIT_MARKET",
                "t",
                quantity=2.0,
                stop_price=41_000.25,
                reduce_only=True,
            ),
            {"quantity": "2", "stopPrice": "41000.25", "reduceOnly": "true"},
        ),
    ],
)
def test_order_params_by_type(order: OrderRequest, expected: dict[str, str]) -> None:
    params = order_params(order)
    head = {"symbol": "BTCUSDT", "side": order.side, "type": order.type}
    assert params == head | {"newClientOrderId": order.client_order_id} | expected | {
        "newOrderRespType": "RESULT"
    }
    assert "reduceOnly" not in params or "closePosition" not in params


@pytest.mark.parametrize(
    ("order", "match"),
    [
        (OrderRequest("X", "BUY", "LIMIT", "l", quantity=1.0), "LIMIT order needs a price"),
        (OrderRequest("X", "BUY", "STOP_MARKET", "s", quantity=1.0), "needs a stop price"),
        (OrderRequest("X", "HOLD", "MARKET", "h", quantity=1.0), "side 'HOLD'"),  # type: ignore[arg-type]
        (OrderRequest("X", "BUY", "OCO", "o", quantity=1.0), "type 'OCO'"),  # type: ignore[arg-type]
    ],
)
def test_order_params_refuse_impossible_orders(order: OrderRequest, match: str) -> None:
    with pytest.raises(OrderRejected, match=match):
        order_params(order)


def test_describe_hides_signature_timestamp_and_window() -> None:
    params: dict[str, str | int] = {
        "symbol": "BTCUSDT",
        "newClientOrderId": "c1",
        "timestamp": 1,
        "recvWindow": 5000,
        "signature": "abc",
        "newOrderRespType": "RESULT",
    }
    text = describe("POST", "/fapi/v1/order", params)
    assert text == "binance perp POST /fapi/v1/order symbol=BTCUSDT newClientOrderId=c1"
    assert describe("GET", "/fapi/v2/positionRisk", {}) == "binance perp GET /fapi/v2/positionRisk"


# ---- parsing ------------------------------------------------------------------------------


def _order_json(**over: object) -> dict[str, object]:
    row: dict[str, object] = {
        "orderId": 42,
        "symbol": "BTCUSDT",
        "status": "PARTIALLY_FILLED",
        "clientOrderId": "cid-1",
        "price": "40000.5",
        "avgPrice": "40000.40",
        "origQty": "0.010",
        "executedQty": "0.004",
        "cumQuote": "160.0016",
        "timeInForce": "GTC",
        "type": "LIMIT",
        "reduceOnly": True,
        "closePosition": False,
        "side": "SELL",
        "positionSide": "BOTH",
        "stopPrice": "0",
        "updateTime": 1_704_067_200_123,
    }
    row.update(over)
    return {k: v for k, v in row.items() if v is not None}


def test_parse_order_reads_every_field() -> None:
    st_ = parse_order(_order_json(), WHERE)
    assert (st_.symbol, st_.client_order_id, st_.order_id) == ("BTCUSDT", "cid-1", 42)
    assert (st_.side, st_.type, st_.status) == ("SELL", "LIMIT", "PARTIALLY_FILLED")
    assert (st_.orig_qty, st_.executed_qty, st_.avg_price) == (0.01, 0.004, 40000.4)
    assert (st_.price, st_.stop_price) == (40000.5, 0.0)
    assert (st_.reduce_only, st_.close_position) == (True, False)
    assert st_.update_time_ms == 1_704_067_200_123
    assert not st_.is_final


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"orderId": "4x2"}, "orderId"),
        ({"orderId": "-42"}, "orderId"),
        ({"orderId": -42}, "orderId"),
        ({"orderId": "1" * 21}, "orderId"),
        ({"orderId": True}, "orderId"),
        ({"symbol": ""}, "symbol"),
        ({"clientOrderId": None}, "clientOrderId"),
        ({"status": "PENDING"}, "status"),
        ({"side": "LONG"}, "side"),
        ({"type": ""}, "type"),
        ({"type": 7}, "type"),
        ({"origQty": "ten"}, "origQty"),
        ({"executedQty": 0.5}, "executedQty"),
        ({"avgPrice": "NaN"}, "avgPrice"),
        ({"price": None}, "price"),
        ({"stopPrice": "inf"}, "stopPrice"),
        ({"reduceOnly": "false"}, "reduceOnly"),
        ({"closePosition": None}, "closePosition"),
        ({"updateTime": 1.5}, "updateTime"),
    ],
)
def test_parse_order_names_the_bad_field(over: dict[str, object], field: str) -> None:
    with pytest.raises(ExchangeError, match=rf"^{WHERE}: field {field} ") as err:
        parse_order(_order_json(**over), WHERE)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("payload", [None, [], "order", 3])
def test_parse_order_refuses_a_non_object(payload: object) -> None:
    with pytest.raises(ExchangeError, match="expected an order object"):
        parse_order(payload, WHERE)


def test_parse_orders() -> None:
    orders = parse_orders([_order_json(), _order_json(orderId=43, clientOrderId="c2")], WHERE)
    assert [o.order_id for o in orders] == [42, 43]
    assert parse_orders([], WHERE) == []
    with pytest.raises(ExchangeError, match="expected a list of orders, got dict"):
        parse_orders({"code": 0}, WHERE)
    with pytest.raises(ExchangeError, match=r"\[1\]: field updateTime"):
        parse_orders([_order_json(), _order_json(updateTime="x")], WHERE)


def test_parse_positions_keeps_non_zero_only() -> None:
    rows = [
        {"symbol": "BTCUSDT", "positionAmt": "-0.010", "entryPrice": "40000.0"},
        {"symbol": "ETHUSDT", "positionAmt": "0.000", "entryPrice": "0.0"},
        {"symbol": "SOLUSDT", "positionAmt": "3", "entryPrice": "100.5"},
    ]
    positions = parse_positions(rows, WHERE)
    assert [(p.symbol, p.quantity, p.entry_price) for p in positions] == [
        ("BTCUSDT", -0.01, 40000.0),
        ("SOLUSDT", 3.0, 100.5),
    ]
    with pytest.raises(ExchangeError, match="expected a list of positions"):
        parse_positions({}, WHERE)
    with pytest.raises(ExchangeError, match=r"\[0\]: expected a position object"):
        parse_positions(["x"], WHERE)
    with pytest.raises(ExchangeError, match=r"\[0\]: field positionAmt"):
        parse_positions([{"symbol": "X", "entryPrice": "1"}], WHERE)
    with pytest.raises(ExchangeError, match=r"\[0\]: field entryPrice"):
        parse_positions([{"symbol": "X", "positionAmt": "1"}], WHERE)


def _info(*symbols: object) -> dict[str, object]:
    return {"timezone": "UTC", "symbols": list(symbols)}


def _sym(name: str, *filters: object) -> dict[str, object]:
    return {"symbol": name, "status": "TRADING", "filters": list(filters)}


PRICE = {"filterType": "PRICE_FILTER", "tickSize": "0.10", "minPrice": "556.80"}
LOT = {"filterType": "LOT_SIZE", "stepSize": "0.001", "minQty": "0.001", "maxQty": "1000"}


def test_parse_symbol_rules() -> None:
    rules = parse_symbol_rules(
        _info(_sym("BTCUSDT", PRICE, LOT), _sym("NOLOT", PRICE), {"symbol": "BARE"}), WHERE
    )
    assert rules == {"BTCUSDT": SymbolRules("BTCUSDT", 0.001, 0.001, 0.1)}
    missing = missing_filters(
        _info(_sym("BTCUSDT", PRICE, LOT), _sym("NOLOT", PRICE), _sym("NOPRICE", LOT)), WHERE
    )
    assert missing == {"NOLOT": "LOT_SIZE", "NOPRICE": "PRICE_FILTER"}


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        ([], "expected an exchangeInfo object"),
        ({"symbols": "x"}, "field symbols missing"),
        (_info("BTCUSDT"), r"symbols\[0\]: expected an object"),
        (_info({"filters": []}), r"symbols\[0\]: field symbol"),
        (_info(_sym("B", PRICE, LOT | {"stepSize": 0.1})), "B LOT_SIZE: field stepSize"),
        (_info(_sym("B", PRICE | {"tickSize": None}, LOT)), "B PRICE_FILTER: field tickSize"),
    ],
)
def test_parse_symbol_rules_refuses_bad_shapes(payload: object, match: str) -> None:
    with pytest.raises(ExchangeError, match=match):
        parse_symbol_rules(payload, WHERE)


# ---- rounding helpers -------------------------------------------------------------------

STEPS = st.sampled_from([1e-9, 1e-8, 0.00001, 0.001, 0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 0.25])
VALUES = st.floats(min_value=0.0, max_value=1e7, allow_nan=False, allow_infinity=False)


def _is_multiple(x: float, step: float) -> bool:
    return Decimal(repr(x)) % Decimal(repr(step)) == 0


@given(VALUES, STEPS)
def test_round_step_is_the_largest_multiple_below(value: float, step: float) -> None:
    out = round_step(value, step)
    assert _is_multiple(out, step)
    dv, ds, do = Decimal(repr(value)), Decimal(repr(step)), Decimal(repr(out))
    assert do - dv <= ds * Decimal("1e-9")  # never above, beyond float noise
    assert dv - do < ds
    assert round_step(out, step) == out  # idempotent


@given(VALUES, STEPS)
def test_round_tick_is_the_nearest_multiple(price: float, tick: float) -> None:
    out = round_tick(price, tick)
    assert _is_multiple(out, tick)
    assert abs(Decimal(repr(out)) - Decimal(repr(price))) <= Decimal(repr(tick)) / 2
    assert round_tick(out, tick) == out


@given(st.integers(min_value=0, max_value=10**9), STEPS)
def test_format_decimal_writes_multiples_of_the_step_exactly(n: int, step: float) -> None:
    noisy = n * step  # float product: may carry noise such as 0.30000000000000004
    text = format_decimal(noisy, step)
    assert "e" not in text.lower()
    assert Decimal(text) == n * Decimal(repr(step))
    assert text == "0" or not text.endswith(("0", ".")) or "." not in text


@given(VALUES)
def test_format_decimal_round_trips(value: float) -> None:
    text = format_decimal(value)
    assert "e" not in text.lower()
    assert float(text) == value


def test_rounding_examples() -> None:
    assert round_step(0.1 + 0.2, 0.1) == 0.3
    assert round_step(0.0199999, 0.01) == 0.01
    assert round_step(1.23456, 0.001) == 1.234
    assert round_tick(40_123.45, 0.1) == 40_123.5
    assert round_tick(0.3, 0.1) == 0.3
    assert format_decimal(1e-5) == "0.00001"
    assert format_decimal(123_456_789.0) == "123456789"
    assert format_decimal(20.0, 10.0) == "20"
    assert format_decimal(0.0) == "0"
    assert format_decimal(1.3, 0.5) == "1.3"  # off the step: written as is, never changed
    assert format_decimal(1e30, 1e-9) == "1000000000000000000000000000000"


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: round_step(1.0, 0.0), "step must be > 0"),
        (lambda: round_step(1.0, -0.1), "step must be > 0"),
        (lambda: round_tick(float("nan"), 0.1), "price must be a finite number"),
        (lambda: round_tick(1.0, float("inf")), "tick must be a finite number"),
        (lambda: format_decimal(float("inf")), "value must be a finite number"),
        (lambda: format_decimal(True), "value must be a finite number"),
    ],
)
def test_rounding_refuses_bad_numbers(call: object, match: str) -> None:
    with pytest.raises(DataError, match=match):
        call()  # type: ignore[operator]


# ---- credentials and construction -------------------------------------------------------


def test_credentials_from_env() -> None:
    env = {API_KEY_ENV: "key-abc", API_SECRET_ENV: " sec-xyz \n", "OTHER": "1"}
    assert credentials_from_env(env) == ("key-abc", "sec-xyz")


@pytest.mark.parametrize(
    ("env", "missing"),
    [
        ({}, API_KEY_ENV),
        ({API_KEY_ENV: "key-abc"}, API_SECRET_ENV),
        ({API_KEY_ENV: "  ", API_SECRET_ENV: "sec-xyz"}, API_KEY_ENV),
        ({API_KEY_ENV: "key-abc", API_SECRET_ENV: ""}, API_SECRET_ENV),
    ],
)
def test_credentials_missing_names_the_variable(env: dict[str, str], missing: str) -> None:
    with pytest.raises(ConfigError, match=missing) as err:
        credentials_from_env(env)
    text = str(err.value)
    assert "key-abc" not in text
    assert "sec-xyz" not in text
    assert "\n" not in text


def _client(market: Market) -> BinanceClient:
    return BinanceClient(market, base_url="http://127.0.0.1:9", limiter=RateLimiter(100))


def test_trader_refuses_spot_and_bad_settings() -> None:
    with pytest.raises(ExchangeError, match=r"^BinanceTrader needs a perp client, got spot$"):
        BinanceTrader(_client(Market.SPOT), api_key="k", api_secret="s")
    perp = _client(Market.PERP)
    with pytest.raises(ConfigError, match="API key and an API secret"):
        BinanceTrader(perp, api_key="k", api_secret="")
    with pytest.raises(ConfigError, match="recv_window_ms"):
        BinanceTrader(perp, api_key="k", api_secret="s", recv_window_ms=70_000)
    with pytest.raises(ConfigError, match="max_attempts"):
        BinanceTrader(perp, api_key="k", api_secret="s", max_attempts=0)
    trader = BinanceTrader(perp, api_key="k", api_secret="very-secret")
    assert trader.max_attempts == perp.max_attempts
    assert "very-secret" not in repr(trader)


async def test_trader_needs_an_open_client() -> None:
    trader = BinanceTrader(_client(Market.PERP), api_key="k", api_secret="very-secret")
    with pytest.raises(ExchangeError, match="not open") as err:
        await trader.positions()
    assert "very-secret" not in str(err.value)
