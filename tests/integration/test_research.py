"""Research pipeline end to end on a small synthetic market: store -> dataset -> walk-forward
-> OOS metrics -> registry, with the purge checked on the real pipeline output."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.metrics import precision_score, recall_score, roc_auc_score

from atra.adapters.artifacts import load_model
from atra.adapters.store import CandleStore
from atra.config import AtraConfig
from atra.core.decision import EVENT_FEATURES, decide_events
from atra.core.exits.api import ExitSpec
from atra.core.features.registry import compute_features
from atra.core.frames import ms_to_iso
from atra.core.meta import MetaParams
from atra.core.signals.spec import Rule, SignalSpec
from atra.core.synthetic.market import EXCHANGE, SyntheticConfig
from atra.core.types import Market, Timeframe
from atra.core.validation import DAY_MS
from atra.data.demo import stage_data
from atra.data.ingest import import_files
from atra.errors import ConfigError, DataError, ModelError
from atra.research.pipeline import (
    ResearchDataset,
    WalkForwardConfig,
    WalkForwardResult,
    build_dataset,
    load_model_for,
    load_universe,
    metrics_records,
    parse_time_ms,
    run_walkforward,
    settings_from_config,
    shorts_allowed,
    spec_to_dict,
    symbol_features,
    train_model,
)

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
SPEC = SignalSpec(ema_fast=10, ema_slow=30, sl_atr=1.0, tp1_atr=1.5, tp2_atr=3.0, horizon_bars=24)
EXITS = ExitSpec(fee_entry=0.0005, fee_tp=0.0002, fee_stop=0.0005)
PARAMS = MetaParams(n_estimators=40, num_leaves=7, min_child_samples=10, inner_splits=1)
START = parse_time_ms("2022-02-01")
WF = WalkForwardConfig(retrain_days=30, embargo_hours=12.0, min_train_days=60, min_train_events=60)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> CandleStore:
    st = CandleStore(tmp_path_factory.mktemp("research") / "store")
    stage_data(st, config=SyntheticConfig(symbols=SYMBOLS, bars=6000, seed=5))
    return st


@pytest.fixture(scope="module")
def dataset(store: CandleStore) -> ResearchDataset:
    uni = load_universe(store, EXCHANGE, SYMBOLS, Market.SPOT, Timeframe.H1, START, None)
    return build_dataset(uni, SPEC, EXITS)


@pytest.fixture(scope="module")
def result(dataset: ResearchDataset) -> WalkForwardResult:
    return run_walkforward(dataset, WF, PARAMS, n_jobs=2)


def test_universe_has_context(dataset: ResearchDataset) -> None:
    uni = dataset.universe
    assert list(uni.symbols) == list(SYMBOLS)
    assert uni.btc is not None
    for data in uni.symbols.values():
        assert data.funding is not None
        assert data.counterpart is not None
        # warm-up: up to HISTORY_BARS bars before the range start (here: from the data start)
        first = int(data.candles["open_time"].iloc[0])
        assert first == max(START - 1500 * Timeframe.H1.ms, parse_time_ms("2022-01-01"))
    assert dataset.report.absent_inputs == {}
    assert {"funding_rate", "basis", "btc_ret_24"} <= set(dataset.bar_features)


def test_dataset_counts_and_alignment(dataset: ResearchDataset) -> None:
    ev, rep = dataset.events, dataset.report
    assert rep.events == len(ev) == len(dataset.X) > 150
    assert rep.complete + rep.incomplete == rep.events
    assert rep.complete == int(ev["complete"].sum())
    assert sum(s["events"] for s in rep.per_symbol.values()) == rep.events
    assert sum(s["before_start"] for s in rep.per_symbol.values()) == rep.before_start > 0
    assert (ev["time_ms"] >= START).all()
    assert ev["time_ms"].is_monotonic_increasing
    assert list(dataset.X.columns) == list(dataset.feature_names)
    assert dataset.feature_names[-len(EVENT_FEATURES) :] == EVENT_FEATURES
    # features are those at the signal bar t, computed from that symbol's candles
    sym = SYMBOLS[1]
    rows = ev.index[ev["symbol"] == sym]
    feats = compute_features(
        dataset.universe.symbols[sym].candles,
        dataset.universe.context(sym),
        list(dataset.bar_features),
    )
    t = ev.loc[rows, "t"].to_numpy()
    np.testing.assert_array_equal(
        dataset.X.loc[rows, list(dataset.bar_features)].to_numpy(),
        feats[list(dataset.bar_features)].to_numpy()[t],
    )
    # meta-label = positive net return of the exit kernel's trade
    done = ev[ev["complete"]]
    np.testing.assert_array_equal(
        done["meta_label"].to_numpy(dtype=int), (done["ret_net"] > 0).astype(int)
    )
    assert (done["t1_ms"].astype("int64") > done["t0_ms"]).all()
    assert (done["t0_ms"] == done["time_ms"]).all()


def test_incomplete_labels_are_counted_and_excluded(store: CandleStore) -> None:
    uni = load_universe(store, EXCHANGE, SYMBOLS, Market.SPOT, Timeframe.H1, START, None)
    full = build_dataset(uni, SPEC, EXITS)
    # end the data 3 bars after a late signal: its trade (24-bar horizon) cannot resolve
    late = int(full.events["time_ms"].iloc[-40])
    end = late + 3 * Timeframe.H1.ms
    cut = load_universe(store, EXCHANGE, SYMBOLS, Market.SPOT, Timeframe.H1, START, end)
    ds = build_dataset(cut, SPEC, EXITS)
    rep = ds.report
    assert rep.incomplete >= 1
    inc = ds.events[~ds.events["complete"]]
    assert len(inc) == rep.incomplete
    assert (inc["reason"] == "INCOMPLETE").all()
    assert inc["meta_label"].isna().all()
    assert sum(s["incomplete"] for s in rep.per_symbol.values()) == rep.incomplete
    ev, X = ds.training()
    assert len(ev) == len(X) == rep.complete
    assert ev["complete"].all()
    wf = run_walkforward(ds, WF, PARAMS, n_jobs=1)
    assert wf.excluded_incomplete == rep.incomplete
    assert wf.predictions["complete"].all()
    assert len(wf.predictions) + wf.untested == rep.complete


def test_walkforward_oos_metrics(dataset: ResearchDataset, result: WalkForwardResult) -> None:
    preds = result.predictions
    assert len(result.folds) >= 4
    assert len(preds) > 100
    assert len(preds) + result.untested + result.excluded_incomplete == len(dataset.events)
    assert preds.index.is_unique
    assert preds["p_take"].between(0, 1).all()
    np.testing.assert_array_equal(preds["take"], preds["p_take"] >= preds["threshold"])
    # every OOS event sits in its fold's test window; the folds come in time order
    by_id = {f.fold_id: f for f in result.folds}
    for fold_id, part in preds.groupby("fold"):
        f = by_id[int(fold_id)]
        assert (part["t0_ms"] >= f.test_start_ms).all()
        assert (part["t0_ms"] < f.test_end_ms).all()
    # the per-year table recomputed independently with scikit-learn
    y = preds["meta_label"].to_numpy(dtype=int)
    years = pd.to_datetime(preds["t0_ms"], unit="ms", utc=True).dt.year.to_numpy()
    m = result.metrics
    for year in np.unique(years):
        sel = years == year
        row = m.loc[str(year)]
        assert row["n_events"] == sel.sum()
        assert row["base_rate"] == pytest.approx(y[sel].mean())
        assert row["auc"] == pytest.approx(roc_auc_score(y[sel], preds["p_take"].to_numpy()[sel]))
        take = preds["take"].to_numpy()[sel]
        assert row["precision"] == pytest.approx(precision_score(y[sel], take, zero_division=0))
        assert row["recall"] == pytest.approx(recall_score(y[sel], take))
    assert m.loc["all", "n_events"] == len(preds)
    assert m.loc["all", "mean_net_return"] == pytest.approx(preds["ret_net"].mean())
    records = metrics_records(m)
    assert records["all"]["n_events"] == len(preds)
    assert result.elapsed_s > 0


def assert_purged(
    dataset: ResearchDataset, result: WalkForwardResult, cfg: WalkForwardConfig
) -> int:
    """Every fold of the pipeline's output: no training label reaches into the test window."""
    done = dataset.events[dataset.events["complete"]].reset_index(drop=True)
    t0 = done["t0_ms"].to_numpy(dtype=np.int64)
    t1 = done["t1_ms"].to_numpy(dtype=np.int64)
    embargo = round(cfg.embargo_hours * 3_600_000)
    purged_any = 0
    for f in result.folds:
        tr, te = f.train_idx, f.test_idx
        assert tr.size >= cfg.min_train_events
        # no training label interval [t0, t1] reaches into the test window [start, end)
        overlaps = (t1[tr] >= f.test_start_ms) & (t0[tr] < f.test_end_ms)
        assert not overlaps.any()
        # and every training label ends before test start minus the embargo
        assert (t1[tr] + embargo < f.test_start_ms).all()
        assert (t0[te] >= f.test_start_ms).all()
        assert (t0[te] < f.test_end_ms).all()
        assert not np.intersect1d(tr, te).size
        # candidates decided before the window whose labels run into it were actually there
        before = np.flatnonzero(t0 < f.test_start_ms)
        would_leak = before[t1[before] >= f.test_start_ms - embargo]
        assert not np.intersect1d(would_leak, tr).size
        purged_any += f.n_purged + f.n_embargoed
        assert f.test_end_ms - f.test_start_ms == cfg.retrain_days * DAY_MS
        # the OOS rows of this fold are exactly its test rows
        fold_rows = result.predictions[result.predictions["fold"] == f.fold_id]
        np.testing.assert_array_equal(np.sort(fold_rows["t0_ms"].to_numpy()), np.sort(t0[te]))
    return purged_any


