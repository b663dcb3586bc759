"""`atra backtest --model ID|PATH`: a model saved by ``atra train``, frozen, on a later range.

Four legs, out of sample, after costs: primary-only, meta-filtered, buy-and-hold and the
random-skip control (the filter's number of takes drawn at random from the same signals,
``--control-seeds`` runs, shown as min / median / max with the filter's percentile). The run is
written like ``atra walkforward``'s (run record + ``report.html`` under ``--runs-dir``);
``--trades-csv`` also writes the filtered leg's closed trades in the format of
``atra journal trades --csv`` (:mod:`atra.core.closed_trades`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from atra.cli import app
from atra.cli.console import make_console, print_wide, stage_progress, when
from atra.cli.options import Selection, with_selection
from atra.cli.selection import resolve
from atra.errors import ConfigError, ModelError

if TYPE_CHECKING:  # the research stack (LightGBM, pandas, ...) loads when the command runs
    from atra.research.evaluation.frozen import FrozenEvaluation, RandomSkipControl


def model_path_of(model: str, models_dir: Path) -> Path:
    """``--model``: a model folder (or its ``meta.json``), else an id under ``--models-dir``."""
    given = Path(model)
    if given.exists():
        return given
    in_registry = models_dir / model
    if in_registry.is_dir():
        return in_registry
    raise ModelError(
        f"--model {model}: no such model folder, and no model {model} in {models_dir} "
        "(--models-dir)"
    )


def _num(value: float | None, metric: str) -> str:
    if value is None:
        return "-"
    if metric == "total_return":
        return f"{value:+.2%}"
    return f"{value:.2%}" if metric == "win_rate" else f"{value:.2f}"


def control_table(control: RandomSkipControl) -> Table:
    """The control's min / median / max per metric, the filter's value and its percentile."""
    table = Table(
        title=f"Random-skip control: {control.n_take:,} of {control.n_signals:,} signals at "
        f"random, {len(control.seeds)} seed(s)"
    )
    for head in ("metric", "min", "median", "max", "filter's takes", "percentile"):
        table.add_column(head, justify="left" if head == "metric" else "right")
    for metric in ("total_return", "sharpe", "win_rate"):
        spread = control.spread(metric)
        cells = ("-", "-", "-") if spread is None else tuple(_num(v, metric) for v in spread)
        rank = control.percentile(metric)
        table.add_row(
            metric,
            *cells,
            _num(control.reference.get(metric), metric),
            "-" if rank is None else f"{rank:.0f}th",
        )
    return table


def print_frozen(console: Console, result: FrozenEvaluation) -> None:
    from atra.cli.walkforward import print_evaluation

    console.print(
        f"model {result.model_id}, trained {when(result.train_start_ms)} .. "
        f"{when(result.train_end_ms)} UTC (frozen).",
        markup=False,
        soft_wrap=True,
    )
    print_evaluation(console, result.evaluation)
    control = result.control
    print_wide(console, control_table(control))
    sizing = (
        "the filtered leg"
        if control.reference_is_filtered_leg
        else "the filter's takes re-run at the fixed fraction (the filtered leg sizes by Kelly)"
    )
    console.print(
        f"Control: each seed draws {control.n_take:,} of the {control.n_signals:,} primary "
        "signals uniformly without replacement, sized like the primary leg; compared with "
        f"{sizing}. A percentile near 50 means the filter trades less, not better.",
        markup=False,
        soft_wrap=True,
    )


@app.command("backtest")
@with_selection
def backtest_cmd(
    selection: Selection,
    model: Annotated[
        str | None,
        typer.Option("--model", help="Model id (in --models-dir) or model folder (required)."),
    ] = None,
    models_dir: Annotated[
        Path, typer.Option("--models-dir", help="Model registry folder (atra train --out).")
    ] = Path("models"),
    control_seeds: Annotated[
        int, typer.Option("--control-seeds", help="Random-skip control runs (seeds 0..N-1).")
    ] = 20,
    allow_overlap: Annotated[
        bool,
        typer.Option("--allow-overlap", help="Allow a range overlapping the training window."),
    ] = False,
    trades_csv: Annotated[
        Path | None,
        typer.Option(
            "--trades-csv",
            help="Write the filtered leg's closed trades (CSV, as atra journal trades --csv).",
        ),
    ] = None,
    runs_dir: Annotated[
        Path, typer.Option("--runs-dir", help="Where run directories are written.")
    ] = Path("runs"),
) -> None:
    """A saved model, frozen, on a later range: primary vs meta-filtered vs buy & hold vs a
    random-skip control, out of sample, after costs; writes the run record and report."""
    started = time.perf_counter()
    if control_seeds < 1:
        raise ConfigError(f"--control-seeds must be >= 1, got {control_seeds}")
    if model is None:
        raise ConfigError("--model is required: a model id or folder saved by atra train")
    if selection.start is None:
        raise ConfigError("--start is required: the first signal time of the evaluation range")
    path = model_path_of(model, models_dir)
    from atra.adapters.trades_csv import write_trades_csv
    from atra.cli.plugins import load_run_config
    from atra.core.closed_trades import closed_trades_of_backtest
    from atra.research.evaluation.frozen import run_frozen_backtest
    from atra.research.evaluation.settings import backtest_config_from
    from atra.research.pipeline import settings_from_config

    cfg = load_run_config(selection.config)
    settings = settings_from_config(cfg, selection.market)
    sel = resolve(selection)
    from atra.cli.series import configured_inputs

    start_ms = sel.range.start_ms
    if start_ms is None:  # pragma: no cover  (--start was given, so it parsed to a time)
        raise ConfigError("--start is required")
    console = make_console()
    with stage_progress(console) as progress:
        result = run_frozen_backtest(
            sel.store,
            path,
            exchange=sel.exchange,
            symbols=sel.symbols,
            market=sel.market,
            timeframe=sel.timeframe,
            start_ms=start_ms,
            end_ms=sel.range.end_ms,
            settings=settings,
            backtest_config=backtest_config_from(cfg),
            runs_dir=runs_dir,
            control_seeds=range(control_seeds),
            allow_overlap=allow_overlap,
            progress=progress,
            series=configured_inputs(cfg, sel.store.root),
        )
    print_frozen(console, result)
    if trades_csv is not None:
        trades, still_open = closed_trades_of_backtest(
            result.evaluation.backtests["filtered"].trades
        )
        n = write_trades_csv(trades_csv, trades)
        console.print(
            f"{n:,} closed trade(s) of the filtered leg written to {trades_csv}; "
            f"{still_open:,} still open at the data end not written.",
            markup=False,
            soft_wrap=True,
        )
    console.print(f"wall time {time.perf_counter() - started:.1f} s", markup=False)
