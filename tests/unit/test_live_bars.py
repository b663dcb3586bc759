"""A cycle's new bars as arrays (:class:`Bars`) into the candle window, no pandas frame."""

from __future__ import annotations

import numpy as np
import pandas as pd

from atra.live.settings import CANDLE_COLS, Bars, Window, append_after

STEP = 3_600_000


def _bars(first: int, n: int, base: float = 0.0) -> Bars:
    """Bars ``first .. first + n - 1``; column k of bar i holds base + 10 (k + 1) + i."""
    t = (first + np.arange(n, dtype=np.int64)) * STEP
    cols = np.stack([base + np.arange(first, first + n) + 10.0 * (k + 1) for k in range(5)])
    return Bars(t, cols)


def test_bars_after_and_append_only_the_new_ones() -> None:
    win = Window(4)
    append_after(win, _bars(0, 3))
    append_after(win, _bars(1, 4, base=100.0))  # 1 and 2 are held already: 3, 4 are added
    assert win.open_time.tolist() == [k * STEP for k in range(5)]
    assert win.cols["close"].tolist() == [40.0, 41.0, 42.0, 143.0, 144.0]
    assert len(_bars(0, 3).after(STEP)) == 1
    assert len(_bars(0, 3).after(None)) == 3
    assert len(Bars.empty()) == 0


def test_bars_of_a_frame_and_window_frame_with_the_next_bar() -> None:
    frame = pd.DataFrame({"open_time": np.array([0, STEP], np.int64)})
    for k, c in enumerate(CANDLE_COLS):
        frame[c] = [1.0 + k, 2.0 + k]
    bars = Bars.of(frame)
    assert bars.cols.shape == (5, 2)
    assert bars.cols[3].tolist() == [4.0, 5.0]  # close
    win = Window(2)
    win.append_arrays(bars.open_time, bars.cols)
    nxt = _bars(2, 1)
    out = win.frame(0, len(win), then=nxt)
    assert out["open_time"].tolist() == [0, STEP, 2 * STEP]
    assert out["close"].tolist() == [4.0, 5.0, float(nxt.cols[3][0])]
    assert len(win) == 2  # the window itself is unchanged
