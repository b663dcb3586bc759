"""Why a signal was taken or blocked: the journalled decision for one symbol's bar."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
from pathlib import Path

from atra.adapters.journal.database import Journal
from atra.adapters.journal.records import SignalRecord
from atra.errors import DataError

__all__ = ["explain_signals", "format_signal", "load_signals"]


def _iso(ms: int) -> str:
    stamp = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")


def _num(value: float | None, fmt: str) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return format(value, fmt)


async def load_signals(
    journal_path: Path, symbol: str, time_ms: int, strategy: str | None = None
) -> list[SignalRecord]:
    """The journalled signals of ``symbol`` at bar ``time_ms`` (open time, ms), one per
    strategy (only ``strategy``'s when given). DataError when the journal is missing or holds
    no such signal."""
    if not journal_path.is_file():
        raise DataError(f"journal {journal_path}: no such file")
    async with Journal.open(journal_path) as journal:
        found = [
            s
            for s in await journal.signals(symbol)
            if s.bar_time_ms == time_ms and (strategy is None or s.strategy == strategy)
        ]
    if not found:
        which = f" strategy {strategy}" if strategy is not None else ""
        raise DataError(
            f"journal {journal_path}: no{which} signal for {symbol} at bar {_iso(time_ms)} "
            f"({time_ms} ms)"
        )
    return found


def format_signal(s: SignalRecord) -> str:
    """A few lines: the decision, its probability against the threshold, and the reasons."""
    side = "long" if s.side > 0 else "short"
    verdict = "TAKEN" if s.take else f"BLOCKED by {s.blocked_by or 'unknown'}"
    lines = [
        f"{s.symbol} {_iso(s.bar_time_ms)} [{s.strategy}] {side} @ {s.entry:.8g}: {verdict}",
        f"  p(take) {_num(s.p_take, '.4f')}  threshold {_num(s.threshold, '.4f')}  "
        f"model {s.model_id}  qty {s.quantity:.8g}",
        f"  sl {s.sl:.8g}  tp1 {s.tp1:.8g}  tp2 {s.tp2:.8g}  horizon {s.horizon_bars} bars",
    ]
    if s.reasons:
        lines.append("  reasons (feature=value (log-odds contribution)):")
        lines.extend(f"    {r}" for r in s.reasons)
    else:
        lines.append("  reasons: none (no meta model)")
    return "\n".join(lines)


def explain_signals(
    journal_path: Path, symbol: str, time_ms: int, strategy: str | None = None
) -> str:
    """:func:`load_signals` rendered with :func:`format_signal`, one block per strategy."""
    found = asyncio.run(load_signals(journal_path, symbol, time_ms, strategy))
    return "\n".join(format_signal(s) for s in found)
