"""The live loop's notifications: what each committed journal batch holds, told to the team.

:class:`BarNotifier` is called by the loop's bar trader right after each bar's journal batch
is committed (:attr:`atra.live.trader.BarTrader.committed`), so a message never claims
anything the journal does not hold. It turns the batch into notifications and hands them to a
:class:`~atra.adapters.notify.Notifier` (which queues them and returns; the network is never
awaited here):

- ``signal_taken``: each signal the decision took (side, entry, stop, targets, quantity, p);
- ``order_filled``: each entry fill; ``order_refused``: each order the venue rejected;
- ``position_closed``: each position closed, with its journalled P&L and exit reason;
- ``guard``: each risk guard that refused an entry (name, symbol, detail);
- ``error``: the symbols a cycle could not fetch (and why), and the loop failing
  (:func:`loop_failed`);
- ``daily_summary``: at the first bar of a new UTC day, the day before read back from the
  journal: signals, taken, blocked by what, trades closed / won and their P&L, the realised
  P&L, equity at the day's last mark and its change. The last day announced is kept in the
  journal's ``meta`` table (``notify_day``), so a restart neither repeats nor skips one (days
  missed while stopped get theirs, at most :data:`MAX_CATCH_UP_DAYS`).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Awaitable
from datetime import UTC, date, datetime, timedelta
from typing import Final, TypeVar

from atra.adapters.journal.database import Journal
from atra.adapters.journal.records import JournalBatch
from atra.adapters.notify import Notification, Notifier
from atra.live.loop import LiveLoop
from atra.obs import get_logger

__all__ = ["DAY_KEY", "MAX_CATCH_UP_DAYS", "BarNotifier", "LoopNotifications", "notes_of_batch"]

T = TypeVar("T")

log = get_logger("atra.live.notifications")

DAY_KEY: Final[str] = "notify_day"
MAX_CATCH_UP_DAYS: Final[int] = 7
DAY_MS: Final[int] = 86_400_000
_ENTRY_LEG: Final[str] = "entry"  # atra.live.order_plan.ENTRY (the journal's leg name)


def _side(side: int) -> str:
    return "LONG" if side == 1 else "SHORT"


def _num(value: float | None, digits: int = 6) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}g}"


def _usdt(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:+,.2f} USDT"


def _day_of(time_ms: int) -> date:
    return datetime.fromtimestamp(time_ms / 1000, UTC).date()


def _day_ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


def batch_time_ms(batch: JournalBatch) -> int | None:
    """The bar time a batch is about (its equity mark, its cycle, its symbols' last bar)."""
    if batch.equity is not None:
        return batch.equity.bar_time_ms
    if batch.cycle is not None:
        return batch.cycle.bar_time_ms
    return max(batch.symbol_state.values(), default=None)


def notes_of_batch(batch: JournalBatch) -> list[Notification]:
    """The notifications of one committed batch, in the order above (no daily summary)."""
    t_ms = batch_time_ms(batch) or 0
    notes: list[Notification] = []
    for s in batch.signals:
        if not s.take:
            continue
        p = "" if s.p_take is None else f", p(take) {_num(s.p_take, 3)}"
        notes.append(Notification(
            "signal_taken", f"{_side(s.side)} {s.symbol}: signal taken", s.bar_time_ms,
            (f"entry {_num(s.entry)}, stop {_num(s.sl)}, targets {_num(s.tp1)} / {_num(s.tp2)}",
             f"quantity {_num(s.quantity)}, horizon {s.horizon_bars} bars{p}",
             f"model {s.model_id}, strategy {s.strategy}"),
            {"symbol": s.symbol, "side": s.side, "entry": s.entry, "sl": s.sl, "tp1": s.tp1,
             "tp2": s.tp2, "quantity": s.quantity, "p_take": s.p_take, "model_id": s.model_id},
        ))  # fmt: skip
    for f in batch.fills:
        if f.leg != _ENTRY_LEG:
            continue
        notes.append(Notification(
            "order_filled", f"{f.symbol}: entry filled", f.time_ms,
            (f"{_num(f.quantity)} at {_num(f.price)}, fee {f.fee:.4f} USDT",
             f"order {f.client_order_id}"),
            {"symbol": f.symbol, "price": f.price, "quantity": f.quantity, "fee": f.fee,
             "client_order_id": f.client_order_id},
        ))  # fmt: skip
    for o in batch.orders:
        if o.status != "rejected":
            continue
        notes.append(Notification(
            "order_refused", f"{_side(o.side)} {o.symbol}: {o.kind} order refused",
            o.bar_time_ms, (f"quantity {_num(o.quantity)}, order {o.client_order_id}",),
            {"symbol": o.symbol, "side": o.side, "kind": o.kind, "quantity": o.quantity,
             "client_order_id": o.client_order_id},
        ))  # fmt: skip
    for pos in batch.positions:
        if pos.status != "closed":
            continue
        ret = "" if pos.ret_net is None else f", return {pos.ret_net:+.2%}"
        notes.append(Notification(
            "position_closed",
            f"{_side(pos.side)} {pos.symbol} closed: P&L {_usdt(pos.pnl)}",
            pos.exit_time_ms if pos.exit_time_ms is not None else t_ms,
            (f"entry {_num(pos.entry_price)}, exit {_num(pos.exit_price)} ({pos.reason}){ret}",
             f"quantity {_num(pos.quantity)}, position {pos.position_id}"),
            {"symbol": pos.symbol, "side": pos.side, "pnl": pos.pnl, "ret_net": pos.ret_net,
             "entry_price": pos.entry_price, "exit_price": pos.exit_price,
             "reason": pos.reason, "position_id": pos.position_id},
        ))  # fmt: skip
    for g in batch.guard_events:
        notes.append(Notification(
            "guard", f"Guard {g.guard} refused {g.symbol}", g.time_ms, (g.detail,),
            {"guard": g.guard, "symbol": g.symbol, "detail": g.detail},
        ))  # fmt: skip
    cycle = batch.cycle
    if cycle is not None and cycle.symbols_failed:
        failed = sorted(cycle.symbols_failed.items())
        notes.append(Notification(
            "error", f"{len(failed)} symbol(s) not fetched this cycle ({cycle.status})",
            cycle.bar_time_ms, tuple(f"{sym}: {err}" for sym, err in failed),
            {"status": cycle.status, "symbols_failed": dict(failed),
             "symbols_ok": cycle.symbols_ok},
        ))  # fmt: skip
    return notes


async def daily_summary(journal: Journal, day: date, initial_equity: float) -> Notification:
    """The summary of UTC ``day``, read back from ``journal``."""
    lo = _day_ms(day)
    hi = lo + DAY_MS
    signals = [s for s in await journal.signals() if lo <= s.bar_time_ms < hi]
    closed = [
        p
        for p in await journal.positions(("closed",))
        if p.exit_time_ms is not None and lo <= p.exit_time_ms < hi
    ]
    fills = [f for f in await journal.fills() if lo <= f.time_ms < hi]
    marks = await journal.equity()
    before = [e for e in marks if e.bar_time_ms < lo]
    during = [e for e in marks if lo <= e.bar_time_ms < hi]
    blocked = Counter(s.blocked_by or "unknown" for s in signals if not s.take)
    taken = sum(1 for s in signals if s.take)
    trade_pnl = math.fsum(p.pnl for p in closed if p.pnl is not None)
    won = sum(1 for p in closed if p.pnl is not None and p.pnl > 0)
    realized = math.fsum(f.pnl for f in fills)
    start = before[-1].equity if before else initial_equity
    end = during[-1] if during else (before[-1] if before else None)
    end_equity = end.equity if end is not None else None
    change = None if end_equity is None else end_equity - start
    blocked_text = ", ".join(f"{k} {v}" for k, v in sorted(blocked.items())) or "none"
    lines = (
        f"signals {len(signals)}: taken {taken}, blocked {sum(blocked.values())} ({blocked_text})",
        f"trades closed {len(closed)} (won {won}), their P&L {_usdt(trade_pnl)}",
        f"realised P&L {_usdt(realized)} (fees, exits, funding of the day)",
        f"equity {_num(end_equity, 10)} USDT ({_usdt(change)} on the day), "
        f"open positions {end.open_positions if end is not None else 0}",
    )
    fields = {
        "day": day.isoformat(), "signals": len(signals), "taken": taken, "blocked": dict(blocked),
        "trades_closed": len(closed), "trades_won": won, "trades_pnl": trade_pnl,
        "realized_pnl": realized, "equity": end_equity, "equity_change": change,
        "open_positions": end.open_positions if end is not None else 0,
    }  # fmt: skip
    return Notification("daily_summary", f"Daily summary {day.isoformat()}", lo, lines, fields)


def loop_failed(exc: BaseException, time_ms: int) -> Notification:
    """The ``error`` notification of the loop stopping on ``exc``."""
    text = f"{type(exc).__name__}: {exc}"
    return Notification("error", "The live loop stopped on an error", time_ms, (text,),
                        {"error": text})  # fmt: skip


class BarNotifier:
    """Notifications of the loop's committed batches (see the module docstring)."""

    def __init__(self, notifier: Notifier, journal: Journal, *, initial_equity: float) -> None:
        self.notifier = notifier
        self.journal = journal
        self.initial_equity = initial_equity
        self._day: date | None = None

    async def committed(self, batch: JournalBatch) -> None:
        """Called after ``batch`` is committed; never raises (a notification problem is
        logged, the loop goes on)."""
        try:
            t_ms = batch_time_ms(batch)
            if t_ms is not None and self.notifier.wants("daily_summary"):
                await self._new_day(_day_of(t_ms))
            for note in notes_of_batch(batch):
                self.notifier.notify(note)
        except Exception as exc:  # the loop must not stop for a message
            log.error("notification_error", error=f"{type(exc).__name__}: {exc}")

    async def _new_day(self, day: date) -> None:
        if self._day is None:
            stored = await self.journal.meta_value(DAY_KEY)
            self._day = date.fromisoformat(stored) if stored else None
            if self._day is None:  # a new journal: the first summary is of this day
                self._day = day
                await self.journal.set_meta(DAY_KEY, day.isoformat())
                return
        if day <= self._day:
            return
        first = max(self._day, day - timedelta(days=MAX_CATCH_UP_DAYS))
        if first > self._day:
            log.warning("daily_summaries_skipped", error=f"{self._day}..{first - timedelta(1)}")
        done = first
        while done < day:
            self.notifier.notify(await daily_summary(self.journal, done, self.initial_equity))
            done += timedelta(days=1)
        self._day = day
        await self.journal.set_meta(DAY_KEY, day.isoformat())


class LoopNotifications:
    """A :class:`Notifier` wired to a :class:`~atra.live.loop.LiveLoop` (None: notifications
    off, every method a no-op). :meth:`attach` once the loop exists (it fits ``run_replay``'s
    ``on_start``); :meth:`around` runs the loop with the notifier started, tells of an error
    that stops it, and flushes the queue (``notify.flush_s``) when it ends."""

    def __init__(self, notifier: Notifier | None) -> None:
        self.notifier = notifier
        self.bar: BarNotifier | None = None

    def attach(self, loop: LiveLoop, *_: object) -> None:
        """Notify after each of ``loop``'s committed batches."""
        if self.notifier is None:
            return
        self.bar = BarNotifier(
            self.notifier, loop.journal, initial_equity=loop.settings.initial_equity
        )
        loop.trader.committed.append(self.bar.committed)

    async def around(self, run: Awaitable[T]) -> T:
        """Await ``run`` (the loop) between the notifier's start and its flush."""
        if self.notifier is None:
            return await run
        await self.notifier.start()
        try:
            return await run
        except Exception as exc:
            self.notifier.notify(loop_failed(exc, int(time.time() * 1000)))
            raise
        finally:
            await self.notifier.aclose()
