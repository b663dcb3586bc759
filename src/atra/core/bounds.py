"""What a plausible row is: the time range and the sane bounds of prices and funding rates.

Pure and light (no numpy: the configuration builds a :class:`Limits` from ``[data.bounds]``
without loading the data stack). The checks themselves live in
:mod:`atra.core.plausibility` and :mod:`atra.core.frames`.

Times must lie between the exchange's launch (:data:`EXCHANGE_LAUNCH_MS`) and one step past
the caller's clock (or :data:`LATEST_MS` without one). Prices must lie in
``[min_price, max_price)``, funding rates within ``+-max_abs_funding_rate`` per interval; the
three bounds are set by the config keys ``data.bounds.*`` (:data:`BOUNDS_SECTION`), which the
refusals name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from atra.errors import ConfigError

EXCHANGE_LAUNCH_MS: Final[int] = 1_499_990_400_000
"""2017-07-14 00:00 UTC, Binance's launch: no Binance time is earlier."""
LATEST_MS: Final[int] = 4_102_444_800_000
"""2100-01-01 00:00 UTC: the latest plausible time when no clock is given."""
MIN_PRICE: Final[float] = 1e-8
"""Prices below this are refused (``Limits.min_price``): Binance quotes at most 8 decimals, so
no price it reports is below 0.00000001."""
MAX_PRICE: Final[float] = 1e9
"""Prices at or above this are refused (``Limits.max_price``)."""
MAX_ABS_FUNDING_RATE: Final[float] = 0.05
"""Funding rates beyond +-5 % per interval are refused (``Limits.max_abs_funding_rate``);
Binance caps them near +-3 % even on small coins."""
BOUNDS_SECTION: Final[str] = "data.bounds"
"""The config section that sets the price and funding-rate bounds, named in every refusal
(``data.bounds.max_price``) so the reader knows which key to change."""


@dataclass(frozen=True, slots=True)
class Limits:
    """What a plausible row is: times in ``[earliest_ms, now_ms + one bar]`` (or before
    :data:`LATEST_MS` without a clock), ``min_price <= price < max_price``,
    ``|funding_rate| <= max_abs_funding_rate``. The core has no clock: callers that have one
    pass ``now_ms``. A bound that is not a positive finite number, or ``min_price >=
    max_price``, is a one-line :class:`ConfigError` naming the ``data.bounds`` key."""

    earliest_ms: int = EXCHANGE_LAUNCH_MS
    now_ms: int | None = None
    max_price: float = MAX_PRICE
    max_abs_funding_rate: float = MAX_ABS_FUNDING_RATE
    min_price: float = MIN_PRICE

    def __post_init__(self) -> None:
        if not 0 <= self.earliest_ms < LATEST_MS:
            raise ConfigError(
                f"earliest plausible time must be in 1970..2100, got {self.earliest_ms} ms"
            )
        if self.now_ms is not None and self.now_ms < self.earliest_ms:
            raise ConfigError(
                f"clock {self.now_ms} ms is before the earliest plausible time "
                f"{self.earliest_ms} ms"
            )
        for name in ("min_price", "max_price", "max_abs_funding_rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{BOUNDS_SECTION}.{name} must be a number, got {value!r}")
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(
                    f"{BOUNDS_SECTION}.{name} must be a positive finite number, got {value}"
                )
        if self.min_price >= self.max_price:
            raise ConfigError(
                f"{BOUNDS_SECTION}.min_price ({self.min_price:g}) must be below "
                f"{BOUNDS_SECTION}.max_price ({self.max_price:g})"
            )

    def latest_ms(self, step_ms: int) -> int:
        """The latest plausible time: one step past the clock, else :data:`LATEST_MS`."""
        return LATEST_MS if self.now_ms is None else self.now_ms + step_ms


DEFAULT_LIMITS: Final = Limits()
