"""`atra ablation` on a real slice (three shared spot symbols, 2023, Fear & Greed configured, a
plug-in module with a price, a volume and a funding feature): the sets are cumulative and
follow the registry's families, a family without data is skipped and said so, the JSON line
is the table, and each set is the walk-forward `atra walkforward` runs on its feature list."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from atra.adapters.store import CandleStore
from atra.cli import main
from atra.cli.series import configured_inputs
from atra.config import load_config
from atra.core.decision import EVENT_FEATURES
from atra.core.features.registry import feature_origin, feature_registry, unregister_features
from atra.core.features.sources import Family
from atra.core.signals.rules import BUILTIN
from atra.core.types import Market, Timeframe
from atra.data.ingest import import_files
from atra.errors import ConfigError, DataError
from atra.research.ablation import restrict_features
from atra.research.pipeline import (
    build_dataset,
    load_universe,
    parse_time_ms,
    run_walkforward,
    settings_from_config,
)
from atra.research.runrecord.directory import read_run

pytestmark = pytest.mark.shared_data

SYMBOLS = ("BTCUSDT", "ETHUSDT", "LTCUSDT")
START, END = "2023-01-01", "2024-01-01"
PLUGIN = "plug_ablation"
PLUGIN_CODE = '''
import numpy as np
import pandas as pd
import atra


@atra.feature("abl_range_pos_24", family="price", warmup=23)
def abl_range_pos_24(ff):
    """Where the close sits in the 24-bar high-low range."""
    hi = pd.Series(ff.high).rolling(24).max().to_numpy()
    lo = pd.Series(ff.low).rolling(24).min().to_numpy()
    return (ff.close - lo) / (hi - lo)


@atra.feature("abl_up_volume_24", family="volume", warmup=24)
def abl_up_volume_24(ff):
    """Share of the last 24 bars' volume traded on up-closes."""
    up = np.concatenate([[False], np.diff(ff.close) > 0])
    vol = pd.Series(ff.volume)
    return (vol * up).rolling(24).sum().to_numpy() / vol.rolling(24).sum().to_numpy()


@atra.feature("abl_funding_sign", family="fundamental", warmup=0, inputs=("candles", "funding"))
def abl_funding_sign(ff):
    """A funding feature: its input is absent on this spot store, so it is never computed."""
    return np.zeros(len(ff))
