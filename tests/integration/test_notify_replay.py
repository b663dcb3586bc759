"""Notifications from a replay: the live loop against the fake exchange, with a local
recording server acting as the Telegram Bot API and as a JSON webhook.

Every message is derived from a committed journal batch, so the test compares what arrived
with what the journal holds: one message per taken signal, one per closed position with its
P&L, one per guard refusal, and a daily summary whose figures are the journal's. A server that
answers after 5 s never slows the loop: the replay ends with messages still queued.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from pathlib import Path

import pytest

from atra.adapters.journal.database import Journal
from atra.adapters.journal.records import FillRecord, PositionRecord, SignalRecord
from atra.adapters.notify import Notifier, TelegramDestination, WebhookDestination
from atra.core.exits.api import ExitSpec
from atra.core.signals.spec import SignalSpec
from atra.core.types import Timeframe
from atra.live.guards import GuardLimits, RiskGuards
from atra.live.loop import LoopSettings, StrategyDecider
from atra.live.notifications import DAY_KEY, LoopNotifications
from atra.live.replay import ReplayReport, run_replay
from atra.obs import Metrics
from helpers_live import STEP, T0, synthetic
from helpers_logging import quiet_structlog
from helpers_notify import TOKEN, Recorder, recording_server

TF = Timeframe.H1
SPEC = SignalSpec(ema_fast=3, ema_slow=8, atr_n=5, horizon_bars=6)
CANDLES = {s: synthetic(k + 1) for k, s in enumerate(("AAAUSDT", "BBBUSDT", "CCCUSDT"))}
CYCLES = 48  # 2024-01-01 00:00 .. 2024-01-02 23:00: one daily summary, at 01-02 00:00
DAY1 = (T0, T0 + 24 * STEP)


@dataclass
class Run:
    report: ReplayReport
    telegram: list[dict[str, object]]
    webhook: list[dict[str, object]]
    signals: list[SignalRecord]
    positions: list[PositionRecord]
    fills: list[FillRecord]
    guards: int
    day_key: str | None
    pending_at_end: int
    metrics: Metrics


def replay(tmp: Path, delay_s: float = 0.0) -> Run:
    settings = LoopSettings(
        tuple(CANDLES), TF, window_bars=40, bar_close_delay_s=0.0,
        start_ms=T0, stop_ms=T0 + CYCLES * STEP,
    )  # fmt: skip
    metrics = Metrics()

    async def go() -> Run:
        async with recording_server(Recorder(delay_s=delay_s)) as rec:
            notifier = Notifier(
                [TelegramDestination(TOKEN, "-1001", rec.url),
                 WebhookDestination(rec.url + "/hook", "json")],
                rate_per_minute=60_000.0, burst=1000, queue_size=10_000, metrics=metrics,
                flush_s=10.0 if not delay_s else 0.2,
            )  # fmt: skip
            notes = LoopNotifications(notifier)
            pending: list[int] = []

            async def loop_then_look() -> ReplayReport:
                report = await run_replay(
                    settings, CANDLES, tmp / "journal.sqlite",
                    decider=StrategyDecider(SPEC, TF), exit_spec=ExitSpec(),
                    guards=RiskGuards(GuardLimits(max_open_positions=1)),
                    metrics=metrics, on_start=notes.attach,
                )  # fmt: skip
                pending.append(notifier.pending)  # the loop is done; are sends still waiting?
                return report

            report = await notes.around(loop_then_look())
            async with Journal.open(tmp / "journal.sqlite") as j:
                signals, positions = await j.signals(), await j.positions()
                fills, guards = await j.fills(), len(await j.guard_events())
                day_key = await j.meta_value(DAY_KEY)
            tg = rec.bodies(lambda p: p == f"/bot{TOKEN}/sendMessage")
            hook = rec.bodies(lambda p: p == "/hook")
            return Run(report, tg, hook, signals, positions, fills, guards, day_key,
                       pending[0], metrics)  # fmt: skip

    with quiet_structlog():
        return asyncio.run(go())


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return replay(tmp_path_factory.mktemp("notify"))


def of(run: Run, event: str) -> list[dict[str, object]]:
    return [b for b in run.webhook if b["event"] == event]


def test_one_message_per_taken_signal(run: Run) -> None:
    assert run.report.cycles == CYCLES
    taken = [s for s in run.signals if s.take]
    assert len(taken) >= 3, "the replay must take signals for this test to mean anything"
    got = of(run, "signal_taken")
    assert len(got) == len(taken)
    assert [(b["fields"]["symbol"], b["fields"]["entry"]) for b in got] == [  # type: ignore[index]
        (s.symbol, s.entry) for s in taken
    ]
    tg_taken = [b for b in run.telegram if "signal taken" in str(b["text"])]
    assert len(tg_taken) == len(taken)


def test_each_closed_position_with_its_pnl(run: Run) -> None:
    closed = [p for p in run.positions if p.status == "closed"]
    assert len(closed) >= 2
    got = {b["fields"]["position_id"]: b["fields"] for b in of(run, "position_closed")}  # type: ignore[index]
    assert set(got) == {p.position_id for p in closed}
    for p in closed:
        assert got[p.position_id]["pnl"] == p.pnl  # type: ignore[index]
        text = f"closed: P&amp;L {p.pnl:+,.2f} USDT"  # HTML-escaped for Telegram
        assert any(text in str(b["text"]) for b in run.telegram), text


def test_guard_refusals_and_the_daily_summary(run: Run) -> None:
    assert run.guards >= 1  # max_open_positions = 1 refuses some entries
    assert len(of(run, "guard")) == run.guards
    (summary,) = of(run, "daily_summary")
    f = summary["fields"]
    lo, hi = DAY1
    day_signals = [s for s in run.signals if lo <= s.bar_time_ms < hi]
    day_closed = [p for p in run.positions if p.status == "closed" and lo <= p.exit_time_ms < hi]  # type: ignore[operator]
    assert f["day"] == "2024-01-01"  # type: ignore[index]
    assert f["signals"] == len(day_signals)  # type: ignore[index]
    assert f["taken"] == sum(s.take for s in day_signals)  # type: ignore[index]
    assert f["blocked"] == {"max_positions": sum(  # type: ignore[index]
        1 for s in day_signals if s.blocked_by == "max_positions")}  # fmt: skip
    assert f["trades_closed"] == len(day_closed)  # type: ignore[index]
    assert math.isclose(f["trades_pnl"], math.fsum(p.pnl or 0.0 for p in day_closed))  # type: ignore[index]
    realized = math.fsum(x.pnl for x in run.fills if lo <= x.time_ms < hi)
    assert math.isclose(f["realized_pnl"], realized, abs_tol=1e-9)  # type: ignore[index]
    assert run.day_key == "2024-01-02"
    assert sum(1 for b in run.telegram if "Daily summary 2024-01-01" in str(b["text"])) == 1


def test_every_message_is_counted_as_sent(run: Run) -> None:
    assert run.pending_at_end >= 0
    sent = {}
    for family in run.metrics.registry.collect():
        for s in family.samples:
            if s.name == "atra_notifications_total":
                assert s.labels["outcome"] == "sent", s.labels
                sent[s.labels["destination"]] = sent.get(s.labels["destination"], 0) + s.value
    assert sent == {"telegram": len(run.telegram), "webhook": len(run.webhook)}


def test_a_server_answering_after_5_s_never_slows_the_loop(tmp_path: Path) -> None:
    slow = replay(tmp_path, delay_s=5.0)
    assert slow.report.cycles == CYCLES
    # the loop finished while the first message of each destination was still in flight
    # and every other one queued behind it
    taken = sum(s.take for s in slow.signals)
    assert slow.pending_at_end >= 2 * taken  # a message per taken signal, per destination
    assert len(slow.telegram) == 1  # one request each, answered late
    assert len(slow.webhook) == 1
    dropped = sum(
        s.value
        for family in slow.metrics.registry.collect()
        for s in family.samples
        if s.name == "atra_notifications_total" and s.labels["outcome"] == "dropped"
    )
    assert dropped == slow.pending_at_end  # unsent after the flush window: counted, not lost