def test_purge_no_training_label_overlaps_its_test_window(
    dataset: ResearchDataset, result: WalkForwardResult
) -> None:
    # the 24-bar labels do straddle window starts on this data: the purge had work to do
    assert assert_purged(dataset, result, WF) > 0


@pytest.mark.shared_data
def test_purge_on_real_data(shared_data_dir: Path, tmp_path: Path) -> None:
    store = CandleStore(tmp_path / "store")
    files = [shared_data_dir / f"{s}_{k}.parquet" for s in ("BTCUSDT", "XRPUSDT")
             for k in ("spot_1h", "perp_1h", "perp_funding")]  # fmt: skip
    import_files(store, files, exchange="binance")
    uni = load_universe(
        store, "binance", ["BTCUSDT", "XRPUSDT"], Market.SPOT, Timeframe.H1,
        parse_time_ms("2021-01-01"), parse_time_ms("2022-07-01"),
    )  # fmt: skip
    margin = {"strategy": {"spot_shorts": True}, "costs": {"spot_borrow_bps_per_hour": 0.1}}
    settings = settings_from_config(AtraConfig.model_validate(margin), Market.SPOT)
    ds = build_dataset(uni, settings.signal, settings.exit)  # both sides: events enough to purge
    assert ds.report.absent_inputs == {}
    cfg = WalkForwardConfig(retrain_days=30, embargo_hours=24.0, min_train_days=150)
    res = run_walkforward(ds, cfg, dataclasses.replace(PARAMS, inner_splits=0))
    assert len(res.folds) >= 8
    assert assert_purged(ds, res, cfg) > 0
    assert set(res.metrics.index) == {"2021", "2022", "all"}


