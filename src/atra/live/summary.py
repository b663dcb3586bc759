"""What a replay ended with, read back from its journal: trades, win rate, P&L, equity,
drawdown and the decisions (taken, blocked by what).

:func:`summarize` is pure: it takes the journal's records and computes the figures, so a
test can check them on records it wrote itself. :func:`read_summary` reads a journal file
and calls it. Every figure is what was journalled, nothing is recomputed from prices.

- P&L: ``net_pnl`` is the ending equity minus the starting equity (fees, slippage in the fill
  prices, funding and the open positions at their last mark included); ``realized_pnl`` the
  cash of every fill (entry fees, exit legs, funding payments), of which ``fees`` and
  ``funding`` (paid, positive when paid out).
- A trade is a closed position; it is won when the cash of its fills (entry fee, exits,
  funding) is above zero.
- ``max_drawdown``: the largest fall of the equity marks from their running peak (the
  starting equity counts as the first peak), as a fraction of that peak and in USDT.
- Decisions: every primary signal; ``taken`` are those that became an order the venue
  accepted; ``blocked`` counts the rest by what stopped them: ``meta_model``, ``sizing``, a
  risk guard's name (:data:`atra.live.guards.GUARDS`), ``venue`` (the entry order was
  refused) or ``entry_missed`` (the entry bar passed before the order went out).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from atra.adapters.journal.database import Journal
from atra.adapters.journal.records import (
    EquityRecord,
    FillRecord,
    OrderRecord,
    PositionRecord,
    SignalRecord,
)
from atra.live.ledger import FUNDING_LEG
from atra.live.order_plan import ENTRY
from atra.live.replay_run import ReplayRun, day_text, stored_run

VENUE: Final[str] = "venue"
ENTRY_MISSED: Final[str] = "entry_missed"
UNKNOWN: Final[str] = "unknown"


@dataclass(frozen=True, slots=True)
class ReplaySummary:
    """The figures of one journal (see the module docstring)."""

    run_id: str
    start_ms: int | None
    stop_ms: int | None
    symbols: tuple[str, ...]
    cycles: int
    signals: int
    taken: int
    blocked: Mapping[str, int]
    trades_closed: int
    trades_won: int
    open_positions: int
    realized_pnl: float
    fees: float
    funding: float
    initial_equity: float | None
    ending_equity: float | None
    max_drawdown: float
    max_drawdown_usdt: float

    @property
    def win_rate(self) -> float | None:
        return self.trades_won / self.trades_closed if self.trades_closed else None

    @property
    def net_pnl(self) -> float | None:
        if self.initial_equity is None or self.ending_equity is None:
            return None
        return self.ending_equity - self.initial_equity

    @property
    def range_text(self) -> str:
        if self.start_ms is None or self.stop_ms is None:
            return "-"
        return f"{day_text(self.start_ms)}..{day_text(self.stop_ms)}"

    def fields(self) -> dict[str, object]:
        """The figures as log fields (``replay_completed``)."""
        return {
            "run_id": self.run_id,
            "range": self.range_text,
            "symbols": list(self.symbols),
            "cycles": self.cycles,
            "trades_closed": self.trades_closed,
            "win_rate": self.win_rate,
            "net_pnl": self.net_pnl,
            "realized_pnl": self.realized_pnl,
            "fees": self.fees,
            "funding": self.funding,
            "initial_equity": self.initial_equity,
            "ending_equity": self.ending_equity,
            "max_drawdown": self.max_drawdown,
            "max_drawdown_usdt": self.max_drawdown_usdt,
            "open_positions": self.open_positions,
            "signals": self.signals,
            "taken": self.taken,
            "blocked": dict(self.blocked),
        }


def _drawdown(marks: Sequence[float], start: float | None) -> tuple[float, float]:
    peak = start if start is not None else (marks[0] if marks else 0.0)
    worst, worst_usdt = 0.0, 0.0
    for eq in marks:
        peak = max(peak, eq)
        fall = peak - eq
        if fall > worst_usdt:
            worst_usdt = fall
        if peak > 0.0 and fall / peak > worst:
            worst = fall / peak
    return worst, worst_usdt


def summarize(
    signals: Sequence[SignalRecord],
    positions: Sequence[PositionRecord],
    fills: Sequence[FillRecord],
    orders: Sequence[OrderRecord],
    equity: Sequence[EquityRecord],
    *,
    cycles: int,
    run: ReplayRun | None,
    run_id: str = "",
) -> ReplaySummary:
    """The summary of a journal's records; ``run`` is its replay identity (None for a journal
    without one: then the range is that of its equity marks and ``initial_equity`` unknown)."""
    refused = {o.client_order_id for o in orders if o.kind == ENTRY and o.status == "rejected"}
    by_signal = {(p.symbol, p.signal_time_ms): p for p in positions}
    blocked: Counter[str] = Counter()
    taken = 0
    for s in signals:
        if not s.take:
            blocked[s.blocked_by or UNKNOWN] += 1
            continue
        pos = by_signal.get((s.symbol, s.bar_time_ms))
        if pos is not None and pos.position_id in refused:
            blocked[VENUE] += 1
        elif pos is not None and pos.status == "cancelled":
            blocked[ENTRY_MISSED] += 1
        else:
            taken += 1
    cash: dict[str, float] = {}
    for f in fills:
        cash[f.client_order_id] = cash.get(f.client_order_id, 0.0) + f.pnl
    closed = [p for p in positions if p.status == "closed"]
    won = sum(1 for p in closed if cash.get(p.position_id, 0.0) > 0.0)
    marks = [e.equity for e in equity]
    start = run.initial_equity if run is not None else None
    dd, dd_usdt = _drawdown(marks, start)
    if run is not None:
        start_ms: int | None = run.start_ms
        stop_ms: int | None = run.stop_ms
        symbols = run.symbols
    else:
        start_ms = equity[0].bar_time_ms if equity else None
        stop_ms = None
        symbols = tuple(sorted({s.symbol for s in signals} | {p.symbol for p in positions}))
    return ReplaySummary(
        run_id=run.run_id if run is not None else run_id,
        start_ms=start_ms,
        stop_ms=stop_ms,
        symbols=symbols,
        cycles=cycles,
        signals=len(signals),
        taken=taken,
        blocked=dict(sorted(blocked.items())),
        trades_closed=len(closed),
        trades_won=won,
        open_positions=sum(1 for p in positions if p.status in ("pending", "open")),
        realized_pnl=math.fsum(f.pnl for f in fills),
        fees=math.fsum(f.fee for f in fills),
        funding=-math.fsum(f.pnl for f in fills if f.leg.startswith(FUNDING_LEG)),
        initial_equity=start,
        ending_equity=marks[-1] if marks else start,
        max_drawdown=dd,
        max_drawdown_usdt=dd_usdt,
    )


async def summarize_journal(journal: Journal) -> ReplaySummary:
    """:func:`summarize` of an open journal."""
    return summarize(
        await journal.signals(),
        await journal.positions(),
        await journal.fills(),
        await journal.orders(),
        await journal.equity(),
        cycles=(await journal.row_counts(("cycles",)))["cycles"],
        run=await stored_run(journal),
        run_id=await journal.meta_value("run_id") or "",
    )


async def read_summary(path: Path) -> ReplaySummary:
    """:func:`summarize` of the journal file ``path``."""
    async with Journal.open(path) as journal:
        return await summarize_journal(journal)
