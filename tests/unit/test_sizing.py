"""Position sizing: Kelly seeds, the hard 2% risk cap, leverage and lot rounding."""

from __future__ import annotations

import math
from decimal import ROUND_DOWN, ROUND_UP, Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atra.core.sizing import (
    CAPPED_BY_LEVERAGE,
    CAPPED_BY_RISK,
    RISK_FRACTION_CAP,
    LotFilter,
    SizingConfig,
    kelly_fraction,
    kelly_from_probability,
    kelly_from_stats,
    kelly_from_trades,
    payoff_ratio,
    price_to_decimal,
    quantity_to_decimal,
    size_position,
)
from atra.errors import ConfigError, DataError


@pytest.mark.parametrize(
    ("win_rate", "avg_win", "avg_loss", "full", "half"),
    [
        (0.72, 150.0, 100.0, 0.533333, 0.266667),
        (0.50, 200.0, 100.0, 0.25, 0.125),
        (0.40, 100.0, 100.0, -0.2, -0.1),
        (0.60, 100.0, -50.0, 0.4, 0.2),  # avg_loss of either sign
    ],
)
def test_kelly_from_stats_seed_cases(
    win_rate: float, avg_win: float, avg_loss: float, full: float, half: float
) -> None:
    r = avg_win / abs(avg_loss)
    assert kelly_from_stats(win_rate, avg_win, avg_loss) == pytest.approx(
        win_rate - (1 - win_rate) / r
    )
    assert kelly_from_stats(win_rate, avg_win, avg_loss) == pytest.approx(full, abs=1e-6)
    assert 0.5 * kelly_from_stats(win_rate, avg_win, avg_loss) == pytest.approx(half, abs=1e-6)


def test_kelly_seed_is_capped_to_two_percent_risk() -> None:
    f = kelly_from_stats(0.72, 150.0, 100.0)
    d = size_position(10_000.0, 100.0, 95.0, kelly=f)
    assert d.kelly_fraction == pytest.approx(0.533333, abs=1e-6)
    assert d.capped_by == CAPPED_BY_RISK
    assert d.risk_fraction == pytest.approx(0.02)
    assert d.risk_amount == pytest.approx(200.0)
    assert d.quantity == pytest.approx(40.0)
    assert "0.5333" in d.reason
    assert "capped" in d.reason


def test_half_kelly_below_cap_is_used_as_is() -> None:
    cfg = SizingConfig(kelly_multiplier=0.5)
    d = size_position(10_000.0, 100.0, 95.0, kelly=0.03, config=cfg)
    assert d.capped_by is None
    assert d.risk_fraction == pytest.approx(0.015)
    assert d.quantity == pytest.approx(0.015 * 10_000 / 5)


@pytest.mark.parametrize(
    ("p", "b", "expected"),
    [(0.6, 2.0, 0.4), (0.5, 1.0, 0.0), (0.3, 2.0, -0.05), (0.55, 1.5, 0.55 - 0.45 / 1.5)],
)
def test_kelly_from_probability(p: float, b: float, expected: float) -> None:
    assert kelly_from_probability(p, b) == pytest.approx(expected)


def test_payoff_ratio_from_tp_sl() -> None:
    assert payoff_ratio(100.0, 106.0, 97.0) == pytest.approx(2.0)
    assert payoff_ratio(100.0, 94.0, 103.0) == pytest.approx(2.0)  # short
    with pytest.raises(DataError, match="no risk distance"):
        payoff_ratio(100.0, 106.0, 100.0)


@pytest.mark.parametrize("kelly", [0.0, -0.05, -math.inf])
def test_non_positive_kelly_means_no_trade(kelly: float) -> None:
    d = size_position(10_000.0, 100.0, 95.0, kelly=kelly)
    assert d.quantity == 0.0
    assert not d.tradeable
    assert "no edge" in d.reason


def test_undefined_kelly_means_no_trade() -> None:
    d = size_position(10_000.0, 100.0, 95.0, kelly=math.nan)
    assert d.quantity == 0.0
    assert "undefined" in d.reason


@pytest.mark.parametrize(
    ("win_rate", "payoff"), [(1.5, 2.0), (math.nan, 2.0), (0.6, 0.0), (0.6, -1.0), (0.6, math.nan)]
)
def test_kelly_fraction_undefined(win_rate: float, payoff: float) -> None:
    assert math.isnan(kelly_fraction(win_rate, payoff))


