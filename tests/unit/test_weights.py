"""Sample weights: uniqueness against a slow per-time-step reference, decay, balancing."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.utils.class_weight import compute_sample_weight

from atra.core.weights import average_uniqueness, sample_weights, time_decay
from atra.errors import DataError

FloatArray = npt.NDArray[np.float64]


def slow_uniqueness_continuous(t0: list[int], t1: list[int]) -> FloatArray:
    """Integer endpoints: unit steps [t, t+1) are the elementary pieces; plain loops."""
    out = []
    for a, b in zip(t0, t1, strict=True):
        vals = []
        for t in range(a, b):
            c = sum(1 for s, e in zip(t0, t1, strict=True) if s <= t < e)
            vals.append(1.0 / c)
        out.append(sum(vals) / len(vals))
    return np.array(out)


def slow_uniqueness_bars(t0: list[int], t1: list[int], bar_ms: int) -> FloatArray:
    """AFML ch. 4 literally: bars from t0's bar to t1's bar inclusive, mean of 1/c_t."""
    spans = [(a // bar_ms, b // bar_ms) for a, b in zip(t0, t1, strict=True)]
    out = []
    for s, e in spans:
        vals = [1.0 / sum(1 for s2, e2 in spans if s2 <= bar <= e2) for bar in range(s, e + 1)]
        out.append(sum(vals) / len(vals))
    return np.array(out)


def slow_decay(u: list[float], t0: list[int], c: float) -> FloatArray:
    order = sorted(range(len(u)), key=lambda i: (t0[i], i))
    cum, run = {}, 0.0
    for i in order:
        run += u[i]
        cum[i] = run
    total = run
    slope = (1.0 - c) / total if c >= 0 else 1.0 / ((c + 1.0) * total)
    const = 1.0 - slope * total
    return np.array([max(const + slope * cum[i], 0.0) for i in range(len(u))])


intervals = st.lists(
    st.tuples(st.integers(0, 60), st.integers(1, 25)), min_size=1, max_size=25
).map(lambda pairs: ([a for a, _ in pairs], [a + d for a, d in pairs]))


@settings(max_examples=80, deadline=None)
@given(intervals)
def test_uniqueness_matches_slow_reference_continuous(iv: tuple[list[int], list[int]]) -> None:
    t0, t1 = iv
    got = average_uniqueness(np.array(t0), np.array(t1))
    np.testing.assert_allclose(got, slow_uniqueness_continuous(t0, t1), rtol=1e-12)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 400), st.integers(0, 120)), min_size=1, max_size=25),
    st.sampled_from([1, 7, 10]),
)
def test_uniqueness_matches_slow_reference_bars(pairs: list[tuple[int, int]], bar: int) -> None:
    t0 = [a for a, _ in pairs]
    t1 = [a + d for a, d in pairs]  # zero-length labels allowed on the bar clock
    got = average_uniqueness(np.array(t0), np.array(t1), bar_ms=bar)
    np.testing.assert_allclose(got, slow_uniqueness_bars(t0, t1, bar), rtol=1e-12)


def test_uniqueness_on_large_random_ms_timestamps() -> None:
    rng = np.random.default_rng(3)
    hour = 3_600_000
    base = 1_600_000_000_000
    t0 = base + rng.integers(0, 200, 40) * hour
    t1 = t0 + rng.integers(1, 30, 40) * hour
    got = average_uniqueness(t0, t1)
    ref = slow_uniqueness_continuous(
        [int(x) for x in (t0 - base) // hour], [int(x) for x in (t1 - base) // hour]
    )
    np.testing.assert_allclose(got, ref, rtol=1e-9)


def test_disjoint_labels_are_fully_unique_and_identical_ones_share() -> None:
    assert average_uniqueness(np.array([0, 10]), np.array([5, 20])).tolist() == [1.0, 1.0]
    np.testing.assert_allclose(average_uniqueness(np.array([0, 0, 0]), np.array([9, 9, 9])), 1 / 3)


def test_per_symbol_counts_concurrency_within_symbol_only() -> None:
    t0 = np.array([0, 0, 0])
    t1 = np.array([10, 10, 10])
    sym = np.array(["BTC", "ETH", "BTC"])
    np.testing.assert_allclose(average_uniqueness(t0, t1, sym), [0.5, 1.0, 0.5])
    np.testing.assert_allclose(average_uniqueness(t0, t1, sym, per_symbol=False), 1 / 3)
    np.testing.assert_allclose(average_uniqueness(t0, t1, None), 1 / 3)


@settings(max_examples=60, deadline=None)
@given(intervals, st.floats(-0.95, 1.0))
def test_time_decay_matches_afml_reference(iv: tuple[list[int], list[int]], c: float) -> None:
    t0, t1 = iv
    u = average_uniqueness(np.array(t0), np.array(t1))
    got = time_decay(u, np.array(t0), c)
    np.testing.assert_allclose(got, slow_decay(list(u), t0, c), rtol=1e-9, atol=1e-12)
    assert got.max() == pytest.approx(1.0)
    assert np.all(got >= 0.0)


def test_time_decay_shape() -> None:
    t0 = np.array([30, 10, 20, 0])
    u = np.ones(4)
    assert time_decay(u, t0, 1.0).tolist() == [1.0, 1.0, 1.0, 1.0]
    np.testing.assert_allclose(time_decay(u, t0, 0.0), [1.0, 0.5, 0.75, 0.25])
    # negative: the oldest half of cumulative uniqueness gets zero weight
    np.testing.assert_allclose(time_decay(u, t0, -0.5), [1.0, 0.0, 0.5, 0.0])
    assert time_decay(np.empty(0), np.empty(0, dtype=np.int64), 0.5).size == 0


def test_sample_weights_compose_balanced_uniqueness_decay() -> None:
    rng = np.random.default_rng(0)
    t0 = np.sort(rng.integers(0, 1000, 50))
    t1 = t0 + rng.integers(1, 40, 50)
    y = (rng.random(50) < 0.3).astype(int)
    sym = rng.choice(["A", "B"], 50)
    w = sample_weights(y, t0, t1, sym, decay=0.2)
    raw = (
        compute_sample_weight("balanced", y)
        * average_uniqueness(t0, t1, sym)
        * time_decay(average_uniqueness(t0, t1, sym), t0, 0.2)
    )
    np.testing.assert_allclose(w, raw * (50 / raw.sum()))
    assert w.mean() == pytest.approx(1.0)
    no_decay = sample_weights(y, t0, t1, sym)
    raw2 = compute_sample_weight("balanced", y) * average_uniqueness(t0, t1, sym)
    np.testing.assert_allclose(no_decay, raw2 * (50 / raw2.sum()))
    assert sample_weights(np.array([], dtype=int), np.array([], dtype=np.int64), []).size == 0


def test_balanced_weights_equalise_class_mass_for_disjoint_labels() -> None:
    t0 = np.arange(10) * 10
    w = sample_weights(np.array([1, 0, 0, 0, 0, 0, 0, 0, 0, 1]), t0, t0 + 5)
    assert w[[0, 9]].sum() == pytest.approx(w[1:9].sum())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"t0": [5], "t1": [4]}, "label row 0: t1=4 is before t0=5"),
        ({"t0": [0, 1], "t1": [2]}, "differ in length"),
        ({"t0": [0.5], "t1": [2]}, "integer ms"),
        ({"t0": [[0]], "t1": [[2]]}, "1-d"),
        ({"t0": [0, 3], "t1": [1, 3]}, "label row 1: t1 == t0"),
        ({"t0": [0], "t1": [1], "bar_ms": 0}, "bar_ms must be positive"),
        ({"t0": [0], "t1": [1], "symbols": ["A", "B"]}, "symbols and t0"),
    ],
)
def test_uniqueness_rejects_bad_input(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(DataError, match=match):
        average_uniqueness(**kwargs)  # type: ignore[arg-type]


def test_bad_inputs_for_decay_and_weights() -> None:
    with pytest.raises(DataError, match="decay must be in"):
        time_decay(np.ones(2), np.array([0, 1]), 1.5)
    with pytest.raises(DataError, match="uniqueness and t0"):
        time_decay(np.ones(3), np.array([0, 1]), 0.5)
    with pytest.raises(DataError, match="y and t0"):
        sample_weights(np.array([0, 1, 1]), np.array([0, 1]), np.array([2, 3]))
    with pytest.raises(DataError, match="y: expected a 1-d"):
        sample_weights(np.zeros((2, 1)), np.array([0, 1]), np.array([2, 3]))
