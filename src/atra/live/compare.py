"""A replay against the backtest of the same range: are they the same run?

:func:`backtest_replay` runs :func:`atra.core.backtest.engine.run_backtest` on the candles the
replay was served (full history: the warm-up before ``--from`` and the tail after ``--to``)
with its fees and slippage, its sizing (Kelly from p(take) when the decider uses it), its risk
limits and its starting equity, on the primary events of the range as the research path
decided them. Those decisions are not made here: the live app does not import research, so
the caller (``atra live --replay --compare``, :mod:`atra.cli.replay_output`) builds them the
way ``atra backtest --model`` does (the universe of the frames the replay was served, its
features through the one decision context, :func:`atra.core.decision.decide_events`).
:func:`compare_records` then holds the journal against the backtest:

- decisions: the same primary signals (symbol, bar), each taken or blocked alike, blocked by
  the same stage or limit, and the same p(take) when a model decides;
- trades: every position closed before ``--to`` is a backtest trade that exited before
  ``--to`` with the same side, entry and exit bars and reason, and the same entry and exit
  prices, quantity, fees, funding and P&L; the positions still open are the backtest's trades
  that exit later;
- equity: the marks bar by bar and the ending equity.

Bars, sides, reasons and decisions must be equal; amounts equal to a relative tolerance
(:data:`RTOL_PAPER`: the windowed ATR of the live loop differs from the full-history ATR in the
last bits only; :data:`RTOL_ORDERS` on the order path, whose quantities are rounded to the
venue's step).

The kill switch has no backtest counterpart (no switch file exists in the past): a replay it
blocked differs from its backtest, and the comparison says where.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd

from atra.adapters.journal.database import Journal
from atra.adapters.journal.records import EquityRecord, FillRecord, PositionRecord, SignalRecord
from atra.core.backtest.engine import BacktestConfig, run_backtest
from atra.core.backtest.results import BacktestResult
from atra.core.costs import CostModel
from atra.core.exits.api import ExitSpec
from atra.core.types import Market, Timeframe
from atra.errors import ConfigError
from atra.live.deciders import DecisionFn, StrategyDecider
from atra.live.guards import GuardLimits
from atra.live.ledger import FUNDING_LEG
from atra.live.replay_run import day_text
from atra.live.settings import LoopSettings

RTOL_PAPER: Final[float] = 1e-9
RTOL_ORDERS: Final[float] = 1e-6
MAX_DIFFERENCES: Final[int] = 5
"""Differences kept in a :class:`Comparison` (the first one is the one that matters)."""
_ATOL: Final[float] = 1e-9
"""Absolute slack for amounts that are zero on one side (funding of a trade that paid none)."""


@dataclass(frozen=True, slots=True)
class BacktestPlan:
    """What the replay ran with, for the backtest of the same range."""

    symbols: tuple[str, ...]
    timeframe: Timeframe
    market: Market
    start_ms: int
    stop_ms: int
    initial_equity: float
    decider: StrategyDecider
    exit_spec: ExitSpec
    limits: GuardLimits
    funding: bool

    @classmethod
    def of_replay(
        cls,
        settings: LoopSettings,
        *,
        decider: DecisionFn,
        exit_spec: ExitSpec,
        limits: GuardLimits,
        market: Market,
    ) -> BacktestPlan:
        """The plan of a replay of ``settings`` (range required) with these settings."""
        if settings.start_ms is None or settings.stop_ms is None:
            raise ConfigError("--compare needs the replay's range (--from and --to)")
        if not isinstance(decider, StrategyDecider):
            raise ConfigError(
                f"--compare: the backtest decides with a StrategyDecider, the replay used "
                f"{type(decider).__name__}"
            )
        return cls(
            symbols=tuple(sorted(settings.symbols)),
            timeframe=settings.timeframe,
            market=market,
            start_ms=settings.start_ms,
            stop_ms=settings.stop_ms,
            initial_equity=settings.initial_equity,
            decider=decider,
            exit_spec=exit_spec,
            limits=limits,
            funding=settings.funding,
        )


def backtest_config(plan: BacktestPlan) -> BacktestConfig:
    """The backtest's settings for ``plan``: the exit spec's fees (one taker rate for entries
    and stops, the take-profit's rate as maker when it differs) and slippage, its partial
    take-profit and break-even, the decider's sizing, the guards' position, leverage and
    daily-loss limits, the starting equity; Kelly sizing on ``p_take`` when the decider uses it."""
    ex = plan.exit_spec
    if ex.fee_stop != ex.fee_entry:
        raise ConfigError(
            f"--compare: the backtest charges one taker fee on entries and stops; the replay's "
            f"are {ex.fee_entry} and {ex.fee_stop}"
        )
    d, lim = plan.decider, plan.limits
    return BacktestConfig(
        initial_equity=plan.initial_equity,
        sizing=d.sizing,
        costs=CostModel(
            maker_fee_rate=ex.fee_tp, taker_fee_rate=ex.fee_entry, slippage_bps=ex.slippage_bps
        ),
        tp_maker=ex.fee_tp != ex.fee_entry,
        tp1_fraction=ex.tp1_fraction,
        move_to_be=ex.move_to_be,
        max_positions=lim.max_open_positions,
        max_per_symbol=lim.max_per_symbol,
        max_gross_leverage=lim.max_gross_leverage,
        max_daily_loss=lim.max_daily_loss,
        # Kelly from p(take): only a model gives one (the decider sizes fixed-fractional without)
        probability_column="p_take" if d.use_kelly and d.model is not None else None,
    )


DECIDED_COLUMNS: Final[tuple[str, ...]] = (
    "symbol",
    "t",
    "time_ms",
    "side",
    "p_take",
    "threshold",
    "take",
    "blocked_by",
)
"""Columns :func:`backtest_replay` needs of the decided events (those of
:func:`atra.core.decision.decide_events` on the research dataset's events)."""


def check_decided(plan: BacktestPlan, decided: pd.DataFrame) -> None:
    """Refuse decided events the backtest of ``plan`` cannot be run on (one line each): a
    missing column, a symbol the replay did not trade, a signal outside ``[start, stop)``, or
    rows not in (time, symbol) order."""
    missing = [c for c in DECIDED_COLUMNS if c not in decided.columns]
    if missing:
        raise ConfigError(f"--compare: the decided events lack column(s) {', '.join(missing)}")
    syms = decided["symbol"].astype(str).to_numpy()
    times = decided["time_ms"].to_numpy(dtype=np.int64)
    stray = sorted(set(syms) - set(plan.symbols))
    if stray:
        raise ConfigError(f"--compare: decided events of {stray[0]}, which the replay did not run")
    outside = np.flatnonzero((times < plan.start_ms) | (times >= plan.stop_ms))
    if outside.size:
        row = int(outside[0])
        raise ConfigError(
            f"--compare: decided event row {row} ({syms[row]} {day_text(int(times[row]))}) lies "
            f"outside the replay's range {day_text(plan.start_ms)} .. {day_text(plan.stop_ms)}"
        )
    order = np.lexsort((syms, times))
    if not np.array_equal(order, np.arange(len(decided))):
        raise ConfigError("--compare: the decided events are not in (time, symbol) order")


def backtest_replay(
    plan: BacktestPlan,
    decided: pd.DataFrame,
    candles: Mapping[str, pd.DataFrame],
    funding: Mapping[str, pd.DataFrame] | None,
) -> BacktestResult:
    """The backtest of the replay's range: the events of ``decided`` (each signal of
    ``[start, stop)`` with its decision; their ``t`` are rows of ``candles``, the frames they
    were decided on) traded on those candles (and the funding the replay was charged)."""
    check_decided(plan, decided)
    lacking = [s for s in plan.symbols if s not in candles]
    if lacking:
        raise ConfigError(f"--compare: no candles for {lacking[0]}")
    charged = funding if plan.funding else None
    markets = (
        dict.fromkeys(plan.symbols, plan.market)
        if plan.market is Market.SPOT or charged is not None
        else None  # a perpetual replayed without funding history: charged none, as the replay
    )
    return run_backtest(
        {s: candles[s] for s in plan.symbols},
        decided.reset_index(drop=True),
        backtest_config(plan),
        funding=charged,
        markets=markets,
        timeframe=plan.timeframe,
    )


@dataclass(frozen=True, slots=True)
class Comparison:
    """The journal against the backtest: what was compared and the first differences."""

    decisions: int
    trades: int
    open_positions: int
    equity_marks: int
    replay_equity: float | None
    backtest_equity: float | None
    differences: tuple[str, ...] = field(default_factory=tuple)

    @property
    def identical(self) -> bool:
        return not self.differences


def _close(a: float | None, b: float | None, rtol: float) -> bool:
    a_nan = a is None or math.isnan(a)
    b_nan = b is None or math.isnan(b)
    if a_nan or b_nan:
        return a_nan and b_nan
    assert a is not None
    assert b is not None
    return math.isclose(a, b, rel_tol=rtol, abs_tol=_ATOL)


def _at(ms: int | None) -> str:
    return "-" if ms is None else day_text(ms)


def _num(v: object) -> float | None:
    if v is None:
        return None
    f = float(v)  # type: ignore[arg-type]
    return None if math.isnan(f) else f


class _Diffs:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, text: str) -> None:
        if len(self.items) < MAX_DIFFERENCES:
            self.items.append(text)


def _compare_decisions(
    out: _Diffs, signals: Sequence[SignalRecord], events: pd.DataFrame, rtol: float
) -> None:
    ours = {(s.symbol, s.bar_time_ms): s for s in signals}
    cols = ["symbol", "time_ms", "outcome", "blocked_by", "p_take"]
    theirs = {(str(r["symbol"]), int(r["time_ms"])): r for r in events[cols].to_dict("records")}
    for key in sorted(set(ours) | set(theirs), key=lambda k: (k[1], k[0])):
        where = f"decision {key[0]} {_at(key[1])}"
        s, r = ours.get(key), theirs.get(key)
        if s is None:
            out.add(f"{where}: a backtest signal the replay did not journal")
            continue
        if r is None:
            out.add(f"{where}: a replay signal the backtest does not have")
            continue
        bt_take = str(r["outcome"]) == "taken"
        by = r["blocked_by"]
        bt_by = None if bt_take else (by if isinstance(by, str) else "?")
        if s.take != bt_take or (not s.take and s.blocked_by != bt_by):
            replay_said = "take" if s.take else f"blocked by {s.blocked_by}"
            bt_said = "take" if bt_take else f"blocked by {bt_by}"
            out.add(f"{where}: replay {replay_said}, backtest {bt_said}")
        if not _close(s.p_take, _num(r["p_take"]), rtol):
            out.add(f"{where}: p(take) replay {s.p_take}, backtest {_num(r['p_take'])}")


_TRADE_FLOATS: Final[tuple[str, ...]] = (
    "entry_price",
    "exit_price",
    "quantity",
    "fees",
    "funding",
    "pnl",
)


def _compare_trades(
    out: _Diffs,
    positions: Sequence[PositionRecord],
    fills: Sequence[FillRecord],
    trades: pd.DataFrame,
    stop_ms: int,
    rtol: float,
) -> tuple[int, int]:
    fees: dict[str, float] = {}
    paid: dict[str, float] = {}
    for f in fills:
        fees[f.client_order_id] = fees.get(f.client_order_id, 0.0) + f.fee
        if f.leg.startswith(FUNDING_LEG):
            paid[f.client_order_id] = paid.get(f.client_order_id, 0.0) - f.pnl
    closed = {(p.symbol, p.signal_time_ms): p for p in positions if p.status == "closed"}
    still = {(p.symbol, p.signal_time_ms) for p in positions if p.status in ("pending", "open")}
    done = trades[trades["exit_time_ms"] < stop_ms]
    bt = {(str(r["symbol"]), int(r["signal_time_ms"])): r for r in done.to_dict("records")}
    later = {
        (str(s), int(t))
        for s, t in zip(
            trades.loc[trades["exit_time_ms"] >= stop_ms, "symbol"],
            trades.loc[trades["exit_time_ms"] >= stop_ms, "signal_time_ms"],
            strict=True,
        )
    }
    for key in sorted(set(closed) | set(bt), key=lambda k: (k[1], k[0])):
        where = f"trade {key[0]} signal {_at(key[1])}"
        p, r = closed.get(key), bt.get(key)
        if p is None:
            out.add(f"{where}: the backtest closed it, the replay did not")
            continue
        if r is None:
            out.add(f"{where}: the replay closed it, the backtest has no such trade")
            continue
        exact: dict[str, tuple[object, object]] = {
            "side": (p.side, int(r["side"])),
            "entry bar": (_at(p.entry_time_ms), _at(int(r["entry_time_ms"]))),
            "exit bar": (_at(p.exit_time_ms), _at(int(r["exit_time_ms"]))),
            "reason": (p.reason, str(r["reason"])),
        }
        for name, (a, b) in exact.items():
            if a != b:
                out.add(f"{where}: {name} replay {a}, backtest {b}")
        ours = {
            "entry_price": p.entry_price,
            "exit_price": p.exit_price,
            "quantity": p.quantity,
            "fees": fees.get(p.position_id, 0.0),
            "funding": paid.get(p.position_id, 0.0),
            "pnl": p.pnl,
        }
        for col in _TRADE_FLOATS:
            theirs = _num(r[col])
            if not _close(ours[col], theirs, rtol):
                out.add(f"{where}: {col} replay {ours[col]!r}, backtest {theirs!r}")
    for key in sorted(still ^ later, key=lambda k: (k[1], k[0])):
        side = "replay" if key in still else "backtest"
        out.add(f"trade {key[0]} signal {_at(key[1])}: open at the end in the {side} only")
    return len(closed), len(still)


def compare_records(
    bt: BacktestResult,
    plan: BacktestPlan,
    signals: Sequence[SignalRecord],
    positions: Sequence[PositionRecord],
    fills: Sequence[FillRecord],
    equity: Sequence[EquityRecord],
    *,
    rtol: float = RTOL_PAPER,
) -> Comparison:
    """The journal's records against the backtest ``bt`` of ``plan`` (pure)."""
    out = _Diffs()
    _compare_decisions(out, signals, bt.events, rtol)
    n_closed, n_open = _compare_trades(out, positions, fills, bt.trades, plan.stop_ms, rtol)
    curve = dict(zip(bt.open_time_ms.tolist(), bt.equity.tolist(), strict=True))
    marks = [e for e in equity if plan.start_ms <= e.bar_time_ms < plan.stop_ms]
    expected = [t for t in curve if plan.start_ms <= t < plan.stop_ms]
    if len(marks) != len(expected):
        out.add(f"equity: {len(marks)} marks in the journal, {len(expected)} in the backtest")
    for e in marks:
        theirs = curve.get(e.bar_time_ms)
        if theirs is None or not _close(e.equity, theirs, rtol):
            out.add(f"equity at {_at(e.bar_time_ms)}: replay {e.equity!r}, backtest {theirs!r}")
            break
    replay_end = marks[-1].equity if marks else None
    bt_end = curve[expected[-1]] if expected else None
    if not _close(replay_end, bt_end, rtol):
        out.add(f"ending equity: replay {replay_end!r}, backtest {bt_end!r}")
    return Comparison(
        decisions=len(signals),
        trades=n_closed,
        open_positions=n_open,
        equity_marks=len(marks),
        replay_equity=replay_end,
        backtest_equity=bt_end,
        differences=tuple(out.items),
    )


async def compare_journal(
    path: Path,
    plan: BacktestPlan,
    bt: BacktestResult,
    *,
    rtol: float = RTOL_PAPER,
) -> Comparison:
    """Compare the journal file ``path`` with ``bt``, the backtest of ``plan``
    (:func:`backtest_replay`)."""
    async with Journal.open(path) as j:
        signals, positions = await j.signals(), await j.positions()
        fills, equity = await j.fills(), await j.equity()
    return compare_records(bt, plan, signals, positions, fills, equity, rtol=rtol)
