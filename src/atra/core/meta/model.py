"""The LightGBM meta model (:mod:`atra.core.meta`): parameters, calibration, threshold choice,
fit / predict / explain."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy.special import expit
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from atra.core.meta.inputs import (
    check_floats,
    check_labels,
    check_times,
    feature_matrix,
    feature_names_of,
)
from atra.errors import ConfigError, DataError, ModelError

__all__ = [
    "THRESHOLD_GRID",
    "Calibration",
    "MetaModel",
    "MetaParams",
    "Reason",
    "select_threshold",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

THRESHOLD_GRID: FloatArray = np.round(np.linspace(0.05, 0.95, 91), 2)
"""Candidate thresholds for ``p_take``: 0.05, 0.06, ..., 0.95."""


@dataclass(frozen=True, slots=True)
class MetaParams:
    """LightGBM hyper-parameters plus calibration and threshold settings (plain numbers)."""

    n_estimators: int = 200
    learning_rate: float = 0.05
    num_leaves: int = 15
    max_depth: int = -1
    min_child_samples: int = 40
    subsample: float = 0.8
    colsample_bytree: float = 0.8
    reg_lambda: float = 1.0
    seed: int = 7
    n_jobs: int = 1
    calibration: Literal["none", "isotonic", "sigmoid"] = "none"
    calibration_fraction: float = 0.2
    threshold_objective: Literal["fbeta", "net_return"] = "fbeta"
    fbeta: float = 0.5
    inner_splits: int = 2
    min_inner_train: int = 50
    default_threshold: float = 0.5

    def __post_init__(self) -> None:
        if self.n_estimators < 1 or self.num_leaves < 2 or self.n_jobs < 1:
            raise ConfigError("n_estimators >= 1, num_leaves >= 2 and n_jobs >= 1 are required")
        if self.calibration not in ("none", "isotonic", "sigmoid"):
            raise ConfigError(f"calibration must be none|isotonic|sigmoid, got {self.calibration}")
        if not 0.0 < self.calibration_fraction < 1.0:
            raise ConfigError(
                f"calibration_fraction must be in (0, 1): {self.calibration_fraction}"
            )
        if self.threshold_objective not in ("fbeta", "net_return"):
            raise ConfigError(
                f"threshold_objective must be fbeta|net_return: {self.threshold_objective}"
            )
        if self.inner_splits < 0 or self.fbeta <= 0.0:
            raise ConfigError("inner_splits must be >= 0 and fbeta > 0")
        if not 0.0 < self.default_threshold < 1.0:
            raise ConfigError(f"default_threshold must be in (0, 1): {self.default_threshold}")

    def lgbm_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``lightgbm.LGBMClassifier`` (deterministic settings included)."""
        return {
            "n_estimators": self.n_estimators,
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "max_depth": self.max_depth,
            "min_child_samples": self.min_child_samples,
            "subsample": self.subsample,
            "subsample_freq": 1 if self.subsample < 1.0 else 0,
            "colsample_bytree": self.colsample_bytree,
            "reg_lambda": self.reg_lambda,
            "random_state": self.seed,
            "n_jobs": self.n_jobs,
            "deterministic": True,
            "force_row_wise": True,
            "verbose": -1,
        }


@dataclass(frozen=True, slots=True)
class Calibration:
    """A fitted probability map, as plain numbers.

    ``isotonic``: piecewise-linear through ``(x[i], y[i])`` on the raw probability, clipped at
    the ends (sklearn's ``IsotonicRegression(out_of_bounds="clip")`` thresholds).
    ``sigmoid``: ``p = 1 / (1 + exp(-(slope * raw_score + intercept)))`` (Platt scaling on the
    log-odds raw score).
    """

    method: Literal["isotonic", "sigmoid"]
    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()
    slope: float = 1.0
    intercept: float = 0.0

    def apply(self, raw_score: FloatArray) -> FloatArray:
        """Calibrated probabilities from booster raw scores (log-odds)."""
        if self.method == "isotonic":
            out: FloatArray = np.interp(_sigmoid(raw_score), self.x, self.y)
            return out
        return _sigmoid(self.slope * raw_score + self.intercept)


@dataclass(frozen=True, slots=True)
class Reason:
    """One feature's part in a decision: its value and its log-odds contribution."""

    feature: str
    value: float
    contribution: float


def _sigmoid(z: FloatArray) -> FloatArray:
    out: FloatArray = expit(z)  # no overflow warning for large |z|
    return out


