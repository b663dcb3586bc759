"""Terminal output of the commands: the console, progress bars, times, tables printed whole.

Light on purpose (rich only): every command module imports it at start-up.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Final

from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

ProgressFn = Callable[[int, int, str], None]
"""``progress(done, total, label)``, as :mod:`atra.data.ingest` calls it."""
StageFn = Callable[[str, int, int, str], None]
"""``progress(stage, done, total, item)``, as the research loop calls it."""

_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_UNBOUNDED: Final[int] = 100_000
"""Width offered to a renderable to measure its natural (unwrapped) width."""


def make_console() -> Console:
    """Standard output. Text is never wrapped when it goes to a file or pipe (one message,
    one line, whatever the width), and tables go through :func:`print_wide`."""
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, soft_wrap=True)
    return console


def natural_width(console: Console, renderable: RenderableType) -> int:
    """Columns ``renderable`` takes when nothing is wrapped, cut or ellipsized."""
    options = console.options.update_width(_UNBOUNDED)
    return console.measure(renderable, options=options).maximum


def print_wide(console: Console, renderable: RenderableType) -> None:
    """Print a table (or any renderable) at ``max(console width, its natural width)``.

    rich fits a table into the console width, 80 columns when the output is not a terminal,
    by wrapping and ellipsizing cells; a cut number is a wrong number, so a table wider than
    the console is printed at its own width instead (a narrow terminal wraps the lines).
    """
    width = natural_width(console, renderable)
    if width <= console.width:
        console.print(renderable)
        return
    wide = Console(
        file=console.file,
        width=width,
        highlight=False,
        force_terminal=console.is_terminal,
        color_system=console.color_system,  # type: ignore[arg-type]
        no_color=console.no_color,
        legacy_windows=False,
    )
    wide.print(renderable)


def when(ts_ms: int | None) -> str:
    """``1704067200000`` -> ``2024-01-01 00:00`` (UTC, seconds only when set); None -> ``-``."""
    if ts_ms is None:
        return "-"
    stamp = _EPOCH + dt.timedelta(milliseconds=ts_ms)
    if ts_ms % 60_000 == 0:
        return stamp.strftime("%Y-%m-%d %H:%M")
    return stamp.isoformat(sep=" ", timespec="milliseconds").removesuffix("+00:00")


@contextmanager
def progress_bar(console: Console, label: str) -> Iterator[ProgressFn]:
    """A rich progress bar on a terminal; silent otherwise."""
    bar = _bar(console)
    task = bar.add_task(label, total=None, item="")

    def update(done: int, total: int, item: str) -> None:
        bar.update(task, completed=done, total=total, item=item)

    with bar:
        yield update


@contextmanager
def stage_progress(console: Console) -> Iterator[StageFn]:
    """One rich progress bar per stage on a terminal; silent otherwise."""
    bar = _bar(console)
    tasks: dict[str, TaskID] = {}

    def update(stage: str, done: int, total: int, item: str) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total, item="")
        bar.update(tasks[stage], completed=done, total=total, item=item)

    with bar:
        yield update


def _bar(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[item]}"),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )
