"""How ``atra live --replay`` ends: the summary read back from the journal, and ``--compare``.

The summary (:mod:`atra.live.summary`) is printed as a table and logged as one
``replay_completed`` event with the same figures. ``--compare`` runs the backtest of the same
range on the same candles with the same settings and model (:mod:`atra.live.compare`), prints
what was compared and, when the two differ, raises a :class:`DataError` (exit code 4) naming
the first difference.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from rich.table import Table

from atra.cli.console import make_console, print_wide
from atra.core.exits.api import ExitSpec
from atra.core.types import Market
from atra.errors import DataError
from atra.live.compare import (
    RTOL_ORDERS,
    RTOL_PAPER,
    BacktestPlan,
    Comparison,
    compare_journal,
)
from atra.live.guards import GuardLimits
from atra.live.loop import LoopSettings, StrategyDecider
from atra.live.replay import ReplayReport
from atra.live.summary import ReplaySummary, read_summary
from atra.obs import get_logger

COMPARE_EXIT_CODE = DataError.exit_code
"""``atra live --replay --compare`` exits with this code when the replay and the backtest
differ (0 when they are identical)."""


@dataclass(frozen=True, slots=True)
class ReplayDone:
    """A finished replay and everything it ran with (for the summary and ``--compare``)."""

    report: ReplayReport
    settings: LoopSettings
    candles: Mapping[str, pd.DataFrame]
    funding: Mapping[str, pd.DataFrame] | None
    decider: StrategyDecider
    exit_spec: ExitSpec
    limits: GuardLimits
    market: Market
    orders: bool


def _money(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def summary_table(s: ReplaySummary) -> Table:
    """The summary as a two-column table."""
    table = Table(title=f"Replay {s.run_id}", show_header=False)
    table.add_column("figure")
    table.add_column("value", justify="right")
    rows: list[tuple[str, str]] = [
        ("range (UTC)", s.range_text),
        ("symbols", ",".join(s.symbols)),
        ("cycles journalled", str(s.cycles)),
        ("trades closed", str(s.trades_closed)),
        ("win rate", _pct(s.win_rate)),
        ("net P&L (USDT)", _money(s.net_pnl)),
        ("  realised (fills)", _money(s.realized_pnl)),
        ("  fees paid", _money(s.fees)),
        ("  funding paid", _money(s.funding)),
        ("starting equity", _money(s.initial_equity)),
        ("ending equity", _money(s.ending_equity)),
        ("max drawdown", f"{_pct(s.max_drawdown)} ({_money(s.max_drawdown_usdt)} USDT)"),
        ("open positions", str(s.open_positions)),
        ("signals", str(s.signals)),
        ("  taken", str(s.taken)),
    ]
    rows.extend((f"  blocked by {name}", str(n)) for name, n in s.blocked.items())
    for name, value in rows:
        table.add_row(name, value)
    return table


def comparison_table(c: Comparison) -> Table:
    """What ``--compare`` held against what, and the verdict."""
    table = Table(title="Replay vs backtest", show_header=False)
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("decisions compared", str(c.decisions))
    table.add_row("closed trades compared", str(c.trades))
    table.add_row("positions open at --to", str(c.open_positions))
    table.add_row("equity marks compared", str(c.equity_marks))
    table.add_row("ending equity, replay", _money(c.replay_equity))
    table.add_row("ending equity, backtest", _money(c.backtest_equity))
    table.add_row("result", "identical" if c.identical else "DIFFERENT")
    return table


def finish_replay(done: ReplayDone, journal_path: Path, *, compare: bool) -> None:
    """Print and log the summary; with ``compare``, run the backtest and compare."""
    log = get_logger("atra.cli.live")
    console = make_console()
    summary = asyncio.run(read_summary(journal_path))
    print_wide(console, summary_table(summary))
    log.info("replay_completed", resumed=done.report.resumed, stopped=done.report.stopped,
             **summary.fields())  # fmt: skip
    if not compare:
        return
    if done.report.stopped:
        console.print("compare: skipped, the replay was stopped before --to", markup=False)
        return
    plan = BacktestPlan.of_replay(
        done.settings,
        decider=done.decider,
        exit_spec=done.exit_spec,
        limits=done.limits,
        market=done.market,
    )
    rtol = RTOL_ORDERS if done.orders else RTOL_PAPER
    result = asyncio.run(compare_journal(journal_path, plan, done.candles, done.funding, rtol=rtol))
    print_wide(console, comparison_table(result))
    for diff in result.differences:
        console.print(f"  {diff}", markup=False)
    log.info("replay_compared", run_id=summary.run_id, identical=result.identical,
             decisions=result.decisions, trades=result.trades,
             first_difference=result.differences[0] if result.differences else None)  # fmt: skip
    if not result.identical:
        raise DataError(
            f"--compare: the replay in {journal_path} and the backtest of {summary.range_text} "
            f"differ; first: {result.differences[0]}"
        )
