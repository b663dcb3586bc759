"""Walk-forward out-of-sample predictions of the meta model (:mod:`atra.core.meta`): one model
per fold, folds run through joblib or a :class:`FoldExecutor` (a Ray or Dask cluster, see
:mod:`atra.research.backends`), and the OOS quality per calendar year."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np
import numpy.typing as npt
import pandas as pd
from joblib import Parallel, delayed, parallel_config
from joblib.parallel import ParallelBackendBase
from sklearn.metrics import roc_auc_score

from atra.core.meta.inputs import (
    check_floats,
    check_labels,
    check_times,
    feature_matrix,
    feature_names_of,
)
from atra.core.meta.model import MetaModel, MetaParams
from atra.core.validation import Fold
from atra.errors import DataError, ModelError

__all__ = [
    "FoldExecutor",
    "OOSPredictions",
    "fit_fold_model",
    "oos_metrics_by_year",
    "walk_forward_predict",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
WeightsFn = Callable[[IntArray], FloatArray]
ProgressFn = Callable[[int, int], None]
_R = TypeVar("_R")


class FoldExecutor(Protocol):
    """Runs the fold tasks of one walk-forward on an engine (a Ray or Dask cluster).

    ``map_folds(fn, shared, tasks, progress)`` returns ``[fn(*shared, *task) for task in
    tasks]`` in the order of ``tasks`` (never in completion order). ``shared`` holds the large
    arrays every task reads (feature matrix, labels, label spans, net returns; ``None`` stays
    ``None``): the executor sends them once (object store / scatter), each task carries only
    references to them and its own small ``task`` tuple (the fold's row indices and weights).
    ``progress(done, total)`` is called in the calling process as tasks finish.
    """

    def map_folds(
        self,
        fn: Callable[..., _R],
        shared: Sequence[Any],
        tasks: Sequence[tuple[Any, ...]],
        progress: ProgressFn | None,
    ) -> list[_R]: ...


@dataclass(frozen=True, slots=True)
class OOSPredictions:
    """Walk-forward out-of-sample predictions.

    ``frame``: index ``event`` (labels of ``X.index``), columns ``pos`` (row position),
    ``fold``, ``p_take``, ``threshold``, ``take``; one row per tested event, by ``pos``.
    ``folds``: one row per fold (sizes, windows, threshold, purge counts).
    ``importance``: normalised gain importance, fold x feature.
    """

    frame: pd.DataFrame
    folds: pd.DataFrame
    importance: pd.DataFrame


@dataclass(frozen=True, slots=True)
class _FoldResult:
    fold_id: int
    test_idx: IntArray
    p_take: FloatArray
    threshold: float
    threshold_source: str
    importance: FloatArray


def fit_fold_model(
    arr: FloatArray,
    names: tuple[str, ...],
    y: IntArray,
    t0: IntArray,
    t1: IntArray,
    net: FloatArray | None,
    train_idx: IntArray,
    weights: FloatArray | None,
    params: MetaParams,
) -> MetaModel:
    """The meta model of one fold: fitted on the rows ``train_idx`` of the checked feature
    matrix ``arr`` (:func:`atra.core.meta.inputs.feature_matrix`) with their ``weights``.
    The walk-forward's folds and the live loop's retrains fit through this one call."""
    tr = train_idx
    X_train = pd.DataFrame(arr[tr], columns=list(names))
    return MetaModel(params).fit(
        X_train,
        y[tr],
        weights,
        t0=t0[tr],
        t1=t1[tr],
        net_return=None if net is None else net[tr],
    )


def _fit_fold(
    arr: FloatArray,
    y: IntArray,
    t0: IntArray,
    t1: IntArray,
    net: FloatArray | None,
    names: tuple[str, ...],
    fold: Fold,
    weights: FloatArray | None,
    params: MetaParams,
) -> _FoldResult:
    model = fit_fold_model(arr, names, y, t0, t1, net, fold.train_idx, weights, params)
    p = model.predict_proba(pd.DataFrame(arr[fold.test_idx], columns=list(names)))
    imp = model.feature_importance().reindex(list(names)).to_numpy(dtype=np.float64)
    return _FoldResult(fold.fold_id, fold.test_idx, p, model.threshold, model.threshold_source, imp)


def walk_forward_predict(
    X: pd.DataFrame,
    y: npt.ArrayLike,
    t0: npt.ArrayLike,
    t1: npt.ArrayLike,
    folds: Sequence[Fold],
    *,
    weights_fn: WeightsFn | None = None,
    params: MetaParams | None = None,
    net_return: npt.ArrayLike | None = None,
    n_jobs: int | None = 2,
    backend: str | ParallelBackendBase | None = None,
    executor: FoldExecutor | None = None,
    progress: ProgressFn | None = None,
) -> OOSPredictions:
    """Fit one :class:`MetaModel` per fold on its training rows and predict its test rows.

    ``weights_fn(train_idx)`` returns the sample weights of those training rows (computed here,
    in the calling process, from training rows only, e.g. with
    :func:`atra.core.weights.fold_weights_fn`). With an ``executor``, the folds run on it (the
    arrays sent once, see :class:`FoldExecutor`; ``n_jobs`` and ``backend`` are not used).
    Otherwise they run through ``joblib.Parallel(n_jobs, backend)``: ``backend`` is a joblib
    backend name or instance (loky, threading, ``"dask"`` with an active Dask client, ...);
    ``None`` (and ``n_jobs=None``) take the enclosing ``joblib.parallel_config`` (joblib's
    default, loky, without one). Each fit uses ``params.n_jobs`` threads, whatever runs it, and
    results are ordered by fold: the predictions do not depend on the backend.
    ``progress(done, total)`` is called in this process after each finished fold (with a
    backend that cannot stream results, such as ``multiprocessing``, all calls come once every
    fold is done).
    """
    params = params or MetaParams()
    arr = feature_matrix(X)
    n = arr.shape[0]
    labels = check_labels(y, n)
    start = check_times(t0, n, "t0")
    end = check_times(t1, n, "t1")
    net = None if net_return is None else check_floats(net_return, n, "net_return")
    if not folds:
        raise ModelError("walk-forward needs at least one fold")
    names = feature_names_of(X)
    tasks: list[tuple[Any, ...]] = []
    for fold in folds:
        if int(max(fold.train_idx.max(), fold.test_idx.max())) >= n:
            raise DataError(f"fold {fold.fold_id}: row index beyond the {n} events")
        if np.unique(labels[fold.train_idx]).size < 2:
            raise ModelError(f"fold {fold.fold_id}: training labels have one class only")
        w = None if weights_fn is None else np.asarray(weights_fn(fold.train_idx), np.float64)
        if w is not None and w.shape != fold.train_idx.shape:
            raise DataError(f"fold {fold.fold_id}: weights_fn returned {w.shape}, expected rows")
        tasks.append((names, fold, w, params))
    shared = (arr, labels, start, end, net)
    if executor is not None:
        results = executor.map_folds(_fit_fold, shared, tasks, progress)
    else:
        results = _joblib_map(shared, tasks, n_jobs, backend, progress)
    results.sort(key=lambda r: r.fold_id)
    by_id = {f.fold_id: f for f in folds}
    pos = np.concatenate([r.test_idx for r in results]).astype(np.int64)
    frame = pd.DataFrame(
        {
            "pos": pos,
            "fold": np.concatenate([np.full(r.test_idx.size, r.fold_id) for r in results]),
            "p_take": np.concatenate([r.p_take for r in results]),
            "threshold": np.concatenate([np.full(r.test_idx.size, r.threshold) for r in results]),
        },
        index=pd.Index(X.index[pos], name="event"),
    )
    frame["take"] = frame["p_take"] >= frame["threshold"]
    frame = frame.sort_values("pos", kind="stable")
    fold_rows = []
    for r in results:
        f = by_id[r.fold_id]
        windows = ("train_start_ms", "train_end_ms", "test_start_ms", "test_end_ms")
        fold_rows.append(
            {"fold": r.fold_id, "n_train": f.train_idx.size, "n_test": f.test_idx.size}
            | {k: getattr(f, k) for k in (*windows, "n_purged", "n_embargoed")}
            | {"threshold": r.threshold, "threshold_source": r.threshold_source}
        )
    importance = pd.DataFrame(
        [r.importance for r in results],
        index=pd.Index([r.fold_id for r in results], name="fold"),
        columns=list(names),
    )
    return OOSPredictions(frame, pd.DataFrame(fold_rows), importance)


def _joblib_map(
    shared: tuple[Any, ...],
    tasks: Sequence[tuple[Any, ...]],
    n_jobs: int | None,
    backend: str | ParallelBackendBase | None,
    progress: ProgressFn | None,
) -> list[_FoldResult]:
    jobs = [delayed(_fit_fold)(*shared, *task) for task in tasks]
    results: list[_FoldResult] = []
    # a name or instance goes through parallel_config: joblib resolves (and registers) its
    # external backends ("dask", "ray") there, and keeps the enclosing config's other settings
    with parallel_config() if backend is None else parallel_config(backend=backend):
        try:
            runner = Parallel(n_jobs=n_jobs, return_as="generator_unordered")
        except ValueError:  # a backend that cannot stream results (multiprocessing): batch
            runner = Parallel(n_jobs=n_jobs)
        for res in runner(jobs):
            results.append(res)
            if progress is not None:
                progress(len(results), len(jobs))
    return results


def oos_metrics_by_year(
    preds: OOSPredictions | pd.DataFrame,
    y: npt.ArrayLike,
    t0: npt.ArrayLike,
    net_return: npt.ArrayLike | None = None,
) -> pd.DataFrame:
    """OOS quality per calendar year (UTC, of ``t0``) and ``"all"``.

    ``y``/``t0``/``net_return`` are full-length arrays (indexed by ``preds`` ``pos``).
    Columns: ``n_events, base_rate, auc, n_take, take_rate, precision, recall`` and, with
    ``net_return``, ``mean_net_return`` (all events) and ``mean_net_return_take``. AUC is NaN
    for a single-class year; precision is NaN without takes; recall NaN without positives.
    """
    frame = preds.frame if isinstance(preds, OOSPredictions) else preds
    pos = frame["pos"].to_numpy(dtype=np.int64)
    labels = np.asarray(y)[pos].astype(np.int64)
    start = np.asarray(t0)[pos].astype(np.int64)
    net = None if net_return is None else np.asarray(net_return, dtype=np.float64)[pos]
    p = frame["p_take"].to_numpy(dtype=np.float64)
    take = frame["take"].to_numpy(dtype=bool)
    years = start.astype("datetime64[ms]").astype("datetime64[Y]").astype(np.int64) + 1970
    groups: list[tuple[str, npt.NDArray[np.bool_]]] = [
        (str(yr), years == yr) for yr in np.unique(years).tolist()
    ]
    groups.append(("all", np.ones(pos.size, dtype=bool)))
    rows = []
    for name, m in groups:
        yy, tk = labels[m], take[m]
        n_pos, n_take = int(yy.sum()), int(tk.sum())
        tp = int((yy & tk).sum())
        row: dict[str, Any] = {
            "year": name,
            "n_events": int(m.sum()),
            "base_rate": float(yy.mean()) if yy.size else math.nan,
            "auc": float(roc_auc_score(yy, p[m])) if np.unique(yy).size == 2 else math.nan,
            "n_take": n_take,
            "take_rate": n_take / yy.size if yy.size else math.nan,
            "precision": tp / n_take if n_take else math.nan,
            "recall": tp / n_pos if n_pos else math.nan,
        }
        if net is not None:
            row["mean_net_return"] = float(net[m].mean()) if yy.size else math.nan
            row["mean_net_return_take"] = float(net[m][tk].mean()) if n_take else math.nan
        rows.append(row)
    return pd.DataFrame(rows).set_index("year")
