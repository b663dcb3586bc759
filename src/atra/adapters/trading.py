"""Signed Binance USDT-M futures orders: :class:`BinanceTrader` serves
:class:`atra.adapters.orders.OrderApi` over an open :class:`atra.adapters.exchange.BinanceClient`.

The trader shares the client's HTTP connection pool, its weight-aware rate limiter (order
calls are charged their Binance weight in the same bucket as market data: order 1,
openOrders 1 with a symbol / 40 without, positionRisk 5) and its backoff settings.

A POST is never blindly retried. When its answer is lost (timeout, dropped connection, 5xx,
a garbled body, a 429) the outcome is unknown: the order is looked up by its client id and
returned when the venue has it; only when the venue does not know the id is the POST sent
again, with the same id. A ``-4116`` (client id already used) is answered by the lookup too,
so a retried placement never makes a second order. Reads and cancels are idempotent and are
simply retried.

The API secret only reaches the HMAC. Requests are described in errors as
``binance perp POST /fapi/v1/order symbol=BTCUSDT ... newClientOrderId=...``: plain
parameters, never the signature, the timestamp or the key.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Final, cast

from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from atra.adapters.exchange import BinanceClient, exchange_info_weight
from atra.adapters.orders import (
    ERR_CANCEL_UNKNOWN,
    ERR_DUPLICATE_ORDER,
    ERR_UNKNOWN_ORDER,
    OrderRequest,
    OrderSide,
    OrderState,
    OrderStatus,
    OrderType,
    SymbolRules,
    VenuePosition,
    signed_query,
)
from atra.adapters.ratelimit import WEIGHT
from atra.core.types import Market
from atra.errors import ConfigError, DataError, ExchangeError, OrderRejected, TransientExchangeError

ORDER_PATH: Final[str] = "/fapi/v1/order"
OPEN_ORDERS_PATH: Final[str] = "/fapi/v1/openOrders"
POSITION_RISK_PATH: Final[str] = "/fapi/v2/positionRisk"
EXCHANGE_INFO_PATH: Final[str] = "/fapi/v1/exchangeInfo"
API_KEY_ENV: Final[str] = "ATRA__EXCHANGE__API_KEY"
API_SECRET_ENV: Final[str] = "ATRA__EXCHANGE__API_SECRET"  # noqa: S105  (a variable name)
_SIDES: Final[frozenset[str]] = frozenset({"BUY", "SELL"})
_TYPES: Final[frozenset[str]] = frozenset({"MARKET", "LIMIT", "STOP_MARKET", "TAKE_PROFIT_MARKET"})
_STOP_TYPES: Final[frozenset[str]] = frozenset({"STOP_MARKET", "TAKE_PROFIT_MARKET"})
_STATUSES: Final[frozenset[str]] = frozenset(
    {"NEW", "PARTIALLY_FILLED", "FILLED", "CANCELED", "EXPIRED", "REJECTED"}
)
_HIDDEN: Final[frozenset[str]] = frozenset(
    {"timestamp", "recvWindow", "signature", "newOrderRespType"}
)
_NOISE: Final[Decimal] = Decimal("1e-9")  # relative float noise tolerated by the helpers


# ---- credentials and numbers ----------------------------------------------------------------


def credentials_from_env(env: Mapping[str, str]) -> tuple[str, str]:
    """``(api_key, api_secret)`` from ``env``; a missing or empty variable is a
    :class:`ConfigError` naming it (values are never echoed)."""
    for name in (API_KEY_ENV, API_SECRET_ENV):
        if not env.get(name, "").strip():
            raise ConfigError(f"signed orders need the environment variable {name} (not set)")
    return env[API_KEY_ENV].strip(), env[API_SECRET_ENV].strip()


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
    return f"binance perp {method} {path}" + (f" {shown}" if shown else "")


def order_params(order: OrderRequest, rules: SymbolRules | None = None) -> dict[str, str | int]:
    """The POST parameters of ``order``; numbers at the symbol's step / tick precision when
    ``rules`` are known. A request Binance would refuse for its shape is OrderRejected."""
    head = f"{order.symbol} {order.type} {order.client_order_id}"
    if order.side not in _SIDES or order.type not in _TYPES:
        raise OrderRejected(f"{head}: side {order.side!r} / type {order.type!r} not supported")
    step = rules.step_size if rules else None
    tick = rules.tick_size if rules else None
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


def _mapping(item: object, where: str, what: str = "an object") -> Mapping[str, Any]:
    if not isinstance(item, dict):
        raise ExchangeError(f"{where}: expected {what}, got {type(item).__name__}")
    return cast(Mapping[str, Any], item)


def _text(row: Mapping[str, Any], key: str, where: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value:
        raise ExchangeError(f"{where}: field {key} missing or not a string: {value!r:.40}")
    return value


def _choice(row: Mapping[str, Any], key: str, allowed: frozenset[str], where: str) -> str:
    value = _text(row, key, where)
    if value not in allowed:
        raise ExchangeError(f"{where}: field {key} has unknown value {value!r:.40}")
    return value


def _number(row: Mapping[str, Any], key: str, where: str) -> float:
    value = row.get(key)
    try:
        out = float(value) if isinstance(value, str) else math.nan
    except ValueError:
        out = math.nan
    if not math.isfinite(out):
        raise ExchangeError(f"{where}: field {key} is not a decimal string: {value!r:.40}")
    return out


def _integer(row: Mapping[str, Any], key: str, where: str) -> int:
    value = row.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ExchangeError(f"{where}: field {key} is not an integer: {value!r:.40}")
    return value


def _flag(row: Mapping[str, Any], key: str, where: str) -> bool:
    value = row.get(key)
    if not isinstance(value, bool):
        raise ExchangeError(f"{where}: field {key} is not a boolean: {value!r:.40}")
    return value


def parse_order(payload: object, where: str) -> OrderState:
    """A Binance futures order object -> :class:`OrderState`. Strict: a missing or malformed
    field is a one-line :class:`ExchangeError` naming ``where`` and the field."""
    row = _mapping(payload, where, "an order object")
    return OrderState(
        symbol=_text(row, "symbol", where),
        client_order_id=_text(row, "clientOrderId", where),
        order_id=_integer(row, "orderId", where),
        side=cast(OrderSide, _choice(row, "side", _SIDES, where)),
        type=cast(OrderType, _choice(row, "type", _TYPES, where)),
        status=cast(OrderStatus, _choice(row, "status", _STATUSES, where)),
        orig_qty=_number(row, "origQty", where),
        executed_qty=_number(row, "executedQty", where),
        avg_price=_number(row, "avgPrice", where),
        price=_number(row, "price", where),
        stop_price=_number(row, "stopPrice", where),
        reduce_only=_flag(row, "reduceOnly", where),
        close_position=_flag(row, "closePosition", where),
        update_time_ms=_integer(row, "updateTime", where),
    )


def parse_orders(payload: object, where: str) -> list[OrderState]:
    """A list of order objects (openOrders)."""
    if not isinstance(payload, list):
        raise ExchangeError(f"{where}: expected a list of orders, got {type(payload).__name__}")
    return [parse_order(item, f"{where} [{i}]") for i, item in enumerate(payload)]


def parse_positions(payload: object, where: str) -> list[VenuePosition]:
    """positionRisk rows -> the non-zero positions (``positionAmt`` signed)."""
    if not isinstance(payload, list):
        raise ExchangeError(f"{where}: expected a list of positions, got {type(payload).__name__}")
    out: list[VenuePosition] = []
    for i, item in enumerate(payload):
        here = f"{where} [{i}]"
        row = _mapping(item, here, "a position object")
        qty = _number(row, "positionAmt", here)
        if qty != 0.0:
            out.append(
                VenuePosition(_text(row, "symbol", here), qty, _number(row, "entryPrice", here))
            )
    return out


def parse_symbol_rules(payload: object, where: str) -> dict[str, SymbolRules]:
    """exchangeInfo -> ``{symbol: SymbolRules}`` from PRICE_FILTER ``tickSize`` and LOT_SIZE
    ``stepSize`` / ``minQty``. A symbol lacking either filter is left out (see
    :func:`missing_filters`); a filter with a bad value is an ExchangeError naming it."""
    return _parse_rules(payload, where)[0]


def missing_filters(payload: object, where: str) -> dict[str, str]:
    """``{symbol: name of the filter it lacks}`` for the symbols of exchangeInfo that have no
    PRICE_FILTER or no LOT_SIZE."""
    return _parse_rules(payload, where)[1]


def _parse_rules(payload: object, where: str) -> tuple[dict[str, SymbolRules], dict[str, str]]:
    info = _mapping(payload, where, "an exchangeInfo object")
    symbols = info.get("symbols")
    if not isinstance(symbols, list):
        raise ExchangeError(f"{where}: field symbols missing or not a list")
    rules: dict[str, SymbolRules] = {}
    missing: dict[str, str] = {}
    for i, item in enumerate(symbols):
        row = _mapping(item, f"{where} symbols[{i}]")
        sym = _text(row, "symbol", f"{where} symbols[{i}]")
        raw = row.get("filters")
        filters = {
            f.get("filterType"): cast(Mapping[str, Any], f)
            for f in (raw if isinstance(raw, list) else [])
            if isinstance(f, dict)
        }
        price, lot = filters.get("PRICE_FILTER"), filters.get("LOT_SIZE")
        if price is None or lot is None:
            missing[sym] = "PRICE_FILTER" if price is None else "LOT_SIZE"
            continue
        here = f"{where} {sym}"
        rules[sym] = SymbolRules(
            sym,
            step_size=_number(lot, "stepSize", f"{here} LOT_SIZE"),
            min_qty=_number(lot, "minQty", f"{here} LOT_SIZE"),
            tick_size=_number(price, "tickSize", f"{here} PRICE_FILTER"),
        )
    return rules, missing


# ---- the trader ---------------------------------------------------------------------------


class BinanceTrader:
    """The order API of one Binance USDT-M futures account (one-way mode), over an open
    :class:`BinanceClient` (its HTTP pool, limiter, clock, timeout and backoff).

    ``wall_clock`` stamps the signed requests (``timestamp`` in ms); ``max_attempts`` (default
    the client's) bounds the sends of one call.
    """

    def __init__(
        self,
        client: BinanceClient,
        *,
        api_key: str,
        api_secret: str,
        recv_window_ms: int = 5000,
        wall_clock: Callable[[], float] = time.time,
        max_attempts: int | None = None,
    ) -> None:
        if client.market is not Market.PERP:
            raise ExchangeError("order execution supports USDT-M futures only")
        if not api_key or not api_secret:
            raise ConfigError("signed orders need an API key and an API secret")
        if not 1 <= recv_window_ms <= 60_000:
            raise ConfigError(f"recv_window_ms must be in 1..60000, got {recv_window_ms}")
        if max_attempts is not None and max_attempts < 1:
            raise ConfigError(f"max_attempts must be >= 1, got {max_attempts}")
        self.client = client
        self._api_key = api_key
        self._api_secret = api_secret
        self.recv_window_ms = recv_window_ms
        self.wall_clock = wall_clock
        self.max_attempts = max_attempts or client.max_attempts
        self._rules: dict[str, SymbolRules] = {}
        self._rng = random.Random()

    def __repr__(self) -> str:  # never the key or the secret
        return f"BinanceTrader({self.client.base_url!r})"

    # ---- OrderApi ------------------------------------------------------------------------

    async def place_order(self, order: OrderRequest) -> OrderState:
        params = order_params(order, self._rules.get(order.symbol))
        where = describe("POST", ORDER_PATH, params)
        head = f"{order.symbol} {order.type} {order.client_order_id}"
        last: TransientExchangeError | None = None
        for attempt in range(1, self.max_attempts + 1):
            try:
                code, body = await self._call("POST", ORDER_PATH, params, 1)
            except TransientExchangeError as exc:
                last = exc  # the venue may or may not have the order: ask it
                await self._backoff(attempt)
                try:
                    known = await self.get_order(order.symbol, order.client_order_id)
                except TransientExchangeError:
                    continue  # still unknown; a second POST is refused as a duplicate
                if known is not None:
                    return known
                continue
            if code is None:
                return parse_order(body, where)
            if code == ERR_DUPLICATE_ORDER:
                known = await self.get_order(order.symbol, order.client_order_id)
                if known is not None:
                    return known
            raise OrderRejected(f"{head}: Binance error {code}: {_msg(body)}")
        raise TransientExchangeError(
            f"{where}: outcome unknown after {self.max_attempts} attempts ({last})"
        )

    async def get_order(self, symbol: str, client_order_id: str) -> OrderState | None:
        params: dict[str, str | int] = {"symbol": symbol, "origClientOrderId": client_order_id}
        code, body = await self._read("GET", ORDER_PATH, params, 1)
        if code == ERR_UNKNOWN_ORDER:
            return None
        ok = self._ok(code, body, "GET", ORDER_PATH, params)
        return parse_order(ok, describe("GET", ORDER_PATH, params))

    async def cancel_order(self, symbol: str, client_order_id: str) -> OrderState | None:
        params: dict[str, str | int] = {"symbol": symbol, "origClientOrderId": client_order_id}
        """Cancel; ``-2011`` (unknown or already final) is answered by the order's state (None
        if the venue never saw it); another Binance refusal is OrderRejected, as in process."""
        code, body = await self._read("DELETE", ORDER_PATH, params, 1)
        if code == ERR_CANCEL_UNKNOWN:  # unknown, or already final: its state tells which
            return await self.get_order(symbol, client_order_id)
        ok = self._ok(code, body, "DELETE", ORDER_PATH, params, refusal=OrderRejected)
        return parse_order(ok, describe("DELETE", ORDER_PATH, params))

    async def open_orders(self, symbol: str | None = None) -> Sequence[OrderState]:
        """Resting orders; a refusal (``-1121`` for a symbol not listed) is OrderRejected."""
        params: dict[str, str | int] = {"symbol": symbol} if symbol else {}
        code, body = await self._read("GET", OPEN_ORDERS_PATH, params, 1 if symbol else 40)
        ok = self._ok(code, body, "GET", OPEN_ORDERS_PATH, params, refusal=OrderRejected)
        return parse_orders(ok, describe("GET", OPEN_ORDERS_PATH, params))

    async def positions(self) -> Sequence[VenuePosition]:
        code, body = await self._read("GET", POSITION_RISK_PATH, {}, 5)
        ok = self._ok(code, body, "GET", POSITION_RISK_PATH, {})
        return parse_positions(ok, describe("GET", POSITION_RISK_PATH, {}))

    async def symbol_rules(self, symbol: str) -> SymbolRules:
        """PRICE_FILTER / LOT_SIZE of ``symbol`` (exchangeInfo fetched once, then cached). A
        symbol the venue does not list is OrderRejected (nothing can be traded there); a listed
        symbol lacking a filter is an ExchangeError naming it."""
        rules = self._rules.get(symbol)
        if rules is not None:
            return rules
        payload = await self.client._get(  # the client's own retried GET
            EXCHANGE_INFO_PATH, {}, {WEIGHT: exchange_info_weight(Market.PERP)}
        )
        where = describe("GET", EXCHANGE_INFO_PATH, {})
        found, missing = _parse_rules(payload, where)
        self._rules.update(found)
        rules = self._rules.get(symbol)
        if rules is not None:
            return rules
        if symbol in missing:
            raise ExchangeError(f"{where}: symbol {symbol} has no {missing[symbol]} filter")
        raise OrderRejected(f"{where}: no symbol {symbol}: the venue does not list it")

    # ---- transport -----------------------------------------------------------------------

    def _ok(
        self,
        code: int | None,
        body: object,
        method: str,
        path: str,
        params: Mapping[str, Any],
        *,
        refusal: type[ExchangeError] = ExchangeError,
    ) -> object:
        """``body`` of a successful answer; a Binance error answer raises ``refusal``."""
        if code is not None:
            raise refusal(f"{describe(method, path, params)}: Binance error {code}: {_msg(body)}")
        return body

    async def _backoff(self, attempt: int) -> None:
        c = self.client
        delay = min(c.max_backoff_s, c.backoff_s * 2 ** (attempt - 1))
        await c.clock.sleep(delay + self._rng.uniform(0, c.backoff_s))

    async def _read(
        self, method: str, path: str, params: Mapping[str, str | int], weight: int
    ) -> tuple[int | None, object]:
        """An idempotent call, retried on transient failures with the client's backoff."""
        c = self.client
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=wait_exponential(multiplier=c.backoff_s, max=c.max_backoff_s)
            + wait_random(0, c.backoff_s),
            retry=retry_if_exception_type(TransientExchangeError),
            sleep=c.clock.sleep,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._call(method, path, params, weight)
        except TransientExchangeError as exc:
            raise TransientExchangeError(
                f"{exc} (gave up after {self.max_attempts} attempts)"
            ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def _call(
        self, method: str, path: str, params: Mapping[str, str | int], weight: int
    ) -> tuple[int | None, object]:
        """One signed request: ``(None, payload)`` on success, ``(code, payload)`` for a
        Binance error answer. Transport failures, 5xx, 429 and garbled 200 bodies raise
        :class:`TransientExchangeError`; 418 raises IPBanned."""
        where = describe(method, path, params)
        signed: dict[str, str | int] = dict(params)
        signed["timestamp"] = int(self.wall_clock() * 1000)
        signed["recvWindow"] = self.recv_window_ms
        query = signed_query(signed, self._api_secret)
        resp = await self.client.send(
            method,
            path,
            {WEIGHT: weight},
            where=where,
            query=query,
            headers={"X-MBX-APIKEY": self._api_key},
        )
        self.client.check_status(resp, where)
        payload = self.client.json_body(resp, where)
        if resp.status_code == 200:
            return None, payload
        if isinstance(payload, dict) and isinstance(payload.get("code"), int):
            return int(payload["code"]), payload
        raise ExchangeError(f"{where}: HTTP {resp.status_code} without a Binance error code")


def _msg(body: object) -> str:
    text = str(body.get("msg", "")) if isinstance(body, dict) else ""
    flat = " ".join(text.split())
    return flat if len(flat) <= 120 else flat[:117] + "..."
