"""The paper broker: bar by bar, its closed trades are exactly the exit kernel's."""

from __future__ import annotations

import asyncio
import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atra.adapters.journal.records import PositionRecord
from atra.core.exits.api import ExitSpec, simulate_exits
from atra.core.exits.kernel import REASON_NAMES, STATUS_DONE
from atra.errors import DataError
from atra.live.paper import CLOSED, OPEN, PENDING, EntryRequest, PaperBroker, client_order_id

STEP = 3_600_000


def _path(
    rng: np.random.Generator, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    open_ = np.concatenate(([100.0], close[:-1])) * np.exp(rng.normal(0.0, 0.002, n))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, 0.006, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, 0.006, n)))
    times = np.arange(n, dtype=np.int64) * STEP + 1_700_000_000_000 // STEP * STEP
    return times, open_, high, low


async def _replay(
    broker: PaperBroker,
    times: np.ndarray,
    o: np.ndarray,
    h: np.ndarray,
    lo: np.ndarray,
    signals: dict[int, EntryRequest],
    window: int,
    restart_every: int = 0,
) -> tuple[PaperBroker, list[PositionRecord], list[object]]:
    """Feed bars one at a time (decision at bar t after its exits, like the loop)."""
    closed: list[PositionRecord] = []
    fills: list[object] = []
    state: dict[str, PositionRecord] = {}
    for t in range(len(times)):
        a = max(0, t + 1 - window)
        upd = await broker.on_bar("X", times[a : t + 1], o[a : t + 1], h[a : t + 1], lo[a : t + 1])
        fills.extend(upd.fills)
        for p in upd.positions:
            state[p.position_id] = p
        if t in signals:
            upd = await broker.submit(signals[t], reference_price=float(o[t]))
            for p in upd.positions:
                state[p.position_id] = p
        if restart_every and t % restart_every == 0:  # a new process picking up the journal
            fresh = PaperBroker(broker.spec, strategy=broker.strategy, run_id=broker.run_id)
            fresh.load(state.values())
            broker = fresh
    closed = [p for p in state.values() if p.status == CLOSED]
    return broker, closed, fills


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    tp1_fraction=st.sampled_from([1.0, 0.5, 0.3]),
    move_to_be=st.booleans(),
    slippage_bps=st.sampled_from([0.0, 3.0]),
    restart_every=st.sampled_from([0, 7]),
)
def test_closed_trades_equal_the_kernel(
    seed: int, tp1_fraction: float, move_to_be: bool, slippage_bps: float, restart_every: int
) -> None:
    rng = np.random.default_rng(seed)
    n = 160
    times, o, h, lo = _path(rng, n)
    spec = ExitSpec(
        tp1_fraction=tp1_fraction,
        move_to_be=move_to_be,
        fee_entry=0.0004,
        fee_tp=0.0002,
        fee_stop=0.0005,
        slippage_bps=slippage_bps,
    )
    sig_bars = sorted(rng.choice(np.arange(1, n - 1), size=12, replace=False).tolist())
    signals: dict[int, EntryRequest] = {}
    for t in sig_bars:
        sl = float(rng.uniform(0.005, 0.03) * o[t])
        tp1 = float(rng.uniform(0.005, 0.03) * o[t])
        tp2 = tp1 * float(rng.uniform(1.0, 2.0))
        side = int(rng.choice([-1, 1]))
        horizon = int(rng.integers(1, 30))
        signals[t] = EntryRequest("X", side, int(times[t]), 1.5, sl, tp1, tp2, horizon)
    broker = PaperBroker(spec, strategy="s", run_id="r")
    broker, closed, fills = asyncio.run(
        _replay(broker, times, o, h, lo, signals, 40, restart_every)
    )

    ev = [signals[t] for t in sig_bars]
    ref = simulate_exits(
        o, h, lo,
        [t + 1 for t in sig_bars],
        [e.side for e in ev],
        [e.sl_dist for e in ev],
        [e.tp1_dist for e in ev],
        [e.tp2_dist for e in ev],
        [e.horizon_bars for e in ev],
        spec,
    )  # fmt: skip
    by_time = {p.signal_time_ms: p for p in closed}
    still_open = {p.signal_time_ms for p in broker.positions()}
    for k, t in enumerate(sig_bars):
        t_ms = int(times[t])
        if ref.status[k] != STATUS_DONE:
            assert t_ms in still_open
            assert t_ms not in by_time
            continue
        pos = by_time[t_ms]
        assert pos.entry_time_ms == int(times[t + 1])
        assert pos.entry_price == ref.entry_price[k]
        assert pos.exit_time_ms == int(times[ref.exit_bar[k]])
        final = ref.leg2_reason[k] if ref.leg2_reason[k] else ref.leg1_reason[k]
        assert pos.reason == REASON_NAMES[int(final)]
        final_price = ref.leg2_price[k] if ref.leg2_reason[k] else ref.leg1_price[k]
        assert pos.exit_price == final_price
        assert pos.ret_net == ref.ret_net[k]
        committed = 1.5 * ref.entry_price[k] * (1.0 + spec.fee_entry)
        assert pos.pnl == pytest.approx(ref.ret_net[k] * committed, rel=1e-9, abs=1e-9)
        assert pos.legs_done == (2 if ref.leg2_reason[k] else 1)
        # the fills' own cash (entry fee, legs net of exit fees) adds up to the trade's P&L
        own = [f.pnl for f in fills if f.client_order_id == pos.position_id]  # type: ignore[attr-defined]
        assert sum(own) == pytest.approx(pos.pnl, rel=1e-9, abs=1e-9)
    # every fill is booked exactly once
    keys = [(f.client_order_id, f.leg) for f in fills]  # type: ignore[attr-defined]
    assert len(keys) == len(set(keys))


