"""The HTTP rules shared by the external-series sources: one ``httpx.AsyncClient`` with a
timeout, and retries with exponential backoff and jitter (tenacity, as the exchange transport
does) on timeouts, dropped connections, HTTP 5xx, HTTP 429 (waiting at least ``Retry-After``)
and a 200 whose body is not JSON. Any other answer fails at once with a one-line
:class:`~atra.errors.DataError` naming the source and the URL path.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from types import TracebackType
from typing import Self

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from atra.adapters.exchange.wire import one_line
from atra.adapters.ratelimit import Clock, SystemClock
from atra.errors import DataError, TransientExchangeError

__all__ = ["SourceHttp", "TransientSourceError"]


class TransientSourceError(TransientExchangeError):
    """A source failure worth retrying (timeout, connection, 5xx, 429, a cut body)."""

    def __init__(self, message: str, retry_after_s: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class SourceHttp:
    """GET JSON from one source's base URL; ``async with`` opens and closes the client."""

    def __init__(
        self,
        source: str,
        base_url: str,
        *,
        timeout_s: float = 10.0,
        max_attempts: int = 5,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        clock: Clock | None = None,
    ) -> None:
        if max_attempts < 1 or timeout_s <= 0 or backoff_s < 0:
            raise DataError(
                f"{source}: expected max_attempts >= 1, timeout_s > 0 and backoff_s >= 0"
            )
        self.source = source
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.clock: Clock = clock or SystemClock()
        self.attempts = 0
        """Requests sent since the client was built (retries included)."""
        self._http: httpx.AsyncClient | None = None

    async def __aenter__(self) -> Self:
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(self.timeout_s),
            headers={"Accept": "application/json", "User-Agent": "atra"},
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        http, self._http = self._http, None
        if http is not None:
            await asyncio.shield(http.aclose())

    def _wait(self, state: RetryCallState) -> float:
        base = wait_exponential(multiplier=self.backoff_s, max=self.max_backoff_s)
        jitter = wait_random(0, self.backoff_s)
        wait = base(state) + jitter(state)
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, TransientSourceError):
            wait = max(wait, exc.retry_after_s)
        return float(wait)

    async def get_json(self, path: str, params: Mapping[str, str | int]) -> object:
        """The JSON answer of ``GET path?params``, retried while the failure is transient."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=self._wait,
            retry=retry_if_exception_type(TransientSourceError),
            sleep=self.clock.sleep,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._get_once(path, params)
        except TransientSourceError as exc:
            raise TransientSourceError(
                f"{exc} (gave up after {self.max_attempts} attempts)"
            ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def _get_once(self, path: str, params: Mapping[str, str | int]) -> object:
        http = self._http
        where = f"{self.source} {path}"
        if http is None:
            raise DataError(f"{where}: the source is not open: use `async with`")
        self.attempts += 1
        try:
            resp = await http.get(path, params=dict(params))
        except httpx.TimeoutException as exc:
            raise TransientSourceError(
                f"{where}: no answer within {self.timeout_s:g} s ({type(exc).__name__})"
            ) from exc
        except httpx.TransportError as exc:
            raise TransientSourceError(
                f"{where}: connection failed ({type(exc).__name__}: {one_line(str(exc))})"
            ) from exc
        status = resp.status_code
        if status == 429:
            raw = resp.headers.get("retry-after", "")
            try:
                after = max(0.0, float(raw))
            except ValueError:
                after = 0.0
            raise TransientSourceError(f"{where}: HTTP 429 (retry after {after:g} s)", after)
        if status >= 500:
            raise TransientSourceError(f"{where}: HTTP {status} {one_line(resp.text, 60)}")
        try:
            payload = json.loads(resp.content)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            msg = f"{where}: HTTP {status} body is not JSON: {one_line(resp.text, 40)!r}"
            if status == 200:
                raise TransientSourceError(msg) from exc
            raise DataError(msg) from exc
        if status != 200:
            raise DataError(f"{where}: HTTP {status} {one_line(resp.text, 80)}")
        return payload
