"""The weight-aware :class:`RateLimiter` and the process-wide registry of limiters
(:func:`shared_limiter`). See :mod:`atra.adapters.ratelimit` for how a request passes it."""

from __future__ import annotations

import asyncio
import math
import weakref
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from atra.adapters.ratelimit.clock import Clock, SystemClock
from atra.adapters.ratelimit.limits import (
    DEFAULT_ORDER_LIMITS,
    DEFAULT_WEIGHT_LIMIT,
    FUNDING,
    FUNDING_LIMIT,
    FUNDING_WINDOW_S,
    ORDERS_PREFIX,
    WEIGHT,
    RateLimit,
    orders_bucket,
)
from atra.core.types import Market
from atra.errors import ExchangeError, IPBanned

if TYPE_CHECKING:
    from atra.obs.metrics import Metrics


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
    buckets (e.g. :data:`FUNDING`, the ORDERS buckets) are added with :meth:`set_limit`.
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
        self._metrics: Metrics | None = None
        self._label = ""
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
        if bucket == WEIGHT and self._metrics is not None:
            self._metrics.ratelimit_weight_limit.labels(market=self._label).set(limit)

    def configure(self, rate_limits: Iterable[RateLimit]) -> None:
        """Take the limits of exchangeInfo ``rateLimits``: REQUEST_WEIGHT (the tightest, per its
        interval) and every ORDERS limit (they replace the ORDERS buckets held so far)."""
        limits = list(rate_limits)
        weights = [r for r in limits if r.kind == "REQUEST_WEIGHT"]
        if weights:
            tight = min(weights, key=lambda r: r.limit / r.interval_s)
            self.set_limit(WEIGHT, tight.limit, tight.interval_s)
        orders = {orders_bucket(r.interval_s): r for r in limits if r.kind == "ORDERS"}
        if orders:
            for name in self.order_buckets():
                if name not in orders:
                    del self._buckets[name]
            for r in orders.values():
                self.set_limit(orders_bucket(r.interval_s), r.limit, r.interval_s)

    def learn(self, stated: RateLimit) -> bool:
        """Adopt a limit the exchange stated in a 429 answer when it is tighter than the one
        held (a configured limit above the venue's own corrects itself); True if adopted."""
        if stated.kind == "REQUEST_WEIGHT":
            bucket = WEIGHT
            held = self._buckets[WEIGHT]
            if stated.limit / stated.interval_s >= held.limit / held.window_s:
                return False
        elif stated.kind == "ORDERS":
            bucket = orders_bucket(stated.interval_s)
            old = self._buckets.get(bucket)
            if old is not None and old.limit <= stated.limit:
                return False
        else:
            return False
        self.set_limit(bucket, stated.limit, stated.interval_s)
        return True

    def order_buckets(self) -> tuple[str, ...]:
        """The ORDERS buckets held (new orders count against each)."""
        return tuple(b for b in self._buckets if b.startswith(ORDERS_PREFIX))

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

    # ---- metrics -----------------------------------------------------------------------

    def report_to(self, metrics: Metrics | None, label: str) -> None:
        """Emit ``atra_ratelimit_*`` into ``metrics`` with ``market=label`` (None: stop)."""
        self._metrics, self._label = metrics, label
        if metrics is not None:
            metrics.ratelimit_weight_limit.labels(market=label).set(self._buckets[WEIGHT].limit)

    @property
    def reporting_to(self) -> Metrics | None:
        """The metrics this limiter emits into (None: none)."""
        return self._metrics

    def _waited(self, seconds: float) -> None:
        self._wait_s += seconds
        if self._metrics is not None and seconds > 0:
            self._metrics.ratelimit_wait_seconds_total.labels(market=self._label).inc(seconds)

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
            self._waited(wait)
            await self.clock.sleep(wait)
        now = self.clock.monotonic()
        for bucket, cost in charges.items():
            if cost > 0:
                b = self._buckets[bucket]
                b.sent.append((now, cost))
                b.total += cost
        self._requests += 1
        self._since_obs += charges.get(WEIGHT, 0)

    def must_hold(self) -> bool:
        """The wire gate, asked right before a request's bytes are written: raises during a
        ban, True (a hold is counted) while a 429 pause runs, False when the request may go."""
        self.check_ban()
        if self.paused_until > self.clock.monotonic():
            self._held += 1
            return True
        return False

    async def hold_while_paused(self) -> None:
        """Wait while a 429 pause runs (one may have been learnt after this request was let
        through) and raise during a ban."""
        while self.must_hold():
            wait = self.paused_until - self.clock.monotonic()
            self._waited(wait)
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

    def observe_used_weight(self, used: int, answered: int = 0) -> None:
        """Sync with the server's ``X-MBX-USED-WEIGHT-1m`` (weight other clients on this IP
        used counts too): until the server's window rolls, the limiter adds what it sends to
        this reading and waits when the sum nears the limit. ``answered``: the weight of the
        request this reading answers, still in its slot but already in the server's count."""
        self._obs_t = self.clock.monotonic()
        self._obs_used = used
        self._since_obs = 0
        self._inflight_at_obs = max(0, self._inflight - answered)
        if self._metrics is not None:
            self._metrics.ratelimit_weight_used.labels(market=self._label).set(used)

    def pause_s(self, retry_after_s: float | None) -> float:
        """How long a 429 pauses every task: ``Retry-After``, else a full weight window."""
        return retry_after_s if retry_after_s is not None else self._buckets[WEIGHT].window_s

    def on_rate_limited(self, retry_after_s: float | None) -> float:
        """HTTP 429: pause every task for :meth:`pause_s`; returns the pause."""
        self._rate_limited += 1
        pause = self.pause_s(retry_after_s)
        self.paused_until = max(self.paused_until, self.clock.monotonic() + pause)
        return pause

    def on_banned(self, ban_s: float) -> IPBanned:
        """HTTP 418: stop every request for ``ban_s`` seconds; returns the error to raise."""
        self._bans += 1
        self.banned_until = max(self.banned_until, self.clock.monotonic() + ban_s)
        return self.ban_error(ban_s)

    def ban_error(self, ban_s: float) -> IPBanned:
        """The error for a 418 answer banning the IP for ``ban_s`` seconds."""
        return IPBanned(
            f"{self.name}: IP banned by the exchange (HTTP 418) for {ban_s:.0f} s; every "
            "request is stopped until the ban ends",
            ban_s,
        )


def add_market_limits(limiter: RateLimiter, market: Market) -> RateLimiter:
    """Give ``limiter`` the other buckets Binance's ``market`` enforces besides the weight:
    the ORDERS limits (and, on USDT-M, the fundingRate bucket). Returns ``limiter``."""
    for r in DEFAULT_ORDER_LIMITS[market]:
        limiter.set_limit(orders_bucket(r.interval_s), r.limit, r.interval_s)
    if market is Market.PERP:
        limiter.set_limit(FUNDING, FUNDING_LIMIT, FUNDING_WINDOW_S)
    return limiter


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
    object whatever they pass), with Binance's default limits for the market
    (:func:`add_market_limits`; weight: spot 6,000, USDT-M 2,400 a minute).
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
        _REGISTRY[key] = add_market_limits(limiter, market)
    return limiter


def forget_shared_limiters() -> None:
    """Drop every registered limiter (a new process state; for tests and replays)."""
    _REGISTRY.clear()
