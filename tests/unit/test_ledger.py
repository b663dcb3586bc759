"""The live loop's books: realised cash by time and funding charges (the backtest's rules)."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from atra.adapters.journal.records import PositionRecord
from atra.errors import DataError
from atra.live.ledger import FUNDING_LEG, FUNDING_PAGE, FundingBook, Ledger

H = 3_600_000


@given(st.lists(st.tuples(st.integers(0, 50), st.floats(-100, 100)), max_size=40))
def test_ledger_sums_fills_strictly_before_a_time(fills: list[tuple[int, float]]) -> None:
    ledger = Ledger()
    for t, pnl in fills:  # any order: late fills are inserted at their time
        ledger.add(t, pnl)
    for cut in range(0, 52, 5):
        expected = sum(p for t, p in fills if t < cut)
        assert ledger.before(cut) == pytest.approx(expected, abs=1e-9)


def _pos(pid: str, side: int, entry_time: int | None, status: str = "open") -> PositionRecord:
    return PositionRecord(
        pid, "s", "X", side, 0, 2.0, 1.0, 1.0, 2.0, 48, status,
        entry_time_ms=entry_time, entry_price=100.0,
    )  # fmt: skip


def _funding(times: list[int], rates: list[float]) -> pd.DataFrame:
    return pd.DataFrame(
        {"funding_time": np.array(times, np.int64), "funding_rate": np.array(rates, np.float64)}
    )


def test_funding_charged_once_at_the_first_bar_at_or_after_its_time() -> None:
    book = FundingBook()
    assert book.known_until("X") is None
    # funding at 8h exactly and at 16h + 3 ms (Binance's times jitter by a few ms)
    book.extend("X", _funding([8 * H, 16 * H + 3], [0.001, -0.002]), start_ms=1, upto_ms=20 * H)
    assert book.known_until("X") == 20 * H
    open_time = np.arange(0, 21, dtype=np.int64) * H
    open_ = 100.0 + np.arange(21, dtype=np.float64)
    positions = [
        _pos("long", 1, 8 * H),  # entered at 8h: the 8h funding is not its own
        _pos("short", -1, 2 * H),
        _pos("pending", 1, None, "pending"),
    ]
    fills = book.charges("X", 20 * H, positions, lambda p: p.quantity, open_time, open_)
    got = {(f.client_order_id, f.leg): f for f in fills}
    assert set(got) == {
        ("short", f"{FUNDING_LEG}{8 * H}"),
        ("short", f"{FUNDING_LEG}{16 * H + 3}"),
        ("long", f"{FUNDING_LEG}{16 * H + 3}"),
    }
    short8 = got[("short", f"{FUNDING_LEG}{8 * H}")]
    assert (short8.time_ms, short8.price) == (8 * H, 108.0)
    assert short8.pnl == pytest.approx(-(-1 * 2.0 * 108.0 * 0.001))  # shorts receive
    long16 = got[("long", f"{FUNDING_LEG}{16 * H + 3}")]
    assert long16.time_ms == 17 * H  # booked at the next bar open, marked at 16h's open
    assert long16.price == 116.0
    assert long16.pnl == pytest.approx(-(2.0 * 116.0 * -0.002))
    assert book.paid("short") == pytest.approx(-2.0 * 108.0 * 0.001 + 2.0 * 116.0 * 0.002)
    # a second call (a bar seen twice, a restart) charges nothing again
    assert book.charges("X", 20 * H, positions, lambda p: p.quantity, open_time, open_) == []
    fresh = FundingBook()
    fresh.restore([(f.time_ms, f.pnl, f.client_order_id, f.leg) for f in fills])
    fresh.restore([(0, -1.0, "short", "entry")])  # not funding: ignored
    fresh.extend("X", _funding([8 * H, 16 * H + 3], [0.001, -0.002]), start_ms=1, upto_ms=20 * H)
    assert fresh.charges("X", 20 * H, positions, lambda p: p.quantity, open_time, open_) == []
    assert fresh.paid("short") == pytest.approx(book.paid("short"))


def test_extend_appends_only_new_times_and_a_full_page_bounds_what_is_known() -> None:
    book = FundingBook()
    times = list(range(H, (FUNDING_PAGE + 1) * H, H))
    book.extend("X", _funding(times, [1e-4] * len(times)), start_ms=1, upto_ms=10_000 * H)
    assert book.known_until("X") == times[-1]  # a full page: later rates may exist
    book.extend("X", _funding([times[-1], times[-1] + H], [1e-4, 2e-4]),
                start_ms=times[-1], upto_ms=10_000 * H)  # fmt: skip
    assert book.known_until("X") == 10_000 * H
    open_time = np.array([0, times[-1] + H], np.int64)
    fills = book.charges("X", times[-1] + H, [_pos("p", 1, times[-1])], lambda p: 1.0,
                         open_time, np.array([1.0, 1.0]))  # fmt: skip
    assert [f.leg for f in fills] == [f"{FUNDING_LEG}{times[-1] + H}"]


@pytest.mark.parametrize(
    ("times", "rates", "match"),
    [
        ([2 * H, H], [0.0, 0.0], "not strictly increasing"),
        ([30 * H], [0.0], "outside"),
        ([H], [float("nan")], "not a finite number"),
    ],
)
def test_bad_funding_pages_are_refused(times: list[int], rates: list[float], match: str) -> None:
    with pytest.raises(DataError, match=match):
        FundingBook().extend("X", _funding(times, rates), start_ms=1, upto_ms=20 * H)


def test_funding_outside_the_candle_window_is_an_error() -> None:
    book = FundingBook()
    book.extend("X", _funding([8 * H], [0.001]), start_ms=1, upto_ms=9 * H)
    open_time = np.array([9 * H], np.int64)
    with pytest.raises(DataError, match="no candle in the window"):
        book.charges("X", 9 * H, [_pos("p", 1, 0)], lambda p: 1.0, open_time, np.array([1.0]))
    assert FundingBook().charges("Y", 9 * H, [], lambda p: 1.0, open_time, np.array([1.0])) == []


@given(
    st.lists(
        st.tuples(st.integers(0, 20), st.text("abc", max_size=3), st.floats(-1e6, 1e6)),
        max_size=30,
        unique_by=lambda f: (f[0], f[1]),
    ),
    st.randoms(use_true_random=False),
)
def test_ledger_sums_are_bit_identical_in_any_arrival_order(
    fills: list[tuple[int, str, float]], rnd: random.Random
) -> None:
    """A run restarted from its journal (fills in key order) and one that never stopped
    (fills as they happened) must mark the same equity to the last bit."""
    a, b = Ledger(), Ledger()
    for t, cid, pnl in fills:
        a.add(t, pnl, cid, "leg1")
    shuffled = list(fills)
    rnd.shuffle(shuffled)
    for t, cid, pnl in shuffled:
        b.add(t, pnl, cid, "leg1")
    for cut in range(22):
        assert a.before(cut) == b.before(cut)
