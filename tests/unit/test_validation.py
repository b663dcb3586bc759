"""Walk-forward splits: purge + embargo invariants, window layout, warm-up, bad input."""

from __future__ import annotations

import itertools

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atra.core.validation import DAY_MS, Fold, purge_and_embargo, walk_forward_splits
from atra.errors import ConfigError, DataError

IntArray = npt.NDArray[np.int64]


def assert_fold_is_clean(fold: Fold, t0: IntArray, t1: IntArray, embargo_ms: int) -> None:
    tr, te = fold.train_idx, fold.test_idx
    # no training label interval [t0, t1] overlaps the test window [start, end)
    overlap = (t1[tr] >= fold.test_start_ms) & (t0[tr] < fold.test_end_ms)
    assert not overlap.any()
    # training spans + embargo end strictly before the test span
    assert np.all(t1[tr] + embargo_ms < fold.test_start_ms)
    assert np.all(t1[tr] < fold.train_end_ms)
    assert fold.train_end_ms == fold.test_start_ms - embargo_ms
    assert np.all(t0[tr] >= fold.train_start_ms)
    # test events are exactly the events decided inside the window
    assert np.all((t0[te] >= fold.test_start_ms) & (t0[te] < fold.test_end_ms))
    assert np.intersect1d(tr, te).size == 0
    assert np.all(np.diff(tr) > 0)
    assert np.all(np.diff(te) > 0)


events = st.lists(
    st.tuples(st.integers(0, 2_000), st.integers(0, 300)), min_size=1, max_size=80
).map(
    lambda pairs: (
        np.array([a for a, _ in pairs], dtype=np.int64),
        np.array([a + d for a, d in pairs], dtype=np.int64),
    )
)


@settings(max_examples=150, deadline=None)
@given(
    events,
    st.integers(0, 500),
    st.integers(1, 400),
    st.integers(0, 200),
    st.sampled_from(["expanding", "rolling"]),
    st.integers(1, 800),
    st.integers(1, 5),
)
def test_every_fold_is_purged_and_embargoed(
    ev: tuple[IntArray, IntArray],
    start: int,
    span: int,
    embargo: int,
    mode: str,
    train_span: int,
    min_train: int,
) -> None:
    t0, t1 = ev
    folds = walk_forward_splits(
        t0,
        t1,
        start_ms=start,
        test_span_ms=span,
        train=mode,  # type: ignore[arg-type]
        train_span_ms=train_span,
        embargo_ms=embargo,
        min_train_events=min_train,
    )
    seen_test: list[int] = []
    for k, fold in enumerate(folds):
        assert fold.fold_id == k
        assert fold.train_idx.size >= min_train
        assert fold.test_idx.size > 0
        assert_fold_is_clean(fold, t0, t1, embargo)
        if mode == "rolling":
            assert np.all(t0[fold.train_idx] >= fold.test_start_ms - train_span)
        seen_test.extend(fold.test_idx.tolist())
        # everything decided before the window that is not purged/embargoed is trained on
        lo = fold.train_start_ms
        cand = np.flatnonzero((t0 >= lo) & (t0 < fold.test_start_ms))
        assert cand.size == fold.train_idx.size + fold.n_purged + fold.n_embargoed
    assert len(seen_test) == len(set(seen_test))  # each event is tested at most once
    # folds move forward in time and test windows do not overlap
    for f1, f2 in itertools.pairwise(folds):
        assert f1.test_end_ms <= f2.test_start_ms


