"""`atra ablation`: the walk-forward of ``atra walkforward`` once per cumulative feature set.

Sets: price, +volume, +fundamental, +alternative, +cross_asset, then each plug-in module's
families (:mod:`atra.research.ablation`); a family without features in the data is a row
marked skipped, with the inputs it lacks. Per set: OOS AUC, the Sharpe ratio of the primary
and the meta-filtered leg (annualised as stated), their trade counts and total returns, all
out of sample and after costs. A rich table, then one JSON line (the same figures); each set's
run record goes to ``--runs-dir`` as ``atra walkforward`` writes it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

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
    from atra.research.ablation import AblationResult

__all__ = ["ablation_table", "print_ablation"]

_DASH = "-"


def _num(value: float | None, fmt: str) -> str:
    return _DASH if value is None else format(value, fmt)


def ablation_table(result: AblationResult) -> Table:
    """One row per set: features, OOS AUC and the two legs' Sharpe, trades and return."""
    table = Table(title="Feature ablation (out of sample, after costs)")
    for col in ("Set", "Features", "Added", "OOS AUC", "Sharpe primary", "Sharpe filtered",
                "Trades primary", "Trades filtered", "Return primary", "Return filtered",
                "Run"):  # fmt: skip
        table.add_column(col, justify="left" if col in ("Set", "Run") else "right")
    for o in result.sets:
        fs = o.feature_set
        if not o.ran or o.primary is None or o.filtered is None:
            table.add_row(fs.name, str(len(fs.features)), "0", "skipped", *[_DASH] * 7)
            continue
        p, f = o.primary, o.filtered
        table.add_row(
            fs.name,
            str(len(fs.features)),
            str(len(fs.added)),
            _num(o.auc, ".4f"),
            _num(p.sharpe, ".2f"),
            _num(f.sharpe, ".2f"),
            _num(p.n_trades, ","),
            _num(f.n_trades, ","),
            _num(p.total_return, "+.1%"),
            _num(f.total_return, "+.1%"),
            o.run_id or _DASH,
        )
    return table


def print_ablation(console: Console, result: AblationResult, runs_dir: Path) -> None:
    """The table, what it covers, each set's added features or why it was skipped."""
    print_wide(console, ablation_table(result))
    ran = [o for o in result.sets if o.ran]
    events = ran[0].oos_events if ran else 0
    lines = [
        f"Annualisation: {result.annualization}.",
        f"{result.exchange}/{result.market}/{result.timeframe} {', '.join(result.symbols)}; "
        f"out-of-sample only: {when(result.oos_start_ms)} .. {when(result.oos_end_ms)} UTC, "
        f"{result.folds} fold(s), {events:,} OOS primary event(s) in every set (the same "
        "folds: the primary leg is identical in every set). Costs included (fees, slippage, "
        "funding, spot margin interest). Every set's model also takes the event attributes "
        f"({', '.join(result.event_attributes)}).",
    ]
    for o in result.sets:
        fs = o.feature_set
        if fs.skip_reason is not None:
            lines.append(f"{fs.name}: {fs.skip_reason}")
        else:
            share = _num(o.added_finite_share, ".0%")
            lines.append(f"{fs.name}: adds {', '.join(fs.added)} ({share} finite on OOS events)")
    lines.append(f"runs: {runs_dir} ({len(ran)} run record(s)); {result.elapsed_s:,.0f} s")
    for line in lines:
        console.print(line, markup=False, soft_wrap=True)


@app.command("ablation")
@with_selection
def ablation_cmd(
    selection: Selection,
    retrain_days: RetrainDays = None,
    embargo_hours: EmbargoHours = None,
    min_train_days: MinTrainDays = 180,
    min_train_events: MinTrainEvents = 200,
    runs_dir: Annotated[
        Path, typer.Option("--runs-dir", help="Where each set's run directory is written.")
    ] = Path("runs"),
    n_trials: Annotated[
        int,
        typer.Option(
            "--n-trials", help="Configurations tried, for each set's DSR (as atra walkforward)."
        ),
    ] = 1,
    seed: Annotated[int, typer.Option("--seed", help="LightGBM seed (recorded in the runs).")] = 7,
    n_jobs: NJobs = 2,
    first_test: FirstTest = None,
    json_only: Annotated[
        bool, typer.Option("--json-only", help="Print only the JSON line, no table.")
    ] = False,
    backend: Backend = None,
    address: Address = None,
    workers: Workers = None,
) -> None:
    """Walk-forward once per feature set (price, +volume, +fundamental, +alternative,
    +cross_asset, + each plug-in family): OOS AUC, primary vs filtered Sharpe, trades, after
    costs; a table and one JSON line."""
    options = BackendOptions(backend, address, workers)
    from atra.research.ablation import run_ablation_loop

    console, result = run_walkforward_loop(
        run_ablation_loop,
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
    if not json_only:
        print_ablation(console, result, runs_dir)
    typer.echo(json.dumps(result.to_json(), allow_nan=False))
