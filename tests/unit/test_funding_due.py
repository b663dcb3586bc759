"""When the live feed fetches funding: the interval is read from the rows held."""

from __future__ import annotations

import numpy as np

from atra.live.funding_due import funding_due, recent_funding_times

H = 3_600_000


def _times(*hours: float) -> np.ndarray:
    return np.array([int(h * H) for h in hours], np.int64)


def test_due_once_the_next_interval_is_reached() -> None:
    eight = _times(0, 8, 16)
    assert not funding_due(eight, 24 * H - 1)  # the bar closing at the settlement: not yet
    assert funding_due(eight, 24 * H)
    four = _times(0, 4, 8)  # another symbol's interval, read from its own rows
    assert not funding_due(four, 12 * H - 1)
    assert funding_due(four, 12 * H)


def test_a_late_row_keeps_the_gate_open() -> None:
    """Until the expected row arrives, every later fetch is due."""
    held = _times(0, 8, 16)
    assert funding_due(held, 25 * H)
    assert funding_due(held, 30 * H)


def test_unknown_interval_is_always_due() -> None:
    assert funding_due(None, 0)
    assert funding_due(_times(), 0)
    assert funding_due(_times(8), 9 * H)


def test_millisecond_jitter_and_a_shortened_interval() -> None:
    # settlement a few ms after the hour: the next one is still fetched at the hour's bar
    jittered = np.array([0, 8 * H + 3, 16 * H + 7], np.int64)
    assert funding_due(jittered, 24 * H)
    assert not funding_due(jittered, 24 * H - 1)
    # 8 h then 4 h: the shortest recent spacing rules
    assert funding_due(_times(0, 8, 16, 20), 24 * H)


def test_recent_times_keep_the_tail_after_the_held_ones() -> None:
    held = _times(0, 8, 16)
    out = recent_funding_times(held, _times(16, 24, 32))
    assert out.tolist() == _times(8, 16, 24, 32).tolist()
    assert recent_funding_times(None, _times(0, 8)).tolist() == _times(0, 8).tolist()
