"""`atra search` end to end on real spot data: a study that resumes, a report whose trial count
is the storage's, a best score equal to the walk-forward evaluation of its parameters, and a
final span no trial read."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import optuna
import pytest

import atra.cli.search  # noqa: F401  (registers `atra search`)
from atra.adapters.store import CandleStore
from atra.cli import main
from atra.config import AtraConfig, load_config
from atra.core.types import Market, Timeframe
from atra.data.ingest import import_files
from atra.errors import ConfigError
from atra.research.evaluation.loop import run_research_loop
from atra.research.evaluation.settings import backtest_config_from
from atra.research.pipeline import load_universe, parse_time_ms, settings_from_config
from atra.research.search_run import SearchRequest, SearchRun, run_search
from atra.research.search_space import apply_params, load_search_space
from atra.research.search_trials import TrialRunner, WalkForwardOverrides

SYMBOLS = ("BTCUSDT", "ETHUSDT")
CONFIG = """
[strategy]
params = { fast = 10.0, slow = 30.0 }
tp1_atr = 1.5
tp2_atr = 3.0

[meta.lgbm]
n_estimators = 30
num_leaves = 7
min_child_samples = 10
"""
SPACE = """
[search.params."strategy.params.fast"]
type = "int"
low = 10
high = 20
step = 10

[search.params."strategy.sl_atr"]
type = "float"
low = 1.0
high = 1.5
step = 0.5

