"""The limits a Binance host enforces: bucket names, Binance's defaults per market, exchangeInfo
``rateLimits`` (:func:`parse_rate_limits`) and the limit a 429 answer states
(:func:`stated_limit`).

Binance documents three kinds (``rateLimitType``): ``REQUEST_WEIGHT`` per IP (the
:data:`WEIGHT` bucket), ``ORDERS`` per account (new orders, one bucket per interval, named by
:func:`orders_bucket`) and ``RAW_REQUESTS`` (not modelled: every request weighs at least 1, so
the weight budget keeps the raw count far below its limit). USDT-M ``fundingRate`` has its own
limit of 500 requests per 5 minutes per IP (:data:`FUNDING`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from atra.core.types import Market
from atra.errors import ExchangeError

WEIGHT: Final[str] = "weight"
"""The REQUEST_WEIGHT bucket (per minute unless exchangeInfo says otherwise)."""
FUNDING: Final[str] = "funding"
"""USDT-M ``/fapi/v1/fundingRate``: 500 requests per 5 minutes per IP, its own bucket."""
ORDERS_PREFIX: Final[str] = "orders/"
"""Prefix of the ORDERS buckets: ``orders/10s``, ``orders/60s``, ``orders/86400s``."""

DEFAULT_WEIGHT_LIMIT: Final[dict[Market, int]] = {Market.SPOT: 6_000, Market.PERP: 2_400}
FUNDING_LIMIT: Final[int] = 500
FUNDING_WINDOW_S: Final[float] = 300.0
_INTERVAL_S: Final[dict[str, float]] = {
    "SECOND": 1.0,
    "MINUTE": 60.0,
    "HOUR": 3_600.0,
    "DAY": 86_400.0,
}
# "Too much request weight used; current limit is 1200 request weight per 1 MINUTE. ..."
# "Too many new orders; current limit is 50 orders per 10 SECOND."
_STATED_RE: Final = re.compile(
    r"current limit is (\d+) (request weight|orders) per (\d+) (SECOND|MINUTE|HOUR|DAY)"
)


@dataclass(frozen=True, slots=True)
class RateLimit:
    """One limit from exchangeInfo ``rateLimits``: ``limit`` units per ``interval_s``."""

    kind: str
    interval_s: float
    limit: int


DEFAULT_ORDER_LIMITS: Final[dict[Market, tuple[RateLimit, ...]]] = {
    Market.SPOT: (RateLimit("ORDERS", 10.0, 100), RateLimit("ORDERS", 86_400.0, 200_000)),
    Market.PERP: (RateLimit("ORDERS", 10.0, 300), RateLimit("ORDERS", 60.0, 1_200)),
}
"""Binance's published ORDERS limits (new orders per account) until exchangeInfo says more."""


def orders_bucket(interval_s: float) -> str:
    """The bucket name of the ORDERS limit over ``interval_s`` seconds (``orders/10s``)."""
    return f"{ORDERS_PREFIX}{interval_s:g}s"


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
        if out[-1].limit < 1 or interval_s <= 0:
            raise ExchangeError(f"exchangeInfo rateLimits[{i}]: limit and interval must be > 0")
    return tuple(out)


def stated_limit(message: str) -> RateLimit | None:
    """The limit a Binance 429 message states (``-1003`` request weight, ``-1015`` orders), or
    None when the message names none."""
    match = _STATED_RE.search(message)
    if match is None:
        return None
    limit, what, num, unit = match.groups()
    kind = "REQUEST_WEIGHT" if what == "request weight" else "ORDERS"
    interval_s = _INTERVAL_S[unit] * int(num)
    if int(limit) < 1 or interval_s <= 0:
        return None
    return RateLimit(kind, interval_s, int(limit))
