"""Performance statistics: hand-computed cases, edge cases, and a cross-check with empyrical."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from atra.core.stats.report import compute_stats, exposure_from_trades
from atra.core.stats.returns import (
    EULER_MASCHERONI,
    deflated_sharpe_ratio,
    equity_stats,
    expected_max_sharpe,
    probabilistic_sharpe_ratio,
    return_stats,
)
from atra.core.stats.trades import TradeRecord, per_symbol_stats, trade_records_of, trade_stats
from atra.core.types import Timeframe
from atra.errors import ConfigError, DataError

H = 3_600_000  # one hour in ms


def _phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _trade(
    pnl: float,
    symbol: str = "BTCUSDT",
    *,
    qty: float = 1.0,
    entry: float = 100.0,
    exit_: float = 100.0,
    t0: int = 0,
    t1: int = H,
    fees: float = 0.0,
    slippage: float = 0.0,
    funding: float = 0.0,
) -> TradeRecord:
    return TradeRecord(symbol, qty, entry, exit_, t0, t1, pnl, fees, slippage, funding)


# ------------------------------------------------------------------------------------------
# hand-computed return statistics


def test_hand_computed_daily_case() -> None:
    eq = [100.0, 110.0, 99.0, 108.9]  # returns +10%, -10%, +10%
    s = equity_stats(eq, Timeframe.D1)
    m = (0.1 - 0.1 + 0.1) / 3
    var = ((0.1 - m) ** 2 * 2 + (-0.1 - m) ** 2) / 2
    assert s.n_returns == 3
    assert s.bars_per_year == 365
    assert s.annualization_factor == pytest.approx(math.sqrt(365))
    assert s.total_return == pytest.approx(0.089)
    assert s.years == pytest.approx(3 / 365)
    assert s.cagr == pytest.approx(1.089 ** (365 / 3) - 1, rel=1e-9)
    assert s.volatility == pytest.approx(math.sqrt(var) * math.sqrt(365))
    assert s.sharpe == pytest.approx(m / math.sqrt(var) * math.sqrt(365))
    assert s.sharpe == pytest.approx(5.51514, abs=1e-5)
    downside = math.sqrt((0.0 + 0.01 + 0.0) / 3)
    assert s.sortino == pytest.approx(m / downside * math.sqrt(365))
    assert s.max_drawdown == pytest.approx(-0.1)
    # peak at bar 1, still under water at the last bar (3): 2 bars, not recovered
    assert s.max_drawdown_bars == 2
    assert s.max_drawdown_days == pytest.approx(2.0)
    assert s.max_drawdown_recovered is False
    assert s.calmar == pytest.approx(s.cagr / 0.1)


def test_hourly_annualisation_is_8760_not_252() -> None:
    r = [0.01, -0.005, 0.002, 0.003]
    s = return_stats(r, Timeframe.H1)
    d = return_stats(r, Timeframe.D1)
    assert s.bars_per_year == 8760
    assert s.annualization_factor == pytest.approx(math.sqrt(8760))
    assert s.sharpe / d.sharpe == pytest.approx(math.sqrt(8760 / 365))
    per_bar = np.mean(r) / np.std(r, ddof=1)
    assert s.sharpe == pytest.approx(per_bar * math.sqrt(8760))
    assert d.sharpe != pytest.approx(per_bar * math.sqrt(252))


def test_drawdown_durations_two_spells() -> None:
    eq = [1, 2, 1, 1.5, 2, 2.5, 2, 1.9, 2.0, 2.4, 2.6]
    s = equity_stats(eq, Timeframe.H4)
    assert s.max_drawdown == pytest.approx(-0.5)
    assert s.max_drawdown_bars == 3  # peak bar 1 -> recovery bar 4
    assert s.max_drawdown_recovered is True
    assert s.longest_drawdown_bars == 5  # peak bar 5 -> recovery bar 10
    assert s.longest_drawdown_days == pytest.approx(5 * 4 / 24)
    assert s.max_drawdown_days == pytest.approx(3 * 4 / 24)


def test_return_stats_equals_equity_stats_of_compounded_curve() -> None:
    r = np.array([0.02, -0.01, 0.005, -0.03, 0.04])
    eq = 250.0 * np.concatenate(([1.0], np.cumprod(1 + r)))
    a = return_stats(r, Timeframe.H1)
    b = equity_stats(pd.Series(eq), Timeframe.H1)
    for field in ("total_return", "cagr", "sharpe", "sortino", "max_drawdown", "skew", "psr"):
        assert getattr(a, field) == pytest.approx(getattr(b, field), rel=1e-10)


# ------------------------------------------------------------------------------------------
# edge cases


def test_zero_variance_sharpe_is_nan_not_inf() -> None:
    flat = equity_stats([5.0, 5.0, 5.0, 5.0], Timeframe.H1)
    assert math.isnan(flat.sharpe)
    assert math.isnan(flat.sortino)
    assert math.isnan(flat.calmar)
    assert math.isnan(flat.psr)
    assert flat.max_drawdown == 0.0
    assert flat.max_drawdown_bars == 0
    assert flat.volatility == 0.0
    # constant growth rebuilt from equity has float noise in its std: still undefined
    growth = equity_stats(100.0 * 1.01 ** np.arange(50), Timeframe.D1)
    assert math.isnan(growth.sharpe)
    assert math.isnan(growth.sortino)  # no losing bar: downside deviation 0
    d = growth.to_dict()
    assert d["sharpe"] is None
    json.dumps(d, allow_nan=False)


def test_cagr_overflow_is_inf() -> None:
    s = return_stats([0.0, 0.5], Timeframe.H1)
    assert s.cagr == math.inf
    assert s.total_return == pytest.approx(0.5)


def test_single_return_has_no_sharpe() -> None:
    s = return_stats([0.01], Timeframe.D1)
    assert math.isnan(s.sharpe)
    assert s.total_return == pytest.approx(0.01)


@pytest.mark.parametrize(
    ("equity", "message"),
    [
        ([1.0], "at least 2 points"),
        ([1.0, math.nan, 2.0], "row 1"),
        ([1.0, 2.0, 0.0, 1.0], "row 2"),  # zero, then not zero: no liquidation
        ([1.0, 2.0, -1.0], "row 2"),
        ([0.0, 0.0], "row 0"),
        ([[1.0, 2.0]], "1-D"),
    ],
)
def test_bad_equity_is_a_one_line_data_error(equity: object, message: str) -> None:
    with pytest.raises(DataError, match=message):
        equity_stats(equity, Timeframe.H1)  # type: ignore[arg-type]


@pytest.mark.parametrize(("returns", "message"), [([], "at least 1"), ([0.1, -1.0], "row 1")])
def test_bad_returns(returns: list[float], message: str) -> None:
    with pytest.raises(DataError, match=message):
        return_stats(returns, Timeframe.H1)


# ------------------------------------------------------------------------------------------
# PSR / DSR


def test_psr_hand_computed() -> None:
    # normal returns (skew 0, kurtosis 3), per-bar SR 0.1 over 101 bars against 0
    z = 0.1 * math.sqrt(100) / math.sqrt(1 - 0 * 0.1 + (3 - 1) / 4 * 0.1**2)
    assert probabilistic_sharpe_ratio(0.1, 0.0, 101, 0.0, 3.0) == pytest.approx(_phi(z))
    assert probabilistic_sharpe_ratio(0.1, 0.0, 101, 0.0, 3.0) == pytest.approx(0.8407, abs=1e-4)
    assert probabilistic_sharpe_ratio(0.1, 0.1, 101, 0.0, 3.0) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("args"),
    [(0.1, 0.0, 1, 0.0, 3.0), (math.nan, 0.0, 10, 0.0, 3.0), (2.0, 0.0, 10, 5.0, 3.0)],
)
def test_psr_undefined_is_nan(args: tuple[float, float, int, float, float]) -> None:
    assert math.isnan(probabilistic_sharpe_ratio(*args))


def test_dsr_paper_example() -> None:
    # Bailey & Lopez de Prado (2014): SR 2.5 a year on 1,250 daily returns, skew -3,
    # kurtosis 10, 100 trials with an annualised Sharpe variance of 0.5 -> SR0 ~ 0.1132 a day
    sr = 2.5 / math.sqrt(250)
    v = 0.5 / 250
    g = EULER_MASCHERONI
    from statistics import NormalDist

    inv = NormalDist().inv_cdf
    sr0 = math.sqrt(v) * ((1 - g) * inv(1 - 1 / 100) + g * inv(1 - 1 / (100 * math.e)))
    assert expected_max_sharpe(100, v) == pytest.approx(sr0)
    assert sr0 == pytest.approx(0.1132, abs=1e-4)
    z = (sr - sr0) * math.sqrt(1249) / math.sqrt(1 + 3 * sr + (10 - 1) / 4 * sr**2)
    dsr = deflated_sharpe_ratio(sr, 1250, -3.0, 10.0, 100, v)
    assert dsr == pytest.approx(_phi(z))
    assert dsr == pytest.approx(0.90, abs=2e-3)


def test_expected_max_sharpe_single_trial_and_errors() -> None:
    assert expected_max_sharpe(1, 4.0) == 0.0
    with pytest.raises(ConfigError, match="n_trials"):
        expected_max_sharpe(0, 1.0)
    with pytest.raises(ConfigError, match="variance"):
        expected_max_sharpe(5, -1.0)


def test_psr_and_dsr_in_return_stats_use_annualised_inputs() -> None:
    r = np.random.default_rng(7).standard_t(5, 2000) * 0.01 + 0.0004
    s = return_stats(r, Timeframe.H1, benchmark_sharpe=1.0, n_trials=50, trials_sharpe_variance=2.0)
    sr_bar = r.mean() / r.std(ddof=1)
    skew = float(scipy.stats.skew(r))
    kurt = float(scipy.stats.kurtosis(r, fisher=False))
    assert s.skew == pytest.approx(skew)
    assert s.kurtosis == pytest.approx(kurt)
    ann = math.sqrt(8760)
    assert s.psr == pytest.approx(probabilistic_sharpe_ratio(sr_bar, 1.0 / ann, 2000, skew, kurt))
    sr0_bar = expected_max_sharpe(50, 2.0 / 8760)
    assert s.expected_max_sharpe == pytest.approx(sr0_bar * ann)
    assert s.expected_max_sharpe == pytest.approx(expected_max_sharpe(50, 2.0))
    assert s.dsr == pytest.approx(probabilistic_sharpe_ratio(sr_bar, sr0_bar, 2000, skew, kurt))
    assert s.dsr < s.psr or s.expected_max_sharpe < 1.0


# ------------------------------------------------------------------------------------------
# trades


def test_trade_stats_hand_computed() -> None:
    trades = [_trade(p, fees=1.0, slippage=0.5, funding=0.25) for p in (150, -100, 150, 0, -50)]
    ts = trade_stats(trades)
    assert (ts.n_trades, ts.wins, ts.losses) == (5, 2, 2)
    assert ts.win_rate == pytest.approx(0.4)
    assert ts.avg_win == pytest.approx(150.0)
    assert ts.avg_loss == pytest.approx(75.0)
    assert ts.payoff_ratio == pytest.approx(2.0)
    assert ts.profit_factor == pytest.approx(300 / 150)
    assert ts.expectancy == pytest.approx(150 / 5)
    assert ts.total_pnl == pytest.approx(150.0)
    assert (ts.fees_paid, ts.slippage_paid, ts.funding_paid) == (5.0, 2.5, 1.25)
    assert ts.borrow_paid == 0.0
    spot_short = TradeRecord("S", 1.0, 100.0, 90.0, 0, 1, 9.0, fees=0.5, borrow=0.5)
    both = trade_stats([*trades, spot_short])
    assert both.borrow_paid == 0.5
    (s_row,) = (s for s in per_symbol_stats([*trades, spot_short]) if s.symbol == "S")
    assert s_row.borrow_paid == 0.5


def test_trade_records_of_ten_or_eleven_columns() -> None:
    cols: list[list[object]] = [["A"], [1.0], [10.0], [11.0], [0], [1], [0.9], [0.1], [0.0], [0.0]]
    assert trade_records_of(cols)[0].borrow == 0.0
    assert trade_records_of([*cols, [0.25]])[0].borrow == 0.25
    with pytest.raises(DataError, match="9 columns, expected 10 or 11"):
        trade_records_of(cols[:9])


def test_all_wins_profit_factor_is_inf_and_json_safe() -> None:
    ts = trade_stats([_trade(10.0), _trade(5.0)])
    assert ts.profit_factor == math.inf
    assert math.isnan(ts.avg_loss)
    assert math.isnan(ts.payoff_ratio)
    d = ts.to_dict()
    assert d["profit_factor"] == "inf"
    assert d["avg_loss"] is None
    json.dumps(d, allow_nan=False)


def test_zero_trades() -> None:
    ts = trade_stats([])
    assert ts.n_trades == 0
    for field in ("win_rate", "avg_win", "avg_loss", "profit_factor", "expectancy"):
        assert math.isnan(getattr(ts, field))
    assert ts.total_pnl == 0.0
    rep = compute_stats([1.0, 1.0, 1.0], Timeframe.H1)
    assert rep.exposure == 0.0
    assert rep.trades_per_day == 0.0
    assert rep.per_symbol == ()
    json.dumps(rep.to_dict(), allow_nan=False)


def test_per_symbol_breakdown() -> None:
    trades = [_trade(10, "ETH"), _trade(-5, "BTC"), _trade(20, "ETH", fees=2.0)]
    rows = per_symbol_stats(trades)
    assert [r.symbol for r in rows] == ["BTC", "ETH"]
    btc, eth = rows
    assert (btc.n_trades, btc.win_rate, btc.total_pnl) == (1, 0.0, -5.0)
    assert btc.profit_factor == 0.0  # no win, one loss: 0 / 5
    assert (eth.n_trades, eth.win_rate, eth.total_pnl, eth.fees_paid) == (2, 1.0, 30.0, 2.0)
    assert eth.profit_factor == math.inf


def test_profit_factor_no_win_is_zero() -> None:
    assert trade_stats([_trade(-5.0)]).profit_factor == 0.0


def test_exposure_from_trades_bar_overlap() -> None:
    times = np.arange(10) * H
    trades = [
        _trade(1.0, t0=2 * H, t1=5 * H),  # time exit at the open of bar 5: bars 2, 3, 4
        _trade(1.0, t0=6 * H, t1=8 * H + 1_000),  # exit inside bar 8: bars 6, 7, 8
    ]
    assert exposure_from_trades(trades, times, Timeframe.H1) == pytest.approx(6 / 10)
    with pytest.raises(DataError, match="increasing"):
        exposure_from_trades(trades, times[::-1], Timeframe.H1)
    with pytest.raises(DataError, match="non-empty"):
        exposure_from_trades(trades, [], Timeframe.H1)


def test_compute_stats_report() -> None:
    eq = np.linspace(1000.0, 1100.0, 25)  # 24 hourly returns = one day
    times = np.arange(25) * H
    trades = [
        _trade(30.0, "A", qty=2.0, entry=100.0, exit_=115.0, t0=0, t1=5 * H, fees=0.5),
        _trade(-10.0, "B", qty=1.0, entry=200.0, exit_=190.0, t0=6 * H, t1=8 * H, funding=1.5),
        _trade(80.0, "A", qty=4.0, entry=100.0, exit_=120.0, t0=10 * H, t1=20 * H, slippage=2.0),
    ]
    rep = compute_stats(eq, Timeframe.H1, trades, open_time_ms=times)
    assert rep.trades_per_day == pytest.approx(3.0)
    traded = 2 * (100 + 115) + 1 * (200 + 190) + 4 * (100 + 120)
    assert rep.turnover == pytest.approx(traded / 1050.0)
    assert rep.turnover_per_year == pytest.approx(traded / 1050.0 * 365)
    assert rep.exposure == pytest.approx((5 + 2 + 10) / 25)
    assert rep.costs_fraction_of_initial_equity == pytest.approx(4.0 / 1000.0)
    assert (rep.initial_equity, rep.final_equity) == (1000.0, 1100.0)
    assert [s.symbol for s in rep.per_symbol] == ["A", "B"]
    flags = np.zeros(25)
    flags[:5] = 1
    assert compute_stats(eq, Timeframe.H1, trades, in_position=flags).exposure == pytest.approx(0.2)
    assert math.isnan(compute_stats(eq, Timeframe.H1, trades).exposure)
    d = rep.to_dict()
    assert d["returns"]["annualization_factor"] == pytest.approx(math.sqrt(8760))
    assert d["per_symbol"][0]["symbol"] == "A"
    json.dumps(d, allow_nan=False)


def test_compute_stats_length_mismatches() -> None:
    eq = [1.0, 1.1, 1.2]
    with pytest.raises(DataError, match="in_position"):
        compute_stats(eq, Timeframe.H1, in_position=[1, 0])
    with pytest.raises(DataError, match="open_time_ms"):
        compute_stats(eq, Timeframe.H1, [_trade(1.0)], open_time_ms=[0, H])


# ------------------------------------------------------------------------------------------
# property and external cross-check


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.floats(min_value=-0.5, max_value=0.5, allow_nan=False, allow_infinity=False),
        min_size=2,
        max_size=60,
    )
)
def test_drawdown_invariants(returns: list[float]) -> None:
    s = return_stats(returns, Timeframe.H1)
    assert -1.0 < s.max_drawdown <= 0.0
    assert 0 <= s.max_drawdown_bars <= s.longest_drawdown_bars <= len(returns)
    eq = np.concatenate(([1.0], np.cumprod(1.0 + np.asarray(returns))))
    assert s.max_drawdown == pytest.approx(float(np.min(eq / np.maximum.accumulate(eq) - 1.0)))


@pytest.fixture(scope="module")
def empyrical_mod() -> object:
    return pytest.importorskip("empyrical")


@pytest.mark.parametrize(("timeframe", "periods"), [(Timeframe.D1, 365), (Timeframe.H1, 8760)])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_cross_check_with_empyrical(
    empyrical_mod: object, timeframe: Timeframe, periods: int, seed: int
) -> None:
    ep = empyrical_mod
    rng = np.random.default_rng(seed)
    r = rng.standard_t(4, 1500) * 0.01 + 0.0002
    s = return_stats(r, timeframe)
    assert s.bars_per_year == periods
    assert s.sharpe == pytest.approx(ep.sharpe_ratio(r, annualization=periods), rel=1e-9)  # type: ignore[attr-defined]
    assert s.sortino == pytest.approx(ep.sortino_ratio(r, annualization=periods), rel=1e-9)  # type: ignore[attr-defined]
    assert s.max_drawdown == pytest.approx(ep.max_drawdown(r), rel=1e-9)  # type: ignore[attr-defined]
    assert s.cagr == pytest.approx(ep.cagr(r, annualization=periods), rel=1e-9)  # type: ignore[attr-defined]
    assert s.volatility == pytest.approx(
        ep.annual_volatility(r, annualization=periods),  # type: ignore[attr-defined]
        rel=1e-9,
    )
    assert s.calmar == pytest.approx(ep.calmar_ratio(r, annualization=periods), rel=1e-9)  # type: ignore[attr-defined]


def test_liquidated_equity_stats_by_hand() -> None:
    eq = np.array([100.0, 110.0, 99.0, 0.0, 0.0, 0.0])
    rs = equity_stats(eq, Timeframe.H1, n_trials=3, trials_sharpe_variance=0.5)
    r = np.array([0.1, -0.1, -1.0, 0.0, 0.0])
    assert rs.n_returns == 5
    assert rs.sharpe == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(8760))
    assert rs.sortino == pytest.approx(
        r.mean() / math.sqrt(np.mean(np.minimum(r, 0) ** 2)) * math.sqrt(8760)
    )
    assert rs.volatility == pytest.approx(r.std(ddof=1) * math.sqrt(8760))
    assert (rs.total_return, rs.cagr, rs.max_drawdown, rs.calmar) == (-1.0, -1.0, -1.0, -1.0)
    assert rs.max_drawdown_bars == 4  # from the peak at 110 to the last bar, never recovered
    assert rs.longest_drawdown_bars == 4
    assert 0.0 < rs.dsr < rs.psr < 0.5
    with pytest.raises(DataError):
        equity_stats(np.array([100.0, 0.0, 5.0]), Timeframe.H1)  # not 0 to the end
