"""Meta model: determinism, explanations, calibration, training-side thresholds, walk-forward."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest
from joblib import register_parallel_backend
from joblib._parallel_backends import ThreadingBackend
from sklearn.metrics import roc_auc_score

from atra.core.meta import (
    Calibration,
    MetaModel,
    MetaParams,
    OOSPredictions,
    Reason,
    oos_metrics_by_year,
    select_threshold,
    walk_forward_predict,
)
from atra.core.validation import DAY_MS, Fold, walk_forward_splits
from atra.core.weights import fold_weights_fn
from atra.errors import ConfigError, DataError, ModelError

HOUR_MS = 3_600_000
T_START = 1_577_836_800_000  # 2020-01-01 00:00 UTC
SMALL = MetaParams(n_estimators=30, num_leaves=7, min_child_samples=20)


@dataclass(frozen=True)
class Events:
    X: pd.DataFrame
    y: npt.NDArray[np.int64]
    t0: npt.NDArray[np.int64]
    t1: npt.NDArray[np.int64]
    net: npt.NDArray[np.float64]


def make_events(n: int = 1500, seed: int = 0, days: int = 540, base_rate: float = 0.45) -> Events:
    """``f0`` drives the label; the other features are noise; ``f3`` has NaNs."""
    rng = np.random.default_rng(seed)
    t0 = T_START + np.sort(rng.integers(0, days * DAY_MS, n))
    t1 = t0 + rng.integers(1, 48, n) * HOUR_MS
    X = pd.DataFrame(rng.normal(size=(n, 5)), columns=[f"f{i}" for i in range(5)])
    X.loc[X.index[::11], "f3"] = np.nan
    score = 2.0 * X["f0"].to_numpy() + rng.normal(size=n)
    y = (score > np.quantile(score, 1 - base_rate)).astype(np.int64)
    net = np.where(y == 1, 0.02, -0.012) + rng.normal(0, 0.004, n)
    return Events(X, y, t0, t1, net)


@pytest.fixture(scope="module")
def ev() -> Events:
    return make_events()


@pytest.fixture(scope="module")
def model(ev: Events) -> MetaModel:
    return MetaModel(SMALL).fit(ev.X, ev.y, t0=ev.t0, t1=ev.t1)


def monthly_folds(ev: Events) -> list[Fold]:
    return walk_forward_splits(
        ev.t0,
        ev.t1,
        start_ms=T_START + 180 * DAY_MS,
        test_span_ms=60 * DAY_MS,
        embargo_ms=DAY_MS,
        min_train_events=200,
    )


def test_two_fits_give_identical_predictions(ev: Events, model: MetaModel) -> None:
    w = fold_weights_fn(ev.y, ev.t0, ev.t1)(np.arange(ev.y.size))
    a = MetaModel(SMALL).fit(ev.X, ev.y, w, t0=ev.t0, t1=ev.t1)
    b = MetaModel(SMALL).fit(ev.X, ev.y, w, t0=ev.t0, t1=ev.t1)
    np.testing.assert_array_equal(a.predict_proba(ev.X), b.predict_proba(ev.X))
    assert a.threshold == b.threshold
    # weights matter: the weighted model differs from the unweighted one
    assert not np.array_equal(a.predict_proba(ev.X), model.predict_proba(ev.X))


def test_contributions_plus_bias_equal_raw_score(ev: Events, model: MetaModel) -> None:
    contrib = model.contributions(ev.X.iloc[:200])
    assert list(contrib.columns) == [*ev.X.columns, "__bias__"]
    np.testing.assert_allclose(
        contrib.sum(axis=1).to_numpy(), model.raw_score(ev.X.iloc[:200]), atol=1e-9
    )
    p = model.predict_proba(ev.X.iloc[:200])
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-contrib.sum(axis=1).to_numpy())))


def test_explain_returns_top_k_reasons_sorted_by_magnitude(ev: Events, model: MetaModel) -> None:
    rows = ev.X.iloc[:50]
    reasons = model.explain(rows, top_k=3)
    contrib = model.contributions(rows)
    assert len(reasons) == 50
    for i, row in enumerate(reasons):
        assert len(row) == 3
        mags = [abs(r.contribution) for r in row]
        assert mags == sorted(mags, reverse=True)
        assert mags[0] == pytest.approx(contrib.iloc[i, :-1].abs().max())
        for r in row:
            assert isinstance(r, Reason)
            assert r.contribution == contrib.iloc[i][r.feature]
            np.testing.assert_equal(r.value, rows.iloc[i][r.feature])  # NaN-safe
    # the driving feature is the top reason for most rows
    assert np.mean([row[0].feature == "f0" for row in reasons]) > 0.8
    assert len(model.explain(rows.iloc[:1], top_k=50)[0]) == 5


def test_driving_feature_ranks_top_and_oos_auc_is_high(ev: Events) -> None:
    folds = monthly_folds(ev)
    oos = walk_forward_predict(
        ev.X,
        ev.y,
        ev.t0,
        ev.t1,
        folds,
        weights_fn=fold_weights_fn(ev.y, ev.t0, ev.t1, decay=0.5),
        params=SMALL,
        n_jobs=1,
    )
    f = oos.frame
    assert f["pos"].is_monotonic_increasing
    assert f["pos"].tolist() == sorted(np.concatenate([fd.test_idx for fd in folds]).tolist())
    assert (f.index.to_numpy() == ev.X.index[f["pos"]]).all()
    assert roc_auc_score(ev.y[f["pos"]], f["p_take"]) > 0.7
    assert oos.importance.mean().idxmax() == "f0"
    assert (f["take"] == (f["p_take"] >= f["threshold"])).all()
    assert oos.folds["threshold_source"].eq("oof_fbeta").all()
    assert oos.folds["n_train"].tolist() == [fd.train_idx.size for fd in folds]
    model = MetaModel(SMALL).fit(ev.X, ev.y, t0=ev.t0, t1=ev.t1)
    assert model.feature_importance().index[0] == "f0"
    assert model.feature_importance("split").sum() == pytest.approx(1.0)


class _BatchOnlyBackend(ThreadingBackend):  # type: ignore[misc]
    """A real threading backend that, like Ray's or multiprocessing, cannot stream results."""

    supports_return_generator = False


