"""Observability of the live loop end to end: a short replay with a meta model, JSON logs in
memory and every span in an in-memory exporter.

(a) each cycle is one trace: the cycle span is the parent of the per-symbol fetch spans, the
decision span (features + meta prediction) and the journal write span, and every log line of
the cycle carries that trace id; (b) every taken or blocked signal is one log event with the
probability, threshold and reasons the journal holds, and ``atra explain`` prints the same;
(c) the configured exchange credentials appear in no log line, journal row or written file.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import atra.cli.explain  # noqa: F401  (registers `atra explain`)
from atra import obs
from atra.adapters.journal.database import Journal
from atra.adapters.journal.records import SignalRecord
from atra.cli import main
from atra.config import load_config
from atra.core.decision import EVENT_FEATURES, ModelHandle
from atra.core.exits.api import ExitSpec
from atra.core.meta import MetaModel, MetaParams
from atra.core.signals.spec import SignalSpec
from atra.core.types import Timeframe
from atra.live.guards import GuardLimits, RiskGuards
from atra.live.loop import LiveLoop, LoopSettings, StrategyDecider
from atra.live.replay import ReplayReport, ReplaySetup, run_replay
from atra.sim.exchange import FakeExchange
from helpers_live import synthetic as _walk

TF = Timeframe.H1
STEP = TF.ms
T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
SPEC = SignalSpec(ema_fast=3, ema_slow=8, atr_n=5, horizon_bars=6)
SYMBOLS = ("AAAUSDT", "BBBUSDT", "CCCUSDT")
CYCLES = 48
API_KEY = "obsTestKey7QhX2mZ9vR4tLw8YpN3sKd6FjB1cUe5aGi0oHy"
API_SECRET = "obsTestSecret4Vb8Nm2Lk6Jh0Gf3Ds7Aq1Zw9Xe5Cr2Tu8Yi"
MODEL_ID = "meta-obs-1"
LOOP_SPANS = {"live.cycle", "live.fetch", "live.decide", "live.journal_write"}
# the fake exchange is the other side of the wire: its server-side lines are not the loop's
SERVER_LOGGERS = ("aiohttp", "atra.sim.exchange")


def synthetic(seed: int, n: int = 200) -> pd.DataFrame:
    return _walk(seed, n, T0 - 60 * STEP)


def meta_model() -> ModelHandle:
    rng = np.random.default_rng(0)
    names = ["ret_1", "rsi_14", *EVENT_FEATURES]
    X = pd.DataFrame({k: rng.normal(size=400) for k in names})
    y = (X["ret_1"] + rng.normal(size=400) > 0).astype(int)
    model = MetaModel(MetaParams(n_estimators=5, min_child_samples=5)).fit(X, y)
    return ModelHandle(model, MODEL_ID)


@dataclass(frozen=True)
class Run:
    root: Path
    journal: Path
    text: str
    lines: list[dict[str, Any]]
    spans: list[ReadableSpan]
    signals: list[SignalRecord]
    report: ReplayReport


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    root = tmp_path_factory.mktemp("obs")
    journal = root / "journal.sqlite"
    level = logging.getLogger().level
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("ATRA__EXCHANGE__API_KEY", API_KEY)
        mp.setenv("ATRA__EXCHANGE__API_SECRET", API_SECRET)
        cfg = load_config()
        buf = io.StringIO()
        obs.configure_logging_from(cfg, stream=buf)  # auto on a non-TTY stream: JSON lines
        exporter = InMemorySpanExporter()
        obs.configure_tracing("atra-obs-test", exporter=exporter)
        log = obs.get_logger("atra.exchange")

        def on_start(loop: LiveLoop, fake: FakeExchange) -> None:
            # what a signed request failing would log, credentials and all
            log.warning(
                "request_failed",
                endpoint=f"{fake.url}/fapi/v1/order?apiKey={API_KEY}&signature=abc123",
                error=f"401 with X-MBX-APIKEY: {API_KEY}, secret {API_SECRET}",
                api_secret=API_SECRET,
            )

        settings = LoopSettings(
            SYMBOLS,
            TF,
            window_bars=40,
            start_ms=T0,
            stop_ms=T0 + CYCLES * STEP,
            bar_close_delay_s=0.0,
            symbol_timeout_s=5.0,
            cycle_deadline_s=10.0,
        )
        try:
            report = asyncio.run(
                run_replay(
                    settings,
                    {s: synthetic(k + 1) for k, s in enumerate(SYMBOLS)},
                    journal,
                    decider=StrategyDecider(SPEC, TF, model=meta_model()),
                    exit_spec=ExitSpec(),
                    guards=RiskGuards(GuardLimits(max_open_positions=10, max_daily_loss=1.0)),
                    setup=ReplaySetup(weight_limit=None),
                    on_start=on_start,
                )
            )
        finally:
            obs.shutdown_tracing()
            obs.reset_logging()
            logging.getLogger().setLevel(level)

    async def read() -> list[SignalRecord]:
        async with Journal.open(journal) as j:
            return await j.signals()

    text = buf.getvalue()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    return Run(
        root, journal, text, lines, list(exporter.get_finished_spans()), asyncio.run(read()), report
    )


def _children(spans: list[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    sid = parent.context.span_id
    return [s for s in spans if s.parent is not None and s.parent.span_id == sid]


def _hex(trace_id: int) -> str:
    return format(trace_id, "032x")


def _cycle_lines(run: Run) -> list[dict[str, Any]]:
    """The loop's lines from its first cycle to its last (recovery and stop excluded)."""
    events = [line["event"] for line in run.lines]
    lo = events.index("recovery_completed") + 1
    hi = events.index("loop_stopped")
    return [line for line in run.lines[lo:hi] if not line["logger"].startswith(SERVER_LOGGERS)]


