"""Walk-forward splits with purging and an embargo (AFML ch. 7, adapted to walk-forward).

Each event carries a label interval ``[t0, t1]`` (decision time, label end = exit time, int64
ms). Test windows are consecutive half-open spans ``[test_start, test_end)`` of
``test_span_ms`` (the retrain period) starting at ``start_ms``; an event is a *test* event of
the window holding its ``t0``.

Training candidates are the events decided before the test window (``t0 < test_start``;
rolling mode also needs ``t0 >= test_start - train_span_ms``). Then:

- **purge**: drop every candidate whose label interval overlaps the test window
  (``t1 >= test_start and t0 < test_end``): its outcome is only known inside the test span.
- **embargo**: drop every candidate whose label ends within ``embargo_ms`` before the test
  window (``test_start - embargo_ms <= t1 < test_start``), and, for completeness, every event
  that starts within ``embargo_ms`` after it (``test_end <= t0 < test_end + embargo_ms``).
  Walk-forward never trains on events after the test window, so the second rule only matters
  to callers that reuse :func:`purge_and_embargo` for other schemes.

Every kept training event therefore satisfies ``t1 + embargo_ms < test_start``: the training
span plus the embargo ends strictly before the test span starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from atra.errors import ConfigError, DataError

__all__ = [
    "DAY_MS",
    "Fold",
    "purge_and_embargo",
    "schedule_windows",
    "training_fold",
    "walk_forward_splits",
    "window_start_ms",
]

DAY_MS = 86_400_000
"""One day in milliseconds: ``test_span_ms=30 * DAY_MS`` retrains every 30 days."""

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True, eq=False)
class Fold:
    """One walk-forward step. Indices are row positions into the events table, ascending.

    ``train_start_ms``/``train_end_ms`` bound the training label intervals: every training
    event has ``t0 >= train_start_ms`` and ``t1 < train_end_ms = test_start_ms - embargo_ms``.
    """

    fold_id: int
    train_idx: IntArray
    test_idx: IntArray
    train_start_ms: int
    train_end_ms: int
    test_start_ms: int
    test_end_ms: int
    n_purged: int
    n_embargoed: int


def _check_events(t0: npt.ArrayLike, t1: npt.ArrayLike) -> tuple[IntArray, IntArray]:
    a = np.asarray(t0)
    b = np.asarray(t1)
    for name, arr in (("t0", a), ("t1", b)):
        if arr.ndim != 1 or (arr.dtype.kind not in "iu" and arr.size):
            raise DataError(f"{name}: expected a 1-d array of int64 ms, got {arr.dtype}{arr.shape}")
    if a.shape != b.shape:
        raise DataError(f"t0 and t1 differ in length: {a.size} vs {b.size}")
    a = a.astype(np.int64, copy=False)
    b = b.astype(np.int64, copy=False)
    bad = np.flatnonzero(b < a)
    if bad.size:
        i = int(bad[0])
        raise DataError(f"event row {i}: t1={int(b[i])} is before t0={int(a[i])}")
    return a, b


def purge_and_embargo(
    t0: IntArray,
    t1: IntArray,
    candidates: IntArray,
    test_start_ms: int,
    test_end_ms: int,
    embargo_ms: int,
) -> tuple[IntArray, int, int]:
    """Drop purged and embargoed rows from ``candidates``.

    Returns ``(kept, n_purged, n_embargoed)``. Purged: label overlaps the test window.
    Embargoed (and not purged): label ends within ``embargo_ms`` before the window, or starts
    within ``embargo_ms`` after it. See the module docstring.
    """
    a = t0[candidates]
    b = t1[candidates]
    purged = (b >= test_start_ms) & (a < test_end_ms)
    embargoed = ~purged & (
        ((b >= test_start_ms - embargo_ms) & (b < test_start_ms))
        | ((a >= test_end_ms) & (a < test_end_ms + embargo_ms))
    )
    kept = candidates[~(purged | embargoed)]
    return kept, int(purged.sum()), int(embargoed.sum())


def schedule_windows(times_ms: npt.ArrayLike, start_ms: int, span_ms: int) -> IntArray:
    """The schedule window of each time: ``k`` with ``start_ms + k*span_ms <= t <
    start_ms + (k+1)*span_ms`` (negative before ``start_ms``). The one schedule of the
    walk-forward's test windows and of the live loop's retrains."""
    if span_ms <= 0:
        raise ConfigError(f"test_span_ms must be positive, got {span_ms}")
    t = np.asarray(times_ms, dtype=np.int64)
    out: IntArray = (t - np.int64(start_ms)) // np.int64(span_ms)
    return out


def window_start_ms(t_ms: int, start_ms: int, span_ms: int) -> int:
    """The start of the schedule window holding ``t_ms`` (:func:`schedule_windows`)."""
    k = int(schedule_windows(np.array([t_ms], dtype=np.int64), start_ms, span_ms)[0])
    return start_ms + k * span_ms


def _rolling_span(train: str, train_span_ms: int | None) -> int | None:
    if train == "rolling":
        if train_span_ms is None or train_span_ms <= 0:
            raise ConfigError("train='rolling' needs a positive train_span_ms")
        return train_span_ms
    if train != "expanding":
        raise ConfigError(f"train must be 'expanding' or 'rolling', got {train!r}")
    return None


def _window_fold(
    a: IntArray,
    b: IntArray,
    order: IntArray,
    sorted_t0: IntArray,
    test_start: int,
    test_end: int,
    rolling_span: int | None,
    embargo_ms: int,
    fold_id: int,
) -> Fold:
    """The fold of the test window ``[test_start, test_end)``: training candidates decided
    before it (rolling: within ``rolling_span``), purged and embargoed; its test events."""
    lo, hi = np.searchsorted(sorted_t0, [test_start, test_end], side="left")
    if rolling_span is not None:
        train_start = test_start - rolling_span
    else:
        train_start = int(sorted_t0[0]) if sorted_t0.size else test_start
    c_lo = np.searchsorted(sorted_t0, train_start, side="left")
    candidates = np.sort(order[c_lo:lo])
    kept, n_purged, n_emb = purge_and_embargo(a, b, candidates, test_start, test_end, embargo_ms)
    return Fold(
        fold_id=fold_id,
        train_idx=kept,
        test_idx=np.sort(order[lo:hi]),
        train_start_ms=train_start,
        train_end_ms=test_start - embargo_ms,
        test_start_ms=test_start,
        test_end_ms=test_end,
        n_purged=n_purged,
        n_embargoed=n_emb,
    )


def training_fold(
    t0: npt.ArrayLike,
    t1: npt.ArrayLike,
    *,
    test_start_ms: int,
    test_span_ms: int,
    train: Literal["expanding", "rolling"] = "expanding",
    train_span_ms: int | None = None,
    embargo_ms: int = 0,
) -> Fold:
    """The walk-forward fold of the one test window starting at ``test_start_ms``: exactly
    the fold :func:`walk_forward_splits` builds for that window (same candidates, purge and
    embargo), whether or not any event falls in it. A model retrained at ``test_start_ms``
    (the live loop's retrain) trains on ``train_idx``: every label ended ``embargo_ms``
    before that time."""
    a, b = _check_events(t0, t1)
    if test_span_ms <= 0:
        raise ConfigError(f"test_span_ms must be positive, got {test_span_ms}")
    if embargo_ms < 0:
        raise ConfigError(f"embargo_ms must be >= 0, got {embargo_ms}")
    rolling = _rolling_span(train, train_span_ms)
    order = np.argsort(a, kind="stable")
    return _window_fold(
        a, b, order, a[order], test_start_ms, test_start_ms + test_span_ms, rolling, embargo_ms, 0
    )


def walk_forward_splits(
    t0: npt.ArrayLike,
    t1: npt.ArrayLike,
    *,
    start_ms: int,
    test_span_ms: int,
    train: Literal["expanding", "rolling"] = "expanding",
    train_span_ms: int | None = None,
    embargo_ms: int = 0,
    min_train_events: int = 1,
    end_ms: int | None = None,
) -> list[Fold]:
    """Walk-forward folds over events ``[t0, t1]`` (int64 ms, any row order).

    Test windows ``[start_ms + k*test_span_ms, start_ms + (k+1)*test_span_ms)``
    (:func:`schedule_windows`) run until the window holding the last ``t0`` (or until
    ``end_ms``, exclusive). ``train="expanding"`` trains on every earlier event,
    ``"rolling"`` on events with ``t0 >= test_start - train_span_ms``. Windows with no test
    event are skipped, and so are windows whose purged training set has fewer than
    ``min_train_events`` events (the warm-up): their events get no out-of-sample prediction.
    ``fold_id`` counts emitted folds from 0.
    """
    a, b = _check_events(t0, t1)
    if test_span_ms <= 0:
        raise ConfigError(f"test_span_ms must be positive, got {test_span_ms}")
    if embargo_ms < 0:
        raise ConfigError(f"embargo_ms must be >= 0, got {embargo_ms}")
    if min_train_events < 1:
        raise ConfigError(f"min_train_events must be >= 1, got {min_train_events}")
    rolling_span = _rolling_span(train, train_span_ms)
    folds: list[Fold] = []
    order = np.argsort(a, kind="stable")
    sorted_t0 = a[order]
    in_range = sorted_t0 >= start_ms
    if end_ms is not None:
        in_range &= sorted_t0 < end_ms
    windows = np.unique(schedule_windows(sorted_t0[in_range], start_ms, test_span_ms))
    for k in windows.tolist():
        test_start = start_ms + k * test_span_ms
        test_end = test_start + test_span_ms
        if end_ms is not None:
            test_end = min(test_end, end_ms)
        fold = _window_fold(
            a, b, order, sorted_t0, test_start, test_end, rolling_span, embargo_ms, len(folds)
        )
        if fold.train_idx.size < min_train_events:
            continue
        folds.append(fold)
    return folds
