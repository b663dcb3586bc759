"""The exit kernel against a slow plain-Python reference, plus hand-computed seed cases."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

from atra.core.exits.api import (
    EventArrays,
    ExitResult,
    ExitSpec,
    event_arrays,
    run_exits,
    simulate_exits,
)
from atra.core.exits.kernel import (
    REASON_BE,
    REASON_NONE,
    REASON_SL,
    REASON_TIME,
    REASON_TP1,
    REASON_TP2,
    STATUS_DONE,
    STATUS_INCOMPLETE,
    _leg_gain_nb,
    simulate_exit_nb,
    simulate_exits_nb,
)
from atra.errors import ConfigError, DataError

# ---------------------------------------------------------------------------- reference


@dataclass
class Leg:
    bar: int
    price: float
    reason: int
    fraction: float
    fee: float


def reference_exit(  # the rules of WORKLOAD.md, spelled out one bar at a time
    o: list[float],
    h: list[float],
    lo: list[float],
    e: int,
    end: int,
    side: int,
    sl_d: float,
    tp1_d: float,
    tp2_d: float,
    horizon: int,
    frac1: float,
    to_be: bool,
    f_in: float,
    f_tp: float,
    f_stop: float,
    slip: float,
) -> tuple[int, int, float, list[Leg], int, float]:
    """(status, label, entry, legs, exit_bar, ret) of one trade."""
    end = min(end, len(o))
    if not 0 <= e < end:
        return STATUS_INCOMPLETE, 0, math.nan, [], -1, math.nan
    entry = o[e] * (1 + slip) if side == 1 else o[e] * (1 - slip)

    def beyond(price: float, level: float, favourable: bool) -> bool:
        # has `price` reached `level` in the direction (favourable for TP, adverse for stops)?
        up = (side == 1) == favourable
        return price >= level if up else price <= level

    def market(price: float) -> float:  # an adverse slippage on a closing market order
        return price * (1 - slip) if side == 1 else price * (1 + slip)

    stop_level = entry - sl_d if side == 1 else entry + sl_d
    stop_reason = REASON_SL
    tp1 = entry + tp1_d if side == 1 else entry - tp1_d
    tp2 = entry + tp2_d if side == 1 else entry - tp2_d
    legs: list[Leg] = []
    left = 1.0
    first = 0
    for j in range(e, e + horizon):
        if j >= end:
            return STATUS_INCOMPLETE, 0, entry, legs, -1, math.nan
        adverse_extreme = lo[j] if side == 1 else h[j]
        favourable_extreme = h[j] if side == 1 else lo[j]
        if beyond(o[j], stop_level, False) or beyond(adverse_extreme, stop_level, False):
            fill = o[j] if beyond(o[j], stop_level, False) else stop_level
            legs.append(Leg(j, market(fill), stop_reason, left, f_stop))
            first = first or -1
            left = 0.0
            break
        targets = [] if legs else [(tp1, REASON_TP1)]
        targets.append((tp2, REASON_TP2))
        for level, why in targets:
            if not beyond(favourable_extreme, level, True):
                break
            fill = o[j] if beyond(o[j], level, True) else level
            size = frac1 if why == REASON_TP1 else left
            if why == REASON_TP1 and frac1 >= 1.0:
                size = 1.0
            legs.append(Leg(j, fill, why, size, f_tp))
            left -= size
            first = first or 1
            if left <= 1e-12:
                break
        if left <= 1e-12:
            break
        if legs and to_be:
            stop_level = entry
            stop_reason = REASON_BE
    else:
        j = e + horizon
        if j >= end:
            return STATUS_INCOMPLETE, 0, entry, legs, -1, math.nan
        legs.append(Leg(j, market(o[j]), REASON_TIME, left, f_stop))
    cost = entry * (1 + f_in)
    cash = 0.0
    for leg in legs:
        if side == 1:
            cash += leg.fraction * (leg.price * (1 - leg.fee) - entry * (1 + f_in))
        else:
            cash += leg.fraction * (entry * (1 - f_in) - leg.price * (1 + leg.fee))
    return STATUS_DONE, first, entry, legs, legs[-1].bar, cash / cost


def random_market(rng: np.random.Generator, n: int) -> tuple[np.ndarray, ...]:
    """OHLC with fat moves and frequent gaps (open away from the previous close)."""
    close = np.empty(n)
    op = np.empty(n)
    price = 100.0
    for i in range(n):
        gap = rng.normal(0, 1.5) if rng.random() < 0.25 else 0.0
        op[i] = max(price + gap, 1.0)
        close[i] = max(op[i] + rng.normal(0, 1.0), 1.0)
        price = close[i]
    high = np.maximum(op, close) + rng.exponential(0.6, n)
    low = np.maximum(np.minimum(op, close) - rng.exponential(0.6, n), 0.5)
    return op, high, low


def random_events(rng: np.random.Generator, n_bars: int, k: int) -> dict[str, np.ndarray]:
    sl = rng.uniform(0.3, 3.0, k)
    tp1 = rng.uniform(0.3, 3.0, k)
    return {
        "entry_bar": rng.integers(0, n_bars + 2, k),
        "end_bar": rng.integers(0, n_bars + 1, k),
        "side": rng.choice(np.array([-1, 1], np.int8), k),
        "sl_dist": sl,
        "tp1_dist": tp1,
        "tp2_dist": tp1 + rng.choice([0.0, 0.5, 2.0], k) * rng.uniform(0.1, 2.0, k),
        "horizon": rng.integers(1, 12, k),
    }


PARAMS = [
    # tp1_fraction, move_to_be, fee_entry, fee_tp, fee_stop, slippage
    (1.0, False, 0.0004, 0.0004, 0.0004, 0.0),
    (0.5, True, 0.001, 0.0002, 0.0005, 0.0),
    (0.3, False, 0.0, 0.0, 0.0, 0.0),
    (0.6, True, 0.0004, 0.0001, 0.0004, 0.0015),
]


def _check_row(ref: tuple[int, int, float, list[Leg], int, float], got: tuple) -> None:
    status, label, entry, legs, exit_bar, ret = ref
    assert got[0] == status
    assert got[1] == label
    assert got[11] == exit_bar
    assert got[2] == pytest.approx(entry, nan_ok=True)
    assert got[12] == pytest.approx(ret, rel=1e-9, abs=1e-12, nan_ok=True)
    padded = [*legs, None, None][:2]
    for k, leg in enumerate(padded):
        bar, price, reason, frac = got[3 + 4 * k : 7 + 4 * k]
        if leg is None or (status != STATUS_DONE and k >= len(legs)):
            assert (bar, reason, frac) == (-1, REASON_NONE, 0.0)
            assert math.isnan(price)
        else:
            assert (bar, reason) == (leg.bar, leg.reason)
            assert price == pytest.approx(leg.price, rel=1e-12)
            assert frac == pytest.approx(leg.fraction, rel=1e-12)


def _compare(seed: int, params: tuple, n_bars: int = 40, k: int = 60) -> dict[int, int]:
    rng = np.random.default_rng(seed)
    o, h, lo = random_market(rng, n_bars)
    ev = random_events(rng, n_bars, k)
    frac, be, fe, ftp, fst, slip = params
    args = (ev["entry_bar"], ev["end_bar"], ev["side"], ev["sl_dist"], ev["tp1_dist"])
    rest = (ev["tp2_dist"], ev["horizon"], frac, be, fe, ftp, fst, slip)
    jit = simulate_exits_nb(o, h, lo, *args, *rest)
    py = simulate_exits_nb.py_func(o, h, lo, *args, *rest)
    seen: dict[int, int] = {}
    for i in range(k):
        one = (
            int(ev["entry_bar"][i]), int(ev["end_bar"][i]), int(ev["side"][i]),
            float(ev["sl_dist"][i]), float(ev["tp1_dist"][i]), float(ev["tp2_dist"][i]),
            int(ev["horizon"][i]), frac, be, fe, ftp, fst, slip,
        )  # fmt: skip
        ref = reference_exit(list(o), list(h), list(lo), *one)
        for got in (
            simulate_exit_nb.py_func(o, h, lo, *one),
            simulate_exit_nb(o, h, lo, *one),
            tuple(col[i] for col in jit),
            tuple(col[i] for col in py),
        ):
            _check_row(ref, got)
        for leg in ref[3]:
            seen[leg.reason] = seen.get(leg.reason, 0) + 1
        seen[-ref[0]] = seen.get(-ref[0], 0) + 1
    return seen


@pytest.mark.parametrize("params", PARAMS)
def test_kernel_matches_reference_on_random_markets(params: tuple) -> None:
    seen: dict[int, int] = {}
    for seed in range(12):
        for key, count in _compare(seed, params).items():
            seen[key] = seen.get(key, 0) + count
    # the random markets exercise every path: stops, targets, time exits, incomplete trades
    expected = {REASON_SL, REASON_TP1, REASON_TIME, -STATUS_INCOMPLETE}
    if params[0] < 1.0:
        expected |= {REASON_TP2}
    if params[1]:
        expected |= {REASON_BE}
    assert expected <= set(seen)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), which=st.integers(0, len(PARAMS) - 1))
def test_kernel_matches_reference_property(seed: int, which: int) -> None:
    _compare(seed, PARAMS[which], n_bars=25, k=20)


# ---------------------------------------------------------------------------- seed cases

F = 0.001  # fee per side
QTY = 0.1  # BTC
EQUITY = QTY * 50_000 * (1 + F)  # cash committed: 5,005 USDT


def _bars(path: list[tuple[float, float, float]]) -> tuple[np.ndarray, ...]:
    o, h, lo = (np.array(col, dtype=np.float64) for col in zip(*path, strict=True))
    return o, h, lo


def _seed_trade(path: list[tuple[float, float, float]], frac: float, be: bool) -> ExitResult:
    o, h, lo = _bars(path)
    spec = ExitSpec(tp1_fraction=frac, move_to_be=be, fee_entry=F, fee_tp=F, fee_stop=F)
    # LONG at 50,000: SL 49,000, TP1 51,000, TP2 52,000 as distances from the fill
    return simulate_exits(o, h, lo, [0], [1], [1000.0], [1000.0], [2000.0], [5], spec)


FLAT = (50_000.0, 50_100.0, 49_900.0)


@pytest.mark.parametrize(
    ("path", "frac", "be", "pnl", "label", "reasons"),
    [
        # TP1 full exit: 0.1 * (51,000 * 0.999 - 50,000 * 1.001) = 0.1 * 899 = 89.9
        ([FLAT, (50_500, 51_200, 50_400), FLAT], 1.0, False, 89.9, 1, (REASON_TP1,)),
        # TP1 half (0.05 * 899 = 44.95) then TP2 half (0.05 * (51,948 - 50,050) = 94.9)
        (
            [FLAT, (50_500, 51_200, 50_400), (51_100, 52_300, 51_000)],
            0.5,
            False,
            139.85,
            1,
            (REASON_TP1, REASON_TP2),
        ),
        # TP1 half, then stop at break-even: 44.95 + 0.05 * (49,950 - 50,050) = 39.95
        (
            [FLAT, (50_500, 51_200, 50_400), (50_300, 50_400, 49_800)],
            0.5,
            True,
            39.95,
            1,
            (REASON_TP1, REASON_BE),
        ),
        # loss at SL: 0.1 * (49,000 * 0.999 - 50,050) = 0.1 * (48,951 - 50,050) = -109.9
        ([FLAT, (49_800, 49_900, 48_900), FLAT], 1.0, False, -109.9, -1, (REASON_SL,)),
        # TP1 half, the original SL guards the rest: 44.95 + 0.05 * (48,951 - 50,050) = -10.0
        (
            [FLAT, (50_500, 51_200, 50_400), (50_000, 50_100, 48_500)],
            0.5,
            False,
            -10.0,
            1,
            (REASON_TP1, REASON_SL),
        ),
    ],
)
def test_seed_long_trade_pnl(
    path: list[tuple[float, float, float]],
    frac: float,
    be: bool,
    pnl: float,
    label: int,
    reasons: tuple[int, ...],
) -> None:
    res = _seed_trade(path, frac, be)
    assert res.status[0] == STATUS_DONE
    assert res.label[0] == label
    assert res.ret_net[0] * EQUITY == pytest.approx(pnl, abs=1e-9)
    got = tuple(r for r in (res.leg1_reason[0], res.leg2_reason[0]) if r != REASON_NONE)
    assert got == reasons


def test_single_exit_matches_workload_formula() -> None:
    f = 0.0004
    o, h, lo = _bars([(100.0, 100.5, 99.5)] * 3 + [(101.0, 101.5, 100.5)])
    spec = ExitSpec()
    for side, expected in (
        (1, 1.01 * (1 - f) / (1 + f) - 1),
        (-1, ((1 - f) - 1.01 * (1 + f)) / (1 + f)),
    ):
        res = simulate_exits(o, h, lo, [0], [side], [5.0], [5.0], [6.0], [3], spec)
        assert res.leg1_reason[0] == REASON_TIME
        assert res.label[0] == 0
        assert res.exit_bar[0] == 3
        assert res.ret_net[0] == pytest.approx(expected, rel=1e-12)


# ---------------------------------------------------------------------------- bar rules


def _one(
    path: list[tuple[float, float, float]],
    side: int,
    spec: ExitSpec | None = None,
    horizon: int = 5,
    dists: tuple[float, float, float] = (1.0, 2.0, 4.0),
) -> ExitResult:
    o, h, lo = _bars(path)
    sl, t1, t2 = dists
    return simulate_exits(o, h, lo, [0], [side], [sl], [t1], [t2], [horizon], spec or ExitSpec())


def test_bar_holding_both_barriers_counts_as_stop() -> None:
    res = _one([(100, 100.2, 99.8), (100, 103, 98)], side=1)
    assert (res.label[0], res.leg1_reason[0], res.leg1_price[0]) == (-1, REASON_SL, 99.0)


def test_stop_can_hit_inside_the_entry_bar() -> None:
    res = _one([(100, 100.2, 98.5), (100, 100.1, 99.9)], side=1)
    assert (res.exit_bar[0], res.leg1_price[0]) == (0, 99.0)


@pytest.mark.parametrize(
    ("side", "bar", "price", "reason"),
    [
        (1, (97.0, 97.5, 96.5), 97.0, REASON_SL),  # long opens below its stop
        (1, (103.0, 103.5, 102.5), 103.0, REASON_TP1),  # long opens above its target
        (-1, (102.0, 102.5, 101.5), 102.0, REASON_SL),  # short opens above its stop
        (-1, (97.0, 97.5, 96.5), 97.0, REASON_TP1),  # short opens below its target
    ],
)
def test_gap_through_fills_at_the_open(
    side: int, bar: tuple[float, float, float], price: float, reason: int
) -> None:
    res = _one([(100, 100.2, 99.8), bar], side=side)
    assert (res.leg1_reason[0], res.leg1_price[0], res.exit_bar[0]) == (reason, price, 1)


def test_gap_beyond_tp2_fills_both_targets_at_the_open() -> None:
    res = _one([(100, 100.2, 99.8), (105, 105.5, 104.5)], side=1, spec=ExitSpec(tp1_fraction=0.5))
    assert (res.leg1_price[0], res.leg2_price[0]) == (105.0, 105.0)
    assert (res.leg1_reason[0], res.leg2_reason[0]) == (REASON_TP1, REASON_TP2)


def test_break_even_stop_starts_on_the_next_bar() -> None:
    spec = ExitSpec(tp1_fraction=0.5, move_to_be=True)
    # TP1 bar dips below entry after the touch: not a BE exit yet; next bar does hit BE
    res = _one([(100, 100.2, 99.8), (101, 102.5, 99.5), (100.5, 100.6, 99.9)], 1, spec)
    assert (res.leg1_bar[0], res.leg2_bar[0], res.leg2_reason[0]) == (1, 2, REASON_BE)
    assert res.leg2_price[0] == 100.0


def test_time_exit_at_open_after_horizon_and_no_check_on_that_bar() -> None:
    # bar 3 (= e + H) would hit both barriers: it is not checked, the exit is its open
    res = _one([(100, 100.5, 99.5)] * 3 + [(100.3, 110, 90)], side=-1, horizon=3)
    assert (res.leg1_reason[0], res.exit_bar[0], res.leg1_price[0]) == (REASON_TIME, 3, 100.3)


def test_incomplete_when_the_data_end_first() -> None:
    spec = ExitSpec(tp1_fraction=0.5)
    res = _one([(100, 100.2, 99.8), (101, 102.5, 100.5), (102, 102.2, 101.8)], 1, spec)
    assert res.status[0] == STATUS_INCOMPLETE
    assert not res.complete[0]
    assert res.exit_bar[0] == -1
    assert math.isnan(res.ret_net[0])
    assert res.leg1_reason[0] == REASON_TP1  # the partial fill that did happen is reported


def test_slippage_moves_market_fills_adversely() -> None:
    spec = ExitSpec(fee_entry=0.0, fee_tp=0.0, fee_stop=0.0, slippage_bps=10.0)
    res = _one([(100, 100.2, 99.8), (99.5, 99.6, 98.0)], side=1, spec=spec)
    assert res.entry_price[0] == pytest.approx(100.1)
    assert res.leg1_price[0] == pytest.approx((100.1 - 1.0) * 0.999)
    tp = _one([(100, 100.2, 99.8), (101, 102.5, 100.5)], side=1, spec=spec)
    assert tp.leg1_price[0] == pytest.approx(100.1 + 2.0)  # a limit order: no slippage


def test_higher_fees_never_raise_the_return() -> None:
    rng = np.random.default_rng(7)
    o, h, lo = random_market(rng, 60)
    ev = random_events(rng, 50, 40)
    base = None
    for fee in (0.0, 0.0004, 0.002):
        spec = ExitSpec(tp1_fraction=0.5, fee_entry=fee, fee_tp=fee, fee_stop=fee)
        res = simulate_exits(
            o, h, lo, ev["entry_bar"], ev["side"], ev["sl_dist"], ev["tp1_dist"],
            ev["tp2_dist"], ev["horizon"], spec,
        )  # fmt: skip
        ok = res.complete
        if base is not None:
            assert np.all(res.ret_net[ok] <= base[ok] + 1e-15)
        base = res.ret_net


# ---------------------------------------------------------------------------- reuse


@njit(cache=False)
def _one_position_at_a_time_nb(o, h, lo, entry_bar, side, sl, tp1, tp2, horizon, args):  # type: ignore[no-untyped-def]
    """A backtest-like loop: an event is taken only when the previous trade has left."""
    free_from = 0
    taken = np.zeros(entry_bar.shape[0], np.bool_)
    ret = np.full(entry_bar.shape[0], np.nan)
    for i in range(entry_bar.shape[0]):
        if entry_bar[i] < free_from:
            continue
        r = simulate_exit_nb(
            o, h, lo, entry_bar[i], o.shape[0], side[i], sl[i], tp1[i], tp2[i], horizon[i],
            args[0], args[1], args[2], args[3], args[4], args[5],
        )  # fmt: skip
        if r[0] != STATUS_DONE:
            break
        taken[i] = True
        ret[i] = r[12]
        final_reason = r[9] if r[9] != REASON_NONE else r[5]
        # WORKLOAD.md: a time exit at open[e] frees bar e; a barrier exit frees the next bar
        free_from = r[11] if final_reason == REASON_TIME else r[11] + 1
    return taken, ret


def test_per_event_kernel_runs_inside_another_njit_loop() -> None:
    rng = np.random.default_rng(3)
    o, h, lo = random_market(rng, 300)
    ev = random_events(rng, 250, 80)
    order = np.argsort(ev["entry_bar"], kind="stable")
    cols = [ev[k][order] for k in ("entry_bar", "side", "sl_dist", "tp1_dist", "tp2_dist")]
    horizon = ev["horizon"][order]
    spec = ExitSpec(tp1_fraction=0.5, move_to_be=True)
    taken, ret = _one_position_at_a_time_nb(o, h, lo, *cols, horizon, spec.kernel_args())
    res = simulate_exits(o, h, lo, *cols, horizon, spec)
    assert 5 < taken.sum() < len(taken)
    np.testing.assert_array_equal(ret[taken], res.ret_net[taken])


# ---------------------------------------------------------------------------- wrapper


@pytest.mark.parametrize(
    ("side", "price", "expected"),
    [(1, 110.0, 110.0 * 0.999 - 100.0 * 1.001), (-1, 90.0, 100.0 * 0.999 - 90.0 * 1.001)],
)
def test_leg_gain_per_unit(side: int, price: float, expected: float) -> None:
    for fn in (_leg_gain_nb, _leg_gain_nb.py_func):
        assert fn(side, 100.0, price, 0.001, 0.001) == pytest.approx(expected, rel=1e-12)


def test_result_frame_and_final_reason() -> None:
    res = _one([(100, 100.2, 99.8), (101, 102.5, 100.5), (102, 104.5, 101)], 1,
               ExitSpec(tp1_fraction=0.4))  # fmt: skip
    frame = res.to_frame()
    assert len(res) == 1
    assert list(frame.columns)[:3] == ["status", "label", "entry_price"]
    assert res.final_reason.tolist() == [REASON_TP2]
    assert frame["leg1_fraction"].iloc[0] == pytest.approx(0.4)
    assert frame["leg2_fraction"].iloc[0] == pytest.approx(0.6)


def test_run_exits_on_checked_arrays() -> None:
    o, h, lo = _bars([(100, 100.2, 99.8), (101, 102.5, 100.5), (102, 102.2, 101.8)])
    ev = event_arrays([0, 1], [1, -1], [1.0, 2.0], [2.0, 2.0], [3.0, 3.0], [1, 1])
    assert isinstance(ev.take(slice(0, 1)), EventArrays)
    res = run_exits(o, h, lo, ev, ExitSpec())
    assert res.status.tolist() == [STATUS_DONE, STATUS_DONE]
    assert res.leg1_reason.tolist() == [REASON_TIME, REASON_TIME]


GOOD = {
    "entry_bar": [0],
    "side": [1],
    "sl_dist": [1.0],
    "tp1_dist": [2.0],
    "tp2_dist": [3.0],
    "horizon_bars": [2],
}


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("side", [0], "side = 0"),
        ("sl_dist", [0.0], "sl_dist = 0.0"),
        ("tp1_dist", [np.nan], "tp1_dist = nan"),
        ("tp2_dist", [1.5], "tp2_dist = 1.5, expected a finite distance >= tp1_dist"),
        ("horizon_bars", [0], "horizon_bars = 0"),
        ("entry_bar", [-1], "entry_bar = -1"),
        ("side", [1, 1], "side has 2 rows"),
        ("entry_bar", [0.5], "entry_bar: expected integers"),
        ("sl_dist", [[1.0]], "sl_dist: expected a 1-D array"),
        ("horizon_bars", [[2]], "horizon_bars: expected a 1-D array"),
    ],
)
def test_bad_events_are_one_line_data_errors(key: str, value: list, message: str) -> None:
    args = {**GOOD, key: value}
    o, h, lo = _bars([FLAT] * 4)
    with pytest.raises(DataError, match=message.replace("(", r"\(")):
        simulate_exits(o, h, lo, *args.values(), ExitSpec())


@pytest.mark.parametrize(
    ("prices", "end_bar", "message"),
    [
        ((np.ones(3), np.ones(3), np.ones(2)), None, "lengths differ"),
        ((np.array([1.0, -1.0, 1.0]), np.ones(3), np.ones(3)), None, r"open\[1\] = -1.0"),
        ((np.ones(3), np.array([1.0, 1.0, np.inf]), np.ones(3)), None, r"high\[2\] = inf"),
        ((np.ones(3), np.ones(3), np.ones(3)), [4], "end_bar = 4"),
        ((np.ones(3), np.ones(3), np.ones(3)), [1, 2], "end_bar has 2 rows"),
    ],
)
def test_bad_prices_or_end_bar(prices: tuple, end_bar: list | None, message: str) -> None:
    with pytest.raises(DataError, match=message):
        simulate_exits(*prices, *GOOD.values(), ExitSpec(), end_bar=end_bar)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tp1_fraction": 0.0}, "tp1_fraction"),
        ({"tp1_fraction": 1.5}, "tp1_fraction"),
        ({"fee_tp": -0.001}, "fee_tp"),
        ({"fee_stop": float("nan")}, "fee_stop"),
        ({"slippage_bps": -1.0}, "slippage_bps"),
    ],
)
def test_exit_spec_rejects_bad_values(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ExitSpec(**kwargs)
