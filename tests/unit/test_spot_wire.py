"""Spot order wire formats: Binance's documented examples (tests/fixtures/binance/spot/) parse,
the fake exchange answers in the same shapes, and the POST parameters are Binance's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from atra.adapters.orders import OrderRequest
from atra.adapters.trading.spot_wire import (
    OcoRequest,
    SpotRules,
    oco_params,
    parse_account,
    parse_order_list,
    parse_spot_filters,
    parse_spot_order,
    parse_spot_orders,
    spot_order_params,
)
from atra.adapters.trading.wire import describe
from atra.errors import ExchangeError, OrderRejected
from atra.sim.spot_desk import spot_list_json, spot_order_json
from atra.sim.spot_engine import SpotList, SpotOrder

FIXTURES = Path(__file__).parents[1] / "fixtures" / "binance" / "spot"


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def test_documented_new_order_answers() -> None:
    for name in ("new_order_result.json", "new_order_full.json"):
        st = parse_spot_order(load(name), name)
        assert (st.symbol, st.client_order_id, st.order_id) == (
            "BTCUSDT", "6gCrw2kRUAF9CvJDGP16IP", 28,
        )  # fmt: skip
        assert (st.type, st.side, st.status) == ("MARKET", "SELL", "FILLED")
        assert (st.orig_qty, st.executed_qty, st.avg_price) == (10.0, 10.0, 1.0)
        assert st.update_time_ms == 1507725176595  # transactTime
        assert not st.foreign
        assert not st.reduce_only
    # ACK holds no status: unreadable as an order (the trader looks the order up)
    with pytest.raises(ExchangeError, match=r"^ack: field side missing or not a string"):
        parse_spot_order(load("new_order_ack.json"), "ack")


def test_documented_query_cancel_and_open_orders() -> None:
    q = parse_spot_order(load("query_order.json"), "q")
    assert (q.client_order_id, q.type, q.status, q.price, q.stop_price) == (
        "myOrder1", "LIMIT", "NEW", 0.1, 0.0,
    )  # fmt: skip
    assert (q.executed_qty, q.avg_price, q.update_time_ms) == (0.0, 0.0, 1499827319559)
    c = parse_spot_order(load("cancel_order.json"), "c")
    # the order's own id is origClientOrderId; clientOrderId names the cancel
    assert (c.client_order_id, c.order_id, c.status) == ("myOrder1", 4, "CANCELED")
    assert c.update_time_ms == 0  # documented without transactTime: the trader queries it
    (o,) = parse_spot_orders(load("open_orders.json"), "open")
    assert o == q


def test_documented_order_lists() -> None:
    new = parse_order_list(load("new_oco.json"), "oco")
    assert (new.list_client_order_id, new.order_list_id, new.list_order_status) == (
        "JYVpp3F0f5CAG15DhtrqLp", 0, "EXECUTING",
    )  # fmt: skip
    assert new.leg_client_ids == ("Kk7sqHb9J6mJWTMDVW7Vos", "xTXKaGYd4bluPVp78IVRvl")
    stop, take = new.reports
    assert (stop.type, stop.stop_price, stop.update_time_ms) == (
        "STOP_MARKET", 0.960664, 1563417480525,
    )  # fmt: skip
    assert (take.type, take.price) == ("LIMIT", 0.036435)  # LIMIT_MAKER
    done = parse_order_list(load("cancel_order_list.json"), "cancel")
    assert done.list_order_status == "ALL_DONE"
    limit_stop, maker = done.reports
    # a STOP_LOSS_LIMIT is a type ATRA never places: kept as written, foreign
    assert (limit_stop.type, limit_stop.foreign, limit_stop.status) == (
        "STOP_LOSS_LIMIT", True, "CANCELED",
    )  # fmt: skip
    assert (maker.client_order_id, maker.type, maker.foreign) == (
        "TXOvglzXuaubXAaENpaRCB", "LIMIT", False,
    )  # fmt: skip


def test_documented_account() -> None:
    btc, ltc = parse_account(load("account.json"), "account")
    assert (btc.asset, btc.balance, btc.available) == ("BTC", 4723846.89208129, 4723846.89208129)
    assert ltc.asset == "LTC"


def test_the_fake_answers_in_the_documented_shapes() -> None:
    """Every documented field, no other (the fake writes stopPrice on its STOP_LOSS legs,
    a conditional field, and FULL's fills)."""
    o = SpotOrder("BTCUSDT", "c1", 7, "BUY", "MARKET", 1.0, 0.0, 0.0, "FILLED", 1.0, 100.0,
                  update_ms=5, create_ms=5)  # fmt: skip
    for shape, name in (
        ("ACK", "new_order_ack.json"),
        ("RESULT", "new_order_result.json"),
        ("FULL", "new_order_full.json"),
        ("query", "query_order.json"),
    ):
        assert list(spot_order_json(o, shape)) == list(load(name)), shape
    documented = list(load("cancel_order.json"))  # and transactTime, as Binance writes it now
    assert list(spot_order_json(o, "cancel")) == [*documented[:5], "transactTime", *documented[5:]]
    assert set(spot_order_json(o, "FULL")["fills"][0]) == set(
        load("new_order_full.json")["fills"][0]
    )  # type: ignore[index]
    take = SpotOrder("BTCUSDT", "t", 8, "SELL", "LIMIT_MAKER", 1.0, 110.0, 0.0, list_cid="l",
                     list_id=1)  # fmt: skip
    stop = SpotOrder("BTCUSDT", "s", 9, "SELL", "STOP_LOSS", 1.0, 0.0, 90.0, list_cid="l",
                     list_id=1)  # fmt: skip
    listed = spot_list_json(SpotList("BTCUSDT", "l", 1, [take, stop]))
    assert list(listed) == list(load("new_oco.json"))
    doc_stop, doc_take = load("new_oco.json")["orderReports"]
    ours_stop, ours_take = listed["orderReports"]  # type: ignore[misc]
    assert list(ours_stop) == list(doc_stop)
    assert list(ours_take) == list(doc_take)
    assert parse_order_list(listed, "fake").reports[1].type == "LIMIT"


def test_the_fake_cancels_a_list_in_the_documented_shape() -> None:
    """Cancel Order list's answer: the documented fields, its ``orderReports`` without a time
    (read as 0: the broker looks each leg up for its time)."""
    take = SpotOrder("BTCUSDT", "t", 8, "SELL", "LIMIT_MAKER", 1.0, 110.0, 0.0, "CANCELED",
                     list_cid="l", list_id=1)  # fmt: skip
    stop = SpotOrder("BTCUSDT", "s", 9, "SELL", "STOP_LOSS", 1.0, 0.0, 90.0, "CANCELED",
                     list_cid="l", list_id=1)  # fmt: skip
    listed = spot_list_json(SpotList("BTCUSDT", "l", 1, [take, stop], "ALL_DONE"), "listcancel")
    documented = load("cancel_order_list.json")
    assert list(listed) == list(documented)
    assert (listed["listStatusType"], listed["listOrderStatus"]) == ("ALL_DONE", "ALL_DONE")
    doc_stop, doc_take = documented["orderReports"]
    ours_stop, ours_take = listed["orderReports"]  # type: ignore[misc]
    assert list(ours_stop) == list(doc_stop)
    assert list(ours_take) == list(doc_take)
    for answer in (listed, documented):
        parsed = parse_order_list(answer, "cancel")
        assert [r.status for r in parsed.reports] == ["CANCELED", "CANCELED"]
        assert [r.update_time_ms for r in parsed.reports] == [0, 0]
    ours = parse_order_list(listed, "fake")
    assert [r.client_order_id for r in ours.reports] == ["s", "t"]  # origClientOrderId


def test_bad_fields_are_one_line_errors() -> None:
    row = load("query_order.json") | {"executedQty": "x"}
    with pytest.raises(ExchangeError, match=r"^q: field executedQty is not a decimal string"):
        parse_spot_order(row, "q")
    with pytest.raises(ExchangeError, match=r"^q: field status has unknown value 'LOST'"):
        parse_spot_order(load("query_order.json") | {"status": "LOST"}, "q")
    with pytest.raises(ExchangeError, match=r"cummulativeQuoteQty -1.0 < 0"):
        parse_spot_order(load("query_order.json") | {"cummulativeQuoteQty": "-1"}, "q")
    with pytest.raises(ExchangeError, match=r"^a: field balances missing or not a list$"):
        parse_account({}, "a")
    bad_list = load("new_oco.json") | {"orders": []}
    with pytest.raises(ExchangeError, match=r"field orders missing or not a non-empty list"):
        parse_order_list(bad_list, "l")


def test_order_and_oco_parameters() -> None:
    rules = SpotRules("BTCUSDT", step_size=0.001, min_qty=0.001, tick_size=0.01, min_notional=5.0)
    buy = OrderRequest("BTCUSDT", "BUY", "MARKET", "e1", quantity=0.1 + 0.2)
    assert spot_order_params(buy, rules) == {
        "symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "newClientOrderId": "e1",
        "quantity": "0.3", "newOrderRespType": "FULL",
    }  # fmt: skip
    sell = OrderRequest("BTCUSDT", "SELL", "MARKET", "x1", quantity=0.3, reduce_only=True)
    assert "reduceOnly" not in spot_order_params(sell, rules)  # spot has no such flag
    with pytest.raises(OrderRejected, match="spot orders are MARKET or LIMIT"):
        spot_order_params(OrderRequest("BTCUSDT", "SELL", "STOP_MARKET", "s", stop_price=1.0))
    with pytest.raises(OrderRejected, match="no closePosition"):
        spot_order_params(OrderRequest("BTCUSDT", "SELL", "MARKET", "s", close_position=True))
    oco = OcoRequest("BTCUSDT", 0.3, 41_000.004, 39_000.0, "t1", "s1", "l1")
    assert oco_params(oco, rules) == {
        "symbol": "BTCUSDT", "listClientOrderId": "l1", "side": "SELL", "quantity": "0.3",
        "aboveType": "LIMIT_MAKER", "aboveClientOrderId": "t1", "abovePrice": "41000.004",
        "belowType": "STOP_LOSS", "belowClientOrderId": "s1", "belowStopPrice": "39000",
        "newOrderRespType": "FULL",
    }  # fmt: skip
    with pytest.raises(OrderRejected, match=r"take price 39000\.0 > stop price 41000\.0"):
        oco_params(OcoRequest("BTCUSDT", 0.3, 39_000.0, 41_000.0, "t", "s", "l"))


def test_spot_filters() -> None:
    info = {
        "symbols": [
            {"symbol": "BTCUSDT", "baseAsset": "BTC", "filters": [
                {"filterType": "PRICE_FILTER", "tickSize": "0.01000000"},
                {"filterType": "LOT_SIZE", "stepSize": "0.00001000", "minQty": "0.00001000"},
                {"filterType": "NOTIONAL", "minNotional": "5.00000000"},
            ]},
            {"symbol": "LTCBTC", "baseAsset": "LTC", "filters": [
                {"filterType": "PRICE_FILTER", "tickSize": "0.00000100"},
                {"filterType": "LOT_SIZE", "stepSize": "0.00100000", "minQty": "0.00100000"},
                {"filterType": "MIN_NOTIONAL", "minNotional": "0.00010000"},
            ]},
            {"symbol": "ETHUSDT", "baseAsset": "ETH", "filters": [
                {"filterType": "PRICE_FILTER", "tickSize": "0.01"},
            ]},
        ]
    }  # fmt: skip
    rules, missing, bases = parse_spot_filters(info, "info")
    assert rules["BTCUSDT"] == SpotRules("BTCUSDT", 0.00001, 0.00001, 0.01, 5.0)
    assert rules["LTCBTC"].min_notional == 0.0001
    assert missing == {"ETHUSDT": "LOT_SIZE"}
    assert bases == {"BTCUSDT": "BTC", "LTCBTC": "LTC", "ETHUSDT": "ETH"}


def test_spot_requests_are_described_as_spot() -> None:
    params = {"symbol": "BTCUSDT", "timestamp": 1, "signature": "s", "newClientOrderId": "c"}
    assert describe("POST", "/api/v3/order", params) == (
        "binance spot POST /api/v3/order symbol=BTCUSDT newClientOrderId=c"
    )
    assert describe("GET", "/fapi/v1/order", {}) == "binance perp GET /fapi/v1/order"
