"""Risk guards: the checks every new entry passes before the loop sends (or papers) an order.

The rules are :mod:`atra.core.risk`'s (the same compiled function the backtest's kernel
calls): the kill switch, the daily loss (P&L since 00:00 UTC at or below ``-max_daily_loss``
x the day's starting equity), the number of open positions, positions per symbol, and the
gross leverage (open notional plus the new order over equity). What only live knows is the
kill switch: its file's mere existence stops every new entry (a backtest has no file in the
past and never trips it), and the block is journalled with its reason like any other. A
refused entry is a :class:`GuardBreach` naming the guard; the loop logs it, counts it in
``atra_risk_guard_breaches_total`` and journals it. Exits of open positions are never blocked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from atra.config import RiskConfig
from atra.core.risk import (
    DAILY_LOSS,
    DAY_MS,
    GUARDS,
    KILL_SWITCH,
    LEVERAGE,
    MAX_PER_SYMBOL,
    MAX_POSITIONS,
    GuardBreach,
    PortfolioView,
    RiskLimits,
    check_entry,
    day_start_ms,
    limits_of,
)

__all__ = [
    "DAILY_LOSS",
    "DAY_MS",
    "GUARDS",
    "KILL_SWITCH",
    "LEVERAGE",
    "MAX_PER_SYMBOL",
    "MAX_POSITIONS",
    "GuardBreach",
    "GuardLimits",
    "PortfolioView",
    "RiskGuards",
    "day_start_ms",
]


@dataclass(frozen=True, slots=True)
class GuardLimits:
    """The limits; ``kill_switch_file=None`` disables the kill switch."""

    max_open_positions: int = 5
    max_per_symbol: int = 1
    max_gross_leverage: float = 3.0
    max_daily_loss: float = 0.05
    kill_switch_file: Path | None = None

    def __post_init__(self) -> None:
        self.limits  # noqa: B018 - validates (ConfigError) on construction

    @property
    def limits(self) -> RiskLimits:
        """The limits the shared rule checks (:class:`atra.core.risk.RiskLimits`)."""
        return RiskLimits(
            max_open_positions=self.max_open_positions,
            max_per_symbol=self.max_per_symbol,
            max_gross_leverage=self.max_gross_leverage,
            max_daily_loss=self.max_daily_loss,
        )

    @classmethod
    def from_config(cls, risk: RiskConfig, base_dir: Path | None = None) -> GuardLimits:
        """From the ``risk`` section; a relative kill switch path is taken from ``base_dir``."""
        kill = risk.kill_switch_file
        if base_dir is not None and not kill.is_absolute():
            kill = base_dir / kill
        lim = limits_of(risk)
        return cls(
            max_open_positions=lim.max_open_positions,
            max_per_symbol=lim.max_per_symbol,
            max_gross_leverage=lim.max_gross_leverage,
            max_daily_loss=lim.max_daily_loss,
            kill_switch_file=kill,
        )


class RiskGuards:
    """Checks a new entry against :class:`GuardLimits` with :func:`atra.core.risk.check_entry`."""

    def __init__(self, limits: GuardLimits) -> None:
        self.limits = limits
        self._rules = limits.limits

    def kill_switch_engaged(self) -> bool:
        path = self.limits.kill_switch_file
        return path is not None and path.exists()

    def check_entry(self, view: PortfolioView, symbol: str, notional: float) -> GuardBreach | None:
        """The first guard that refuses an entry of ``notional`` on ``symbol``, else None."""
        kill = (
            f"kill switch file {self.limits.kill_switch_file} exists"
            if self.kill_switch_engaged()
            else None
        )
        return check_entry(self._rules, view, symbol, notional, kill_switch=kill)
