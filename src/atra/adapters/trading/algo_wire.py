"""Binance USDT-M Algo Order API wire formats (conditional orders, since 2025-12-09).

:func:`algo_params` writes the ``POST /fapi/v1/algoOrder`` parameters of a conditional
:class:`~atra.adapters.orders.OrderRequest` (``algoType=CONDITIONAL``, ``triggerPrice``,
``clientAlgoId``); :func:`parse_algo_order` / :func:`parse_algo_orders` read the answers of New
Algo Order, Query Algo Order and Current All Algo Open Orders into
:class:`~atra.adapters.orders.AlgoState`; :func:`parse_algo_cancel` reads the answer of Cancel
Algo Order (``{"algoId", "clientAlgoId", "code": "200", "msg": "success"}``: no order state).
The documented examples are tests/fixtures/binance/orders/*algo*.json.

Parsers are strict like :mod:`atra.adapters.trading.wire`'s: a missing or malformed field is a
one-line :class:`~atra.errors.ExchangeError` naming the request and the field. An algo order of
a type ATRA does not place is kept with its type string (foreign), never an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, cast

from atra.adapters.orders import (
    ALGO_STATUSES,
    AlgoState,
    AlgoStatus,
    OrderRequest,
    OrderSide,
    SymbolRules,
)
from atra.adapters.trading.wire import (
    flag,
    format_decimal,
    integer,
    mapping,
    number,
    parse_list,
    text,
    venue_id,
)
from atra.errors import ExchangeError, OrderRejected

ALGO_TYPE: Final[str] = "CONDITIONAL"
_SIDES: Final[frozenset[str]] = frozenset({"BUY", "SELL"})
PLACED_TYPES: Final[frozenset[str]] = frozenset({"STOP_MARKET", "TAKE_PROFIT_MARKET"})
"""The conditional types ATRA places (market orders once triggered)."""


def algo_params(order: OrderRequest, rules: SymbolRules | None = None) -> dict[str, str | int]:
    """The ``POST /fapi/v1/algoOrder`` parameters of a conditional ``order``: ``triggerPrice``
    at the tick, ``clientAlgoId`` = the order's client id, ``closePosition=true`` (no quantity)
    or ``quantity`` with ``reduceOnly``. A request Binance would refuse for its shape is
    OrderRejected (no request is sent)."""
    head = f"{order.symbol} {order.type} {order.client_order_id}"
    if order.side not in _SIDES or order.type not in PLACED_TYPES:
        raise OrderRejected(f"{head}: side {order.side!r} / type {order.type!r} not supported")
    if order.stop_price is None:
        raise OrderRejected(f"{head}: a {order.type} order needs a trigger price")
    if order.close_position == (order.quantity is not None):
        raise OrderRejected(f"{head}: a conditional order has either a quantity or closePosition")
    params: dict[str, str | int] = {
        "algoType": ALGO_TYPE,
        "symbol": order.symbol,
        "side": order.side,
        "type": order.type,
        "clientAlgoId": order.client_order_id,
        "triggerPrice": format_decimal(order.stop_price, rules.tick_size if rules else None),
        "workingType": "CONTRACT_PRICE",
    }
    if order.close_position:
        params["closePosition"] = "true"
    else:
        assert order.quantity is not None  # checked above
        params["quantity"] = format_decimal(order.quantity, rules.step_size if rules else None)
        if order.reduce_only:
            params["reduceOnly"] = "true"
    return params


def _optional_id(row: Mapping[str, Any], key: str, where: str) -> int | None:
    """``actualOrderId``: absent or ``""`` before the order triggered, else an order id."""
    value = row.get(key)
    if value is None or value == "":
        return None
    return venue_id(row, key, where)


def _optional_number(row: Mapping[str, Any], key: str, where: str) -> float | None:
    return number(row, key, where) if row.get(key) is not None else None


def parse_algo_order(payload: object, where: str) -> AlgoState:
    """An algo order object (New Algo Order, Query Algo Order, an item of Current All Algo Open
    Orders) -> :class:`AlgoState`. ``algoId`` may be a number or a string of digits;
    ``actualOrderId`` is ``""`` (or absent) until the order triggered; ``actualQty`` /
    ``actualPrice`` are read when present. Otherwise strict (see the module docstring)."""
    row = mapping(payload, where, "an algo order object")
    symbol = text(row, "symbol", where)  # fields read in this order: errors name the first
    client_algo_id = text(row, "clientAlgoId", where)
    algo_id = venue_id(row, "algoId", where)
    algo_type = text(row, "algoType", where)
    if algo_type != ALGO_TYPE:
        raise ExchangeError(f"{where}: field algoType has unknown value {algo_type!r:.40}")
    side = text(row, "side", where)
    if side not in _SIDES:
        raise ExchangeError(f"{where}: field side has unknown value {side!r:.40}")
    order_type = text(row, "orderType", where)
    status = text(row, "algoStatus", where)
    if status not in ALGO_STATUSES:
        raise ExchangeError(f"{where}: field algoStatus has unknown value {status!r:.40}")
    return AlgoState(
        symbol=symbol,
        client_algo_id=client_algo_id,
        algo_id=algo_id,
        side=cast(OrderSide, side),
        order_type=order_type,
        algo_status=cast(AlgoStatus, status),
        quantity=number(row, "quantity", where),
        trigger_price=number(row, "triggerPrice", where),
        price=number(row, "price", where),
        reduce_only=flag(row, "reduceOnly", where),
        close_position=flag(row, "closePosition", where),
        update_time_ms=integer(row, "updateTime", where),
        actual_order_id=_optional_id(row, "actualOrderId", where),
        actual_qty=_optional_number(row, "actualQty", where),
        actual_price=_optional_number(row, "actualPrice", where),
        create_time_ms=integer(row, "createTime", where),
    )


def parse_algo_orders(payload: object, where: str) -> list[AlgoState]:
    """A list of algo order objects (``openAlgoOrders``)."""
    return parse_list(payload, where, "algo orders", parse_algo_order)


def parse_algo_cancel(payload: object, where: str) -> tuple[int, str]:
    """Cancel Algo Order's answer -> ``(algoId, clientAlgoId)``; its ``code`` must be 200 (a
    string or a number, as Binance writes either)."""
    row = mapping(payload, where, "a cancel answer")
    ids = venue_id(row, "algoId", where), text(row, "clientAlgoId", where)
    code = row.get("code")
    if str(code) != "200":
        raise ExchangeError(f"{where}: cancel answer code {code!r:.40}, msg {row.get('msg')!r:.80}")
    return ids
