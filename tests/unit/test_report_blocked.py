"""Signals taken and blocked, by what: counted from a real backtest's events into the run
record's ``metrics.json`` and shown by the report page and the terminal summary."""

from __future__ import annotations

import html
import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from atra.core.backtest.engine import BacktestConfig, BacktestResult, run_backtest
from atra.core.risk import GUARDS
from atra.core.sizing import SizingConfig
from atra.core.types import Timeframe
from atra.errors import DataError
from atra.research.report.page import SECTIONS, render_html, terminal_summary
from atra.research.runrecord.blocked import BLOCKERS, BlockedCounts, blocked_counts
from atra.research.runrecord.directory import read_run, write_run
from atra.research.runrecord.legs import RunLeg, leg_from_backtest
from atra.research.runrecord.record import LoadedRun
from helpers_runs import bar_times, one_line_error

TF = Timeframe.H1
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
N_BARS = 600
N_EVENTS = 240
# tight limits so that every guard the backtest models blocks something
CONFIG = BacktestConfig(
    sizing=SizingConfig(risk_fraction=0.02, max_leverage=1.0),
    max_positions=2,
    max_per_symbol=1,
    max_gross_leverage=1.2,
    max_daily_loss=0.02,
)
BACKTEST_GUARDS = tuple(g for g in GUARDS if g != "kill_switch")  # no kill file in the past


def _walk(seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, N_BARS)))
    open_ = np.concatenate(([100.0], close[:-1]))
    return pd.DataFrame(
        {
            "open_time": bar_times(N_BARS, TF),
            "open": open_,
            "high": np.maximum(open_, close) * 1.004,
            "low": np.minimum(open_, close) * 0.996,
            "close": close,
            "volume": np.ones(N_BARS),
        }
    )


def _events() -> pd.DataFrame:
    """Signals on three symbols, some overlapping, with a model's p(take) and its decision."""
    rng = np.random.default_rng(3)
    ev = pd.DataFrame(
        {
            "symbol": rng.choice(SYMBOLS, N_EVENTS),
            "t": np.sort(rng.integers(5, N_BARS - 10, N_EVENTS)),
            "side": rng.choice([1, -1], N_EVENTS),
            "sl_dist": rng.choice([1.0, 6.0], N_EVENTS),
            "tp1_dist": 1.5,
            "tp2_dist": 3.0,
            "horizon_bars": 12,
        }
    )
    ev["p_take"] = rng.uniform(0.3, 0.8, N_EVENTS)
    ev["threshold"] = 0.55
    ev["take"] = ev["p_take"] >= ev["threshold"]
    return ev


@pytest.fixture(scope="module")
def backtests() -> tuple[pd.DataFrame, dict[str, BacktestResult]]:
    candles = {s: _walk(i + 1) for i, s in enumerate(SYMBOLS)}
    events = _events()
    return events, {
        "primary": run_backtest(candles, events, replace(CONFIG, decision_column=None)),
        "filtered": run_backtest(candles, events, replace(CONFIG, decision_column="take")),
    }


@pytest.fixture(scope="module")
def run(
    backtests: tuple[pd.DataFrame, dict[str, BacktestResult]],
    tmp_path_factory: pytest.TempPathFactory,
) -> LoadedRun:
    legs = [leg_from_backtest(name, bt) for name, bt in backtests[1].items()]
    root = tmp_path_factory.mktemp("runs")
    path = write_run(root, legs=legs, timeframe=TF, config={"k": 1}, data_hash="0" * 64,
                     seed=1, data_label="synthetic")  # fmt: skip
    return read_run(path)


def _expected(events: pd.DataFrame, bt: BacktestResult, leg: str) -> dict[str, int]:
    """The leg's counts straight from the events: the guards' names the backtest gave, and
    (filtered leg) the model's refusals from the input decision column."""
    by = bt.events["blocked_by"]
    out = {name: int((by == name).sum()) for name in BLOCKERS}
    out["meta_model"] = int((~events["take"]).sum()) if leg == "filtered" else 0
    out["taken"] = int(by.isna().sum())
    return out


def _section_rows(page: str, key: str) -> dict[str, list[str]]:
    body = re.search(rf'<section id="{key}">(.*?)</section>', page, re.S)
    assert body is not None
    rows = re.findall(r"<tr>(.*?)</tr>", body.group(1), re.S)
    cells = [[html.unescape(c) for c in re.findall(r"<t[dh]>(.*?)</t[dh]>", r)] for r in rows]
    return {row[0]: row[1:] for row in cells}


def test_the_counts_are_the_backtests_decisions(
    backtests: tuple[pd.DataFrame, dict[str, BacktestResult]], run: LoadedRun
) -> None:
    events, bts = backtests
    raw = json.loads((run.path / "metrics.json").read_text())
    for leg, bt in bts.items():
        want = _expected(events, bt, leg)
        got = raw["legs"][leg]["blocked_by"]
        assert got["signals"] == N_EVENTS
        assert got["taken"] == want["taken"] == len(bt.trades)
        assert list(got["blocked"]) == list(BLOCKERS)  # every blocker listed, in order
        assert got["blocked"] == {name: want[name] for name in BLOCKERS}
        assert got["taken"] + sum(got["blocked"].values()) == N_EVENTS
        for guard in BACKTEST_GUARDS:  # the scenario exercises every guard
            assert got["blocked"][guard] > 0, (leg, guard)
    assert raw["legs"]["primary"]["blocked_by"]["blocked"]["meta_model"] == 0
    assert raw["legs"]["filtered"]["blocked_by"]["blocked"]["meta_model"] > 0
    assert run.blocked["filtered"] == BlockedCounts.from_json(
        raw["legs"]["filtered"]["blocked_by"], "x"
    )


