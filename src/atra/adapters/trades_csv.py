"""The closed-trades CSV on disk (format: :mod:`atra.core.closed_trades`): the atomic write,
and the closed trades of a live journal.

- :func:`write_trades_csv`: the text goes to a temporary file beside the target, is fsynced
  and renamed over it, so a reader sees the old file or the new one, never half of one.
- :func:`closed_trades_of_journal` / :func:`read_journal_trades`: every ``closed`` position of
  the journal with its fills (``fills.client_order_id`` = the position id): the entry fill, the
  exit legs ``leg1``, ``leg2``, ... in leg order, the funding payments ``funding:<time>``.
  Fees = every fill's fee; funding paid = minus the funding fills' ``pnl``; pnl = the
  position's ``pnl``. Positions still pending / open are not closed trades: they are counted.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from atra.adapters.journal.database import Journal
from atra.adapters.journal.records import FillRecord, PositionRecord
from atra.core.closed_trades import ClosedTrade, ExitLeg, closed_trade, trades_csv_text
from atra.errors import DataError

__all__ = ["closed_trades_of_journal", "read_journal_trades", "write_trades_csv"]

_FUNDING_PREFIX = "funding:"  # the live ledger's funding fill leg (atra.live.ledger.FUNDING_LEG)
_EXIT_PREFIX = "leg"


def write_trades_csv(path: Path, trades: Iterable[ClosedTrade]) -> int:
    """Write ``trades`` as the closed-trades CSV to ``path`` atomically; returns the row
    count. The folder must exist (a missing one is a one-line :class:`DataError`)."""
    rows = list(trades)
    text = trades_csv_text(rows)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise DataError(f"trades CSV {path}: folder {folder} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(rows)


def _leg_number(fill: FillRecord, where: str) -> int:
    digits = fill.leg[len(_EXIT_PREFIX) :]
    if not digits.isdigit():
        raise DataError(f"{where}: fill leg {fill.leg!r}, expected entry, legN or funding:<ms>")
    return int(digits)


def closed_trades_of_journal(
    positions: Sequence[PositionRecord], fills: Sequence[FillRecord], source: str
) -> tuple[list[ClosedTrade], int]:
    """The closed positions of a journal as :class:`ClosedTrade` rows, and the number of
    positions not closed (pending or open). ``source`` names the journal in errors."""
    by_position: dict[str, list[FillRecord]] = {}
    for f in fills:
        by_position.setdefault(f.client_order_id, []).append(f)
    out: list[ClosedTrade] = []
    not_closed = 0
    for p in positions:
        if p.status != "closed":
            not_closed += p.status in ("pending", "open")
            continue
        where = f"journal {source} position {p.position_id}"
        if p.entry_time_ms is None or p.entry_price is None or p.pnl is None:
            raise DataError(f"{where}: closed without entry time, entry price or pnl")
        own = by_position.get(p.position_id, [])
        exits = sorted(
            (f for f in own if f.leg.startswith(_EXIT_PREFIX)), key=lambda f: _leg_number(f, where)
        )
        fees = sum(f.fee for f in own)
        funding = -sum(f.pnl for f in own if f.leg.startswith(_FUNDING_PREFIX))
        trade = closed_trade(
            symbol=p.symbol,
            side=p.side,
            entry_time_ms=p.entry_time_ms,
            entry_price=p.entry_price,
            qty=p.quantity,
            legs=[ExitLeg(f.time_ms, f.price, f.quantity, f.reason) for f in exits],
            fees=fees,
            funding=funding,
            pnl=p.pnl,
            where=where,
        )
        if p.exit_time_ms is not None and trade.exit_time_ms != p.exit_time_ms:
            raise DataError(
                f"{where}: last exit fill at {trade.exit_time_ms} ms, position exit at "
                f"{p.exit_time_ms} ms"
            )
        out.append(trade)
    return out, not_closed


async def read_journal_trades(path: Path) -> tuple[list[ClosedTrade], int]:
    """The closed trades of the journal file ``path`` (which must exist: opening creates a
    missing one, so a wrong path is refused first) and the count of positions not closed."""
    if not path.is_file():
        raise DataError(f"journal {path} does not exist")
    async with Journal.open(path) as j:
        positions, fills = await j.positions(), await j.fills()
    return closed_trades_of_journal(positions, fills, str(path))
