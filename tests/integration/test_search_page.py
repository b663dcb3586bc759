"""The search page from a small real study (spot BTC + ETH, a 2x2 grid over the timeframe and the
threshold mode, a final span): the trials table, the best-so-far curve, the parameter
importances, the DSR with its trial count and Sharpe variance, the PBO with its splits and the
final span beside the search score. A study with one scored trial has no importances."""

from __future__ import annotations

import html
import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.importance import FanovaImportanceEvaluator, get_param_importances
from optuna.trial import TrialState, create_trial
from test_report_render import png_colours

import atra.cli.search  # noqa: F401  (registers `atra search`)
from atra.adapters.store import CandleStore
from atra.cli import main
from atra.config import AtraConfig, load_config
from atra.core.stats.overfitting import deflated_sharpe
from atra.core.types import Market, Timeframe
from atra.data.ingest import import_files
from atra.research.pipeline import parse_time_ms
from atra.research.report.search_page import BEST_COLOR, best_so_far, render_search_html
from atra.research.search_html import param_importances, search_page
from atra.research.search_run import SearchRequest, SearchRun, run_search
from atra.research.search_space import load_search_space
from atra.research.search_trials import WalkForwardOverrides

SYMBOLS = ("BTCUSDT", "ETHUSDT")
CONFIG = """
[strategy]
params = { fast = 5.0, slow = 20.0 }
horizon_bars = 12

[meta.lgbm]
n_estimators = 20
num_leaves = 7
min_child_samples = 10
"""
SPACE = """
[search.params.timeframe]
type = "categorical"
choices = ["1h", "4h"]

[search.params."meta.threshold_mode"]
type = "categorical"
choices = ["fixed", "expected_value"]
"""
START, FINAL, END = "2021-01-01", "2023-01-01", "2023-07-01"
WF = WalkForwardOverrides(retrain_days=60, min_train_days=120, min_train_events=40)
SEED = 7


def _request(root: Path, name: str, n: int) -> SearchRequest:
    return SearchRequest(
        exchange="binance",
        symbols=SYMBOLS,
        market=Market.SPOT,
        timeframe=Timeframe.H1,
        start_ms=parse_time_ms(START),
        end_ms=parse_time_ms(END),
        storage_path=root / "study.sqlite3",
        study_name=name,
        n_trials=n,
        sampler="grid",
        seed=SEED,
        final_from_ms=parse_time_ms(FINAL),
        pbo_splits=4,
        walkforward=WF,
    )


