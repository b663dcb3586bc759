"""The HTTP transport of a Binance client: one ``aiohttp.ClientSession``, the host's rate
limiter, timeouts, retries with backoff, and the mapping of HTTP answers to ATRA errors.

:class:`BinanceTransport` is the base of :class:`~atra.adapters.exchange.client.BinanceClient`
(and, through it, the connection :class:`~atra.adapters.trading.trader.BinanceTrader` signs
its requests over). ``async with`` opens the session and closes it on the way out, also on
error or cancellation. aiohttp (which ccxt's asyncio clients use too) rather than httpx: a
kline request costs the client several times less CPU (``bench/bench_http_client.py``; the
live loop's REST feed fetches every symbol at each bar close, ``docs/live-operations.md``).

Every request goes through the process-wide :class:`~atra.adapters.ratelimit.RateLimiter` of
its host (or the one passed in), has a timeout, and is retried with exponential backoff and
jitter (tenacity) when the failure is transient: timeouts, dropped connections, 5xx, 429, and
a body that is not JSON at all (a proxy page, a truncated transfer). Anything else (a Binance
error such as ``-1121 Invalid symbol.``, JSON of the wrong shape) fails at once with a
one-line :class:`~atra.errors.ExchangeError`.

A 429 stops what is not yet on the wire. The limiter learns of it (and of a 418) as soon as
the answer's headers are in, before its body is read and so before its connection can carry
another request; every request passes the limiter's wire gate (:class:`GatedConnector`) once
it has its connection (a new one may take a while to open) and before its first byte is
written, so a request that passed the limiter before the 429 and then waited for a connection
is held back, unsent, until the pause ends. A new order is also charged to the limiter's
ORDERS buckets.

With ``metrics`` (:class:`~atra.obs.metrics.Metrics`; None emits nothing) the transport counts
``atra_exchange_requests_total{endpoint, status}`` (``status``: 2xx, 4xx, 418, 429, 5xx, or
``error`` when no answer came), times ``atra_exchange_request_duration_seconds{endpoint}``,
counts ``atra_retries_total{endpoint}`` and has its limiter report ``atra_ratelimit_*``
(``market`` label). ``endpoint`` is the path template (``/fapi/v1/klines``), never a query.

Each answer is logged as ``exchange_answer`` (method, endpoint, status): at DEBUG below 400
(thousands of lines in a replay), at INFO for 429s, bans (418), Binance error answers and 5xx.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self
from urllib.parse import urlsplit

import aiohttp
from multidict import CIMultiDictProxy
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)
from yarl import URL

from atra.adapters.exchange.wire import one_line, order_count
from atra.adapters.ratelimit import WEIGHT, Clock, RateLimiter, shared_limiter, stated_limit
from atra.core.types import Market
from atra.errors import ConfigError, ExchangeError, RateLimited, TransientExchangeError
from atra.obs import get_logger

if TYPE_CHECKING:
    from aiohttp.abc import AbstractResolver
    from aiohttp.client_reqrep import ClientRequest
    from aiohttp.connector import Connection
    from aiohttp.tracing import Trace

    from atra.obs.metrics import Metrics

DEFAULT_BAN_S: Final[float] = 120.0
_BANNED_UNTIL_RE: Final = re.compile(r"banned until (\d{12,})")

log = get_logger("atra.adapters.exchange")
_ANSWERS: Final = logging.getLogger("atra.exchange.http")


class _HeldBack(Exception):
    """Raised by the wire gate: a 429 pause began while the request waited for its connection.
    Nothing was written; the connection goes back to the pool and the request is sent after
    the pause."""


@dataclass(frozen=True, slots=True)
class Answer:
    """An exchange's answer, read whole: status, headers (case-insensitive) and body."""

    status_code: int
    headers: CIMultiDictProxy[str]
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


