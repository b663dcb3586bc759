"""The HTTP transport of a Binance client: one ``httpx.AsyncClient``, the host's rate limiter,
timeouts, retries with backoff, and the mapping of HTTP answers to ATRA errors.

:class:`BinanceTransport` is the base of :class:`~atra.adapters.exchange.client.BinanceClient`
(and, through it, the connection :class:`~atra.adapters.trading.trader.BinanceTrader` signs
its requests over). ``async with`` opens the ``httpx.AsyncClient`` and closes it on the way out,
also on error or cancellation.

Every request goes through the process-wide :class:`~atra.adapters.ratelimit.RateLimiter` of
its host (or the one passed in), has a timeout, and is retried with exponential backoff and
jitter (tenacity) when the failure is transient: timeouts, dropped connections, 5xx, 429, and
a body that is not JSON at all (a proxy page, a truncated transfer). Anything else (a Binance
error such as ``-1121 Invalid symbol.``, JSON of the wrong shape) fails at once with a
one-line :class:`~atra.errors.ExchangeError`.

httpx logs every answer at INFO (``HTTP Request: GET ... "HTTP/1.1 200 OK"``), thousands of
lines in a replay. An open transport re-levels those lines to DEBUG for answers below 400;
429s, bans (418), Binance error answers and 5xx stay at INFO.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from collections.abc import Mapping
from types import TracebackType
from typing import Final, Self
from urllib.parse import urlsplit

import httpx
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from atra.adapters.exchange.wire import one_line
from atra.adapters.ratelimit import Clock, RateLimiter, shared_limiter
from atra.core.types import Market
from atra.errors import ConfigError, ExchangeError, RateLimited, TransientExchangeError

DEFAULT_BAN_S: Final[float] = 120.0
_BANNED_UNTIL_RE: Final = re.compile(r"banned until (\d{12,})")
_HTTPX_LOGGER: Final[str] = "httpx"


class RequestLogDemoter(logging.Filter):
    """A filter for the ``httpx`` logger: its per-request line (``HTTP Request: METHOD URL
    "HTTP/1.1 STATUS REASON"``) is re-levelled from INFO to DEBUG when the status is below 400,
    and dropped unless that logger has DEBUG enabled. Lines for 4xx/5xx answers (429, 418,
    Binance errors, server errors) and every other record pass unchanged."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.msg
        if record.levelno != logging.INFO or not (
            isinstance(msg, str) and msg.startswith("HTTP Request:")
        ):
            return True
        args = record.args
        status = args[3] if isinstance(args, tuple) and len(args) == 5 else None
        if not isinstance(status, int) or status >= 400:
            return True
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return logging.getLogger(_HTTPX_LOGGER).isEnabledFor(logging.DEBUG)


def demote_request_logs() -> None:
    """Install :class:`RequestLogDemoter` on the ``httpx`` logger (once per process)."""
    logger = logging.getLogger(_HTTPX_LOGGER)
    if not any(isinstance(f, RequestLogDemoter) for f in logger.filters):
        logger.addFilter(RequestLogDemoter())


