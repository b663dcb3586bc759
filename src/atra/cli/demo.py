"""`atra demo`: the main job on the embedded synthetic data (or a real data folder).

Stage 1 stores and checks the data; stage 2 runs the research loop (features -> signals ->
labels -> walk-forward meta model -> OOS backtests primary vs filtered vs buy-and-hold ->
report) and prints where the HTML report is. ``--data-only`` stops after stage 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from atra.adapters.store import CandleStore
from atra.cli import app
from atra.cli.data import DataDir, _console, _progress, _when
from atra.cli.walkforward import print_evaluation, stage_progress
from atra.core.synthetic.market import SyntheticConfig
from atra.data.demo import stage_data
from atra.errors import ConfigError
from atra.research.demo import REAL_DEMO_START, run_demo_loop


@app.command("demo")
def demo_cmd(
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="Folder of real Parquet files (../shared/data format) instead of synthetic data.",
        ),
    ] = None,
    data_dir: DataDir = Path("data"),
    runs_dir: Annotated[
        Path, typer.Option("--runs-dir", help="Where the run directory and report go.")
    ] = Path("runs"),
    symbols: Annotated[
        str | None,
        typer.Option(
            "--symbols",
            help="Comma-separated symbols (synthetic: generate only these; real: trade these, "
            "default: the ten spot pairs).",
        ),
    ] = None,
    bars: Annotated[
        int | None, typer.Option("--bars", help="Synthetic bars per symbol (default 2.5 years).")
    ] = None,
    start: Annotated[
        str | None,
        typer.Option(
            "--start", help=f"First signal time, UTC (real data default {REAL_DEMO_START})."
        ),
    ] = None,
    end: Annotated[
        str | None, typer.Option("--end", help="End of the range, UTC (exclusive).")
    ] = None,
    data_only: Annotated[
        bool, typer.Option("--data-only", help="Only store and check the data (stage 1).")
    ] = False,
) -> None:
    """Run the main job: store and check the demo data, then the research loop (walk-forward
    meta model, OOS backtests primary vs filtered vs buy-and-hold, HTML report)."""
    console = _console()
    store = CandleStore(data_dir)
    syms = [s.strip().upper() for s in (symbols or "").split(",") if s.strip()]
    synthetic: SyntheticConfig | None = None
    if data is None and (syms or bars is not None):
        base = SyntheticConfig()
        synthetic = SyntheticConfig(
            symbols=tuple(syms) if syms else base.symbols,
            bars=bars if bars is not None else base.bars,
        )
    elif bars is not None:
        raise ConfigError("--bars applies to the synthetic data only (drop --data or --bars)")
    with _progress(console, "demo data") as progress:
        staged = stage_data(store, data=data, config=synthetic, progress=progress)
    label = "SYNTHETIC" if staged.synthetic else "REAL"
    table = Table(title=f"ATRA demo data [{label}] — {staged.source}")
    for col in ("dataset", "rows", "first (UTC)", "last (UTC)", "gaps", "missing", "zero-vol"):
        table.add_column(col, justify="left" if col in ("dataset",) or "UTC" in col else "right")
    for c in staged.checks:
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
    console.print(
        f"{len(staged.checks)} dataset(s) stored in {data_dir} and validated "
        f"({staged.rows_added:,} new row(s) this run); data: {staged.exchange}.",
        markup=False,
    )
    if data_only:
        return
    from atra.research.pipeline import parse_time_ms  # the research stack loads only when it runs

    with stage_progress(console) as stages:
        ev = run_demo_loop(
            store,
            exchange=staged.exchange,
            source=staged.source,
            runs_dir=runs_dir,
            symbols=syms or None,
            start_ms=parse_time_ms(start) if start else None,
            end_ms=parse_time_ms(end) if end else None,
            progress=stages,
        )
    print_evaluation(console, ev)
    if ev.report_path is not None:
        console.print(f"Open the HTML report: {ev.report_path.resolve()}", markup=False,
                      soft_wrap=True)  # fmt: skip
