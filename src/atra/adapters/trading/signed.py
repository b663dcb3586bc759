"""Signed requests to Binance USDT-M futures: :class:`SignedSession` (one account's key and
secret over an open :class:`~atra.adapters.exchange.client.BinanceClient`) and
:func:`credentials_from_env`.

Every call goes through the client (its HTTP pool, weight-aware rate limiter, clock, timeout
and backoff) with ``timestamp`` and ``recvWindow`` added and the query string signed
(:func:`atra.adapters.orders.signed_query`). :meth:`SignedSession._call` sends once;
:meth:`SignedSession._read` retries an idempotent call on transient failures. The API secret
only reaches the HMAC; requests are described in errors without signature, timestamp or key
(:func:`atra.adapters.trading.wire.describe`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from atra.adapters.exchange.client import BinanceClient
from atra.adapters.orders import signed_query
from atra.adapters.ratelimit import WEIGHT
from atra.adapters.trading.wire import describe
from atra.core.types import Market
from atra.errors import ConfigError, ExchangeError, TransientExchangeError

API_KEY_ENV: Final[str] = "ATRA__EXCHANGE__API_KEY"
API_SECRET_ENV: Final[str] = "ATRA__EXCHANGE__API_SECRET"  # noqa: S105  (a variable name)


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
        self._rng = random.Random()

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


def msg(body: object) -> str:
    """The ``msg`` of a Binance error answer, on one line, at most 120 characters."""
    text = str(body.get("msg", "")) if isinstance(body, dict) else ""
    flat = " ".join(text.split())
    return flat if len(flat) <= 120 else flat[:117] + "..."
