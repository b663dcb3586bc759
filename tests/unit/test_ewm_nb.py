"""The numba EMA / Wilder ATR kernel against pandas' ``ewm(adjust=False).mean()``: equal bit
for bit (NaN where pandas has NaN), on random prices, runs of equal values and missing
values, for the spans and alphas the rules use."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from atra.core.signals.candles import atr_wilder, ema
from atra.core.signals.ewm_nb import alpha_com, ewm_mean, span_com

values = arrays(
    np.float64,
    st.integers(0, 60),
    elements=st.one_of(
        st.floats(-1e6, 1e6, allow_nan=False, width=64),
        st.just(np.nan),
        st.sampled_from([0.0, 1.0, 100.0]),  # repeats: the w == x branch
    ),
)


def same(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal bit for bit, NaN in the same places."""
    return a.shape == b.shape and a.tobytes() == b.tobytes()


@settings(max_examples=300, deadline=None)
@given(x=values, span=st.integers(1, 300))
def test_span_mean_is_pandas_bit_for_bit(x: np.ndarray, span: int) -> None:
    want = pd.Series(x).ewm(span=span, adjust=False).mean().to_numpy(np.float64)
    got = ewm_mean(x, span_com(span))
    assert same(got, want), (x, span, got, want)


@settings(max_examples=300, deadline=None)
@given(x=values, n=st.integers(1, 300))
def test_alpha_mean_is_pandas_bit_for_bit(x: np.ndarray, n: int) -> None:
    want = pd.Series(x).ewm(alpha=1.0 / n, adjust=False).mean().to_numpy(np.float64)
    got = ewm_mean(x, alpha_com(1.0 / n))
    assert same(got, want), (x, n, got, want)


@pytest.mark.parametrize("n", [5, 20, 50, 200])
def test_ema_and_atr_on_a_random_walk_equal_pandas(n: int) -> None:
    rng = np.random.default_rng(n)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, 5_000)))
    high = close * (1.0 + np.abs(rng.normal(0.0, 0.004, close.size)))
    low = close * (1.0 - np.abs(rng.normal(0.0, 0.004, close.size)))
    want = pd.Series(close).ewm(span=n, adjust=False).mean().to_numpy()
    assert same(ema(close, n), want)
    prev = np.concatenate(([np.nan], close[:-1]))
    tr = np.fmax(high - low, np.fmax(np.abs(high - prev), np.abs(low - prev)))
    want_atr = pd.Series(tr).ewm(alpha=1.0 / n, adjust=False).mean().to_numpy()
    assert same(atr_wilder(high, low, close, n), want_atr)


def test_a_span_below_one_is_refused_as_pandas_does() -> None:
    with pytest.raises(ValueError, match="span"):
        ema(np.ones(3), 0)
