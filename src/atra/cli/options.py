"""Options several commands share, declared once, and their checks.

A bad value is one :class:`~atra.errors.ConfigError` line naming the option. Defaults that live
in the config (``meta.retrain_days``, ``meta.embargo_hours``) are ``None`` here and resolved
from the config a command loads, so every command has the same default; the help text shows
the built-in value.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final

import typer

from atra.config import MetaConfig
from atra.errors import ConfigError

DEFAULT_DATA_DIR: Final = Path("data")
_RETRAIN_DAYS: Final = MetaConfig.model_fields["retrain_days"].default
_EMBARGO_HOURS: Final = MetaConfig.model_fields["embargo_hours"].default

DataDir = Annotated[
    Path,
    typer.Option(
        "--data-dir",
        envvar="ATRA_DATA_DIR",
        help="Store folder (env ATRA_DATA_DIR, default ./data).",
    ),
]
Exchange = Annotated[
    str, typer.Option("--exchange", help="Exchange name in the store (binance, synthetic).")
]
MarketOpt = Annotated[str, typer.Option("--market", help="spot or perp.")]
Symbols = Annotated[
    list[str] | None,
    typer.Option(
        "--symbols", "--symbol", help="Symbols (repeatable or comma-separated; default: all)."
    ),
]
TimeframeOpt = Annotated[str, typer.Option("--timeframe", help="Bar size, e.g. 1h.")]
Start = Annotated[
    str | None, typer.Option("--start", help="First signal time, UTC (2022-01-01[T00:00]).")
]
End = Annotated[str | None, typer.Option("--end", help="End of the range, UTC (exclusive).")]
ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help="TOML config (strategy, costs, risk, meta sections)."),
]
RetrainDays = Annotated[
    int | None,
    typer.Option(
        "--retrain-days",
        help=f"Retrain every N >= 1 days (= test window length; default: from config "
        f"({_RETRAIN_DAYS}), meta.retrain_days).",
    ),
]
EmbargoHours = Annotated[
    float | None,
    typer.Option(
        "--embargo-hours",
        help=f"Hours >= 0 between training labels and a test window (default: from config "
        f"({_EMBARGO_HOURS:g}), meta.embargo_hours).",
    ),
]
MinTrainDays = Annotated[
    int, typer.Option("--min-train-days", help="Days of events before the first test window.")
]
MinTrainEvents = Annotated[
    int, typer.Option("--min-train-events", help="Fewest training events of a fold.")
]
FirstTest = Annotated[
    str | None,
    typer.Option(
        "--first-test",
        help="Pin the first test window's start (UTC); not before --min-train-days of data.",
    ),
]
NJobs = Annotated[int, typer.Option("--n-jobs", help="Parallel fold fits.")]


@dataclass(frozen=True, slots=True)
class Selection:
    """The data a research command works on, as typed: the options every one of them takes."""

    data_dir: Path
    exchange: str
    market: str
    symbols: list[str] | None
    timeframe: str
    start: str | None
    end: str | None
    config: Path | None


def _selection_options(
    data_dir: DataDir = DEFAULT_DATA_DIR,
    exchange: Exchange = "binance",
    market: MarketOpt = "spot",
    symbols: Symbols = None,
    timeframe: TimeframeOpt = "1h",
    start: Start = None,
    end: End = None,
    config: ConfigOpt = None,
) -> Selection:
    return Selection(data_dir, exchange, market, symbols, timeframe, start, end, config)


def with_selection(command: Callable[..., None]) -> Callable[..., None]:
    """Declare the options of :class:`Selection` once for every research command.

    ``command`` takes a :class:`Selection` first, then its own options. Typer sees the
    selection options followed by the command's own (the signature it reads); the command
    gets them bundled into one :class:`Selection`.
    """
    shared = inspect.signature(_selection_options, eval_str=True).parameters
    own = list(inspect.signature(command, eval_str=True).parameters.values())[1:]

    @functools.wraps(command)
    def run(**kwargs: Any) -> None:
        selection = _selection_options(**{name: kwargs.pop(name) for name in shared})
        command(selection, **kwargs)

    run.__signature__ = inspect.Signature([*shared.values(), *own])  # type: ignore[attr-defined]
    return run


def retrain_days_or(value: int | None, config_value: int) -> int:
    """``--retrain-days``: None means the config's ``meta.retrain_days``; below 1 is refused."""
    if value is None:
        return config_value
    if value < 1:
        raise ConfigError(
            f"--retrain-days must be >= 1 day, got {value} "
            f"(leave it out for the config's meta.retrain_days = {config_value})"
        )
    return value


def embargo_hours_or(value: float | None, config_value: float) -> float:
    """``--embargo-hours``: None means the config's ``meta.embargo_hours``; it must be a finite
    number >= 0."""
    if value is None:
        return config_value
    if not (math.isfinite(value) and value >= 0):
        raise ConfigError(
            f"--embargo-hours must be a number >= 0, got {value:g} "
            f"(leave it out for the config's meta.embargo_hours = {config_value:g})"
        )
    return value


def check_min_train(min_train_days: int, min_train_events: int) -> None:
    """``--min-train-days`` >= 0 and ``--min-train-events`` >= 1."""
    if min_train_days < 0:
        raise ConfigError(f"--min-train-days must be >= 0, got {min_train_days}")
    if min_train_events < 1:
        raise ConfigError(f"--min-train-events must be >= 1, got {min_train_events}")
