"""`atra walkforward`: the walk-forward meta model judged by out-of-sample backtests.

For each test fold the meta model trained before it decides on the fold's primary signals;
the backtest runs on those OOS events only and the run shows primary-only, meta-filtered and
equal-weight buy-and-hold side by side, all after costs, with the annualisation stated. The
run is written to ``--runs-dir/<run id>/`` (run record, trades, equity) with ``report.html``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from atra.adapters.store import CandleStore
from atra.cli import app
from atra.cli.data import DataDir, _console, _when
from atra.config import load_config
from atra.core.types import Market, Timeframe
from atra.errors import ConfigError

if TYPE_CHECKING:  # the research stack (LightGBM, ...) loads when a command runs
    from atra.research.evaluation import Evaluation, StageProgress

DEFAULT_RETRAIN_DAYS = 30
DEFAULT_EMBARGO_HOURS = 48.0


@contextmanager
def stage_progress(console: Console) -> Iterator[StageProgress]:
    """One rich progress bar per stage on a terminal; silent otherwise."""
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[item]}"),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )
    tasks: dict[str, TaskID] = {}

    def update(stage: str, done: int, total: int, item: str) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total, item="")
        bar.update(tasks[stage], completed=done, total=total, item=item)

    with bar:
        yield update


def parse_symbols(
    store: CandleStore, exchange: str, market: Market, tf: Timeframe, given: Sequence[str] | None
) -> list[str]:
    """``--symbols`` (repeatable or comma-separated), else every stored symbol of the market."""
    out = [s.strip().upper() for item in (given or ()) for s in item.split(",") if s.strip()]
    if out:
        return list(dict.fromkeys(out))
    found = sorted(
        {
            i.symbol
            for i in store.datasets()
            if i.exchange == exchange and i.market is market and i.timeframe is tf
        }
    )
    if not found:
        raise ConfigError(
            f"no {exchange}/{market}/*/{tf} candles in the store at {store.root}; "
            "pass --data-dir / --exchange, or import data first"
        )
    return found


def print_evaluation(console: Console, ev: Evaluation) -> None:
    """The side-by-side table, what it covers, the trades hashes and where the run is."""
    from atra.research.evaluation import BUY_HOLD_RULE

    notes: dict[str, Any] = ev.run.record.notes
    oos = ev.oos
    console.print(ev.table())
    console.print(f"Annualisation: {ev.annualization}.", markup=False, soft_wrap=True)
    label = ev.run.record.data_label.upper()
    console.print(
        f"{label} data. Out-of-sample only: {_when(oos.start_ms)} .. {_when(oos.end_ms)} UTC, "
        f"{notes.get('folds')} fold(s); {len(oos.events):,} OOS primary event(s), "
        f"{oos.n_take:,} taken by the meta model; {oos.without_decision:,} event(s) without "
        "an OOS label/decision left out of both legs. Costs included (fees, slippage, funding).",
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
    for leg, digest in ev.trades_sha256.items():
        console.print(f"trades sha256 ({leg}): {digest}", markup=False, soft_wrap=True)
    console.print(f"run {ev.run_id}: {ev.run_dir}", markup=False, soft_wrap=True)
    if ev.report_path is not None:
        console.print(f"report: {ev.report_path}", markup=False, soft_wrap=True)


@app.command("walkforward")
def walkforward_cmd(
    data_dir: DataDir = Path("data"),
    exchange: Annotated[
        str, typer.Option("--exchange", help="Exchange name in the store (binance, synthetic).")
    ] = "binance",
    market: Annotated[str, typer.Option("--market", help="spot or perp.")] = "spot",
    symbols: Annotated[
        list[str] | None,
        typer.Option(
            "--symbols", "--symbol", help="Symbols (repeatable or comma-separated; default: all)."
        ),
    ] = None,
    timeframe: Annotated[str, typer.Option("--timeframe", help="Bar size, e.g. 1h.")] = "1h",
    start: Annotated[
        str | None, typer.Option("--start", help="First signal time, UTC (2022-01-01[T00:00]).")
    ] = None,
    end: Annotated[
        str | None, typer.Option("--end", help="End of the range, UTC (exclusive).")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="TOML config (strategy, costs, risk, meta sections)."),
    ] = None,
    retrain_days: Annotated[
        int, typer.Option("--retrain-days", help="Retrain every N days (= test window length).")
    ] = DEFAULT_RETRAIN_DAYS,
    embargo_hours: Annotated[
        float,
        typer.Option("--embargo-hours", help="Gap between training labels and a test window."),
    ] = DEFAULT_EMBARGO_HOURS,
    min_train_days: Annotated[
        int, typer.Option("--min-train-days", help="Days of events before the first test window.")
    ] = 180,
    min_train_events: Annotated[
        int, typer.Option("--min-train-events", help="Fewest training events of a fold.")
    ] = 200,
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
) -> None:
    """Walk-forward meta model, backtested out-of-sample: primary-only vs meta-filtered vs
    buy-and-hold, after costs; writes the run record and its HTML report."""
    if n_trials < 1:
        raise ConfigError(f"--n-trials must be >= 1, got {n_trials}")
    from atra.research.evaluation import backtest_config_from, run_research_loop
    from atra.research.pipeline import parse_time_ms, settings_from_config

    cfg = load_config(config)
    settings = settings_from_config(cfg)
    settings = dataclasses.replace(
        settings,
        walkforward=dataclasses.replace(
            settings.walkforward,
            retrain_days=retrain_days,
            embargo_hours=embargo_hours,
            min_train_days=min_train_days,
            min_train_events=min_train_events,
        ),
    )
    console = _console()
    store = CandleStore(data_dir)
    mkt, tf = Market.parse(market), Timeframe.parse(timeframe)
    syms = parse_symbols(store, exchange, mkt, tf, symbols)
    with stage_progress(console) as progress:
        ev = run_research_loop(
            store,
            exchange=exchange,
            symbols=syms,
            market=mkt,
            timeframe=tf,
            start_ms=parse_time_ms(start) if start else None,
            end_ms=parse_time_ms(end) if end else None,
            settings=settings,
            backtest_config=backtest_config_from(cfg),
            runs_dir=runs_dir,
            seed=seed,
            n_trials=n_trials,
            n_jobs=n_jobs,
            progress=progress,
        )
    print_evaluation(console, ev)
