"""Binance USDT-M futures order wire formats: numbers at the venue's precision, the POST
parameters of an order, and the parsing of order, positionRisk, balance and exchangeInfo
filter JSON, in every shape Binance documents (tests/fixtures/binance/orders/). The field
readers (:func:`mapping`, :func:`text`, :func:`number`, ...) serve
:mod:`atra.adapters.trading.algo_wire` too.

Numbers are handled in decimal arithmetic: :func:`round_step` / :func:`round_tick` bring a
quantity or a price to a lot size or a tick, :func:`format_decimal` writes it as Binance wants it
on the wire. Parsers are strict: a missing or malformed field is a one-line
:class:`~atra.errors.ExchangeError` naming the request and the field. :func:`describe` renders a
request for errors and logs without its signature, timestamp or key.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Final, TypeVar, cast, get_args

from atra.adapters.orders import (
    TRADED_TYPES,
    AssetBalance,
    OrderRequest,
    OrderSide,
    OrderState,
    OrderStatus,
    SymbolRules,
    VenuePosition,
)
from atra.errors import DataError, ExchangeError, OrderRejected

_SIDES: Final[frozenset[str]] = frozenset({"BUY", "SELL"})
_TYPES: Final[frozenset[str]] = TRADED_TYPES
_STOP_TYPES: Final[frozenset[str]] = frozenset({"STOP_MARKET", "TAKE_PROFIT_MARKET"})
_STATUSES: Final[frozenset[str]] = frozenset(get_args(OrderStatus))
_ID_DIGITS: Final[int] = 20  # an order id as a string: at most 20 digits (int64 range)
_HIDDEN: Final[frozenset[str]] = frozenset(
    {"timestamp", "recvWindow", "signature", "newOrderRespType"}
)
_NOISE: Final[Decimal] = Decimal("1e-9")  # relative float noise tolerated by the helpers

T = TypeVar("T")

# ---- numbers -------------------------------------------------------------------------------


def _dec(x: float, name: str) -> Decimal:
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
        raise DataError(f"{name} must be a finite number, got {x!r}")
    return Decimal(repr(float(x)))


def _step(step: float, name: str) -> Decimal:
    d = _dec(step, name)
    if d <= 0:
        raise DataError(f"{name} must be > 0, got {step!r}")
    return d


def round_step(value: float, step: float) -> float:
    """``value`` down to a multiple of ``step`` (a lot size), in decimal arithmetic: a value
    within float noise (1e-9 of a step) below a multiple counts as that multiple, so
    ``round_step(0.1 + 0.2, 0.1) == 0.3`` and ``round_step(0.7 / 0.1 * 0.1, 0.1) == 0.7``."""
    s = _step(step, "step")
    ratio = _dec(value, "value") / s
    n = (ratio + _NOISE).to_integral_value(rounding=ROUND_FLOOR)
    return float(n * s)


def round_tick(price: float, tick: float) -> float:
    """``price`` to the nearest multiple of ``tick`` (halves away from zero), in decimal
    arithmetic so that the result prints as the tick's decimals (``round_tick(0.3, 0.1)`` is
    ``0.3``, not ``0.30000000000000004``)."""
    t = _step(tick, "tick")
    n = (_dec(price, "price") / t).to_integral_value(rounding=ROUND_HALF_UP)
    return float(n * t)


def format_decimal(x: float, step: float | None = None) -> str:
    """``x`` as Binance wants it on the wire: plain notation, no exponent, no trailing zeros
    (``1e-05`` -> ``"0.00001"``). With ``step`` the value is written with the step's decimals
    when it is a multiple of the step up to float noise (``0.30000000000000004`` -> ``"0.3"``);
    a value off the step is written as it is (the venue refuses it: nothing is silently
    changed)."""
    d = _dec(x, "value")
    if step is not None:
        s = _step(step, "step")
        try:
            q = d.quantize(s.normalize(), rounding=ROUND_HALF_UP)
        except InvalidOperation:  # more digits than the context holds: leave it as it is
            q = d
        if abs(q - d) <= _NOISE * max(Decimal(1), abs(d)) and (q / s) == (q / s).to_integral():
            d = q
    text = format(d, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


# ---- wire formats -------------------------------------------------------------------------


def describe(method: str, path: str, params: Mapping[str, str | int]) -> str:
    """A request as errors and logs show it: no signature, timestamp, recvWindow or key."""
    shown = " ".join(f"{k}={v}" for k, v in params.items() if k not in _HIDDEN)
    market = "spot" if path.startswith("/api/") else "perp"
    return f"binance {market} {method} {path}" + (f" {shown}" if shown else "")


def order_params(order: OrderRequest, rules: SymbolRules | None = None) -> dict[str, str | int]:
    """The POST parameters of ``order``; numbers at the symbol's step / tick precision when
    ``rules`` are known. A request Binance would refuse for its shape is OrderRejected."""
    head = f"{order.symbol} {order.type} {order.client_order_id}"
    if order.side not in _SIDES or order.type not in _TYPES:
        raise OrderRejected(f"{head}: side {order.side!r} / type {order.type!r} not supported")
    tick = rules.tick_size if rules else None
    params = core_params(order, head, rules.step_size if rules else None, tick)
    if order.type in _STOP_TYPES:
        if order.stop_price is None:
            raise OrderRejected(f"{head}: a {order.type} order needs a stop price")
        params["stopPrice"] = format_decimal(order.stop_price, tick)
    if order.close_position:
        params["closePosition"] = "true"
    elif order.reduce_only:
        params["reduceOnly"] = "true"
    params["newOrderRespType"] = "RESULT"
    return params


def core_params(
    order: OrderRequest, head: str, step: float | None, tick: float | None
) -> dict[str, str | int]:
    """The parameters futures and spot orders share: symbol, side, type, client id, the
    quantity (when given) and, for a LIMIT order, its price (GTC); numbers at ``step`` /
    ``tick`` when known. A LIMIT order without a price is OrderRejected (``head`` names it)."""
    params: dict[str, str | int] = {
        "symbol": order.symbol,
        "side": order.side,
        "type": order.type,
        "newClientOrderId": order.client_order_id,
    }
    if order.quantity is not None:
        params["quantity"] = format_decimal(order.quantity, step)
    if order.type == "LIMIT":
        if order.price is None:
            raise OrderRejected(f"{head}: a LIMIT order needs a price")
        params["price"] = format_decimal(order.price, tick)
        params["timeInForce"] = "GTC"
    return params


def mapping(item: object, where: str, what: str = "an object") -> Mapping[str, Any]:
    """``item`` as a JSON object; anything else is an ExchangeError naming ``where``."""
    if not isinstance(item, dict):
        raise ExchangeError(f"{where}: expected {what}, got {type(item).__name__}")
    return cast(Mapping[str, Any], item)


def text(row: Mapping[str, Any], key: str, where: str) -> str:
    """Field ``key``: a non-empty string."""
    value = row.get(key)
    if not isinstance(value, str) or not value:
        raise ExchangeError(f"{where}: field {key} missing or not a string: {value!r:.40}")
    return value


def choice(row: Mapping[str, Any], key: str, allowed: frozenset[str], where: str) -> str:
    """Field ``key``: one of ``allowed``."""
    value = text(row, key, where)
    if value not in allowed:
        raise ExchangeError(f"{where}: field {key} has unknown value {value!r:.40}")
    return value


def number(row: Mapping[str, Any], key: str, where: str) -> float:
    """Field ``key``: a finite decimal string (Binance writes numbers as strings)."""
    value = row.get(key)
    try:
        out = float(value) if isinstance(value, str) else math.nan
    except ValueError:
        out = math.nan
    if not math.isfinite(out):
        raise ExchangeError(f"{where}: field {key} is not a decimal string: {value!r:.40}")
    return out


def integer(row: Mapping[str, Any], key: str, where: str) -> int:
    """Field ``key``: a JSON integer (times in ms)."""
    value = row.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ExchangeError(f"{where}: field {key} is not an integer: {value!r:.40}")
    return value


def venue_id(row: Mapping[str, Any], key: str, where: str) -> int:
    """An order id: a JSON integer, or a string of digits (both occur in Binance's answers)."""
    value = row.get(key)
    if isinstance(value, str) and value.isdigit() and len(value) <= _ID_DIGITS:
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise ExchangeError(f"{where}: field {key} is not an order id: {value!r:.40}")


def _avg_price(row: Mapping[str, Any], executed: float, where: str) -> float:
    """``avgPrice``; a cancel answer has none: nothing executed means 0.0 (as Binance writes
    it), an executed part means ``cumQuote / executedQty`` (the definition of the average
    price of a linear contract); without ``cumQuote`` either it is an ExchangeError."""
    if "avgPrice" in row:
        return number(row, "avgPrice", where)
    if executed == 0.0:
        return 0.0
    if "cumQuote" not in row:
        raise ExchangeError(
            f"{where}: executedQty {executed} without avgPrice or cumQuote: no fill price"
        )
    return number(row, "cumQuote", where) / executed


def flag(row: Mapping[str, Any], key: str, where: str) -> bool:
    """Field ``key``: a JSON boolean."""
    value = row.get(key)
    if not isinstance(value, bool):
        raise ExchangeError(f"{where}: field {key} is not a boolean: {value!r:.40}")
    return value


def parse_order(payload: object, where: str) -> OrderState:
    """A Binance futures order object (New Order, Query Order, Cancel Order, Current Open
    Orders) -> :class:`OrderState`. Every documented type is read, and any other type too: an
    order of a type ATRA does not place is kept with its raw type string
    (:attr:`OrderState.foreign`), never an error. ``orderId`` may be a number or a string of
    digits; ``avgPrice`` may be absent (a cancel answer: see :func:`_avg_price`). Otherwise
    strict: a missing or malformed field is a one-line :class:`ExchangeError` naming ``where``
    and the field."""
    row = mapping(payload, where, "an order object")
    symbol = text(row, "symbol", where)  # fields read in this order: errors name the first
    client_order_id = text(row, "clientOrderId", where)
    order_id = venue_id(row, "orderId", where)
    side = cast(OrderSide, choice(row, "side", _SIDES, where))
    type_ = text(row, "type", where)
    status = cast(OrderStatus, choice(row, "status", _STATUSES, where))
    orig_qty = number(row, "origQty", where)
    executed = number(row, "executedQty", where)
    return OrderState(
        symbol=symbol,
        client_order_id=client_order_id,
        order_id=order_id,
        side=side,
        type=type_,
        status=status,
        orig_qty=orig_qty,
        executed_qty=executed,
        avg_price=_avg_price(row, executed, where),
        price=number(row, "price", where),
        stop_price=number(row, "stopPrice", where),
        reduce_only=flag(row, "reduceOnly", where),
        close_position=flag(row, "closePosition", where),
        update_time_ms=integer(row, "updateTime", where),
    )


def parse_orders(payload: object, where: str) -> list[OrderState]:
    """A list of order objects (openOrders)."""
    return parse_list(payload, where, "orders", parse_order)


def parse_list(
    payload: object, where: str, what: str, parse: Callable[[object, str], T]
) -> list[T]:
    """A JSON list, each item read by ``parse`` (with ``where [i]``); anything else is an
    ExchangeError naming ``where`` and ``what`` the list should hold."""
    if not isinstance(payload, list):
        raise ExchangeError(f"{where}: expected a list of {what}, got {type(payload).__name__}")
    return [parse(item, f"{where} [{i}]") for i, item in enumerate(payload)]


def parse_positions(payload: object, where: str) -> list[VenuePosition]:
    """positionRisk rows -> the non-zero positions (``positionAmt`` signed)."""
    rows = parse_list(payload, where, "positions", _position)
    return [p for p in rows if p is not None]


def _position(item: object, where: str) -> VenuePosition | None:
    """A positionRisk row; None for a flat one (whose other fields are not read)."""
    row = mapping(item, where, "a position object")
    qty = number(row, "positionAmt", where)
    if qty == 0.0:
        return None
    return VenuePosition(text(row, "symbol", where), qty, number(row, "entryPrice", where))


def parse_balances(payload: object, where: str) -> list[AssetBalance]:
    """Futures Account Balance V2 rows -> one :class:`AssetBalance` per asset listed."""
    return parse_list(payload, where, "balances", _balance)


def _balance(item: object, where: str) -> AssetBalance:
    row = mapping(item, where, "a balance object")
    return AssetBalance(
        text(row, "asset", where),
        number(row, "balance", where),
        number(row, "availableBalance", where),
    )


def parse_symbol_rules(payload: object, where: str) -> dict[str, SymbolRules]:
    """exchangeInfo -> ``{symbol: SymbolRules}`` from PRICE_FILTER ``tickSize`` and LOT_SIZE
    ``stepSize`` / ``minQty``. A symbol lacking either filter is left out (see
    :func:`missing_filters`); a filter with a bad value is an ExchangeError naming it."""
    return parse_filters(payload, where)[0]


def missing_filters(payload: object, where: str) -> dict[str, str]:
    """``{symbol: name of the filter it lacks}`` for the symbols of exchangeInfo that have no
    PRICE_FILTER or no LOT_SIZE."""
    return parse_filters(payload, where)[1]


def parse_filters(payload: object, where: str) -> tuple[dict[str, SymbolRules], dict[str, str]]:
    """exchangeInfo -> ``(`` :func:`parse_symbol_rules` ``,`` :func:`missing_filters` ``)`` in
    one pass."""
    rules: dict[str, SymbolRules] = {}
    missing: dict[str, str] = {}
    for sym, _row, filters in exchange_symbols(payload, where):
        found = lot_and_price(sym, filters, where)
        if isinstance(found, str):
            missing[sym] = found
        else:
            rules[sym] = found
    return rules, missing


def exchange_symbols(
    payload: object, where: str
) -> Iterator[tuple[str, Mapping[str, Any], dict[object, Mapping[str, Any]]]]:
    """exchangeInfo (futures or spot) -> ``(symbol, its row, {filterType: filter})`` per entry
    of ``symbols``; a missing ``symbols`` list or an entry without a symbol is an
    ExchangeError."""
    info = mapping(payload, where, "an exchangeInfo object")
    symbols = info.get("symbols")
    if not isinstance(symbols, list):
        raise ExchangeError(f"{where}: field symbols missing or not a list")
    for i, item in enumerate(symbols):
        row = mapping(item, f"{where} symbols[{i}]")
        sym = text(row, "symbol", f"{where} symbols[{i}]")
        raw = row.get("filters")
        filters = {
            f.get("filterType"): cast(Mapping[str, Any], f)
            for f in (raw if isinstance(raw, list) else [])
            if isinstance(f, dict)
        }
        yield sym, row, filters


def lot_and_price(
    sym: str, filters: Mapping[object, Mapping[str, Any]], where: str
) -> SymbolRules | str:
    """LOT_SIZE ``stepSize`` / ``minQty`` and PRICE_FILTER ``tickSize`` of ``sym``, or the
    name of the filter it lacks; a filter with a bad value is an ExchangeError naming it."""
    price, lot = filters.get("PRICE_FILTER"), filters.get("LOT_SIZE")
    if price is None or lot is None:
        return "PRICE_FILTER" if price is None else "LOT_SIZE"
    here = f"{where} {sym}"
    return SymbolRules(
        sym,
        step_size=number(lot, "stepSize", f"{here} LOT_SIZE"),
        min_qty=number(lot, "minQty", f"{here} LOT_SIZE"),
        tick_size=number(price, "tickSize", f"{here} PRICE_FILTER"),
    )
