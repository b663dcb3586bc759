"""The risk rules every new entry passes, one implementation for backtest, replay and live.

:func:`entry_guard_nb` is the rule (``@njit``): the portfolio backtest's kernel
(:func:`atra.core.backtest.portfolio_nb.portfolio_nb`) calls it for every sized event and the
live guards (:class:`atra.live.guards.RiskGuards`) call it, through :func:`check_entry`, for
every taken decision. In order, the first that refuses names the guard:

1. ``kill_switch``: the operator's kill switch is engaged (live only: a backtest has no file
   in the past, so it never trips there; a live block by it is journalled with its reason);
2. ``daily_loss``: the P&L since 00:00 UTC of the decision bar's day (equity marked at the
   decision bar's close minus the day's starting equity = the initial equity plus every fill
   before 00:00 UTC) is at or below ``-max_daily_loss`` x the day's starting equity: no new
   entry for the rest of that UTC day;
3. ``max_positions``: ``max_open_positions`` positions are already open;
4. ``max_per_symbol``: ``max_per_symbol`` positions are already open on the symbol;
5. ``leverage``: equity <= 0, or the open notional (at the symbol's last close) plus the new
   entry's notional exceeds ``max_gross_leverage`` x equity.

Exits of open positions are never blocked. The ``[risk]`` keys of the config map onto
:class:`RiskLimits` and the sizing (:func:`limits_of`, :func:`sizing_of`,
:func:`kelly_multiplier_of`) through :class:`RiskSection`, the shape of
:class:`atra.config.RiskConfig` (the core does not import the config).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Protocol

from numba import njit

from atra.core.sizing import DEFAULT_KELLY_MULTIPLIER, SizingConfig
from atra.errors import ConfigError, RiskLimitBreached

__all__ = [
    "DAILY_LOSS",
    "DAY_MS",
    "GUARDS",
    "GUARD_CODES",
    "GUARD_DAILY_LOSS",
    "GUARD_KILL_SWITCH",
    "GUARD_LEVERAGE",
    "GUARD_MAX_PER_SYMBOL",
    "GUARD_MAX_POSITIONS",
    "GUARD_NAMES",
    "GUARD_NONE",
    "KELLY_MULTIPLIERS",
    "KILL_SWITCH",
    "LEVERAGE",
    "LEVERAGE_TOLERANCE",
    "MAX_PER_SYMBOL",
    "MAX_POSITIONS",
    "GuardBreach",
    "PortfolioView",
    "RiskLimits",
    "RiskSection",
    "check_entry",
    "day_start_ms",
    "day_start_ms_nb",
    "entry_guard_nb",
    "kelly_multiplier_of",
    "limits_of",
    "sizing_of",
]

KILL_SWITCH: Final[str] = "kill_switch"
DAILY_LOSS: Final[str] = "daily_loss"
MAX_POSITIONS: Final[str] = "max_positions"
MAX_PER_SYMBOL: Final[str] = "max_per_symbol"
LEVERAGE: Final[str] = "leverage"
GUARDS: Final[tuple[str, ...]] = (KILL_SWITCH, DAILY_LOSS, MAX_POSITIONS, MAX_PER_SYMBOL, LEVERAGE)
"""The guards' names, in the order they are checked (journalled as ``blocked_by``)."""

GUARD_NONE: Final[int] = 0
GUARD_KILL_SWITCH: Final[int] = 1
GUARD_DAILY_LOSS: Final[int] = 2
GUARD_MAX_POSITIONS: Final[int] = 3
GUARD_MAX_PER_SYMBOL: Final[int] = 4
GUARD_LEVERAGE: Final[int] = 5
GUARD_NAMES: Final[dict[int, str]] = {
    GUARD_KILL_SWITCH: KILL_SWITCH,
    GUARD_DAILY_LOSS: DAILY_LOSS,
    GUARD_MAX_POSITIONS: MAX_POSITIONS,
    GUARD_MAX_PER_SYMBOL: MAX_PER_SYMBOL,
    GUARD_LEVERAGE: LEVERAGE,
}
GUARD_CODES: Final[dict[str, int]] = {name: code for code, name in GUARD_NAMES.items()}

DAY_MS: Final[int] = 86_400_000
LEVERAGE_TOLERANCE: Final[float] = 1e-12
"""Relative slack of the gross-leverage cap, so a position sized exactly at the cap passes."""

KELLY_MULTIPLIERS: Final[dict[str, float | None]] = {"none": None, "half": 0.5, "full": 1.0}
"""``risk.kelly`` -> share of full Kelly (None: fixed-fractional ``risk_per_trade``)."""


@njit(cache=True)
def day_start_ms_nb(time_ms: int) -> int:
    """00:00 UTC of the day holding ``time_ms`` (epoch ms)."""
    return time_ms - time_ms % DAY_MS


def day_start_ms(time_ms: int) -> int:
    """00:00 UTC of the day holding ``time_ms`` (epoch ms)."""
    return int(day_start_ms_nb(int(time_ms)))


