"""Signed requests to Binance USDT-M futures: :class:`SignedSession` (one account's key and
secret over an open :class:`~atra.adapters.exchange.client.BinanceClient`) and
:func:`credentials_from_env`.

Every call goes through the client (its HTTP pool, weight-aware rate limiter, clock, timeout
and backoff) with ``timestamp`` and ``recvWindow`` added and the query string signed
(:func:`atra.adapters.orders.signed_query`). :meth:`SignedSession._call` sends once;
:meth:`SignedSession._read` retries an idempotent call on transient failures;
:meth:`SignedSession._place` sends a POST that must never make a second order (the futures and
the spot traders both place through it). The API secret only reaches the HMAC; requests are
described in errors without signature, timestamp or key
(:func:`atra.adapters.trading.wire.describe`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar, Final, Required, TypedDict, TypeVar

import structlog
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from atra.adapters.exchange.client import BinanceClient
from atra.adapters.exchange.wire import exchange_info_weight
from atra.adapters.orders import signed_query
from atra.adapters.ratelimit import WEIGHT
from atra.adapters.trading.wire import describe
from atra.core.types import Market
from atra.errors import ConfigError, ExchangeError, OrderRejected, TransientExchangeError
from atra.obs import get_logger

API_KEY_ENV: Final[str] = "ATRA__EXCHANGE__API_KEY"
API_SECRET_ENV: Final[str] = "ATRA__EXCHANGE__API_SECRET"  # noqa: S105  (a variable name)
_ACCEPTED_KEPT: Final[int] = 10_000  # accepted-but-unreadable client ids remembered

T = TypeVar("T")


class SessionArgs(TypedDict, total=False):
    """The keyword arguments of :class:`SignedSession` (and of the traders built on it)."""

    api_key: Required[str]
    api_secret: Required[str]
    recv_window_ms: int
    wall_clock: Callable[[], float]
    max_attempts: int | None


def credentials_from_env(env: Mapping[str, str]) -> tuple[str, str]:
    """``(api_key, api_secret)`` from ``env``; a missing or empty variable is a
    :class:`ConfigError` naming it (values are never echoed)."""
    for name in (API_KEY_ENV, API_SECRET_ENV):
        if not env.get(name, "").strip():
            raise ConfigError(f"signed orders need the environment variable {name} (not set)")
    return env[API_KEY_ENV].strip(), env[API_SECRET_ENV].strip()


class SignedSession:
    """Signed calls of one Binance USDT-M futures account over an open :class:`BinanceClient`.

    ``wall_clock`` stamps the signed requests (``timestamp`` in ms); ``max_attempts`` (default
    the client's) bounds the sends of one call.
    """

    MARKET: Market = Market.PERP
    """The market the session's client must serve (spot sessions: :mod:`spot_trader`)."""
    LOG: ClassVar[structlog.stdlib.BoundLogger] = get_logger("atra.adapters.trading")
    """Where :meth:`_place` reports an accepted order whose answer was unreadable."""

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
        if client.market is not self.MARKET:
            raise ExchangeError(
                f"{type(self).__name__} needs a {self.MARKET.value} client,"
                f" got {client.market.value}"
            )
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
        self._rng = random.Random()
        self._accepted: dict[str, None] = {}
        """Client ids (of orders or order lists) the venue accepted with an unreadable answer:
        never POSTed again."""

    def __repr__(self) -> str:  # never the key or the secret
        return f"{type(self).__name__}({self.client.base_url!r})"

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
            raise refusal(f"{describe(method, path, params)}: Binance error {code}: {msg(body)}")
        return body

    def _is_duplicate(self, code: int, body: object) -> bool:
        """Whether the refusal ``code`` / ``body`` of a POST says the client id is taken."""
        raise NotImplementedError

    async def _place(
        self,
        head: str,
        cid: str,
        path: str,
        params: Mapping[str, str | int],
        weight: int,
        read: Callable[[object, str], Awaitable[T]],
        lookup: Callable[[], Awaitable[T | None]],
        *,
        symbol: str,
        lookup_any_refusal: bool = False,
    ) -> T:
        """``POST path``, never blindly retried: ``read`` turns the answer into the result,
        ``lookup`` finds what the venue holds under client id ``cid`` (None: unknown).

        A lost answer (transient failure) is followed by the lookup; only when the venue does
        not know ``cid`` is the POST sent again. An HTTP 200 that ``read`` cannot read means
        the venue took it: ``cid`` is remembered and only looked up (:meth:`_confirm`), now and
        on any later call. A refusal :meth:`_is_duplicate` recognises (or, with
        ``lookup_any_refusal``, any refusal after a lost answer) is answered by the lookup when
        the venue has it; other refusals are OrderRejected prefixed with ``head``."""
        where = describe("POST", path, params)
        if cid in self._accepted:  # the venue took it: look it up only
            return await self._confirm(where, lookup, "an earlier answer was unreadable")
        last: TransientExchangeError | None = None
        for attempt in range(1, self.max_attempts + 1):
            try:
                code, body = await self._call("POST", path, params, weight)
            except TransientExchangeError as exc:
                last = exc  # the venue may or may not have it: ask
                await self._backoff(attempt)
                try:
                    known = await lookup()
                except TransientExchangeError:
                    continue  # still unknown; a second POST is refused as a duplicate
                if known is not None:
                    return known
                continue
            if code is None:
                try:
                    return await read(body, where)
                except ExchangeError as exc:  # accepted, answer unreadable: never send again
                    self._accept(cid)
                    self.LOG.warning(
                        "order_answer_unreadable",
                        symbol=symbol,
                        client_order_id=cid,
                        error=str(exc),
                    )
                    return await self._confirm(where, lookup, str(exc))
            if self._is_duplicate(code, body) or (lookup_any_refusal and last is not None):
                known = await lookup()
                if known is not None:
                    return known
            raise OrderRejected(f"{head}: Binance error {code}: {msg(body)}")
        raise TransientExchangeError(
            f"{where}: outcome unknown after {self.max_attempts} attempts ({last})"
        )

    def _accept(self, client_order_id: str) -> None:
        self._accepted[client_order_id] = None
        while len(self._accepted) > _ACCEPTED_KEPT:
            del self._accepted[next(iter(self._accepted))]

    async def _confirm(
        self, where: str, lookup: Callable[[], Awaitable[T | None]], reason: str
    ) -> T:
        """The venue accepted the POST (HTTP 200) but its answer could not be read: look it up
        (up to ``max_attempts`` times, with the backoff), never POST it again. Still not
        found: TransientExchangeError (the next call looks it up again)."""
        error: Exception | None = None
        for attempt in range(1, self.max_attempts + 1):
            try:
                known = await lookup()
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

    async def _exchange_info(self, path: str) -> tuple[object, str]:
        """exchangeInfo at ``path`` (the client's own retried GET, charged the weight of the
        session's market) and how errors name the request."""
        weight = exchange_info_weight(self.MARKET)
        payload = await self.client._get(path, {}, {WEIGHT: weight})
        return payload, describe("GET", path, {})

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


def unlisted(symbol: str, missing: Mapping[str, str], where: str) -> ExchangeError:
    """Why exchangeInfo gave no rules for ``symbol``: a listed symbol lacking a filter is an
    ExchangeError naming it; a symbol the venue does not list is OrderRejected (nothing can be
    traded there)."""
    if symbol in missing:
        return ExchangeError(f"{where}: symbol {symbol} has no {missing[symbol]} filter")
    return OrderRejected(f"{where}: no symbol {symbol}: the venue does not list it")


def msg(body: object) -> str:
    """The ``msg`` of a Binance error answer, on one line, at most 120 characters."""
    text = str(body.get("msg", "")) if isinstance(body, dict) else ""
    flat = " ".join(text.split())
    return flat if len(flat) <= 120 else flat[:117] + "..."
