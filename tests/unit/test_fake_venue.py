"""The matching engine against the exit kernel, its order rules, and the in-process venue."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atra.adapters.orders import (
    OrderRequest,
    OrderSide,
    SymbolRules,
    VenuePosition,
    is_conditional,
)
from atra.core.exits.kernel import (
    REASON_BE,
    REASON_NONE,
    REASON_SL,
    REASON_TIME,
    REASON_TP1,
    REASON_TP2,
    STATUS_DONE,
    simulate_exit_nb,
)
from atra.errors import DataError, OrderRejected
from atra.sim.book import Fill, VenueReject
from atra.sim.local_venue import LocalVenue
from atra.sim.venue import MatchingEngine

STEP = 3_600_000
T0 = 1_700_000_000_000 - (1_700_000_000_000 % STEP)


def frame(
    open_: list[float] | np.ndarray,
    high: list[float] | np.ndarray,
    low: list[float] | np.ndarray,
    close: list[float] | np.ndarray | None = None,
    times: list[int] | np.ndarray | None = None,
) -> pd.DataFrame:
    o = np.asarray(open_, dtype=np.float64)
    t = np.asarray(times, np.int64) if times is not None else T0 + STEP * np.arange(o.size)
    return pd.DataFrame(
        {
            "open_time": t,
            "open": o,
            "high": np.asarray(high, np.float64),
            "low": np.asarray(low, np.float64),
            "close": np.asarray(close if close is not None else o, np.float64),
            "volume": np.ones(o.size),
        }
    )


def at(bar: int, offset_ms: int = 7) -> int:
    """A moment inside ``bar`` (bars are STEP long from T0)."""
    return T0 + bar * STEP + offset_ms


def req(
    side: OrderSide,
    type_: str,
    cid: str,
    qty: float | None = None,
    *,
    price: float | None = None,
    stop: float | None = None,
    reduce_only: bool = False,
    close_position: bool = False,
    symbol: str = "X",
) -> OrderRequest:
    return OrderRequest(
        symbol,
        side,
        type_,  # type: ignore[arg-type]
        cid,
        quantity=qty,
        price=price,
        stop_price=stop,
        reduce_only=reduce_only,
        close_position=close_position,
    )


# ---- the kernel parity property ----------------------------------------------------------


def random_path(seed: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An OHLC path around 100 with frequent gaps between a close and the next open."""
    rng = np.random.default_rng(seed)
    o = np.empty(n)
    h = np.empty(n)
    lo = np.empty(n)
    prev = 100.0
    for i in range(n):
        gap = rng.normal(0.0, 0.03) if rng.random() < 0.35 else 0.0
        o[i] = prev * math.exp(gap)
        c = o[i] * math.exp(rng.normal(0.0, 0.015))
        h[i] = max(o[i], c) * (1.0 + abs(rng.normal(0.0, 0.008)))
        lo[i] = min(o[i], c) * (1.0 - abs(rng.normal(0.0, 0.008)))
        prev = c
    return o, h, lo


_REASON = {"sl": REASON_SL, "be": REASON_BE, "tp1": REASON_TP1, "tp2": REASON_TP2, "time": 4}


@dataclass
class Trade:
    side: int
    sl_dist: float
    tp1_dist: float
    tp2_dist: float
    horizon: int
    tp1_fraction: float
    move_to_be: bool
    slippage_bps: float


