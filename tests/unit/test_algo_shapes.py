"""The Algo Order API's documented answers (tests/fixtures/binance/orders/*algo*.json) read by
the order client's parsers, the fake exchange's algo shapes read back to the state they were
written from, and conditional orders seen as order states (:func:`conditional_state`)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from atra.adapters.orders import (
    ALGO_ONLY_MSG,
    ALGO_STATUSES,
    CONDITIONAL_TYPES,
    ERR_ALGO_ONLY,
    AlgoState,
    OrderRequest,
    OrderState,
    SymbolRules,
    conditional_state,
)
from atra.adapters.trading.algo_wire import (
    algo_params,
    parse_algo_cancel,
    parse_algo_order,
    parse_algo_orders,
)
from atra.errors import ExchangeError, OrderRejected
from atra.sim.algo_desk import algo_json, cancel_json, documented_algo_json, manual_algo_json

SHAPES = Path(__file__).resolve().parents[1] / "fixtures" / "binance" / "orders"
WHERE = "binance perp GET /fapi/v1/algoOrder"


def load(name: str) -> Any:
    return json.loads((SHAPES / name).read_text(encoding="utf-8"))


# ---- the documented examples -------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "status", "updated"),
    [
        ("new_algo_order.json", "NEW", 1750485492076),
        ("query_algo_order.json", "CANCELED", 1750514545091),
    ],
)
def test_documented_algo_answers_parse(name: str, status: str, updated: int) -> None:
    row = load(name)
    a = parse_algo_order(row, WHERE)
    assert (a.algo_id, a.client_algo_id, a.symbol) == (2146760, "6B2I9XVcJpCjqPAJ4YoFX7", "BNBUSDT")
    assert (a.order_type, a.side, a.algo_status) == ("TAKE_PROFIT", "SELL", status)
    assert (a.quantity, a.trigger_price, a.price) == (0.01, 750.0, 750.0)
    assert (a.reduce_only, a.close_position, a.actual_order_id) == (False, False, None)
    assert (a.update_time_ms, a.create_time_ms) == (updated, 1750485492076)
    st = conditional_state(a, None, WHERE)
    assert st.conditional
    assert st.foreign  # a TAKE_PROFIT limit order: ATRA never places one
    assert (st.order_id, st.status, st.stop_price, st.executed_qty) == (2146760, status, 750.0, 0.0)


def test_the_documented_new_algo_order_has_no_actual_order_fields() -> None:
    row = load("new_algo_order.json")
    assert not {"actualOrderId", "actualPrice"} & set(row)  # as documented
    assert (row["activatePrice"], row["icebergQuantity"]) == ("", None)


def test_documented_open_algo_orders_parse() -> None:
    (a,) = parse_algo_orders(load("open_algo_orders.json"), "binance perp GET openAlgoOrders")
    assert (a.algo_id, a.client_algo_id) == (2148627, "MRumok0dkhrP4kCm12AHaB")
    assert a.algo_status == "NEW"
    assert (a.actual_order_id, a.actual_price, a.actual_qty) == (None, 0.0, None)
    assert not conditional_state(a, None, WHERE).is_final
    assert set(load("open_algo_orders.json")[0]) == set(load("query_algo_order.json"))  # one shape


def test_documented_cancel_answer_parses_and_carries_no_state() -> None:
    row = load("cancel_algo_order.json")
    assert parse_algo_cancel(row, WHERE) == (2146760, "6B2I9XVcJpCjqPAJ4YoFX7")
    assert parse_algo_cancel(row | {"code": 200}, WHERE)[0] == 2146760  # a number is read too
    with pytest.raises(ExchangeError, match=r"cancel answer code '400'"):
        parse_algo_cancel(row | {"code": "400", "msg": "nope"}, WHERE)
    with pytest.raises(ExchangeError, match="field clientAlgoId"):
        parse_algo_cancel({"algoId": 1, "code": "200"}, WHERE)


def test_the_documented_refusal_of_the_old_route() -> None:
    assert load("order_type_algo_only.json") == {"code": ERR_ALGO_ONLY, "msg": ALGO_ONLY_MSG}


@pytest.mark.parametrize("status", sorted(ALGO_STATUSES))
@pytest.mark.parametrize("type_", sorted(CONDITIONAL_TYPES))
def test_every_documented_algo_status_and_type_parses(status: str, type_: str) -> None:
    row = load("query_algo_order.json") | {"algoStatus": status, "orderType": type_}
    a = parse_algo_order(row, WHERE)
    assert (a.algo_status, a.order_type) == (status, type_)


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"algoId": "x1"}, "algoId"),
        ({"algoType": "VP"}, "algoType"),
        ({"side": "HOLD"}, "side"),
        ({"algoStatus": "WORKING"}, "algoStatus"),
        ({"triggerPrice": "n/a"}, "triggerPrice"),
        ({"quantity": None}, "quantity"),
        ({"closePosition": "false"}, "closePosition"),
        ({"updateTime": "1750514545091"}, "updateTime"),
        ({"actualOrderId": "12a"}, "actualOrderId"),
        ({"actualPrice": "abc"}, "actualPrice"),
    ],
)
def test_parse_algo_order_names_the_bad_field(over: dict[str, object], field: str) -> None:
    with pytest.raises(ExchangeError, match=rf"^{WHERE}: field {field} "):
        parse_algo_order(load("query_algo_order.json") | over, WHERE)


def test_parse_algo_orders_refuses_a_non_list() -> None:
    with pytest.raises(ExchangeError, match="expected a list of algo orders, got dict"):
        parse_algo_orders(load("query_algo_order.json"), WHERE)
    with pytest.raises(ExchangeError, match=r"\[0\]: expected an algo order object, got str"):
        parse_algo_orders(["x"], WHERE)


# ---- the fake exchange's algo shapes ---------------------------------------------------------

ETH = SymbolRules("ETHUSDT", step_size=0.001, min_qty=0.001, tick_size=0.01)


def algo(**over: Any) -> AlgoState:
    base: dict[str, Any] = dict(
        symbol="ETHUSDT", client_algo_id="sl-1", algo_id=7, side="SELL", order_type="STOP_MARKET",
        algo_status="NEW", quantity=0.0, trigger_price=97.5, price=0.0, reduce_only=False,
        close_position=True, update_time_ms=1_700_000_000_000, create_time_ms=1_700_000_000_000,
    )  # fmt: skip
    return AlgoState(**(base | over))


@pytest.mark.parametrize(
    ("endpoint", "example"),
    [
        ("algoOrder POST", "new_algo_order.json"),
        ("algoOrder GET", "query_algo_order.json"),
        ("openAlgoOrders", "open_algo_orders.json"),
    ],
)
def test_the_fake_writes_the_documented_keys_in_order_and_reads_back(
    endpoint: str, example: str
) -> None:
    doc = load(example)
    doc = doc[0] if isinstance(doc, list) else doc
    a = algo()
    row = documented_algo_json(a, ETH, endpoint)
    assert list(row) == list(doc)  # every documented field, in the documented order
    assert (row["quantity"], row["triggerPrice"], row["price"]) == ("0.000", "97.50", "0.00")
    back = parse_algo_order(json.loads(json.dumps(row)), WHERE)
    documented_zero = 0.0 if "actualPrice" in row else None  # "0.00000" before a trigger
    assert back == replace(a, actual_price=documented_zero)
    assert parse_algo_order(json.loads(json.dumps(algo_json(a))), WHERE) == a


def test_a_triggered_algo_order_reads_back_with_its_order() -> None:
    a = algo(algo_status="FINISHED", actual_order_id=42, actual_qty=0.3, actual_price=97.4)
    row = documented_algo_json(a, ETH, "algoOrder GET")
    assert (row["actualOrderId"], row["actualPrice"], row["triggerTime"]) == (
        "42",
        "97.40000",
        a.update_time_ms,
    )
    back = parse_algo_order(row, WHERE)
    assert (back.actual_order_id, back.actual_price) == (42, 97.4)
    assert back.actual_qty is None  # the documented query shape has no actualQty
    compact = parse_algo_order(algo_json(a), WHERE)
    assert (compact.actual_qty, compact.actual_price) == (0.3, 97.4)


def test_manual_algo_json_is_the_documented_open_example_shape() -> None:
    row = manual_algo_json("BTCUSDT", "web_tp", 9_000_000_002)
    assert list(row) == list(load("open_algo_orders.json")[0])
    assert parse_algo_order(row, WHERE).order_type == "TAKE_PROFIT"
    assert list(cancel_json(1, "x")) == list(load("cancel_algo_order.json"))


# ---- conditional orders as order states ------------------------------------------------------


def child(status: str, executed: float, price: float, t: int) -> OrderState:
    return OrderState(
        symbol="ETHUSDT", client_order_id="sl-1", order_id=42, side="SELL", type="MARKET",
        status=status, orig_qty=0.0, executed_qty=executed, avg_price=price, price=0.0,  # type: ignore[arg-type]
        stop_price=0.0, reduce_only=False, close_position=True, update_time_ms=t,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("status", "expected"),
    [("NEW", "NEW"), ("TRIGGERING", "NEW"), ("CANCELED", "CANCELED"), ("EXPIRED", "EXPIRED"),
     ("REJECTED", "REJECTED")],
)  # fmt: skip
def test_conditional_state_before_or_without_a_fill(status: str, expected: str) -> None:
    st = conditional_state(algo(algo_status=status), None, WHERE)
    assert (st.status, st.executed_qty, st.avg_price) == (expected, 0.0, 0.0)
    assert st.algo_status == status
    assert (st.client_order_id, st.order_id, st.type, st.stop_price) == (
        "sl-1",
        7,
        "STOP_MARKET",
        97.5,
    )
    assert not st.foreign  # ATRA places STOP_MARKET orders


def test_conditional_state_of_a_triggered_order_is_its_fill() -> None:
    a = algo(algo_status="FINISHED", actual_order_id=42)
    st = conditional_state(a, child("FILLED", 0.3, 97.4, 1_700_000_360_000), WHERE)
    assert (st.status, st.executed_qty, st.avg_price) == ("FILLED", 0.3, 97.4)
    assert (st.update_time_ms, st.actual_order_id, st.algo_status) == (1_700_000_360_000, 42,
                                                                       "FINISHED")  # fmt: skip
    expired = conditional_state(a, child("EXPIRED", 0.0, 0.0, 5), WHERE)  # nothing to close
    assert (expired.status, expired.is_final) == ("EXPIRED", True)


def test_conditional_state_without_its_order_uses_actual_qty_or_refuses() -> None:
    done = algo(algo_status="FINISHED", actual_order_id=42, actual_qty=0.3, actual_price=97.4)
    assert conditional_state(done, None, WHERE).status == "FILLED"
    nothing = algo(algo_status="FINISHED", actual_order_id=42, actual_qty=0.0, actual_price=0.0)
    assert conditional_state(nothing, None, WHERE).status == "EXPIRED"
    partly = algo(algo_status="TRIGGERED", actual_order_id=42, actual_qty=0.1, actual_price=97.4)
    assert conditional_state(partly, None, WHERE).status == "PARTIALLY_FILLED"
    unknown = algo(algo_status="FINISHED", actual_order_id=42, actual_price=97.4)
    with pytest.raises(ExchangeError, match="is FINISHED but neither its order"):
        conditional_state(unknown, None, WHERE)  # a fill is never guessed


# ---- the request ---------------------------------------------------------------------------------


def test_algo_params_of_a_close_position_stop_and_a_reduce_only_stop() -> None:
    stop = OrderRequest("ETHUSDT", "SELL", "STOP_MARKET", "sl-1", stop_price=0.1 + 97.2,
                        close_position=True)  # fmt: skip
    assert algo_params(stop, ETH) == {
        "algoType": "CONDITIONAL",
        "symbol": "ETHUSDT",
        "side": "SELL",
        "type": "STOP_MARKET",
        "clientAlgoId": "sl-1",
        "triggerPrice": "97.3",  # at the tick, no float noise
        "workingType": "CONTRACT_PRICE",
        "closePosition": "true",
    }
    part = OrderRequest("ETHUSDT", "BUY", "TAKE_PROFIT_MARKET", "tp-1", quantity=0.3,
                        stop_price=90.0, reduce_only=True)  # fmt: skip
    params = algo_params(part, ETH)
    assert (params["quantity"], params["reduceOnly"], "closePosition" in params) == (
        "0.3",
        "true",
        False,
    )


BOTH_QTY_AND_CLOSE = OrderRequest(
    "X", "SELL", "STOP_MARKET", "a", quantity=1.0, stop_price=1.0, close_position=True
)


@pytest.mark.parametrize(
    ("order", "match"),
    [
        (OrderRequest("X", "SELL", "LIMIT", "a", quantity=1.0, price=1.0), "not supported"),
        (OrderRequest("X", "SELL", "STOP_MARKET", "a", close_position=True), "trigger price"),
        (OrderRequest("X", "SELL", "STOP_MARKET", "a", stop_price=1.0), "either a quantity"),
        (BOTH_QTY_AND_CLOSE, "either a quantity"),
    ],
)
def test_algo_params_refuse_impossible_orders(order: OrderRequest, match: str) -> None:
    with pytest.raises(OrderRejected, match=match):
        algo_params(order)
