"""`atra data ...`: import, check, list, resample candles."""

from __future__ import annotations

import typer

from atra.cli import app

data_app = typer.Typer(help="Import, check, list and resample candle data.", no_args_is_help=True)
app.add_typer(data_app, name="data")