[search.params."meta.threshold_mode"]
type = "categorical"
choices = ["fixed", "expected_value"]
"""
START, FINAL, END = "2023-01-01", "2024-07-01", "2025-01-01"
WF = WalkForwardOverrides(min_train_days=120, min_train_events=60)


@pytest.fixture(scope="module")
def setup(
    shared_data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[CandleStore, AtraConfig, Path, Path]:
    root = tmp_path_factory.mktemp("search")
    store = CandleStore(root / "store")
    import_files(store, [shared_data_dir / f"{s}_spot_1h.parquet" for s in SYMBOLS])
    (root / "atra.toml").write_text(CONFIG)
    (root / "space.toml").write_text(SPACE)
    return store, load_config(root / "atra.toml"), root / "space.toml", root


def _request(root: Path, n: int, sampler: str = "random") -> SearchRequest:
    return SearchRequest(
        exchange="binance",
        symbols=SYMBOLS,
        market=Market.SPOT,
        timeframe=Timeframe.H1,
        start_ms=parse_time_ms(START),
        end_ms=parse_time_ms(END),
        storage_path=root / "study.sqlite3",
        n_trials=n,
        sampler=sampler,
        final_from_ms=parse_time_ms(FINAL),
        pbo_splits=4,
        walkforward=WF,
    )


@pytest.fixture(scope="module")
def runs(
    setup: tuple[CandleStore, AtraConfig, Path, Path],
) -> tuple[SearchRun, SearchRun, list[optuna.trial.FrozenTrial]]:
    store, cfg, space_path, root = setup
    space = load_search_space(space_path, cfg)
    first = run_search(store, cfg, space, _request(root, 3))
    early = optuna.load_study(
        study_name="atra-search", storage=f"sqlite:///{root / 'study.sqlite3'}"
    ).get_trials()
    second = run_search(store, cfg, space, _request(root, 6))
    return first, second, early


def test_study_resumes_to_the_total_without_repeating_a_trial(
    runs: tuple[SearchRun, SearchRun, list[optuna.trial.FrozenTrial]],
    setup: tuple[CandleStore, AtraConfig, Path, Path],
) -> None:
    first, second, early = runs
    assert first.ran == 3
    assert second.ran == 3
    trials = optuna.load_study(
        study_name="atra-search", storage=f"sqlite:///{setup[3] / 'study.sqlite3'}"
    ).get_trials()
    assert [t.number for t in trials] == list(range(6))
    assert [t.params for t in trials[:3]] == [t.params for t in early]  # kept, not redone
    scored = [tuple(sorted(t.params.items())) for t in trials if t.value is not None]
    assert len(scored) == len(set(scored))  # a repeated draw is pruned, never scored twice
    # the report's counts are the storage's
    rep = second.report
    assert rep.n_trials == len(trials)
    assert rep.n_complete == sum(t.state.name == "COMPLETE" for t in trials)
    assert rep.deflated.n_trials == rep.n_complete
    # every scored trial of the second run went through the runner's dataset cache
    scored_now = sum(t.value is not None for t in trials[3:])
    assert second.dataset_hits + second.dataset_builds == scored_now


def test_trials_sharing_primary_params_share_the_dataset(
    setup: tuple[CandleStore, AtraConfig, Path, Path],
) -> None:
    store, cfg, _, _ = setup
    uni = load_universe(store, "binance", SYMBOLS, Market.SPOT, Timeframe.H1,
                        parse_time_ms(START), parse_time_ms(FINAL))  # fmt: skip
    runner = TrialRunner(uni, Market.SPOT, WF, seed=7)
    a = runner.run(apply_params(cfg, {"meta.threshold_mode": "fixed"}))
    b = runner.run(apply_params(cfg, {"meta.threshold_mode": "expected_value"}))
    c = runner.run(apply_params(cfg, {"strategy.sl_atr": 1.5}))
    assert (a.dataset_cached, b.dataset_cached, c.dataset_cached) == (False, True, False)
    assert (runner.dataset_builds, runner.dataset_hits) == (2, 1)
    fresh = TrialRunner(uni, Market.SPOT, WF, seed=7)  # no cache: the same score
    again = fresh.run(apply_params(cfg, {"meta.threshold_mode": "expected_value"}))
    assert again.sharpe == b.sharpe


def test_report_figures_come_from_the_trials(
    runs: tuple[SearchRun, SearchRun, list[optuna.trial.FrozenTrial]],
) -> None:
    rep = runs[1].report
    assert rep.pbo is not None
    assert 0.0 <= rep.pbo.pbo <= 1.0
    assert rep.pbo.n_trials == rep.n_complete
    assert 0.0 <= rep.deflated.dsr <= rep.deflated.psr <= 1.0
    assert rep.deflated.trials_sharpe_variance > 0.0
    line = json.loads(json.dumps(rep.to_dict()))
    assert line["n_trials"] == rep.n_trials
    assert line["dsr_n_trials"] == rep.n_complete


def test_best_score_equals_the_walkforward_of_its_params(
    runs: tuple[SearchRun, SearchRun, list[optuna.trial.FrozenTrial]],
    setup: tuple[CandleStore, AtraConfig, Path, Path],
) -> None:
    store, cfg, _, root = setup
    rep = runs[1].report
    best_cfg = apply_params(cfg, rep.best_params)
    settings = settings_from_config(best_cfg, Market.SPOT)
    settings = dataclasses.replace(settings, walkforward=WF.applied(settings.walkforward))
    ev = run_research_loop(
        store,
        exchange="binance",
        symbols=SYMBOLS,
        market=Market.SPOT,
        timeframe=Timeframe.H1,
        start_ms=parse_time_ms(START),
        end_ms=parse_time_ms(FINAL),  # the search span
        settings=settings,
        backtest_config=backtest_config_from(best_cfg),
        runs_dir=root / "runs",
        seed=7,
    )
    sharpe = ev.figures["filtered"].sharpe
    assert sharpe is not None
    assert math.isclose(rep.best_sharpe, sharpe, rel_tol=1e-12, abs_tol=1e-12)


def test_final_span_is_untouched_by_the_trials(
    runs: tuple[SearchRun, SearchRun, list[optuna.trial.FrozenTrial]],
    setup: tuple[CandleStore, AtraConfig, Path, Path],
) -> None:
    rep = runs[1].report
    final_ms = parse_time_ms(FINAL)
    trials = optuna.load_study(
        study_name="atra-search", storage=f"sqlite:///{setup[3] / 'study.sqlite3'}"
    ).get_trials()
    for t in trials:
        if t.value is not None:
            assert t.user_attrs["data_end_ms"] < final_ms
            assert t.user_attrs["oos_end_ms"] < final_ms
    assert rep.search_data_end_ms < final_ms
    assert rep.final is not None
    assert rep.final.start_ms == final_ms  # the final walk-forward's first test window
    assert rep.final.end_ms >= parse_time_ms("2024-12-31")


def test_resuming_with_another_space_is_refused(
    runs: tuple[SearchRun, SearchRun, list[optuna.trial.FrozenTrial]],
    setup: tuple[CandleStore, AtraConfig, Path, Path],
) -> None:
    store, cfg, _, root = setup
    other = root / "other.toml"
    other.write_text(SPACE.replace("high = 20", "high = 15"))
    space = load_search_space(other, cfg)
    with pytest.raises(ConfigError, match="another space"):
        run_search(store, cfg, space, _request(root, 7))


def test_cli_reports_a_table_and_one_json_line(
    setup: tuple[CandleStore, AtraConfig, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    store, _, space_path, root = setup
    args = ["search", "--data-dir", str(store.root), "--symbols", "BTCUSDT", "--symbols",
            "ETHUSDT", "--start", START, "--end", FINAL, "--config", str(root / "atra.toml"),
            "--space", str(space_path), "--n-trials", "2", "--sampler", "grid",
            "--storage", str(root / "cli.sqlite3"), "--min-train-days", "120",
            "--min-train-events", "60", "--pbo-splits", "4"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    payload = json.loads(out.strip().splitlines()[-1])
    assert payload["n_trials"] == 2
    assert payload["final"] is None
    assert "DSR (N = " in out


def test_bad_space_is_one_line_naming_the_key(
    setup: tuple[CandleStore, AtraConfig, Path, Path], tmp_path: Path
) -> None:
    _, cfg, _, _ = setup
    bad = tmp_path / "bad.toml"
    bad.write_text('[search.params."strategy.sl_atr"]\ntype = "float"\nlow = -1\nhigh = 2\n')
    with pytest.raises(ConfigError, match=r"search.params.strategy.sl_atr = -1"):
        load_search_space(bad, cfg)
    bad.write_text('[search.params."strategy.nope"]\ntype = "int"\nlow = 1\nhigh = 2\n')
    with pytest.raises(ConfigError, match=r"strategy.nope"):
        load_search_space(bad, cfg)
    bad.write_text('[search.params."strategy.sl_atr"]\ntype = "float"\nlow = 1\n')
    with pytest.raises(ConfigError, match=r"give low and high"):
        load_search_space(bad, cfg)


def test_a_trial_left_running_by_a_kill_is_failed_and_redone(
    runs: tuple[SearchRun, SearchRun, list[optuna.trial.FrozenTrial]],
    setup: tuple[CandleStore, AtraConfig, Path, Path],
) -> None:
    store, cfg, space_path, root = setup
    study = optuna.load_study(
        study_name="atra-search", storage=f"sqlite:///{root / 'study.sqlite3'}"
    )
    params = {"strategy.params.fast": 20, "strategy.sl_atr": 1.5, "meta.threshold_mode": "fixed"}
    study.enqueue_trial(params)
    killed = study.ask()  # as a run killed mid-trial leaves it: RUNNING, never told
    killed.suggest_int("strategy.params.fast", 10, 20, step=10)
    killed.suggest_float("strategy.sl_atr", 1.0, 1.5, step=0.5)
    killed.suggest_categorical("meta.threshold_mode", ["fixed", "expected_value"])
    assert killed.params == params
    resumed = run_search(store, cfg, load_search_space(space_path, cfg), _request(root, 7))
    assert resumed.stale_marked_failed == 1
    trials = study.get_trials()
    assert trials[killed.number].state.name == "FAIL"
    redone = [t for t in trials[killed.number + 1 :] if t.params == params]
    assert len(redone) == 1
    assert redone[0].state.name in ("COMPLETE", "PRUNED")
    assert resumed.report.n_failed == 1