def test_walkforward_is_deterministic_and_rolling(dataset: ResearchDataset) -> None:
    first = parse_time_ms("2022-05-01")
    cfg = dataclasses.replace(WF, train="rolling", train_days=60, decay=0.5, first_test_ms=first)
    a = run_walkforward(dataset, cfg, PARAMS, n_jobs=2)
    b = run_walkforward(dataset, cfg, PARAMS, n_jobs=1, backend="loky")
    pd.testing.assert_frame_equal(a.predictions, b.predictions)
    assert a.folds[0].test_start_ms >= first
    assert (a.predictions["t0_ms"] >= first).all()
    for f in a.folds:
        t0 = dataset.events.loc[dataset.events["complete"], "t0_ms"].to_numpy()[f.train_idx]
        assert (t0 >= f.test_start_ms - 60 * DAY_MS).all()


def test_registry_round_trip_gives_identical_p_take(
    dataset: ResearchDataset, result: WalkForwardResult, tmp_path: Path
) -> None:
    trained = train_model(
        dataset, tmp_path / "models", PARAMS, decay=0.5, oos_metrics=result.metrics
    )
    reg = trained.registered
    assert trained.n_train == dataset.report.complete
    assert (reg.path / "model.txt").exists()
    assert (reg.path / "meta.json").exists()
    extra = reg.metadata["extra"]
    assert extra["signal_spec"] == spec_to_dict(SPEC)
    assert extra["signal_spec"]["rule"] == "ema_cross"
    assert extra["symbols"] == list(SYMBOLS)
    assert extra["decay"] == 0.5
    assert reg.metadata["oos_metrics"]["all"]["n_events"] == len(result.predictions)
    in_memory = decide_events(dataset.events, dataset.X, trained.handle)
    loaded = load_model_for(reg.path, dataset)
    assert loaded.model_id == reg.model_id
    from_disk = decide_events(dataset.events, dataset.X, loaded)
    np.testing.assert_array_equal(in_memory["p_take"], from_disk["p_take"])
    np.testing.assert_array_equal(in_memory["take"], from_disk["take"])
    assert list(in_memory["reasons"]) == list(from_disk["reasons"])
    again = load_model(reg.path, dataset.feature_names).model.predict_proba(dataset.X)
    np.testing.assert_array_equal(again, in_memory["p_take"].to_numpy())
    # the same training data and params give the same content id
    assert train_model(dataset, tmp_path / "models", PARAMS, decay=0.5,
                       oos_metrics=result.metrics).registered.model_id == reg.model_id  # fmt: skip