'''
# the inputs this store provides: spot candles of the three symbols (BTCUSDT among them: the
# BTC context) and the configured Fear & Greed series; no funding, no perpetual twin
PROVIDED = {"candles", "btc", "series:fear_greed"}


@dataclass(frozen=True)
class Run:
    root: Path
    config: Path
    args: list[str]
    out: str
    payload: dict[str, Any]


@pytest.fixture(scope="module")
def run(
    shared_data_dir: Path, shared_series_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Run]:
    root = tmp_path_factory.mktemp("ablation")
    import_files(
        CandleStore(root / "store"), [shared_data_dir / f"{s}_spot_1h.parquet" for s in SYMBOLS]
    )
    (root / f"{PLUGIN}.py").write_text(PLUGIN_CODE)
    config = root / "atra.toml"
    config.write_text(
        f'[plugins]\nmodules = ["{PLUGIN}"]\nentry_points = false\n\n'
        "[meta.lgbm]\nn_estimators = 40\nnum_leaves = 7\nmin_child_samples = 10\n\n"
        '[[features.series]]\nname = "fear_greed"\n'
        f"path = {json.dumps(str(shared_series_dir / 'fear_greed_daily.parquet'))}\n"
        'lag_hours = 1.0\nmax_age_hours = 48.0\nfamily = "alternative"\napplies_to = "market"\n'
    )
    args = ["--config", str(config), "--data-dir", str(root / "store"), "--symbols",
            ",".join(SYMBOLS), "--start", START, "--end", END, "--min-train-days", "120",
            "--min-train-events", "100", "--runs-dir", str(root / "runs")]  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(root))
        for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS"):
            mp.delenv(name, raising=False)
        try:
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                code = main(["ablation", *args])
            out = buf.getvalue()
            assert code == 0, out
            yield Run(root, config, args, out, json.loads(out.strip().splitlines()[-1]))
        finally:
            unregister_features(PLUGIN)
            sys.modules.pop(PLUGIN, None)


def _sets(run: Run) -> list[dict[str, Any]]:
    sets: list[dict[str, Any]] = run.payload["ablation"]["sets"]
    return sets


def _expected_groups() -> list[tuple[Family, str, list[str]]]:
    """(family, origin, available features) per set, from the registry (registry order)."""
    ctx_specs = dict(feature_registry())
    groups: list[tuple[Family, str]] = [(f, BUILTIN) for f in Family]
    for name, spec in ctx_specs.items():
        key = (spec.family, feature_origin(name) or BUILTIN)
        if key not in groups:
            groups.append(key)
    return [
        (fam, origin, [n for n, s in ctx_specs.items() if s.family is fam
                       and feature_origin(n) == origin and set(s.inputs) <= PROVIDED])
        for fam, origin in groups
    ]  # fmt: skip


def test_sets_are_cumulative_by_family_as_the_registry_says(run: Run) -> None:
    sets = _sets(run)
    expected = _expected_groups()
    assert [(s["family"], s["origin"]) for s in sets] == [(f.value, o) for f, o, _ in expected]
    assert [s["name"] for s in sets[:5]] == [
        "price", "+volume", "+fundamental", "+alternative", "+cross_asset"
    ]  # fmt: skip
    assert [s["name"] for s in sets[5:]] == [
        f"+{PLUGIN} (price)", f"+{PLUGIN} (volume)", f"+{PLUGIN} (fundamental)"
    ]  # fmt: skip
    used: list[str] = []
    for s, (_, _, available) in zip(sets, expected, strict=True):
        assert s["added"] == available
        used += available
        assert s["n_features"] == len(used)
        if available:
            assert s["status"] == "ran"
            assert s["skip_reason"] is None
        else:  # fundamental on spot without funding / on-chain series; the plug-in's funding one
            assert s["status"] == "skipped"
            assert s["skip_reason"].startswith("skipped: no features available (the data has no")
            assert "funding" in s["skip_reason"]
            assert s["auc"] is None
            assert s["run_id"] is None
    assert [s["status"] for s in sets].count("skipped") == 2
    # the last set holds every feature the walk-forward takes by default, plug-ins included
    assert set(used) == {n for n, sp in feature_registry().items() if set(sp.inputs) <= PROVIDED}
    assert run.payload["ablation"]["event_attributes"] == list(EVENT_FEATURES)


def test_figures_are_finite_out_of_sample_and_share_the_primary_leg(run: Run) -> None:
    body = run.payload["ablation"]
    assert body["symbols"] == list(SYMBOLS)
    assert body["start_ms"] == parse_time_ms(START)
    assert body["end_ms"] == parse_time_ms(END)
    assert body["oos_start_ms"] >= parse_time_ms("2023-05-01")  # 120 days of training first
    assert "sqrt(8760)" in body["annualization"]
    assert body["out_of_sample_only"] is True
    assert body["costs_included"] is True
    ran = [s for s in _sets(run) if s["status"] == "ran"]
    assert len(ran) == 6
    for s in ran:
        assert 0.0 < s["auc"] < 1.0
        assert 0.0 <= s["added_finite_share"] <= 1.0
        for leg in ("primary", "filtered"):
            assert math.isfinite(s[leg]["sharpe"])
            assert math.isfinite(s[leg]["total_return"])
            assert s[leg]["n_trades"] > 0
        assert s["filtered"]["n_trades"] <= s["primary"]["n_trades"]
        assert 0 < s["taken"] <= s["oos_events"]
    # the folds follow the labels alone: every set is scored on the same OOS primary events
    assert len({json.dumps(s["primary"]) for s in ran}) == 1
    assert len({s["oos_events"] for s in ran}) == 1
    assert len({s["run_id"] for s in ran}) == len(ran)
    for s in ran:  # each set's run record, as `atra walkforward` writes it
        loaded = read_run(run.root / "runs" / s["run_id"])
        assert loaded.record.notes["walkforward_oos_metrics"]["auc"] == s["auc"]
        assert loaded.metrics["legs"]["filtered"]["trades"]["n_trades"] == s["filtered"]["n_trades"]


def test_the_json_line_is_the_table(run: Run) -> None:
    rows = {}
    for line in run.out.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if cells and (cells[0] in ("price",) or cells[0].startswith("+")):
            rows[cells[0]] = cells
    sets = _sets(run)
    assert list(rows) == [s["name"] for s in sets]
    for s in sets:
        row = rows[s["name"]]
        assert row[1] == str(s["n_features"])
        assert row[2] == str(len(s["added"]))
        if s["status"] == "skipped":
            assert row[3] == "skipped"
            assert f"{s['name']}: {s['skip_reason']}" in run.out
            continue
        p, f = s["primary"], s["filtered"]
        assert row[3:] == [
            f"{s['auc']:.4f}", f"{p['sharpe']:.2f}", f"{f['sharpe']:.2f}",
            f"{p['n_trades']:,}", f"{f['n_trades']:,}", f"{p['total_return']:+.1%}",
            f"{f['total_return']:+.1%}", s["run_id"],
        ]  # fmt: skip
    assert "Annualisation: Sharpe annualised x sqrt(8760)" in run.out


def test_a_set_is_the_walkforward_of_its_feature_list(run: Run) -> None:
    """``+volume`` equals the walk-forward on a dataset built for price + volume features only
    (what ``atra walkforward`` runs), and the last set is the default ``atra walkforward`` run:
    the same run id and OOS AUC."""
    sets = _sets(run)
    volume = next(s for s in sets if s["name"] == "+volume")
    names = [*sets[0]["added"], *volume["added"]]
    cfg = load_config(run.config, env={})
    settings = settings_from_config(cfg, "spot")
    wf_cfg = dataclasses.replace(settings.walkforward, min_train_days=120, min_train_events=100)
    meta = dataclasses.replace(settings.meta, seed=7)
    store = CandleStore(run.root / "store")
    uni = load_universe(
        store, "binance", SYMBOLS, Market.SPOT, Timeframe.H1, parse_time_ms(START),
        parse_time_ms(END), series=configured_inputs(cfg, store.root),
    )  # fmt: skip
    alone = build_dataset(uni, settings.signal, settings.exit, feature_names=names)
    assert alone.feature_names == (*names, *EVENT_FEATURES)
    wf = run_walkforward(alone, wf_cfg, meta)
    assert float(wf.metrics.loc["all", "auc"]) == volume["auc"]
    assert wf.metrics.loc["all", "n_events"] == volume["oos_events"]
    # restricting the full dataset gives the same model inputs, column for column
    full = build_dataset(uni, settings.signal, settings.exit)
    assert restrict_features(full, names).X.equals(alone.X)
    with pytest.raises(DataError, match="nope_feature"):
        restrict_features(full, [*names, "nope_feature"])
    with pytest.raises(ConfigError, match="unique"):
        restrict_features(full, [*names, names[0]])

    last = [s for s in sets if s["status"] == "ran"][-1]
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(run.root))
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            assert main(["walkforward", *run.args]) == 0
    found = re.search(r"run ([0-9a-f]{12}):", buf.getvalue())
    assert found is not None
    assert found.group(1) == last["run_id"]
    record = read_run(run.root / "runs" / last["run_id"]).record
    assert record.notes["walkforward_oos_metrics"]["auc"] == last["auc"]
