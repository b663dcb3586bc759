"""Weight-aware rate limiting shared by every task of the process.

One :class:`RateLimiter` per (host, market) and process, taken from a module-level registry
with :func:`shared_limiter` (a caller may also build one and pass it explicitly; the
exchange client accepts ``limiter=``). Every request:

1. takes a connection slot (an ``asyncio.Semaphore`` caps concurrent connections),
2. is charged its real weight in each bucket it counts against (a new order also counts
   against every ORDERS bucket), waiting until the bucket has room (a sliding window of
   ``window_s + slack_s`` seconds, kept below ``safety * limit`` so that a server counting in
   fixed windows, with network latency in between, never sees more than ``limit``),
3. passes the wire gate (:meth:`RateLimiter.must_hold`) right before its bytes are written:
   a 429 pause learnt while it waited holds it back, unsent,
4. reports back the server's ``X-MBX-USED-WEIGHT-1m``: the server's count (other processes
   on the same IP included) plus what was sent since is also kept below the budget, so the
   limiter slows down as the server's count nears the limit.

A 429 pauses every task for ``Retry-After`` seconds, and a limit the 429 states (Binance:
"current limit is 1200 request weight per 1 MINUTE") replaces a looser configured one
(:meth:`RateLimiter.learn`); a 418 stops every request until the ban ends and raises
:class:`~atra.errors.IPBanned` (also for any request tried during the ban: nothing is sent).
Time comes from an injected :class:`Clock`, so tests can scale a minute down to a second
(:class:`ScaledClock`) or drive it by hand (:class:`ManualClock`). With
:meth:`RateLimiter.report_to` the limiter emits ``atra_ratelimit_weight_used``,
``atra_ratelimit_weight_limit`` and ``atra_ratelimit_wait_seconds_total``.

Modules: :mod:`.clock` (clocks), :mod:`.limits` (bucket names, Binance's defaults, exchangeInfo
``rateLimits``), :mod:`.limiter` (the limiter and the registry).
"""

from atra.adapters.ratelimit.clock import Clock, ManualClock, ScaledClock, SystemClock
from atra.adapters.ratelimit.limiter import (
    LimiterStats,
    RateLimiter,
    add_market_limits,
    forget_shared_limiters,
    shared_limiter,
)
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
    parse_rate_limits,
    stated_limit,
)

__all__ = [
    "DEFAULT_ORDER_LIMITS",
    "DEFAULT_WEIGHT_LIMIT",
    "FUNDING",
    "FUNDING_LIMIT",
    "FUNDING_WINDOW_S",
    "ORDERS_PREFIX",
    "WEIGHT",
    "Clock",
    "LimiterStats",
    "ManualClock",
    "RateLimit",
    "RateLimiter",
    "ScaledClock",
    "SystemClock",
    "add_market_limits",
    "forget_shared_limiters",
    "orders_bucket",
    "parse_rate_limits",
    "shared_limiter",
    "stated_limit",
]