def test_model_for_other_specs_is_refused(
    store: CandleStore, dataset: ResearchDataset, tmp_path: Path
) -> None:
    reg = train_model(dataset, tmp_path, PARAMS).registered
    other = build_dataset(dataset.universe, dataclasses.replace(SPEC, sl_atr=2.0), EXITS)
    with pytest.raises(ModelError, match="signal_spec"):
        load_model_for(reg.path, other)
    fewer = build_dataset(dataset.universe, SPEC, EXITS, ["ret_1", "rv_24"])
    with pytest.raises(ModelError, match="expects"):
        load_model_for(reg.path, fewer)


def test_absent_side_data_gives_nan_features(store: CandleStore, tmp_path: Path) -> None:
    # a symbol stored without perp candles or funding, beside one that has them
    spot = store.read_candles(
        next(i.key for i in store.datasets() if i.symbol == "SOLUSDT" and i.market is Market.SPOT)
    )
    lone = CandleStore(tmp_path / "lone")
    for i in store.datasets():
        if i.symbol == "BTCUSDT":
            if i.key is None:
                lone.write_funding("x", "BTCUSDT", store.read_funding(EXCHANGE, "BTCUSDT"))
            else:
                lone.write_candles(
                    dataclasses.replace(i.key, exchange="x"), store.read_candles(i.key)
                )
    from atra.adapters.store import DatasetKey

    lone.write_candles(DatasetKey("x", Market.SPOT, "SOLUSDT", Timeframe.H1), spot)
    uni = load_universe(lone, "x", ["SOLUSDT", "BTCUSDT"], Market.SPOT, Timeframe.H1, START, None)
    assert uni.symbols["SOLUSDT"].funding is None
    ds = build_dataset(uni, SPEC, EXITS)
    assert ds.report.absent_inputs == {"SOLUSDT": ["counterpart", "funding"]}
    sol = ds.X[ds.events["symbol"] == "SOLUSDT"]
    assert sol["funding_rate"].isna().all()
    assert sol["basis"].isna().all()
    assert sol["btc_ret_24"].notna().any()
    btc = ds.X[ds.events["symbol"] == "BTCUSDT"]
    assert btc["funding_rate"].notna().any()
    feats, absent = symbol_features(uni, "SOLUSDT", ["ret_1", "funding_rate"])
    assert absent == ["funding"]
    assert list(feats.columns) == ["open_time", "ret_1", "funding_rate"]
    with pytest.raises(ConfigError, match="unknown feature"):
        symbol_features(uni, "SOLUSDT", ["nope"])


