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

A 429 stops what is not yet on the wire. The limiter learns of it (and of a 418) in an httpx
response hook, as soon as the answer's headers are in and before its connection can carry
another request; every request passes the limiter's wire gate (an httpcore ``trace`` callback
at ``send_request_headers``) after it got its connection and before its first byte is written,
so a request that passed the limiter before the 429 and then waited for a connection is held
back, unsent, until the pause ends. A new order is also charged to the limiter's ORDERS
buckets.

With ``metrics`` (:class:`~atra.obs.metrics.Metrics`; None emits nothing) the transport counts
``atra_exchange_requests_total{endpoint, status}`` (``status``: 2xx, 4xx, 418, 429, 5xx, or
``error`` when no answer came), times ``atra_exchange_request_duration_seconds{endpoint}``,
counts ``atra_retries_total{endpoint}`` and has its limiter report ``atra_ratelimit_*``
(``market`` label). ``endpoint`` is the path template (``/fapi/v1/klines``), never a query.

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
import time
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self
from urllib.parse import urlsplit

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from atra.adapters.exchange.wire import one_line, order_count
from atra.adapters.ratelimit import WEIGHT, Clock, RateLimiter, shared_limiter, stated_limit
from atra.core.types import Market
from atra.errors import ConfigError, ExchangeError, RateLimited, TransientExchangeError
from atra.obs import get_logger

if TYPE_CHECKING:
    from collections.abc import Callable

    from atra.obs.metrics import Metrics

DEFAULT_BAN_S: Final[float] = 120.0
_BANNED_UNTIL_RE: Final = re.compile(r"banned until (\d{12,})")
_HTTPX_LOGGER: Final[str] = "httpx"
_WIRE_EVENT: Final[str] = "send_request_headers.started"
"""httpcore's trace event right before a request's first byte is written on its connection."""

log = get_logger("atra.adapters.exchange")