def run_broker(
    o: np.ndarray, h: np.ndarray, lo: np.ndarray, e: int, tr: Trade
) -> tuple[float, list[tuple[int, float, int, float]]]:
    """What a broker does with the engine: entry, SL + TP orders, optional move to break-even,
    time exit. Returns (entry fill price, exit legs as (bar, price, reason, fraction))."""
    eng = MatchingEngine({"X": frame(o, h, lo)}, STEP, slippage_bps=tr.slippage_bps)
    opening: OrderSide = "BUY" if tr.side == 1 else "SELL"
    closing: OrderSide = "SELL" if tr.side == 1 else "BUY"
    qty = 1.0

    def stop_or_close(cid: str, stop: float, t: int) -> None:
        try:  # a stop is an algo order (the Algo Order API)
            eng.place_algo(req(closing, "STOP_MARKET", cid, stop=stop, close_position=True), t)
        except VenueReject as rej:
            if rej.code != -2021:
                raise
            pos = abs(eng.position("X").quantity)
            eng.place(req(closing, "MARKET", f"{cid}-mkt", pos, reduce_only=True), t)

    t = at(e)
    entry = eng.place(req(opening, "MARKET", "entry", qty), t).avg_price
    stop_or_close("sl", entry - tr.side * tr.sl_dist, t)
    if eng.position("X").quantity != 0.0:
        tp1 = entry + tr.side * tr.tp1_dist
        if tr.tp1_fraction < 1.0:
            q1 = qty * tr.tp1_fraction
            eng.place(req(closing, "LIMIT", "tp1", q1, price=tp1, reduce_only=True), t)
            tp2 = entry + tr.side * tr.tp2_dist
            eng.place(req(closing, "LIMIT", "tp2", qty - q1, price=tp2, reduce_only=True), t)
        else:
            eng.place(req(closing, "LIMIT", "tp1", qty, price=tp1, reduce_only=True), t)
    be_done = False
    for j in range(e + 1, e + tr.horizon + 1):
        t = at(j, offset_ms=1 + j % 5 * 1000)
        eng.advance(t)
        if eng.position("X").quantity == 0.0:
            break
        if j == e + tr.horizon:
            for st_ in eng.open_orders("X", t):
                eng.cancel("X", st_.client_order_id, t)
            for algo in eng.open_algo_orders("X", t):
                eng.cancel_algo(algo.client_algo_id, t)
            pos = abs(eng.position("X").quantity)
            eng.place(req(closing, "MARKET", "time", pos, reduce_only=True), t)
            break
        tp1_state = eng.get("X", "tp1")
        assert tp1_state is not None
        if tr.move_to_be and not be_done and tp1_state.status == "FILLED":
            be_done = True
            eng.cancel_algo("sl", t)
            stop_or_close("be", entry, t)
    for st_ in eng.open_orders("X"):
        eng.cancel("X", st_.client_order_id, eng.now_ms)
    for algo in eng.open_algo_orders("X"):
        eng.cancel_algo(algo.client_algo_id, eng.now_ms)
    assert eng.positions() == []
    legs = []
    times = T0 + STEP * np.arange(o.size)
    for f in eng.fills:
        if f.client_order_id == "entry":
            continue
        bar = int(np.searchsorted(times, f.time_ms, side="right")) - 1
        reason = _REASON[f.client_order_id.removesuffix("-mkt")]
        legs.append((bar, f.price, reason, f.qty / qty))
    return entry, legs


def kernel_legs(
    o: np.ndarray, h: np.ndarray, lo: np.ndarray, e: int, tr: Trade, jitted: bool
) -> tuple[float, list[tuple[int, float, int, float]]]:
    fn = simulate_exit_nb if jitted else simulate_exit_nb.py_func
    r = fn(
        o, h, lo, e, o.size, tr.side, tr.sl_dist, tr.tp1_dist, tr.tp2_dist, tr.horizon,
        tr.tp1_fraction, tr.move_to_be, 0.0, 0.0, 0.0, tr.slippage_bps / 1e4,
    )  # fmt: skip
    assert r[0] == STATUS_DONE
    legs = [(int(r[3]), float(r[4]), int(r[5]), float(r[6]))]
    if r[9] != REASON_NONE:
        legs.append((int(r[7]), float(r[8]), int(r[9]), float(r[10])))
    return float(r[2]), legs


