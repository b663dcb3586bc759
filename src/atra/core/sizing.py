"""Position sizing: fixed-fractional risk, Kelly / half-Kelly, and the hard 2% risk cap.

The risk of a trade is what it loses at its stop-loss: ``quantity * |entry - stop|`` (plus the
round-trip fees when a ``fee_rate`` is given). The rules, in order:

1. Target risk fraction: the configured ``risk_fraction`` (default 2%), or, when a Kelly
   fraction is supplied, ``kelly_multiplier * f*`` (half-Kelly by default). ``f* <= 0`` (no
   edge) or an undefined ``f*`` means no trade.
2. The target never exceeds ``risk_fraction_cap``, itself never above :data:`RISK_FRACTION_CAP`
   (2%): a configuration that tries to raise it is a :class:`ConfigError`.
3. Leverage cap: ``notional / equity <= max_leverage`` (the quantity shrinks).
4. Lot rounding: the quantity is rounded DOWN to the step (risk can only fall); below the
   minimum quantity or the minimum notional there is no trade, with the reason.

Kelly: from trade statistics ``f* = W - (1 - W) / R`` with ``R = avg win / avg loss``; from a
calibrated probability ``p`` and the TP/SL payoff ratio ``b``: ``f* = p - (1 - p) / b``.
``f*`` is read as the fraction of equity to put at risk (lost at the stop).

Floats throughout; :func:`quantity_to_decimal` / :func:`price_to_decimal` give the exact
``Decimal`` values for the order path after rounding to the exchange's step / tick.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal
from typing import Any, Final

from atra.errors import ConfigError, DataError

RISK_FRACTION_CAP: Final[float] = 0.02
"""Hard ceiling on the share of equity at risk in one trade. Never raised by configuration."""
DEFAULT_RISK_FRACTION: Final[float] = 0.02
DEFAULT_KELLY_MULTIPLIER: Final[float] = 0.5

CAPPED_BY_RISK: Final[str] = "risk_cap"
CAPPED_BY_LEVERAGE: Final[str] = "leverage"


@dataclass(frozen=True, slots=True)
class SizingConfig:
    """Sizing parameters, validated on construction."""

    risk_fraction: float = DEFAULT_RISK_FRACTION
    """Equity share at risk per trade in fixed-fractional mode."""
    risk_fraction_cap: float = RISK_FRACTION_CAP
    """Upper bound on the risk share whatever Kelly says; may be lowered, never above 2%."""
    kelly_multiplier: float = DEFAULT_KELLY_MULTIPLIER
    """Share of full Kelly used (0.5 = half-Kelly)."""
    max_leverage: float = 1.0
    """notional / equity never exceeds this."""
    fee_rate: float = 0.0
    """Fee per side counted in the risk per unit (entry and stop fill), 0 to ignore."""

    def __post_init__(self) -> None:
        cap = self.risk_fraction_cap
        if not (math.isfinite(cap) and 0.0 < cap <= RISK_FRACTION_CAP):
            raise ConfigError(
                f"risk_fraction_cap={cap!r}: must be in (0, {RISK_FRACTION_CAP}]; "
                "the 2% per-trade risk cap can be lowered, never raised"
            )
        rf = self.risk_fraction
        if not (math.isfinite(rf) and 0.0 < rf <= cap):
            raise ConfigError(f"risk_fraction={rf!r}: must be in (0, risk_fraction_cap={cap}]")
        km = self.kelly_multiplier
        if not (math.isfinite(km) and 0.0 < km <= 1.0):
            raise ConfigError(f"kelly_multiplier={km!r}: must be in (0, 1]")
        lev = self.max_leverage
        if not (math.isfinite(lev) and lev > 0.0):
            raise ConfigError(f"max_leverage={lev!r}: must be a positive number")
        fee = self.fee_rate
        if not (math.isfinite(fee) and 0.0 <= fee < 0.01):
            raise ConfigError(f"fee_rate={fee!r}: must be in [0, 0.01)")


@dataclass(frozen=True, slots=True)
class LotFilter:
    """Exchange quantity / price filters of a symbol; 0 disables a filter."""

    step_size: float = 0.0
    min_qty: float = 0.0
    min_notional: float = 0.0
    tick_size: float = 0.0

    def __post_init__(self) -> None:
        for name in ("step_size", "min_qty", "min_notional", "tick_size"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0.0):
                raise ConfigError(f"{name}={value!r}: must be a finite number >= 0")


@dataclass(frozen=True, slots=True)
class SizingDecision:
    """The size of one trade and why. ``quantity == 0`` means no trade (see ``reason``)."""

    quantity: float
    notional: float
    risk_amount: float
    """Loss at the stop (quote currency), fees included when configured."""
    risk_fraction: float
    """risk_amount / equity."""
    kelly_fraction: float | None
    """Full Kelly f* when Kelly sizing was used, else None."""
    capped_by: str | None
    """``"risk_cap"`` or ``"leverage"`` when a cap bound the size, else None."""
    reason: str

    @property
    def tradeable(self) -> bool:
        return self.quantity > 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def kelly_fraction(win_rate: float, payoff_ratio: float) -> float:
    """Full Kelly ``f* = W - (1 - W) / R``; NaN when undefined (R <= 0 or non-finite input)."""
    if not (math.isfinite(win_rate) and 0.0 <= win_rate <= 1.0):
        return math.nan
    if math.isinf(payoff_ratio) and payoff_ratio > 0:
        return win_rate
    if not (math.isfinite(payoff_ratio) and payoff_ratio > 0.0):
        return math.nan
    return win_rate - (1.0 - win_rate) / payoff_ratio


def kelly_from_stats(win_rate: float, avg_win: float, avg_loss: float) -> float:
    """Kelly from trade statistics, ``R = avg_win / |avg_loss|`` (avg_loss of either sign)."""
    loss = abs(avg_loss)
    if loss == 0.0:
        return kelly_fraction(win_rate, math.inf if avg_win > 0.0 else math.nan)
    return kelly_fraction(win_rate, avg_win / loss)


def kelly_from_trades(pnls: Sequence[float], *, window: int = 100, min_trades: int = 30) -> float:
    """Kelly from the last ``window`` trade P&Ls (rolling); NaN with fewer than ``min_trades``.

    A trade with pnl 0 counts in the trade count but is neither a win nor a loss. Without any
    win ``f*`` has no finite value (R = 0): -1.0 is returned (no edge), 0.0 if nothing lost either.
    """
    if window < 1 or min_trades < 1:
        raise ConfigError(f"window={window}, min_trades={min_trades}: both must be >= 1")
    recent = list(pnls)[-window:]
    if len(recent) < min_trades:
        return math.nan
    wins = [p for p in recent if p > 0.0]
    losses = [-p for p in recent if p < 0.0]
    if not wins:
        return 0.0 if not losses else -1.0
    win_rate = len(wins) / len(recent)
    avg_win = math.fsum(wins) / len(wins)
    avg_loss = math.fsum(losses) / len(losses) if losses else 0.0
    return kelly_from_stats(win_rate, avg_win, avg_loss)


def payoff_ratio(entry_price: float, take_profit: float, stop_loss: float) -> float:
    """TP/SL payoff ratio ``b = |TP - entry| / |entry - SL|``."""
    risk = abs(entry_price - stop_loss)
    if risk == 0.0:
        raise DataError(f"stop_loss={stop_loss!r} equals entry_price: no risk distance")
    return abs(take_profit - entry_price) / risk


def kelly_from_probability(probability: float, payoff: float) -> float:
    """Kelly from a calibrated win probability ``p`` and payoff ratio ``b``: ``p - (1-p)/b``."""
    return kelly_fraction(probability, payoff)


def _round_down(value: float, step: float) -> float:
    if step <= 0.0:
        return value
    d_step = Decimal(repr(step))
    steps = (Decimal(repr(value)) / d_step).to_integral_value(rounding=ROUND_DOWN)
    return float(steps * d_step)


def _no_trade(reason: str, kelly: float | None) -> SizingDecision:
    return SizingDecision(0.0, 0.0, 0.0, 0.0, kelly, None, reason)


def size_position(
    equity: float,
    entry_price: float,
    stop_price: float,
    *,
    config: SizingConfig | None = None,
    kelly: float | None = None,
    lot: LotFilter | None = None,
) -> SizingDecision:
    """Quantity for a trade entered at ``entry_price`` with its stop at ``stop_price``.

    ``kelly`` is the full Kelly fraction f* (from :func:`kelly_from_trades` or
    :func:`kelly_from_probability`); None selects fixed-fractional sizing.
    Bad prices are a :class:`DataError`; an account with equity <= 0 gets no trade.
    """
    cfg = config if config is not None else SizingConfig()
    for name, value in (("equity", equity), ("entry_price", entry_price), ("stop", stop_price)):
        if not math.isfinite(value):
            raise DataError(f"{name}={value!r}: expected a finite number")
    if entry_price <= 0.0 or stop_price <= 0.0:
        raise DataError(f"entry_price={entry_price!r}, stop={stop_price!r}: prices must be > 0")
    distance = abs(entry_price - stop_price)
    if distance == 0.0:
        raise DataError(f"stop={stop_price!r} equals entry_price: no risk distance")
    if equity <= 0.0:
        return _no_trade(f"equity {equity!r} <= 0", kelly)

    capped_by: str | None = None
    if kelly is None:
        target = cfg.risk_fraction
        reason = f"fixed-fractional {target:.4%} risk"
    elif math.isnan(kelly):
        return _no_trade("kelly undefined (not enough trade history)", kelly)
    elif kelly <= 0.0:
        return _no_trade(f"kelly {kelly:.4f} <= 0: no edge", kelly)
    else:
        target = cfg.kelly_multiplier * kelly
        reason = f"kelly {kelly:.4f} x {cfg.kelly_multiplier:g} = {target:.4%} risk"
    if target > cfg.risk_fraction_cap:
        target = cfg.risk_fraction_cap
        capped_by = CAPPED_BY_RISK
        reason += f", capped to {target:.4%}"

    risk_per_unit = distance + cfg.fee_rate * (entry_price + stop_price)
    quantity = target * equity / risk_per_unit
    max_qty = cfg.max_leverage * equity / entry_price
    if quantity > max_qty:
        quantity = max_qty
        capped_by = CAPPED_BY_LEVERAGE
        reason += f", leverage capped at {cfg.max_leverage:g}x"

    if lot is not None:
        quantity = _round_down(quantity, lot.step_size)
        if quantity <= 0.0 or quantity < lot.min_qty:
            return _no_trade(
                f"quantity {quantity:g} below min_qty {lot.min_qty:g} after step rounding", kelly
            )
        if quantity * entry_price < lot.min_notional:
            return _no_trade(
                f"notional {quantity * entry_price:g} below min_notional {lot.min_notional:g}",
                kelly,
            )
    risk_amount = quantity * risk_per_unit
    return SizingDecision(
        quantity=quantity,
        notional=quantity * entry_price,
        risk_amount=risk_amount,
        risk_fraction=risk_amount / equity,
        kelly_fraction=kelly,
        capped_by=capped_by,
        reason=reason,
    )


def quantity_to_decimal(quantity: float, step_size: float | str | Decimal) -> Decimal:
    """Exact order quantity: ``quantity`` rounded DOWN to a multiple of ``step_size``."""
    step = Decimal(str(step_size))
    if step <= 0:
        raise ConfigError(f"step_size={step_size!r}: must be > 0")
    if not math.isfinite(quantity) or quantity < 0.0:
        raise DataError(f"quantity={quantity!r}: expected a finite number >= 0")
    steps = (Decimal(repr(quantity)) / step).to_integral_value(rounding=ROUND_DOWN)
    return (steps * step).quantize(step)


def price_to_decimal(
    price: float, tick_size: float | str | Decimal, rounding: str = ROUND_HALF_EVEN
) -> Decimal:
    """Exact order price: ``price`` rounded to a multiple of ``tick_size`` (nearest by default;
    pass ``decimal.ROUND_DOWN`` / ``ROUND_UP`` for a conservative limit)."""
    tick = Decimal(str(tick_size))
    if tick <= 0:
        raise ConfigError(f"tick_size={tick_size!r}: must be > 0")
    if not math.isfinite(price) or price <= 0.0:
        raise DataError(f"price={price!r}: expected a finite number > 0")
    ticks = (Decimal(repr(price)) / tick).to_integral_value(rounding=rounding)
    return (ticks * tick).quantize(tick)