def test_monthly_expanding_layout_and_counts() -> None:
    t0 = np.arange(0, 120) * DAY_MS  # one event a day for 120 days, each lasting 3 days
    t1 = t0 + 3 * DAY_MS
    folds = walk_forward_splits(
        t0, t1, start_ms=60 * DAY_MS, test_span_ms=30 * DAY_MS, embargo_ms=DAY_MS
    )
    assert [f.test_start_ms // DAY_MS for f in folds] == [60, 90]
    f0 = folds[0]
    assert f0.test_idx.tolist() == list(range(60, 90))
    # labels from days 57, 58, 59 reach into the window (purged); day 56 ends at 59 (embargo)
    assert f0.train_idx.tolist() == list(range(0, 56))
    assert (f0.n_purged, f0.n_embargoed) == (3, 1)
    assert folds[1].train_idx.tolist() == list(range(0, 86))


def test_rolling_window_drops_old_events() -> None:
    t0 = np.arange(0, 100) * DAY_MS
    t1 = t0 + DAY_MS // 2
    folds = walk_forward_splits(
        t0,
        t1,
        start_ms=50 * DAY_MS,
        test_span_ms=10 * DAY_MS,
        train="rolling",
        train_span_ms=20 * DAY_MS,
    )
    assert folds[0].train_idx.tolist() == list(range(30, 50))
    assert folds[0].train_start_ms == 30 * DAY_MS


def test_warm_up_folds_are_skipped_and_empty_windows_too() -> None:
    t0 = np.array([0, 1, 2, 50, 51, 52, 300], dtype=np.int64)
    t1 = t0 + 1
    folds = walk_forward_splits(t0, t1, start_ms=0, test_span_ms=10, min_train_events=3)
    # window [0,10) has no training data; windows without events produce no fold
    assert [(f.test_start_ms, f.train_idx.size) for f in folds] == [(50, 3), (300, 6)]
    assert [f.fold_id for f in folds] == [0, 1]


def test_end_ms_caps_the_last_window_and_row_order_is_free() -> None:
    rng = np.random.default_rng(1)
    t0 = rng.permutation(np.arange(100, dtype=np.int64))
    t1 = t0 + 5
    folds = walk_forward_splits(t0, t1, start_ms=20, test_span_ms=30, end_ms=65)
    assert [(f.test_start_ms, f.test_end_ms) for f in folds] == [(20, 50), (50, 65)]
    assert sorted(t0[folds[1].test_idx].tolist()) == list(range(50, 65))
    for f in folds:
        assert_fold_is_clean(f, t0, t1, 0)


def test_purge_and_embargo_after_the_test_window() -> None:
    t0 = np.array([0, 40, 55, 61, 70], dtype=np.int64)
    t1 = np.array([10, 52, 58, 62, 75], dtype=np.int64)
    cand = np.arange(5, dtype=np.int64)
    kept, n_purged, n_emb = purge_and_embargo(t0, t1, cand, 50, 60, embargo_ms=5)
    # row1 overlaps, row2 is inside; row3 starts within 5 ms after the window
    assert kept.tolist() == [0, 4]
    assert (n_purged, n_emb) == (2, 1)


def test_no_events_means_no_folds() -> None:
    empty = np.array([], dtype=np.int64)
    assert walk_forward_splits(empty, empty, start_ms=0, test_span_ms=10) == []


@pytest.mark.parametrize(
    ("kwargs", "err", "match"),
    [
        ({"test_span_ms": 0}, ConfigError, "test_span_ms must be positive"),
        ({"embargo_ms": -1}, ConfigError, "embargo_ms must be >= 0"),
        ({"min_train_events": 0}, ConfigError, "min_train_events"),
        ({"train": "rolling"}, ConfigError, "positive train_span_ms"),
        ({"train": "anchored"}, ConfigError, "'expanding' or 'rolling'"),
    ],
)
def test_bad_config_is_rejected(
    kwargs: dict[str, object], err: type[Exception], match: str
) -> None:
    args: dict[str, object] = {"start_ms": 0, "test_span_ms": 10} | kwargs
    with pytest.raises(err, match=match):
        walk_forward_splits(np.array([1]), np.array([2]), **args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("t0", "t1", "match"),
    [
        ([5], [4], "event row 0: t1=4 is before t0=5"),
        ([1, 2], [3], "differ in length"),
        ([1.5], [3], "t0: expected a 1-d array of int64 ms"),
        ([1], [[3]], "t1: expected"),
    ],
)
def test_bad_events_are_rejected(t0: list[object], t1: list[object], match: str) -> None:
    with pytest.raises(DataError, match=match):
        walk_forward_splits(np.array(t0), np.array(t1), start_ms=0, test_span_ms=10)