def test_load_universe_errors(store: CandleStore) -> None:
    args = (EXCHANGE, SYMBOLS, Market.SPOT, Timeframe.H1)
    with pytest.raises(DataError, match="no candles synthetic/spot/DOGEUSDT/1h"):
        load_universe(store, EXCHANGE, ["DOGEUSDT"], Market.SPOT, Timeframe.H1)
    with pytest.raises(DataError, match="no bars in the range"):
        load_universe(
            store, *args, parse_time_ms("2030-01-01"), parse_time_ms("2030-02-01"), warmup_bars=0
        )
    with pytest.raises(ConfigError, match="no symbols"):
        load_universe(store, EXCHANGE, [], Market.SPOT, Timeframe.H1)
    with pytest.raises(ConfigError, match="duplicate"):
        load_universe(store, EXCHANGE, ["BTCUSDT", "BTCUSDT"], Market.SPOT, Timeframe.H1)
    with pytest.raises(ConfigError, match="warmup_bars"):
        load_universe(store, *args, warmup_bars=-1)
    with pytest.raises(ConfigError, match="empty range"):
        load_universe(store, *args, START, START)
    # perp as the main market: spot is its counterpart; no range reads everything
    uni = load_universe(store, EXCHANGE, ["ETHUSDT"], Market.PERP, Timeframe.H1)
    assert uni.context("ETHUSDT").counterpart_market is Market.SPOT
    assert uni.btc is not None
    assert len(uni.symbols["ETHUSDT"].candles) == 6000
    calls: list[tuple[int, int, str]] = []
    ds = build_dataset(uni, SPEC, EXITS, ["ret_1", "basis"], progress=lambda *a: calls.append(a))
    assert calls == [(1, 1, "ETHUSDT")]
    assert ds.report.before_start == 0
    assert int(ds.events["t"].iloc[0]) < 1500  # no range: signals from the first warm bars
    # a range too short for any signal is an error, not an empty table
    tiny = load_universe(store, *args, START, START + 3 * Timeframe.H1.ms, warmup_bars=0)
    with pytest.raises(DataError, match="no primary signal"):
        build_dataset(tiny, SPEC, EXITS)