class _HeldBack(Exception):
    """Raised by the wire gate: a 429 pause began while the request waited for its connection.
    Nothing was written; httpcore closes that connection and the request is sent after the
    pause."""


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
        metrics: Metrics | None = None,
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
        self.metrics = metrics
        if metrics is not None and self.limiter.reporting_to is not metrics:
            self.limiter.report_to(metrics, market.value)
        self._http: httpx.AsyncClient | None = None

    async def __aenter__(self) -> Self:
        demote_request_logs()
        n = self.limiter.max_connections
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(self.timeout_s, connect=self.connect_timeout_s),
            limits=httpx.Limits(max_connections=n, max_keepalive_connections=n),
            headers={"Accept": "application/json", "User-Agent": "atra"},
            event_hooks={"response": [self._on_answer]},
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

    def retrying(self, endpoint: str, max_attempts: int | None = None) -> AsyncRetrying:
        """Retries of transient failures (:class:`TransientExchangeError`) with exponential
        backoff and jitter on this transport's clock, each counted in
        ``atra_retries_total{endpoint}``; ``max_attempts`` defaults to the transport's."""
        return AsyncRetrying(
            stop=stop_after_attempt(max_attempts or self.max_attempts),
            wait=wait_exponential(multiplier=self.backoff_s, max=self.max_backoff_s)
            + wait_random(0, self.backoff_s),
            retry=retry_if_exception_type(TransientExchangeError),
            sleep=self.clock.sleep,
            before_sleep=self._retry_counter(endpoint),
            reraise=True,
        )

    def _retry_counter(self, endpoint: str) -> Callable[[RetryCallState], None]:
        def count(state: RetryCallState) -> None:
            if self.metrics is not None:
                self.metrics.retries_total.labels(endpoint=endpoint).inc()

        return count

    async def _get(
        self, path: str, params: Mapping[str, str | int], charges: Mapping[str, int]
    ) -> object:
        try:
            async for attempt in self.retrying(path):
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
        is held back (not sent) while a 429 pause, learnt meanwhile from another answer, runs:
        before it takes a connection and again at the wire gate, once it has one.
        """
        http = self._http
        if http is None:
            raise ExchangeError("BinanceClient is not open: use `async with BinanceClient(...)`")
        url = f"{path}?{query}" if query else path
        orders = order_count(method, path)
        if orders:
            charges = {**charges, **dict.fromkeys(self.limiter.order_buckets(), orders)}
        async with self.limiter.slot(charges):
            while True:
                await self.limiter.hold_while_paused()
                started = time.perf_counter()
                try:
                    async with asyncio.timeout(self.timeout_s):
                        resp = await http.request(
                            method,
                            url,
                            params=dict(params) if params is not None else None,
                            headers=dict(headers) if headers is not None else None,
                            extensions={"trace": self._wire_gate},
                        )
                except _HeldBack:
                    continue
                except TimeoutError as exc:
                    self._count(path, "error", started)
                    raise TransientExchangeError(
                        f"{where}: no answer within {self.timeout_s:g} s "
                        "(whole-request deadline: connect, send and every read)"
                    ) from exc
                except httpx.TimeoutException as exc:
                    self._count(path, "error", started)
                    raise TransientExchangeError(
                        f"{where}: no answer within {self.timeout_s:g} s ({type(exc).__name__})"
                    ) from exc
                except httpx.TransportError as exc:
                    self._count(path, "error", started)
                    raise TransientExchangeError(
                        f"{where}: connection failed ({type(exc).__name__}: {one_line(str(exc))})"
                    ) from exc
                self._count(path, status_class(resp.status_code), started)
                used = resp.headers.get("x-mbx-used-weight-1m")
                if used is not None and used.strip().isdigit():
                    self.limiter.observe_used_weight(int(used), charges.get(WEIGHT, 0))
                return resp

    async def _wire_gate(self, event: str, info: dict[str, Any]) -> None:
        """httpcore ``trace`` callback: the request has its connection and nothing is written
        yet. During a 429 pause it is held back (:class:`_HeldBack`), during a ban it fails."""
        if event.endswith(_WIRE_EVENT) and self.limiter.must_hold():
            raise _HeldBack

    async def _on_answer(self, resp: httpx.Response) -> None:
        """httpx response hook: runs when an answer's headers are in, before its body is read,
        so before its connection can carry another request. The limiter learns of a 429 pause
        or a 418 ban here, ahead of any request still to be written, and takes a limit the 429
        states when it is tighter than its own. (The used-weight header is read in
        :meth:`send`, which knows the weight of the request it answers.)"""
        status = resp.status_code
        if status == 429:
            self.limiter.on_rate_limited(_retry_after(resp))  # first: the pause, then the body
            await resp.aread()
            stated = stated_limit(_error_message(resp))
            if stated is not None and self.limiter.learn(stated):
                log.warning(
                    "rate_limit_lowered",
                    endpoint=resp.request.url.path,
                    kind=stated.kind,
                    limit=stated.limit,
                    interval_s=stated.interval_s,
                )
        elif status == 418:
            if _retry_after(resp) is None:
                await resp.aread()  # the ban's end is in the body
            self.limiter.on_banned(self._ban_seconds(resp))

    def _count(self, endpoint: str, status: str, started: float) -> None:
        if self.metrics is not None:
            m = self.metrics
            m.exchange_requests_total.labels(endpoint=endpoint, status=status).inc()
            seconds = time.perf_counter() - started
            m.exchange_request_duration_seconds.labels(endpoint=endpoint).observe(seconds)

    def check_status(self, resp: httpx.Response, where: str) -> None:
        """Raise for 418 (ban), 429 (every request paused) and 5xx (transient); any other
        status is left to the caller. (The limiter has already learnt of the 429 or 418 from
        the response hook, before the body was read.)"""
        status = resp.status_code
        if status == 418:
            raise self.limiter.ban_error(self._ban_seconds(resp))
        if status == 429:
            pause = self.limiter.pause_s(_retry_after(resp))
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


def status_class(status: int) -> str:
    """The ``status`` label of ``atra_exchange_requests_total``: 418 and 429 as they are, else
    the class (``2xx``, ``4xx``, ``5xx``)."""
    return str(status) if status in (418, 429) else f"{status // 100}xx"


def _error_message(resp: httpx.Response) -> str:
    """The ``msg`` of a Binance error body, or '' when the body is not one."""
    try:
        payload = json.loads(resp.content)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return ""
    msg = payload.get("msg") if isinstance(payload, dict) else None
    return msg if isinstance(msg, str) else ""


def _retry_after(resp: httpx.Response) -> float | None:
    raw = resp.headers.get("retry-after")
    try:
        return max(0.0, float(raw)) if raw is not None else None
    except ValueError:
        return None