# ---- (a) traces ----------------------------------------------------------------------------


def test_every_cycle_is_one_trace_with_its_child_spans(run: Run) -> None:
    assert run.report.cycles == CYCLES
    cycles = [s for s in run.spans if s.name == "live.cycle"]
    assert len(cycles) == CYCLES
    assert len({c.context.trace_id for c in cycles}) == CYCLES
    by_trace = {c.context.trace_id: c for c in cycles}
    for cycle in cycles:
        assert cycle.parent is None
        kids = _children(run.spans, cycle)
        names = sorted(k.name for k in kids)
        fetched = sorted(
            str((k.attributes or {})["symbol"]) for k in kids if k.name == "live.fetch"
        )
        assert fetched == sorted(SYMBOLS)  # one fetch span per symbol
        assert names.count("live.decide") == 1
        assert names.count("live.journal_write") == 1
        bar = (cycle.attributes or {})["bar_time_ms"]
        for kid in kids:
            assert kid.context.trace_id == cycle.context.trace_id
            assert kid.start_time is not None
            assert cycle.start_time is not None
            assert kid.end_time is not None
            assert cycle.end_time is not None
            assert cycle.start_time <= kid.start_time <= kid.end_time <= cycle.end_time
            assert (kid.attributes or {})["open_time"] == bar
    # nothing outside a cycle: every span's ancestry ends at its trace's cycle span
    by_id = {s.context.span_id: s for s in run.spans}
    for s in run.spans:
        top = s
        while top.parent is not None:
            top = by_id[top.parent.span_id]
        assert top is by_trace[s.context.trace_id]
    assert {s.name for s in run.spans} >= LOOP_SPANS


def test_journal_write_span_counts_the_signals_of_its_bar(run: Run) -> None:
    per_bar: dict[int, int] = {}
    for s in run.signals:
        per_bar[s.bar_time_ms] = per_bar.get(s.bar_time_ms, 0) + 1
    writes = [s for s in run.spans if s.name == "live.journal_write"]
    got = {
        int(str((w.attributes or {})["open_time"])): (w.attributes or {})["signals"] for w in writes
    }
    assert {t: n for t, n in got.items() if n} == per_bar
    assert sum(per_bar.values()) == len(run.signals) > 0