def test_build_dataset_and_walkforward_errors(dataset: ResearchDataset) -> None:
    uni = dataset.universe
    with pytest.raises(ConfigError, match="unique"):
        build_dataset(uni, SPEC, EXITS, ["ret_1", "ret_1"])
    with pytest.raises(ConfigError, match="reserved"):
        build_dataset(uni, SPEC, EXITS, ["ret_1", "side"])
    with pytest.raises(DataError, match="no fold has"):
        run_walkforward(dataset, dataclasses.replace(WF, min_train_events=10**6), PARAMS)
    none_done = dataclasses.replace(dataset, events=dataset.events.assign(complete=False))
    with pytest.raises(DataError, match="no complete"):
        run_walkforward(none_done, WF, PARAMS)
    with pytest.raises(DataError, match="no complete"):
        train_model(none_done, Path("unused"), PARAMS)
    with pytest.raises(ConfigError, match="decay"):
        train_model(dataset, Path("unused"), PARAMS, decay=2.0)
    one_class = dataclasses.replace(dataset, events=dataset.events.assign(meta_label=1))
    with pytest.raises(ModelError, match="both classes"):
        train_model(one_class, Path("unused"), PARAMS)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"retrain_days": 0}, "retrain_days"),
        ({"embargo_hours": -1.0}, "embargo_hours"),
        ({"train": "rolling"}, "train_days"),
        ({"train": "sideways"}, "expanding|rolling"),
        ({"decay": -1.0}, "decay"),
        ({"decay": 1.5}, "decay"),
    ],
)
def test_walkforward_config_validation(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        WalkForwardConfig(**kwargs)  # type: ignore[arg-type]


def test_settings_from_config() -> None:
    s = settings_from_config(AtraConfig(), Market.PERP)
    assert s.signal.rule is Rule.EMA_CROSS
    assert (s.signal.ema_fast, s.signal.ema_slow) == (20, 50)
    assert (s.signal.sl_atr, s.signal.tp1_atr, s.signal.tp2_atr) == (1.0, 1.0, 2.0)
    assert s.exit.fee_entry == pytest.approx(5e-4)
    assert s.exit.fee_tp == pytest.approx(5e-4)
    assert s.exit.fee_stop == pytest.approx(5e-4)
    assert s.exit.slippage_bps == 2.0
    assert s.meta.inner_splits == 0
    assert s.meta.default_threshold == 0.55
    assert (s.meta.n_estimators, s.meta.num_leaves, s.meta.seed) == (300, 31, 42)
    assert (s.walkforward.retrain_days, s.walkforward.embargo_hours) == (30, 24.0)
    cfg = AtraConfig.model_validate(
        {
            "strategy": {"rule": "donchian", "params": {"n": 30}, "tp1_atr": 2.0, "tp2_atr": 3.0},
            "meta": {"threshold_mode": "expected_value", "lgbm": {"bagging_freq": 0}},
        }
    )
    s2 = settings_from_config(cfg, Market.PERP)
    assert s2.signal.rule is Rule.DONCHIAN
    assert s2.signal.donchian_n == 30
    assert s2.signal.tp2_atr == 3.0
    assert s2.signal.ema_fast == 20
    assert s2.meta.threshold_objective == "net_return"
    assert s2.meta.subsample == 1.0
    s3 = settings_from_config(
        AtraConfig.model_validate(
            {
                "strategy": {"rule": "tsmom", "params": {"lookback": 72}},
                "meta": {"threshold_mode": "f1"},
            }
        ),
        "perp",
    )
    assert s3.signal.tsmom_lookback == 72
    assert s3.meta.threshold_objective == "fbeta"
    assert s3.meta.inner_splits == 2
    with pytest.raises(ConfigError, match=r"strategy\.rule"):
        settings_from_config(AtraConfig.model_validate({"strategy": {"rule": "macd"}}), "spot")
    equal_tps = {"strategy": {"tp1_atr": 2.0, "tp2_atr": 2.0}}
    with pytest.raises(ConfigError, match=r"0 < tp1_atr < tp2_atr"):
        settings_from_config(AtraConfig.model_validate(equal_tps), Market.SPOT)
    with pytest.raises(ConfigError, match="unknown market 'options'"):
        settings_from_config(AtraConfig(), "options")


def test_spot_is_long_only_unless_spot_shorts() -> None:
    plain = AtraConfig()
    assert settings_from_config(plain, Market.PERP).signal.allow_short is True
    spot = settings_from_config(plain, Market.SPOT).signal
    assert (spot.allow_long, spot.allow_short) == (True, False)
    assert settings_from_config(plain, "spot").signal == spot
    margin = AtraConfig.model_validate(
        {"strategy": {"spot_shorts": True}, "costs": {"spot_borrow_bps_per_hour": 0.1}}
    )
    assert settings_from_config(margin, Market.SPOT).signal.allow_short is True
    assert settings_from_config(margin, Market.PERP).signal.allow_short is True
    assert shorts_allowed(margin, Market.SPOT)
    assert not shorts_allowed(plain, Market.SPOT)
    # the other specs do not depend on the market
    perp = settings_from_config(plain, Market.PERP)
    assert settings_from_config(plain, Market.SPOT).exit == perp.exit
    assert settings_from_config(plain, Market.SPOT).meta == perp.meta


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-01", 1_704_067_200_000),
        ("2024-01-01T01:00", 1_704_070_800_000),
        ("2024-01-01 01:00:00Z", 1_704_070_800_000),
        ("2024-01-01T02:00+01:00", 1_704_070_800_000),
        ("1704067200000", 1_704_067_200_000),
    ],
)
def test_parse_time_ms(text: str, expected: int) -> None:
    assert parse_time_ms(text) == expected


def test_parse_time_ms_rejects_garbage() -> None:
    with pytest.raises(ConfigError, match="expected an ISO date"):
        parse_time_ms("yesterday")


@given(st.integers(min_value=0, max_value=4_102_444_800_000))
def test_parse_time_ms_round_trips_iso(ts_ms: int) -> None:
    assert parse_time_ms(ms_to_iso(ts_ms)) == ts_ms
    assert parse_time_ms(str(ts_ms)) == ts_ms