trades = st.builds(
    Trade,
    side=st.sampled_from([1, -1]),
    sl_dist=st.floats(0.3, 4.0),
    tp1_dist=st.floats(0.3, 4.0),
    tp2_dist=st.floats(0.0, 4.0),  # added to tp1_dist
    horizon=st.integers(1, 12),
    tp1_fraction=st.sampled_from([0.25, 0.5, 0.7, 1.0]),
    move_to_be=st.booleans(),
    slippage_bps=st.sampled_from([0.0, 0.0, 5.0, 30.0]),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), trade=trades, entry_bar=st.integers(0, 3))
def test_engine_reproduces_the_exit_kernel(seed: int, trade: Trade, entry_bar: int) -> None:
    trade.tp2_dist = trade.tp1_dist + trade.tp2_dist
    o, h, lo = random_path(seed, entry_bar + trade.horizon + 2)
    entry, legs = run_broker(o, h, lo, entry_bar, trade)
    for jitted in (False, True):
        k_entry, k_legs = kernel_legs(o, h, lo, entry_bar, trade, jitted)
        assert entry == k_entry
        assert [leg[0] for leg in legs] == [leg[0] for leg in k_legs]
        assert [leg[2] for leg in legs] == [leg[2] for leg in k_legs]
        assert [leg[1] for leg in legs] == pytest.approx([leg[1] for leg in k_legs], rel=1e-13)
        assert [leg[3] for leg in legs] == pytest.approx([leg[3] for leg in k_legs], rel=1e-12)


@pytest.mark.parametrize("side", [1, -1])
def test_move_to_break_even_after_a_partial(side: int) -> None:
    """TP1 fills in bar 1, the stop moves to the entry price for bar 2, which reaches it."""
    if side == 1:
        o, h, lo = [100.0, 100.5, 101.0, 99.0], [100.8, 103.0, 101.5, 99.5], [99.5, 100.2, 99.8, 98]
    else:
        o, h, lo = [100.0, 99.5, 99.0, 101.0], [100.5, 99.8, 100.2, 102], [99.2, 97.0, 98.5, 100.5]
    tr = Trade(side, 5.0, 2.0, 6.0, 3, 0.5, True, 0.0)
    arrays = (np.array(o), np.array(h), np.array(lo))
    entry, legs = run_broker(*arrays, 0, tr)
    assert entry == 100.0
    assert legs == [(1, 100.0 + side * 2.0, REASON_TP1, 0.5), (2, 100.0, REASON_BE, 0.5)]
    assert (entry, legs) == kernel_legs(*arrays, 0, tr, jitted=True)
    # without the move, the original stop keeps guarding: the time barrier closes the rest
    tr.move_to_be = False
    entry, legs = run_broker(*arrays, 0, tr)
    assert legs[1] == (3, o[3], REASON_TIME, 0.5)
    assert (entry, legs) == kernel_legs(*arrays, 0, tr, jitted=False)


# ---- order rules -------------------------------------------------------------------------


@pytest.fixture
def engine() -> MatchingEngine:
    return make_engine()


def make_engine() -> MatchingEngine:
    # bars 0..3 contiguous, then a one-bar hole (bar 4 missing), then bars 5, 6
    times = [T0 + STEP * b for b in (0, 1, 2, 3, 5, 6)]
    o = [100.0, 101.0, 99.0, 104.0, 96.0, 100.0]
    h = [102.0, 103.0, 100.0, 106.0, 99.0, 101.0]
    lo = [99.0, 98.0, 97.0, 103.0, 95.0, 99.0]
    c = [101.0, 99.0, 99.5, 105.0, 98.0, 100.5]
    return MatchingEngine({"X": frame(o, h, lo, c, times)}, STEP)