register_parallel_backend("batch-only-threads", _BatchOnlyBackend)


@pytest.mark.parametrize("backend", ["loky", "threading", "batch-only-threads"])
def test_parallel_backends_match_sequential_and_report_progress(ev: Events, backend: str) -> None:
    folds = monthly_folds(ev)[:3]
    seen: list[tuple[int, int]] = []
    seq = walk_forward_predict(ev.X, ev.y, ev.t0, ev.t1, folds, params=SMALL, n_jobs=1)
    par = walk_forward_predict(
        ev.X,
        ev.y,
        ev.t0,
        ev.t1,
        folds,
        params=SMALL,
        n_jobs=2,
        backend=backend,
        progress=lambda done, total: seen.append((done, total)),
    )
    pd.testing.assert_frame_equal(seq.frame, par.frame)
    pd.testing.assert_frame_equal(seq.folds, par.folds)
    assert seen == [(1, 3), (2, 3), (3, 3)]


@pytest.mark.parametrize("objective", ["fbeta", "net_return"])
def test_threshold_never_depends_on_test_fold(ev: Events, objective: str) -> None:
    params = MetaParams(
        n_estimators=20,
        num_leaves=7,
        min_child_samples=20,
        threshold_objective=objective,  # type: ignore[arg-type]
    )
    folds = monthly_folds(ev)
    k = 2
    test = folds[k].test_idx
    base = walk_forward_predict(
        ev.X, ev.y, ev.t0, ev.t1, folds[: k + 1], params=params, net_return=ev.net, n_jobs=1
    )
    rng = np.random.default_rng(9)
    y2 = ev.y.copy()
    y2[test] = 1 - y2[test]
    X2 = ev.X.copy()
    X2.iloc[test, :] = rng.normal(size=(test.size, X2.shape[1])) * 50
    net2 = ev.net.copy()
    net2[test] = -net2[test]
    mutated = walk_forward_predict(
        X2, y2, ev.t0, ev.t1, folds[: k + 1], params=params, net_return=net2, n_jobs=1
    )
    assert base.folds["threshold"].tolist() == mutated.folds["threshold"].tolist()
    assert base.folds["threshold_source"].eq(f"oof_{objective}").all()
    # predictions of earlier folds are untouched; only the mutated rows' p_take moves
    same = ~np.isin(base.frame["pos"], test)
    np.testing.assert_array_equal(
        base.frame.loc[same, "p_take"].to_numpy(), mutated.frame.loc[same, "p_take"].to_numpy()
    )
    # flipping only y of the test rows leaves everything identical
    y_only = walk_forward_predict(
        ev.X, y2, ev.t0, ev.t1, folds[: k + 1], params=params, net_return=net2, n_jobs=1
    )
    pd.testing.assert_frame_equal(base.frame, y_only.frame)


