"""Input checks of the meta model (:mod:`atra.core.meta`): feature matrix, labels, times."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd

from atra.errors import DataError, ModelError

__all__ = ["check_floats", "check_labels", "check_times", "feature_matrix", "feature_names_of"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_JSON_SPECIAL = set('[]{}",:')


def feature_matrix(X: pd.DataFrame, names: Sequence[str] | None = None) -> FloatArray:
    """Float64 matrix from ``X`` (columns reordered to ``names`` if given); inf is refused."""
    if not isinstance(X, pd.DataFrame):
        raise DataError(f"X: expected a pandas DataFrame, got {type(X).__name__}")
    cols = [str(c) for c in X.columns]
    if names is not None:
        missing = [n for n in names if n not in cols]
        extra = [c for c in cols if c not in set(names)]
        if missing or extra:
            raise ModelError(
                f"feature schema mismatch: missing {missing[:5]}, unexpected {extra[:5]}"
            )
        X = X.loc[:, list(names)]
    try:
        arr = X.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as exc:
        raise DataError(f"X: every feature must be numeric ({exc})") from None
    inf_rows, inf_cols = np.nonzero(np.isinf(arr))
    if inf_rows.size:
        raise DataError(
            f"X: infinite value in column {X.columns[inf_cols[0]]!r}, row {inf_rows[0]}"
        )
    return arr


def feature_names_of(X: pd.DataFrame) -> tuple[str, ...]:
    """Unique column names without the JSON characters LightGBM refuses in its model text."""
    names = tuple(str(c) for c in X.columns)
    if len(set(names)) != len(names):
        raise DataError("X: duplicate feature names")
    for n in names:
        if _JSON_SPECIAL & set(n):
            chars = "".join(sorted(_JSON_SPECIAL))
            raise DataError(f"X: feature name {n!r} contains one of {chars}")
    return names


def check_labels(y: npt.ArrayLike, n: int) -> IntArray:
    arr = np.asarray(y)
    if arr.shape != (n,):
        raise DataError(f"y: expected {n} labels, got shape {arr.shape}")
    bad = np.flatnonzero((arr != 0) & (arr != 1))
    if bad.size:
        raise DataError(
            f"y: meta-labels must be 0 or 1, row {int(bad[0])} is {arr[bad[0]].item()!r}"
        )
    return arr.astype(np.int64)


def check_times(values: npt.ArrayLike, n: int, name: str) -> IntArray:
    arr = np.asarray(values)
    if arr.shape != (n,) or (arr.dtype.kind not in "iu" and n):
        raise DataError(f"{name}: expected {n} int64 ms timestamps, got {arr.dtype}{arr.shape}")
    return arr.astype(np.int64, copy=False)


def check_floats(values: npt.ArrayLike, n: int, name: str) -> FloatArray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape != (n,):
        raise DataError(f"{name}: expected {n} values, got shape {arr.shape}")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise DataError(f"{name}: values must be finite, row {int(bad[0])} is {arr[bad[0]]}")
    return arr
