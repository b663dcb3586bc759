"""`atra report RUN_DIR [--out FILE]`: render a run's HTML report and print its summary."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from atra.cli import app
from atra.cli.data import _console
from atra.research.report import render_report, terminal_summary
from atra.research.runrecord import read_run


@app.command("report")
def report_cmd(
    run_dir: Annotated[
        Path, typer.Argument(help="A run directory (runs/<run_id>) written by a backtest.")
    ],
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Where to write the HTML (default: RUN_DIR/report.html)."),
    ] = None,
) -> None:
    """Write the self-contained HTML report (plus trades.csv, metrics.json) and print the
    metrics table."""
    run = read_run(run_dir)
    path = render_report(run, out)
    console = _console()
    console.print(terminal_summary(run))
    console.print(f"report: {path}", markup=False, soft_wrap=True)