class GatedConnector(aiohttp.TCPConnector):
    """A TCP connector whose connections pass a wire gate before they carry a request.

    ``gate()`` runs once the request has its connection (a reused one, or a new one that took
    a connect to open) and nothing is written yet: aiohttp writes the request right after
    :meth:`connect` returns, with no await in between. ``gate`` returns True to hold the
    request back (the connection goes back to the pool unused, :class:`_HeldBack` is raised)
    or raises (a ban; the connection goes back the same way)."""

    def __init__(self, gate: Callable[[], bool], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._gate = gate

    async def connect(
        self, req: ClientRequest, traces: list[Trace], timeout: aiohttp.ClientTimeout
    ) -> Connection:
        conn = await super().connect(req, traces, timeout)
        try:
            held = self._gate()
        except BaseException:
            conn.release()
            raise
        if held:
            conn.release()
            raise _HeldBack
        return conn


class BinanceTransport:
    """Requests to one Binance host (spot or USDT-M futures) over one ``aiohttp.ClientSession``
    of at most the limiter's ``max_connections`` connections (the limiter's connection slots
    keep every request's connection free until its body is read, so none waits in the pool)."""

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
        resolver: AbstractResolver | None = None,
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
        self.resolver = resolver
        """Host name resolution for new connections (None: aiohttp's default resolver)."""
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        connector = GatedConnector(
            self.limiter.must_hold, limit=self.limiter.max_connections, resolver=self.resolver
        )
        self._http = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                total=None, connect=self.connect_timeout_s, sock_read=self.timeout_s
            ),
            headers={"Accept": "application/json", "User-Agent": "atra"},
            raise_for_status=False,
            trust_env=True,  # HTTP(S)_PROXY / NO_PROXY from the environment, as httpx did
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
        """Close the HTTP session (idempotent; shielded so cancellation cannot skip it)."""
        http, self._http = self._http, None
        if http is not None:
            await asyncio.shield(http.close())

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
    ) -> Answer:
        """One request through the limiter: ``params`` are encoded here, a ``query`` string is
        sent exactly as given (a signed query must reach the server byte for byte). Timeouts
        and dropped connections are :class:`TransientExchangeError` naming ``where`` (which
        must not hold secrets); the answer is returned unchecked (see :meth:`check_status`).

        The whole request (connect, send, every read of the body) must end within
        ``timeout_s``: per-phase timeouts alone would let a server dripping a byte a second
        hold the request for ever. A request that passed the limiter is held back (not sent)
        while a 429 pause, learnt meanwhile from another answer, runs: before it takes a
        connection and again at the wire gate, once it has one.
        """
        http = self._http
        if http is None:
            raise ExchangeError("BinanceClient is not open: use `async with BinanceClient(...)`")
        url: str | URL = self.base_url + path
        if query:
            url = URL(f"{url}?{query}", encoded=True)
        orders = order_count(method, path)
        if orders:
            charges = {**charges, **dict.fromkeys(self.limiter.order_buckets(), orders)}
        async with self.limiter.slot(charges):
            while True:
                await self.limiter.hold_while_paused()
                started = time.perf_counter()
                try:
                    async with (
                        asyncio.timeout(self.timeout_s),
                        http.request(
                            method,
                            url,
                            params=_query_params(params),
                            headers=headers,
                            allow_redirects=False,
                        ) as resp,
                    ):
                        status = resp.status
                        if status in (418, 429):
                            self._learn(resp.headers, status)  # before the body is read
                        body = await resp.read()
                except _HeldBack:
                    continue
                except (aiohttp.ServerTimeoutError, aiohttp.ConnectionTimeoutError) as exc:
                    self._count(path, "error", started)
                    raise TransientExchangeError(
                        f"{where}: no answer within {self.timeout_s:g} s ({type(exc).__name__})"
                    ) from exc
                except TimeoutError as exc:
                    self._count(path, "error", started)
                    raise TransientExchangeError(
                        f"{where}: no answer within {self.timeout_s:g} s "
                        "(whole-request deadline: connect, send and every read)"
                    ) from exc
                except aiohttp.ClientError as exc:
                    self._count(path, "error", started)
                    raise TransientExchangeError(
                        f"{where}: connection failed ({type(exc).__name__}: {one_line(str(exc))})"
                    ) from exc
                answer = Answer(status, resp.headers, body)
                self._count(path, status_class(status), started)
                self._log(method, path, status)
                if status in (418, 429):
                    self._learn_from_body(answer, path)
                used = answer.headers.get("x-mbx-used-weight-1m")
                if used is not None and used.strip().isdigit():
                    self.limiter.observe_used_weight(int(used), charges.get(WEIGHT, 0))
                return answer

    def _learn(self, headers: CIMultiDictProxy[str], status: int) -> None:
        """A 429's pause, as soon as its headers are in: before its body is read, so before
        its connection can carry another request (a 418 waits for its body: the ban's end may
        be there, see :meth:`_learn_from_body`)."""
        if status == 429:
            self.limiter.on_rate_limited(_retry_after(headers))

    def _learn_from_body(self, answer: Answer, endpoint: str) -> None:
        """A 429 may state a limit tighter than the limiter's own: take it. A 418 bans every
        request until the time its ``Retry-After`` or its body names."""
        if answer.status_code == 429:
            stated = stated_limit(_error_message(answer))
            if stated is not None and self.limiter.learn(stated):
                log.warning(
                    "rate_limit_lowered",
                    endpoint=endpoint,
                    kind=stated.kind,
                    limit=stated.limit,
                    interval_s=stated.interval_s,
                )
        else:
            self.limiter.on_banned(self._ban_seconds(answer))

    @staticmethod
    def _log(method: str, endpoint: str, status: int) -> None:
        """The ``exchange_answer`` line, on the standard-library logger ``atra.exchange.http``
        (as httpx logs its requests): INFO from 400 up, DEBUG below. Rendered by ATRA's
        logging once :func:`~atra.obs.configure_logging` set it up; dropped before that."""
        level = logging.INFO if status >= 400 else logging.DEBUG
        if _ANSWERS.isEnabledFor(level):
            fields = {"method": method, "endpoint": endpoint, "status": status}
            _ANSWERS.log(level, "exchange_answer", extra=fields)

    def _count(self, endpoint: str, status: str, started: float) -> None:
        if self.metrics is not None:
            m = self.metrics
            m.exchange_requests_total.labels(endpoint=endpoint, status=status).inc()
            seconds = time.perf_counter() - started
            m.exchange_request_duration_seconds.labels(endpoint=endpoint).observe(seconds)

    def check_status(self, resp: Answer, where: str) -> None:
        """Raise for 418 (ban), 429 (every request paused) and 5xx (transient); any other
        status is left to the caller. (The limiter has already learnt of the 429 or 418 from
        the response hook, before the body was read.)"""
        status = resp.status_code
        if status == 418:
            raise self.limiter.ban_error(self._ban_seconds(resp))
        if status == 429:
            pause = self.limiter.pause_s(_retry_after(resp.headers))
            raise RateLimited(f"{where}: HTTP 429, every request paused {pause:g} s", pause)
        if status >= 500:
            raise TransientExchangeError(f"{where}: HTTP {status} {one_line(resp.text, 60)}")

    def _handle(self, resp: Answer, where: str) -> object:
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

    def json_body(self, resp: Answer, where: str) -> object:
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

    def _ban_seconds(self, resp: Answer) -> float:
        retry_after = _retry_after(resp.headers)
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


def _error_message(resp: Answer) -> str:
    """The ``msg`` of a Binance error body, or '' when the body is not one."""
    try:
        payload = json.loads(resp.content)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return ""
    msg = payload.get("msg") if isinstance(payload, dict) else None
    return msg if isinstance(msg, str) else ""


def _retry_after(headers: CIMultiDictProxy[str]) -> float | None:
    raw = headers.get("retry-after")
    try:
        return max(0.0, float(raw)) if raw is not None else None
    except ValueError:
        return None


def _query_params(params: Mapping[str, str | int] | None) -> dict[str, str] | None:
    """``params`` as query pairs, in their order (str values, as the wire has them)."""
    if params is None:
        return None
    return {k: str(v) for k, v in params.items()}