@pytest.mark.parametrize("method", ["isotonic", "sigmoid"])
def test_calibration_restores_base_rate_under_balanced_weights(method: str) -> None:
    ev = make_events(n=3000, seed=4, base_rate=0.15)
    train = np.arange(2000)
    test = np.arange(2000, 3000)
    w = fold_weights_fn(ev.y, ev.t0, ev.t1)(train)
    kw = {"t0": ev.t0[train], "t1": ev.t1[train]}
    raw = MetaModel(SMALL).fit(ev.X.iloc[train], ev.y[train], w, **kw)
    params = MetaParams(n_estimators=30, num_leaves=7, min_child_samples=20, calibration=method)  # type: ignore[arg-type]
    cal = MetaModel(params).fit(ev.X.iloc[train], ev.y[train], w, **kw)
    base_rate = ev.y[test].mean()
    p_raw = raw.predict_proba(ev.X.iloc[test])
    p_cal = cal.predict_proba(ev.X.iloc[test])
    assert abs(p_raw.mean() - base_rate) > 0.1  # balanced weights inflate p
    assert abs(p_cal.mean() - base_rate) < 0.05
    assert cal.calibration is not None
    assert cal.calibration.method == method
    assert np.all((p_cal >= 0) & (p_cal <= 1))
    # calibration is monotone in the raw score: the ranking is kept
    order = np.argsort(cal.raw_score(ev.X.iloc[test]))
    assert np.all(np.diff(p_cal[order]) >= -1e-12)
    assert cal.settings()["calibration"]["method"] == method


def test_isotonic_calibration_matches_sklearn_on_stored_numbers() -> None:
    from sklearn.isotonic import IsotonicRegression

    rng = np.random.default_rng(2)
    raw = rng.normal(size=400)
    y = (rng.random(400) < 1 / (1 + np.exp(-2 * raw))).astype(int)
    p = 1 / (1 + np.exp(-raw))
    iso = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(p, y)
    cal = Calibration("isotonic", tuple(iso.X_thresholds_), tuple(iso.y_thresholds_))
    probe = np.linspace(-6, 6, 301)
    np.testing.assert_allclose(cal.apply(probe), iso.predict(1 / (1 + np.exp(-probe))))
    sig = Calibration("sigmoid", slope=2.0, intercept=-1.0)
    np.testing.assert_allclose(sig.apply(np.array([0.5])), [0.5])


def test_default_threshold_when_no_inner_fold_fits(ev: Events) -> None:
    params = MetaParams(n_estimators=10, inner_splits=0, default_threshold=0.4)
    m = MetaModel(params).fit(ev.X, ev.y)
    assert (m.threshold, m.threshold_source) == (0.4, "default")
    assert np.array_equal(m.take(ev.X), m.predict_proba(ev.X) >= 0.4)
    tiny = MetaModel(MetaParams(n_estimators=5, min_inner_train=10_000)).fit(ev.X, ev.y)
    assert tiny.threshold_source == "default"


