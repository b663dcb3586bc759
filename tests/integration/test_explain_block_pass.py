"""Why did the model block BTCUSDT but pass ETHUSDT at one bar? Answered on the shared data.

The commands a user runs, in-process: ``atra data import`` of the BTCUSDT / ETHUSDT perpetual
and spot files, ``atra train --market perp`` on 2022, ``atra signals --export`` over the second
half of 2023 to find a bar where both symbols signal and the model blocks BTCUSDT but passes
ETHUSDT, then ``atra live --replay --model`` over that day and ``atra explain`` of both
symbols at that bar. The live loop must decide as research did (p(take) equal), journal
BTCUSDT blocked by ``meta_model`` and ETHUSDT taken, and ``atra explain`` must print the
journal's p(take), the threshold, the model id and the top reasons.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from atra.adapters.journal.database import Journal
from atra.adapters.journal.records import SignalRecord
from atra.cli import app, main
from atra.core.decision import BLOCKED_META
from atra.obs import reset_logging

pytestmark = [pytest.mark.shared_data]

SYMBOLS = ("BTCUSDT", "ETHUSDT")
FILES = tuple(
    f"{s}_{kind}.parquet" for s in SYMBOLS for kind in ("perp_1h", "perp_funding", "spot_1h")
)
TRAIN = ("2022-01-01", "2023-01-01")
SCAN = ("2023-07-01", "2024-01-01")
DAY_MS = 86_400_000


@dataclass(frozen=True)
class Case:
    root: Path
    model_id: str
    bar_ms: int
    research: dict[str, pd.Series]
    """The research path's row (``atra signals --export``) of each symbol at the bar."""
    journal: Path


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """``atra live`` configures logging for the process: undo it for the tests that follow."""
    level = logging.getLogger().level
    yield
    reset_logging()
    logging.getLogger().setLevel(level)


def _run(*args: str) -> None:
    code = main(list(args))
    assert code == 0, f"atra {' '.join(args)} exited {code}"


def _iso(ms: int) -> str:
    return pd.Timestamp(ms, unit="ms", tz="UTC").strftime("%Y-%m-%dT%H:%M")


def _journal_signals(path: Path, bar_ms: int) -> dict[str, SignalRecord]:
    async def read() -> list[SignalRecord]:
        async with Journal.open(path) as journal:
            return await journal.signals()

    return {s.symbol: s for s in asyncio.run(read()) if s.bar_time_ms == bar_ms}


@pytest.fixture(scope="module")
def case(shared_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Case]:
    root = tmp_path_factory.mktemp("explain")
    saved_cwd, saved_env = Path.cwd(), dict(os.environ)
    os.chdir(root)  # the default config's relative paths (kill-switch file, journal) land here
    for name in list(os.environ):
        if name.upper().startswith("ATRA__") or name == "ATRA_DATA_DIR":
            del os.environ[name]
    try:
        _run("data", "import", *(str(shared_data_dir / f) for f in FILES), "--data-dir", "store")
        where = ["--data-dir", "store", "--market", "perp", "--symbols", ",".join(SYMBOLS)]
        _run("train", *where, "--start", TRAIN[0], "--end", TRAIN[1], "--out", "models")
        (model,) = (root / "models").iterdir()
        _run("signals", *where, "--start", SCAN[0], "--end", SCAN[1], "--model", str(model),
             "--export", "signals.csv")  # fmt: skip
        sig = pd.read_csv(root / "signals.csv")
        by_bar = sig.pivot_table(index="time_ms", columns="symbol", values="take", aggfunc="first")
        both = by_bar.dropna()
        hits = both[(both["BTCUSDT"] == False) & (both["ETHUSDT"] == True)]  # noqa: E712
        assert len(hits), (
            f"model {model.name}: no bar of {SCAN[0]}..{SCAN[1]} where both signal and it "
            f"blocks BTCUSDT but takes ETHUSDT ({len(both)} bars where both signal)"
        )
        bar_ms = int(hits.index[0])
        research = {s: sig[(sig["time_ms"] == bar_ms) & (sig["symbol"] == s)].iloc[0]
                    for s in SYMBOLS}  # fmt: skip
        day = bar_ms - bar_ms % DAY_MS
        _run("live", "--replay", "--model", str(model), "--from", _iso(day), "--to",
             _iso(day + DAY_MS), "--speed", "max", "--data", str(shared_data_dir), "--symbols",
             ",".join(SYMBOLS), "--journal", "j.sqlite", "--no-metrics")  # fmt: skip
        yield Case(root, model.name, bar_ms, research, root / "j.sqlite")
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)


