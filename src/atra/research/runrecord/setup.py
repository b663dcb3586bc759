"""What was run, as one typed record (:class:`RunSetup`, ``run.json`` key ``setup``).

Market and universe, the sides traded (long only on spot without margin), the primary rule and
its parameters, the exit barriers, the costs (maker / taker fee, slippage, funding on or off),
the sizing (risk per trade, Kelly fraction,
leverage caps), the dates (first and last signal bar, out-of-sample span), the walk-forward
settings and the id of every model that made a decision. Times are bar open times in ms (UTC).

:meth:`RunSetup.to_json` gives plain JSON; :meth:`RunSetup.from_json` reads it back, refusing
a missing key or a wrong type with a one-line :class:`~atra.errors.DataError` naming the key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Final, Literal, TypeVar

from pydantic import TypeAdapter, ValidationError

from atra.core.signals.rules import ParamValue
from atra.errors import DataError

__all__ = [
    "BarrierSetup",
    "CostSetup",
    "DateRange",
    "FoldModel",
    "RunSetup",
    "SizingSetup",
    "WalkForwardSetup",
    "read_typed",
    "sides_text",
]


@dataclass(frozen=True, slots=True)
class BarrierSetup:
    """The triple barrier of every primary signal."""

    mode: Literal["atr", "percent"]
    """``atr``: distances are multiples of the ATR; ``percent``: fractions of the entry."""
    sl: float
    tp1: float
    tp2: float
    atr_window: int
    horizon_bars: int
    """The time barrier, in bars after the entry."""
    tp1_fraction: float
    """Share of the position closed at TP1 (1.0: all of it)."""
    move_to_be: bool
    """Stop moved to break-even after TP1."""


@dataclass(frozen=True, slots=True)
class CostSetup:
    """What every fill and every funding interval cost."""

    maker_fee_bps: float
    taker_fee_bps: float
    take_profit_fee: Literal["maker", "taker"]
    """The fee take-profit fills pay (entries, stops and time exits pay the taker fee)."""
    slippage_bps: float
    funding: bool
    """Perpetual funding charged from its history (perpetuals) or not (spot)."""


@dataclass(frozen=True, slots=True)
class SizingSetup:
    """How positions were sized and limited."""

    mode: Literal["fixed_fractional", "kelly"]
    initial_equity: float
    risk_per_trade: float
    """Equity share at risk per trade (fixed-fractional), as a fraction."""
    risk_cap: float
    """No trade risks more than this share of equity, whatever Kelly says."""
    kelly_fraction: float | None
    """Share of full Kelly (``kelly`` mode only; None when fixed-fractional). Kelly sizes from
    the meta model's p(take), so it applies to the meta-filtered leg; the primary leg, which has
    no p(take), is sized fixed-fractionally."""
    max_leverage: float
    """Notional of one position / equity, at most."""
    max_gross_leverage: float
    """Notional of every open position / equity, at most."""
    max_positions: int
    max_per_symbol: int
    margin_leverage: float | None
    """Isolated-margin leverage of perpetual positions (None on spot)."""
    max_daily_loss: float | None = None
    """New entries stop for the rest of the UTC day once the day's P&L reaches minus this share
    of the day's starting equity (the live guard's rule); None in runs written before it was
    recorded."""


@dataclass(frozen=True, slots=True)
class DateRange:
    """The signal bars of the run and its out-of-sample span."""

    first_signal_ms: int
    last_signal_ms: int
    oos_start_ms: int
    """First bar of the out-of-sample span (the first test window)."""
    oos_end_ms: int
    """Last bar of the out-of-sample span (the data end)."""


@dataclass(frozen=True, slots=True)
class WalkForwardSetup:
    """How the meta model was retrained."""

    retrain_days: int
    embargo_hours: float
    train_mode: Literal["expanding", "rolling"]
    train_days: int | None
    """Length of a rolling training window (None when expanding)."""
    min_train_days: int
    min_train_events: int
    folds: int


@dataclass(frozen=True, slots=True)
class FoldModel:
    """One walk-forward model: trained on its fold's training span, deciding on its test span.

    ``model_id`` is a content id (12 hex digits of a SHA-256 over the data hash, the config
    hash and the fold's windows and size): the same inputs give the same model and the same
    id. Fold models are not saved to the model registry."""

    fold: int
    model_id: str
    train_start_ms: int
    train_end_ms: int
    test_start_ms: int
    test_end_ms: int
    n_train: int
    threshold: float


@dataclass(frozen=True, slots=True)
class RunSetup:
    """What was run (see the module docstring)."""

    exchange: str
    market: str
    symbols: tuple[str, ...]
    timeframe: str
    rule: str
    rule_params: dict[str, ParamValue]
    """The rule's parameters: whole numbers of bars for the built-ins (e.g. ``{"fast": 20,
    "slow": 50}``), a plug-in rule's own values."""
    barriers: BarrierSetup
    costs: CostSetup
    sizing: SizingSetup
    dates: DateRange
    walkforward: WalkForwardSetup | None
    models: tuple[FoldModel, ...]
    """The models whose decisions were traded (empty when none was)."""
    sides: str | None = None
    """The sides traded and what a short costs, e.g. ``long only (spot, no margin)``,
    ``long/short (spot on margin at 0.1 bps/h)`` or ``long/short (perp)`` (see
    :func:`sides_text`); None in runs written before it was recorded."""

    def to_json(self) -> dict[str, Any]:
        """Plain JSON (tuples as lists); a non-finite number is a ``ValueError``."""
        out: dict[str, Any] = json.loads(json.dumps(asdict(self), allow_nan=False))
        return out

    @classmethod
    def from_json(cls, raw: object, where: str) -> RunSetup:
        """Read :meth:`RunSetup.to_json` back; ``where`` (e.g. ``run.json: setup``) starts
        the error."""
        return read_typed(_SETUP, raw, where)


def sides_text(market: str, long: bool, short: bool, borrow_bps_per_hour: float) -> str:
    """What :attr:`RunSetup.sides` says: the sides of the signal spec on ``market`` (``spot`` /
    ``perp``) and, for spot shorts, their margin interest."""
    if long and not short:
        return "long only (spot, no margin)" if market == "spot" else f"long only ({market})"
    which = "long/short" if long else "short only"
    if market != "spot":
        return f"{which} ({market})"
    free = ": no borrow cost charged" if borrow_bps_per_hour == 0.0 else ""
    return f"{which} (spot on margin at {borrow_bps_per_hour:g} bps/h{free})"


_SETUP: Final[TypeAdapter[RunSetup]] = TypeAdapter(RunSetup)
T = TypeVar("T")


def read_typed(adapter: TypeAdapter[T], raw: object, where: str) -> T:
    """``raw`` (parsed JSON) as ``adapter``'s type, strictly (no string-to-number coercion);
    else a one-line :class:`DataError`: ``<where>.<key path>: <what was expected>``."""
    try:
        return adapter.validate_json(json.dumps(raw, allow_nan=False), strict=True)
    except (TypeError, ValueError) as exc:
        if not isinstance(exc, ValidationError):
            raise DataError(f"{where}: not JSON ({exc})") from None
        first = exc.errors(include_url=False)[0]
        loc = ".".join(str(p) for p in first["loc"])
        key = f"{where}.{loc}" if loc else where
        raise DataError(f"{key}: {first['msg']} (got {_short(first.get('input'))})") from None


def _short(value: object) -> str:
    text = repr(value) if not isinstance(value, Mapping) else "an object"
    return text if len(text) <= 40 else text[:37] + "..."
