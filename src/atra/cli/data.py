"""`atra data ...`: import, check, list, resample candles.

Start-up stays light: the import / validation stack (pandas) loads inside the commands that
need it; ``data list`` reads the Parquet footers only. The commands that validate rows
(``import``, ``check``, ``resample``, ``download``) take ``--config`` for the sane bounds of
``[data.bounds]`` (``ATRA__DATA__BOUNDS__*`` overrides them too).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from atra.cli import app
from atra.cli.console import make_console, print_wide, progress_bar, when
from atra.cli.options import DEFAULT_DATA_DIR, DataDir
from atra.cli.selection import open_store
from atra.core.symbols import split_symbols
from atra.core.types import Market, Timeframe
from atra.errors import ConfigError, DataError

if TYPE_CHECKING:
    from rich.console import Console

    from atra.adapters.series import SeriesReport
    from atra.core.bounds import Limits
    from atra.data.ingest import DatasetCheck

data_app = typer.Typer(help="Import, check, list and resample candle data.", no_args_is_help=True)
app.add_typer(data_app, name="data")

_MAX_PARTIALS_SHOWN = 50

BoundsConfig = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="TOML config whose [data.bounds] (min_price, max_price, max_abs_funding_rate) "
        "rows must meet (default: the built-in bounds).",
    ),
]


def store_bounds(config: Path | None) -> Limits:
    """The sane bounds rows must meet: ``[data.bounds]`` of ``config`` (with its
    ``ATRA__DATA__BOUNDS__*`` overrides); a bad bound is a one-line ConfigError naming it."""
    from atra.config import load_config

    return load_config(config).data.bounds.limits()


@data_app.command("import")
def import_cmd(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders to import.")],
    data_dir: DataDir = DEFAULT_DATA_DIR,
    exchange: Annotated[str, typer.Option(help="Exchange the data comes from.")] = "binance",
    market: Annotated[
        str | None, typer.Option(help="spot or perp (default: from the file name).")
    ] = None,
    symbol: Annotated[str | None, typer.Option(help="Override the symbol.")] = None,
    timeframe: Annotated[str | None, typer.Option(help="Override the bar size.")] = None,
    config: BoundsConfig = None,
) -> None:
    """Import Parquet/CSV files or Binance public-data dumps (validated, merged, atomic)."""
    from atra.adapters.store import CandleStore
    from atra.data.ingest import import_files

    limits = store_bounds(config)
    console = make_console()
    store = CandleStore(data_dir, limits=limits)  # created on the first write
    with progress_bar(console, "importing") as progress:
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
    print_wide(console, table)
    added = sum(o.merge.rows_added for o in outcomes)
    console.print(f"{len(outcomes)} file(s) imported, {added:,} new row(s).", markup=False)


@data_app.command("import-series")
def import_series_cmd(
    path: Annotated[Path, typer.Argument(help="A daily series file (CSV or Parquet).")],
    data_dir: DataDir = DEFAULT_DATA_DIR,
    name: Annotated[
        str | None,
        typer.Option("--name", help="Series name (default: the file stem without _daily)."),
    ] = None,
    time_col: Annotated[str, typer.Option("--time-col", help="The time column.")] = "time",
    columns: Annotated[
        str | None,
        typer.Option("--columns", help="Value columns to keep, comma-separated (default: all)."),
    ] = None,
) -> None:
    """Import an external daily series (sentiment, on-chain) into the store's series/ area:
    validated (day grid, no duplicate day, finite values), merged atomically; every missing
    day is reported, never filled."""
    from atra.adapters.series_store import SeriesStore
    from atra.core.frames import ms_to_iso
    from atra.data.series import import_series

    cols = tuple(c.strip() for c in columns.split(",") if c.strip()) if columns else ()
    out = import_series(SeriesStore(data_dir), path, name=name, time_col=time_col, columns=cols)
    r, m = out.report, out.merge
    console = make_console()
    console.print(
        f"series {r.name}: {r.rows:,} row(s) from {path.name} ({when(r.first_ms)} .. "
        f"{when(r.last_ms)} UTC; columns {', '.join(r.columns)}), {m.rows_added:,} new, "
        f"{m.rows_after:,} stored; {r.gap_count} gap(s), {r.missing_days:,} missing day(s).",
        markup=False,
        soft_wrap=True,
    )
    for g in r.gaps:
        first, last = ms_to_iso(g.first_missing_ms)[:10], ms_to_iso(g.last_missing_ms)[:10]
        console.print(f"  gap: {first}..{last} ({g.missing} day(s) missing)", markup=False)


@data_app.command("check")
def check_cmd(
    data_dir: DataDir = DEFAULT_DATA_DIR,
    symbol: Annotated[
        list[str] | None,
        typer.Option(
            "--symbols", "--symbol", help="Symbol(s) to check (repeatable or comma-separated)."
        ),
    ] = None,
    market: Annotated[str | None, typer.Option(help="spot or perp.")] = None,
    timeframe: Annotated[str | None, typer.Option(help="Bar size, e.g. 1h.")] = None,
    exchange: Annotated[str | None, typer.Option(help="Exchange.")] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="List every gap and zero-volume bar.")
    ] = False,
    config: BoundsConfig = None,
) -> None:
    """Validate stored datasets: per dataset its rows, span, gaps, missing bars, largest gap
    and zero-volume bars (--verbose lists every gap)."""
    from atra.data.ingest import check_datasets

    mkt = Market.parse(market) if market else None
    tf = Timeframe.parse(timeframe) if timeframe else None
    store = open_store(data_dir, limits=store_bounds(config))
    console = make_console()
    with progress_bar(console, "checking") as progress:
        checks = check_datasets(
            store,
            symbols=list(split_symbols(symbol)),
            market=mkt,
            timeframe=tf,
            exchange=exchange,
            progress=progress,
        )
    series = [] if (symbol or market or timeframe or exchange) else _check_series(data_dir)
    if not checks and not series:
        exc = ConfigError(f"no datasets in the store at {data_dir}: nothing to check")
        exc.hint = f"import data first: atra data import FILES --data-dir {data_dir}"
        raise exc
    if checks:
        print_wide(console, check_table(checks, f"Datasets in {data_dir}"))
    if series:
        print_wide(console, _series_table(series, f"External series in {data_dir}"))
    if verbose:
        _print_every_gap(console, checks)
        _print_series_gaps(console, series)
    elif any(c.report.gaps or c.report.zero_volume_ms for c in checks) or any(
        r.gaps for r in series
    ):
        console.print("Every gap and zero-volume bar: atra data check --verbose", markup=False)
    said = (f"{len(checks)} dataset(s) valid." if checks else "",
            f"{len(series)} series valid." if series else "")  # fmt: skip
    console.print(" ".join(p for p in said if p), markup=False)


def _check_series(data_dir: Path) -> list[SeriesReport]:
    from atra.adapters.series_store import SeriesStore
    from atra.data.series import check_series

    return check_series(SeriesStore(data_dir))


def _series_table(reports: list[SeriesReport], title: str) -> Table:
    """One row per stored series: rows, span, columns, gaps and missing days."""
    table = Table(title=title)
    for col in ("series", "rows", "first (UTC)", "last (UTC)", "gaps", "missing days", "columns"):
        table.add_column(
            col, justify="right" if col in ("rows", "gaps", "missing days") else "left"
        )
    for r in reports:
        table.add_row(r.name, f"{r.rows:,}", when(r.first_ms), when(r.last_ms), str(r.gap_count),
                      f"{r.missing_days:,}", ", ".join(r.columns))  # fmt: skip
    return table


def _print_series_gaps(console: Console, reports: list[SeriesReport]) -> None:
    for r in reports:
        if r.gaps:
            console.print(f"series {r.name}: {r.gap_count} gap(s), missing (UTC):", markup=False)
            for g in r.gaps:
                console.print(f"  {g}", markup=False)


def check_table(checks: list[DatasetCheck], title: str) -> Table:
    """One row per dataset: rows, span, gaps, missing bars, the largest gap, zero-volume bars."""
    table = Table(title=title)
    heads = ("dataset", "rows", "first (UTC)", "last (UTC)", "gaps", "missing", "largest gap")
    for col in (*heads, "zero-vol"):
        numeric = col in ("rows", "gaps", "missing", "zero-vol")
        table.add_column(col, justify="right" if numeric else "left")
    for c in checks:
        r = c.report
        table.add_row(
            c.info.name,
            f"{r.rows:,}",
            when(r.first_ms),
            when(r.last_ms),
            str(r.gap_count),
            f"{r.missing_bars:,}",
            _largest_gap(c),
            str(len(r.zero_volume_ms)) if r.kind == "candles" else "-",
        )
    return table


def _largest_gap(check: DatasetCheck) -> str:
    """``12 missing from 2018-02-08 00:00``: the most bars (events) missing in a row, from
    where."""
    gaps = check.report.gaps
    if not gaps:
        return "-"
    big = max(gaps, key=lambda g: g.missing)  # the first of equals
    return f"{big.missing:,} missing from {when(big.first_missing_ms)}"


def _print_every_gap(console: Console, checks: list[DatasetCheck]) -> None:
    from atra.core.frames import ms_to_iso

    for c in checks:
        r = c.report
        if r.gaps:
            console.print(f"{c.info.name}: {r.gap_count} gap(s), missing (UTC):", markup=False)
            for g in r.gaps:
                console.print(f"  {g}", markup=False)
        if r.zero_volume_ms:
            bars = ", ".join(ms_to_iso(t) for t in r.zero_volume_ms)
            console.print(f"{c.info.name}: zero-volume bars: {bars}", markup=False)


@data_app.command("list")
def list_cmd(data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """List stored datasets (rows and span from the file footers; no validation)."""
    from atra.core.plausibility import implausible_time

    infos = open_store(data_dir).datasets()
    for info in infos:  # a stored time in another unit is one line, not an OverflowError
        col = "open_time" if info.kind == "candles" else "funding_time"
        for label, ts in (("first", info.first_ms), ("last", info.last_ms)):
            reason = implausible_time(ts, 0) if ts is not None else None
            if reason is not None:
                raise DataError(f"{info.path}: stored {label} {col} {reason}")
    from atra.adapters.series_store import SeriesStore

    series = SeriesStore(data_dir).infos()
    console = make_console()
    if not infos and not series:
        console.print(f"No datasets in {data_dir}.", markup=False)
        return
    table = Table(title=f"Datasets in {data_dir}")
    for col in ("dataset", "kind", "rows", "first (UTC)", "last (UTC)", "path"):
        table.add_column(col, justify="right" if col == "rows" else "left")
    for i in infos:
        table.add_row(i.name, i.kind, f"{i.rows:,}", when(i.first_ms), when(i.last_ms), str(i.path))
    for s in series:
        table.add_row(f"series/{s.name}", "series", f"{s.rows:,}", when(s.first_ms),
                      when(s.last_ms), str(s.path))  # fmt: skip
    print_wide(console, table)


@data_app.command("resample")
def resample_cmd(
    symbol: Annotated[str, typer.Option(help="Symbol, e.g. BTCUSDT.")],
    from_tf: Annotated[str, typer.Option("--from", help="Source bar size, e.g. 5m.")],
    to_tf: Annotated[str, typer.Option("--to", help="Target bar size, e.g. 1h.")],
    market: Annotated[str, typer.Option(help="spot or perp.")] = "spot",
    data_dir: DataDir = DEFAULT_DATA_DIR,
    exchange: Annotated[str, typer.Option(help="Exchange.")] = "binance",
    config: BoundsConfig = None,
) -> None:
    """Resample a stored dataset (complete buckets only) and store the result."""
    from atra.data.ingest import resample_dataset, select_datasets

    mkt, src, dst = Market.parse(market), Timeframe.parse(from_tf), Timeframe.parse(to_tf)
    store = open_store(data_dir, limits=store_bounds(config))
    sym = symbol.strip().upper()
    select_datasets(store, symbols=[sym])
    out = resample_dataset(store, symbol=sym, market=mkt, src=src, dst=dst, exchange=exchange)
    res = out.result
    console = make_console()
    console.print(
        f"{out.src_key} -> {out.dst_key}: {len(res.frame):,} complete bar(s), "
        f"{out.merge.rows_added:,} new, {out.merge.rows_after:,} stored; "
        f"{len(res.partial)} partial bucket(s) left out, {len(res.gaps)} gap(s).",
        markup=False,
    )
    for p in res.partial[:_MAX_PARTIALS_SHOWN]:
        console.print(f"  partial {p}", markup=False)
    if len(res.partial) > _MAX_PARTIALS_SHOWN:
        console.print(f"  ... and {len(res.partial) - _MAX_PARTIALS_SHOWN} more", markup=False)
