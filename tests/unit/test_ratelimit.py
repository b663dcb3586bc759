"""The shared weight-aware limiter, driven by a hand-moved clock."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atra.adapters.ratelimit import (
    FUNDING,
    WEIGHT,
    ManualClock,
    RateLimit,
    RateLimiter,
    ScaledClock,
    SystemClock,
    add_market_limits,
    forget_shared_limiters,
    orders_bucket,
    parse_rate_limits,
    shared_limiter,
    stated_limit,
)
from atra.core.types import Market
from atra.errors import ExchangeError, IPBanned
from atra.obs.metrics import Metrics


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def make(clock: ManualClock, limit: int = 100, **kwargs: Any) -> RateLimiter:
    return RateLimiter(limit, window_s=60.0, safety=0.9, slack_s=2.0, clock=clock, **kwargs)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def drive(clock: ManualClock, coro: Coroutine[Any, Any, None]) -> None:
    """Run ``coro`` to the end, moving the clock to the next sleeper whenever it blocks."""
    task = asyncio.ensure_future(coro)
    while not task.done():
        await settle()
        if not task.done() and clock._sleepers:
            clock.advance(clock._sleepers[0][0] - clock.now)
    await task


# ---- clocks --------------------------------------------------------------------------


async def test_manual_clock_wakes_sleepers_in_time_order(clock: ManualClock) -> None:
    woke: list[str] = []

    async def nap(name: str, s: float) -> None:
        await clock.sleep(s)
        woke.append(name)

    tasks = [asyncio.ensure_future(nap(n, s)) for n, s in (("b", 20), ("a", 10), ("c", 30))]
    await settle()
    assert clock.sleepers == 3
    clock.advance(15)
    await settle()
    assert woke == ["a"]
    clock.advance(15)
    await asyncio.gather(*tasks)
    assert woke == ["a", "b", "c"]
    await clock.sleep(0)
    assert clock.time() == pytest.approx(1.7e9 + 30)


async def test_scaled_clock_runs_faster() -> None:
    c = ScaledClock(60.0)
    t0, r0 = c.monotonic(), time.monotonic()
    await c.sleep(3.0)  # three scaled seconds = 50 ms
    elapsed_real = time.monotonic() - r0
    assert 0.04 < elapsed_real < 1.0
    assert c.monotonic() - t0 == pytest.approx(elapsed_real * 60, rel=0.05)
    assert abs(c.time() - time.time()) < 1
    with pytest.raises(ValueError, match="scale"):
        ScaledClock(0)


async def test_system_clock() -> None:
    c = SystemClock()
    t0 = c.monotonic()
    await c.sleep(-1)
    await c.sleep(0.01)
    assert c.monotonic() > t0
    assert abs(c.time() - time.time()) < 1


# ---- weights -------------------------------------------------------------------------


async def test_budget_keeps_a_safety_margin(clock: ManualClock) -> None:
    lim = make(clock, 2400)
    assert lim.budget() == 2160
    assert lim.limit() == (2400, 60.0)
    assert make(clock, 1).budget() == 1


async def test_request_waits_until_oldest_weight_leaves_the_window(clock: ManualClock) -> None:
    lim = make(clock)  # budget 90 per 60 s (+2 s slack)
    await lim.acquire({WEIGHT: 50})
    clock.advance(10)
    await lim.acquire({WEIGHT: 40})
    assert lim.used() == 90
    task = asyncio.ensure_future(lim.acquire({WEIGHT: 10}))
    await settle()
    clock.advance(51)  # t=61: the first 50 are still inside 60 + 2 s
    await settle()
    assert not task.done()
    clock.advance(1)  # t=62: they leave
    await settle()
    assert task.done()
    assert lim.used() == 50
    assert lim.stats.waits == 1
    assert lim.stats.wait_s == pytest.approx(62 - 10)
    assert lim.stats.requests == 3


async def test_weight_that_can_never_fit_fails_at_once(clock: ManualClock) -> None:
    lim = make(clock)
    with pytest.raises(ExchangeError, match="never fit"):
        await lim.acquire({WEIGHT: 91})
    with pytest.raises(ExchangeError, match="no rate-limit bucket"):
        await lim.acquire({FUNDING: 1})


async def test_disabled_limiter_never_waits(clock: ManualClock) -> None:
    lim = make(clock, enabled=False)
    for _ in range(10):
        await lim.acquire({WEIGHT: 50})
    assert lim.used() == 500
    assert lim.stats.waits == 0


async def test_extra_bucket_limits_independently(clock: ManualClock) -> None:
    lim = make(clock, 10_000)
    lim.set_limit(FUNDING, 3, 300.0)
    for _ in range(2):  # budget floor(0.9 * 3) = 2
        await lim.acquire({WEIGHT: 1, FUNDING: 1})
    task = asyncio.ensure_future(lim.acquire({WEIGHT: 1, FUNDING: 1}))
    await settle()
    assert not task.done()
    await lim.acquire({WEIGHT: 1})  # weight alone still passes
    clock.advance(302)
    await settle()
    assert task.done()


@pytest.mark.parametrize(("limit", "window_s"), [(0, 60.0), (10, 0.0)])
def test_set_limit_rejects_nonsense(clock: ManualClock, limit: int, window_s: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        make(clock).set_limit(WEIGHT, limit, window_s)


@pytest.mark.parametrize(
    ("kwargs", "match"), [({"safety": 0}, "safety"), ({"max_connections": 0}, "max_connections")]
)
def test_constructor_rejects_nonsense(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RateLimiter(100, **kwargs)  # type: ignore[arg-type]


async def test_set_limit_keeps_weight_already_charged(clock: ManualClock) -> None:
    lim = make(clock, 100)
    await lim.acquire({WEIGHT: 80})
    lim.set_limit(WEIGHT, 50, 60.0)
    assert lim.used() == 80
    task = asyncio.ensure_future(lim.acquire({WEIGHT: 1}))
    await settle()
    assert not task.done()
    clock.advance(62)
    await settle()
    assert task.done()


# ---- exchangeInfo limits ------------------------------------------------------------


def test_rate_limits_from_exchange_info(clock: ManualClock) -> None:
    raw = [
        {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
        {"rateLimitType": "REQUEST_WEIGHT", "interval": "SECOND", "intervalNum": 10, "limit": 500},
        {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
        {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 160000},
    ]
    limits = parse_rate_limits(raw)
    assert limits[0] == RateLimit("REQUEST_WEIGHT", 60.0, 6000)
    assert limits[2].interval_s == 300.0
    assert limits[3].interval_s == 86_400.0
    lim = make(clock)
    lim.configure(limits)
    assert lim.limit() == (500, 10.0)  # 50/s is tighter than 6,000/min = 100/s
    lim.configure([RateLimit("REQUEST_WEIGHT", 60.0, 1200)])
    assert lim.limit() == (1200, 60.0)
    lim.configure([RateLimit("RAW_REQUESTS", 60.0, 5)])
    assert lim.limit() == (1200, 60.0)


@pytest.mark.parametrize(
    "raw",
    [
        {"not": "a list"},
        [
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "FORTNIGHT",
                "intervalNum": 1,
                "limit": 1,
            }
        ],
        [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "limit": 1}],
        ["junk"],
    ],
)
def test_bad_rate_limits_are_one_line_errors(raw: object) -> None:
    with pytest.raises(ExchangeError, match="rateLimits") as info:
        parse_rate_limits(raw)
    assert "\n" not in str(info.value)


# ---- header sync ---------------------------------------------------------------------


async def test_server_weight_header_slows_the_limiter(clock: ManualClock) -> None:
    lim = make(clock)  # budget 90
    await lim.acquire({WEIGHT: 10})
    lim.observe_used_weight(75)  # another process on this IP used 65
    assert lim.used() == 75
    await lim.acquire({WEIGHT: 10})
    assert lim.used() == 85  # the reading plus what we sent since
    task = asyncio.ensure_future(lim.acquire({WEIGHT: 10}))
    await settle()
    clock.advance(1)  # looks again every 1/60 window
    await settle()
    assert not task.done()
    lim.observe_used_weight(12)  # the server's window rolled: its count restarted
    clock.advance(1)
    await settle()
    assert task.done()
    assert lim.used() == 30  # our own 30 in the sliding window is more than 12 + 10


async def test_server_reading_expires_after_one_window(clock: ManualClock) -> None:
    lim = make(clock, 10_000)
    lim.observe_used_weight(8_990)  # budget 9,000
    task = asyncio.ensure_future(lim.acquire({WEIGHT: 20}))
    for _ in range(59):
        await settle()
        clock.advance(1)
    await settle()
    assert not task.done()
    clock.advance(1)
    await settle()
    assert task.done()
    assert lim.used() == 20


async def test_in_flight_weight_counts_against_a_reading(clock: ManualClock) -> None:
    lim = make(clock)
    async with lim.slot({WEIGHT: 30}):
        lim.observe_used_weight(40)  # may not include the 30 still in flight
        assert lim.used() == 70
    assert lim.used() == 70


# ---- 429 and 418 ---------------------------------------------------------------------


async def test_429_pauses_every_task(clock: ManualClock) -> None:
    lim = make(clock, 10_000)
    assert lim.on_rate_limited(30.0) == 30.0
    tasks = [asyncio.ensure_future(lim.acquire({WEIGHT: 1})) for _ in range(5)]
    await settle()
    clock.advance(29.5)
    await settle()
    assert not any(t.done() for t in tasks)
    clock.advance(0.5)
    await asyncio.gather(*tasks)
    assert lim.stats.rate_limited == 1


async def test_429_without_retry_after_pauses_a_window(clock: ManualClock) -> None:
    lim = make(clock)
    assert lim.on_rate_limited(None) == 60.0
    assert lim.paused_until == 60.0


async def test_418_stops_every_request_until_the_ban_ends(clock: ManualClock) -> None:
    lim = make(clock, 100, max_connections=1)
    await lim.acquire({WEIGHT: 90})
    waiting = asyncio.ensure_future(lim.acquire({WEIGHT: 10}))  # waits for room
    await settle()
    err = lim.on_banned(120.0)
    assert isinstance(err, IPBanned)
    assert err.ban_s == 120.0
    assert "418" in str(err)
    with pytest.raises(IPBanned, match="another 120 s"):
        await lim.acquire({WEIGHT: 1})
    with pytest.raises(IPBanned):
        async with lim.slot({WEIGHT: 1}):
            pass
    clock.advance(62)  # room again, but still banned: the waiting request fails, unsent
    with pytest.raises(IPBanned):
        await waiting
    clock.advance(58)
    async with lim.slot({WEIGHT: 1}):
        pass
    assert lim.stats.bans == 1
    assert lim.stats.requests == 2


# ---- ORDERS limits and limits a 429 states ----------------------------------------------


def test_configure_takes_the_orders_limits_and_drops_stale_ones(clock: ManualClock) -> None:
    lim = add_market_limits(make(clock), Market.PERP)
    assert lim.order_buckets() == ("orders/10s", "orders/60s")
    lim.configure(
        [
            RateLimit("REQUEST_WEIGHT", 60.0, 2400),
            RateLimit("ORDERS", 10.0, 50),
            RateLimit("ORDERS", 86_400.0, 160_000),
        ]
    )
    assert lim.order_buckets() == ("orders/10s", "orders/86400s")  # the minute one is gone
    assert lim.limit("orders/10s") == (50, 10.0)
    assert lim.limit(FUNDING) == (500, 300.0)  # not an ORDERS bucket: kept
    lim.configure([RateLimit("REQUEST_WEIGHT", 60.0, 1200)])  # no ORDERS listed: kept
    assert lim.order_buckets() == ("orders/10s", "orders/86400s")


async def test_orders_bucket_spaces_new_orders(clock: ManualClock) -> None:
    lim = make(clock, 10_000)
    lim.set_limit(orders_bucket(10.0), 5, 10.0)  # budget 4 per 12 s
    charges = {WEIGHT: 1, orders_bucket(10.0): 1}
    for _ in range(4):
        await lim.acquire(charges)
    fifth = asyncio.ensure_future(lim.acquire(charges))
    await settle()
    assert not fifth.done()
    clock.advance(12.0)
    await settle()
    assert fifth.done()


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            "Too much request weight used; current limit is 1200 request weight per 1 MINUTE. "
            "Please use WebSocket Streams for live updates to avoid polling the API.",
            RateLimit("REQUEST_WEIGHT", 60.0, 1200),
        ),
        (
            "Too many new orders; current limit is 50 orders per 10 SECOND.",
            RateLimit("ORDERS", 10.0, 50),
        ),
        ("Too many requests queued.", None),
        ("Too much request weight used; please back off.", None),
        ("current limit is 0 request weight per 1 MINUTE", None),
    ],
)
def test_stated_limit(message: str, expected: RateLimit | None) -> None:
    assert stated_limit(message) == expected


def test_learn_adopts_only_a_tighter_limit(clock: ManualClock) -> None:
    lim = make(clock, 2400)
    assert not lim.learn(RateLimit("REQUEST_WEIGHT", 60.0, 6000))  # looser: kept 2,400
    assert lim.limit() == (2400, 60.0)
    assert lim.learn(RateLimit("REQUEST_WEIGHT", 60.0, 300))
    assert lim.limit() == (300, 60.0)
    assert lim.budget() == 270
    assert not lim.learn(RateLimit("REQUEST_WEIGHT", 10.0, 100))  # 10/s is looser than 5/s
    assert lim.learn(RateLimit("ORDERS", 10.0, 50))  # a new bucket
    assert lim.order_buckets() == ("orders/10s",)
    assert not lim.learn(RateLimit("ORDERS", 10.0, 80))
    assert lim.learn(RateLimit("ORDERS", 10.0, 20))
    assert lim.limit("orders/10s") == (20, 10.0)
    assert not lim.learn(RateLimit("RAW_REQUESTS", 60.0, 1))


async def test_wire_gate_holds_during_a_pause_and_raises_during_a_ban(clock: ManualClock) -> None:
    lim = make(clock)
    assert not lim.must_hold()
    lim.on_rate_limited(5.0)
    assert lim.must_hold()
    assert lim.held == 1
    clock.advance(5.0)
    assert not lim.must_hold()
    lim.on_banned(30.0)
    with pytest.raises(IPBanned):
        lim.must_hold()


async def test_a_reading_does_not_count_the_request_it_answers(clock: ManualClock) -> None:
    lim = make(clock)
    async with lim.slot({WEIGHT: 30}), lim.slot({WEIGHT: 20}):
        lim.observe_used_weight(40, answered=20)  # the 20 are in the 40, the 30 maybe not
        assert lim.used() == 70
    assert lim.used() == 70


async def test_limiter_metrics(clock: ManualClock) -> None:
    m = Metrics()
    lim = make(clock, 100)
    lim.report_to(m, "perp")
    assert lim.reporting_to is m

    def value(name: str) -> float | None:
        return m.registry.get_sample_value(name, {"market": "perp"})

    assert value("atra_ratelimit_weight_limit") == 100
    await lim.acquire({WEIGHT: 80})
    await drive(clock, lim.acquire({WEIGHT: 80}))  # waits for the first 80 to leave the window
    assert value("atra_ratelimit_wait_seconds_total") == pytest.approx(62.0)
    lim.observe_used_weight(37)
    assert value("atra_ratelimit_weight_used") == 37
    lim.on_rate_limited(3.0)
    await drive(clock, lim.hold_while_paused())
    assert value("atra_ratelimit_wait_seconds_total") == pytest.approx(65.0)
    lim.learn(RateLimit("REQUEST_WEIGHT", 60.0, 50))
    assert value("atra_ratelimit_weight_limit") == 50


# ---- connections ---------------------------------------------------------------------


async def test_semaphore_caps_concurrent_connections(clock: ManualClock) -> None:
    lim = make(clock, 10_000, max_connections=3)
    active = peak = 0

    async def request() -> None:
        nonlocal active, peak
        async with lim.slot({WEIGHT: 1}):
            active += 1
            peak = max(peak, active)
            await asyncio.sleep(0.001)
            active -= 1

    await asyncio.gather(*(request() for _ in range(20)))
    assert peak == 3


# ---- registry ------------------------------------------------------------------------


def test_shared_limiter_is_one_per_host_and_market() -> None:
    a = shared_limiter("registry.test", Market.SPOT)
    assert shared_limiter("registry.test", Market.SPOT, max_connections=99) is a
    b = shared_limiter("registry.test", Market.PERP)
    assert b is not a
    assert a.limit() == (6000, 60.0)
    assert b.limit() == (2400, 60.0)
    assert b.limit(FUNDING) == (500, 300.0)
    # Binance's ORDERS limits until exchangeInfo says more: USDT-M 300 / 10 s and 1,200 / min
    assert b.order_buckets() == ("orders/10s", "orders/60s")
    assert b.limit("orders/10s") == (300, 10.0)
    assert b.limit("orders/60s") == (1200, 60.0)
    assert a.limit("orders/10s") == (100, 10.0)
    assert a.limit("orders/86400s") == (200_000, 86_400.0)
    forget_shared_limiters()
    assert shared_limiter("registry.test", Market.SPOT) is not a
    forget_shared_limiters()


# ---- property: no window ever holds more than the budget -----------------------------


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 30, allow_nan=False), st.integers(1, 40)),
        min_size=1,
        max_size=40,
    )
)
def test_no_sliding_window_exceeds_the_budget(steps: list[tuple[float, int]]) -> None:
    async def run() -> list[tuple[float, int]]:
        clock = ManualClock()
        lim = make(clock, 50)  # budget 45
        sent: list[tuple[float, int]] = []
        for gap, cost in steps:
            clock.advance(gap)
            await drive(clock, lim.acquire({WEIGHT: cost}))
            sent.append((clock.now, cost))
        return sent

    sent = asyncio.run(run())
    for t, _ in sent:
        inside = sum(c for s, c in sent if s <= t < s + 62.0)
        assert inside <= 45
