"""Model registry: round trip, content ids, schema checks, corrupt and missing files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from atra.adapters.artifacts import (
    FORMAT_VERSION,
    META_FILE,
    MODEL_FILE,
    RegisteredModel,
    dataset_hash,
    load_model,
    save_model,
)
from atra.core.meta import MetaModel, MetaParams
from atra.errors import ModelError

FEATURES = ["ret_1", "vol_24", "funding", "rsi_14"]


def make_data(n: int = 600, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, len(FEATURES))), columns=FEATURES)
    X.loc[X.index[::7], "funding"] = np.nan
    y = (X["ret_1"] + rng.normal(size=n) > 0).to_numpy().astype(np.int64)
    t0 = 1_600_000_000_000 + np.arange(n, dtype=np.int64) * 3_600_000
    return X, y, t0


@pytest.fixture(scope="module", params=["none", "isotonic", "sigmoid"])
def fitted(request: pytest.FixtureRequest) -> tuple[MetaModel, pd.DataFrame]:
    X, y, t0 = make_data()
    params = MetaParams(
        n_estimators=15, num_leaves=7, min_child_samples=10, calibration=request.param
    )
    return MetaModel(params).fit(X, y, t0=t0, t1=t0 + 7_200_000), X


def save(model: MetaModel, root: Path, **kw: object) -> RegisteredModel:
    args: dict[str, object] = {
        "train_start_ms": 1_600_000_000_000,
        "train_end_ms": 1_602_160_000_000,
        "data_hash": "abc123",
    } | kw
    return save_model(model, root, **args)  # type: ignore[arg-type]


def test_round_trip_gives_identical_predictions(
    fitted: tuple[MetaModel, pd.DataFrame], tmp_path: Path
) -> None:
    model, X = fitted
    metrics = pd.DataFrame({"auc": [0.61, np.nan]}, index=["2021", "all"])
    rec = save(model, tmp_path, oos_metrics=metrics, extra={"run_id": "r1", "n": np.int64(3)})
    assert rec.path == tmp_path / rec.model_id
    assert sorted(p.name for p in rec.path.iterdir()) == [META_FILE, MODEL_FILE]
    loaded = load_model(rec.path, FEATURES)
    np.testing.assert_array_equal(loaded.model.predict_proba(X), model.predict_proba(X))
    np.testing.assert_array_equal(loaded.model.take(X), model.take(X))
    assert loaded.model.threshold == model.threshold
    assert loaded.model.calibration == model.calibration
    assert loaded.model.params == model.params
    # repr: NaN feature values compare unequal to themselves
    assert repr(loaded.model.explain(X.iloc[:3])) == repr(model.explain(X.iloc[:3]))
    meta = json.loads((rec.path / META_FILE).read_text())
    assert meta["feature_names"] == FEATURES
    assert meta["training_window"] == {"start_ms": 1_600_000_000_000, "end_ms": 1_602_160_000_000}
    assert meta["oos_metrics"] == {"2021": {"auc": 0.61}, "all": {"auc": None}}
    assert meta["extra"] == {"run_id": "r1", "n": 3}
    assert meta["format_version"] == FORMAT_VERSION
    assert set(meta["versions"]) >= {"lightgbm", "numpy", "scikit-learn", "python"}
    assert meta["model_id"] == rec.model_id
    # the text format is LightGBM's own; no pickle anywhere
    assert (rec.path / MODEL_FILE).read_text().startswith("tree")
    if model.calibration is not None and model.calibration.method == "isotonic":
        assert meta["calibration"]["x"] == list(model.calibration.x)


def test_model_id_is_a_content_hash(fitted: tuple[MetaModel, pd.DataFrame], tmp_path: Path) -> None:
    model, _ = fitted
    a = save(model, tmp_path)
    b = save(model, tmp_path)  # same content: same id, no second directory
    assert a.model_id == b.model_id
    assert [p.name for p in tmp_path.iterdir()] == [a.model_id]
    c = save(model, tmp_path, data_hash="other")
    assert c.model_id != a.model_id
    X, y, _ = make_data(seed=1)
    other = MetaModel(MetaParams(n_estimators=15, num_leaves=7)).fit(X, y)
    assert save(other, tmp_path).model_id not in {a.model_id, c.model_id}


def test_schema_mismatch_is_one_clear_line(
    fitted: tuple[MetaModel, pd.DataFrame], tmp_path: Path
) -> None:
    model, _ = fitted
    rec = save(model, tmp_path)
    with pytest.raises(ModelError) as err:
        load_model(rec.path, ["ret_1", "vol_24", "funding", "rsi_7", "extra"])
    msg = str(err.value)
    assert "\n" not in msg
    assert msg == (
        f"model {rec.model_id} expects 4 features, got 5: "
        "missing ['rsi_14'], unexpected ['rsi_7', 'extra']"
    )
    with pytest.raises(ModelError, match="different order, position 0 expects 'ret_1'"):
        load_model(rec.path, ["vol_24", "ret_1", "funding", "rsi_14"])
    # the meta.json path works as well as the directory
    assert load_model(rec.path / META_FILE, FEATURES).model_id == rec.model_id
    assert load_model(str(rec.path), FEATURES).model_id == rec.model_id


def test_unfitted_model_cannot_be_saved(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not fitted"):
        save(MetaModel(), tmp_path)


def test_non_plain_metadata_is_refused(
    fitted: tuple[MetaModel, pd.DataFrame], tmp_path: Path
) -> None:
    with pytest.raises(ModelError, match="type object is not plain data"):
        save(fitted[0], tmp_path, extra={"thing": object()})
    assert not any(tmp_path.iterdir())  # nothing half-written stays behind


def _corrupt_meta(path: Path, key: str, value: object) -> None:
    meta = json.loads((path / META_FILE).read_text())
    meta[key] = value
    (path / META_FILE).write_text(json.dumps(meta))


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda p: (p / META_FILE).unlink(), "meta.json is missing"),
        (lambda p: (p / MODEL_FILE).unlink(), "model.txt is missing or unreadable"),
        (lambda p: (p / META_FILE).write_text("{not json"), "corrupt metadata"),
        (lambda p: (p / META_FILE).write_text("[1, 2]"), "expected a JSON object"),
        (lambda p: _corrupt_meta(p, "format_version", 99), "format_version 99, expected 1"),
        (
            lambda p: (p / MODEL_FILE).write_text((p / MODEL_FILE).read_text()[:-200]),
            "is corrupt: sha256 differs",
        ),
        (lambda p: _corrupt_meta(p, "threshold", 0.99), "corrupt: model_id mismatch"),
        (lambda p: _corrupt_meta(p, "calibration", {"method": "x"}), "is invalid"),
        (lambda p: _corrupt_meta(p, "params", {"n_estimators": 0}), "is invalid"),
        (lambda p: _corrupt_meta(p, "model_sha256", None), "is invalid"),
        (lambda p: _corrupt_meta(p, "feature_names", 3), "is invalid"),
    ],
)
def test_corrupt_or_missing_files_raise_model_error(
    fitted: tuple[MetaModel, pd.DataFrame], tmp_path: Path, damage: object, match: str
) -> None:
    rec = save(fitted[0], tmp_path)
    damage(rec.path)  # type: ignore[operator]
    if "model_id mismatch" not in match and "sha256 differs" not in match:
        _rehash(rec.path)
    with pytest.raises(ModelError, match=match):
        load_model(rec.path, FEATURES)


def _rehash(path: Path) -> None:
    """Re-sign tampered metadata so that the deeper checks are reached."""
    from atra.adapters.artifacts import _content_id

    try:
        meta = json.loads((path / META_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return
    if isinstance(meta, dict) and isinstance(meta.get("model_sha256"), str):
        meta["model_id"] = _content_id(meta["model_sha256"], meta)
        (path / META_FILE).write_text(json.dumps(meta))


def test_unreadable_booster_text(fitted: tuple[MetaModel, pd.DataFrame], tmp_path: Path) -> None:
    import hashlib

    from atra.adapters.artifacts import _content_id

    rec = save(fitted[0], tmp_path)
    junk = b"tree\nthis is not a model\n"
    (rec.path / MODEL_FILE).write_bytes(junk)
    meta = json.loads((rec.path / META_FILE).read_text())
    meta["model_sha256"] = hashlib.sha256(junk).hexdigest()
    meta["model_id"] = _content_id(meta["model_sha256"], meta)
    (rec.path / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="is unreadable"):
        load_model(rec.path, FEATURES)


def test_dataset_hash_changes_with_any_input() -> None:
    X, y, t0 = make_data(n=50)
    h = dataset_hash(X, y, t0)
    assert h == dataset_hash(X.copy(), y.copy(), t0.copy())
    X2 = X.copy()
    X2.iloc[3, 1] += 1e-9
    assert dataset_hash(X2, y, t0) != h
    assert dataset_hash(X.rename(columns={"rsi_14": "rsi"}), y, t0) != h
    assert dataset_hash(X, 1 - y, t0) != h
    assert dataset_hash(X, y) != h


def test_unknown_distribution_version_is_recorded_as_unknown() -> None:
    from atra.adapters.artifacts import _version

    assert _version("no-such-distribution-atra-test") == "unknown"
    assert _version("numpy") == np.__version__
