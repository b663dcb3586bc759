"""Sample weights for the meta model: balanced classes x label uniqueness x time decay.

Labels that overlap in time share information: ten trades open over the same week are not
ten independent observations. Following López de Prado (AFML, ch. 4):

- **concurrency** ``c(t)`` is the number of labels alive at time ``t``;
- the **average uniqueness** of a label is the mean of ``1 / c(t)`` over the label's life;
- an optional **time decay** lowers the weight of old observations linearly in *cumulative
  uniqueness* (AFML 4.5.4), so that a burst of overlapping labels does not count as "a lot of
  time".

Two clocks are supported:

- ``bar_ms=None`` (default): continuous time. A label lives on ``[t0, t1)`` and its uniqueness
  is the time-weighted mean of ``1 / c(t)`` there. Needs ``t1 > t0``.
- ``bar_ms=<bar length>``: AFML's discrete form. A label covers every bar from the one holding
  ``t0`` to the one holding ``t1`` (both inclusive); uniqueness is the plain mean of ``1 / c``
  over those bars. ``t1 == t0`` (one bar) is allowed.

Both are computed with one sort and prefix sums: O(n log n), no per-label loops.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
from sklearn.utils.class_weight import compute_sample_weight

from atra.errors import DataError

__all__ = ["average_uniqueness", "fold_weights_fn", "sample_weights", "time_decay"]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


def _as_int64(values: npt.ArrayLike, name: str) -> IntArray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise DataError(f"{name}: expected a 1-d array of int64 ms, got shape {arr.shape}")
    if arr.dtype.kind not in "iu" and arr.size:
        raise DataError(f"{name}: expected integer ms timestamps, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _check_intervals(t0: npt.ArrayLike, t1: npt.ArrayLike) -> tuple[IntArray, IntArray]:
    a = _as_int64(t0, "t0")
    b = _as_int64(t1, "t1")
    if a.shape != b.shape:
        raise DataError(f"t0 and t1 differ in length: {a.size} vs {b.size}")
    bad = np.flatnonzero(b < a)
    if bad.size:
        i = int(bad[0])
        raise DataError(f"label row {i}: t1={int(b[i])} is before t0={int(a[i])}")
    return a, b


def _uniqueness_half_open(start: IntArray, end: IntArray) -> FloatArray:
    """Mean of 1/c(t) over each ``[start_i, end_i)`` (``end > start``), time-weighted.

    Sweep line: the sorted distinct endpoints cut the time axis into elementary segments on
    which ``c`` is constant; ``c`` per segment comes from counting starts and ends before it,
    and a prefix sum of ``length / c`` gives every label's integral by two look-ups.
    """
    points = np.unique(np.concatenate([start, end]))
    n_starts = np.searchsorted(np.sort(start), points[:-1], side="right")
    n_ends = np.searchsorted(np.sort(end), points[:-1], side="right")
    conc = (n_starts - n_ends).astype(np.float64)  # labels alive on [points[k], points[k+1])
    seg_len = np.diff(points).astype(np.float64)
    inv = np.divide(seg_len, conc, out=np.zeros_like(seg_len), where=conc > 0)
    cum = np.concatenate([[0.0], np.cumsum(inv)])
    i0 = np.searchsorted(points, start)
    i1 = np.searchsorted(points, end)
    out: FloatArray = (cum[i1] - cum[i0]) / (end - start).astype(np.float64)
    return out


def average_uniqueness(
    t0: npt.ArrayLike,
    t1: npt.ArrayLike,
    symbols: Sequence[str] | npt.ArrayLike | None = None,
    *,
    per_symbol: bool = True,
    bar_ms: int | None = None,
) -> FloatArray:
    """Average uniqueness of each label, in ``(0, 1]``.

    ``t0``/``t1`` are label start / end (int64 ms). With ``symbols`` and ``per_symbol=True``
    (default) concurrency is counted among labels of the same symbol only; otherwise across
    all labels. See the module docstring for ``bar_ms``.
    """
    a, b = _check_intervals(t0, t1)
    if bar_ms is None:
        zero = np.flatnonzero(b == a)
        if zero.size:
            i = int(zero[0])
            raise DataError(
                f"label row {i}: t1 == t0 ({int(a[i])}); zero-length labels need bar_ms"
            )
        start, end = a, b
    else:
        if bar_ms <= 0:
            raise DataError(f"bar_ms must be positive, got {bar_ms}")
        start = np.floor_divide(a, bar_ms)
        end = np.floor_divide(b, bar_ms) + 1  # the bar holding t1 is part of the label
    out = np.empty(a.size, dtype=np.float64)
    if a.size == 0:
        return out
    if symbols is None or not per_symbol:
        out[:] = _uniqueness_half_open(start, end)
        return out
    sym = np.asarray(symbols)
    if sym.shape != a.shape:
        raise DataError(f"symbols and t0 differ in length: {sym.size} vs {a.size}")
    _, groups = np.unique(sym, return_inverse=True)
    for g in range(int(groups.max()) + 1):
        idx = np.flatnonzero(groups == g)
        out[idx] = _uniqueness_half_open(start[idx], end[idx])
    return out


def time_decay(uniqueness: npt.ArrayLike, t0: npt.ArrayLike, decay: float) -> FloatArray:
    """AFML's piecewise-linear time decay over cumulative uniqueness.

    Events are ordered by ``t0`` (ties keep input order); the newest gets weight 1 and the
    weight falls linearly in cumulative uniqueness towards the oldest:

    - ``decay = 1``: no decay (all ones);
    - ``0 <= decay < 1``: the oldest weight is ``decay`` (``0`` -> linear down to zero);
    - ``-1 < decay < 0``: the oldest ``|decay|`` share of cumulative uniqueness gets weight 0,
      the rest decays linearly from 0 to 1.
    """
    u = np.asarray(uniqueness, dtype=np.float64)
    start = _as_int64(t0, "t0")
    if u.shape != start.shape:
        raise DataError(f"uniqueness and t0 differ in length: {u.size} vs {start.size}")
    if not -1.0 < decay <= 1.0:
        raise DataError(f"decay must be in (-1, 1], got {decay}")
    out = np.ones(u.size, dtype=np.float64)
    if u.size == 0:
        return out
    order = np.argsort(start, kind="stable")
    cum = np.cumsum(u[order])
    total = float(cum[-1])
    slope = (1.0 - decay) / total if decay >= 0.0 else 1.0 / ((decay + 1.0) * total)
    const = 1.0 - slope * total
    out[order] = np.maximum(const + slope * cum, 0.0)
    return out


def sample_weights(
    y: npt.ArrayLike,
    t0: npt.ArrayLike,
    t1: npt.ArrayLike,
    symbols: Sequence[str] | npt.ArrayLike | None = None,
    decay: float | None = None,
    *,
    per_symbol: bool = True,
    bar_ms: int | None = None,
) -> FloatArray:
    """Training weights: ``balanced class weight x uniqueness x time decay``, mean 1.

    ``decay=None`` means no decay (same as ``1.0``). Compute them on the training rows of a
    fold only, so that test labels never influence training weights.
    """
    labels = np.asarray(y)
    if labels.ndim != 1:
        raise DataError(f"y: expected a 1-d array, got shape {labels.shape}")
    u = average_uniqueness(t0, t1, symbols, per_symbol=per_symbol, bar_ms=bar_ms)
    if labels.size != u.size:
        raise DataError(f"y and t0 differ in length: {labels.size} vs {u.size}")
    if labels.size == 0:
        return np.empty(0, dtype=np.float64)
    w = np.asarray(compute_sample_weight("balanced", labels), dtype=np.float64) * u
    if decay is not None:
        w = w * time_decay(u, t0, decay)
    # the newest event keeps decay weight 1 and every uniqueness is > 0, so the sum is > 0
    return w * (w.size / float(w.sum()))


def fold_weights_fn(
    y: npt.ArrayLike,
    t0: npt.ArrayLike,
    t1: npt.ArrayLike,
    symbols: Sequence[str] | npt.ArrayLike | None = None,
    decay: float | None = None,
    *,
    per_symbol: bool = True,
    bar_ms: int | None = None,
) -> Callable[[IntArray], FloatArray]:
    """``weights(train_idx)``: :func:`sample_weights` of the rows ``train_idx`` only.

    The closure for ``walk_forward_predict(weights_fn=...)``: uniqueness, class balance and
    decay are computed among the training rows of each fold, never with test rows.
    """
    labels = np.asarray(y)
    start = np.asarray(t0)
    end = np.asarray(t1)
    sym = None if symbols is None else np.asarray(symbols)

    def weights(train_idx: IntArray) -> FloatArray:
        return sample_weights(
            labels[train_idx],
            start[train_idx],
            end[train_idx],
            None if sym is None else sym[train_idx],
            decay,
            per_symbol=per_symbol,
            bar_ms=bar_ms,
        )

    return weights
