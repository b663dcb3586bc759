"""`atra demo`: the main job on the embedded synthetic data (or a real data folder)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from atra.adapters.store import CandleStore
from atra.cli import app
from atra.cli.data import DataDir, _console, _progress, _when
from atra.demo import stage_data


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
) -> None:
    """Run the main job: store the demo data, check it and summarise it."""
    console = _console()
    store = CandleStore(data_dir)
    with _progress(console, "demo data") as progress:
        staged = stage_data(store, data=data, progress=progress)
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