def test_market_fill_position_and_average_entry(engine: MatchingEngine) -> None:
    st1 = engine.place(req("BUY", "MARKET", "a", 2.0), at(0))
    assert (st1.status, st1.avg_price, st1.executed_qty, st1.update_time_ms) == (
        "FILLED",
        100.0,
        2.0,
        at(0),
    )
    engine.place(req("BUY", "MARKET", "b", 1.0), at(1))
    assert engine.positions() == [VenuePosition("X", 3.0, (200.0 + 101.0) / 3.0)]
    engine.place(req("SELL", "MARKET", "c", 1.0), at(2))  # a reduction keeps the entry
    assert engine.positions() == [VenuePosition("X", 2.0, (200.0 + 101.0) / 3.0)]
    engine.place(req("SELL", "MARKET", "d", 5.0), at(3))  # flips: the rest opens at 104
    assert engine.positions() == [VenuePosition("X", -3.0, 104.0)]
    engine.place(req("BUY", "MARKET", "e", 3.0), at(3))
    assert engine.positions() == []
    assert engine.position("X") == VenuePosition("X", 0.0, 0.0)
    assert [f.client_order_id for f in engine.fills] == ["a", "b", "c", "d", "e"]
    assert engine.fills[0] == Fill("a", at(0), 100.0, 2.0)
    assert [st.order_id for st in map(lambda c: engine.get("X", c), "abcde") if st] == [
        1,
        2,
        3,
        4,
        5,
    ]


def test_market_slippage_is_adverse() -> None:
    eng = MatchingEngine({"X": frame([100.0], [101.0], [99.0])}, STEP, slippage_bps=10.0)
    assert eng.place(req("BUY", "MARKET", "b", 1.0), at(0)).avg_price == 100.0 * (1 + 0.001)
    assert eng.place(req("SELL", "MARKET", "s", 1.0), at(0)).avg_price == 100.0 * (1 - 0.001)


def test_placement_in_a_gap_or_outside_the_data_is_rejected(engine: MatchingEngine) -> None:
    for t in (at(4), at(7), T0 - 1):
        with pytest.raises(VenueReject) as info:
            engine.place(req("BUY", "MARKET", f"m{t}", 1.0), t)
        assert info.value.code == -1
        assert "no market for X" in info.value.msg
    assert engine.get("X", f"m{at(4)}") is None


@pytest.mark.parametrize(
    ("order", "code"),
    [
        (req("BUY", "LIMIT", "x", 1.0), -1102),
        (req("SELL", "STOP_MARKET", "x", 1.0), -1102),
        (req("SELL", "STOP_MARKET", "x", 1.0, stop=90.0, close_position=True), -1102),
        (req("SELL", "LIMIT", "x", price=120.0, close_position=True), -1102),
        (req("BUY", "MARKET", "x"), -1102),
        (req("BUY", "MARKET", "x", 0.0), -4003),
        (req("BUY", "MARKET", "x", -1.0), -4003),
        (req("BUY", "MARKET", "x", 0.0015), -4003),  # not a multiple of 0.001
        (req("BUY", "MARKET", "x", 0.002), -4003),  # below min_qty 0.005
        (req("BUY", "LIMIT", "x", 1.0, price=99.05), -4014),  # not a multiple of 0.1
        (req("BUY", "LIMIT", "x", 1.0, price=-1.0), -4014),
        (req("SELL", "MARKET", "x", 1.0, reduce_only=True), -2022),
        (req("SELL", "STOP_MARKET", "x", 1.0, stop=100.0), -2021),  # stop >= price
        (req("BUY", "STOP_MARKET", "x", 1.0, stop=99.9), -2021),
        (req("SELL", "TAKE_PROFIT_MARKET", "x", 1.0, stop=99.0), -2021),
        (req("BUY", "TAKE_PROFIT_MARKET", "x", 1.0, stop=100.5), -2021),
        (req("BUY", "MARKET", "x", 1.0, symbol="NOPE"), -1121),
        (req("UP", "MARKET", "x", 1.0), -1117),  # type: ignore[arg-type]
        (req("BUY", "ICEBERG", "x", 1.0), -1116),
    ],
)
def test_placement_checks(order: OrderRequest, code: int) -> None:
    rules = {"X": SymbolRules("X", step_size=0.001, min_qty=0.005, tick_size=0.1)}
    eng = MatchingEngine({"X": frame([100.0], [101.0], [99.0])}, STEP, rules=rules)
    with pytest.raises(VenueReject) as info:  # a conditional type on the Algo Order API
        (eng.place_algo if is_conditional(order.type) else eng.place)(order, at(0))
    assert (info.value.status, info.value.code) == (400, code)
    assert eng.get("X", "x") is None
    assert eng.rules("X") == rules["X"]
    # a valid order on the rules passes
    assert eng.place(req("BUY", "MARKET", "ok", 0.007), at(0)).status == "FILLED"


