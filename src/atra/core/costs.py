"""Trading costs: fees, slippage and funding, per fill and as an annual share of equity.

Conventions (all amounts in the quote currency, all rates as fractions unless the name says
``_bps``):

- Fees: ``notional * rate``, the rate being the maker or the taker rate of the side's fill.
- Slippage: ``notional * slippage_bps / 10_000``, always against the trader (a buy fills
  higher, a sell lower).
- Funding (perpetuals): at each funding time a position pays ``quantity * mark * rate``, the
  quantity signed (+ long, - short); a positive rate makes longs pay shorts. A negative amount
  is funding received.
- Borrow (spot shorts on margin): every hour a short is open it pays ``quantity * mark *
  rate_per_hour`` of interest on the borrowed asset (:mod:`atra.core.backtest.engine`).

Annual costs are reported as a fraction of equity *and* as a percent string with an explicit
unit, so that ``1.08`` (108% of equity a year) cannot be read as 1.08%.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Final, Protocol

from atra.errors import ConfigError, DataError

BPS_PER_UNIT: Final[float] = 10_000.0
MONTHS_PER_YEAR: Final[int] = 12
DAYS_PER_YEAR: Final[int] = 365
FUNDING_INTERVALS_PER_DAY: Final[int] = 3
"""Binance USDT-M perpetuals settle funding every 8 hours."""
ANNUAL_COST_UNIT: Final[str] = "fraction of equity per year"


def _check_rate(name: str, value: float, upper: float) -> None:
    if not math.isfinite(value) or value < 0.0 or value >= upper:
        raise ConfigError(f"{name}={value!r}: expected a finite number in [0, {upper})")


def format_percent(fraction: float, decimals: int = 1) -> str:
    """``1.08`` -> ``"108.0%"``: the fraction times 100 with a percent sign."""
    if math.isnan(fraction):
        return "nan"
    return f"{fraction * 100.0:.{decimals}f}%"


@dataclass(frozen=True, slots=True)
class CostModel:
    """Fee rates per fill side and slippage; validated on construction (:class:`ConfigError`)."""

    maker_fee_rate: float = 0.0002
    taker_fee_rate: float = 0.0004
    slippage_bps: float = 0.0

    def __post_init__(self) -> None:
        _check_rate("maker_fee_rate", self.maker_fee_rate, 0.01)
        _check_rate("taker_fee_rate", self.taker_fee_rate, 0.01)
        _check_rate("slippage_bps", self.slippage_bps, 1_000.0)

    def fee_rate(self, *, maker: bool) -> float:
        return self.maker_fee_rate if maker else self.taker_fee_rate

    def fee(self, notional: float, *, maker: bool = False) -> float:
        """Fee of one fill of ``notional`` (absolute value taken)."""
        return abs(notional) * self.fee_rate(maker=maker)

    def slippage(self, notional: float) -> float:
        """Slippage cost of one fill of ``notional``."""
        return abs(notional) * self.slippage_bps / BPS_PER_UNIT

    def fill_price(self, price: float, *, buy: bool) -> float:
        """``price`` moved against the trader by the slippage (up for a buy, down for a sell)."""
        shift = self.slippage_bps / BPS_PER_UNIT
        return price * (1.0 + shift) if buy else price * (1.0 - shift)

    def round_trip_fraction(self, *, maker_entry: bool = False, maker_exit: bool = False) -> float:
        """Fees + slippage of entry and exit as a fraction of the notional."""
        slip = 2.0 * self.slippage_bps / BPS_PER_UNIT
        return self.fee_rate(maker=maker_entry) + self.fee_rate(maker=maker_exit) + slip


def funding_payment(quantity: float, mark_price: float, funding_rate: float) -> float:
    """Funding paid at one funding time (negative: received). ``quantity`` signed, + long."""
    return quantity * mark_price * funding_rate


def funding_paid(
    quantity: float, mark_prices: Sequence[float], funding_rates: Sequence[float]
) -> float:
    """Total funding paid by a constant position over several funding times."""
    if len(mark_prices) != len(funding_rates):
        raise DataError(
            f"funding: {len(mark_prices)} mark prices but {len(funding_rates)} funding rates"
        )
    return math.fsum(
        funding_payment(quantity, m, r) for m, r in zip(mark_prices, funding_rates, strict=True)
    )


class CostBearing(Protocol):
    """Anything that records the costs it paid (a closed trade)."""

    @property
    def fees(self) -> float: ...
    @property
    def slippage(self) -> float: ...
    @property
    def funding(self) -> float: ...
    @property
    def borrow(self) -> float: ...


@dataclass(frozen=True, slots=True)
class CostBreakdown:
    """Costs paid (quote currency) and their share of a reference equity."""

    fees: float
    slippage: float
    funding: float
    reference_equity: float
    """The equity the fractions are taken of (usually the initial capital)."""
    borrow: float = 0.0
    """Margin interest paid by spot shorts."""

    @property
    def total(self) -> float:
        return self.fees + self.slippage + self.funding + self.borrow

    @property
    def fees_fraction(self) -> float:
        return self.fees / self.reference_equity

    @property
    def total_fraction(self) -> float:
        return self.total / self.reference_equity

    @classmethod
    def from_trades(cls, trades: Iterable[CostBearing], reference_equity: float) -> CostBreakdown:
        if not math.isfinite(reference_equity) or reference_equity <= 0.0:
            raise DataError(f"reference_equity={reference_equity!r}: expected a positive number")
        fees: list[float] = []
        slip: list[float] = []
        fund: list[float] = []
        borrow: list[float] = []
        for tr in trades:
            fees.append(tr.fees)
            slip.append(tr.slippage)
            fund.append(tr.funding)
            borrow.append(tr.borrow)
        return cls(
            math.fsum(fees), math.fsum(slip), math.fsum(fund), reference_equity, math.fsum(borrow)
        )

    def to_dict(self) -> dict[str, float]:
        out = asdict(self)
        out["total"] = self.total
        out["fees_fraction"] = self.fees_fraction
        out["total_fraction"] = self.total_fraction
        return out


@dataclass(frozen=True, slots=True)
class AnnualCostReport:
    """Yearly costs of a trading rate, as fractions of equity (1.0 = 100% of equity a year).

    ``*_fraction`` fields are plain fractions; ``*_percent`` fields are the same numbers as
    percent strings (``"108.0%"``); ``unit`` says it in words.
    """

    trades_per_year: float
    notional_fraction: float
    """Notional of each trade as a fraction of equity (1.0 = full equity)."""
    fee_rate_per_side: float
    slippage_bps: float
    fees_per_year_fraction: float
    slippage_per_year_fraction: float
    funding_per_year_fraction: float
    total_per_year_fraction: float
    fees_per_year_percent: str
    slippage_per_year_percent: str
    funding_per_year_percent: str
    total_per_year_percent: str
    unit: str = ANNUAL_COST_UNIT

    def describe(self) -> str:
        """One unambiguous line, e.g. ``fees 108.0% of equity per year (1.0800 x equity)``."""
        return (
            f"fees {self.fees_per_year_percent} of equity per year "
            f"({self.fees_per_year_fraction:.4f} x equity); "
            f"total costs {self.total_per_year_percent} of equity per year "
            f"({self.total_per_year_fraction:.4f} x equity)"
        )

    def to_dict(self) -> dict[str, float | str]:
        return asdict(self)


def annual_cost_report(
    trades_per_month: float,
    fee_rate_per_side: float,
    *,
    notional_fraction: float = 1.0,
    slippage_bps: float = 0.0,
    funding_rate_per_interval: float = 0.0,
    exposure: float = 0.0,
) -> AnnualCostReport:
    """Costs of trading ``trades_per_month`` round trips a month, each of ``notional_fraction``
    x equity, paying ``fee_rate_per_side`` and ``slippage_bps`` on entry and exit.

    Funding: ``funding_rate_per_interval`` (e.g. 0.0001 per 8 h) paid on the notional for the
    ``exposure`` share of the time a position is open (3 funding times a day).

    Example: 150 trades a month at 0.03% per side on full equity ->
    ``150 * 12 * 2 * 0.0003 = 1.08`` -> ``"108.0%"`` of equity per year.
    """
    for name, value in (
        ("trades_per_month", trades_per_month),
        ("notional_fraction", notional_fraction),
    ):
        if not math.isfinite(value) or value < 0.0:
            raise ConfigError(f"{name}={value!r}: expected a finite number >= 0")
    _check_rate("fee_rate_per_side", fee_rate_per_side, 0.01)
    _check_rate("slippage_bps", slippage_bps, 1_000.0)
    if not math.isfinite(funding_rate_per_interval):
        raise ConfigError(f"funding_rate_per_interval={funding_rate_per_interval!r}: not finite")
    if not 0.0 <= exposure <= 1.0:
        raise ConfigError(f"exposure={exposure!r}: expected a share of time in [0, 1]")
    trades_per_year = trades_per_month * MONTHS_PER_YEAR
    sides = 2.0 * trades_per_year * notional_fraction
    fees = sides * fee_rate_per_side
    slip = sides * slippage_bps / BPS_PER_UNIT
    funding_times = FUNDING_INTERVALS_PER_DAY * DAYS_PER_YEAR * exposure
    funding = funding_times * funding_rate_per_interval * notional_fraction
    total = fees + slip + funding
    return AnnualCostReport(
        trades_per_year=trades_per_year,
        notional_fraction=notional_fraction,
        fee_rate_per_side=fee_rate_per_side,
        slippage_bps=slippage_bps,
        fees_per_year_fraction=fees,
        slippage_per_year_fraction=slip,
        funding_per_year_fraction=funding,
        total_per_year_fraction=total,
        fees_per_year_percent=format_percent(fees),
        slippage_per_year_percent=format_percent(slip),
        funding_per_year_percent=format_percent(funding),
        total_per_year_percent=format_percent(total),
    )