async def test_entry_fills_at_next_open_with_slippage_and_partial_is_booked() -> None:
    spec = ExitSpec(
        tp1_fraction=0.5, fee_entry=0.001, fee_tp=0.001, fee_stop=0.001, slippage_bps=10
    )
    broker = PaperBroker(spec, strategy="s", run_id="r")
    times = np.arange(6, dtype=np.int64) * STEP
    o = np.array([100.0, 100.0, 101.0, 103.0, 103.0, 103.0])
    h = np.array([100.5, 100.5, 102.5, 103.5, 103.5, 103.5])
    lo = np.array([99.5, 99.5, 100.5, 102.5, 102.5, 102.5])
    req = EntryRequest("X", 1, 0, 2.0, sl_dist=5.0, tp1_dist=2.0, tp2_dist=10.0, horizon_bars=10)
    upd = await broker.submit(req, reference_price=100.0)
    assert [p.status for p in upd.positions] == [PENDING]
    assert upd.orders[0].client_order_id == client_order_id("r", "X", 0)
    assert (await broker.submit(req)).orders == []  # same bar again: no second order
    assert (
        await broker.on_bar("X", times[:1], o[:1], h[:1], lo[:1])
    ).fills == []  # entry not closed
    upd = await broker.on_bar("X", times[:2], o[:2], h[:2], lo[:2])
    (entry_fill,) = upd.fills
    assert entry_fill.leg == "entry"
    assert entry_fill.price == pytest.approx(100.0 * 1.001)
    assert entry_fill.pnl == pytest.approx(-2.0 * 100.1 * 0.001)  # the entry fee, booked now
    assert [o_.status for o_ in upd.orders] == ["filled"]
    assert upd.positions[0].status == OPEN
    assert broker.unrealized("X", 101.0) == pytest.approx(2.0 * (101.0 - 100.1))
    upd = await broker.on_bar("X", times[:3], o[:3], h[:3], lo[:3])  # high 102.5 >= TP1 102.1
    (leg1,) = upd.fills
    assert (leg1.leg, leg1.reason, leg1.quantity) == ("leg1", "TP1", 1.0)
    assert leg1.pnl == pytest.approx((102.1 - 100.1) - 102.1 * 0.001)  # gain minus exit fee
    assert upd.positions[0].legs_done == 1
    assert broker.unrealized("X", 101.0) == pytest.approx(1.0 * (101.0 - 100.1))
    assert (await broker.on_bar("X", times[:4], o[:4], h[:4], lo[:4])).fills == []
    assert broker.open_count("X") == 1
    assert broker.unrealized("Y", 1.0) == 0.0


async def test_pending_position_has_no_unrealized_pnl() -> None:
    broker = PaperBroker(ExitSpec(), strategy="s", run_id="r")
    await broker.submit(EntryRequest("X", -1, 0, 1.0, 1.0, 1.0, 2.0, 5), reference_price=10.0)
    assert broker.unrealized("X", 9.0) == 0.0
    assert broker.positions()[0].entry_price == 10.0


def test_client_order_id_is_deterministic_and_short() -> None:
    a = client_order_id("run", "BTCUSDT", 1_700_000_000_000)
    assert a == client_order_id("run", "BTCUSDT", 1_700_000_000_000)
    assert re.fullmatch(r"[a-z0-9]{1,36}", a)
    others = {
        client_order_id("run2", "BTCUSDT", 1_700_000_000_000),
        client_order_id("run", "ETHUSDT", 1_700_000_000_000),
        client_order_id("run", "BTCUSDT", 1_700_003_600_000),
        client_order_id("run", "BTCUSDT", 1_700_000_000_000, "exit"),
    }
    assert a not in others
    assert len(others) == 4


@pytest.mark.parametrize("qty", [0.0, -1.0, math.nan])
async def test_bad_quantity_is_refused(qty: float) -> None:
    broker = PaperBroker(ExitSpec(), strategy="s", run_id="r")
    with pytest.raises(DataError, match="quantity must be > 0"):
        await broker.submit(EntryRequest("X", 1, 0, qty, 1.0, 1.0, 2.0, 5))


async def test_signal_bar_outside_window_is_an_error() -> None:
    broker = PaperBroker(ExitSpec(), strategy="s", run_id="r")
    await broker.submit(EntryRequest("X", 1, 0, 1.0, 1.0, 1.0, 2.0, 5))
    times = np.array([STEP, 2 * STEP], dtype=np.int64)
    prices = np.array([10.0, 10.0])
    with pytest.raises(DataError, match="signal bar is not in the candle window"):
        await broker.on_bar("X", times, prices, prices, prices)


def test_load_ignores_closed_positions() -> None:
    broker = PaperBroker(ExitSpec(), strategy="s", run_id="r")
    pos = PositionRecord("p", "s", "X", 1, 0, 1.0, 1.0, 1.0, 2.0, 5, CLOSED)
    broker.load([pos, PositionRecord("q", "s", "X", 1, 0, 1.0, 1.0, 1.0, 2.0, 5, OPEN, 0, 1.0)])
    assert [p.position_id for p in broker.positions()] == ["q"]
