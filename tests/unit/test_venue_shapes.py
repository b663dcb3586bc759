"""Binance's documented answers (tests/fixtures/binance/orders/) read by the order client's
parsers: every example file, every documented order type and status on those shapes, ids as
numbers or strings, cancel answers without ``avgPrice``, and the fake exchange's documented
shapes read back to the state they were written from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from atra.adapters.orders import (
    FINAL_STATUSES,
    TRADED_TYPES,
    VENUE_TYPES,
    OrderState,
    SymbolRules,
    VenuePosition,
)
from atra.adapters.trading.wire import parse_balances, parse_order, parse_orders, parse_positions
from atra.errors import ExchangeError
from atra.sim.order_desk import documented_order_json, padded, trailing_stop_json

SHAPES = Path(__file__).resolve().parents[1] / "fixtures" / "binance" / "orders"
WHERE = "binance perp GET /fapi/v1/order"
ORDER_FILES = ("new_order.json", "query_order.json", "cancel_order.json")
STATUSES = ("NEW", "PARTIALLY_FILLED", "FILLED", "CANCELED", "REJECTED", "EXPIRED",
            "EXPIRED_IN_MATCH")  # fmt: skip
ALL_TYPES = ("LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET",
             "TRAILING_STOP_MARKET", "LIMIT_MAKER", "STOP_LOSS", "STOP_LOSS_LIMIT",
             "TAKE_PROFIT_LIMIT")  # fmt: skip


def load(name: str) -> Any:
    return json.loads((SHAPES / name).read_text(encoding="utf-8"))


def test_every_fixture_file_is_listed_in_the_readme() -> None:
    readme = (SHAPES / "README.md").read_text(encoding="utf-8")
    files = sorted(p.name for p in SHAPES.glob("*.json"))
    assert len(files) == 13  # 8 order-endpoint answers, 5 of the Algo Order API
    assert all(f"`{name}`" in readme for name in files)


@pytest.mark.parametrize("name", ORDER_FILES)
def test_documented_order_answers_parse(name: str) -> None:
    row = load(name)
    st = parse_order(row, WHERE)
    assert st.client_order_id == row["clientOrderId"]
    assert st.order_id == row["orderId"]
    assert (st.type, st.side, st.status) == ("TRAILING_STOP_MARKET", "BUY", row["status"])
    assert st.foreign  # ATRA never places a trailing stop
    assert st.orig_qty == float(row["origQty"])
    assert (st.executed_qty, st.avg_price, st.price, st.stop_price) == (0.0, 0.0, 0.0, 9300.0)
    assert st.update_time_ms == row["updateTime"]


def test_the_documented_cancel_answer_has_no_avg_price() -> None:
    row = load("cancel_order.json")
    assert "avgPrice" not in row  # as documented: the reason this case exists
    assert parse_order(row, WHERE).status == "CANCELED"


def test_the_newer_new_order_example_parses_without_avg_price_or_cum_quote() -> None:
    row = load("new_order_limit.json")
    assert not {"avgPrice", "cumQuote"} & set(row)
    st = parse_order(row, "binance perp POST /fapi/v1/order")
    assert (st.type, st.side, st.status, st.foreign) == ("LIMIT", "SELL", "NEW", False)
    assert (st.orig_qty, st.executed_qty, st.avg_price, st.price) == (10.0, 0.0, 0.0, 0.0)
    assert (st.order_id, st.update_time_ms) == (22542179, 1566818724722)
    filled = row | {"executedQty": "10"}  # executed without a price: refused, never guessed
    with pytest.raises(ExchangeError, match=r"executedQty 10\.0 without avgPrice or cumQuote"):
        parse_order(filled, WHERE)


def test_documented_open_orders_parse() -> None:
    (st,) = parse_orders(load("open_orders.json"), "binance perp GET /fapi/v1/openOrders")
    assert (st.client_order_id, st.order_id, st.orig_qty) == ("abc", 1917641, 0.4)
    assert st.foreign
    assert not st.is_final


def test_documented_position_risk_parses() -> None:
    rows = load("position_risk_oneway.json")
    assert parse_positions(rows, WHERE) == []  # the one-way example is flat
    rows[-1]["positionAmt"] = "-0.250"
    rows[-1]["entryPrice"] = "6679.10000"
    (pos,) = parse_positions(rows, WHERE)
    assert (pos.symbol, pos.quantity, pos.entry_price) == ("BTCUSDT", -0.25, 6679.1)
    hedge = load("position_risk_hedge.json")  # a LONG of 0.001 and a flat SHORT
    assert parse_positions(hedge, WHERE) == [VenuePosition("BTCUSDT", 0.001, 22185.2)]


def test_documented_balance_parses() -> None:
    (bal,) = parse_balances(load("balance_v2.json"), "binance perp GET /fapi/v2/balance")
    assert (bal.asset, bal.balance, bal.available) == ("USDT", 122607.35137903, 23.72469206)
    with pytest.raises(ExchangeError, match=r"\[0\]: field availableBalance"):
        parse_balances([{"asset": "USDT", "balance": "1"}], WHERE)
    with pytest.raises(ExchangeError, match="expected a list of balances, got dict"):
        parse_balances({"asset": "USDT"}, WHERE)


@pytest.mark.parametrize("type_", ALL_TYPES)
@pytest.mark.parametrize("status", STATUSES)
def test_every_documented_type_and_status_parses(type_: str, status: str) -> None:
    row = load("query_order.json") | {"type": type_, "origType": type_, "status": status}
    st = parse_order(row, WHERE)
    assert (st.type, st.status) == (type_, status)
    assert st.foreign == (type_ not in TRADED_TYPES)
    assert st.is_final == (status in FINAL_STATUSES)
    assert type_ in VENUE_TYPES


def test_an_undocumented_type_is_kept_not_refused() -> None:
    st = parse_order(load("query_order.json") | {"type": "SOMETHING_NEW"}, WHERE)
    assert st.type == "SOMETHING_NEW"
    assert st.foreign


def test_an_undocumented_status_is_refused() -> None:
    with pytest.raises(ExchangeError, match=rf"^{WHERE}: field status has unknown value"):
        parse_order(load("query_order.json") | {"status": "PENDING_NEW_X"}, WHERE)


@pytest.mark.parametrize(
    ("raw", "want"),
    [(1917641, 1917641), ("1917641", 1917641), ("8389765521862123456", 8389765521862123456)],
)
def test_order_ids_as_numbers_or_strings(raw: object, want: int) -> None:
    assert parse_order(load("query_order.json") | {"orderId": raw}, WHERE).order_id == want


def test_a_cancel_answer_with_a_partial_fill_prices_it_from_cum_quote() -> None:
    row = load("cancel_order.json") | {"executedQty": "4", "cumQuote": "37200.4"}
    st = parse_order(row, WHERE)
    assert (st.executed_qty, st.avg_price) == (4.0, 9300.1)
    del row["cumQuote"]
    with pytest.raises(ExchangeError, match=r"executedQty 4\.0 without avgPrice or cumQuote"):
        parse_order(row, WHERE)


@pytest.mark.parametrize(("x", "decimals", "text"), [
    (0.4, 2, "0.40"), (0.0, 5, "0.00000"), (9300.0, 0, "9300"), (1e-9, 3, "0.000000001"),
    (-0.0, 3, "0.000"), (-0.25, 3, "-0.250"), (40000.123456789, 2, "40000.123456789"),
])  # fmt: skip
def test_padded_never_rounds(x: float, decimals: int, text: str) -> None:
    assert padded(x, decimals) == text
    assert float(padded(x, decimals)) == x


@pytest.mark.parametrize("endpoint", ["order POST", "order GET", "order DELETE", "openOrders"])
@pytest.mark.parametrize("status", ["NEW", "FILLED", "CANCELED", "EXPIRED_IN_MATCH"])
def test_the_fakes_documented_shapes_read_back(endpoint: str, status: str) -> None:
    """The fake's documented answers carry the keys of the matching documented example and
    read back to the state they were written from."""
    filled = status == "FILLED"
    state = OrderState("BTCUSDT", "at123", 77, "SELL", "STOP_MARKET", status,  # type: ignore[arg-type]
                       0.25, 0.25 if filled else 0.0, 43210.123456 if filled else 0.0, 0.0,
                       43000.5, False, True, 1_704_067_200_123)  # fmt: skip
    rules = SymbolRules("BTCUSDT", step_size=0.001, min_qty=0.001, tick_size=0.1)
    row = documented_order_json(state, rules, endpoint)
    doc = {
        "order POST": "new_order.json",
        "order GET": "query_order.json",
        "order DELETE": "cancel_order.json",
        "openOrders": "query_order.json",
    }[endpoint]
    trailing_only = {"activatePrice", "priceRate"}
    assert set(row) == set(load(doc)) - trailing_only
    assert (row["origQty"], row["stopPrice"]) == ("0.250", "43000.5")
    if endpoint == "order DELETE" and filled:
        return  # a cancel answer of a filled order does not occur (-2011)
    assert parse_order(json.loads(json.dumps(row)), WHERE) == state


def test_the_fakes_manual_trailing_stop_is_the_documented_shape() -> None:
    row = trailing_stop_json("BTCUSDT", "manual-1", 9_000_000_001)
    assert set(row) == set(load("query_order.json"))
    st = parse_order(row, WHERE)
    assert st.foreign
    assert (st.type, st.status, st.order_id) == ("TRAILING_STOP_MARKET", "NEW", 9_000_000_001)