class BinanceTransport:
    """Requests to one Binance host (spot or USDT-M futures) over one ``httpx.AsyncClient``."""

    def __init__(
        self,
        market: Market,
        base_url: str,
        *,
        limiter: RateLimiter | None = None,
        clock: Clock | None = None,
        timeout_s: float = 10.0,
        connect_timeout_s: float | None = None,
        max_attempts: int = 5,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        max_connections: int = 10,
    ) -> None:
        check_timeout(timeout_s, "timeout_s")
        if connect_timeout_s is not None:
            check_timeout(connect_timeout_s, "connect_timeout_s")
        self.market = market
        self.base_url = base_url.rstrip("/")
        self.host = urlsplit(self.base_url).netloc
        if not self.host:
            raise ExchangeError(f"base URL {self.base_url!r} has no host")
        self.limiter = limiter or shared_limiter(
            self.host, market, clock=clock, max_connections=max_connections
        )
        self.clock: Clock = clock or self.limiter.clock
        self.timeout_s = timeout_s
        """The whole-request deadline (connect, send and every read of the answer), and the
        read/write/pool timeout of each phase."""
        self.connect_timeout_s = min(connect_timeout_s or timeout_s, timeout_s)
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._http: httpx.AsyncClient | None = None

    async def __aenter__(self) -> Self:
        demote_request_logs()
        n = self.limiter.max_connections
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(self.timeout_s, connect=self.connect_timeout_s),
            limits=httpx.Limits(max_connections=n, max_keepalive_connections=n),
            headers={"Accept": "application/json", "User-Agent": "atra"},
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client (idempotent; shielded so cancellation cannot skip it)."""
        http, self._http = self._http, None
        if http is not None:
            await asyncio.shield(http.aclose())

    @property
    def is_open(self) -> bool:
        return self._http is not None

    # ---- the request path --------------------------------------------------------------

    def _where(self, path: str, params: Mapping[str, str | int]) -> str:
        query = " ".join(f"{k}={v}" for k, v in params.items())
        return f"binance {self.market} {path}" + (f" {query}" if query else "")

    async def _get(
        self, path: str, params: Mapping[str, str | int], charges: Mapping[str, int]
    ) -> object:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=wait_exponential(multiplier=self.backoff_s, max=self.max_backoff_s)
            + wait_random(0, self.backoff_s),
            retry=retry_if_exception_type(TransientExchangeError),
            sleep=self.clock.sleep,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._get_once(path, params, charges)
        except TransientExchangeError as exc:
            raise TransientExchangeError(
                f"{exc} (gave up after {self.max_attempts} attempts)"
            ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def _get_once(
        self, path: str, params: Mapping[str, str | int], charges: Mapping[str, int]
    ) -> object:
        where = self._where(path, params)
        resp = await self.send("GET", path, charges, where=where, params=params)
        return self._handle(resp, where)

    async def send(
        self,
        method: str,
        path: str,
        charges: Mapping[str, int],
        *,
        where: str,
        params: Mapping[str, str | int] | None = None,
        query: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """One request through the limiter: ``params`` are encoded by httpx, a ``query`` string
        is sent exactly as given (a signed query must reach the server byte for byte).
        Timeouts and dropped connections are :class:`TransientExchangeError` naming ``where``
        (which must not hold secrets); the answer is returned unchecked (see
        :meth:`check_status`).

        The whole request (connect, send, every read of the body) must end within
        ``timeout_s``: httpx's timeouts are per phase and per read, so a server dripping a byte
        a second would otherwise hold the request for ever. A request that passed the limiter
        is held back (not sent) while a 429 pause, learnt meanwhile from another answer, runs.
        """
        http = self._http
        if http is None:
            raise ExchangeError("BinanceClient is not open: use `async with BinanceClient(...)`")
        url = f"{path}?{query}" if query else path
        async with self.limiter.slot(charges):
            await self.limiter.hold_while_paused()
            try:
                async with asyncio.timeout(self.timeout_s):
                    return await http.request(
                        method,
                        url,
                        params=dict(params) if params is not None else None,
                        headers=dict(headers) if headers is not None else None,
                    )
            except TimeoutError as exc:
                raise TransientExchangeError(
                    f"{where}: no answer within {self.timeout_s:g} s "
                    "(whole-request deadline: connect, send and every read)"
                ) from exc
            except httpx.TimeoutException as exc:
                raise TransientExchangeError(
                    f"{where}: no answer within {self.timeout_s:g} s ({type(exc).__name__})"
                ) from exc
            except httpx.TransportError as exc:
                raise TransientExchangeError(
                    f"{where}: connection failed ({type(exc).__name__}: {one_line(str(exc))})"
                ) from exc

    def check_status(self, resp: httpx.Response, where: str) -> None:
        """Feed the used-weight header to the limiter; raise for 418 (ban), 429 (every request
        paused) and 5xx (transient). Any other status is left to the caller."""
        used = resp.headers.get("x-mbx-used-weight-1m")
        if used is not None and used.strip().isdigit():
            self.limiter.observe_used_weight(int(used))
        status = resp.status_code
        if status == 418:
            raise self.limiter.on_banned(self._ban_seconds(resp))
        if status == 429:
            retry_after = _retry_after(resp)
            pause = self.limiter.on_rate_limited(retry_after)
            raise RateLimited(f"{where}: HTTP 429, every request paused {pause:g} s", pause)
        if status >= 500:
            raise TransientExchangeError(f"{where}: HTTP {status} {one_line(resp.text, 60)}")

    def _handle(self, resp: httpx.Response, where: str) -> object:
        self.check_status(resp, where)
        status = resp.status_code
        payload = self.json_body(resp, where)
        if isinstance(payload, dict) and "code" in payload and "msg" in payload:
            code = payload["code"]
            if status != 200 or (isinstance(code, int) and code < 0):
                raise ExchangeError(
                    f"{where}: Binance error {code}: {one_line(str(payload['msg']))}"
                )
        if status != 200:
            raise ExchangeError(f"{where}: HTTP {status} {one_line(resp.text, 60)}")
        return payload

    def json_body(self, resp: httpx.Response, where: str) -> object:
        """The JSON body; not JSON is transient on HTTP 200 (a proxy page, a cut transfer),
        an :class:`ExchangeError` otherwise."""
        try:
            return json.loads(resp.content)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            kind = "an HTML page" if b"<html" in resp.content[:200].lower() else "not valid JSON"
            msg = f"{where}: HTTP {resp.status_code} body is {kind}: {one_line(resp.text, 40)!r}"
            if resp.status_code == 200:  # a proxy page or a cut transfer: worth another try
                raise TransientExchangeError(msg) from exc
            raise ExchangeError(msg) from exc

    def _ban_seconds(self, resp: httpx.Response) -> float:
        retry_after = _retry_after(resp)
        if retry_after is not None:
            return retry_after
        match = _BANNED_UNTIL_RE.search(resp.text)
        if match:
            return max(0.0, int(match.group(1)) / 1000 - self.clock.time())
        return DEFAULT_BAN_S


def check_timeout(value: float, name: str) -> float:
    """``value`` if it is a finite number of seconds above 0, else a one-line ConfigError."""
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} {value!r}: expected a finite number of seconds above 0")
    return value


def _retry_after(resp: httpx.Response) -> float | None:
    raw = resp.headers.get("retry-after")
    try:
        return max(0.0, float(raw)) if raw is not None else None
    except ValueError:
        return None
