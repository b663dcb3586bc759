"""The fake exchange's limits as Binance documents them: 429 past the weight limit, 418 for a
client that keeps sending after its 429, 429 ``-1015`` past the ORDERS limits."""

from __future__ import annotations

import pytest

from atra.adapters.ratelimit import RateLimit, parse_rate_limits, stated_limit
from atra.sim.limits import Admission, WeightLimits, interval_text


def test_weight_429_states_the_limit_and_backs_off_to_the_window_end() -> None:
    lim = WeightLimits(weight_limit=10, window_s=60.0)
    assert lim.admit(1.0, 6, conn="a") == Admission(200)
    refused = lim.admit(2.0, 5, conn="a")
    assert (refused.status, refused.retry_after_s, refused.code) == (429, 58.0, -1003)
    assert refused.msg.startswith("Too much request weight used; current limit is 10 request")
    assert stated_limit(refused.msg) == RateLimit("REQUEST_WEIGHT", 60.0, 10)
    assert lim.admit(30.0, 1, conn="b").status == 429  # the back-off runs to the window end
    assert lim.admit(60.0, 5, conn="a") == Admission(200)  # a new window
    assert lim.used_at(60.5) == 5


def test_only_requests_sent_after_their_429_count_towards_the_ban() -> None:
    lim = WeightLimits(weight_limit=1, ban_after=2, ban_s=120.0)
    assert lim.admit(0.0, 1, conn="a").status == 200
    assert lim.admit(0.1, 1, conn="a").status == 429  # the first 429 of this back-off
    # on other connections: already on the wire when the 429 went out, not held against us
    for conn in ("b", "c", "d"):
        assert lim.admit(0.2, 1, conn=conn).status == 429
    assert lim.sent_after_429 == 0
    # sent on connections that had their 429: the client did not back off
    assert lim.admit(0.3, 1, conn="a").status == 429
    assert lim.admit(0.4, 1, conn="b").status == 429
    banned = lim.admit(0.5, 1, conn="c")
    assert (banned.status, banned.retry_after_s) == (418, 120.0)
    assert lim.sent_after_429 == 3
    assert "IP banned until" in str(banned.body(60.0)["msg"])
    assert lim.admit(100.0, 1, conn="z").status == 418  # the ban outlives the window
    assert lim.admit(120.6, 1, conn="z").status == 200


def test_an_unknown_connection_always_counts() -> None:
    lim = WeightLimits(weight_limit=1, ban_after=0)
    assert lim.admit(0.0, 1).status == 200
    assert lim.admit(0.1, 1).status == 429
    assert lim.admit(0.2, 1).status == 418


def test_funding_bucket_429_states_no_weight_limit() -> None:
    lim = WeightLimits(weight_limit=100, funding_limit=2, funding_window_s=300.0)
    assert lim.admit(0.0, 1, True, "a").status == 200
    assert lim.admit(1.0, 1, True, "a").status == 200
    refused = lim.admit(2.0, 1, True, "a")
    assert (refused.status, refused.retry_after_s) == (429, 298.0)
    assert refused.msg == "Too many requests queued."
    assert stated_limit(refused.msg) is None  # a client must not take it for the weight limit


def test_orders_limit_is_an_account_limit_without_retry_after() -> None:
    lim = WeightLimits(weight_limit=100, order_limits=((2, 10.0), (3, 60.0)))
    assert lim.admit(0.0, 1, conn="a", orders=1).status == 200
    assert lim.admit(0.1, 1, conn="a", orders=1).status == 200
    assert lim.order_headers() == {"X-MBX-ORDER-COUNT-10S": "2", "X-MBX-ORDER-COUNT-1M": "2"}
    refused = lim.admit(0.2, 1, conn="a", orders=1)
    assert (refused.status, refused.retry_after_s, refused.code) == (429, None, -1015)
    assert refused.msg == "Too many new orders; current limit is 2 orders per 10 SECOND."
    assert stated_limit(refused.msg) == RateLimit("ORDERS", 10.0, 2)
    # no IP back-off: other requests go on, and the refused order was not counted
    assert lim.admit(0.3, 1, conn="a").status == 200
    assert lim.used == 3
    assert lim.admit(10.0, 1, conn="a", orders=1).status == 200  # new 10 s window
    minute = lim.admit(10.1, 1, conn="a", orders=1)
    assert minute.msg == "Too many new orders; current limit is 3 orders per 1 MINUTE."
    assert lim.sent_after_429 == 0


def test_rate_limits_list_weight_and_orders() -> None:
    lim = WeightLimits(weight_limit=2400, order_limits=((300, 10.0), (1200, 60.0)))
    assert parse_rate_limits(lim.rate_limits()) == (
        RateLimit("REQUEST_WEIGHT", 60.0, 2400),
        RateLimit("ORDERS", 10.0, 300),
        RateLimit("ORDERS", 60.0, 1200),
    )
    assert parse_rate_limits(WeightLimits(weight_limit=None, order_limits=()).rate_limits()) == (
        RateLimit("REQUEST_WEIGHT", 60.0, 1_000_000),
    )


@pytest.mark.parametrize(
    ("window_s", "expected"),
    [
        (60.0, ("MINUTE", 1)),
        (10.0, ("SECOND", 10)),
        (300.0, ("MINUTE", 5)),
        (3_600.0, ("HOUR", 1)),
        (86_400.0, ("DAY", 1)),
        (90.0, ("SECOND", 90)),
    ],
)
def test_interval_text(window_s: float, expected: tuple[str, int]) -> None:
    assert interval_text(window_s) == expected
