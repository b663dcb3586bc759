"""Binance spot order wire formats (``/api/v3``): the parameters of a new order and of an OCO
order list, and the parsing of spot order, order list, account and exchangeInfo filter JSON in
the shapes Binance documents (tests/fixtures/binance/spot/).

Spot orders differ from USDT-M ones: no ``reduceOnly`` / ``closePosition``, no ``avgPrice``
(the average fill price is ``cummulativeQuoteQty / executedQty``), a cancel answer carries the
order's own id in ``origClientOrderId`` (its ``clientOrderId`` is the cancel's), and a new
order answered with ``newOrderRespType=ACK`` has no status (read: an unreadable answer, the
order is looked up by client id). The two types ATRA places in an OCO are read as their
futures twins so that the broker's vocabulary stays one: ``LIMIT_MAKER`` as ``LIMIT`` and
``STOP_LOSS`` (a stop that sends a MARKET order when triggered) as ``STOP_MARKET``; any other
type is kept as Binance writes it (:attr:`OrderState.foreign`: reported, never managed).

Parsers are strict: a missing or malformed field is a one-line
:class:`~atra.errors.ExchangeError` naming the request and the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, cast, get_args

from atra.adapters.orders import AssetBalance, OrderRequest, OrderSide, OrderState, OrderStatus
from atra.adapters.trading.wire import (
    choice,
    core_params,
    exchange_symbols,
    format_decimal,
    integer,
    lot_and_price,
    mapping,
    number,
    parse_list,
    text,
    venue_id,
)
from atra.errors import ExchangeError, OrderRejected

__all__ = [
    "SPOT_TYPES",
    "OcoRequest",
    "SpotRules",
    "oco_params",
    "parse_account",
    "parse_order_list",
    "parse_spot_filters",
    "parse_spot_order",
    "parse_spot_orders",
    "spot_order_params",
]

SPOT_TYPES: Final[dict[str, str]] = {"LIMIT_MAKER": "LIMIT", "STOP_LOSS": "STOP_MARKET"}
"""The spot types ATRA places in an OCO -> the type its orders are read as."""
_SIDES: Final[frozenset[str]] = frozenset({"BUY", "SELL"})
_STATUSES: Final[frozenset[str]] = frozenset(get_args(OrderStatus))
_SPOT_STATUSES: Final[dict[str, str]] = {"PENDING_CANCEL": "CANCELED"}
"""Spot statuses futures do not have -> the status they are read as."""
LIST_STATUSES: Final[frozenset[str]] = frozenset({"EXECUTING", "ALL_DONE", "REJECT"})


@dataclass(frozen=True, slots=True)
class SpotRules:
    """Order filters of one spot symbol: LOT_SIZE (step, minimum), PRICE_FILTER (tick) and
    NOTIONAL / MIN_NOTIONAL (``min_notional``, 0.0 without either)."""

    symbol: str
    step_size: float
    min_qty: float
    tick_size: float
    min_notional: float


@dataclass(frozen=True, slots=True)
class OcoRequest:
    """A SELL OCO that protects a long spot holding: a LIMIT_MAKER take-profit above the price
    (``take_price``) and a STOP_LOSS below it (``stop_price``: a MARKET sell once the last
    price trades at or through it), both for ``quantity``. Each leg has its own client id;
    ``list_client_order_id`` names the list."""

    symbol: str
    quantity: float
    take_price: float
    stop_price: float
    take_client_order_id: str
    stop_client_order_id: str
    list_client_order_id: str


def spot_order_params(order: OrderRequest, rules: SpotRules | None = None) -> dict[str, str | int]:
    """``POST /api/v3/order`` parameters of a MARKET or LIMIT (GTC) order, numbers at the
    symbol's precision when ``rules`` are known, ``newOrderRespType=FULL``. Futures-only flags
    (``close_position``) and types (STOP_MARKET, ...) are OrderRejected: spot has no such
    order; ``reduce_only`` is not sent (a spot SELL only ever sells the base asset held)."""
    head = f"{order.symbol} {order.type} {order.client_order_id}"
    if order.side not in _SIDES or order.type not in ("MARKET", "LIMIT"):
        raise OrderRejected(f"{head}: spot orders are MARKET or LIMIT here, got {order.type!r}")
    if order.close_position:
        raise OrderRejected(f"{head}: spot has no closePosition order")
    if order.quantity is None or order.quantity <= 0.0:
        raise OrderRejected(f"{head}: a spot order needs a quantity > 0")
    step, tick = (rules.step_size, rules.tick_size) if rules else (None, None)
    params = core_params(order, head, step, tick)
    params["newOrderRespType"] = "FULL"
    return params


def oco_params(oco: OcoRequest, rules: SpotRules | None = None) -> dict[str, str | int]:
    """``POST /api/v3/orderList/oco`` parameters of a SELL OCO: above a LIMIT_MAKER at
    ``take_price``, below a STOP_LOSS at ``stop_price``. ``take_price <= stop_price`` is
    OrderRejected (Binance requires above price > last price > below stop price)."""
    head = f"{oco.symbol} OCO {oco.list_client_order_id}"
    if not oco.take_price > oco.stop_price > 0.0 or oco.quantity <= 0.0:
        raise OrderRejected(
            f"{head}: needs quantity > 0 and take price {oco.take_price} > stop price"
            f" {oco.stop_price} > 0"
        )
    step = rules.step_size if rules else None
    tick = rules.tick_size if rules else None
    return {
        "symbol": oco.symbol,
        "listClientOrderId": oco.list_client_order_id,
        "side": "SELL",
        "quantity": format_decimal(oco.quantity, step),
        "aboveType": "LIMIT_MAKER",
        "aboveClientOrderId": oco.take_client_order_id,
        "abovePrice": format_decimal(oco.take_price, tick),
        "belowType": "STOP_LOSS",
        "belowClientOrderId": oco.stop_client_order_id,
        "belowStopPrice": format_decimal(oco.stop_price, tick),
        "newOrderRespType": "FULL",
    }


def _time(row: Mapping[str, Any], where: str) -> int:
    """The order's last update time: ``updateTime`` (a query), else ``transactTime`` (a new
    order, a cancel since 2023); a cancel answer documented without either reads as 0 (the
    trader then queries the order)."""
    for key in ("updateTime", "transactTime"):
        if key in row:
            return integer(row, key, where)
    if "origClientOrderId" in row:
        return 0
    raise ExchangeError(f"{where}: no updateTime or transactTime field")


def parse_spot_order(payload: object, where: str) -> OrderState:
    """A spot order object (New Order RESULT / FULL, Query Order, Cancel Order, Current Open
    Orders, an OCO's ``orderReports``) -> :class:`OrderState` (see the module docstring for
    the types, the statuses, the average price and the cancel answer's client id)."""
    row = mapping(payload, where, "a spot order object")
    symbol = text(row, "symbol", where)
    cid = text(row, "origClientOrderId" if "origClientOrderId" in row else "clientOrderId", where)
    order_id = venue_id(row, "orderId", where)
    side = cast(OrderSide, choice(row, "side", _SIDES, where))
    raw_type = text(row, "type", where)
    raw_status = text(row, "status", where)
    status = _SPOT_STATUSES.get(raw_status, raw_status)
    if status not in _STATUSES:
        raise ExchangeError(f"{where}: field status has unknown value {raw_status!r:.40}")
    executed = number(row, "executedQty", where)
    quote = number(row, "cummulativeQuoteQty", where)
    if quote < 0.0:  # Binance writes a negative value for an order placed before 2018
        raise ExchangeError(f"{where}: cummulativeQuoteQty {quote} < 0: no fill price")
    return OrderState(
        symbol=symbol,
        client_order_id=cid,
        order_id=order_id,
        side=side,
        type=SPOT_TYPES.get(raw_type, raw_type),
        status=cast(OrderStatus, status),
        orig_qty=number(row, "origQty", where),
        executed_qty=executed,
        avg_price=quote / executed if executed > 0.0 else 0.0,
        price=number(row, "price", where),
        stop_price=number(row, "stopPrice", where) if "stopPrice" in row else 0.0,
        reduce_only=False,
        close_position=False,
        update_time_ms=_time(row, where),
    )


def parse_spot_orders(payload: object, where: str) -> list[OrderState]:
    """A list of spot order objects (openOrders)."""
    return parse_list(payload, where, "orders", parse_spot_order)


@dataclass(frozen=True, slots=True)
class OrderList:
    """An order list (OCO) as Binance reports it: its status and its legs' client ids (and
    their states when the answer holds ``orderReports``)."""

    symbol: str
    list_client_order_id: str
    order_list_id: int
    list_order_status: str
    leg_client_ids: tuple[str, ...]
    reports: tuple[OrderState, ...]


def parse_order_list(payload: object, where: str) -> OrderList:
    """An order list object (New OCO, Query / Cancel Order list, Open Order lists' rows)."""
    row = mapping(payload, where, "an order list object")
    symbol = text(row, "symbol", where)
    list_cid = text(row, "listClientOrderId", where)
    list_id = venue_id(row, "orderListId", where)
    status = choice(row, "listOrderStatus", LIST_STATUSES, where)
    orders = row.get("orders")
    if not isinstance(orders, list) or not orders:
        raise ExchangeError(f"{where}: field orders missing or not a non-empty list")
    legs = tuple(
        text(mapping(o, f"{where} orders[{i}]"), "clientOrderId", f"{where} orders[{i}]")
        for i, o in enumerate(orders)
    )
    raw = row.get("orderReports", [])
    if not isinstance(raw, list):
        raise ExchangeError(f"{where}: field orderReports is not a list")
    reports = tuple(parse_spot_order(r, f"{where} orderReports[{i}]") for i, r in enumerate(raw))
    return OrderList(symbol, list_cid, list_id, status, legs, reports)


def parse_account(payload: object, where: str) -> list[AssetBalance]:
    """``GET /api/v3/account`` -> one :class:`AssetBalance` per asset: ``balance`` = free +
    locked (what the account holds), ``available`` = free."""
    info = mapping(payload, where, "an account object")
    rows = info.get("balances")
    if not isinstance(rows, list):
        raise ExchangeError(f"{where}: field balances missing or not a list")
    out: list[AssetBalance] = []
    for i, item in enumerate(rows):
        here = f"{where} balances[{i}]"
        row = mapping(item, here, "a balance object")
        free, locked = number(row, "free", here), number(row, "locked", here)
        out.append(AssetBalance(text(row, "asset", here), free + locked, free))
    return out


def parse_spot_filters(
    payload: object, where: str
) -> tuple[dict[str, SpotRules], dict[str, str], dict[str, str]]:
    """Spot exchangeInfo -> ``({symbol: SpotRules}, {symbol: filter it lacks}, {symbol: base
    asset})``. LOT_SIZE and PRICE_FILTER are required; NOTIONAL (``minNotional``) or the older
    MIN_NOTIONAL give ``min_notional`` (0.0 when neither is listed)."""
    rules: dict[str, SpotRules] = {}
    missing: dict[str, str] = {}
    bases: dict[str, str] = {}
    for sym, row, filters in exchange_symbols(payload, where):
        bases[sym] = text(row, "baseAsset", f"{where} {sym}")
        found = lot_and_price(sym, filters, where)
        if isinstance(found, str):
            missing[sym] = found
            continue
        notional = filters.get("NOTIONAL") or filters.get("MIN_NOTIONAL")
        rules[sym] = SpotRules(
            sym,
            step_size=found.step_size,
            min_qty=found.min_qty,
            tick_size=found.tick_size,
            min_notional=0.0
            if notional is None
            else number(notional, "minNotional", f"{where} {sym} {notional.get('filterType')}"),
        )
    return rules, missing, bases
