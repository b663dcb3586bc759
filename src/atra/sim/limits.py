"""The fake exchange's limits (:mod:`atra.sim.exchange`): request weight, back-off and bans of
the client IP, and the account's new-order counts.

Weight is counted in fixed windows of ``window_s`` scaled seconds; a request past
``weight_limit`` gets 429 + ``Retry-After`` until the window ends (the back-off) and Binance's
``-1003`` body stating the limit ("current limit is 2400 request weight per 1 MINUTE"). A
client that keeps sending after it received a 429 (Binance: "Repeatedly violating rate limits
and/or failing to back off after receiving 429s will result in an automated IP ban (HTTP
status 418)") gets 418 and a ban of ``ban_s`` once more than ``ban_after`` such requests
arrived during one back-off. A request counts as sent after a 429 when it comes on a
connection that was already answered 429 in this back-off (HTTP/1.1 sends the next request on
a connection only after reading the previous answer), or when the caller does not say which
connection it came on. Requests already on the wire when the first 429 went out still get 429
but are not held against the client; :attr:`WeightLimits.sent_after_429` counts those that
are. ``fundingRate`` and ``fundingInfo`` requests also count against ``funding_limit`` per
``funding_window_s``.

New orders count against ``order_limits`` (per fixed window each, as Binance's ``ORDERS``
limits: USDT-M 300 per 10 s and 1,200 per minute): one more gets 429 with ``-1015`` "Too many
new orders; current limit is 300 orders per 10 SECOND." and no ``Retry-After`` (an account
limit: it neither starts the IP back-off nor counts towards a ban). Admitted orders are
counted and reported in ``X-MBX-ORDER-COUNT-10S`` / ``-1M`` headers
(:meth:`WeightLimits.order_headers`).

Times are the exchange's scaled seconds, passed in by the caller. The weight table
(:func:`request_weight`) is kept apart from the client's on purpose: the fake is the oracle.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from atra.core.types import Market

__all__ = ["Admission", "WeightLimits", "interval_text", "request_weight"]

DEFAULT_ORDER_LIMITS: tuple[tuple[int, float], ...] = ((300, 10.0), (1200, 60.0))
"""USDT-M's ORDERS limits: (new orders, per seconds)."""


def request_weight(market: Market, endpoint: str, limit: int) -> int:
    """Weight of an unsigned request to ``endpoint`` of ``market`` asking for ``limit`` rows."""
    if endpoint == "klines":
        if market is Market.SPOT:
            return 2
        return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10
    if endpoint == "exchangeInfo":
        return 20 if market is Market.SPOT else 1
    if endpoint == "fundingInfo":
        return 0
    return 1


def interval_text(window_s: float) -> tuple[str, int]:
    """``(interval, intervalNum)`` of a window as Binance names it: ``("MINUTE", 1)``."""
    for unit, size in (("DAY", 86_400.0), ("HOUR", 3_600.0), ("MINUTE", 60.0)):
        if window_s >= size and window_s % size == 0:
            return unit, int(window_s // size)
    return "SECOND", max(1, round(window_s))


@dataclass(frozen=True, slots=True)
class Admission:
    """The verdict on one request: 200 to serve it, else the refusal to send."""

    status: int
    retry_after_s: float | None = None
    """``Retry-After`` (scaled seconds); None: the header is not sent."""
    code: int = 0
    msg: str = ""

    def body(self, time_scale: float) -> dict[str, object]:
        """Binance's ``{"code", "msg"}`` of a refusal; a ban (418) names its end in wall-clock
        ms (``retry_after_s`` is in scaled seconds)."""
        if self.status == 418:
            until_ms = int((time.time() + (self.retry_after_s or 0.0) / time_scale) * 1000)
            return {
                "code": -1003,
                "msg": f"Way too much request weight used; IP banned until {until_ms}. "
                "Please use WebSocket Streams for live updates to avoid bans.",
            }
        return {"code": self.code, "msg": self.msg}


class WeightLimits:
    """Weight, funding-request and new-order counters of one client IP (and its account),
    with its back-off and ban.

    ``weight_limit=None`` turns weight enforcement off (the weight is still counted);
    ``order_limits=()`` turns the order counts off.
    """

    def __init__(
        self,
        *,
        weight_limit: int | None = 2400,
        window_s: float = 60.0,
        ban_s: float = 120.0,
        ban_after: int = 20,
        funding_limit: int = 500,
        funding_window_s: float = 300.0,
        order_limits: Sequence[tuple[int, float]] = DEFAULT_ORDER_LIMITS,
    ) -> None:
        self.weight_limit = weight_limit
        self.window_s = window_s
        self.ban_s = ban_s
        self.ban_after = ban_after
        self.funding_limit = funding_limit
        self.funding_window_s = funding_window_s
        self.order_limits = tuple(order_limits)
        self.used = 0
        """Weight counted in the window of the last request (not rolled to now)."""
        self.backoff_until = -math.inf
        self.banned_until = -math.inf
        self._backoff_funding = False
        self.sent_after_429 = 0
        """Requests that came on a connection already answered 429 in the same back-off (the
        client did not back off), over the whole run."""
        self._window = -1
        self._funding_window = -1
        self._funding_used = 0
        self._orders: list[tuple[int, int]] = [(-1, 0)] * len(self.order_limits)
        self._violations = 0
        self._told: set[object] = set()

    def ban(self, now: float, seconds: float) -> None:
        """Ban the IP from ``now`` for ``seconds``: every request gets 418."""
        self.banned_until = now + seconds

    def charge(self, now: float, weight: int) -> None:
        """Count ``weight`` at ``now`` without admitting a request."""
        self.roll(now)
        self.used += weight

    def used_at(self, now: float) -> int:
        """Weight counted in the window holding ``now``."""
        self.roll(now)
        return self.used

    def roll(self, now: float) -> None:
        """Start new counting windows when ``now`` is past the current ones."""
        window = math.floor(now / self.window_s)
        if window != self._window:
            self._window, self.used = window, 0
        fwindow = math.floor(now / self.funding_window_s)
        if fwindow != self._funding_window:
            self._funding_window, self._funding_used = fwindow, 0
        for i, (_, size) in enumerate(self.order_limits):
            owindow = math.floor(now / size)
            if owindow != self._orders[i][0]:
                self._orders[i] = (owindow, 0)

    def admit(
        self,
        now: float,
        weight: int,
        funding: bool = False,
        conn: object = None,
        *,
        orders: int = 0,
    ) -> Admission:
        """The verdict on a request of ``weight`` (``orders``: new orders it places).

        ``conn`` names the connection the request came on (``None``: unknown, every request
        during a back-off then counts towards the ban)."""
        self.roll(now)
        if now < self.banned_until:
            return Admission(418, self.banned_until - now)
        if now < self.backoff_until:
            if conn is None or conn in self._told:
                self._violations += 1
                self.sent_after_429 += 1
            if self._violations > self.ban_after:
                self.banned_until = now + self.ban_s
                return Admission(418, self.ban_s)
            self._told.add(conn)
            return self._back_off(now, self._backoff_funding, keep=True)
        over = self.weight_limit is not None and self.used + weight > self.weight_limit
        fover = funding and self._funding_used + 1 > self.funding_limit
        if over or fover:
            self._violations = 0
            self._told = {conn}
            return self._back_off(now, fover and not over)
        if orders:
            for (_, count), (limit, size) in zip(self._orders, self.order_limits, strict=True):
                if count + orders > limit:
                    unit, num = interval_text(size)
                    msg = f"Too many new orders; current limit is {limit} orders per {num} {unit}."
                    return Admission(429, None, -1015, msg)
            self._orders = [(w, count + orders) for w, count in self._orders]
        self.used += weight
        self._funding_used += int(funding)
        return Admission(200)

    def _back_off(self, now: float, funding_only: bool, *, keep: bool = False) -> Admission:
        """A 429 until the end of the window that overflowed (``keep``: the back-off running)."""
        if not keep:
            size = self.funding_window_s if funding_only else self.window_s
            self.backoff_until = (math.floor(now / size) + 1) * size
            self._backoff_funding = funding_only
        if funding_only or self.weight_limit is None:
            return Admission(429, self.backoff_until - now, -1003, "Too many requests queued.")
        unit, num = interval_text(self.window_s)
        msg = (
            f"Too much request weight used; current limit is {self.weight_limit} request "
            f"weight per {num} {unit}. Please use WebSocket Streams for live updates to avoid "
            "polling the API."
        )
        return Admission(429, self.backoff_until - now, -1003, msg)

    def order_headers(self) -> dict[str, str]:
        """``X-MBX-ORDER-COUNT-10S``-style headers: new orders in each ORDERS window."""
        out: dict[str, str] = {}
        for (_, count), (_, size) in zip(self._orders, self.order_limits, strict=True):
            unit, num = interval_text(size)
            out[f"X-MBX-ORDER-COUNT-{num}{unit[0]}"] = str(count)
        return out

    def rate_limits(self) -> list[dict[str, object]]:
        """The ``rateLimits`` entries of ``exchangeInfo`` (no weight limit: 1,000,000)."""
        limit = self.weight_limit if self.weight_limit is not None else 1_000_000
        unit, num = interval_text(self.window_s)
        out: list[dict[str, object]] = [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": unit, "intervalNum": num,
             "limit": limit},
        ]  # fmt: skip
        for olimit, size in self.order_limits:
            unit, num = interval_text(size)
            out.append(
                {"rateLimitType": "ORDERS", "interval": unit, "intervalNum": num, "limit": olimit}
            )
        return out