@pytest.fixture(scope="module")
def setup(
    shared_data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[CandleStore, AtraConfig, Path]:
    root = tmp_path_factory.mktemp("search_page")
    store = CandleStore(root / "store")
    import_files(store, [shared_data_dir / f"{s}_spot_1h.parquet" for s in SYMBOLS])
    (root / "atra.toml").write_text(CONFIG)
    (root / "space.toml").write_text(SPACE)
    return store, load_config(root / "atra.toml"), root


@pytest.fixture(scope="module")
def study_run(setup: tuple[CandleStore, AtraConfig, Path]) -> tuple[optuna.Study, SearchRun]:
    store, cfg, root = setup
    space = load_search_space(root / "space.toml", cfg)
    run = run_search(store, cfg, space, _request(root, "page", 4))
    study = optuna.load_study(study_name="page", storage=f"sqlite:///{root / 'study.sqlite3'}")
    return study, run


def _text(page_html: str) -> str:
    """The visible text (scripts and styles dropped), whitespace collapsed."""
    visible = re.sub(r"<(script|style)\b.*?</\1>", " ", page_html, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", visible)).split())


def _section(page_html: str, key: str) -> str:
    m = re.search(rf'<section id="{key}">(.*?)</section>', page_html, re.S)
    assert m is not None, key
    return m.group(1)


def test_page_shows_every_trial_with_its_params_score_and_trades(
    study_run: tuple[optuna.Study, SearchRun],
) -> None:
    study, run = study_run
    page = search_page(study, run.report, seed=SEED)
    doc = render_search_html(page)
    trials = study.get_trials()
    assert len(trials) == 4
    assert {t.params["timeframe"] for t in trials} == {"1h", "4h"}
    table = _section(doc, "trials")
    rows = re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>", 1)[1], re.S)
    assert len(rows) == len(trials)
    for t, row in zip(trials, rows, strict=True):
        cells = [html.unescape(c) for c in re.findall(r"<td>(.*?)</td>", row, re.S)]
        assert cells[0] == str(t.number)
        assert cells[1].startswith(t.state.name)
        assert cells[2] == t.user_attrs.get("timeframe", "")
        for k, v in t.params.items():
            assert f"{k}={json.dumps(v)}" in cells[3]
        if t.state is TrialState.COMPLETE:
            assert t.value is not None
            assert cells[4] == f"{t.value:.3f}"
            assert cells[5] == str(t.user_attrs["n_trades"])
        else:
            assert cells[6] == t.user_attrs.get("pruned_reason", cells[6])
    # a 4h trial is annualised with sqrt(2190), a 1h one with sqrt(8760): the page says which
    best = run.report
    tf = best.best_timeframe
    assert f"sqrt({tf.bars_per_year}) ({tf} bars" in _text(doc)
    assert "Out-of-sample only, costs included" in _text(doc)


def test_best_so_far_curve_is_the_running_maximum(
    study_run: tuple[optuna.Study, SearchRun],
) -> None:
    study, run = study_run
    page = search_page(study, run.report, seed=SEED)
    numbers, best = best_so_far(page.trials)
    scored = [t for t in study.get_trials() if t.state is TrialState.COMPLETE]
    assert numbers == [t.number for t in scored]
    assert best == list(np.maximum.accumulate([float(t.value or 0.0) for t in scored]))
    assert best[-1] == run.report.best_sharpe
    doc = render_search_html(page)
    spec = re.search(
        r'data-target="fig-best-so-far">(.*?)</script>', doc, re.S
    )  # the figure's JSON
    assert spec is not None
    traces = json.loads(spec.group(1).replace("<\\/", "</"))["data"]
    curve = next(t for t in traces if t["name"] == "best so far")
    assert curve["y"] == best


def test_importances_sum_to_one_and_are_optunas_fanova(
    study_run: tuple[optuna.Study, SearchRun],
) -> None:
    study, run = study_run
    importances, note = param_importances(study, seed=SEED)
    assert importances is not None, note
    assert set(importances) == {"timeframe", "meta.threshold_mode"}
    assert math.isclose(sum(importances.values()), 1.0, rel_tol=1e-12)
    assert all(v >= 0.0 for v in importances.values())
    theirs = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=SEED))
    for k, v in theirs.items():
        assert math.isclose(importances[k], v, rel_tol=1e-9, abs_tol=1e-12)
    doc = render_search_html(search_page(study, run.report, seed=SEED))
    section = _text(_section(doc, "importances"))
    for k, v in importances.items():
        assert f"{k} {v:.3f}" in section
    assert f"seed {SEED}" in section


def test_dsr_pbo_and_final_span_are_on_the_page(
    study_run: tuple[optuna.Study, SearchRun],
) -> None:
    study, run = study_run
    rep = run.report
    values = np.array([float(t.value or 0.0) for t in study.get_trials()
                       if t.state is TrialState.COMPLETE])  # fmt: skip
    text = _text(render_search_html(search_page(study, rep, seed=SEED)))
    n = len(values)
    assert f"trials scored: N of the DSR {n}" in text
    assert f"variance of the trials' OOS Sharpes (ddof 1) {np.var(values, ddof=1):.4f}" in text
    assert f"deflated Sharpe ratio (N = {n}) {rep.deflated.dsr:.3f}" in text
    # de-annualised with the bar size the best trial's returns were measured on
    ua = study.trials[rep.best_number].user_attrs
    tf = Timeframe.parse(ua["timeframe"])
    assert rep.best_timeframe is tf
    want = deflated_sharpe(rep.best_sharpe, n_obs=ua["n_returns"], skew=ua["skew"],
                           kurtosis=ua["kurtosis"], trial_sharpes=values,
                           periods_per_year=tf.bars_per_year)  # fmt: skip
    assert (rep.deflated.dsr, rep.deflated.expected_max_sharpe) == (
        want.dsr,
        want.expected_max_sharpe,
    )
    assert rep.pbo is not None
    assert f"probability of backtest overfitting (CSCV) {rep.pbo.pbo:.3f}" in text
    assert f"CSCV splits (blocks of days) {rep.pbo.n_splits}" in text
    assert rep.final is not None
    search_score, final = f"{rep.best_sharpe:.3f}", f"{rep.final.outcome.sharpe:.3f}"
    assert f"OOS Sharpe {search_score} {final}" in text  # side by side
    got = f"{ua['total_return']:.2%} {rep.final.outcome.total_return:.2%}"
    assert f"total return {got}" in text
    assert "final span 2023-01-01 .." in text


