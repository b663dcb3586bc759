"""Walk-forward evaluation and training of the meta model (:mod:`atra.research.pipeline`): OOS
predictions per fold with purge + embargo, one model on the whole range saved to the registry."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from atra.adapters.artifacts import RegisteredModel, dataset_hash, load_model, save_model
from atra.core.decision import ModelHandle
from atra.core.exits.api import ExitSpec
from atra.core.features.context import ModelInputs
from atra.core.frames import ms_to_iso
from atra.core.meta import (
    FoldExecutor,
    MetaModel,
    MetaParams,
    OOSPredictions,
    oos_metrics_by_year,
)
from atra.core.meta import walk_forward_predict as _walk_forward_predict
from atra.core.signals.spec import BarrierMode, Rule, SignalSpec
from atra.core.validation import DAY_MS, Fold, walk_forward_splits
from atra.core.weights import fold_weights_fn, sample_weights
from atra.errors import ConfigError, DataError, ModelError
from atra.research.backends import active_executor
from atra.research.dataset import ResearchDataset

__all__ = [
    "Labelled",
    "TrainedModel",
    "WalkForwardConfig",
    "WalkForwardResult",
    "artifact_extra",
    "fold_spans",
    "labelled",
    "load_model_for",
    "run_walkforward",
    "spec_to_dict",
    "train_model",
]


# ---- walk-forward -----------------------------------------------------------------------------


def _check_decay(decay: float | None) -> None:
    if decay is not None and not (math.isfinite(decay) and -1.0 < decay <= 1.0):
        raise ConfigError(f"decay must be in (-1, 1] or None, got {decay}")


@dataclass(frozen=True, slots=True)
class WalkForwardConfig:
    """Retrain every ``retrain_days``; first test window ``min_train_days`` after the first
    event's day (or pinned at ``first_test_ms``, which may not be earlier than that: a
    ConfigError); ``embargo_hours`` between training labels and the test
    window; ``decay`` (None = none) for the sample-weight time decay."""

    retrain_days: int = 30
    train: Literal["expanding", "rolling"] = "expanding"
    train_days: int | None = None
    embargo_hours: float = 24.0
    min_train_days: int = 180
    first_test_ms: int | None = None
    min_train_events: int = 200
    decay: float | None = None

    def __post_init__(self) -> None:
        if self.retrain_days < 1 or self.min_train_days < 0 or self.min_train_events < 1:
            raise ConfigError("retrain_days >= 1, min_train_days >= 0, min_train_events >= 1")
        if not (math.isfinite(self.embargo_hours) and self.embargo_hours >= 0):
            raise ConfigError(f"embargo_hours must be >= 0, got {self.embargo_hours}")
        if self.train == "rolling" and (self.train_days is None or self.train_days < 1):
            raise ConfigError("train='rolling' needs train_days >= 1")
        if self.train not in ("expanding", "rolling"):
            raise ConfigError(f"train must be expanding|rolling, got {self.train!r}")
        _check_decay(self.decay)


@dataclass(frozen=True, slots=True, eq=False)
class WalkForwardResult:
    """Out-of-sample predictions and their quality.

    ``predictions``: the complete events that got an OOS prediction, with ``fold, p_take,
    threshold, take`` (index = row of ``dataset.events``). ``metrics``: per year and ``all``
    (``n_events, base_rate, auc, n_take, take_rate, precision, recall, mean_net_return,
    mean_net_return_take``). ``excluded_incomplete``: events not used (label unknown);
    ``untested``: complete events before the first fold (training warm-up).
    """

    predictions: pd.DataFrame
    metrics: pd.DataFrame
    folds: list[Fold]
    oos: OOSPredictions
    excluded_incomplete: int
    untested: int
    elapsed_s: float


def fold_spans(config: WalkForwardConfig) -> tuple[int, int | None, int]:
    """``(test span, rolling training span or None, embargo)`` in ms: the walk-forward's
    windows, and the live loop's retrains (:mod:`atra.research.retrain`)."""
    rolling = None if config.train_days is None else config.train_days * DAY_MS
    return config.retrain_days * DAY_MS, rolling, round(config.embargo_hours * 3_600_000)


@dataclass(frozen=True, slots=True, eq=False)
class Labelled:
    """The complete (labelled) events of a dataset as the model's arrays: ``rows`` (their
    rows in ``dataset.events``), inputs ``X`` (index reset), meta-labels ``y``, label spans
    ``t0``/``t1``, net returns and symbols."""

    rows: npt.NDArray[np.intp]
    X: pd.DataFrame
    y: npt.NDArray[np.int64]
    t0: npt.NDArray[np.int64]
    t1: npt.NDArray[np.int64]
    net: npt.NDArray[np.float64]
    symbols: npt.NDArray[np.str_]


