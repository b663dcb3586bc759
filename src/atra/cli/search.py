"""`atra search`: an optuna study over a declared search space, every trial a purged,
embargoed walk-forward scored out of sample after costs; reports the trial count and Sharpe
variance from the storage, the best trial's deflated Sharpe ratio, the PBO (CSCV) and, with
``--final-from``, the best configuration on the span no trial saw."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from atra.cli import app
from atra.cli.backend_options import Address, Backend, BackendOptions, Workers
from atra.cli.console import make_console, print_wide, stage_progress
from atra.cli.options import (
    EmbargoHours,
    MinTrainDays,
    MinTrainEvents,
    RetrainDays,
    Selection,
    check_min_train,
    with_selection,
)
from atra.cli.selection import parse_time, resolve
from atra.errors import ConfigError


@app.command("search")
@with_selection
def search_cmd(
    selection: Selection,
    space: Annotated[
        Path | None,
        typer.Option("--space", help='Search space TOML ([search.params."<key>"]); required.'),
    ] = None,
    n_trials: Annotated[
        int, typer.Option("--n-trials", help="Trials the study should hold (resumes to it).")
    ] = 40,
    sampler: Annotated[
        str, typer.Option("--sampler", help="tpe | random | grid (grid: discrete params).")
    ] = "tpe",
    study_name: Annotated[str, typer.Option("--study-name")] = "atra-search",
    storage: Annotated[
        Path, typer.Option("--storage", help="SQLite file of the study (created if absent).")
    ] = Path("runs/search.sqlite3"),
    final_from: Annotated[
        str | None,
        typer.Option(
            "--final-from",
            help="Search only before this date (UTC); then run the best trial on the rest.",
        ),
    ] = None,
    pbo_splits: Annotated[
        int, typer.Option("--pbo-splits", help="CSCV blocks of the PBO (even).")
    ] = 16,
    retrain_days: RetrainDays = None,
    embargo_hours: EmbargoHours = None,
    min_train_days: MinTrainDays = 180,
    min_train_events: MinTrainEvents = 200,
    seed: Annotated[int, typer.Option("--seed", help="Sampler and LightGBM seed.")] = 7,
    n_jobs: Annotated[int, typer.Option("--n-jobs", help="Parallel fold fits.")] = 2,
    backend: Backend = None,
    address: Address = None,
    workers: Workers = None,
    html_out: Annotated[
        Path | None, typer.Option("--html", help="Also write the search page (HTML) here.")
    ] = None,
) -> None:
    """Search rules, barriers and the meta model out of sample; deflated Sharpe, PBO and the
    final span in the report (a table, then one JSON line)."""
    if space is None:
        raise ConfigError("--space: give the search space TOML file")
    check_min_train(min_train_days, min_train_events)
    if retrain_days is not None and retrain_days < 1:
        raise ConfigError(f"--retrain-days must be >= 1 day, got {retrain_days}")
    if embargo_hours is not None and embargo_hours < 0:
        raise ConfigError(f"--embargo-hours must be >= 0, got {embargo_hours}")
    final_ms = None if final_from is None else parse_time(final_from, "--final-from")
    options = BackendOptions(backend, address, workers)
    from atra.cli.plugins import load_run_config
    from atra.cli.series import configured_inputs
    from atra.research.search_run import SearchRequest, run_search
    from atra.research.search_space import load_search_space
    from atra.research.search_trials import WalkForwardOverrides

    cfg = load_run_config(selection.config)
    spec = options.spec(cfg.research, selection.config)  # errors before any data is read
    search_space = load_search_space(space, cfg)
    sel = resolve(selection)
    request = SearchRequest(
        exchange=sel.exchange,
        symbols=tuple(sel.symbols),
        market=sel.market,
        timeframe=sel.timeframe,
        start_ms=sel.range.start_ms,
        end_ms=sel.range.end_ms,
        storage_path=storage,
        study_name=study_name,
        n_trials=n_trials,
        sampler=sampler,
        seed=seed,
        n_jobs=n_jobs,
        backend=spec,
        final_from_ms=final_ms,
        pbo_splits=pbo_splits,
        walkforward=WalkForwardOverrides(
            retrain_days=retrain_days,
            embargo_hours=embargo_hours,
            min_train_days=min_train_days,
            min_train_events=min_train_events,
        ),
    )
    console = make_console()
    with stage_progress(console) as progress:

        def on_trial(trial: Any, best: float | None, done: int, total: int) -> None:
            best_text = "n/a" if best is None else f"{best:.3f}"
            progress("trials", done, total, f"#{trial.number} {trial.state.name}, best {best_text}")

        result = run_search(
            sel.store,
            cfg,
            search_space,
            request,
            series=configured_inputs(cfg, sel.store.root),
            on_trial=on_trial,
        )
    report = result.report
    print_wide(console, report.table())
    console.print(
        f"{result.ran} trial(s) run now, {report.n_trials} in study {study_name!r} at {storage}; "
        f"datasets built {result.dataset_builds}, reused {result.dataset_hits}; "
        f"stale trials marked failed {result.stale_marked_failed}.",
        markup=False,
        soft_wrap=True,
    )
    if html_out is not None:
        from atra.research.search_html import write_study_page

        page = write_study_page(storage, study_name, report, html_out, seed=seed)
        console.print(f"search page: {page}", markup=False, soft_wrap=True)
    typer.echo(json.dumps(report.to_dict(), sort_keys=True))