def test_one_scored_trial_has_no_importances(
    setup: tuple[CandleStore, AtraConfig, Path],
) -> None:
    store, cfg, root = setup
    space = load_search_space(root / "space.toml", cfg)
    run = run_search(store, cfg, space, _request(root, "single", 1))
    study = optuna.load_study(study_name="single", storage=f"sqlite:///{root / 'study.sqlite3'}")
    page = search_page(study, run.report, seed=SEED)
    assert page.importances is None
    doc = render_search_html(page)
    assert "Importances unavailable: 1 scored trial(s)" in _text(_section(doc, "importances"))
    assert "fig-importances" not in doc


def test_importances_are_not_invented_for_flat_scores_or_single_values() -> None:
    study = optuna.create_study(direction="maximize")
    dists = {
        "a": CategoricalDistribution(["x", "y"]),
        "b": FloatDistribution(1.0, 1.0),  # a single possible value
    }
    for i in range(3):
        study.add_trial(create_trial(params={"a": "xy"[i % 2], "b": 1.0}, distributions=dists,
                                     value=0.5))  # fmt: skip
    importances, note = param_importances(study, seed=1)
    assert importances is None  # optuna would spread 1.0 evenly
    assert "do not vary" in note
    assert "Not assessed (a single possible value): b" in note
    study.add_trial(create_trial(params={"a": "y", "b": 1.0}, distributions=dists, value=2.0))
    importances, note = param_importances(study, seed=1)
    assert importances == {"a": 1.0}


def test_cli_writes_the_search_page(
    setup: tuple[CandleStore, AtraConfig, Path],
    study_run: tuple[optuna.Study, SearchRun],
    capsys: pytest.CaptureFixture[str],
) -> None:
    store, _, root = setup
    out = root / "page" / "search.html"
    args = ["search", "--data-dir", str(store.root), "--symbols", "BTCUSDT", "--symbols",
            "ETHUSDT", "--start", START, "--end", END, "--final-from", FINAL,
            "--config", str(root / "atra.toml"), "--space", str(root / "space.toml"),
            "--n-trials", "4", "--sampler", "grid", "--storage", str(root / "study.sqlite3"),
            "--study-name", "page", "--min-train-days", "120", "--min-train-events", "40",
            "--retrain-days", "60", "--pbo-splits", "4", "--html", str(out)]  # fmt: skip
    assert main(args) == 0  # the study holds its 4 trials already: the report only
    assert f"search page: {out}" in " ".join(capsys.readouterr().out.split())
    doc = out.read_text()
    for key in ("searched", "overfitting", "best-so-far", "importances", "trials"):
        assert f'<section id="{key}">' in doc


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no chromium / chromium-browser on PATH (apt-get install chromium)")


@pytest.mark.slow
def test_search_page_renders_in_headless_chromium(
    study_run: tuple[optuna.Study, SearchRun], tmp_path: Path
) -> None:
    browser = _chromium()
    study, run = study_run
    target = tmp_path / "search.html"
    target.write_text(render_search_html(search_page(study, run.report, seed=SEED)))
    shot = tmp_path / "search.png"
    cmd = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
        "--window-size=1300,2400", "--virtual-time-budget=5000", target.as_uri(),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120.0)
    assert shot.is_file(), f"no screenshot (exit {done.returncode}): {done.stderr[-500:]}"
    colours = png_colours(shot)
    h = BEST_COLOR.lstrip("#")
    # the best-so-far line is drawn in its exact colour only when plotly.js ran
    assert (int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)) in colours
