"""Signed Binance USDT-M futures order endpoints: :class:`BinanceTrader` implements
:class:`atra.adapters.orders.OrderApi` over a :class:`atra.adapters.exchange.BinanceClient`.

It shares the client's HTTP connection pool, its weight-aware rate limiter (every order call is
charged its Binance weight in the same buckets as market data) and its backoff settings.

Retries never double an order. A POST whose answer is lost (timeout, dropped connection, 5xx,
a garbled body, a 429) has an unknown outcome: the order is looked up by its deterministic
client id and returned when the venue has it; only when the venue does not know the id is the
POST sent again, with the same id (a second copy would be refused as a duplicate, -4116, and
looked up too). Reads and cancels are idempotent and simply retried.

The API secret only ever reaches the HMAC; descriptions of requests in errors and logs carry
the method, path and plain parameters, never the signature, the timestamp or the key.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Final, cast
from urllib.parse import urlencode

import httpx

from atra.adapters.exchange import BinanceClient
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
from atra.core.types import Market
from atra.errors import (
    ConfigError,
    ExchangeError,
    OrderRejected,
    RateLimited,
    TransientExchangeError,
)

ORDER_PATH: Final[str] = "/fapi/v1/order"
OPEN_ORDERS_PATH: Final[str] = "/fapi/v1/openOrders"
POSITION_PATH: Final[str] = "/fapi/v2/positionRisk"
INFO_PATH: Final[str] = "/fapi/v1/exchangeInfo"
_SIDES: Final[frozenset[str]] = frozenset({"BUY", "SELL"})
_TYPES: Final[frozenset[str]] = frozenset({"MARKET", "LIMIT", "STOP_MARKET", "TAKE_PROFIT_MARKET"})
_STATUSES: Final[frozenset[str]] = frozenset(
    {"NEW", "PARTIALLY_FILLED", "FILLED", "CANCELED", "EXPIRED", "REJECTED"}
)
KEY_ENV: Final[str] = "ATRA__EXCHANGE__API_KEY"
SECRET_ENV: Final[str] = "ATRA__EXCHANGE__API_SECRET"  # noqa: S105 (a variable name)


def credentials_from_env(env: Mapping[str, str]) -> tuple[str, str]:
    """``(api_key, api_secret)`` from the environment; a missing one is a ConfigError naming
    the variable (never its value)."""
    missing = [name for name in (KEY_ENV, SECRET_ENV) if not env.get(name)]
    if missing:
        raise ConfigError(f"real orders need {' and '.join(missing)} in the environment")
    return env[KEY_ENV], env[SECRET_ENV]


def format_decimal(value: float) -> str:
    """A float as Binance wants it on the wire: plain decimal notation, no exponent, no
    trailing zeros (``1e-05`` -> ``0.00001``)."""
    if not math.isfinite(value):
        raise ExchangeError(f"order value {value!r} is not a finite number")
    text = format(Decimal(repr(value)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


class BinanceTrader:
    """The order API of one USDT-M futures account (one-way mode)."""

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
            raise ConfigError("an API key and secret are required for signed requests")
        self.client = client
        self._key = api_key
        self._secret = api_secret
        self.recv_window_ms = recv_window_ms
        self.wall_clock = wall_clock
        self.max_attempts = max_attempts or client.max_attempts
        self._rules: dict[str, SymbolRules] = {}
        self._rng = random.Random()

    def __repr__(self) -> str:  # never the secret
        return f"BinanceTrader({self.client.base_url!r})"

    # ---- OrderApi ------------------------------------------------------------------------

    async def place_order(self, order: OrderRequest) -> OrderState:
        params = _order_params(order)
        where = _where("POST", ORDER_PATH, params)
        for attempt in range(self.max_attempts):
            try:
                code, body = await self._send("POST", ORDER_PATH, params, weight=1, signed=True)
            except TransientExchangeError as exc:
                # the outcome is unknown: the venue may have the order
                await self._backoff(attempt, exc)
                try:
                    known = await self.get_order(order.symbol, order.client_order_id)
                except TransientExchangeError:
                    continue
                if known is not None:
                    return known
                continue
            if code == 0:
                return parse_order(body, where)
            if code == ERR_DUPLICATE_ORDER:
                known = await self.get_order(order.symbol, order.client_order_id)
                if known is not None:
                    return known
            raise OrderRejected(
                f"{order.symbol} {order.type} {order.client_order_id}: "
                f"Binance error {code}: {_msg(body)}"
            )
        raise TransientExchangeError(f"{where}: no answer after {self.max_attempts} attempts")

    async def get_order(self, symbol: str, client_order_id: str) -> OrderState | None:
        params = {"symbol": symbol, "origClientOrderId": client_order_id}
        code, body = await self._retrying("GET", ORDER_PATH, params, weight=1)
        if code == ERR_UNKNOWN_ORDER:
            return None
        self._raise_for(code, body, "GET", ORDER_PATH, params)
        return parse_order(body, _where("GET", ORDER_PATH, params))

    async def cancel_order(self, symbol: str, client_order_id: str) -> OrderState | None:
        params = {"symbol": symbol, "origClientOrderId": client_order_id}
        code, body = await self._retrying("DELETE", ORDER_PATH, params, weight=1)
        if code == ERR_CANCEL_UNKNOWN:  # unknown, or already final: its state says which
            return await self.get_order(symbol, client_order_id)
        self._raise_for(code, body, "DELETE", ORDER_PATH, params)
        return parse_order(body, _where("DELETE", ORDER_PATH, params))

    async def open_orders(self, symbol: str | None = None) -> Sequence[OrderState]:
        params = {"symbol": symbol} if symbol else {}
        weight = 1 if symbol else 40
        code, body = await self._retrying("GET", OPEN_ORDERS_PATH, params, weight=weight)
        self._raise_for(code, body, "GET", OPEN_ORDERS_PATH, params)
        where = _where("GET", OPEN_ORDERS_PATH, params)
        if not isinstance(body, list):
            raise ExchangeError(f"{where}: expected a list of orders")
        return [parse_order(item, where) for item in body]

    async def positions(self) -> Sequence[VenuePosition]:
        code, body = await self._retrying("GET", POSITION_PATH, {}, weight=5)
        self._raise_for(code, body, "GET", POSITION_PATH, {})
        where = _where("GET", POSITION_PATH, {})
        if not isinstance(body, list):
            raise ExchangeError(f"{where}: expected a list of positions")
        out = []
        for item in body:
            row = _mapping(item, where)
            qty = _num(row, "positionAmt", where)
            if qty != 0.0:
                out.append(
                    VenuePosition(_str(row, "symbol", where), qty, _num(row, "entryPrice", where))
                )
        return out

    async def symbol_rules(self, symbol: str) -> SymbolRules:
        if symbol not in self._rules:
            code, body = await self._retrying("GET", INFO_PATH, {}, weight=1, signed=False)
            self._raise_for(code, body, "GET", INFO_PATH, {})
            self._rules.update(parse_symbol_rules(body, _where("GET", INFO_PATH, {})))
        rules = self._rules.get(symbol)
        if rules is None:
            raise ExchangeError(f"binance perp exchangeInfo: no symbol {symbol}")
        return rules

    # ---- transport -----------------------------------------------------------------------

    async def _retrying(
        self,
        method: str,
        path: str,
        params: Mapping[str, str | int],
        *,
        weight: int,
        signed: bool = True,
    ) -> tuple[int, object]:
        for attempt in range(self.max_attempts):
            try:
                return await self._send(method, path, params, weight=weight, signed=signed)
            except TransientExchangeError as exc:
                if attempt + 1 >= self.max_attempts:
                    raise TransientExchangeError(
                        f"{exc} (gave up after {self.max_attempts} attempts)"
                    ) from exc
                await self._backoff(attempt, exc)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _backoff(self, attempt: int, exc: TransientExchangeError) -> None:
        c = self.client
        if isinstance(exc, RateLimited):
            return  # the limiter already holds every request for the Retry-After
        delay = min(c.max_backoff_s, c.backoff_s * 2**attempt) + self._rng.uniform(0, c.backoff_s)
        await c.clock.sleep(delay)

    async def _send(
        self,
        method: str,
        path: str,
        params: Mapping[str, str | int],
        *,
        weight: int,
        signed: bool = True,
    ) -> tuple[int, object]:
        """One request: ``(0, payload)`` on success, ``(code, payload)`` for a Binance error
        answer; transport failures, 5xx, 429 and garbled bodies are transient; 418 bans."""
        http = self.client._http
        if http is None:
            raise ExchangeError("BinanceClient is not open: use `async with BinanceClient(...)`")
        where = _where(method, path, params)
        if signed:
            full: dict[str, str | int] = dict(params)
            full["timestamp"] = int(self.wall_clock() * 1000)
            full["recvWindow"] = self.recv_window_ms
            query = signed_query(full, self._secret)
        else:
            query = urlencode(list(params.items()))
        url = f"{path}?{query}" if query else path
        async with self.client.limiter.slot({"weight": weight}):
            try:
                resp = await http.request(method, url, headers={"X-MBX-APIKEY": self._key})
            except httpx.TimeoutException as exc:
                raise TransientExchangeError(
                    f"{where}: no answer within {self.client.timeout_s:g} s"
                ) from exc
            except httpx.TransportError as exc:
                raise TransientExchangeError(
                    f"{where}: connection failed ({type(exc).__name__})"
                ) from exc
        return self._answer(resp, where)

    def _answer(self, resp: httpx.Response, where: str) -> tuple[int, object]:
        limiter = self.client.limiter
        used = resp.headers.get("x-mbx-used-weight-1m")
        if used is not None and used.strip().isdigit():
            limiter.observe_used_weight(int(used))
        status = resp.status_code
        if status == 418:
            raise limiter.on_banned(self.client._ban_seconds(resp))
        if status == 429:
            raw = resp.headers.get("retry-after")
            retry = float(raw) if raw is not None and raw.replace(".", "", 1).isdigit() else None
            pause = limiter.on_rate_limited(retry)
            raise RateLimited(f"{where}: HTTP 429, every request paused {pause:g} s", pause)
        if status >= 500:
            raise TransientExchangeError(f"{where}: HTTP {status}")
        try:
            payload = json.loads(resp.content)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            if status == 200:
                raise TransientExchangeError(f"{where}: HTTP 200 body is not JSON") from exc
            raise ExchangeError(f"{where}: HTTP {status} body is not JSON") from exc
        if status == 200:
            return 0, payload
        if isinstance(payload, dict) and isinstance(payload.get("code"), int):
            return int(payload["code"]), payload
        raise ExchangeError(f"{where}: HTTP {status} without a Binance error code")

    @staticmethod
    def _raise_for(
        code: int, body: object, method: str, path: str, params: Mapping[str, str | int]
    ) -> None:
        if code != 0:
            raise ExchangeError(
                f"{_where(method, path, params)}: Binance error {code}: {_msg(body)}"
            )


# ---- wire formats ----------------------------------------------------------------------------


def _order_params(order: OrderRequest) -> dict[str, str | int]:
    if order.side not in _SIDES or order.type not in _TYPES:
        raise OrderRejected(f"{order.symbol} {order.client_order_id}: bad side/type")
    params: dict[str, str | int] = {
        "symbol": order.symbol,
        "side": order.side,
        "type": order.type,
        "newClientOrderId": order.client_order_id,
        "newOrderRespType": "RESULT",
    }
    if order.quantity is not None:
        params["quantity"] = format_decimal(order.quantity)
    if order.type == "LIMIT":
        if order.price is None:
            raise OrderRejected(f"{order.symbol} LIMIT {order.client_order_id}: no price")
        params["price"] = format_decimal(order.price)
        params["timeInForce"] = "GTC"
    if order.stop_price is not None:
        params["stopPrice"] = format_decimal(order.stop_price)
    if order.close_position:
        params["closePosition"] = "true"
    elif order.reduce_only:
        params["reduceOnly"] = "true"
    return params


def _where(method: str, path: str, params: Mapping[str, str | int]) -> str:
    shown = " ".join(f"{k}={v}" for k, v in params.items() if k != "newOrderRespType")
    return f"binance perp {method} {path}" + (f" {shown}" if shown else "")


def _msg(body: object) -> str:
    if isinstance(body, dict):
        return " ".join(str(body.get("msg", "")).split())[:120]
    return ""


def _mapping(item: object, where: str) -> Mapping[str, Any]:
    if not isinstance(item, dict):
        raise ExchangeError(f"{where}: expected an object, got {type(item).__name__}")
    return cast(Mapping[str, Any], item)


def _str(row: Mapping[str, Any], key: str, where: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value:
        raise ExchangeError(f"{where}: field {key} missing or not a string")
    return value


def _num(row: Mapping[str, Any], key: str, where: str) -> float:
    value = row.get(key)
    try:
        out = float(value) if isinstance(value, str | int | float) else math.nan
    except ValueError:
        out = math.nan
    if not math.isfinite(out) or isinstance(value, bool):
        raise ExchangeError(f"{where}: field {key} is not a number: {value!r}")
    return out


def _int(row: Mapping[str, Any], key: str, where: str) -> int:
    value = row.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ExchangeError(f"{where}: field {key} is not an integer: {value!r}")
    return value


def _bool(row: Mapping[str, Any], key: str, where: str) -> bool:
    value = row.get(key, False)
    if not isinstance(value, bool):
        raise ExchangeError(f"{where}: field {key} is not a boolean: {value!r}")
    return value


def parse_order(payload: object, where: str) -> OrderState:
    """A Binance futures order object -> :class:`OrderState` (strict: a missing or malformed
    field is an :class:`ExchangeError` naming it)."""
    row = _mapping(payload, where)
    side = _str(row, "side", where)
    typ = _str(row, "type", where)
    status = _str(row, "status", where)
    if side not in _SIDES:
        raise ExchangeError(f"{where}: field side is {side!r}")
    if typ not in _TYPES:
        raise ExchangeError(f"{where}: field type is {typ!r}")
    if status not in _STATUSES:
        raise ExchangeError(f"{where}: field status is {status!r}")
    return OrderState(
        symbol=_str(row, "symbol", where),
        client_order_id=_str(row, "clientOrderId", where),
        order_id=_int(row, "orderId", where),
        side=cast(OrderSide, side),
        type=cast(OrderType, typ),
        status=cast(OrderStatus, status),
        orig_qty=_num(row, "origQty", where),
        executed_qty=_num(row, "executedQty", where),
        avg_price=_num(row, "avgPrice", where),
        price=_num(row, "price", where),
        stop_price=_num(row, "stopPrice", where),
        reduce_only=_bool(row, "reduceOnly", where),
        close_position=_bool(row, "closePosition", where),
        update_time_ms=_int(row, "updateTime", where),
    )


def parse_symbol_rules(payload: object, where: str) -> dict[str, SymbolRules]:
    """exchangeInfo -> the PRICE_FILTER tick and LOT_SIZE step / minimum of every symbol."""
    row = _mapping(payload, where)
    symbols = row.get("symbols")
    if not isinstance(symbols, list):
        raise ExchangeError(f"{where}: field symbols missing")
    out: dict[str, SymbolRules] = {}
    for item in symbols:
        sym_row = _mapping(item, where)
        sym = _str(sym_row, "symbol", where)
        filters = {
            str(f.get("filterType")): f for f in sym_row.get("filters", []) if isinstance(f, dict)
        }
        for name in ("PRICE_FILTER", "LOT_SIZE"):
            if name not in filters:
                raise ExchangeError(f"{where}: symbol {sym} has no {name} filter")
        here = f"{where} {sym}"
        out[sym] = SymbolRules(
            sym,
            step_size=_num(filters["LOT_SIZE"], "stepSize", here),
            min_qty=_num(filters["LOT_SIZE"], "minQty", here),
            tick_size=_num(filters["PRICE_FILTER"], "tickSize", here),
        )
    return out
