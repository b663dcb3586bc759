"""Weight-aware rate limiting shared by every task of the process.

One :class:`RateLimiter` per (host, market) and process, taken from a module-level registry
with :func:`shared_limiter` (a caller may also build one and pass it explicitly; the
exchange client accepts ``limiter=``). Every request:

1. takes a connection slot (an ``asyncio.Semaphore`` caps concurrent connections),
2. is charged its real weight in each bucket it counts against, waiting until the bucket has
   room (a sliding window of ``window_s + slack_s`` seconds, kept below
   ``safety * limit`` so that a server counting in fixed windows, with network latency in
   between, never sees more than ``limit``),
3. reports back the server's ``X-MBX-USED-WEIGHT-1m``: the server's count (other processes
   on the same IP included) plus what was sent since is also kept below the budget, so the
   limiter slows down as the server's count nears the limit.

A 429 pauses every task for ``Retry-After`` seconds; a 418 stops every request until the ban
ends and raises :class:`~atra.errors.IPBanned` (also for any request tried during the ban:
nothing is sent). Time comes from an injected :class:`Clock`, so tests can scale a minute
down to a second (:class:`ScaledClock`) or drive it by hand (:class:`ManualClock`).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final, Protocol

from atra.core.types import Market
from atra.errors import ExchangeError, IPBanned

WEIGHT: Final[str] = "weight"
"""The REQUEST_WEIGHT bucket (per minute unless exchangeInfo says otherwise)."""
FUNDING: Final[str] = "funding"
"""USDT-M ``/fapi/v1/fundingRate``: 500 requests per 5 minutes per IP, its own bucket."""

DEFAULT_WEIGHT_LIMIT: Final[dict[Market, int]] = {Market.SPOT: 6_000, Market.PERP: 2_400}
FUNDING_LIMIT: Final[int] = 500
FUNDING_WINDOW_S: Final[float] = 300.0
_INTERVAL_S: Final[dict[str, float]] = {
    "SECOND": 1.0,
    "MINUTE": 60.0,
    "HOUR": 3_600.0,
    "DAY": 86_400.0,
}


class Clock(Protocol):
    """Where the limiter reads time and how it waits (seconds, exchange time)."""

    def monotonic(self) -> float:
        """Seconds on a monotonic clock."""

    def time(self) -> float:
        """Wall-clock seconds since the epoch (UTC)."""

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (of this clock)."""


class SystemClock:
    """The real clock: ``time.monotonic``, ``time.time`` and ``asyncio.sleep``."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class ScaledClock:
    """Real time running ``scale`` times faster: with ``scale=60`` a minute lasts one second.

    ``monotonic`` and ``sleep`` are scaled; ``time`` (the wall clock, used to tell closed from
    open candles) is not.
    """

    def __init__(self, scale: float) -> None:
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.scale = scale

    def monotonic(self) -> float:
        return time.monotonic() * self.scale

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.scale)


class ManualClock:
    """A clock that moves only when :meth:`advance` is called; sleepers wake in time order."""

    def __init__(self, start_s: float = 0.0, wall_s: float = 1.7e9) -> None:
        self.now = start_s
        self.wall_offset = wall_s - start_s
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now + self.wall_offset

    @property
    def sleepers(self) -> int:
        """Tasks currently sleeping on this clock."""
        return sum(1 for *_, fut in self._sleepers if not fut.done())

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + seconds, next(self._seq), fut))
        await fut

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose time has come."""
        self.now += seconds
        while self._sleepers and self._sleepers[0][0] <= self.now:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)


@dataclass(frozen=True, slots=True)
class RateLimit:
    """One limit from exchangeInfo ``rateLimits``: ``limit`` units per ``interval_s``."""

    kind: str
    interval_s: float
    limit: int


