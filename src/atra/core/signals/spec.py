"""Parameters and output of the primary momentum model.

:class:`SignalSpec` (the entry rule: a built-in :class:`Rule` or the name of a plug-in rule of
:mod:`atra.core.signals.rules` with its ``params``; trend filter, :class:`BarrierMode` and
barrier sizes, horizon, warm-up; validated on construction) and :class:`Signal`, one trade
proposal with its barrier levels. The rules themselves are computed in
:mod:`atra.core.signals.events`.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from atra.core.signals.rules import ParamValue, Rule, find_rule
from atra.core.types import Side
from atra.errors import ConfigError, DataError

__all__ = ["BarrierMode", "Rule", "Signal", "SignalSpec"]


class BarrierMode(enum.Enum):
    """How barrier distances are set: ATR multiples or percents of the entry reference."""

    ATR = "atr"
    PERCENT = "percent"


@dataclass(frozen=True, slots=True)
class SignalSpec:
    """Parameters of the primary model. Defaults: WORKLOAD.md's EMA 20/50, SL 1.5 / TP 3 ATR.

    ``tp2_*`` only matters when the exit spec closes less than everything at TP1.
    ``warmup_bars`` (default: the longest lookback) is counted from each segment's start.

    ``rule`` is a built-in :class:`Rule` (its value, ``"donchian"``, is accepted too) or the
    name of a registered plug-in rule; ``params`` are the plug-in rule's parameters, checked
    and normalised against its declaration (sorted ``(name, value)`` pairs, defaults filled
    in). Built-in rules take theirs from the fields below and no ``params``.
    """

    rule: Rule | str = Rule.EMA_CROSS
    ema_fast: int = 20
    ema_slow: int = 50
    donchian_n: int = 20
    tsmom_lookback: int = 168
    trend_ema: int | None = None
    allow_long: bool = True
    allow_short: bool = True
    barrier_mode: BarrierMode = BarrierMode.ATR
    atr_n: int = 14
    sl_atr: float = 1.5
    tp1_atr: float = 3.0
    tp2_atr: float = 4.5
    sl_pct: float = 0.01
    tp1_pct: float = 0.02
    tp2_pct: float = 0.04
    horizon_bars: int = 48
    warmup_bars: int | None = None
    params: tuple[tuple[str, ParamValue], ...] = ()

    def __post_init__(self) -> None:
        self._check_rule()
        for name in ("ema_fast", "ema_slow", "donchian_n", "tsmom_lookback", "atr_n"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.ema_fast >= self.ema_slow:
            raise ConfigError(f"ema_fast ({self.ema_fast}) must be < ema_slow ({self.ema_slow})")
        if self.trend_ema is not None and self.trend_ema < 1:
            raise ConfigError(f"trend_ema must be >= 1 or None, got {self.trend_ema}")
        if not (self.allow_long or self.allow_short):
            raise ConfigError("allow_long and allow_short are both False: no signal possible")
        if self.horizon_bars < 1:
            raise ConfigError(f"horizon_bars must be >= 1, got {self.horizon_bars}")
        if self.warmup_bars is not None and self.warmup_bars < 1:
            raise ConfigError(f"warmup_bars must be >= 1 or None, got {self.warmup_bars}")
        for kind in ("atr", "pct"):
            sl, tp1, tp2 = (getattr(self, f"{b}_{kind}") for b in ("sl", "tp1", "tp2"))
            if not (math.isfinite(sl) and sl > 0.0):
                raise ConfigError(f"sl_{kind} must be > 0, got {sl}")
            if not (math.isfinite(tp1) and math.isfinite(tp2) and 0.0 < tp1 < tp2):
                raise ConfigError(f"need 0 < tp1_{kind} < tp2_{kind}, got {tp1} and {tp2}")
        if self.tp2_pct >= 1.0:
            raise ConfigError(
                f"tp2_pct must be < 1 (a short's TP2 must stay > 0), got {self.tp2_pct}"
            )

    def _check_rule(self) -> None:
        if isinstance(self.rule, str) and self.rule in {r.value for r in Rule}:
            object.__setattr__(self, "rule", Rule(self.rule))
        if isinstance(self.rule, Rule):
            if self.params:
                raise ConfigError(
                    f"params are for plug-in rules; rule {self.rule.value} takes its "
                    f"parameters from the spec's fields, got {dict(self.params)}"
                )
            return
        if not isinstance(self.rule, str):
            raise ConfigError(f"rule must be a Rule or a plug-in rule name, got {self.rule!r}")
        defn = find_rule(self.rule, "rule")
        object.__setattr__(self, "params", defn.validate(dict(self.params), "params"))
        defn.warmup_bars(self.params)  # a broken warm-up declaration fails here, not later

    @property
    def rule_name(self) -> str:
        """The rule's name: a built-in's value (``ema_cross``) or the plug-in's name."""
        return self.rule.value if isinstance(self.rule, Rule) else self.rule

    @property
    def rule_params(self) -> dict[str, ParamValue]:
        """A plug-in rule's parameters by name (empty for a built-in rule)."""
        return dict(self.params)

    @classmethod
    def seed(cls) -> SignalSpec:
        """The team's seed: EMA 20/50 entries, TP1 +2%, SL -1%, 5 days (120 bars at 1h).

        TP2 (+4%) is only used when the exit spec takes a partial profit at TP1.
        """
        return cls(barrier_mode=BarrierMode.PERCENT, horizon_bars=120)

    @property
    def warmup(self) -> int:
        """Bars of warm-up at the start of every gap-free segment."""
        if self.warmup_bars is not None:
            return self.warmup_bars
        if isinstance(self.rule, Rule):
            need = {
                Rule.EMA_CROSS: self.ema_slow,
                Rule.DONCHIAN: self.donchian_n + 1,
                Rule.TSMOM: self.tsmom_lookback + 1,
            }[self.rule]
        else:
            need = find_rule(self.rule, "rule").warmup_bars(self.params)
        if self.trend_ema is not None:
            need = max(need, self.trend_ema)
        if self.barrier_mode is BarrierMode.ATR:
            need = max(need, self.atr_n)
        return need


