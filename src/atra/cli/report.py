"""`atra report RUN_DIR [--out FILE]`: render a run's HTML report and print its summary."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from atra.cli import app
from atra.cli.console import make_console, print_wide


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
    from atra.research.report.page import render_report, terminal_summary
    from atra.research.runrecord.directory import read_run

    run = read_run(run_dir)
    path = render_report(run, out)
    console = make_console()
    print_wide(console, terminal_summary(run))
    console.print(f"report: {path}", markup=False, soft_wrap=True)