def test_duplicate_client_id_is_refused_even_when_final(engine: MatchingEngine) -> None:
    engine.place(req("BUY", "MARKET", "a", 1.0), at(0))
    engine.place(req("SELL", "LIMIT", "tp", 1.0, price=150.0, reduce_only=True), at(0))
    for cid in ("a", "tp"):
        with pytest.raises(VenueReject) as info:
            engine.place(req("BUY", "MARKET", cid, 1.0), at(1))
        assert (info.value.code, info.value.msg) == (-4116, "ClientOrderId is duplicated.")
    engine.cancel("X", "tp", at(1))
    with pytest.raises(VenueReject, match="4116"):
        engine.place(req("SELL", "LIMIT", "tp", 1.0, price=150.0), at(1))
    assert len(engine.fills) == 1


def test_cancel_rules(engine: MatchingEngine) -> None:
    engine.place(req("BUY", "MARKET", "a", 1.0), at(0))
    engine.place(req("SELL", "LIMIT", "tp", 1.0, price=150.0, reduce_only=True), at(0))
    for cid in ("nope", "a"):  # unknown, already FILLED
        with pytest.raises(VenueReject) as info:
            engine.cancel("X", cid, at(1))
        assert (info.value.code, info.value.msg) == (-2011, "Unknown order sent.")
    with pytest.raises(VenueReject, match="2011"):
        engine.cancel("X", "nope", at(1))
    with pytest.raises(VenueReject, match="Invalid symbol"):
        engine.cancel("Y", "tp", at(1))
    st1 = engine.cancel("X", "tp", at(2, 99))
    assert (st1.status, st1.update_time_ms) == ("CANCELED", at(2, 99))
    with pytest.raises(VenueReject, match="2011"):
        engine.cancel("X", "tp", at(2, 100))
    assert engine.open_orders() == []
    assert engine.get("Y", "tp") is None  # the client id belongs to X


def test_order_placed_in_a_bar_is_evaluated_on_it_and_cancel_skips_the_bar(
    engine: MatchingEngine,
) -> None:
    engine.place(req("BUY", "MARKET", "a", 2.0), at(0))
    # bar 1: high 103 reaches 102.5 -> fills at the price, at the bar's open time
    engine.place(req("SELL", "LIMIT", "tp", 1.0, price=102.5, reduce_only=True), at(1, 3_000_000))
    assert engine.get("X", "tp", at(1, 3_500_000)).status == "NEW"  # type: ignore[union-attr]
    st1 = engine.get("X", "tp", at(2))
    assert st1 is not None
    assert (st1.status, st1.avg_price, st1.update_time_ms) == ("FILLED", 102.5, T0 + STEP)
    # a stop cancelled in bar 2 is not evaluated on bar 2 (low 97 would hit it)
    engine.place_algo(req("SELL", "STOP_MARKET", "sl", 1.0, stop=98.0, reduce_only=True), at(1, 9))
    assert engine.get_algo("sl", at(2, 5)).algo_status == "NEW"  # type: ignore[union-attr]
    engine.cancel_algo("sl", at(2, 10))
    engine.advance(at(6))
    assert engine.get_algo("sl").algo_status == "CANCELED"  # type: ignore[union-attr]
    assert engine.get("X", "sl") is None  # never triggered: no order in the matching engine
    assert engine.positions() == [VenuePosition("X", 1.0, 100.0)]


