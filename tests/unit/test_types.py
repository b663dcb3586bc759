from __future__ import annotations

import pytest

from atra.core.types import Market, Side, Timeframe
from atra.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "minutes", "bars_per_year"),
    [
        ("1m", 1, 525_600),
        ("5m", 5, 105_120),
        ("1h", 60, 8_760),
        ("4h", 240, 2_190),
        ("1d", 1440, 365),
    ],
)
def test_timeframe_minutes_and_365_day_year(text: str, minutes: int, bars_per_year: int) -> None:
    tf = Timeframe.parse(text)
    assert tf.minutes == minutes
    assert tf.ms == minutes * 60_000
    assert tf.bars_per_year == bars_per_year
    assert tf.annualization_factor == pytest.approx(bars_per_year**0.5)
    assert str(tf) == text
    assert Timeframe.from_ms(tf.ms) is tf


def test_never_252() -> None:
    assert all(tf.bars_per_year % 252 != 0 or tf.bars_per_year % 365 == 0 for tf in Timeframe)
    assert Timeframe.D1.bars_per_year == 365


def test_bad_timeframe_is_one_line_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown timeframe '7h'"):
        Timeframe.parse("7h")
    with pytest.raises(ConfigError, match="no timeframe"):
        Timeframe.from_ms(7)


def test_market_and_side() -> None:
    assert Market.parse("SPOT") is Market.SPOT
    assert Market.parse("futures") is Market.PERP
    assert str(Market.PERP) == "perp"
    with pytest.raises(ConfigError, match="unknown market 'options'"):
        Market.parse("options")
    assert int(Side.LONG) == 1
    assert int(Side.SHORT) == -1