def test_every_log_line_of_a_cycle_carries_its_trace_id(run: Run) -> None:
    cycles = {
        _hex(c.context.trace_id): (c.attributes or {})["bar_time_ms"]
        for c in run.spans
        if c.name == "live.cycle"
    }
    lines = _cycle_lines(run)
    assert len(lines) >= CYCLES  # at least the cycle summaries
    # the HTTP requests of a replay are logged at DEBUG: none in this INFO log
    assert [line["event"] for line in run.lines if line["logger"] == "httpx"] == []
    by_trace: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        assert "trace_id" in line, line
        by_trace.setdefault(line["trace_id"], []).append(line)
    assert set(by_trace) == set(cycles)
    for trace_id, group in by_trace.items():
        done = [g for g in group if g["event"] == "cycle_completed"]
        assert len(done) == 1
        assert done[0]["open_time"] == cycles[trace_id]
        for g in group:
            if g["event"].startswith("signal_"):
                assert g["open_time"] == cycles[trace_id]
    # outside the cycles there is no current span
    first = next(line for line in run.lines if line["event"] == "recovery_completed")
    assert "trace_id" not in first


# ---- (b) decisions in the log and in `atra explain` ------------------------------------------


def _signal_lines(run: Run) -> dict[tuple[str, int], dict[str, Any]]:
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for line in run.lines:
        if line["event"] in ("signal_generated", "signal_blocked"):
            key = (line["symbol"], line["open_time"])
            assert key not in out  # one event per signal
            out[key] = line
    return out


def test_each_signal_is_one_log_event_matching_the_journal(run: Run) -> None:
    lines = _signal_lines(run)
    assert set(lines) == {(s.symbol, s.bar_time_ms) for s in run.signals}
    taken = [s for s in run.signals if s.take]
    blocked = [s for s in run.signals if not s.take]
    assert taken
    assert blocked
    for s in run.signals:
        line = lines[(s.symbol, s.bar_time_ms)]
        assert line["event"] == ("signal_generated" if s.take else "signal_blocked")
        assert s.p_take is not None
        assert s.threshold is not None
        assert line["ml_probability"] == pytest.approx(s.p_take, abs=1e-12)
        assert line["threshold"] == pytest.approx(s.threshold, abs=1e-12)
        assert line["reasons"] == list(s.reasons)
        assert len(line["reasons"]) == 3
        assert line["model_id"] == s.model_id == MODEL_ID
        assert set(line) - {"timestamp", "level", "logger", "event"} <= obs.FIELDS
        if not s.take:
            assert s.blocked_by == "meta_model"
            assert s.p_take < s.threshold


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M")


@pytest.mark.parametrize("take", [True, False], ids=["taken", "blocked"])
@pytest.mark.parametrize("as_ms", [False, True], ids=["iso", "ms"])
def test_explain_prints_what_the_log_said(
    run: Run, capsys: pytest.CaptureFixture[str], take: bool, as_ms: bool
) -> None:
    s = next(s for s in run.signals if s.take == take)
    line = _signal_lines(run)[(s.symbol, s.bar_time_ms)]
    when = str(s.bar_time_ms) if as_ms else _iso(s.bar_time_ms)
    assert main(["explain", s.symbol.lower(), when, "--journal", str(run.journal)]) == 0
    out = capsys.readouterr().out
    verdict = "TAKEN" if take else "BLOCKED by meta_model"
    assert f"{s.symbol} {_iso(s.bar_time_ms)}:00Z [ema_cross]" in out
    assert verdict in out
    assert f"p(take) {line['ml_probability']:.4f}" in out
    assert f"threshold {line['threshold']:.4f}" in out
    assert f"model {line['model_id']}" in out
    for reason in line["reasons"]:
        assert f"    {reason}\n" in out + "\n"


