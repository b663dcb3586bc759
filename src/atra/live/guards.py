"""Risk guards: the checks every new entry passes before the loop sends (or papers) an order.

In order: the kill switch file (its mere existence stops every new entry), the daily loss
(P&L since 00:00 UTC at or below ``-max_daily_loss`` x the day's starting equity), the number
of open positions, positions per symbol, and the gross leverage (open notional plus the new
order over equity). A refused entry is a :class:`GuardBreach` naming the guard; the loop logs
it, counts it in ``atra_risk_guard_breaches_total`` and journals it. Exits of open positions
are never blocked.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from atra.config import RiskConfig
from atra.errors import ConfigError, RiskLimitBreached

KILL_SWITCH: Final[str] = "kill_switch"
DAILY_LOSS: Final[str] = "daily_loss"
MAX_POSITIONS: Final[str] = "max_positions"
MAX_PER_SYMBOL: Final[str] = "max_per_symbol"
LEVERAGE: Final[str] = "leverage"
GUARDS: Final[tuple[str, ...]] = (KILL_SWITCH, DAILY_LOSS, MAX_POSITIONS, MAX_PER_SYMBOL, LEVERAGE)
DAY_MS: Final[int] = 86_400_000


@dataclass(frozen=True, slots=True)
class GuardLimits:
    """The limits; ``kill_switch_file=None`` disables the kill switch."""

    max_open_positions: int = 5
    max_per_symbol: int = 1
    max_gross_leverage: float = 3.0
    max_daily_loss: float = 0.05
    kill_switch_file: Path | None = None

    def __post_init__(self) -> None:
        if self.max_open_positions < 1 or self.max_per_symbol < 1:
            raise ConfigError(
                f"risk.max_open_positions ({self.max_open_positions}) and risk.max_per_symbol "
                f"({self.max_per_symbol}) must be >= 1"
            )
        if not (math.isfinite(self.max_gross_leverage) and self.max_gross_leverage > 0.0):
            raise ConfigError(f"risk.max_gross_leverage must be > 0, got {self.max_gross_leverage}")
        if not (math.isfinite(self.max_daily_loss) and 0.0 < self.max_daily_loss <= 1.0):
            raise ConfigError(f"risk.max_daily_loss must be in (0, 1], got {self.max_daily_loss}")

    @classmethod
    def from_config(cls, risk: RiskConfig, base_dir: Path | None = None) -> GuardLimits:
        """From the ``risk`` section; a relative kill switch path is taken from ``base_dir``."""
        kill = risk.kill_switch_file
        if base_dir is not None and not kill.is_absolute():
            kill = base_dir / kill
        return cls(
            max_open_positions=risk.max_open_positions,
            max_per_symbol=risk.max_per_symbol,
            max_gross_leverage=risk.max_gross_leverage,
            max_daily_loss=risk.max_daily_loss,
            kill_switch_file=kill,
        )


@dataclass(frozen=True, slots=True)
class PortfolioView:
    """What the guards need to know about the book at decision time."""

    equity: float
    day_start_equity: float
    open_positions: int
    open_by_symbol: Mapping[str, int] = field(default_factory=dict)
    gross_notional: float = 0.0

    @property
    def daily_pnl(self) -> float:
        return self.equity - self.day_start_equity


@dataclass(frozen=True, slots=True)
class GuardBreach:
    """A refused entry: which guard, and why (one line)."""

    guard: str
    detail: str

    def error(self) -> RiskLimitBreached:
        return RiskLimitBreached(f"{self.guard}: {self.detail}")


def day_start_ms(time_ms: int) -> int:
    """00:00 UTC of the day holding ``time_ms``."""
    return time_ms - time_ms % DAY_MS


class RiskGuards:
    """Checks a new entry against :class:`GuardLimits`."""

    def __init__(self, limits: GuardLimits) -> None:
        self.limits = limits

    def kill_switch_engaged(self) -> bool:
        path = self.limits.kill_switch_file
        return path is not None and path.exists()

    def check_entry(self, view: PortfolioView, symbol: str, notional: float) -> GuardBreach | None:
        """The first guard that refuses an entry of ``notional`` on ``symbol``, else None."""
        lim = self.limits
        if self.kill_switch_engaged():
            return GuardBreach(KILL_SWITCH, f"kill switch file {lim.kill_switch_file} exists")
        floor = -lim.max_daily_loss * view.day_start_equity
        if view.daily_pnl <= floor:
            return GuardBreach(
                DAILY_LOSS,
                f"daily P&L {view.daily_pnl:.2f} at or below {floor:.2f} "
                f"({lim.max_daily_loss:.2%} of {view.day_start_equity:.2f})",
            )
        if view.open_positions >= lim.max_open_positions:
            return GuardBreach(
                MAX_POSITIONS,
                f"{view.open_positions} positions open, max_open_positions is "
                f"{lim.max_open_positions}",
            )
        on_symbol = view.open_by_symbol.get(symbol, 0)
        if on_symbol >= lim.max_per_symbol:
            return GuardBreach(
                MAX_PER_SYMBOL,
                f"{on_symbol} positions open on {symbol}, max_per_symbol is {lim.max_per_symbol}",
            )
        if view.equity <= 0.0:
            return GuardBreach(LEVERAGE, f"equity {view.equity:.2f} <= 0: no leverage available")
        leverage = (view.gross_notional + abs(notional)) / view.equity
        if leverage > lim.max_gross_leverage:
            return GuardBreach(
                LEVERAGE,
                f"gross leverage would be {leverage:.2f}x, max_gross_leverage is "
                f"{lim.max_gross_leverage:g}x",
            )
        return None
