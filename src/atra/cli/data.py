"""`atra data ...`: import, check, list, resample candles."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from atra.adapters.store import CandleStore
from atra.cli import app
from atra.core.frames import ms_to_iso
from atra.core.types import Market, Timeframe
from atra.data.ingest import (
    ProgressFn,
    check_datasets,
    import_files,
    resample_dataset,
    select_datasets,
)

data_app = typer.Typer(help="Import, check, list and resample candle data.", no_args_is_help=True)
app.add_typer(data_app, name="data")

DataDir = Annotated[
    Path,
    typer.Option(
        "--data-dir",
        envvar="ATRA_DATA_DIR",
        help="Store folder (env ATRA_DATA_DIR, default ./data).",
    ),
]
_DEFAULT_DIR = Path("data")
_MAX_GAPS_SHOWN = 50


def _console() -> Console:
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=160)
    return console


@contextmanager
def _progress(console: Console, label: str) -> Iterator[ProgressFn]:
    """A rich progress bar on a terminal; silent otherwise."""
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
    task = bar.add_task(label, total=None, item="")

    def update(done: int, total: int, item: str) -> None:
        bar.update(task, completed=done, total=total, item=item)

    with bar:
        yield update


def _when(ts_ms: int | None) -> str:
    return ms_to_iso(ts_ms).replace("T", " ").replace(":00Z", "") if ts_ms is not None else "-"


@data_app.command("import")
def import_cmd(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders to import.")],
    data_dir: DataDir = _DEFAULT_DIR,
    exchange: Annotated[str, typer.Option(help="Exchange the data comes from.")] = "binance",
    market: Annotated[
        str | None, typer.Option(help="spot or perp (default: from the file name).")
    ] = None,
    symbol: Annotated[str | None, typer.Option(help="Override the symbol.")] = None,
    timeframe: Annotated[str | None, typer.Option(help="Override the bar size.")] = None,
) -> None:
    """Import Parquet/CSV files or Binance public-data dumps (validated, merged, atomic)."""
    console = _console()
    store = CandleStore(data_dir)
    with _progress(console, "importing") as progress:
        outcomes = import_files(
            store,
            paths,
            exchange=exchange,
            market=market,
            symbol=symbol,
            timeframe=timeframe,
            progress=progress,
        )
    table = Table(title=f"Imported into {data_dir}")
    for col in ("file", "dataset", "rows", "added", "total", "gaps", "missing"):
        table.add_column(col, justify="left" if col in ("file", "dataset") else "right")
    for o in outcomes:
        table.add_row(
            Path(o.source).name,
            o.dataset,
            f"{o.report.rows:,}",
            f"{o.merge.rows_added:,}",
            f"{o.merge.rows_after:,}",
            str(o.report.gap_count),
            f"{o.report.missing_bars:,}",
        )
    console.print(table)
    added = sum(o.merge.rows_added for o in outcomes)
    console.print(f"{len(outcomes)} file(s) imported, {added:,} new row(s).")


@data_app.command("check")
def check_cmd(
    data_dir: DataDir = _DEFAULT_DIR,
    symbol: Annotated[
        list[str] | None, typer.Option("--symbol", help="Symbol(s) to check (repeatable).")
    ] = None,
    market: Annotated[str | None, typer.Option(help="spot or perp.")] = None,
    timeframe: Annotated[str | None, typer.Option(help="Bar size, e.g. 1h.")] = None,
    exchange: Annotated[str | None, typer.Option(help="Exchange.")] = None,
) -> None:
    """Validate stored datasets; report rows, span, gaps and zero-volume bars."""
    console = _console()
    store = CandleStore(data_dir)
    with _progress(console, "checking") as progress:
        checks = check_datasets(
            store,
            symbols=symbol or (),
            market=Market.parse(market) if market else None,
            timeframe=Timeframe.parse(timeframe) if timeframe else None,
            exchange=exchange,
            progress=progress,
        )
    if not checks:
        console.print(f"No datasets in {data_dir}.")
        return
    table = Table(title=f"Datasets in {data_dir}")
    for col in ("dataset", "rows", "first", "last", "gaps", "missing", "zero-volume"):
        table.add_column(col, justify="left" if col in ("dataset", "first", "last") else "right")
    for c in checks:
        r = c.report
        table.add_row(
            c.info.name,
            f"{r.rows:,}",
            _when(r.first_ms),
            _when(r.last_ms),
            str(r.gap_count),
            f"{r.missing_bars:,}",
            str(len(r.zero_volume_ms)) if r.kind == "candles" else "-",
        )
    console.print(table)
    for c in checks:
        r = c.report
        if r.gaps:
            console.print(f"[bold]{c.info.name}[/bold]: {r.gap_count} gap(s), missing (UTC):")
            for g in r.gaps[:_MAX_GAPS_SHOWN]:
                console.print(f"  {g}", markup=False)
            if r.gap_count > _MAX_GAPS_SHOWN:
                console.print(f"  ... and {r.gap_count - _MAX_GAPS_SHOWN} more", markup=False)
        if r.zero_volume_ms:
            bars = ", ".join(ms_to_iso(t) for t in r.zero_volume_ms[:_MAX_GAPS_SHOWN])
            console.print(f"{c.info.name}: zero-volume bars: {bars}", markup=False)
    console.print(f"{len(checks)} dataset(s) valid.")


@data_app.command("list")
def list_cmd(data_dir: DataDir = _DEFAULT_DIR) -> None:
    """List stored datasets (rows and span from the file footers; no validation)."""
    console = _console()
    infos = select_datasets(CandleStore(data_dir))
    if not infos:
        console.print(f"No datasets in {data_dir}.")
        return
    table = Table(title=f"Datasets in {data_dir}")
    for col in ("dataset", "kind", "rows", "first", "last", "path"):
        table.add_column(col, justify="right" if col == "rows" else "left")
    for i in infos:
        table.add_row(
            i.name, i.kind, f"{i.rows:,}", _when(i.first_ms), _when(i.last_ms), str(i.path)
        )
    console.print(table)


@data_app.command("resample")
def resample_cmd(
    symbol: Annotated[str, typer.Option(help="Symbol, e.g. BTCUSDT.")],
    from_tf: Annotated[str, typer.Option("--from", help="Source bar size, e.g. 5m.")],
    to_tf: Annotated[str, typer.Option("--to", help="Target bar size, e.g. 1h.")],
    market: Annotated[str, typer.Option(help="spot or perp.")] = "spot",
    data_dir: DataDir = _DEFAULT_DIR,
    exchange: Annotated[str, typer.Option(help="Exchange.")] = "binance",
) -> None:
    """Resample a stored dataset (complete buckets only) and store the result."""
    console = _console()
    store = CandleStore(data_dir)
    select_datasets(store, symbols=[symbol])
    out = resample_dataset(
        store,
        symbol=symbol,
        market=Market.parse(market),
        src=Timeframe.parse(from_tf),
        dst=Timeframe.parse(to_tf),
        exchange=exchange,
    )
    res = out.result
    console.print(
        f"{out.src_key} -> {out.dst_key}: {len(res.frame):,} complete bar(s), "
        f"{out.merge.rows_added:,} new, {out.merge.rows_after:,} stored; "
        f"{len(res.partial)} partial bucket(s) left out, {len(res.gaps)} gap(s).",
        markup=False,
    )
    for p in res.partial[:_MAX_GAPS_SHOWN]:
        console.print(f"  partial {p}", markup=False)
    if len(res.partial) > _MAX_GAPS_SHOWN:
        console.print(f"  ... and {len(res.partial) - _MAX_GAPS_SHOWN} more", markup=False)
