"""`atra walkforward`: the walk-forward meta model judged by out-of-sample backtests.

For each test fold the meta model trained before it decides on the fold's primary signals;
the backtest runs on those OOS events only and the run shows primary-only, meta-filtered and
equal-weight buy-and-hold side by side, all after costs, with the annualisation stated. The
run is written to ``--runs-dir/<run id>/`` (run record, trades, equity) with ``report.html``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from atra.cli import app
from atra.cli.console import make_console, print_wide, stage_progress, when
from atra.cli.options import (
    EmbargoHours,
    MinTrainDays,
    MinTrainEvents,
    RetrainDays,
    Selection,
    check_min_train,
    embargo_hours_or,
    retrain_days_or,
    with_selection,
)
from atra.cli.selection import parse_time, resolve
from atra.errors import ConfigError

if TYPE_CHECKING:  # the research stack (LightGBM, ...) loads when a command runs
    from atra.research.evaluation.result import Evaluation


def print_evaluation(console: Console, ev: Evaluation) -> None:
    """The side-by-side table, what it covers, the trades hashes and where the run is."""
    from atra.research.evaluation.buy_hold import BUY_HOLD_RULE

    notes: dict[str, Any] = ev.run.record.notes
    oos = ev.oos
    print_wide(console, ev.table())
    console.print(f"Annualisation: {ev.annualization}.", markup=False, soft_wrap=True)
    label = ev.run.record.data_label.upper()
    console.print(
        f"{label} data. Out-of-sample only: {when(oos.start_ms)} .. {when(oos.end_ms)} UTC, "
        f"{notes.get('folds')} fold(s); {len(oos.events):,} OOS primary event(s), "
        f"{oos.n_take:,} taken by the meta model; {oos.without_decision:,} event(s) without "
        "an OOS label/decision left out of both legs. Costs included (fees, slippage, funding, "
        "spot margin interest).",
        markup=False,
        soft_wrap=True,
    )
    bh = ev.buy_hold
    console.print(
        f"buy_hold: {BUY_HOLD_RULE}; paid fees {bh.fees:,.2f}, slippage {bh.slippage:,.2f}, "
        f"funding {bh.funding:,.2f} (quote ccy).",
        markup=False,
        soft_wrap=True,
    )
    for leg, bt in ev.backtests.items():  # the live guards' rules and names
        blocks = ", ".join(f"{guard} {n:,}" for guard, n in bt.blocks_by_guard().items())
        console.print(f"blocked by guard ({leg}): {blocks}", markup=False, soft_wrap=True)
    for leg, digest in ev.trades_sha256.items():
        console.print(f"trades sha256 ({leg}): {digest}", markup=False, soft_wrap=True)
    console.print(f"run {ev.run_id}: {ev.run_dir}", markup=False, soft_wrap=True)
    if ev.report_path is not None:
        console.print(f"report: {ev.report_path}", markup=False, soft_wrap=True)


@app.command("walkforward")
@with_selection
def walkforward_cmd(
    selection: Selection,
    retrain_days: RetrainDays = None,
    embargo_hours: EmbargoHours = None,
    min_train_days: MinTrainDays = 180,
    min_train_events: MinTrainEvents = 200,
    runs_dir: Annotated[
        Path, typer.Option("--runs-dir", help="Where run directories are written.")
    ] = Path("runs"),
    n_trials: Annotated[
        int,
        typer.Option(
            "--n-trials",
            help="Configurations tried, this one included (deflated Sharpe, DSR).",
        ),
    ] = 1,
    seed: Annotated[int, typer.Option("--seed", help="LightGBM seed (recorded in the run).")] = 7,
    n_jobs: Annotated[int, typer.Option("--n-jobs", help="Parallel fold fits.")] = 2,
    first_test: Annotated[
        str | None,
        typer.Option(
            "--first-test",
            help="Pin the first test window's start (UTC); not before --min-train-days of data.",
        ),
    ] = None,
) -> None:
    """Walk-forward meta model, backtested out-of-sample: primary-only vs meta-filtered vs
    buy-and-hold, after costs; writes the run record and its HTML report."""
    if n_trials < 1:
        raise ConfigError(f"--n-trials must be >= 1, got {n_trials}")
    check_min_train(min_train_days, min_train_events)
    first_test_ms = None if first_test is None else parse_time(first_test, "--first-test")
    from atra.cli.plugins import load_run_config
    from atra.research.evaluation.loop import run_research_loop
    from atra.research.evaluation.settings import backtest_config_from
    from atra.research.pipeline import settings_from_config

    cfg = load_run_config(selection.config)
    settings = settings_from_config(cfg, selection.market)
    base = settings.walkforward
    settings = dataclasses.replace(
        settings,
        walkforward=dataclasses.replace(
            base,
            retrain_days=retrain_days_or(retrain_days, base.retrain_days),
            embargo_hours=embargo_hours_or(embargo_hours, base.embargo_hours),
            min_train_days=min_train_days,
            min_train_events=min_train_events,
            first_test_ms=first_test_ms,
        ),
    )
    sel = resolve(selection)
    from atra.cli.series import configured_inputs

    console = make_console()
    with stage_progress(console) as progress:
        ev = run_research_loop(
            sel.store,
            exchange=sel.exchange,
            symbols=sel.symbols,
            market=sel.market,
            timeframe=sel.timeframe,
            start_ms=sel.range.start_ms,
            end_ms=sel.range.end_ms,
            settings=settings,
            backtest_config=backtest_config_from(cfg),
            runs_dir=runs_dir,
            seed=seed,
            n_trials=n_trials,
            n_jobs=n_jobs,
            progress=progress,
            series=configured_inputs(cfg, sel.store.root),
        )
    print_evaluation(console, ev)