@njit(cache=True)
def entry_guard_nb(
    kill_switch: bool,
    equity: float,
    day_start_equity: float,
    open_positions: int,
    on_symbol: int,
    gross_notional: float,
    notional: float,
    max_open_positions: int,
    max_per_symbol: int,
    max_gross_leverage: float,
    max_daily_loss: float,
) -> int:
    """The first guard (``GUARD_*`` code) that refuses a new entry of ``notional``, else
    :data:`GUARD_NONE`; see the module docstring for the rules and their order."""
    if kill_switch:
        return GUARD_KILL_SWITCH
    if equity - day_start_equity <= -max_daily_loss * day_start_equity:
        return GUARD_DAILY_LOSS
    if open_positions >= max_open_positions:
        return GUARD_MAX_POSITIONS
    if on_symbol >= max_per_symbol:
        return GUARD_MAX_PER_SYMBOL
    if not equity > 0.0:
        return GUARD_LEVERAGE
    if gross_notional + abs(notional) > max_gross_leverage * equity * (1.0 + LEVERAGE_TOLERANCE):
        return GUARD_LEVERAGE
    return GUARD_NONE


class RiskSection(Protocol):
    """The ``[risk]`` keys (:class:`atra.config.RiskConfig` has this shape)."""

    @property
    def risk_per_trade(self) -> float: ...
    @property
    def kelly(self) -> str: ...
    @property
    def max_open_positions(self) -> int: ...
    @property
    def max_per_symbol(self) -> int: ...
    @property
    def max_gross_leverage(self) -> float: ...
    @property
    def max_daily_loss(self) -> float: ...


@dataclass(frozen=True, slots=True)
class RiskLimits:
    """The guards' limits (the ``[risk]`` keys of the same names), validated on construction."""

    max_open_positions: int = 5
    max_per_symbol: int = 1
    max_gross_leverage: float = 3.0
    max_daily_loss: float = 0.05

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


def kelly_multiplier_of(kelly: str) -> float | None:
    """``risk.kelly`` (``none`` / ``half`` / ``full``) -> share of full Kelly, None for none."""
    if kelly not in KELLY_MULTIPLIERS:
        raise ConfigError(f"risk.kelly = {kelly!r}, expected one of {', '.join(KELLY_MULTIPLIERS)}")
    return KELLY_MULTIPLIERS[kelly]


def limits_of(risk: RiskSection) -> RiskLimits:
    """The guards' limits of the ``[risk]`` section."""
    return RiskLimits(
        max_open_positions=risk.max_open_positions,
        max_per_symbol=risk.max_per_symbol,
        max_gross_leverage=risk.max_gross_leverage,
        max_daily_loss=risk.max_daily_loss,
    )


def sizing_of(risk: RiskSection) -> SizingConfig:
    """The sizing of the ``[risk]`` section: ``risk_per_trade`` fixed-fractional (and, with
    ``kelly`` half / full, the Kelly multiplier used when a p(take) is known), under the 2%
    cap, and one position's notional <= ``max_gross_leverage`` x equity (the gross cap)."""
    mult = kelly_multiplier_of(risk.kelly)
    return SizingConfig(
        risk_fraction=risk.risk_per_trade,
        kelly_multiplier=DEFAULT_KELLY_MULTIPLIER if mult is None else mult,
        max_leverage=risk.max_gross_leverage,
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


def check_entry(
    limits: RiskLimits,
    view: PortfolioView,
    symbol: str,
    notional: float,
    *,
    kill_switch: str | None = None,
) -> GuardBreach | None:
    """:func:`entry_guard_nb` on ``view`` with a one-line reason; ``kill_switch`` is the reason
    the kill switch is engaged (None: not engaged)."""
    on_symbol = int(view.open_by_symbol.get(symbol, 0))
    code = int(
        entry_guard_nb(
            kill_switch is not None,
            float(view.equity),
            float(view.day_start_equity),
            int(view.open_positions),
            on_symbol,
            float(view.gross_notional),
            float(notional),
            int(limits.max_open_positions),
            int(limits.max_per_symbol),
            float(limits.max_gross_leverage),
            float(limits.max_daily_loss),
        )
    )
    if code == GUARD_NONE:
        return None
    if code == GUARD_KILL_SWITCH:
        return GuardBreach(KILL_SWITCH, str(kill_switch))
    if code == GUARD_DAILY_LOSS:
        floor = -limits.max_daily_loss * view.day_start_equity
        return GuardBreach(
            DAILY_LOSS,
            f"daily P&L {view.daily_pnl:.2f} at or below {floor:.2f} "
            f"({limits.max_daily_loss:.2%} of {view.day_start_equity:.2f})",
        )
    if code == GUARD_MAX_POSITIONS:
        return GuardBreach(
            MAX_POSITIONS,
            f"{view.open_positions} positions open, max_open_positions is "
            f"{limits.max_open_positions}",
        )
    if code == GUARD_MAX_PER_SYMBOL:
        return GuardBreach(
            MAX_PER_SYMBOL,
            f"{on_symbol} positions open on {symbol}, max_per_symbol is {limits.max_per_symbol}",
        )
    if not view.equity > 0.0:
        return GuardBreach(LEVERAGE, f"equity {view.equity:.2f} <= 0: no leverage available")
    leverage = (view.gross_notional + abs(notional)) / view.equity
    return GuardBreach(
        LEVERAGE,
        f"gross leverage would be {leverage:.2f}x, max_gross_leverage is "
        f"{limits.max_gross_leverage:g}x",
    )