def select_threshold(
    p: FloatArray,
    y: IntArray,
    *,
    objective: Literal["fbeta", "net_return"] = "fbeta",
    beta: float = 0.5,
    net_return: FloatArray | None = None,
    grid: FloatArray = THRESHOLD_GRID,
) -> float | None:
    """The grid threshold maximising the objective on ``(p, y)``; ``None`` if undecidable.

    ``fbeta``: F-beta of taking (``p >= t``) against ``y == 1``; undecidable without a positive.
    ``net_return``: sum of ``net_return`` over taken events. Ties: the lowest threshold.
    """
    if p.size == 0:
        return None
    take = p[None, :] >= grid[:, None]
    if objective == "net_return":
        if net_return is None:
            raise ConfigError("threshold_objective='net_return' needs net_return")
        score = take @ net_return
    else:
        if not y.any():
            return None
        b2 = beta * beta
        tp = take @ y.astype(np.float64)
        fp = take.sum(axis=1) - tp
        fn = float(y.sum()) - tp
        score = (1 + b2) * tp / np.maximum((1 + b2) * tp + b2 * fn + fp, 1e-300)
    return float(grid[int(np.argmax(score))])


@dataclass(slots=True, eq=False)
class MetaModel:
    """The meta model. ``fit`` then ``predict_proba`` / ``take`` / ``explain``."""

    params: MetaParams = field(default_factory=MetaParams)
    feature_names: tuple[str, ...] = ()
    threshold: float = 0.5
    threshold_source: str = "default"
    calibration: Calibration | None = None
    _booster: lgb.Booster | None = None

    @classmethod
    def from_booster(
        cls,
        booster: lgb.Booster,
        feature_names: Sequence[str],
        *,
        params: MetaParams,
        threshold: float,
        threshold_source: str,
        calibration: Calibration | None,
    ) -> MetaModel:
        """A ready model from a loaded booster and its stored settings (used by the registry)."""
        if booster.num_feature() != len(feature_names):
            raise ModelError(
                f"booster has {booster.num_feature()} features, metadata lists {len(feature_names)}"
            )
        return cls(params, tuple(feature_names), threshold, threshold_source, calibration, booster)

    @property
    def booster(self) -> lgb.Booster:
        """The trained LightGBM booster; :class:`ModelError` before ``fit``."""
        if self._booster is None:
            raise ModelError("meta model is not fitted")
        return self._booster

    def _train(self, arr: FloatArray, y: IntArray, w: FloatArray | None) -> lgb.Booster:
        if np.unique(y).size < 2:
            raise ModelError(f"training data has one class only ({int(y[0])}) in {y.size} rows")
        clf = lgb.LGBMClassifier(**self.params.lgbm_kwargs())
        clf.fit(arr, y, sample_weight=w, feature_name=list(self.feature_names))
        booster: lgb.Booster = clf.booster_
        return booster

    def fit(
        self,
        X: pd.DataFrame,
        y: npt.ArrayLike,
        sample_weight: npt.ArrayLike | None = None,
        *,
        t0: npt.ArrayLike | None = None,
        t1: npt.ArrayLike | None = None,
        net_return: npt.ArrayLike | None = None,
    ) -> MetaModel:
        """Train on ``X`` / ``y`` (rows in any order if ``t0`` is given, else time-ordered).

        ``t0``/``t1`` (int64 ms) order the inner threshold split and the calibration tail and
        purge labels that reach into them; ``net_return`` is needed for the ``net_return``
        threshold objective. Returns ``self``.
        """
        arr = feature_matrix(X)
        names = feature_names_of(X)
        n = arr.shape[0]
        labels = check_labels(y, n)
        w = None if sample_weight is None else check_floats(sample_weight, n, "sample_weight")
        if w is not None and np.any(w < 0):
            raise DataError("sample_weight: weights must be >= 0")
        start = None if t0 is None else check_times(t0, n, "t0")
        end = None if t1 is None else check_times(t1, n, "t1")
        net = None if net_return is None else check_floats(net_return, n, "net_return")
        if self.params.threshold_objective == "net_return" and net is None:
            raise ConfigError("threshold_objective='net_return' needs net_return")
        self.feature_names = names
        self._booster = None  # a failed fit leaves an unfitted model, never a half-fitted one
        order = np.argsort(start, kind="stable") if start is not None else np.arange(n)

        def sub(a: Any, idx: IntArray) -> Any:
            return None if a is None else a[idx]

        def purged_head(head: IntArray, tail: IntArray) -> IntArray:
            if start is None or end is None:
                return head
            kept: IntArray = head[end[head] < start[tail].min()]
            return kept

        self.calibration = None
        if self.params.calibration == "none":
            booster = self._train(arr, labels, w)
        else:
            cut = n - max(1, math.ceil(self.params.calibration_fraction * n))
            tail = order[cut:]
            head = purged_head(order[:cut], tail)
            booster = self._train(arr[head], labels[head], sub(w, head))
            self.calibration = self._fit_calibration(booster, arr[tail], labels[tail])

        # threshold: out-of-fold predictions from an inner time-ordered split of these rows
        blocks = np.array_split(order, self.params.inner_splits + 1)
        oof_idx: list[IntArray] = []
        oof_p: list[FloatArray] = []
        for k in range(1, len(blocks)):
            val = blocks[k]
            train = purged_head(np.concatenate(blocks[:k]), val)
            if train.size < self.params.min_inner_train or np.unique(labels[train]).size < 2:
                continue
            inner = self._train(arr[train], labels[train], sub(w, train))
            raw = np.asarray(inner.predict(arr[val], raw_score=True), dtype=np.float64)
            oof_idx.append(val)
            oof_p.append(self._to_proba(raw))
        self.threshold, self.threshold_source = self.params.default_threshold, "default"
        if oof_idx:
            idx = np.concatenate(oof_idx)
            t = select_threshold(
                np.concatenate(oof_p),
                labels[idx],
                objective=self.params.threshold_objective,
                beta=self.params.fbeta,
                net_return=sub(net, idx),
            )
            if t is not None:
                self.threshold = t
                self.threshold_source = f"oof_{self.params.threshold_objective}"
        self._booster = booster
        return self

    def _fit_calibration(self, booster: lgb.Booster, arr: FloatArray, y: IntArray) -> Calibration:
        if np.unique(y).size < 2:
            raise ModelError(f"calibration tail ({y.size} rows) has one class only")
        raw = np.asarray(booster.predict(arr, raw_score=True), dtype=np.float64)
        if self.params.calibration == "isotonic":
            iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
            iso.fit(_sigmoid(raw), y)
            xs = tuple(float(v) for v in iso.X_thresholds_)
            ys = tuple(float(v) for v in iso.y_thresholds_)
            return Calibration("isotonic", x=xs, y=ys)
        lr = LogisticRegression(C=1e6).fit(raw.reshape(-1, 1), y)
        return Calibration(
            "sigmoid", slope=float(lr.coef_[0, 0]), intercept=float(lr.intercept_[0])
        )

    def _to_proba(self, raw: FloatArray) -> FloatArray:
        return self.calibration.apply(raw) if self.calibration is not None else _sigmoid(raw)

    def raw_score(self, X: pd.DataFrame) -> FloatArray:
        """Booster log-odds (uncalibrated) for each row of ``X``."""
        booster = self.booster
        arr = feature_matrix(X, self.feature_names)
        return np.asarray(booster.predict(arr, raw_score=True), dtype=np.float64)

    def predict_proba(self, X: pd.DataFrame) -> FloatArray:
        """``p_take = P(y = 1)`` per row, shape ``(n,)`` (calibrated if a calibration is set)."""
        return self._to_proba(self.raw_score(X))

    def take(self, X: pd.DataFrame) -> npt.NDArray[np.bool_]:
        """The decision: ``predict_proba(X) >= threshold``."""
        return self.predict_proba(X) >= self.threshold

    def contributions(self, X: pd.DataFrame) -> pd.DataFrame:
        """Per-row log-odds contributions of each feature plus a ``__bias__`` column."""
        booster = self.booster
        arr = feature_matrix(X, self.feature_names)
        contrib = np.asarray(booster.predict(arr, pred_contrib=True), dtype=np.float64)
        return pd.DataFrame(contrib, index=X.index, columns=[*self.feature_names, "__bias__"])

    def explain(self, X: pd.DataFrame, top_k: int = 5) -> list[list[Reason]]:
        """For each row, the ``top_k`` features by ``|contribution|`` (log-odds), largest first."""
        if top_k < 1:
            raise ConfigError(f"top_k must be >= 1, got {top_k}")
        booster = self.booster
        arr = feature_matrix(X, self.feature_names)
        contrib = np.asarray(booster.predict(arr, pred_contrib=True), dtype=np.float64)
        feats = contrib[:, :-1]
        order = np.argsort(-np.abs(feats), axis=1, kind="stable")[:, :top_k]
        return [
            [Reason(self.feature_names[j], float(arr[i, j]), float(feats[i, j])) for j in row]
            for i, row in enumerate(order)
        ]

    def feature_importance(self, kind: Literal["gain", "split"] = "gain") -> pd.Series:
        """Total gain (or split count) per feature, normalised to sum 1, descending."""
        imp = np.asarray(self.booster.feature_importance(importance_type=kind), dtype=np.float64)
        total = imp.sum()
        s = pd.Series(imp / total if total > 0 else imp, index=list(self.feature_names))
        return s.sort_values(ascending=False, kind="stable")

    def settings(self) -> dict[str, Any]:
        """Plain-number settings for the registry metadata."""
        return {
            "params": asdict(self.params),
            "threshold": self.threshold,
            "threshold_source": self.threshold_source,
            "calibration": None if self.calibration is None else asdict(self.calibration),
        }
