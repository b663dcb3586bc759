"""Model registry: LightGBM text model + metadata JSON per model directory. No pickle.

Layout under a registry root::

    <root>/<model_id>/model.txt   LightGBM text format (``Booster.save_model``)
    <root>/<model_id>/meta.json   feature names (in order), the inputs they read
                                  (:class:`~atra.core.features.context.ModelInputs`),
                                  training window, data hash, params, threshold,
                                  calibration (plain numbers), library versions, OOS
                                  metrics, sha256 of model.txt

``model_id`` is a content hash: sha256 over ``model.txt`` and the metadata (minus the save
time), so the same model saved twice gets the same id and a changed byte gets another one.
Writes are atomic: both files go to a temporary directory beside the target, are fsynced, and
the directory is renamed into place. Loading verifies the hashes and the caller's feature
schema and turns every problem into a one-line :class:`ModelError`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from atra.adapters.plugins import check_plugin_record, plugin_record
from atra.core.features.context import ModelInputs
from atra.core.meta import Calibration, MetaModel, MetaParams
from atra.errors import AtraError, ModelError

__all__ = [
    "FORMAT_VERSION",
    "RegisteredModel",
    "dataset_hash",
    "load_model",
    "read_metadata",
    "resolve_model_dir",
    "save_model",
]

FORMAT_VERSION = 1
MODEL_FILE = "model.txt"
META_FILE = "meta.json"
_UNHASHED = ("model_id", "saved_at_utc")


@dataclass(frozen=True, slots=True)
class RegisteredModel:
    """A model in the registry: its id, directory, ready-to-use model and raw metadata."""

    model_id: str
    path: Path
    model: MetaModel
    metadata: dict[str, Any]

    @property
    def inputs(self) -> ModelInputs:
        """What the model's features read: the stored ``inputs`` (saved by ``atra train``), or,
        for a model saved without them, derived from its feature names."""
        stored = self.metadata.get("inputs")
        try:
            if stored is None:
                return ModelInputs.from_features(self.model.feature_names)
            if not isinstance(stored, dict):
                raise ModelError(f"model {self.model_id}: inputs must be an object")
            return ModelInputs.from_dict(stored, f"model {self.model_id} inputs")
        except AtraError as exc:
            if isinstance(exc, ModelError):
                raise
            raise ModelError(f"model {self.model_id}: {exc}") from None


def _plain(obj: Any) -> Any:
    """JSON-safe plain data: numpy scalars -> Python, NaN/inf -> None, frames -> dicts."""
    if isinstance(obj, pd.DataFrame):
        return {str(k): _plain(v) for k, v in obj.to_dict(orient="index").items()}
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | np.ndarray):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    raise ModelError(f"metadata value of type {type(obj).__name__} is not plain data")


def _canonical(meta: Mapping[str, Any]) -> bytes:
    return json.dumps(meta, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _content_id(model_sha256: str, meta: Mapping[str, Any]) -> str:
    hashed = {k: v for k, v in meta.items() if k not in _UNHASHED}
    digest = hashlib.sha256(model_sha256.encode() + b"\0" + _canonical(hashed))
    return digest.hexdigest()[:20]


def _version(dist: str) -> str:
    try:
        return importlib_metadata.version(dist)
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


def _versions() -> dict[str, str]:
    dists = ("atra", "lightgbm", "numpy", "pandas", "scikit-learn")
    return {"python": platform.python_version()} | {d: _version(d) for d in dists}


def dataset_hash(X: pd.DataFrame, *arrays: Any) -> str:
    """sha256 of the feature names, the feature matrix and any extra arrays (y, t0, t1, ...)."""
    h = hashlib.sha256(json.dumps([str(c) for c in X.columns]).encode())
    h.update(np.ascontiguousarray(X.to_numpy(dtype=np.float64, na_value=np.nan)).tobytes())
    for arr in arrays:
        a = np.ascontiguousarray(np.asarray(arr))
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _fsync_write(path: Path, data: bytes) -> None:
    with path.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def save_model(
    model: MetaModel,
    root: str | Path,
    *,
    train_start_ms: int,
    train_end_ms: int,
    data_hash: str,
    oos_metrics: pd.DataFrame | Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    inputs: ModelInputs | None = None,
) -> RegisteredModel:
    """Save a fitted model under ``root/<model_id>/`` atomically; returns the registry entry.

    ``train_start_ms``/``train_end_ms`` is the training window, ``data_hash`` identifies the
    training data (e.g. :func:`dataset_hash`), ``oos_metrics`` is stored as plain numbers
    (e.g. ``oos_metrics_by_year`` output), ``extra`` holds further plain provenance fields,
    ``inputs`` the side data and history the features read (stored as ``inputs``). The
    plug-ins its features and rule (``extra["signal_spec"]["rule"]``) come from are stored as
    ``plugins`` (:func:`atra.adapters.plugins.plugin_record`); loading refuses the model where
    they are not registered. Saving an identical model again returns the existing entry.
    """
    booster = model.booster
    spec = (extra or {}).get("signal_spec")
    rule = spec.get("rule") if isinstance(spec, Mapping) else None
    plugins = plugin_record(model.feature_names, rule if isinstance(rule, str) else None)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    try:
        booster.save_model(str(tmp / MODEL_FILE))
        model_sha = hashlib.sha256((tmp / MODEL_FILE).read_bytes()).hexdigest()
        meta: dict[str, Any] = _plain(
            {
                "format_version": FORMAT_VERSION,
                "feature_names": list(model.feature_names),
                "training_window": {"start_ms": train_start_ms, "end_ms": train_end_ms},
                "data_hash": data_hash,
                **model.settings(),
                "versions": _versions(),
                "oos_metrics": oos_metrics,
                "extra": dict(extra or {}),
                "model_sha256": model_sha,
                **({} if inputs is None else {"inputs": inputs.to_dict()}),
                **({"plugins": plugins} if plugins else {}),
            }
        )
        model_id = _content_id(model_sha, meta)
        meta["model_id"] = model_id
        meta["saved_at_utc"] = datetime.now(UTC).isoformat(timespec="seconds")
        _fsync_write(tmp / META_FILE, json.dumps(meta, indent=2, sort_keys=True).encode())
        target = root / model_id
        try:
            tmp.rename(target)
        except OSError:
            # the same content is already saved (same id): keep it; anything else is an error
            if not (target / META_FILE).exists():
                raise
        dir_fd = os.open(root, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return load_model(target, model.feature_names)


def _read_meta(directory: Path) -> dict[str, Any]:
    meta_path = directory / META_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"no model at {directory}: {META_FILE} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"corrupt metadata {meta_path}: {exc}") from None
    if not isinstance(meta, dict):
        raise ModelError(f"corrupt metadata {meta_path}: expected a JSON object")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelError(
            f"{meta_path}: format_version {meta.get('format_version')!r}, expected {FORMAT_VERSION}"
        )
    return meta


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of the model at ``path`` (its directory or ``meta.json``), unchecked
    beyond its format: to learn a model's feature names before :func:`load_model`."""
    path = Path(path)
    return _read_meta(path.parent if path.name == META_FILE else path)