def test_gap_through_fills_at_the_open(engine: MatchingEngine) -> None:
    engine.place(req("BUY", "MARKET", "a", 2.0), at(2))  # at 99
    engine.place(req("SELL", "LIMIT", "tp", 1.0, price=103.5, reduce_only=True), at(2))
    engine.place_algo(req("SELL", "STOP_MARKET", "sl", stop=97.5, close_position=True), at(2))
    engine.advance(at(3))  # bar 2: low 97 -> the stop at 97.5; tp expires (flat)
    assert engine.get("X", "sl").avg_price == 97.5  # type: ignore[union-attr]
    algo = engine.get_algo("sl")  # the algo order finished; its MARKET order holds the fill
    assert algo is not None
    child = engine.get_by_id("X", algo.actual_order_id or -1)
    assert child is not None
    assert (algo.algo_status, child.type, child.client_order_id) == ("FINISHED", "MARKET", "sl")
    assert (algo.actual_qty, algo.actual_price, algo.update_time_ms) == (2.0, 97.5, T0 + 2 * STEP)
    tp = engine.get("X", "tp")
    assert tp is not None
    assert (tp.status, tp.executed_qty) == ("NEW", 0.0)
    engine.advance(at(5))  # bar 3 opens at 104 > 103.5: triggers while flat -> EXPIRED
    tp = engine.get("X", "tp")
    assert tp is not None
    assert (tp.status, tp.update_time_ms) == ("EXPIRED", T0 + 3 * STEP)
    # a long stop gapped through at the bar-5 open (96 after the hole)
    eng = make_engine()
    eng.place(req("BUY", "MARKET", "b", 1.0), at(3))
    eng.place_algo(req("SELL", "STOP_MARKET", "sl2", 1.0, stop=100.0, reduce_only=True), at(3))
    eng.place(req("SELL", "LIMIT", "tp2", 1.0, price=110.0, reduce_only=True), at(3))
    eng.advance(at(6))
    assert eng.fills[-1] == Fill("sl2", T0 + 5 * STEP, 96.0, 1.0)
    assert eng.get("X", "tp2").status == "NEW"  # type: ignore[union-attr]


def test_short_side_stops_and_take_profits_with_slippage() -> None:
    o, h, lo = [100.0, 100.0, 100.0, 92.0], [101.0, 104.0, 101.0, 95.0], [99.0, 99.0, 93.0, 91.0]
    eng = MatchingEngine({"X": frame(o, h, lo)}, STEP, slippage_bps=100.0)
    eng.place(req("SELL", "MARKET", "e", 3.0), at(0))
    assert eng.fills[-1].price == 99.0
    eng.place_algo(req("BUY", "STOP_MARKET", "sl", 1.0, stop=103.0, reduce_only=True), at(1))
    eng.place_algo(req("BUY", "TAKE_PROFIT_MARKET", "tpm", 1.0, stop=94.0, reduce_only=True), at(1))
    eng.place(req("BUY", "LIMIT", "tpl", 5.0, price=93.5, reduce_only=True), at(1))
    eng.advance(at(2))  # bar 1: high 104 >= 103: buy stop at 103 * 1.01
    assert eng.fills[-1] == Fill("sl", T0 + STEP, 103.0 * 1.01, 1.0)
    eng.advance(at(3))  # bar 2: low 93: TP market at 94 (slipped up), then the limit at 93.5
    assert eng.fills[-2:] == [
        Fill("tpm", T0 + 2 * STEP, 94.0 * 1.01, 1.0),
        Fill("tpl", T0 + 2 * STEP, 93.5, 1.0),  # reduced to the position
    ]
    tpl = eng.get("X", "tpl")
    assert tpl is not None
    assert (tpl.orig_qty, tpl.executed_qty, tpl.status) == (1.0, 1.0, "FILLED")
    assert eng.positions() == []


