"""Invariants of the backtester on random prices and events (Hypothesis, compiled kernels).

Risk of a trade (the 2% rule): ``quantity x risk_per_unit``, the loss at the stop with both
fees and the stop fill's slippage, for the fill ``P`` and stop ``S = P - side x sl_dist``:
long ``P(1 + f_entry) - S(1 - slip)(1 - f_stop)``, short ``S(1 + slip)(1 + f_stop) -
P(1 - f_entry)``. It never exceeds 2% of the equity the trade was sized from (up to float
rounding, 1e-12 relative).
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atra.core.backtest.engine import BacktestConfig, WorkloadParams, run_backtest, run_workload
from atra.core.backtest.position_nb import risk_per_unit_nb, size_nb
from atra.core.costs import CostModel
from atra.core.sizing import RISK_FRACTION_CAP, SizingConfig, kelly_from_probability, size_position
from atra.core.types import Market, Timeframe

T0 = 1_577_836_800_000
HOUR = 3_600_000
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def candles(seed: int, n: int, vol: float) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 50.0 * np.exp(np.cumsum(rng.normal(0.0, vol, n)))
    open_ = np.concatenate(([50.0], close[:-1])) * np.exp(rng.normal(0.0, vol / 4, n))
    wick = np.abs(rng.normal(0.0, vol / 2, (2, n)))
    return pd.DataFrame(
        {
            "open_time": T0 + HOUR * np.arange(n, dtype=np.int64),
            "open": open_,
            "high": np.maximum(open_, close) * (1 + wick[0]),
            "low": np.minimum(open_, close) * (1 - wick[1]),
            "close": close,
            "volume": np.ones(n),
        }
    )


def random_events(seed: int, frames: dict[str, pd.DataFrame], k: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed + 1)
    syms = sorted(frames)
    sym = rng.choice(syms, k)
    t = np.array([rng.integers(0, len(frames[s])) for s in sym], dtype=np.int64)
    close = np.array([frames[s]["close"].iloc[i] for s, i in zip(sym, t, strict=True)])
    sl = close * rng.uniform(0.003, 0.05, k)
    tp1 = sl * rng.uniform(0.5, 3.0, k)
    return pd.DataFrame(
        {
            "symbol": sym,
            "t": t,
            "side": rng.choice([-1, 1], k),
            "sl_dist": sl,
            "tp1_dist": tp1,
            "tp2_dist": tp1 * rng.uniform(1.0, 2.0, k),
            "horizon_bars": rng.integers(1, 40, k),
            "p": rng.uniform(0.0, 1.0, k),
        }
    ).sort_values("t", kind="stable", ignore_index=True)


frames_st = st.builds(
    lambda seed, n, vol, n_sym: {f"S{i}": candles(seed + i, n, vol) for i in range(n_sym)},
    st.integers(0, 10_000),
    st.integers(60, 300),
    st.floats(0.002, 0.03),
    st.integers(1, 3),
)


@FAST
@given(frames=frames_st, seed=st.integers(0, 1000))
def test_zero_signals_give_flat_equity(frames: dict[str, pd.DataFrame], seed: int) -> None:
    empty = random_events(seed, frames, 3).iloc[:0]
    res = run_backtest(frames, empty, BacktestConfig(initial_equity=123.0))
    assert len(res.trades) == 0
    np.testing.assert_array_equal(res.equity, 123.0)
    np.testing.assert_array_equal(res.returns, 0.0)
    declined = random_events(seed, frames, 5).assign(take=False)
    np.testing.assert_array_equal(run_backtest(frames, declined).equity, 10_000.0)


@FAST
@given(
    frames=frames_st,
    seed=st.integers(0, 1000),
    fee=st.floats(0.0, 0.004),
    slip=st.floats(0.0, 20.0),
    risk=st.floats(0.001, 0.02),
    kelly=st.booleans(),
    lev=st.floats(0.5, 10.0),
)
def test_no_trade_risks_more_than_two_percent(
    frames: dict[str, pd.DataFrame],
    seed: int,
    fee: float,
    slip: float,
    risk: float,
    kelly: bool,
    lev: float,
) -> None:
    cfg = BacktestConfig(
        sizing=SizingConfig(risk_fraction=risk, kelly_multiplier=1.0, max_leverage=lev),
        costs=CostModel(maker_fee_rate=fee / 2, taker_fee_rate=fee, slippage_bps=slip),
        max_positions=4,
        max_per_symbol=2,
        max_gross_leverage=20.0,
        probability_column="p" if kelly else None,
    )
    events = random_events(seed, frames, 12)
    res = run_backtest(frames, events, cfg)
    tr = res.trades
    side = tr["side"].to_numpy()
    rows = tr["event_row"].to_numpy()
    # sized at the signal bar's close (what the decision knows), moved by the slippage
    close_t = np.array(
        [frames[s]["close"].iloc[t] for s, t in zip(events["symbol"], events["t"], strict=True)]
    )[rows]
    p = close_t * (1 + side * slip / 1e4)
    stop = p - side * events["sl_dist"].to_numpy()[rows]
    rpu = np.where(
        side == 1,
        p * (1 + fee) - stop * (1 - slip / 1e4) * (1 - fee),
        stop * (1 + slip / 1e4) * (1 + fee) - p * (1 - fee),
    )
    np.testing.assert_allclose(tr["risk_amount"], tr["quantity"] * rpu, rtol=1e-9)
    eq = tr["equity_at_entry"].to_numpy()
    assert (tr["risk_amount"].to_numpy() <= RISK_FRACTION_CAP * eq * (1 + 1e-12)).all()
    assert (tr["quantity"].to_numpy() * p <= lev * eq * (1 + 1e-12)).all()


@FAST
@given(frames=frames_st, factor=st.floats(1.5, 4.0), fee=st.floats(0.0, 0.002))
def test_higher_fees_never_raise_final_equity(
    frames: dict[str, pd.DataFrame], factor: float, fee: float
) -> None:
    """All-in books (the workload): the trades do not depend on the fee, each one nets less."""
    low = run_workload(frames, WorkloadParams(3, 8, 5, 12, 10, 1.5, 3.0, fee))
    high = run_workload(frames, WorkloadParams(3, 8, 5, 12, 10, 1.5, 3.0, fee * factor))
    assert len(low.trades) == len(high.trades)
    assert high.portfolio_equity[-1] <= low.portfolio_equity[-1]
    assert (high.trades["net_return"] <= low.trades["net_return"]).all()


@FAST
@given(
    rate=st.floats(-0.003, 0.003).filter(lambda r: abs(r) > 1e-7),
    side=st.sampled_from([1, -1]),
    entry=st.integers(1, 20),
)
def test_funding_sign(rate: float, side: int, entry: int) -> None:
    n = 60
    flat = pd.DataFrame(
        {
            "open_time": T0 + HOUR * np.arange(n, dtype=np.int64),
            "open": np.full(n, 10.0),
            "high": np.full(n, 10.01),
            "low": np.full(n, 9.99),
            "close": np.full(n, 10.0),
            "volume": np.ones(n),
        }
    )
    fund = pd.DataFrame(
        {"funding_time": T0 + 8 * HOUR * np.arange(8, dtype=np.int64), "funding_rate": rate}
    )
    ev = pd.DataFrame(
        {
            "symbol": ["P"],
            "t": [entry],
            "side": [side],
            "sl_dist": [1.0],
            "tp1_dist": [2.0],
            "tp2_dist": [2.0],
            "horizon_bars": [30],
        }
    )
    res = run_backtest({"P": flat}, ev, funding={"P": fund})
    tr = res.trades.iloc[0]
    t_in, t_out = tr["entry_time_ms"], tr["exit_time_ms"]
    n_times = int(((fund["funding_time"] > t_in) & (fund["funding_time"] <= t_out)).sum())
    assert n_times >= 3
    expected = side * rate * tr["quantity"] * 10.0 * n_times
    assert math.isclose(tr["funding"], expected, rel_tol=1e-12)
    assert np.sign(tr["funding"]) == np.sign(side * rate)  # positive rate: longs pay


@FAST
@given(frames=frames_st, seed=st.integers(0, 1000))
def test_results_are_deterministic(frames: dict[str, pd.DataFrame], seed: int) -> None:
    ev = random_events(seed, frames, 10)
    cfg = BacktestConfig(tp1_fraction=0.5, move_to_be=True, max_positions=3)
    a = run_backtest(frames, ev, cfg)
    b = run_backtest({k: v.copy() for k, v in frames.items()}, ev.copy(), cfg)
    assert a.trades_sha256() == b.trades_sha256()
    np.testing.assert_array_equal(a.equity, b.equity)


def reference_borrow(
    trade: pd.Series, candles: pd.DataFrame, grid: np.ndarray, rate: float
) -> float:
    """A spot short's margin interest, hour by hour in plain Python: at the entry and at every
    full hour after it while open (to a time exit's open, else to its exit bar's close), the
    quantity open at the latest grid bar's open times the open of the symbol's latest bar."""
    if trade["side"] == 1:
        return 0.0
    times = candles["open_time"].to_list()
    opens = candles["open"].to_list()
    end = int(trade["exit_time_ms"]) + (0 if trade["reason"] == "TIME" else HOUR)
    two_legs = not pd.isna(trade["leg2_bar"])
    leg1_ms = times[int(trade["leg1_bar"])]
    total = 0.0
    hour = int(trade["entry_time_ms"])
    while hour < end:
        grid_open = max(int(t) for t in grid if t <= hour)
        held = 1.0 - trade["leg1_fraction"] if two_legs and grid_open > leg1_ms else 1.0
        mark = opens[max(k for k, t in enumerate(times) if t <= hour)]
        total += trade["quantity"] * held * mark * rate
        hour = (hour // HOUR + 1) * HOUR
    return total


def with_gaps(frames: dict[str, pd.DataFrame], seed: int, drop: int) -> dict[str, pd.DataFrame]:
    """Each symbol with ``drop`` of its bars (never the first) missing: a gappy union grid."""
    rng = np.random.default_rng(seed)
    out = {}
    for sym, df in frames.items():
        rows = rng.choice(np.arange(1, len(df)), size=drop, replace=False)
        out[sym] = df.drop(index=rows).reset_index(drop=True)
    return out


@FAST
@given(
    frames=frames_st,
    seed=st.integers(0, 1000),
    drop=st.integers(0, 20),
    rate=st.floats(1e-7, 1e-3),
    partial=st.booleans(),
)
def test_borrow_matches_the_plain_python_reference(
    frames: dict[str, pd.DataFrame], seed: int, drop: int, rate: float, partial: bool
) -> None:
    frames = with_gaps(frames, seed, drop)
    events = random_events(seed, frames, 12)
    base = BacktestConfig(tp1_fraction=0.5 if partial else 1.0, max_positions=4,
                          max_gross_leverage=5.0)  # fmt: skip
    cfg = replace(base, spot_borrow_rate_per_hour=rate)
    res = run_backtest(frames, events, cfg, timeframe=Timeframe.H1)
    grid = np.unique(np.concatenate([f["open_time"].to_numpy() for f in frames.values()]))
    tr = res.trades
    expected = [
        reference_borrow(row, frames[row["symbol"]], grid, rate) for _, row in tr.iterrows()
    ]
    np.testing.assert_allclose(tr["borrow"], expected, rtol=1e-9, atol=1e-12)
    assert (tr["borrow"] >= 0.0).all()
    assert (tr.loc[tr["side"] == 1, "borrow"] == 0.0).all()
    assert (tr.loc[tr["side"] == -1, "borrow"] > 0.0).all()
    assert res.final_equity == pytest.approx(10_000.0 + tr["pnl"].sum(), rel=1e-12)
    free = run_backtest(frames, events, base, timeframe=Timeframe.H1)
    assert (free.trades["borrow"] == 0.0).all()
    perp = run_backtest(
        frames,
        events,
        cfg,
        funding={s: pd.DataFrame({"funding_time": [T0], "funding_rate": [0.0]}) for s in frames},
        timeframe=Timeframe.H1,
    )
    assert (perp.trades["borrow"] == 0.0).all()


@FAST
@given(
    frames=frames_st,
    t=st.integers(0, 50),
    sides=st.lists(st.sampled_from([1, -1]), min_size=3, max_size=3),
    rate=st.floats(0.0, 1e-3),
    horizon=st.integers(1, 40),
)
def test_borrow_only_lowers_equity(
    frames: dict[str, pd.DataFrame], t: int, sides: list[int], rate: float, horizon: int
) -> None:
    """Entries at one bar are sized from the same equity, so the trades match with and without
    the borrow rate; the equity with it is lower by exactly the interest paid so far."""
    syms = sorted(frames)
    close = [frames[s]["close"].iloc[t] for s in syms]
    events = pd.DataFrame(
        {
            "symbol": syms,
            "t": t,
            "side": sides[: len(syms)],
            "sl_dist": [c * 0.03 for c in close],
            "tp1_dist": [c * 0.05 for c in close],
            "tp2_dist": [c * 0.08 for c in close],
            "horizon_bars": horizon,
        }
    )
    base = BacktestConfig(max_gross_leverage=5.0)
    free = run_backtest(frames, events, base, markets=dict.fromkeys(syms, Market.SPOT))
    paid = run_backtest(frames, events, replace(base, spot_borrow_rate_per_hour=rate))
    cols = ["symbol", "side", "quantity", "exit_bar", "exit_price", "fees"]
    pd.testing.assert_frame_equal(free.trades[cols], paid.trades[cols])
    borrow = paid.trades["borrow"]
    assert (borrow >= 0.0).all()
    assert (borrow[paid.trades["side"] == 1] == 0.0).all()
    if rate == 0.0:
        assert (borrow == 0.0).all()
        np.testing.assert_array_equal(paid.equity, free.equity)
    assert (paid.equity <= free.equity + 1e-9).all()
    assert free.final_equity - paid.final_equity == pytest.approx(borrow.sum(), rel=1e-9, abs=1e-9)
    np.testing.assert_allclose(
        paid.trades["pnl"], free.trades["pnl"] - borrow, rtol=1e-12, atol=1e-9
    )


@settings(max_examples=200, deadline=None)
@given(
    equity=st.floats(1.0, 1e7),
    price=st.floats(1e-3, 1e5),
    dist=st.floats(0.001, 0.5),
    fee=st.floats(0.0, 0.005),
    risk=st.floats(1e-4, 0.02),
    lev=st.floats(0.1, 20.0),
    prob=st.one_of(st.none(), st.floats(0.0, 1.0)),
    payoff=st.floats(0.2, 5.0),
    side=st.sampled_from([1, -1]),
)
def test_kernel_sizing_equals_size_position(
    equity: float,
    price: float,
    dist: float,
    fee: float,
    risk: float,
    lev: float,
    prob: float | None,
    payoff: float,
    side: int,
) -> None:
    sl = price * dist
    cfg = SizingConfig(risk_fraction=risk, max_leverage=lev, fee_rate=fee)
    kelly = None if prob is None else kelly_from_probability(prob, payoff)
    ref = size_position(equity, price, price - side * sl, config=cfg, kelly=kelly)
    code, qty, risk_amount = size_nb(
        equity,
        side,
        price,
        sl,
        sl * payoff,
        math.nan if prob is None else prob,
        risk,
        cfg.risk_fraction_cap,
        cfg.kelly_multiplier,
        lev,
        fee,
        fee,
        0.0,
    )
    assert (code == 0) == ref.tradeable
    if ref.tradeable:
        assert math.isclose(qty, ref.quantity, rel_tol=1e-12)
        assert math.isclose(risk_amount, ref.risk_amount, rel_tol=1e-12)
        assert risk_amount <= RISK_FRACTION_CAP * equity * (1 + 1e-12)
    assert math.isclose(
        risk_per_unit_nb(side, price, price - side * sl, fee, fee, 0.0),
        sl + fee * (2 * price - side * sl),
        rel_tol=1e-9,
    )
