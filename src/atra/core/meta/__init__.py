"""LightGBM meta model: fit / predict / explain, threshold choice, walk-forward OOS predictions.

The meta model answers "take this primary signal or not?" with ``p_take = P(y = 1 | X)``.

- **Determinism**: ``LGBMClassifier`` with a fixed seed, ``deterministic=True``,
  ``force_row_wise=True`` and a fixed thread count: two fits on the same data give identical
  predictions.
- **Calibration** (optional, ``MetaParams.calibration``): the booster is trained on the head of
  the training set (time order) and an isotonic or sigmoid (Platt) map is fitted, unweighted,
  on the held-out tail (the last ``calibration_fraction`` of training events, with the head
  purged of labels reaching into the tail). The map is stored as plain numbers
  (:class:`Calibration`), never a pickled object. Without calibration the booster is trained
  on all training rows. Sample weights with balanced classes move raw probabilities towards
  0.5, so calibrate when ``p_take`` itself (not only its ranking) matters, e.g. for sizing.
- **Threshold** (training side only): the training rows are cut, in time order, into
  ``inner_splits + 1`` blocks; for each block ``k >= 1`` a model is trained on the earlier
  blocks (purged of labels that reach into block ``k``) and predicts block ``k``. On these
  out-of-fold predictions (mapped through the final calibration, if any) the threshold from
  :data:`THRESHOLD_GRID` maximising the objective is picked: F-beta of "take" (default
  ``beta = 0.5``, precision-leaning) or the summed net return of taken trades. Ties go to the
  lowest threshold. With too little data for any inner fold the threshold is
  ``default_threshold`` (``threshold_source = "default"``). Nothing outside the training rows
  is ever seen.
- **Explanations**: LightGBM ``pred_contrib=True`` (TreeSHAP). Contributions are in log-odds of
  the *uncalibrated* booster; per row they sum, with the bias, to the raw score.

The code lives in :mod:`atra.core.meta.model` (parameters, calibration, threshold, the model),
:mod:`atra.core.meta.walkforward` (per-fold OOS predictions, metrics by year) and
:mod:`atra.core.meta.inputs` (input checks); this module is their public face.
"""

from __future__ import annotations

from atra.core.meta.model import (
    THRESHOLD_GRID,
    Calibration,
    MetaModel,
    MetaParams,
    Reason,
    select_threshold,
)
from atra.core.meta.walkforward import (
    FoldExecutor,
    OOSPredictions,
    oos_metrics_by_year,
    walk_forward_predict,
)

__all__ = [
    "THRESHOLD_GRID",
    "Calibration",
    "FoldExecutor",
    "MetaModel",
    "MetaParams",
    "OOSPredictions",
    "Reason",
    "oos_metrics_by_year",
    "select_threshold",
    "walk_forward_predict",
]
