"""The shared risk rules (:mod:`atra.core.risk`): the compiled rule against a plain-Python
reference, its use by the backtest (never more positions than allowed, never more than 2% at
risk, the daily loss reset at 00:00 UTC of the signal bar's day) and the ``[risk]`` mapping."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atra.config import RiskConfig
from atra.core.backtest.engine import BacktestConfig, run_backtest
from atra.core.costs import CostModel
from atra.core.risk import (
    DAILY_LOSS,
    DAY_MS,
    GUARD_NAMES,
    GUARD_NONE,
    GUARDS,
    PortfolioView,
    RiskLimits,
    check_entry,
    day_start_ms,
    entry_guard_nb,
    kelly_multiplier_of,
    limits_of,
    sizing_of,
)
from atra.core.sizing import RISK_FRACTION_CAP, SizingConfig
from atra.errors import ConfigError

DAY0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
HOUR = 3_600_000
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def reference_guard(
    kill: bool,
    equity: float,
    day_eq: float,
    n_open: int,
    on_symbol: int,
    gross: float,
    notional: float,
    lim: RiskLimits,
) -> str | None:
    """The rules as the live guards wrote them before they moved to the core."""
    if kill:
        return "kill_switch"
    if equity - day_eq <= -lim.max_daily_loss * day_eq:
        return "daily_loss"
    if n_open >= lim.max_open_positions:
        return "max_positions"
    if on_symbol >= lim.max_per_symbol:
        return "max_per_symbol"
    if equity <= 0.0:
        return "leverage"
    if (gross + abs(notional)) / equity > lim.max_gross_leverage * (1.0 + 1e-12):
        return "leverage"
    return None


limits_st = st.builds(
    RiskLimits,
    max_open_positions=st.integers(1, 6),
    max_per_symbol=st.integers(1, 3),
    max_gross_leverage=st.floats(0.1, 5.0),
    max_daily_loss=st.floats(0.001, 1.0),
)


@FAST
@given(
    lim=limits_st,
    kill=st.booleans(),
    equity=st.floats(-1_000.0, 20_000.0),
    day_eq=st.floats(1.0, 20_000.0),
    n_open=st.integers(0, 8),
    on_symbol=st.integers(0, 4),
    gross=st.floats(0.0, 50_000.0),
    notional=st.floats(-20_000.0, 20_000.0),
)
def test_the_compiled_rule_is_the_reference(
    lim: RiskLimits,
    kill: bool,
    equity: float,
    day_eq: float,
    n_open: int,
    on_symbol: int,
    gross: float,
    notional: float,
) -> None:
    code = entry_guard_nb(kill, equity, day_eq, n_open, on_symbol, gross, notional,
                          lim.max_open_positions, lim.max_per_symbol, lim.max_gross_leverage,
                          lim.max_daily_loss)  # fmt: skip
    want = reference_guard(kill, equity, day_eq, n_open, on_symbol, gross, notional, lim)
    assert (None if code == GUARD_NONE else GUARD_NAMES[code]) == want
    view = PortfolioView(equity, day_eq, n_open, {"BTCUSDT": on_symbol}, gross)
    breach = check_entry(
        lim, view, "BTCUSDT", notional, kill_switch="file KILL exists" if kill else None
    )
    assert (None if breach is None else breach.guard) == want
    if breach is not None:
        assert breach.detail
        assert "\n" not in breach.detail


def test_day_boundary_is_midnight_utc() -> None:
    assert day_start_ms(DAY0) == DAY0
    assert day_start_ms(DAY0 + DAY_MS - 1) == DAY0
    assert day_start_ms(DAY0 + DAY_MS) == DAY0 + DAY_MS
    assert day_start_ms(DAY0 - 1) == DAY0 - DAY_MS


# ---- the backtest uses the same rule ---------------------------------------------------------


def _flat_candles(n: int, dip_at: int) -> pd.DataFrame:
    """Hourly bars at 100 from 2024-01-01 00:00 UTC; bar ``dip_at`` trades down to 90."""
    price = np.full(n, 100.0)
    low = price.copy()
    low[dip_at] = 90.0
    return pd.DataFrame(
        {
            "open_time": DAY0 + HOUR * np.arange(n, dtype=np.int64),
            "open": price,
            "high": price,
            "low": low,
            "close": price,
            "volume": np.ones(n),
        }
    )


def _events(ts: list[int]) -> pd.DataFrame:
    k = len(ts)
    return pd.DataFrame(
        {
            "symbol": ["AAA"] * k,
            "t": ts,
            "side": [1] * k,
            "sl_dist": [5.0] * k,
            "tp1_dist": [10.0] * k,
            "tp2_dist": [20.0] * k,
            "horizon_bars": [5] * k,
        }
    )


def test_the_daily_loss_blocks_the_rest_of_the_utc_day_of_the_signal_bar() -> None:
    """A stop-out at 03:00 loses 2% of 10,000; with a 1% daily loss the 10:00 signal and the
    23:00 one (its entry is at 00:00 of the next day, but it is decided on the first day) are
    blocked; the next day's first signal (00:00) starts from that day's equity and is taken."""
    res = run_backtest(
        {"AAA": _flat_candles(48, dip_at=3)},
        _events([1, 10, 23, 24]),
        BacktestConfig(
            sizing=SizingConfig(risk_fraction=0.02),
            costs=CostModel(maker_fee_rate=0.0, taker_fee_rate=0.0, slippage_bps=0.0),
            max_daily_loss=0.01,
        ),
    )
    assert res.events["blocked_by"].tolist() == [None, DAILY_LOSS, DAILY_LOSS, None]
    assert res.events["outcome"].astype(str).tolist() == [
        "taken", "daily_loss", "daily_loss", "taken"
    ]  # fmt: skip
    assert res.trades["pnl"].iloc[0] == pytest.approx(-200.0)
    assert res.trades["equity_at_entry"].iloc[1] == pytest.approx(9_800.0)
    assert res.blocks_by_guard() == dict.fromkeys(GUARDS, 0) | {DAILY_LOSS: 2}
    # a 3% limit does not bind (two positions per symbol: the 23:00 one is still open)
    loose = run_backtest(
        {"AAA": _flat_candles(48, dip_at=3)},
        _events([1, 10, 23, 24]),
        BacktestConfig(
            sizing=SizingConfig(risk_fraction=0.02),
            costs=CostModel(maker_fee_rate=0.0, taker_fee_rate=0.0, slippage_bps=0.0),
            max_per_symbol=2,
            max_daily_loss=0.03,
        ),
    )
    assert loose.events["blocked_by"].tolist() == [None, None, None, None]


def _random_market(seed: int, n: int, n_sym: int) -> dict[str, pd.DataFrame]:
    out = {}
    for s in range(n_sym):
        rng = np.random.default_rng(seed + s)
        close = 50.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
        open_ = np.concatenate(([50.0], close[:-1]))
        wick = np.abs(rng.normal(0.0, 0.005, (2, n)))
        out[f"S{s}"] = pd.DataFrame(
            {
                "open_time": DAY0 + HOUR * np.arange(n, dtype=np.int64),
                "open": open_,
                "high": np.maximum(open_, close) * (1 + wick[0]),
                "low": np.minimum(open_, close) * (1 - wick[1]),
                "close": close,
                "volume": np.ones(n),
            }
        )
    return out


@FAST
@given(
    seed=st.integers(0, 10_000),
    n_sym=st.integers(1, 4),
    k=st.integers(1, 80),
    lim=limits_st,
    kelly=st.sampled_from(["none", "half", "full"]),
)
def test_backtest_never_exceeds_the_limits_or_the_risk_cap(
    seed: int, n_sym: int, k: int, lim: RiskLimits, kelly: str
) -> None:
    frames = _random_market(seed, 200, n_sym)
    rng = np.random.default_rng(seed + 99)
    sym = rng.choice(sorted(frames), k)
    t = rng.integers(0, 199, k)
    close = np.array([frames[s]["close"].iloc[i] for s, i in zip(sym, t, strict=True)])
    sl = close * rng.uniform(0.001, 0.05, k)
    events = pd.DataFrame(
        {
            "symbol": sym,
            "t": t,
            "side": rng.choice([-1, 1], k),
            "sl_dist": sl,
            "tp1_dist": sl * rng.uniform(0.5, 3.0, k),
            "tp2_dist": sl * 4.0,
            "horizon_bars": rng.integers(1, 40, k),
            "p_take": rng.uniform(0.0, 1.0, k),
        }
    )
    risk = RiskConfig(
        risk_per_trade=0.02,
        kelly=kelly,  # type: ignore[arg-type]
        max_open_positions=lim.max_open_positions,
        max_per_symbol=lim.max_per_symbol,
        max_gross_leverage=lim.max_gross_leverage,
        max_daily_loss=lim.max_daily_loss,
    )
    res = run_backtest(
        frames,
        events,
        BacktestConfig(
            sizing=sizing_of(risk),
            max_positions=lim.max_open_positions,
            max_per_symbol=lim.max_per_symbol,
            max_gross_leverage=lim.max_gross_leverage,
            max_daily_loss=lim.max_daily_loss,
            probability_column=None if kelly == "none" else "p_take",
        ),
    )
    assert int(res.n_open.max(initial=0)) <= lim.max_open_positions
    tr = res.trades
    assert np.all(tr["risk_amount"] <= RISK_FRACTION_CAP * tr["equity_at_entry"] * (1 + 1e-12))
    for s, grp in tr.groupby("symbol"):
        entries = grp["entry_time_ms"].to_numpy()
        exits = grp["exit_time_ms"].to_numpy()
        for e in entries:  # positions of the symbol open when this one entered, itself included
            assert int(np.sum((entries <= e) & (exits > e))) <= lim.max_per_symbol, s
    blocked = res.events.loc[res.events["outcome"] != "taken", "blocked_by"]
    assert set(blocked) <= {*GUARDS, "sizing", "no_entry_bar"} - {"kill_switch"}
    assert res.events.loc[res.events["outcome"] == "taken", "blocked_by"].isna().all()


# ---- the [risk] keys --------------------------------------------------------------------------


def test_the_risk_section_maps_onto_limits_and_sizing() -> None:
    risk = RiskConfig(risk_per_trade=0.015, kelly="full", max_open_positions=4,
                      max_per_symbol=2, max_gross_leverage=2.5, max_daily_loss=0.03)  # fmt: skip
    assert limits_of(risk) == RiskLimits(4, 2, 2.5, 0.03)
    sizing = sizing_of(risk)
    assert (sizing.risk_fraction, sizing.kelly_multiplier, sizing.max_leverage) == (0.015, 1.0, 2.5)
    assert sizing.risk_fraction_cap == RISK_FRACTION_CAP
    assert kelly_multiplier_of("half") == 0.5
    assert kelly_multiplier_of("none") is None
    with pytest.raises(ConfigError, match=r"risk\.kelly = 'quarter'"):
        kelly_multiplier_of("quarter")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_open_positions": 0}, "max_open_positions"),
        ({"max_gross_leverage": math.nan}, "max_gross_leverage"),
        ({"max_daily_loss": 0.0}, "max_daily_loss"),
    ],
)
def test_bad_limits(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        RiskLimits(**kwargs)  # type: ignore[arg-type]