def test_explain_answers_why_one_symbol_passed_and_another_was_blocked(
    run: Run, capsys: pytest.CaptureFixture[str]
) -> None:
    bars: dict[int, dict[bool, SignalRecord]] = {}
    for s in run.signals:
        bars.setdefault(s.bar_time_ms, {})[s.take] = s
    mixed = [b for b in bars.values() if len(b) == 2]
    if not mixed:
        pytest.skip("no bar with one taken and one blocked signal in this replay")
    pair = mixed[0]
    outs = {}
    for take, s in pair.items():
        assert main(["explain", s.symbol, _iso(s.bar_time_ms), "--journal", str(run.journal)]) == 0
        outs[take] = capsys.readouterr().out
    assert "TAKEN" in outs[True]
    assert "BLOCKED" not in outs[True]
    assert "BLOCKED by meta_model" in outs[False]


def test_explain_without_a_meta_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "j.sqlite"
    rec = SignalRecord(
        "ema_cross", "BTCUSDT", T0, -1, 100.0, 101.0, 98.0, 97.0, 6, None, None, True, (),
        "primary", 2.0,
    )  # fmt: skip

    async def write() -> None:
        async with Journal.open(path) as j:
            await j.record_signal(rec)

    asyncio.run(write())
    assert main(["explain", "BTCUSDT", str(T0), "--journal", str(path), "--strategy",
                 "ema_cross"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "short @ 100: TAKEN" in out
    assert "p(take) n/a  threshold n/a  model primary" in out
    assert "reasons: none (no meta model)" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["NOPEUSDT", "2024-01-01T05:00"], "no signal for NOPEUSDT at bar 2024-01-01T05:00:00Z"),
        (["AAAUSDT", "1"], "no signal for AAAUSDT at bar 1970-01-01T00:00:00Z (1 ms)"),
        (["AAAUSDT", "yesterday"], "ConfigError: time 'yesterday'"),
        (["--strategy", "donchian", "AAAUSDT", "1"], "no strategy donchian signal for AAAUSDT"),
    ],
)
def test_explain_unknown_symbol_or_time_is_one_line(
    run: Run, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code = main(["explain", *argv, "--journal", str(run.journal)])
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert message in err
    assert "\n" not in err
    if "ConfigError" not in err:
        assert err.startswith(f"DataError: journal {run.journal}:")


def test_explain_missing_journal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "none.sqlite"
    assert main(["explain", "BTCUSDT", "2024-01-01", "--journal", str(missing)]) != 0
    assert capsys.readouterr().err.strip() == f"DataError: journal {missing}: no such file"
    assert not missing.exists()  # looking never creates a journal
    monkeypatch.chdir(tmp_path)  # the default: live.journal_path of the config
    monkeypatch.delenv("ATRA__LIVE__JOURNAL_PATH", raising=False)
    assert main(["explain", "BTCUSDT", "2024-01-01"]) != 0
    assert "DataError: journal data/journal.sqlite: no such file" in capsys.readouterr().err


# ---- (c) credentials -------------------------------------------------------------------------


def test_credentials_never_reach_logs_journal_or_files(
    run: Run, capsys: pytest.CaptureFixture[str]
) -> None:
    secrets = (API_KEY, API_SECRET)
    failed = [line for line in run.lines if line["event"] == "request_failed"]
    assert len(failed) == 1  # the line that held them was written, masked
    assert failed[0]["api_secret"] == "***"
    assert "apiKey=***" in failed[0]["endpoint"]
    assert "X-MBX-APIKEY: ***" in failed[0]["error"]
    for secret in secrets:
        assert secret not in run.text
    # every row of every table of the journal
    with sqlite3.connect(run.journal) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        assert {"signals", "orders", "cycles", "meta"} <= set(tables)
        rows = 0
        for table in tables:
            for row in db.execute(f"SELECT * FROM {table}"):
                rows += 1
                for secret in secrets:
                    assert secret not in repr(row)
    assert rows > len(run.signals)
    # what the run and `atra explain` wrote: the journal (and WAL), an explain report
    s = run.signals[0]
    assert main(["explain", s.symbol, str(s.bar_time_ms), "--journal", str(run.journal)]) == 0
    report = run.root / "explain.txt"
    report.write_text(capsys.readouterr().out + repr(run.report))
    files = [p for p in run.root.rglob("*") if p.is_file()]
    assert report in files
    assert run.journal in files
    for path in files:
        data = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in data, path