def parse_rate_limits(raw: object) -> tuple[RateLimit, ...]:
    """exchangeInfo ``rateLimits`` -> :class:`RateLimit` tuple; a wrong shape is ExchangeError."""
    if not isinstance(raw, list):
        raise ExchangeError(f"exchangeInfo rateLimits: expected a list, got {type(raw).__name__}")
    out: list[RateLimit] = []
    for i, item in enumerate(raw):
        try:
            kind = str(item["rateLimitType"])
            interval_s = _INTERVAL_S[str(item["interval"])] * int(item["intervalNum"])
            out.append(RateLimit(kind, interval_s, int(item["limit"])))
        except (TypeError, KeyError, ValueError) as exc:
            raise ExchangeError(f"exchangeInfo rateLimits[{i}]: unusable entry {item!r}") from exc
    return tuple(out)


class _Bucket:
    """Sliding-window accounting of one limit."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self.sent: deque[tuple[float, int]] = deque()
        self.total = 0

    def expire(self, now: float, span_s: float) -> None:
        """Forget charges older than ``span_s`` (same arithmetic as :meth:`wait_s`)."""
        while self.sent and self.sent[0][0] + span_s <= now:
            self.total -= self.sent.popleft()[1]

    def wait_s(self, cost: int, budget: int, now: float, span_s: float) -> float:
        """Seconds until ``cost`` more fits under ``budget`` (0 if it fits now)."""
        excess = self.total + cost - budget
        if excess <= 0:
            return 0.0
        freed = 0
        for t, w in self.sent:
            freed += w
            if freed >= excess:
                return t + span_s - now
        return span_s  # pragma: no cover  (cost <= budget is checked before waiting)


@dataclass(frozen=True, slots=True)
class LimiterStats:
    """What the limiter did: requests let through, waits for room, 429s and 418s seen."""

    requests: int
    waits: int
    wait_s: float
    rate_limited: int
    bans: int


class RateLimiter:
    """A weight-aware limiter shared by every task that talks to one host.

    ``weight_limit`` per ``window_s`` is the REQUEST_WEIGHT limit; ``safety`` keeps a margin
    below it, ``slack_s`` widens the window by the worst expected network latency. Extra
    buckets (e.g. :data:`FUNDING`) are added with :meth:`set_limit`.
    """

    def __init__(
        self,
        weight_limit: int,
        *,
        window_s: float = 60.0,
        safety: float = 0.9,
        slack_s: float = 2.0,
        max_connections: int = 10,
        clock: Clock | None = None,
        name: str = "exchange",
        enabled: bool = True,
    ) -> None:
        if not 0 < safety <= 1:
            raise ValueError(f"safety must be in (0, 1], got {safety}")
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections}")
        self.clock: Clock = clock or SystemClock()
        self.name = name
        self.safety = safety
        self.slack_s = slack_s
        self.max_connections = max_connections
        self.enabled = enabled
        self._buckets: dict[str, _Bucket] = {}
        self.set_limit(WEIGHT, weight_limit, window_s)
        self.paused_until = -math.inf
        self.banned_until = -math.inf
        self._sems: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )
        self._requests = self._waits = self._rate_limited = self._bans = 0
        self._wait_s = 0.0
        self._held = 0
        # the server's own count (X-MBX-USED-WEIGHT-1m): when it was read, its value, our
        # weight sent since and the weight that was in flight then (maybe not yet counted)
        self._obs_t = -math.inf
        self._obs_used = 0
        self._since_obs = 0
        self._inflight = 0
        self._inflight_at_obs = 0

    # ---- configuration -----------------------------------------------------------------

    def set_limit(self, bucket: str, limit: int, window_s: float) -> None:
        """Set (or add) ``bucket``: at most ``limit`` units per ``window_s`` seconds."""
        if limit < 1 or window_s <= 0:
            raise ValueError(f"{bucket}: limit and window must be positive ({limit}/{window_s}s)")
        old = self._buckets.get(bucket)
        new = _Bucket(limit, window_s)
        if old is not None:  # keep what was already charged
            new.sent, new.total = old.sent, old.total
        self._buckets[bucket] = new

    def configure(self, rate_limits: Iterable[RateLimit]) -> None:
        """Take the REQUEST_WEIGHT limit from exchangeInfo (the tightest, per its interval)."""
        weights = [r for r in rate_limits if r.kind == "REQUEST_WEIGHT"]
        if weights:
            tight = min(weights, key=lambda r: r.limit / r.interval_s)
            self.set_limit(WEIGHT, tight.limit, tight.interval_s)

    def limit(self, bucket: str = WEIGHT) -> tuple[int, float]:
        """``(limit, window_s)`` of ``bucket``."""
        b = self._buckets[bucket]
        return b.limit, b.window_s

    def budget(self, bucket: str = WEIGHT) -> int:
        """The units the limiter lets through per window: ``floor(safety * limit)``, >= 1."""
        return max(1, math.floor(self._buckets[bucket].limit * self.safety))

    def used(self, bucket: str = WEIGHT) -> int:
        """Units used now as the limiter sees them: ours in the sliding window or, for the
        weight, the server's last reported count plus what we sent since, whichever is more."""
        b = self._buckets[bucket]
        now = self.clock.monotonic()
        b.expire(now, b.window_s + self.slack_s)
        if bucket == WEIGHT:
            return max(b.total, self._server_estimate(now))
        return b.total

    def _server_estimate(self, now: float) -> int:
        if now >= self._obs_t + self._buckets[WEIGHT].window_s:
            return 0  # the server's window has rolled since: its count restarted
        return self._obs_used + self._since_obs + self._inflight_at_obs

    def _server_wait(self, cost: int, now: float) -> float:
        """Seconds to wait before the server's count leaves room for ``cost`` (0: now)."""
        if self._server_estimate(now) + cost <= self.budget(WEIGHT):
            return 0.0
        window_s = self._buckets[WEIGHT].window_s
        # the count restarts when the server's window rolls (at the latest one window after
        # the reading); a fresher reading may come sooner, so look again every 1/60 window
        return min(self._obs_t + window_s - now, window_s / 60)

    @property
    def stats(self) -> LimiterStats:
        return LimiterStats(
            self._requests, self._waits, self._wait_s, self._rate_limited, self._bans
        )

    # ---- the request path --------------------------------------------------------------

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        sem = self._sems.get(loop)
        if sem is None:
            sem = self._sems[loop] = asyncio.Semaphore(self.max_connections)
        return sem

    def check_ban(self) -> None:
        """Raise :class:`IPBanned` while a ban is running: no request may be sent."""
        left = self.banned_until - self.clock.monotonic()
        if left > 0:
            raise IPBanned(
                f"{self.name}: IP banned (HTTP 418) for another {left:.0f} s; "
                "every request is stopped until the ban ends",
                left,
            )

    async def acquire(self, charges: Mapping[str, int]) -> None:
        """Wait until every bucket has room for its charge, then charge it."""
        for bucket, cost in charges.items():
            if bucket not in self._buckets:
                raise ExchangeError(f"{self.name}: no rate-limit bucket {bucket!r}")
            if self.enabled and cost > self.budget(bucket):
                raise ExchangeError(
                    f"{self.name}: a request of weight {cost} can never fit the {bucket} "
                    f"budget of {self.budget(bucket)}"
                )
        waited = False
        while True:
            self.check_ban()
            now = self.clock.monotonic()
            wait = self.paused_until - now
            if self.enabled:
                for bucket, cost in charges.items():
                    b = self._buckets[bucket]
                    span = b.window_s + self.slack_s
                    b.expire(now, span)
                    wait = max(wait, b.wait_s(cost, self.budget(bucket), now, span))
                    if bucket == WEIGHT:
                        wait = max(wait, self._server_wait(cost, now))
            if wait <= 0:
                break
            if not waited:
                self._waits += 1
                waited = True
            self._wait_s += wait
            await self.clock.sleep(wait)
        now = self.clock.monotonic()
        for bucket, cost in charges.items():
            if cost > 0:
                b = self._buckets[bucket]
                b.sent.append((now, cost))
                b.total += cost
        self._requests += 1
        self._since_obs += charges.get(WEIGHT, 0)

    async def hold_while_paused(self) -> None:
        """The last gate before a request goes on the wire: wait while a 429 pause runs (one
        may have been learnt after this request was let through) and raise during a ban."""
        while True:
            self.check_ban()
            wait = self.paused_until - self.clock.monotonic()
            if wait <= 0:
                return
            self._held += 1
            await self.clock.sleep(wait)

    @property
    def held(self) -> int:
        """Times a request that had passed the limiter was held back by a 429 pause."""
        return self._held

    @asynccontextmanager
    async def _in_flight(self, weight: int) -> AsyncIterator[None]:
        self._inflight += weight
        try:
            yield
        finally:
            self._inflight -= weight

    @asynccontextmanager
    async def slot(self, charges: Mapping[str, int]) -> AsyncIterator[None]:
        """Hold a connection slot and the charged weight for one request."""
        self.check_ban()
        async with self._semaphore():
            await self.acquire(charges)
            async with self._in_flight(charges.get(WEIGHT, 0)):
                yield

    # ---- feedback from responses -------------------------------------------------------

    def observe_used_weight(self, used: int) -> None:
        """Sync with the server's ``X-MBX-USED-WEIGHT-1m`` (weight other clients on this IP
        used counts too): until the server's window rolls, the limiter adds what it sends to
        this reading and waits when the sum nears the limit."""
        self._obs_t = self.clock.monotonic()
        self._obs_used = used
        self._since_obs = 0
        self._inflight_at_obs = self._inflight

    def on_rate_limited(self, retry_after_s: float | None) -> float:
        """HTTP 429: pause every task for ``retry_after_s`` (a full window when not given)."""
        self._rate_limited += 1
        pause = retry_after_s if retry_after_s is not None else self._buckets[WEIGHT].window_s
        self.paused_until = max(self.paused_until, self.clock.monotonic() + pause)
        return pause

    def on_banned(self, ban_s: float) -> IPBanned:
        """HTTP 418: stop every request for ``ban_s`` seconds; returns the error to raise."""
        self._bans += 1
        self.banned_until = max(self.banned_until, self.clock.monotonic() + ban_s)
        return IPBanned(
            f"{self.name}: IP banned by the exchange (HTTP 418) for {ban_s:.0f} s; every "
            "request is stopped until the ban ends",
            ban_s,
        )


_REGISTRY: dict[tuple[str, Market], RateLimiter] = {}


def shared_limiter(
    host: str,
    market: Market,
    *,
    clock: Clock | None = None,
    max_connections: int = 10,
) -> RateLimiter:
    """The process-wide limiter of ``host`` (``"api.binance.com"``) and ``market``.

    Created on first use (with ``clock`` and ``max_connections``; later calls return the same
    object whatever they pass), with Binance's default limit for the market (spot 6,000,
    USDT-M 2,400 weight a minute; USDT-M also gets the fundingRate bucket of 500 per 5 min).
    """
    key = (host, market)
    limiter = _REGISTRY.get(key)
    if limiter is None:
        limiter = RateLimiter(
            DEFAULT_WEIGHT_LIMIT[market],
            clock=clock,
            max_connections=max_connections,
            name=f"{host} {market}",
        )
        if market is Market.PERP:
            limiter.set_limit(FUNDING, FUNDING_LIMIT, FUNDING_WINDOW_S)
        _REGISTRY[key] = limiter
    return limiter


def forget_shared_limiters() -> None:
    """Drop every registered limiter (a new process state; for tests and replays)."""
    _REGISTRY.clear()
