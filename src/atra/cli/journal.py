"""`atra journal trades JOURNAL --csv PATH`: the closed trades of a live (or replay) journal.

The CSV has the columns and number format of ``atra backtest --trades-csv``
(:mod:`atra.core.closed_trades`): for the same data, model and config the two files are
identical byte for byte. Positions still open are not closed trades: they are counted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from atra.cli import app
from atra.cli.console import make_console

journal_app = typer.Typer(help="Read a live journal (SQLite).", no_args_is_help=True)
app.add_typer(journal_app, name="journal")


@journal_app.command("trades")
def trades_cmd(
    journal: Annotated[Path, typer.Argument(help="Journal file (atra live --journal).")],
    csv: Annotated[Path, typer.Option("--csv", help="Write the closed trades to this CSV file.")],
) -> None:
    """Closed trades of a journal, one row per trade, sorted by (entry_time, symbol)."""
    import asyncio

    from atra.adapters.trades_csv import read_journal_trades, write_trades_csv

    trades, not_closed = asyncio.run(read_journal_trades(journal))
    n = write_trades_csv(csv, trades)
    make_console().print(
        f"{n:,} closed trade(s) written to {csv}; {not_closed:,} position(s) still pending "
        "or open not written.",
        markup=False,
        soft_wrap=True,
    )
