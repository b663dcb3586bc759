"""How ``atra live --replay`` ends: the summary read back from the journal, and ``--compare``.

The summary (:mod:`atra.live.summary`) is printed as a table and logged as one
``replay_completed`` event with the same figures. ``--compare`` runs the backtest of the same
range on the same frames with the same settings and model, prints what was compared and, when
the two differ, raises a :class:`DataError` (exit code 4) naming the first difference.

The backtest decides as ``atra backtest --model`` does (:mod:`atra.research.evaluation.frozen`):
the frames the replay was served form a research :class:`~atra.research.dataset.Universe`
(:func:`replay_universe`: candles with their warm-up and tail, funding, the counterpart
market's candles, BTC, the external series), :func:`~atra.research.dataset.build_dataset`
gives the primary events and the model's features at each signal bar through the universe's
contexts (:func:`atra.core.features.context.assemble_context`, the one decision context) and
:func:`~atra.core.decision.decide_events` decides them (:func:`decide_replayed`).
:mod:`atra.live.compare` then backtests those decisions with the replay's settings and holds the
journal against the result.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import pandas as pd
from rich.table import Table

from atra.cli.console import make_console, print_wide
from atra.core.backtest.results import BacktestResult
from atra.core.decision import decide_events, model_bar_features
from atra.core.exits.api import ExitSpec
from atra.core.features.context import SeriesInput, counterpart_market
from atra.core.meta import MetaModel
from atra.core.signals.events import generate_events
from atra.core.types import Market
from atra.errors import ConfigError, DataError
from atra.live.compare import (
    RTOL_ORDERS,
    RTOL_PAPER,
    BacktestPlan,
    Comparison,
    backtest_replay,
    compare_journal,
)
from atra.live.guards import GuardLimits
from atra.live.loop import LoopSettings, StrategyDecider
from atra.live.replay import ReplayReport
from atra.live.summary import ReplaySummary, read_summary
from atra.obs import get_logger
from atra.research.dataset import BTC_SYMBOL, SymbolData, Universe, build_dataset

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
    context_candles: Mapping[tuple[Market, str], pd.DataFrame] = field(default_factory=dict)
    """The model's side candles the replay served, by (market, symbol): each symbol on its
    counterpart market, BTCUSDT when not replayed itself."""
    series: tuple[SeriesInput, ...] = ()
    """The external series the replay gave its decisions."""


# ---- the backtest of a replay ----------------------------------------------------------------

REPLAY_EXCHANGE: Final[str] = "replay"
"""The universe's exchange label (error messages only: the frames are the replay's)."""


def _present(frame: pd.DataFrame | None) -> pd.DataFrame | None:
    return frame if frame is not None and not frame.empty else None


def replay_universe(
    plan: BacktestPlan,
    candles: Mapping[str, pd.DataFrame],
    funding: Mapping[str, pd.DataFrame] | None,
    context_candles: Mapping[tuple[Market, str], pd.DataFrame] | None = None,
    series: Sequence[SeriesInput] = (),
) -> Universe:
    """The research universe of the frames the replay was served: each symbol's candles (the
    warm-up before ``--from`` and the tail after ``--to``), its funding, its candles on the
    counterpart market, BTCUSDT (replayed, or served as context) and the external series.
    Signals count from ``--from``; the candles run to their end, so trades open at ``--to``
    finish as they would have."""
    side = context_candles or {}
    other = counterpart_market(plan.market)
    data: dict[str, SymbolData] = {}
    for sym in plan.symbols:
        if sym not in candles:
            raise ConfigError(f"--compare: no candles for {sym}")
        data[sym] = SymbolData(
            sym,
            candles[sym],
            None if funding is None else _present(funding.get(sym)),
            _present(side.get((other, sym))),
        )
    btc = (
        data[BTC_SYMBOL].candles
        if BTC_SYMBOL in data
        else _present(side.get((plan.market, BTC_SYMBOL)))
    )
    return Universe(
        REPLAY_EXCHANGE, plan.market, plan.timeframe, plan.start_ms, None, data, btc, tuple(series)
    )


def _no_signal(plan: BacktestPlan, universe: Universe) -> pd.DataFrame | None:
    """The (empty) decided events when no symbol has a primary signal from ``--from`` on,
    else None."""
    empty: pd.DataFrame | None = None
    for sym, data in universe.symbols.items():
        ev = generate_events(data.candles, plan.decider.spec, symbol=sym, timeframe=plan.timeframe)
        if bool((ev["time_ms"] >= plan.start_ms).any()):
            return None
        empty = ev.iloc[0:0].reset_index(drop=True)
    assert empty is not None  # a plan has at least one symbol
    return decide_events(empty, pd.DataFrame(index=empty.index), plan.decider.model, explain=False)


def decide_replayed(plan: BacktestPlan, universe: Universe) -> pd.DataFrame:
    """The primary events of ``[--from, --to)``, in (time, symbol) order, decided as
    ``atra backtest --model`` decides: the research dataset of ``universe`` with the model's bar
    features, then :func:`decide_events` with the replay's model (every event taken without
    one). An input the model reads that the universe lacks for a symbol is a
    :class:`ConfigError` (its features would be NaN here and not in the replay)."""
    d = plan.decider
    names = [] if d.model is None else model_bar_features(d.model)
    try:
        dataset = build_dataset(universe, d.spec, plan.exit_spec, names)
    except DataError:
        none = _no_signal(plan, universe)
        if none is None:
            raise
        return none
    absent = dataset.report.absent_inputs
    if absent:
        sym = sorted(absent)[0]
        raise ConfigError(
            f"--compare: the backtest has no {', '.join(absent[sym])} for {sym}, which the "
            "model reads (the replay's frames were not all given to the comparison)"
        )
    keep = (dataset.events["time_ms"] < plan.stop_ms).to_numpy()
    events = dataset.events.loc[keep].reset_index(drop=True)
    X = dataset.X.loc[keep].reset_index(drop=True)
    if d.model is not None:
        meta = d.model if isinstance(d.model, MetaModel) else d.model.model
        X = X.loc[:, list(meta.feature_names)]
    return decide_events(events, X, d.model, explain=False)


def backtest_of_replay(
    plan: BacktestPlan,
    candles: Mapping[str, pd.DataFrame],
    funding: Mapping[str, pd.DataFrame] | None,
    context_candles: Mapping[tuple[Market, str], pd.DataFrame] | None = None,
    series: Sequence[SeriesInput] = (),
) -> BacktestResult:
    """The backtest of the replay's range on the frames it was served, decided by
    :func:`decide_replayed` (the same frames: the events' rows index those candles)."""
    universe = replay_universe(plan, candles, funding, context_candles, series)
    decided = decide_replayed(plan, universe)
    frames = {s: universe.symbols[s].candles for s in plan.symbols}
    return backtest_replay(plan, decided, frames, funding)


async def compare_replay(
    path: Path,
    plan: BacktestPlan,
    candles: Mapping[str, pd.DataFrame],
    funding: Mapping[str, pd.DataFrame] | None,
    context_candles: Mapping[tuple[Market, str], pd.DataFrame] | None = None,
    series: Sequence[SeriesInput] = (),
    *,
    rtol: float = RTOL_PAPER,
) -> Comparison:
    """Backtest the replay (:func:`backtest_of_replay`) and compare its journal ``path``."""
    bt = backtest_of_replay(plan, candles, funding, context_candles, series)
    return await compare_journal(path, plan, bt, rtol=rtol)


# ---- output -----------------------------------------------------------------------------------


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
    result = asyncio.run(
        compare_replay(
            journal_path,
            plan,
            done.candles,
            done.funding,
            done.context_candles,
            done.series,
            rtol=rtol,
        )
    )
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
