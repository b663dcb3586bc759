"""Signed Binance USDT-M futures orders: :class:`BinanceTrader` serves
:class:`atra.adapters.orders.OrderApi` over an open
:class:`atra.adapters.exchange.client.BinanceClient`; :func:`credentials_from_env` reads its
API key and secret.

The trader shares the client's HTTP connection pool, its weight-aware rate limiter (order
calls are charged their Binance weight in the same bucket as market data: order 1,
openOrders 1 with a symbol / 40 without, positionRisk 5) and its backoff settings. The order
parameters and the parsing of the answers are in :mod:`atra.adapters.trading.wire`.

A POST is never blindly retried. When its answer is lost (timeout, dropped connection, 5xx,
a garbled body, a 429) the outcome is unknown: the order is looked up by its client id and
returned when the venue has it; only when the venue does not know the id is the POST sent
again, with the same id. An HTTP 200 whose JSON is not a readable order means the venue took
the order: it is looked up by client id and never POSTed again (the id is remembered, so a
later ``place_order`` of it only looks it up). A ``-4116`` (client id already used) is
answered by the lookup too, so a retried placement never makes a second order. Reads and
cancels are idempotent and are simply retried.

The API secret only reaches the HMAC. Requests are described in errors as
``binance perp POST /fapi/v1/order symbol=BTCUSDT ... newClientOrderId=...``: plain
parameters, never the signature, the timestamp or the key.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from atra.adapters.exchange.client import BinanceClient
from atra.adapters.exchange.wire import exchange_info_weight
from atra.adapters.orders import (
    ERR_CANCEL_UNKNOWN,
    ERR_DUPLICATE_ORDER,
    ERR_UNKNOWN_ORDER,
    AssetBalance,
    OrderRequest,
    OrderState,
    SymbolRules,
    VenuePosition,
    signed_query,
)
from atra.adapters.ratelimit import WEIGHT
from atra.adapters.trading.wire import (
    describe,
    order_params,
    parse_balances,
    parse_filters,
    parse_order,
    parse_orders,
    parse_positions,
)
from atra.core.types import Market
from atra.errors import ConfigError, ExchangeError, OrderRejected, TransientExchangeError
from atra.obs import get_logger

ORDER_PATH: Final[str] = "/fapi/v1/order"
OPEN_ORDERS_PATH: Final[str] = "/fapi/v1/openOrders"
POSITION_RISK_PATH: Final[str] = "/fapi/v2/positionRisk"
BALANCE_PATH: Final[str] = "/fapi/v2/balance"
EXCHANGE_INFO_PATH: Final[str] = "/fapi/v1/exchangeInfo"
API_KEY_ENV: Final[str] = "ATRA__EXCHANGE__API_KEY"
API_SECRET_ENV: Final[str] = "ATRA__EXCHANGE__API_SECRET"  # noqa: S105  (a variable name)
_ACCEPTED_KEPT: Final[int] = 10_000  # accepted-but-unreadable client ids remembered

log = get_logger("atra.adapters.trading")


def credentials_from_env(env: Mapping[str, str]) -> tuple[str, str]:
    """``(api_key, api_secret)`` from ``env``; a missing or empty variable is a
    :class:`ConfigError` naming it (values are never echoed)."""
    for name in (API_KEY_ENV, API_SECRET_ENV):
        if not env.get(name, "").strip():
            raise ConfigError(f"signed orders need the environment variable {name} (not set)")
    return env[API_KEY_ENV].strip(), env[API_SECRET_ENV].strip()


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
        self._accepted: dict[str, None] = {}
        """Client ids the venue accepted with an unreadable answer: never POSTed again."""

    def __repr__(self) -> str:  # never the key or the secret
        return f"BinanceTrader({self.client.base_url!r})"

    # ---- OrderApi ------------------------------------------------------------------------

    async def place_order(self, order: OrderRequest) -> OrderState:
        params = order_params(order, self._rules.get(order.symbol))
        where = describe("POST", ORDER_PATH, params)
        head = f"{order.symbol} {order.type} {order.client_order_id}"
        if order.client_order_id in self._accepted:  # the venue took it: look it up only
            return await self._confirm(order, where, "an earlier answer was unreadable")
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
                try:
                    return parse_order(body, where)
                except ExchangeError as exc:  # accepted, answer unreadable: never send again
                    self._accept(order.client_order_id)
                    log.warning(
                        "order_answer_unreadable",
                        symbol=order.symbol,
                        client_order_id=order.client_order_id,
                        error=str(exc),
                    )
                    return await self._confirm(order, where, str(exc))
            if code == ERR_DUPLICATE_ORDER:
                known = await self.get_order(order.symbol, order.client_order_id)
                if known is not None:
                    return known
            raise OrderRejected(f"{head}: Binance error {code}: {_msg(body)}")
        raise TransientExchangeError(
            f"{where}: outcome unknown after {self.max_attempts} attempts ({last})"
        )

    def _accept(self, client_order_id: str) -> None:
        self._accepted[client_order_id] = None
        while len(self._accepted) > _ACCEPTED_KEPT:
            del self._accepted[next(iter(self._accepted))]

    async def _confirm(self, order: OrderRequest, where: str, reason: str) -> OrderState:
        """The venue accepted ``order`` (HTTP 200) but its answer could not be read: look it up
        by client id (up to ``max_attempts`` times, with the backoff), never POST it again.
        Still not found: TransientExchangeError (the next call looks it up again)."""
        error: Exception | None = None
        for attempt in range(1, self.max_attempts + 1):
            try:
                known = await self.get_order(order.symbol, order.client_order_id)
            except ExchangeError as exc:  # a transient failure, or an unreadable answer again
                known, error = None, exc
            if known is not None:
                return known
            if attempt < self.max_attempts:
                await self._backoff(attempt)
        found = f"the look-up failed: {error}" if error else "the venue does not report it yet"
        raise TransientExchangeError(
            f"{where}: accepted (HTTP 200), answer unreadable ({reason}); {found}; not sent again"
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

    async def balances(self) -> Sequence[AssetBalance]:
        """The futures wallet, one row per asset (``GET /fapi/v2/balance``, weight 5)."""
        code, body = await self._read("GET", BALANCE_PATH, {}, 5)
        ok = self._ok(code, body, "GET", BALANCE_PATH, {})
        return parse_balances(ok, describe("GET", BALANCE_PATH, {}))

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
        found, missing = parse_filters(payload, where)
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
