"""Cost model, funding and the annual cost report (fraction AND unambiguous percent)."""

from __future__ import annotations

import json
import math

import pytest

from atra.core.costs import (
    ANNUAL_COST_UNIT,
    CostBreakdown,
    CostModel,
    annual_cost_report,
    format_percent,
    funding_paid,
    funding_payment,
)
from atra.core.stats.trades import TradeRecord
from atra.errors import ConfigError, DataError


def test_seed_case_108_percent_of_equity_per_year() -> None:
    rep = annual_cost_report(150, 0.0003)
    assert rep.fees_per_year_fraction == pytest.approx(150 * 12 * 2 * 0.0003)
    assert rep.fees_per_year_fraction == pytest.approx(1.08)
    assert rep.fees_per_year_percent == "108.0%"
    assert rep.unit == ANNUAL_COST_UNIT == "fraction of equity per year"
    assert rep.trades_per_year == 1800
    assert "108.0% of equity per year" in rep.describe()
    assert "1.0800 x equity" in rep.describe()
    assert rep.total_per_year_percent == "108.0%"
    d = rep.to_dict()
    assert d["fees_per_year_fraction"] == pytest.approx(1.08)
    assert d["fees_per_year_percent"] == "108.0%"
    assert d["unit"] == "fraction of equity per year"
    json.dumps(d, allow_nan=False)


def test_annual_report_slippage_funding_and_partial_notional() -> None:
    rep = annual_cost_report(
        10,
        0.0004,
        notional_fraction=0.5,
        slippage_bps=2.0,
        funding_rate_per_interval=0.0001,
        exposure=0.25,
    )
    sides = 2 * 120 * 0.5
    assert rep.fees_per_year_fraction == pytest.approx(sides * 0.0004)
    assert rep.slippage_per_year_fraction == pytest.approx(sides * 2.0 / 10_000)
    assert rep.funding_per_year_fraction == pytest.approx(3 * 365 * 0.25 * 0.0001 * 0.5)
    assert rep.total_per_year_fraction == pytest.approx(
        rep.fees_per_year_fraction + rep.slippage_per_year_fraction + rep.funding_per_year_fraction
    )
    assert rep.slippage_per_year_percent == format_percent(rep.slippage_per_year_fraction)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"trades_per_month": -1.0, "fee_rate_per_side": 0.0004}, "trades_per_month"),
        ({"trades_per_month": 1.0, "fee_rate_per_side": 0.03}, "fee_rate_per_side"),
        ({"trades_per_month": 1.0, "fee_rate_per_side": 0.0004, "exposure": 2.0}, "exposure"),
        (
            {"trades_per_month": 1.0, "fee_rate_per_side": 0.0004, "notional_fraction": math.nan},
            "notional_fraction",
        ),
        (
            {
                "trades_per_month": 1.0,
                "fee_rate_per_side": 0.0004,
                "funding_rate_per_interval": math.inf,
            },
            "funding_rate",
        ),
    ],
)
def test_annual_report_rejects_bad_input(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        annual_cost_report(**kwargs)


@pytest.mark.parametrize(
    ("fraction", "text"), [(1.08, "108.0%"), (0.0108, "1.1%"), (0.0, "0.0%"), (math.nan, "nan")]
)
def test_format_percent(fraction: float, text: str) -> None:
    assert format_percent(fraction) == text


def test_cost_model_fill_costs() -> None:
    m = CostModel(maker_fee_rate=0.0002, taker_fee_rate=0.0004, slippage_bps=5.0)
    assert m.fee(10_000.0) == pytest.approx(4.0)
    assert m.fee(-10_000.0, maker=True) == pytest.approx(2.0)
    assert m.slippage(10_000.0) == pytest.approx(5.0)
    assert m.fill_price(100.0, buy=True) == pytest.approx(100.05)
    assert m.fill_price(100.0, buy=False) == pytest.approx(99.95)
    assert m.round_trip_fraction() == pytest.approx(0.0004 * 2 + 0.001)
    assert m.round_trip_fraction(maker_entry=True) == pytest.approx(0.0006 + 0.001)


@pytest.mark.parametrize(
    "kwargs", [{"maker_fee_rate": -0.1}, {"taker_fee_rate": 0.5}, {"slippage_bps": math.nan}]
)
def test_cost_model_validation(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError, match=next(iter(kwargs))):
        CostModel(**kwargs)


def test_funding_sign_convention() -> None:
    # positive rate: longs pay, shorts receive
    assert funding_payment(2.0, 100.0, 0.0001) == pytest.approx(0.02)
    assert funding_payment(-2.0, 100.0, 0.0001) == pytest.approx(-0.02)
    assert funding_paid(1.0, [100.0, 110.0], [0.0001, -0.0002]) == pytest.approx(0.01 - 0.022)
    with pytest.raises(DataError, match="2 mark prices but 1 funding"):
        funding_paid(1.0, [100.0, 110.0], [0.0001])


def test_cost_breakdown_from_trades() -> None:
    trades = [
        TradeRecord("A", 1.0, 100.0, 101.0, 0, 1, 0.5, fees=0.08, slippage=0.02, funding=0.01),
        TradeRecord("B", 2.0, 50.0, 49.0, 0, 1, -2.2, fees=0.08, slippage=0.0, funding=-0.03),
    ]
    b = CostBreakdown.from_trades(trades, reference_equity=1_000.0)
    assert b.fees == pytest.approx(0.16)
    assert b.slippage == pytest.approx(0.02)
    assert b.funding == pytest.approx(-0.02)
    assert b.total == pytest.approx(0.16)
    assert b.fees_fraction == pytest.approx(0.00016)
    assert b.total_fraction == pytest.approx(0.00016)
    assert b.to_dict()["total"] == pytest.approx(0.16)
    assert b.borrow == 0.0
    with pytest.raises(DataError, match="reference_equity"):
        CostBreakdown.from_trades(trades, reference_equity=0.0)
    short = TradeRecord("C", 1.0, 100.0, 99.0, 0, 1, 0.8, fees=0.08, borrow=0.12)
    c = CostBreakdown.from_trades([*trades, short], reference_equity=1_000.0)
    assert c.borrow == pytest.approx(0.12)
    assert c.total == pytest.approx(0.24 + 0.02 - 0.02 + 0.12)
    assert c.to_dict()["borrow"] == pytest.approx(0.12)