def test_kelly_with_infinite_payoff_is_win_rate() -> None:
    assert kelly_fraction(0.7, math.inf) == 0.7
    assert kelly_from_stats(0.7, 10.0, 0.0) == 0.7
    assert math.isnan(kelly_from_stats(0.7, 0.0, 0.0))


def test_kelly_from_trades_rolling_window() -> None:
    old = [-100.0] * 50  # outside the window: ignored
    recent = [150.0] * 72 + [-100.0] * 28
    assert kelly_from_trades(old + recent, window=100) == pytest.approx(0.72 - 0.28 / 1.5)
    assert kelly_from_trades(old + recent, window=150) == pytest.approx(0.48 - 0.52 / 1.5)
    assert math.isnan(kelly_from_trades(recent[:10], min_trades=30))
    assert kelly_from_trades([5.0] * 40) == 1.0  # all wins: W = 1
    assert kelly_from_trades([0.0] * 40) == 0.0
    assert kelly_from_trades([-1.0] * 40) == -1.0
    with pytest.raises(ConfigError, match="window"):
        kelly_from_trades(recent, window=0)


def test_fixed_fractional_default_two_percent() -> None:
    d = size_position(10_000.0, 100.0, 95.0)
    assert d.quantity == pytest.approx(40.0)
    assert d.notional == pytest.approx(4_000.0)
    assert d.risk_amount == pytest.approx(200.0)
    assert d.risk_fraction == pytest.approx(0.02)
    assert d.kelly_fraction is None
    assert d.capped_by is None
    assert d.to_dict()["quantity"] == pytest.approx(40.0)


def test_short_stop_above_entry() -> None:
    d = size_position(10_000.0, 100.0, 104.0, config=SizingConfig(risk_fraction=0.01))
    assert d.quantity == pytest.approx(100.0 / 4.0)
    assert d.risk_amount == pytest.approx(100.0)


def test_fees_count_in_the_risk() -> None:
    d = size_position(10_000.0, 100.0, 95.0, config=SizingConfig(fee_rate=0.001))
    per_unit = 5.0 + 0.001 * (100.0 + 95.0)
    assert d.quantity == pytest.approx(200.0 / per_unit)
    assert d.risk_amount == pytest.approx(200.0)


def test_leverage_cap_shrinks_quantity() -> None:
    d = size_position(10_000.0, 100.0, 99.9)  # 200 / 0.1 = 2,000 units = 20x notional
    assert d.capped_by == CAPPED_BY_LEVERAGE
    assert d.quantity == pytest.approx(100.0)
    assert d.notional == pytest.approx(10_000.0)
    assert d.risk_amount == pytest.approx(10.0)
    d3 = size_position(10_000.0, 100.0, 99.9, config=SizingConfig(max_leverage=3.0))
    assert d3.quantity == pytest.approx(300.0)


def test_lowered_cap_binds_kelly() -> None:
    cfg = SizingConfig(risk_fraction=0.005, risk_fraction_cap=0.01)
    d = size_position(10_000.0, 100.0, 95.0, kelly=0.5, config=cfg)
    assert d.risk_fraction == pytest.approx(0.01)
    assert d.capped_by == CAPPED_BY_RISK


def test_lot_step_rounds_down() -> None:
    lot = LotFilter(step_size=0.003)
    d = size_position(10_000.0, 30_000.0, 29_000.0, lot=lot)  # raw 0.2
    assert d.quantity == pytest.approx(0.198)
    assert d.risk_amount <= 200.0
    d2 = size_position(10_000.0, 30_000.0, 29_000.0, lot=LotFilter(step_size=0.1))
    assert d2.quantity == pytest.approx(0.2)  # 0.2 / 0.1 must not become 1.9999 -> 0.1


@pytest.mark.parametrize(
    ("lot", "reason"),
    [
        (LotFilter(step_size=0.001, min_notional=10_000.0), "min_notional"),
        (LotFilter(step_size=0.001, min_qty=0.5), "min_qty"),
        (LotFilter(step_size=1.0), "min_qty"),  # rounds to 0
        (LotFilter(min_notional=10_000.0), "min_notional"),  # no step: no rounding
    ],
)
def test_below_exchange_minimum_means_no_trade(lot: LotFilter, reason: str) -> None:
    d = size_position(10_000.0, 30_000.0, 29_000.0, lot=lot)
    assert d.quantity == 0.0
    assert reason in d.reason


