"""`atra walkforward`: the walk-forward meta model judged by out-of-sample backtests.

For each test fold the meta model trained before it decides on the fold's primary signals;
the backtest runs on those OOS events only and the run shows primary-only, meta-filtered and
equal-weight buy-and-hold side by side, all after costs, with the annualisation stated. The
run is written to ``--runs-dir/<run id>/`` (run record, trades, equity) with ``report.html``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from atra.cli import app
from atra.cli.backend_options import Address, Backend, BackendOptions, Workers
from atra.cli.console import print_wide, when
from atra.cli.options import (
    EmbargoHours,
    FirstTest,
    MinTrainDays,
    MinTrainEvents,
    NJobs,
    RetrainDays,
    Selection,
    with_selection,
)
from atra.cli.selection import run_walkforward_loop

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
    n_jobs: NJobs = 2,
    first_test: FirstTest = None,
    backend: Backend = None,
    address: Address = None,
    workers: Workers = None,
) -> None:
    """Walk-forward meta model, backtested out-of-sample: primary-only vs meta-filtered vs
    buy-and-hold, after costs; writes the run record and its HTML report."""
    options = BackendOptions(backend, address, workers)
    from atra.research.evaluation.loop import run_research_loop

    console, ev = run_walkforward_loop(
        run_research_loop,
        selection,
        retrain_days=retrain_days,
        embargo_hours=embargo_hours,
        min_train_days=min_train_days,
        min_train_events=min_train_events,
        first_test=first_test,
        runs_dir=runs_dir,
        n_trials=n_trials,
        seed=seed,
        n_jobs=n_jobs,
        backend=options,
    )
    print_evaluation(console, ev)
