"""The ``atra`` command line: typer app, one-line errors, distinct exit codes.

Start-up stays light (``atra --help`` well under a second): the command modules import typer,
rich, the config and the store at most; the research, live and HTTP stacks (pandas, LightGBM,
scikit-learn, SciPy, numba, httpx, ...) load inside the command functions that use them.
``tests/unit/test_cli.py`` fails when an import at start-up pulls one of them in.

Shared pieces: :mod:`~atra.cli.console` (output, tables printed whole), :mod:`~atra.cli.options`
(options several commands take, defaults from the config) and :mod:`~atra.cli.selection` (the
store, symbols and range a command works on, each wrong choice one ``ConfigError`` line).
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.console import Console

from atra import __version__
from atra.cli.failures import environment_error
from atra.errors import AtraError

app = typer.Typer(
    name="atra",
    help="ATRA: crypto momentum research to live signals. Paper trading by default.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


class _State:
    debug: bool = False


STATE = _State()


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"atra {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", callback=_print_version, is_eager=True
        ),
    ] = False,
) -> None:
    STATE.debug = debug


def _register() -> None:
    """Import the command modules; each attaches its commands to ``app``."""
    from atra.cli import ablation as _ablation  # noqa: F401  (registers `atra ablation`)
    from atra.cli import backtest as _backtest  # noqa: F401  (registers `atra backtest`)
    from atra.cli import data as _data  # noqa: F401  (registers `atra data ...`)
    from atra.cli import demo as _demo  # noqa: F401  (registers `atra demo`)
    from atra.cli import download as _download  # noqa: F401  (registers `atra data download`)
    from atra.cli import explain as _explain  # noqa: F401  (registers `atra explain`)
    from atra.cli import features as _features  # noqa: F401  (registers `atra features ...`)
    from atra.cli import journal as _journal  # noqa: F401  (registers `atra journal ...`)
    from atra.cli import live as _live  # noqa: F401  (registers `atra live`)
    from atra.cli import report as _report  # noqa: F401  (registers `atra report`)
    from atra.cli import research as _research  # noqa: F401  (train, signals, labels, wf-metrics)
    from atra.cli import search as _search  # noqa: F401  (registers `atra search`)
    from atra.cli import status as _status  # noqa: F401  (registers `atra status-api`)
    from atra.cli import walkforward as _walkforward  # noqa: F401  (registers `atra walkforward`)


_register()


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turn an :class:`AtraError` into one line and its exit code."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        app(args=args, prog_name="atra")
    except SystemExit as exc:  # typer/click end every run this way (usage errors exit 2)
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except AtraError as exc:
        if debug:
            err_console.print_exception()
        msg = f"{type(exc).__name__}: {exc}"
        if exc.hint:
            msg += f" (hint: {exc.hint})"
        err_console.print(msg, markup=False)
        return exc.exit_code
    except KeyboardInterrupt:
        err_console.print("Interrupted.", markup=False)
        return 130
    except Exception as exc:
        mapped = environment_error(exc)
        if mapped is None:
            raise
        if debug:
            err_console.print_exception()
        err_console.print(f"{type(mapped).__name__}: {mapped}", markup=False)
        return mapped.exit_code
    return 0  # pragma: no cover  (standalone typer always raises SystemExit)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
