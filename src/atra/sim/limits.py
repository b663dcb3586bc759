"""The fake exchange's IP limits (:mod:`atra.sim.exchange`): request weight, back-off, bans.

Weight is counted in fixed windows of ``window_s`` scaled seconds; a request past
``weight_limit`` gets 429 + ``Retry-After`` until the window ends (the back-off), and a client
that keeps sending after it received a 429 (Binance: "failing to back off after receiving
429s will result in an automated IP ban") gets 418 and a ban of ``ban_s`` once more than
``ban_after`` such requests arrived during one back-off. A request counts as sent after a 429
when it comes on a connection that was already answered 429 in this back-off (HTTP/1.1 sends
the next request on a connection only after reading the previous answer), or when the caller
does not say which connection it came on. Requests already on the wire when the first 429
went out still get 429 but are not held against the client.
``fundingRate`` requests also count against ``funding_limit`` per ``funding_window_s``. Times
are the exchange's scaled seconds, passed in by the caller. A refused request gets Binance's
``-1003`` body (:func:`refusal_body`).

The weight table (:func:`request_weight`) is kept apart from the client's on purpose: the fake
is the oracle.
"""

from __future__ import annotations

import math
import time

from atra.core.types import Market

__all__ = ["WeightLimits", "refusal_body", "request_weight"]


def request_weight(market: Market, endpoint: str, limit: int) -> int:
    """Weight of an unsigned request to ``endpoint`` of ``market`` asking for ``limit`` rows."""
    if endpoint == "klines":
        if market is Market.SPOT:
            return 2
        return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10
    if endpoint == "exchangeInfo":
        return 20 if market is Market.SPOT else 1
    return 1


def refusal_body(status: int, wait_s: float, time_scale: float) -> dict[str, object]:
    """Binance's ``{"code", "msg"}`` for a request refused with ``status`` 429 or 418; a ban
    (418) names its end in wall-clock ms (``wait_s`` is in scaled seconds)."""
    if status == 418:
        until_ms = int((time.time() + wait_s / time_scale) * 1000)
        msg = f"Way too much request weight used; IP banned until {until_ms}."
        return {"code": -1003, "msg": msg}
    return {"code": -1003, "msg": "Too much request weight used; please back off."}


class WeightLimits:
    """Weight and funding-request counters of one client IP, with its back-off and ban.

    ``weight_limit=None`` turns weight enforcement off (the weight is still counted).
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
    ) -> None:
        self.weight_limit = weight_limit
        self.window_s = window_s
        self.ban_s = ban_s
        self.ban_after = ban_after
        self.funding_limit = funding_limit
        self.funding_window_s = funding_window_s
        self.used = 0
        """Weight counted in the window of the last request (not rolled to now)."""
        self.backoff_until = -math.inf
        self.banned_until = -math.inf
        self._window = -1
        self._funding_window = -1
        self._funding_used = 0
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

    def admit(
        self, now: float, weight: int, funding: bool, conn: object = None
    ) -> tuple[int, float | None]:
        """(status, retry_after_s): 200 to serve, else 429 or 418 and how long to wait.

        ``conn`` names the connection the request came on (``None``: unknown, every request
        during a back-off then counts towards the ban)."""
        self.roll(now)
        if now < self.banned_until:
            return 418, self.banned_until - now
        if now < self.backoff_until:
            if conn is None or conn in self._told:
                self._violations += 1
            if self._violations > self.ban_after:
                self.banned_until = now + self.ban_s
                return 418, self.ban_s
            self._told.add(conn)
            return 429, self.backoff_until - now
        over = self.weight_limit is not None and self.used + weight > self.weight_limit
        fover = funding and self._funding_used + 1 > self.funding_limit
        if over or fover:
            size = self.funding_window_s if fover and not over else self.window_s
            self.backoff_until = (math.floor(now / size) + 1) * size
            self._violations = 0
            self._told = {conn}
            return 429, self.backoff_until - now
        self.used += weight
        self._funding_used += int(funding)
        return 200, None

    def rate_limits(self) -> list[dict[str, object]]:
        """The ``rateLimits`` entries of ``exchangeInfo`` (no limit: 1,000,000)."""
        limit = self.weight_limit if self.weight_limit is not None else 1_000_000
        if self.window_s % 60 == 0:
            interval, num = "MINUTE", int(self.window_s // 60)
        else:
            interval, num = "SECOND", max(1, round(self.window_s))
        return [
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": interval,
                "intervalNum": num,
                "limit": limit,
            }
        ]