def labelled(dataset: ResearchDataset) -> Labelled:
    """The complete events of ``dataset`` (what a fold trains and is scored on)."""
    rows = np.flatnonzero(dataset.complete)
    ev = dataset.events.iloc[rows]
    return Labelled(
        rows,
        dataset.X.iloc[rows].reset_index(drop=True),
        ev["meta_label"].to_numpy(dtype=np.int64),
        ev["t0_ms"].to_numpy(dtype=np.int64),
        ev["t1_ms"].to_numpy(dtype=np.int64),
        ev["ret_net"].to_numpy(dtype=np.float64),
        ev["symbol"].to_numpy(dtype=str),
    )


def _split_config(
    t0: npt.NDArray[np.int64], config: WalkForwardConfig
) -> tuple[int, int, int | None, int]:
    span, rolling, embargo = fold_spans(config)
    earliest = (int(t0.min()) // DAY_MS) * DAY_MS + config.min_train_days * DAY_MS
    first = config.first_test_ms
    if first is None:
        first = earliest
    elif first < earliest:
        raise ConfigError(
            f"first test window (--first-test) {ms_to_iso(first)} is before min_train_days = "
            f"{config.min_train_days} of data (first event {ms_to_iso(int(t0.min()))}; "
            f"earliest first test window {ms_to_iso(earliest)})"
        )
    return first, span, rolling, embargo


def run_walkforward(
    dataset: ResearchDataset,
    config: WalkForwardConfig | None = None,
    params: MetaParams | None = None,
    *,
    n_jobs: int = 2,
    backend: str | None = "threading",
    executor: FoldExecutor | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> WalkForwardResult:
    """Walk-forward OOS predictions over the complete events of ``dataset``.

    Folds run on ``executor``, else on the one of the enclosing
    :func:`atra.research.backends.open_backend` (Ray / Dask), else through joblib (``n_jobs``
    workers, ``backend``; None: the enclosing ``joblib.parallel_config``): threads by default,
    since LightGBM trains without the GIL and threads need no process start-up or data copies.
    The predictions are the same whichever runs them. ``progress(done, total)`` is called
    after each fold."""
    cfg = config or WalkForwardConfig()
    started = time.perf_counter()
    lab = labelled(dataset)
    rows = lab.rows
    if rows.size == 0:
        raise DataError("walk-forward: the dataset has no complete (labelled) event")
    X, y, t0, t1, net, symbols = lab.X, lab.y, lab.t0, lab.t1, lab.net, lab.symbols
    first, span, rolling, embargo = _split_config(t0, cfg)
    folds = walk_forward_splits(
        t0,
        t1,
        start_ms=first,
        test_span_ms=span,
        train=cfg.train,
        train_span_ms=rolling,
        embargo_ms=embargo,
        min_train_events=cfg.min_train_events,
    )
    folds = [f for f in folds if np.unique(y[f.train_idx]).size == 2]
    if not folds:
        raise DataError(
            f"walk-forward: no fold has {cfg.min_train_events} training events of both classes "
            f"({rows.size} labelled events, first test window {ms_to_iso(first)})"
        )
    weights = fold_weights_fn(y, t0, t1, symbols, cfg.decay, bar_ms=dataset.universe.timeframe.ms)
    oos = _walk_forward_predict(
        X,
        y,
        t0,
        t1,
        folds,
        weights_fn=weights,
        params=params or MetaParams(),
        net_return=net,
        n_jobs=n_jobs,
        backend=backend,
        executor=executor if executor is not None else active_executor(),
        progress=progress,
    )
    pos = oos.frame["pos"].to_numpy(dtype=np.int64)
    preds = dataset.events.iloc[rows[pos]].copy()
    for col in ("fold", "p_take", "threshold", "take"):
        preds[col] = oos.frame[col].to_numpy()
    metrics = oos_metrics_by_year(oos, y, t0, net)
    return WalkForwardResult(
        predictions=preds,
        metrics=metrics,
        folds=folds,
        oos=oos,
        excluded_incomplete=int(len(dataset.events) - rows.size),
        untested=int(rows.size - pos.size),
        elapsed_s=time.perf_counter() - started,
    )


# ---- training and the registry ----------------------------------------------------------------


def spec_to_dict(spec: SignalSpec | ExitSpec) -> dict[str, Any]:
    """Plain JSON-ready fields of a spec (enums as their values). A plug-in rule's ``params``
    are an object (absent for a built-in rule, as in models saved before plug-ins)."""
    out = {
        k: (v.value if isinstance(v, Rule | BarrierMode) else v) for k, v in asdict(spec).items()
    }
    if "params" in out:
        if out["params"]:
            out["params"] = dict(out["params"])
        else:
            del out["params"]
    return out


@dataclass(frozen=True, slots=True, eq=False)
class TrainedModel:
    """A model fitted on a whole range and saved to the registry."""

    registered: RegisteredModel
    n_train: int
    excluded_incomplete: int
    train_start_ms: int
    train_end_ms: int

    @property
    def handle(self) -> ModelHandle:
        return ModelHandle(self.registered.model, self.registered.model_id)


def train_model(
    dataset: ResearchDataset,
    out: Path,
    params: MetaParams | None = None,
    *,
    decay: float | None = None,
    oos_metrics: pd.DataFrame | None = None,
) -> TrainedModel:
    """Fit the meta model on every complete event of ``dataset`` (weights: balanced x
    uniqueness x decay) and save it under ``out`` (LightGBM text + metadata JSON)."""
    _check_decay(decay)
    ev, X = dataset.training()
    if ev.empty:
        raise DataError("train: the dataset has no complete (labelled) event")
    y = ev["meta_label"].to_numpy(dtype=np.int64)
    t0 = ev["t0_ms"].to_numpy(dtype=np.int64)
    t1 = ev["t1_ms"].to_numpy(dtype=np.int64)
    net = ev["ret_net"].to_numpy(dtype=np.float64)
    if np.unique(y).size < 2:
        raise ModelError(f"train: all {y.size} meta-labels are {int(y[0])}; need both classes")
    w = sample_weights(
        y, t0, t1, ev["symbol"].to_numpy(dtype=str), decay, bar_ms=dataset.universe.timeframe.ms
    )
    model = MetaModel(params or MetaParams()).fit(X, y, w, t0=t0, t1=t1, net_return=net)
    extra = artifact_extra(dataset, y, decay)
    start, end = int(t0.min()), int(t1.max())
    reg = save_model(
        model,
        out,
        train_start_ms=start,
        train_end_ms=end,
        data_hash=dataset_hash(X, y, t0, t1),
        oos_metrics=oos_metrics,
        extra=extra,
        inputs=ModelInputs.from_features(
            dataset.bar_features, series=[s.series for s in dataset.universe.series]
        ),
    )
    return TrainedModel(reg, int(y.size), dataset.report.incomplete, start, end)


def artifact_extra(
    dataset: ResearchDataset, y: npt.NDArray[np.int64], decay: float | None
) -> dict[str, Any]:
    """The provenance a registered model keeps (``extra`` of its metadata): the universe,
    specs and features it was trained with, the first signal time of its data
    (``data_start_ms``: ``--start``; a retrain rebuilds the same dataset from it), its
    training size and positive rate (``y``: its meta-labels) and the weights' decay."""
    uni = dataset.universe
    return {
        "exchange": uni.exchange,
        "market": uni.market.value,
        "timeframe": uni.timeframe.value,
        "symbols": list(uni.symbols),
        "signal_spec": spec_to_dict(dataset.signal_spec),
        "exit_spec": spec_to_dict(dataset.exit_spec),
        "bar_features": list(dataset.bar_features),
        "data_start_ms": uni.start_ms,
        "n_train": int(y.size),
        "excluded_incomplete": dataset.report.incomplete,
        "meta_positive_rate": float(y.mean()),
        "decay": decay,
    }


def load_model_for(path: Path, dataset: ResearchDataset) -> ModelHandle:
    """Load a registered model for ``dataset``'s inputs; a model trained with another signal
    or exit spec is refused (its probabilities would describe other trades)."""
    reg = load_model(path, dataset.feature_names)
    extra = reg.metadata.get("extra") or {}
    for key, spec in (("signal_spec", dataset.signal_spec), ("exit_spec", dataset.exit_spec)):
        stored = extra.get(key)
        if stored is not None and stored != spec_to_dict(spec):
            raise ModelError(
                f"model {reg.model_id} was trained with {key} {stored}, "
                f"the current settings give {spec_to_dict(spec)}"
            )
    return ModelHandle(reg.model, reg.model_id)