def test_the_report_page_shows_the_counts(
    backtests: tuple[pd.DataFrame, dict[str, BacktestResult]], run: LoadedRun
) -> None:
    events, bts = backtests
    page = render_html(run)
    assert ("blocked", "Signals taken and blocked, by what") in SECTIONS
    rows = _section_rows(page, "blocked")
    assert rows["Blocked by"] == ["Meaning", "primary", "filtered"]
    assert rows["signals"][1:] == [f"{N_EVENTS:,}"] * 2
    for i, (leg, bt) in enumerate(bts.items(), start=1):
        want = _expected(events, bt, leg)
        assert rows["taken"][i] == f"{want['taken']:,} ({want['taken'] / N_EVENTS:.1%})"
        for name in BLOCKERS:
            assert rows[name][i] == f"{want[name]:,} ({want[name] / N_EVENTS:.1%})", (leg, name)
    assert rows["meta_model"][0] == "p(take) below the model's threshold"
    assert "risk.max_gross_leverage" in rows["leverage"][0]


def test_the_terminal_summary_names_what_blocked(
    backtests: tuple[pd.DataFrame, dict[str, BacktestResult]], run: LoadedRun
) -> None:
    events, bts = backtests
    console = Console(width=400, record=True)
    console.print(terminal_summary(run))
    text = console.export_text()
    want = _expected(events, bts["filtered"], "filtered")
    line = next(x.strip() for x in text.splitlines() if x.strip().startswith("filtered:"))
    assert line.startswith(f"filtered: {N_EVENTS:,} signals, {want['taken']:,} taken; blocked by")
    assert f"meta_model {want['meta_model']:,}" in line
    assert "kill_switch" not in line  # a blocker that blocked nothing is left out


def test_a_refusal_without_a_model_probability_is_not_blamed_on_the_model() -> None:
    events = pd.DataFrame(
        {"blocked_by": [None, "decision_false", "decision_false", "leverage", "decision_false"],
         "p_take": [0.7, 0.2, 0.9, 0.6, np.nan], "threshold": 0.55}
    )  # fmt: skip
    counts = blocked_counts(events)
    assert (counts.signals, counts.taken) == (5, 1)
    assert counts.blocked["meta_model"] == 1  # p(take) 0.2 < 0.55 only
    assert counts.blocked["decision_false"] == 2  # above the threshold, or no p(take)
    assert counts.blocked["leverage"] == 1
    assert list(counts.blocked)[: len(BLOCKERS)] == list(BLOCKERS)
    bare = blocked_counts(events.drop(columns=["p_take", "threshold"]))
    assert bare.blocked["meta_model"] == 0
    assert bare.blocked["decision_false"] == 3


def test_events_without_blocked_by_are_refused() -> None:
    with pytest.raises(DataError) as exc:
        blocked_counts(pd.DataFrame({"symbol": ["BTCUSDT"]}), "leg filtered: events")
    one_line_error(exc, "leg filtered: events", "no blocked_by column")


def test_a_run_without_counts_says_so_and_keeps_its_identity(
    run: LoadedRun, tmp_path: Path
) -> None:
    legs = [
        RunLeg(name, run.equity.set_index("open_time_ms")[name].rename(None), run.trades[name])
        for name in run.leg_names
    ]
    args = dict(timeframe=TF, config={"k": 1}, data_hash="0" * 64, seed=1, data_label="synthetic")
    bare = read_run(write_run(tmp_path, legs=legs, **args))  # type: ignore[arg-type]
    assert bare.blocked == {}
    assert bare.metrics["legs"]["primary"]["blocked_by"] is None
    assert bare.record.run_id != run.record.run_id  # the counts are part of the run's identity
    page = render_html(bare)
    assert "This run did not record what became of its signals." in page
    counted = [replace(leg, blocked=run.blocked[leg.name]) for leg in legs]
    again = write_run(tmp_path, legs=counted, **args)  # type: ignore[arg-type]
    assert again.name == run.record.run_id


@pytest.mark.parametrize(
    ("edit", "fragments"),
    [
        (lambda b: b.update(taken=b["taken"] + 1), ("legs.filtered.blocked_by", "!= signals")),
        (lambda b: b["blocked"].update(leverage=-1), ("integers >= 0",)),
        (lambda b: b.pop("signals"), ("expected an object with signals, taken and blocked",)),
        (lambda b: b.update(blocked=[1, 2]), ("blocked must be an object",)),
    ],
)
def test_a_damaged_count_is_a_one_line_error_on_reading(
    run: LoadedRun, tmp_path: Path, edit: object, fragments: tuple[str, ...]
) -> None:
    import shutil

    copy = tmp_path / run.path.name
    shutil.copytree(run.path, copy)
    path = copy / "metrics.json"
    raw = json.loads(path.read_text())
    edit(raw["legs"]["filtered"]["blocked_by"])  # type: ignore[operator]
    path.write_text(json.dumps(raw))
    with pytest.raises(DataError) as exc:
        read_run(copy)
    one_line_error(exc, str(path), *fragments)