def test_select_threshold_by_hand() -> None:
    p = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.8])
    y = np.array([0, 0, 0, 1, 1, 1])
    assert select_threshold(p, y) == pytest.approx(0.31)  # lowest threshold with F = 1
    net = np.array([-1.0, -1.0, 2.0, 1.0, -0.5, 1.0])
    assert select_threshold(p, y, objective="net_return", net_return=net) == pytest.approx(0.21)
    assert select_threshold(p, np.zeros(6, dtype=np.int64)) is None
    assert select_threshold(np.empty(0), np.empty(0, dtype=np.int64)) is None
    with pytest.raises(ConfigError, match="needs net_return"):
        select_threshold(p, y, objective="net_return")


def test_oos_metrics_by_year_against_direct_computation() -> None:
    rng = np.random.default_rng(5)
    n = 400
    t0 = T_START + np.sort(rng.integers(0, 700 * DAY_MS, n))  # 2020 and 2021
    y = (rng.random(n) < 0.4).astype(np.int64)
    p = np.clip(0.3 * y + rng.random(n) * 0.7, 0, 1)
    pos = np.arange(0, n, 2)  # only half the events were tested
    frame = pd.DataFrame(
        {"pos": pos, "fold": 0, "p_take": p[pos], "threshold": 0.5, "take": p[pos] >= 0.5}
    )
    net = rng.normal(size=n)
    out = oos_metrics_by_year(frame, y, t0, net)
    assert out.index.tolist() == ["2020", "2021", "all"]
    yy, pp = y[pos], p[pos]
    take = pp >= 0.5
    row = out.loc["all"]
    assert row["n_events"] == pos.size
    assert row["auc"] == pytest.approx(roc_auc_score(yy, pp))
    assert row["precision"] == pytest.approx((yy & take).sum() / take.sum())
    assert row["recall"] == pytest.approx((yy & take).sum() / yy.sum())
    assert row["base_rate"] == pytest.approx(yy.mean())
    assert row["mean_net_return_take"] == pytest.approx(net[pos][take].mean())
    years = pd.to_datetime(t0[pos], unit="ms", utc=True).year.to_numpy()
    assert out.loc["2021", "n_events"] == int((years == 2021).sum())
    # undefined metrics are NaN, never invented
    one_class = frame.assign(take=False)
    flat = oos_metrics_by_year(one_class, np.zeros(n, dtype=np.int64), t0)
    assert flat[["auc", "precision", "recall"]].isna().all().all()
    assert "mean_net_return" not in flat.columns


def test_oos_metrics_accepts_oos_predictions(ev: Events) -> None:
    folds = monthly_folds(ev)[:2]
    oos = walk_forward_predict(ev.X, ev.y, ev.t0, ev.t1, folds, params=SMALL, n_jobs=1)
    assert isinstance(oos, OOSPredictions)
    out = oos_metrics_by_year(oos, ev.y, ev.t0)
    assert out.loc["all", "n_events"] == len(oos.frame)


def test_predict_needs_fit_and_matching_schema(ev: Events, model: MetaModel) -> None:
    with pytest.raises(ModelError, match="not fitted"):
        MetaModel().predict_proba(ev.X)
    with pytest.raises(ModelError, match=r"missing \['f4'\], unexpected \['g'\]"):
        model.predict_proba(ev.X.rename(columns={"f4": "g"}))
    reordered = ev.X[list(reversed(ev.X.columns))]
    np.testing.assert_array_equal(model.predict_proba(reordered), model.predict_proba(ev.X))
    with pytest.raises(ModelError, match="booster has 5 features"):
        MetaModel.from_booster(
            model.booster,
            ["a"],
            params=SMALL,
            threshold=0.5,
            threshold_source="default",
            calibration=None,
        )
    with pytest.raises(ConfigError, match="top_k"):
        model.explain(ev.X, top_k=0)