@dataclass(frozen=True, slots=True)
class Signal:
    """One trade proposal of the primary model: prices are levels, ``entry`` the reference."""

    symbol: str
    time_ms: int
    side: Side
    entry: float
    sl: float
    tp1: float
    tp2: float
    horizon_bars: int

    def __post_init__(self) -> None:
        where = f"signal {self.symbol} at {self.time_ms}"
        try:
            object.__setattr__(self, "side", Side(self.side))
        except ValueError:
            raise DataError(f"{where}: side {self.side!r} is not 1 (long) or -1 (short)") from None
        prices = {"entry": self.entry, "sl": self.sl, "tp1": self.tp1, "tp2": self.tp2}
        for name, value in prices.items():
            if not (math.isfinite(value) and value > 0.0):
                raise DataError(f"{where}: {name} = {value}, expected a finite price > 0")
        s = int(self.side)
        if not s * (self.entry - self.sl) > 0.0:
            raise DataError(
                f"{where}: SL {self.sl} is not on the losing side of entry {self.entry}"
            )
        if not (s * (self.tp1 - self.entry) > 0.0 and s * (self.tp2 - self.tp1) > 0.0):
            raise DataError(
                f"{where}: TP1 {self.tp1} is not strictly between entry {self.entry} "
                f"and TP2 {self.tp2} on the winning side"
            )
        if self.horizon_bars < 1:
            raise ConfigError(f"{where}: horizon_bars = {self.horizon_bars}, expected >= 1")

    @property
    def sl_dist(self) -> float:
        """Distance from entry to SL (> 0); the exit kernel re-anchors it at the fill."""
        return abs(self.entry - self.sl)

    @property
    def tp1_dist(self) -> float:
        """Distance from entry to TP1 (> 0)."""
        return abs(self.tp1 - self.entry)

    @property
    def tp2_dist(self) -> float:
        """Distance from entry to TP2 (> tp1_dist)."""
        return abs(self.tp2 - self.entry)

    def pnl(self, price: float, quantity: float, fee_rate: float) -> float:
        """Net P&L of closing ``quantity`` units at ``price``, entry and exit fees included."""
        if not (math.isfinite(price) and price > 0.0):
            raise DataError(f"signal {self.symbol}: exit price {price} must be > 0")
        if not (math.isfinite(quantity) and quantity >= 0.0):
            raise ConfigError(f"quantity must be >= 0, got {quantity}")
        if not (math.isfinite(fee_rate) and 0.0 <= fee_rate < 1.0):
            raise ConfigError(f"fee_rate must be in [0, 1), got {fee_rate}")
        gross = int(self.side) * (price - self.entry) * quantity
        fees = fee_rate * quantity * (self.entry + price)
        return gross - fees
