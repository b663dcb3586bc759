"""The exponentially weighted mean of the indicators as a numba kernel, bit-identical to
pandas' ``Series.ewm(com=..., adjust=False).mean()`` (``ignore_na=False``, ``min_periods``
0), NaN handling included: the live loop computes its EMAs and ATR on every symbol at every
bar close, and pandas' per-call set-up costs several times the recursion itself.

pandas' arithmetic is kept step for step: ``alpha = 1 / (1 + com)``, the first value seeds the
mean, each observation updates ``w = (old * w + alpha * x) / (old + alpha)`` with ``old``
the decayed weight (``(1 - alpha)`` after an observation, ``(1 - alpha)**k`` after ``k - 1``
missing values), skipped when ``w == x``; a missing value repeats the mean; before the first
observation the mean is NaN. With ``com == 1`` (alpha 0.5) the new value's weight is
``1 - old``, as pandas has it. ``tests/unit/test_ewm_nb.py`` compares it with pandas.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit

F64 = npt.NDArray[np.float64]


@njit(cache=True, nogil=True)
def ewm_mean_nb(x: F64, com: float) -> F64:  # pragma: no cover  (compiled; tested via ewm_mean)
    n = x.shape[0]
    out = np.empty(n)
    if n == 0:
        return out
    alpha = 1.0 / (1.0 + com)
    old_wt_factor = 1.0 - alpha
    new_wt = alpha
    weighted = x[0]
    nobs = 1 if weighted == weighted else 0
    out[0] = weighted if nobs >= 1 else np.nan
    old_wt = 1.0
    for i in range(1, n):
        cur = x[i]
        is_obs = cur == cur
        if is_obs:
            nobs += 1
        if weighted == weighted:
            old_wt *= old_wt_factor
            if com == 1.0:  # pandas' own special case: the weights sum to 1 (alpha 0.5)
                new_wt = 1.0 - old_wt
            if is_obs:
                if weighted != cur:
                    weighted = old_wt * weighted + new_wt * cur
                    weighted /= old_wt + new_wt
                old_wt = 1.0
        elif is_obs:
            weighted = cur
        out[i] = weighted if nobs >= 1 else np.nan
    return out


def span_com(span: float) -> float:
    """pandas' centre of mass for ``span=``: ``(span - 1) / 2``."""
    return float((span - 1) / 2)


def alpha_com(alpha: float) -> float:
    """pandas' centre of mass for ``alpha=``: ``(1 - alpha) / alpha``."""
    return float((1 - alpha) / alpha)


def ewm_mean(values: npt.ArrayLike, com: float) -> F64:
    """``pd.Series(values).ewm(com=com, adjust=False).mean()`` as a float64 array."""
    x = np.ascontiguousarray(values, dtype=np.float64)
    return ewm_mean_nb(x, float(com))