def _bad_fit(ev: Events, **kw: object) -> None:
    args: dict[str, object] = {"X": ev.X, "y": ev.y} | kw
    MetaModel(MetaParams(n_estimators=5)).fit(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "err", "match"),
    [
        ({"X": "nope"}, DataError, "expected a pandas DataFrame"),
        ({"y": np.full(1500, 2)}, DataError, "row 0 is 2"),
        ({"y": np.zeros(3)}, DataError, "expected 1500 labels"),
        ({"y": np.zeros(1500, dtype=int)}, ModelError, "one class only"),
        ({"sample_weight": -np.ones(1500)}, DataError, "weights must be >= 0"),
        ({"sample_weight": np.full(1500, np.nan)}, DataError, "must be finite, row 0"),
        ({"sample_weight": np.ones(4)}, DataError, "sample_weight: expected 1500"),
        ({"t0": np.zeros(1500)}, DataError, "t0: expected 1500 int64 ms"),
    ],
)
def test_fit_rejects_bad_input(
    ev: Events, kw: dict[str, object], err: type[Exception], match: str
) -> None:
    with pytest.raises(err, match=match):
        _bad_fit(ev, **kw)


def test_fit_rejects_bad_feature_frames(ev: Events) -> None:
    with pytest.raises(DataError, match="duplicate feature names"):
        _bad_fit(ev, X=ev.X.rename(columns={"f1": "f0"}))
    with pytest.raises(DataError, match="feature name 'a:b'"):
        _bad_fit(ev, X=ev.X.rename(columns={"f1": "a:b"}))
    with pytest.raises(DataError, match="infinite value in column 'f2', row 3"):
        _bad_fit(ev, X=ev.X.assign(f2=np.where(np.arange(1500) == 3, np.inf, 0.0)))
    with pytest.raises(DataError, match="every feature must be numeric"):
        _bad_fit(ev, X=ev.X.assign(f2="x"))
    with pytest.raises(ConfigError, match="needs net_return"):
        MetaModel(MetaParams(threshold_objective="net_return")).fit(ev.X, ev.y)


def test_calibration_tail_with_one_class_is_refused(ev: Events) -> None:
    y = ev.y.copy()
    y[-300:] = 0
    model = MetaModel(MetaParams(n_estimators=5, calibration="isotonic"))
    with pytest.raises(ModelError, match="calibration tail"):
        model.fit(ev.X, y)
    with pytest.raises(ModelError, match="not fitted"):  # no half-fitted state is left
        model.predict_proba(ev.X)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"n_estimators": 0}, "n_estimators"),
        ({"calibration": "platt"}, "calibration must be"),
        ({"calibration_fraction": 1.0}, "calibration_fraction"),
        ({"threshold_objective": "sharpe"}, "threshold_objective"),
        ({"inner_splits": -1}, "inner_splits"),
        ({"default_threshold": 1.0}, "default_threshold"),
    ],
)
def test_params_are_validated(kw: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        MetaParams(**kw)  # type: ignore[arg-type]


def test_walk_forward_rejects_bad_folds(ev: Events) -> None:
    folds = monthly_folds(ev)[:1]
    with pytest.raises(ModelError, match="at least one fold"):
        walk_forward_predict(ev.X, ev.y, ev.t0, ev.t1, [], n_jobs=1)
    y = ev.y.copy()
    y[folds[0].train_idx] = 1
    with pytest.raises(ModelError, match="fold 0: training labels have one class"):
        walk_forward_predict(ev.X, y, ev.t0, ev.t1, folds, n_jobs=1)
    with pytest.raises(DataError, match="weights_fn returned"):
        walk_forward_predict(
            ev.X, ev.y, ev.t0, ev.t1, folds, weights_fn=lambda idx: np.ones(3), n_jobs=1
        )
    head = ev.X.iloc[:100]
    with pytest.raises(DataError, match="row index beyond the 100 events"):
        walk_forward_predict(head, ev.y[:100], ev.t0[:100], ev.t1[:100], folds, n_jobs=1)