def test_the_replay_blocks_btc_by_the_model_and_takes_eth_at_one_bar(case: Case) -> None:
    journal = _journal_signals(case.journal, case.bar_ms)
    assert set(journal) == set(SYMBOLS)  # both signal at the bar
    btc, eth = journal["BTCUSDT"], journal["ETHUSDT"]
    assert btc.side == eth.side
    assert not btc.take
    assert btc.blocked_by == BLOCKED_META
    assert btc.quantity == 0.0
    assert eth.take
    assert eth.blocked_by is None
    assert eth.quantity > 0.0
    assert btc.threshold == eth.threshold
    assert btc.p_take is not None
    assert eth.p_take is not None
    assert btc.threshold is not None
    assert btc.p_take < btc.threshold <= eth.p_take
    for record in (btc, eth):
        assert record.model_id == case.model_id
        assert len(record.reasons) == 3
        # live decided as research did on the same bar
        row = case.research[record.symbol]
        assert record.p_take == pytest.approx(float(row["p_take"]), abs=1e-12)
        assert record.threshold == pytest.approx(float(row["threshold"]), abs=0.0)


_HEAD = re.compile(r"^(\w+) (\S+) \[(\w+)\] (long|short) @ (\S+): (TAKEN|BLOCKED by (\w+))$")
_PROB = re.compile(r"^  p\(take\) (\d\.\d{4})  threshold (\d\.\d{4})  model (\w+)  qty (\S+)$")
_REASON = re.compile(r"^    (\w+)=(\S+) \(([+-]\d+\.\d{3})\)$")


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_explain_prints_the_journalled_decision(case: Case, symbol: str) -> None:
    record = _journal_signals(case.journal, case.bar_ms)[symbol]
    result = CliRunner().invoke(
        app, ["explain", symbol, _iso(case.bar_ms), "--journal", str(case.journal)]
    )
    assert result.exit_code == 0, result.output
    lines = result.output.rstrip("\n").splitlines()
    head = _HEAD.match(lines[0])
    assert head is not None, lines[0]
    assert head.group(1) == symbol
    assert head.group(2) == pd.Timestamp(case.bar_ms, unit="ms", tz="UTC").strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    assert head.group(4) == ("long" if record.side > 0 else "short")
    if symbol == "BTCUSDT":
        assert head.group(6) == f"BLOCKED by {BLOCKED_META}"
    else:
        assert head.group(6) == "TAKEN"
    prob = _PROB.match(lines[1])
    assert prob is not None, lines[1]
    assert record.p_take is not None
    assert record.threshold is not None
    assert prob.group(1) == f"{record.p_take:.4f}"  # the journal's p(take), as printed
    assert float(prob.group(1)) == pytest.approx(record.p_take, abs=5e-5)
    assert prob.group(2) == f"{record.threshold:.4f}"
    assert prob.group(3) == case.model_id
    assert lines[3] == "  reasons (feature=value (log-odds contribution)):"
    reasons = [_REASON.match(line) for line in lines[4:]]
    assert len(reasons) == len(record.reasons) == 3
    assert all(r is not None for r in reasons), lines[4:]
    assert [line.strip() for line in lines[4:]] == list(record.reasons)