def test_buy_stop_gapped_and_limit_entries() -> None:
    o, h, lo = [100.0, 105.0, 96.0], [101.0, 106.0, 97.0], [99.0, 104.0, 90.0]
    eng = MatchingEngine({"X": frame(o, h, lo)}, STEP)
    eng.place(req("SELL", "MARKET", "e", 1.0), at(0))
    eng.place_algo(req("BUY", "STOP_MARKET", "sl", stop=102.0, close_position=True), at(0))
    eng.place(req("BUY", "LIMIT", "buy-low", 2.0, price=95.0), at(0))
    eng.advance(at(2))  # bar 1 opens at 105 above the stop: fills at the open
    assert eng.fills[-1] == Fill("sl", T0 + STEP, 105.0, 1.0)
    sl = eng.get("X", "sl")
    assert sl is not None
    assert (sl.orig_qty, sl.close_position) == (0.0, True)
    eng.advance(at(3))  # bar 2: low 90 -> the entry limit buys 2 at 95
    assert eng.positions() == [VenuePosition("X", 2.0, 95.0)]
    # a buy limit above the open fills at the open (the better price)
    eng2 = MatchingEngine({"X": frame(o, h, lo)}, STEP)
    eng2.place(req("BUY", "LIMIT", "l", 1.0, price=110.0), at(1))
    eng2.advance(at(2))
    assert eng2.fills == [Fill("l", T0 + STEP, 105.0, 1.0)]
    assert eng2.last_price("X") == 96.0  # the open of the bar containing now
    assert eng2.last_price("X", at(9)) == 96.0  # after the data: the last close


def test_stops_before_take_profits_and_nearest_first() -> None:
    """A bar that holds both the stop and the take-profit counts as a stop."""
    eng = MatchingEngine({"X": frame([100.0], [110.0], [90.0])}, STEP)
    eng.place(req("BUY", "MARKET", "e", 2.0), at(0))
    eng.place(req("SELL", "LIMIT", "tp2", 1.0, price=108.0, reduce_only=True), at(0))
    eng.place(req("SELL", "LIMIT", "tp1", 1.0, price=104.0, reduce_only=True), at(0))
    eng.place_algo(req("SELL", "STOP_MARKET", "sl-far", 1.0, stop=92.0, reduce_only=True), at(0))
    eng.place_algo(req("SELL", "STOP_MARKET", "sl", 1.0, stop=95.0, reduce_only=True), at(0))
    eng.advance(at(1))
    assert [f.client_order_id for f in eng.fills] == ["e", "sl", "sl-far"]
    assert {st.client_order_id: st.status for st in map(eng.get, "XX", ("tp1", "tp2")) if st} == {
        "tp1": "EXPIRED",
        "tp2": "EXPIRED",
    }


