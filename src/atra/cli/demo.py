"""`atra demo`: the main job on the embedded synthetic data (or a real data folder).

Stage 1 stores and checks the data; stage 2 runs the research loop (features -> signals ->
labels -> walk-forward meta model -> OOS backtests primary vs filtered vs buy-and-hold ->
report) and prints where the HTML report is. ``--data-only`` stops after stage 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Final

import typer

from atra.cli import app
from atra.cli.console import make_console, print_wide, progress_bar, stage_progress
from atra.cli.data import check_table
from atra.cli.options import DEFAULT_DATA_DIR, DataDir
from atra.cli.selection import parse_range, split_symbols
from atra.errors import ConfigError

if TYPE_CHECKING:
    from atra.core.synthetic.market import SyntheticConfig

REAL_START_HELP: Final[str] = "2021-01-01"
"""``atra.research.demo.REAL_DEMO_START``, repeated for the help text only (importing it loads
the research stack at start-up); a test keeps the two equal."""


@app.command("demo")
def demo_cmd(
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="Folder of real Parquet files (../shared/data format) instead of synthetic data.",
        ),
    ] = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
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
            "--start", help=f"First signal time, UTC (real data default {REAL_START_HELP})."
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
    if data is not None and bars is not None:
        raise ConfigError("--bars applies to the synthetic data only (drop --data or --bars)")
    syms = split_symbols([symbols] if symbols else None)
    rng = parse_range(start, end) if not data_only else None
    from atra.adapters.store import CandleStore
    from atra.core.synthetic.market import SyntheticConfig
    from atra.data.demo import stage_data

    console = make_console()
    store = CandleStore(data_dir)  # created by the first write
    synthetic: SyntheticConfig | None = None
    if data is None and (syms or bars is not None):
        base = SyntheticConfig()
        synthetic = SyntheticConfig(
            symbols=tuple(syms) if syms else base.symbols,
            bars=bars if bars is not None else base.bars,
        )
    with progress_bar(console, "demo data") as progress:
        staged = stage_data(store, data=data, config=synthetic, progress=progress)
    label = "SYNTHETIC" if staged.synthetic else "REAL"
    print_wide(console, check_table(staged.checks, f"ATRA demo data [{label}] — {staged.source}"))
    console.print(
        f"{len(staged.checks)} dataset(s) stored in {data_dir} and validated "
        f"({staged.rows_added:,} new row(s) this run); data: {staged.exchange}.",
        markup=False,
    )
    if rng is None:
        return
    from atra.research.demo import run_demo_loop  # the research stack loads only when it runs

    with stage_progress(console) as stages:
        ev = run_demo_loop(
            store,
            exchange=staged.exchange,
            source=staged.source,
            runs_dir=runs_dir,
            symbols=syms or None,
            start_ms=rng.start_ms,
            end_ms=rng.end_ms,
            progress=stages,
        )
    from atra.cli.walkforward import print_evaluation

    print_evaluation(console, ev)
    if ev.report_path is not None:
        console.print(
            f"Open the HTML report: {ev.report_path.resolve()}", markup=False, soft_wrap=True
        )
