"""Numba kernels over symbols concatenated into one array per column: ``@njit(cache=True)``.

Symbol ``s`` owns rows ``sym_start[s] .. sym_end[s] - 1``; the grid is the sorted union of the
symbols' open times. Used by both backtests (:mod:`atra.core.candle_bundle`,
:mod:`atra.core.backtest.workload`).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@njit(cache=True)
def first_bad_series_nb(
    times: I64, open_: F64, high: F64, low: F64, close: F64, sym_start: I64, sym_end: I64
) -> int:
    """First symbol whose rows break the candle contract (``open_time`` not strictly
    increasing, a price not finite and > 0), or -1."""
    inf = np.inf
    for s in range(sym_start.shape[0]):
        for j in range(sym_start[s], sym_end[s]):
            if j > sym_start[s] and times[j] <= times[j - 1]:
                return s
            o = open_[j]
            h = high[j]
            lo = low[j]
            c = close[j]
            if not (o > 0.0 and h > 0.0 and lo > 0.0 and c > 0.0):
                return s
            if not (o < inf and h < inf and lo < inf and c < inf):
                return s
    return -1


@njit(cache=True)
def grid_index_nb(bar_time: I64, sym_start: I64, sym_end: I64, grid_time: I64) -> I64:
    """Position of every bar's open time in the (sorted, unique) union grid."""
    out = np.empty(bar_time.shape[0], np.int64)
    for s in range(sym_start.shape[0]):
        g = 0
        for j in range(sym_start[s], sym_end[s]):
            while grid_time[g] < bar_time[j]:
                g += 1
            out[j] = g
    return out


@njit(cache=True)
def portfolio_mean_nb(
    values: F64, bar_grid: I64, sym_start: I64, sym_end: I64, n_grid: int, before: float
) -> F64:
    """Equal-weight mean of the symbols' series on the grid: each symbol is worth ``before``
    until its first bar and keeps its last value where it has no bar (summed in symbol order)."""
    n_sym = sym_start.shape[0]
    ptr = sym_start.copy()
    last = np.full(n_sym, before)
    out = np.empty(n_grid)
    for g in range(n_grid):
        total = 0.0
        for s in range(n_sym):
            p = ptr[s]
            if p < sym_end[s] and bar_grid[p] == g:
                last[s] = values[p]
                ptr[s] = p + 1
            total += last[s]
        out[g] = total / n_sym
    return out