def resolve_model_dir(ref: str, models_dir: str | Path) -> Path:
    """The model directory ``ref`` names: a path to a model directory (or its ``meta.json``),
    else a model id under ``models_dir`` (where ``atra train --out`` saves). One-line
    :class:`ModelError` when neither holds a model."""
    as_path = Path(ref).expanduser()
    if (as_path / META_FILE).is_file():
        return as_path
    if as_path.name == META_FILE and as_path.is_file():
        return as_path.parent
    in_registry = Path(models_dir) / ref
    if "/" not in ref and (in_registry / META_FILE).is_file():
        return in_registry
    raise ModelError(
        f"model {ref!r}: neither a model directory (with {META_FILE}) nor a model id in "
        f"{models_dir}"
    )


def _schema_error(model_id: str, expected: Sequence[str], given: Sequence[str]) -> str | None:
    if list(expected) == list(given):
        return None
    missing = [n for n in expected if n not in set(given)]
    extra = [n for n in given if n not in set(expected)]
    if missing or extra:
        return (
            f"model {model_id} expects {len(expected)} features, got {len(given)}: "
            f"missing {missing[:5]}, unexpected {extra[:5]}"
        )
    i = next(k for k, (a, b) in enumerate(zip(expected, given, strict=True)) if a != b)
    return (
        f"model {model_id}: features in a different order, position {i} "
        f"expects {expected[i]!r}, got {given[i]!r}"
    )


def load_model(path: str | Path, feature_names: Sequence[str]) -> RegisteredModel:
    """Load ``path`` (a model directory or its ``meta.json``) for callers with ``feature_names``.

    Refuses with a one-line :class:`ModelError`: missing or corrupt files, a hash mismatch,
    an unreadable booster, a plug-in feature or rule it was trained with that is not loaded,
    or a feature schema (names and order) different from the caller's.
    """
    path = Path(path)
    directory = path.parent if path.name == META_FILE else path
    meta = _read_meta(directory)
    model_file = directory / MODEL_FILE
    try:
        model_bytes = model_file.read_bytes()
    except OSError:
        raise ModelError(f"model file {model_file} is missing or unreadable") from None
    try:
        model_id = str(meta["model_id"])
        if not isinstance(meta["model_sha256"], str):
            raise TypeError("model_sha256 must be a string")
        if hashlib.sha256(model_bytes).hexdigest() != meta["model_sha256"]:
            raise ModelError(f"model file {model_file} is corrupt: sha256 differs from metadata")
        if _content_id(meta["model_sha256"], meta) != model_id:
            raise ModelError(f"metadata {directory / META_FILE} is corrupt: model_id mismatch")
        check_plugin_record(model_id, meta.get("plugins"))
        names = [str(n) for n in meta["feature_names"]]
        problem = _schema_error(model_id, names, [str(n) for n in feature_names])
        if problem is not None:
            raise ModelError(problem)
        cal = meta["calibration"]
        calibration = (
            None
            if cal is None
            else Calibration(
                cal["method"],
                x=tuple(float(v) for v in cal["x"]),
                y=tuple(float(v) for v in cal["y"]),
                slope=float(cal["slope"]),
                intercept=float(cal["intercept"]),
            )
        )
        params = MetaParams(**meta["params"])
        threshold = float(meta["threshold"])
        threshold_source = str(meta["threshold_source"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"metadata {directory / META_FILE} is invalid: {exc!r}") from None
    except ModelError:
        raise
    except AtraError as exc:  # e.g. ConfigError from stored params
        raise ModelError(f"metadata {directory / META_FILE} is invalid: {exc}") from None
    try:
        booster = lgb.Booster(model_str=model_bytes.decode("utf-8"))
    except (lgb.basic.LightGBMError, UnicodeDecodeError) as exc:
        raise ModelError(f"model file {model_file} is unreadable: {exc}") from None
    model = MetaModel.from_booster(
        booster,
        names,
        params=params,
        threshold=threshold,
        threshold_source=threshold_source,
        calibration=calibration,
    )
    return RegisteredModel(model_id, directory, model, meta)