def test_multi_symbol_time_order_and_queries() -> None:
    fx = frame([10.0, 11.0, 12.0], [10.5, 12.5, 12.5], [9.5, 10.5, 11.5])
    # Y's bars are offset by half a bar
    fy = frame([50.0, 51.0], [52.0, 53.0], [49.0, 50.0], times=[T0 + STEP // 2, T0 + STEP * 3 // 2])
    eng = MatchingEngine({"X": fx, "Y": fy}, STEP)
    assert eng.symbols == ["X", "Y"]
    t = T0 + STEP // 2
    eng.place(req("SELL", "LIMIT", "y1", 1.0, price=52.5, symbol="Y"), t)
    eng.place(req("BUY", "LIMIT", "x1", 1.0, price=9.9, symbol="X"), t + 1)
    eng.place(req("BUY", "LIMIT", "x2", 1.0, price=12.0, symbol="X"), t + 2)
    assert [s.client_order_id for s in eng.open_orders()] == ["y1", "x1", "x2"]
    assert [s.client_order_id for s in eng.open_orders("Y")] == ["y1"]
    eng.advance(T0 + 10 * STEP)
    # bar X0: x2 (the open is already below its price: fills at the open, first), then x1 at
    # its price; y1 in bar Y1 (t0 + 1.5 step)
    assert [(f.client_order_id, f.time_ms, f.price) for f in eng.fills] == [
        ("x2", T0, 10.0),
        ("x1", T0, 9.9),
        ("y1", T0 + STEP * 3 // 2, 52.5),
    ]
    assert eng.positions() == [
        VenuePosition("X", 2.0, (10.0 + 9.9) / 2),
        VenuePosition("Y", -1.0, 52.5),
    ]
    assert eng.last_price("X") == 12.0
    assert eng.last_price("Y", T0 + 11 * STEP) == 51.0
    with pytest.raises(VenueReject, match="Invalid symbol"):
        eng.open_orders("Z")
    with pytest.raises(VenueReject, match="Invalid symbol"):
        eng.rules("Z")
    # time never runs backwards
    eng.advance(T0)
    assert eng.now_ms == T0 + 11 * STEP


def test_last_price_before_any_bar_closed() -> None:
    eng = MatchingEngine({"X": frame([10.0, 11.0], [10.5, 11.5], [9.5, 10.5])}, STEP)
    assert eng.last_price("X", T0 - 5) == 0.0
    assert eng.last_price("X", at(1)) == 11.0


def test_bad_construction() -> None:
    good = frame([1.0], [1.0], [1.0])
    with pytest.raises(DataError, match="step_ms"):
        MatchingEngine({"X": good}, 0)
    with pytest.raises(DataError, match="slippage_bps"):
        MatchingEngine({"X": good}, STEP, slippage_bps=-1.0)
    with pytest.raises(DataError, match="lack columns"):
        MatchingEngine({"X": good.drop(columns=["low"])}, STEP)
    with pytest.raises(DataError, match="row 1"):
        MatchingEngine({"X": frame([1.0, 1.0], [1.0, 1.0], [1.0, 1.0], times=[5, 5])}, STEP)
    rules = {"Y": SymbolRules("Y", 1.0, 1.0, 1.0)}
    with pytest.raises(DataError, match="rules for Y"):
        MatchingEngine({"X": good}, STEP, rules=rules)


# ---- LocalVenue --------------------------------------------------------------------------


class Clock:
    def __init__(self, t_s: float) -> None:
        self.t_s = t_s

    def __call__(self) -> float:
        return self.t_s


async def test_local_venue_is_an_order_api(engine: MatchingEngine) -> None:
    clock = Clock(at(0) / 1000)
    venue = LocalVenue(engine, clock)
    entry = await venue.place_order(req("BUY", "MARKET", "e", 1.0))
    assert entry.status == "FILLED"
    again = await venue.place_order(req("BUY", "MARKET", "e", 1.0))  # idempotent
    assert again == entry
    assert len(engine.fills) == 1
    tp = await venue.place_order(req("SELL", "LIMIT", "tp", 1.0, price=102.5, reduce_only=True))
    assert [s.client_order_id for s in await venue.open_orders("X")] == ["tp"]
    assert [s.client_order_id for s in await venue.open_orders()] == ["tp"]
    assert await venue.positions() == [VenuePosition("X", 1.0, 100.0)]
    assert await venue.symbol_rules("X") == SymbolRules("X", 1e-9, 0.0, 1e-9)
    assert await venue.get_order("X", "nope") is None
    assert await venue.cancel_order("X", "nope") is None
    clock.t_s = at(1) / 1000  # bar 0 (high 102) closed: tp untouched
    assert (await venue.get_order("X", "tp")) == tp
    clock.t_s = at(2) / 1000  # bar 1 (high 103) closed: tp filled
    done = await venue.cancel_order("X", "tp")
    assert done is not None
    assert (done.status, done.avg_price) == ("FILLED", 102.5)
    assert await venue.positions() == []
    with pytest.raises(OrderRejected, match=r"X MARKET r: Binance error -2022: ReduceOnly"):
        await venue.place_order(req("SELL", "MARKET", "r", 1.0, reduce_only=True))
    with pytest.raises(OrderRejected, match="-1121"):
        await venue.cancel_order("Y", "tp")
    with pytest.raises(OrderRejected, match="-1121"):
        await venue.open_orders("Y")
    with pytest.raises(OrderRejected, match="-1121"):
        await venue.symbol_rules("Y")