def test_no_equity_no_trade() -> None:
    assert size_position(0.0, 100.0, 95.0).quantity == 0.0
    assert size_position(-5.0, 100.0, 95.0).reason.startswith("equity")


@pytest.mark.parametrize(
    ("equity", "entry", "stop", "message"),
    [
        (math.nan, 100.0, 95.0, "equity"),
        (1_000.0, math.inf, 95.0, "entry_price"),
        (1_000.0, 100.0, 100.0, "no risk distance"),
        (1_000.0, 100.0, -5.0, "must be > 0"),
    ],
)
def test_bad_prices_are_data_errors(equity: float, entry: float, stop: float, message: str) -> None:
    with pytest.raises(DataError, match=message):
        size_position(equity, entry, stop)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"risk_fraction_cap": 0.03}, "never raised"),
        ({"risk_fraction_cap": 0.0}, "risk_fraction_cap"),
        ({"risk_fraction_cap": math.nan}, "risk_fraction_cap"),
        ({"risk_fraction": 0.03}, "risk_fraction="),
        ({"risk_fraction": 0.015, "risk_fraction_cap": 0.01}, "risk_fraction="),
        ({"kelly_multiplier": 0.0}, "kelly_multiplier"),
        ({"kelly_multiplier": 1.5}, "kelly_multiplier"),
        ({"max_leverage": 0.0}, "max_leverage"),
        ({"fee_rate": 0.5}, "fee_rate"),
    ],
)
def test_config_cannot_raise_the_cap(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SizingConfig(**kwargs)


def test_cap_constant() -> None:
    assert RISK_FRACTION_CAP == 0.02
    assert SizingConfig().risk_fraction_cap == 0.02


def test_lot_filter_validation() -> None:
    with pytest.raises(ConfigError, match="step_size"):
        LotFilter(step_size=-1.0)


def test_decimal_helpers() -> None:
    assert quantity_to_decimal(0.123456, "0.001") == Decimal("0.123")
    assert quantity_to_decimal(0.3, 0.1) == Decimal("0.3")
    assert quantity_to_decimal(5.0, Decimal("1")) == Decimal("5")
    assert price_to_decimal(101.2351, 0.01) == Decimal("101.24")
    assert price_to_decimal(101.2351, "0.01", ROUND_DOWN) == Decimal("101.23")
    assert price_to_decimal(101.2301, "0.01", ROUND_UP) == Decimal("101.24")
    with pytest.raises(ConfigError, match="step_size"):
        quantity_to_decimal(1.0, 0)
    with pytest.raises(DataError, match="quantity"):
        quantity_to_decimal(-1.0, "0.1")
    with pytest.raises(ConfigError, match="tick_size"):
        price_to_decimal(1.0, "0")
    with pytest.raises(DataError, match="price"):
        price_to_decimal(math.nan, "0.1")


@settings(max_examples=300, deadline=None)
@given(
    equity=st.floats(min_value=1e-2, max_value=1e9),
    entry=st.floats(min_value=1e-6, max_value=1e6),
    stop_ratio=st.floats(min_value=1e-4, max_value=0.99) | st.floats(min_value=1.0001, max_value=5),
    kelly=st.none() | st.floats(allow_nan=True, allow_infinity=True),
    cap=st.floats(min_value=1e-4, max_value=0.02),
    leverage=st.floats(min_value=0.1, max_value=125.0),
    fee=st.floats(min_value=0.0, max_value=0.005),
    step=st.sampled_from([0.0, 1e-8, 0.001, 0.1, 1.0, 0.003]),
)
def test_property_risk_never_exceeds_cap(
    equity: float,
    entry: float,
    stop_ratio: float,
    kelly: float | None,
    cap: float,
    leverage: float,
    fee: float,
    step: float,
) -> None:
    cfg = SizingConfig(
        risk_fraction=cap, risk_fraction_cap=cap, max_leverage=leverage, fee_rate=fee
    )
    lot = LotFilter(step_size=step) if step else None
    d = size_position(equity, entry, entry * stop_ratio, config=cfg, kelly=kelly, lot=lot)
    assert d.quantity >= 0.0
    assert d.risk_amount <= RISK_FRACTION_CAP * equity * (1 + 1e-9)
    assert d.risk_amount <= cap * equity * (1 + 1e-9)
    assert d.notional <= leverage * equity * (1 + 1e-9)
