"""Risk guards: each limit refuses an entry, in a fixed order, with a one-line reason."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from atra.config import RiskConfig
from atra.errors import ConfigError, RiskLimitBreached
from atra.live.guards import (
    DAILY_LOSS,
    GUARDS,
    KILL_SWITCH,
    LEVERAGE,
    MAX_PER_SYMBOL,
    MAX_POSITIONS,
    GuardLimits,
    PortfolioView,
    RiskGuards,
    day_start_ms,
)


@pytest.fixture
def kill_file(tmp_path: Path) -> Path:
    return tmp_path / "KILL"


@pytest.fixture
def guards(kill_file: Path) -> RiskGuards:
    return RiskGuards(
        GuardLimits(
            max_open_positions=3,
            max_per_symbol=1,
            max_gross_leverage=2.0,
            max_daily_loss=0.05,
            kill_switch_file=kill_file,
        )
    )


def _view(**kw: object) -> PortfolioView:
    base: dict[str, object] = {
        "equity": 10_000.0,
        "day_start_equity": 10_000.0,
        "open_positions": 0,
        "open_by_symbol": {},
        "gross_notional": 0.0,
    }
    base.update(kw)
    return PortfolioView(**base)  # type: ignore[arg-type]


def test_a_healthy_book_passes(guards: RiskGuards) -> None:
    assert guards.check_entry(_view(), "BTCUSDT", 5_000.0) is None
    assert not guards.kill_switch_engaged()


@pytest.mark.parametrize(
    ("view", "notional", "guard"),
    [
        (_view(equity=9_500.0), 100.0, DAILY_LOSS),
        (_view(equity=9_400.0, open_positions=3), 100.0, DAILY_LOSS),
        (_view(open_positions=3), 100.0, MAX_POSITIONS),
        (_view(open_positions=1, open_by_symbol={"BTCUSDT": 1}), 100.0, MAX_PER_SYMBOL),
        (_view(gross_notional=15_000.0), 5_001.0, LEVERAGE),
        (_view(equity=0.0, day_start_equity=-100.0), 1.0, LEVERAGE),
    ],
)
def test_each_guard_refuses(
    guards: RiskGuards, view: PortfolioView, notional: float, guard: str
) -> None:
    breach = guards.check_entry(view, "BTCUSDT", notional)
    assert breach is not None
    assert breach.guard == guard
    assert guard in GUARDS
    err = breach.error()
    assert isinstance(err, RiskLimitBreached)
    assert str(err).startswith(f"{guard}: ")
    assert "\n" not in str(err)


def test_leverage_at_the_limit_is_allowed(guards: RiskGuards) -> None:
    assert guards.check_entry(_view(gross_notional=15_000.0), "ETHUSDT", 5_000.0) is None
    assert guards.check_entry(_view(open_by_symbol={"BTCUSDT": 1}), "ETHUSDT", 1.0) is None


def test_kill_switch_comes_first(guards: RiskGuards, kill_file: Path) -> None:
    kill_file.write_text("stop")
    assert guards.kill_switch_engaged()
    breach = guards.check_entry(_view(equity=1.0, open_positions=99), "BTCUSDT", 1e9)
    assert breach is not None
    assert breach.guard == KILL_SWITCH
    assert str(kill_file) in breach.detail
    kill_file.unlink()
    assert guards.check_entry(_view(), "BTCUSDT", 1.0) is None


def test_no_kill_switch_file_configured() -> None:
    assert not RiskGuards(GuardLimits()).kill_switch_engaged()


def test_from_config_resolves_relative_kill_switch(tmp_path: Path) -> None:
    risk = RiskConfig(max_open_positions=7, max_gross_leverage=1.5, max_daily_loss=0.1)
    limits = GuardLimits.from_config(risk, base_dir=tmp_path)
    assert limits.kill_switch_file == tmp_path / "KILL"
    assert (limits.max_open_positions, limits.max_per_symbol) == (7, 1)
    assert limits.max_gross_leverage == 1.5
    assert limits.max_daily_loss == 0.1
    absolute = RiskConfig(kill_switch_file=tmp_path / "STOP")
    assert GuardLimits.from_config(absolute, base_dir=Path("/x")).kill_switch_file == (
        tmp_path / "STOP"
    )
    assert GuardLimits.from_config(risk).kill_switch_file == Path("KILL")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_open_positions": 0}, "max_open_positions"),
        ({"max_per_symbol": 0}, "max_per_symbol"),
        ({"max_gross_leverage": 0.0}, "max_gross_leverage"),
        ({"max_gross_leverage": math.inf}, "max_gross_leverage"),
        ({"max_daily_loss": 0.0}, "max_daily_loss"),
        ({"max_daily_loss": 1.5}, "max_daily_loss"),
    ],
)
def test_bad_limits(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        GuardLimits(**kwargs)  # type: ignore[arg-type]


def test_day_start() -> None:
    assert day_start_ms(1_704_067_200_000 + 5 * 3_600_000) == 1_704_067_200_000
    assert day_start_ms(1_704_067_200_000) == 1_704_067_200_000
    assert _view(equity=9_000.0).daily_pnl == -1_000.0
