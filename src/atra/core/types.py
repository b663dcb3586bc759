"""Small domain types shared by every layer: timeframes, sides, markets."""

from __future__ import annotations

import enum
import math
from typing import Final

from atra.errors import ConfigError

MINUTES_PER_YEAR: Final[int] = 365 * 24 * 60
"""Crypto trades 24/7: a year is 365 days of 24 hours. Never 252 trading days."""


class Timeframe(enum.Enum):
    """A bar size. ``value`` is the Binance interval string (``"1h"``)."""

    M1 = "1m"
    M3 = "3m"
    M5 = "5m"
    M15 = "15m"
    M30 = "30m"
    H1 = "1h"
    H2 = "2h"
    H4 = "4h"
    H6 = "6h"
    H8 = "8h"
    H12 = "12h"
    D1 = "1d"

    @property
    def minutes(self) -> int:
        """Bar length in minutes."""
        return _MINUTES[self.value]

    @property
    def ms(self) -> int:
        """Bar length in milliseconds."""
        return self.minutes * 60_000

    @property
    def bars_per_year(self) -> int:
        """Bars in a 365-day, 24-hour year (1h -> 8,760; 1d -> 365). Annualises Sharpe."""
        return MINUTES_PER_YEAR // self.minutes

    @property
    def annualization_factor(self) -> float:
        """sqrt(bars_per_year): multiply a per-bar Sharpe by this to annualise it."""
        return math.sqrt(self.bars_per_year)

    @classmethod
    def parse(cls, text: str) -> Timeframe:
        """``"1h"`` -> ``Timeframe.H1``; anything else is a one-line :class:`ConfigError`."""
        try:
            return cls(text.strip())
        except ValueError:
            allowed = ", ".join(tf.value for tf in cls)
            raise ConfigError(f"unknown timeframe {text!r}: expected one of {allowed}") from None

    @classmethod
    def from_ms(cls, step_ms: int) -> Timeframe:
        """The timeframe whose bar length is ``step_ms`` milliseconds."""
        for tf in cls:
            if tf.ms == step_ms:
                return tf
        raise ConfigError(f"no timeframe has a bar length of {step_ms} ms")

    def __str__(self) -> str:
        return self.value


_MINUTES: Final[dict[str, int]] = {
    "1m": 1,
    "3m": 3,
    "5m": 5,
    "15m": 15,
    "30m": 30,
    "1h": 60,
    "2h": 120,
    "4h": 240,
    "6h": 360,
    "8h": 480,
    "12h": 720,
    "1d": 1440,
}


class Side(enum.IntEnum):
    """Trade direction; the integer is the sign of the position."""

    LONG = 1
    SHORT = -1


class Market(enum.Enum):
    """A market of an exchange: spot, or USDT-margined perpetual futures."""

    SPOT = "spot"
    PERP = "perp"

    @classmethod
    def parse(cls, text: str) -> Market:
        """``"spot"`` / ``"perp"`` (``"futures"``, ``"usdm"`` accepted for perp)."""
        norm = text.strip().lower()
        if norm in {"futures", "usdm", "um", "usdt-m"}:
            norm = "perp"
        try:
            return cls(norm)
        except ValueError:
            raise ConfigError(f"unknown market {text!r}: expected spot or perp") from None

    def __str__(self) -> str:
        return self.value
