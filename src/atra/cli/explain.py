"""`atra explain`: why the loop took or blocked a symbol's signal at one bar."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from atra.cli import app


@app.command("explain")
def explain_cmd(
    symbol: Annotated[str, typer.Argument(help="Symbol, e.g. BTCUSDT.")],
    time: Annotated[
        str, typer.Argument(help="Bar open time: ISO UTC (2024-01-01T14:00) or epoch ms.")
    ],
    journal: Annotated[
        Path | None, typer.Option("--journal", help="Journal file (default live.journal_path).")
    ] = None,
    strategy: Annotated[
        str | None, typer.Option("--strategy", help="Only this strategy's signal.")
    ] = None,
) -> None:
    """Print the journalled decision for SYMBOL's bar at TIME: p(take), threshold, reasons."""
    from atra.config import load_config
    from atra.research.explain import explain_signals
    from atra.research.pipeline import parse_time_ms

    path = journal if journal is not None else load_config().live.journal_path
    typer.echo(explain_signals(path, symbol.strip().upper(), parse_time_ms(time), strategy))
