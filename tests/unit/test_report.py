"""Run reports: every section present with data, the annualisation stated, costs as paid."""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

import atra.cli.report  # noqa: F401  (registers `atra report`)
from atra.cli import main
from atra.core.types import Timeframe
from atra.research.report.figures import monthly_returns
from atra.research.report.page import (
    SECTIONS,
    combined_trades,
    render_html,
    render_report,
    terminal_summary,
)
from atra.research.report.tables import metrics_table
from atra.research.runrecord.directory import read_run, write_run
from atra.research.runrecord.legs import Liquidation, RunLeg
from atra.research.runrecord.record import LoadedRun
from helpers_runs import INITIAL, bar_times, sample_setup, step_equity, trade_row

REASONS = ("SL", "TP1", "TP2", "TIME", "BE")
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")


# --------------------------------------------------------------------------------------------
# a small deterministic backtest (hand-made trades; equity = initial + realised P&L)


def fake_trades(n: int, tf: Timeframe, fee_rate: float = 0.0004, every: int = 1) -> pd.DataFrame:
    rows = []
    for i in range(0, n, every):
        entry_bar = 3 + 11 * i
        side = 1 if i % 3 else -1
        entry = 50.0 + (i % 17)
        rows.append(
            trade_row(
                tf,
                symbol=SYMBOLS[i % 3],
                side=side,
                entry_bar=entry_bar,
                exit_bar=entry_bar + 2 + i % 7,
                entry=entry,
                exit_=entry * (1.0 + side * (((i * 5) % 13) - 5) / 200.0),
                qty=20.0,
                fee_rate=fee_rate,
                funding=0.02 * ((i % 4) - 1),
                reason=REASONS[i % 5],
            )
        )
    return pd.DataFrame(rows)


def buy_hold(n_bars: int, tf: Timeframe) -> pd.Series:
    steps = np.random.default_rng(11).normal(0.0002, 0.01, n_bars - 1)
    eq = INITIAL * np.exp(np.concatenate(([0.0], np.cumsum(steps))))
    return pd.Series(eq, index=bar_times(n_bars, tf))


def make_run(
    root: Path,
    tf: Timeframe = Timeframe.H1,
    *,
    n: int = 200,
    n_bars: int = 2300,
    data_label: str = "synthetic",
    fee_rate: float = 0.0004,
    with_trades: bool = True,
) -> LoadedRun:
    legs = [RunLeg("buy_hold", buy_hold(n_bars, tf), None)]
    if with_trades:
        primary = fake_trades(n, tf, fee_rate)
        filtered = fake_trades(n, tf, fee_rate, every=2)
        legs = [
            RunLeg("primary", step_equity(primary, n_bars, tf), primary),
            RunLeg("filtered", step_equity(filtered, n_bars, tf), filtered),
            *legs,
        ]
    path = write_run(root, legs=legs, timeframe=tf, config={"k": 1}, data_hash="0" * 64,
                     seed=1, data_label=data_label, n_trials=4)  # fmt: skip
    return read_run(path)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> LoadedRun:
    return make_run(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def report_html(run: LoadedRun) -> str:
    return render_report(run).read_text(encoding="utf-8")


# --------------------------------------------------------------------------------------------
# reading the HTML back

_FIGURE_RE = re.compile(
    r'<script type="application/json" class="atra-figure-data" data-target="fig-(\w+)">'
    r"(.*?)</script>",
    re.S,
)
_PLOTLYJS_RE = re.compile(r'<script type="text/javascript" id="plotlyjs">.*?</script>', re.S)


def figures(page: str) -> dict[str, dict[str, Any]]:
    return {key: json.loads(spec) for key, spec in _FIGURE_RE.findall(page)}


def decode(values: Any) -> list[Any]:
    """A plotly JSON array: a list, or ``{"dtype", "bdata"}`` typed-array data."""
    if isinstance(values, dict):
        raw = base64.b64decode(values["bdata"])
        arr = np.frombuffer(raw, dtype=np.dtype(values["dtype"]))
        if "shape" in values:
            shape = [int(s) for s in str(values["shape"]).split(",")]
            arr = arr.reshape(shape)
        return list(arr.tolist())
    return list(values)


def flat(values: list[Any]) -> list[Any]:
    return [v for row in values for v in (row if isinstance(row, list) else [row])]


def prose(page: str) -> str:
    """The page without the inlined plotly.js library."""
    return _PLOTLYJS_RE.sub("", page)


def table_cells(page: str, cls: str) -> list[list[str]]:
    body = re.search(rf'<table class="{cls}">(.*?)</table>', page, re.S)
    assert body is not None, cls
    rows = re.findall(r"<tr>(.*?)</tr>", body.group(1), re.S)
    return [re.findall(r"<t[hd]>(.*?)</t[hd]>", r, re.S) for r in rows]


# --------------------------------------------------------------------------------------------
# the page


def test_report_files(run: LoadedRun, report_html: str) -> None:
    assert (run.path / "report.html").is_file()
    trades = pd.read_csv(run.path / "trades.csv")
    assert trades["leg"].value_counts().to_dict() == {"primary": 200, "filtered": 100}
    assert json.loads((run.path / "metrics.json").read_text()) == run.metrics
    assert report_html.startswith("<!DOCTYPE html>")


def test_every_section_is_present(report_html: str) -> None:
    for key, title in SECTIONS:
        assert f'<section id="{key}"><h2>{html.escape(title)}</h2>' in report_html


def test_report_is_self_contained(report_html: str) -> None:
    assert _PLOTLYJS_RE.search(report_html) is not None
    assert report_html.count('id="plotlyjs"') == 1
    assert "cdn.plot.ly" not in prose(report_html)
    assert not re.search(r'<script[^>]+src="http', report_html)


def test_every_figure_has_data(report_html: str) -> None:
    figs = figures(report_html)
    assert set(figs) == {"equity", "monthly", "pnl", "exits", "costs"}
    for key, fig in figs.items():
        assert f'<div id="fig-{key}" class="atra-figure"' in report_html
        assert fig["data"], key
        for trace in fig["data"]:
            if trace["type"] == "heatmap":
                z = [v for v in flat(decode(trace["z"])) if v is not None and not math.isnan(v)]
                assert z, key
            else:
                axis = "x" if trace["type"] == "histogram" else "y"
                assert len(decode(trace[axis])) > 0, (key, trace.get("name"))


def test_equity_figure_traces_each_leg(run: LoadedRun, report_html: str) -> None:
    traces = figures(report_html)["equity"]["data"]
    names = [t["name"] for t in traces]
    assert names == [
        "primary",
        "primary drawdown",
        "filtered",
        "filtered drawdown",
        "buy_hold",
        "buy_hold drawdown",
    ]
    bh = decode(traces[4]["y"])
    np.testing.assert_allclose(bh, run.equity["buy_hold"].to_numpy())
    dd = np.asarray(decode(traces[5]["y"]))
    assert dd.max() <= 0.0
    eq = run.equity["buy_hold"].to_numpy()
    assert dd.min() == pytest.approx((eq / np.maximum.accumulate(eq) - 1.0).min() * 100.0)


def test_exit_counts_match_the_trades(run: LoadedRun, report_html: str) -> None:
    traces = {t["name"]: t for t in figures(report_html)["exits"]["data"]}
    assert set(traces) == {"primary", "filtered"}
    for leg, trace in traces.items():
        counts = dict(zip(decode(trace["x"]), decode(trace["y"]), strict=True))
        expected = run.trades[leg]["reason"].value_counts().to_dict()
        assert counts == {k: float(v) for k, v in expected.items()}
    assert decode(traces["primary"]["x"]) == ["SL", "TP1", "TP2", "TIME", "BE"]


def test_pnl_histogram_holds_every_trade(run: LoadedRun, report_html: str) -> None:
    traces = {t["name"]: t for t in figures(report_html)["pnl"]["data"]}
    for leg in ("primary", "filtered"):
        np.testing.assert_allclose(decode(traces[leg]["x"]), run.trades[leg]["pnl"].to_numpy())
    assert traces["primary"]["xbins"] == traces["filtered"]["xbins"]


@pytest.mark.parametrize(
    ("tf", "n_bars", "sentence"),
    [
        (Timeframe.H1, 300, "Sharpe annualised x sqrt(8760) (1h bars, 365-day year)"),
        (Timeframe.D1, 300, "Sharpe annualised x sqrt(365) (1d bars, 365-day year)"),
        (Timeframe.H4, 300, "Sharpe annualised x sqrt(2190) (4h bars, 365-day year)"),
    ],
)
def test_annualisation_is_stated_and_never_252(
    tmp_path: Path, tf: Timeframe, n_bars: int, sentence: str
) -> None:
    loaded = make_run(tmp_path, tf, n=20, n_bars=n_bars)
    page = render_html(loaded)
    assert sentence in page
    assert f"sqrt({tf.bars_per_year})" in page
    assert not re.search(r"(?<![\d.])252(?![\d.])", prose(page))
    assert "trading days" not in page


def test_header_tells_the_truth(run: LoadedRun, report_html: str) -> None:
    assert '<span class="badge synthetic">SYNTHETIC</span>' in report_html
    assert "Out-of-sample only, costs included" in report_html
    assert run.record.run_id in report_html
    assert run.record.code_version in report_html
    for digest in run.record.trades_sha256.values():
        assert digest in report_html
    assert "2024-01-01 00:00 UTC to 2024-04-05 19:00 UTC" in report_html  # 2,300 1h bars
    assert "CAGR and Calmar extrapolate" in report_html


def test_real_data_is_labelled_real(tmp_path: Path) -> None:
    page = render_html(make_run(tmp_path, data_label="real", n=20, n_bars=9000))
    assert '<span class="badge real">REAL</span>' in page
    assert "SYNTHETIC" not in prose(page)
    assert "extrapolate" not in page  # more than a year of bars


def test_metrics_table_matches_metrics_json(run: LoadedRun, report_html: str) -> None:
    cells = table_cells(report_html, "data metrics")
    assert cells[0] == ["Metric", "primary", "filtered", "buy_hold"]
    rows = {r[0]: r[1:] for r in cells[1:]}
    legs = run.metrics["legs"]
    for i, leg in enumerate(("primary", "filtered", "buy_hold")):
        assert rows["Sharpe (annualised)"][i] == f"{legs[leg]['returns']['sharpe']:.2f}"
        total = legs[leg]["returns"]["total_return"] * 100.0
        assert rows["Total return"][i] == f"{total:.2f}%"
        assert rows["DSR (4 trials)"][i] == f"{legs[leg]['returns']['dsr']:.2f}"
    fees = run.trades["primary"]["fees"].sum()
    assert rows["Fees paid (quote ccy)"][0] == f"{fees:,.2f}"
    assert rows["Trades"][:2] == ["200", "100"]
    assert rows["Win rate"][2] == "n/a"  # buy-and-hold has no trade list
    expected = {
        "CAGR", "Volatility (annualised)", "Sortino (annualised)", "Calmar", "Max drawdown",
        "Max drawdown duration", "Avg win (quote ccy)", "Avg loss (quote ccy, size)",
        "Profit factor", "Expectancy (quote ccy per trade)",
        "Exposure (share of bars in a position)", "Trades per day",
        "Slippage paid (quote ccy)", "Funding paid (quote ccy; &lt; 0 = received)",
        "Costs per year (% of initial equity)", "PSR (P[true Sharpe &gt; 0])",
    }  # fmt: skip
    assert expected <= set(rows)


def test_costs_above_equity_read_as_hundreds_of_percent(tmp_path: Path) -> None:
    loaded = make_run(tmp_path, n=200, n_bars=2300, fee_rate=0.009)
    per_year = loaded.metrics["legs"]["primary"]["costs"]["per_year_fraction"]
    assert per_year["fees"] > 1.0  # more than the whole initial equity each year
    page = render_html(loaded)
    rows = [r for r in table_cells(page, "data costs")[1:] if r[:2] == ["primary", "fees"]]
    assert rows == [
        [
            "primary",
            "fees",
            f"{loaded.metrics['legs']['primary']['costs']['paid']['fees']:,.2f}",
            f"{loaded.metrics['legs']['primary']['costs']['paid']['fees'] / INITIAL:.2%}",
            f"{per_year['fees'] * 100:.2f}%",
            f"{per_year['fees']:.4f}",
        ]
    ]
    assert float(rows[0][4].rstrip("%")) > 100.0


def test_costs_are_positive_amounts_paid(run: LoadedRun, report_html: str) -> None:
    traces = {t["name"]: t for t in figures(report_html)["costs"]["data"]}
    tr = run.trades["primary"]
    y = decode(traces["primary"]["y"])
    assert decode(traces["primary"]["x"]) == ["fees", "slippage", "funding", "borrow"]
    borrow = tr["borrow"].sum() if "borrow" in tr.columns else 0.0  # no spot shorts here
    paid = [tr["fees"].sum(), tr["slippage"].sum(), tr["funding"].sum(), borrow]
    np.testing.assert_allclose(y, paid)
    assert min(y[:2]) > 0.0


def test_per_symbol_table(run: LoadedRun, report_html: str) -> None:
    cells = table_cells(report_html, "data symbols")
    assert cells[0][:3] == ["Leg", "Symbol", "Trades"]
    primary = {r[1]: r for r in cells[1:] if r[0] == "primary"}
    assert sorted(primary) == sorted(SYMBOLS)
    counts = run.trades["primary"]["symbol"].value_counts()
    for sym in SYMBOLS:
        assert primary[sym][2] == str(counts[sym])
        pnl = run.trades["primary"].loc[run.trades["primary"]["symbol"] == sym, "pnl"].sum()
        assert primary[sym][4] == f"{pnl:,.2f}"


def test_monthly_heat_map(run: LoadedRun, report_html: str) -> None:
    (trace,) = figures(report_html)["monthly"]["data"]
    assert decode(trace["y"]) == [
        "primary 2024",
        "filtered 2024",
        "buy_hold 2024",
    ]
    z = np.array(decode(trace["z"]), dtype=float)
    assert z.shape == (3, 12)
    times = pd.to_datetime(run.equity["open_time_ms"], unit="ms", utc=True)
    eq = pd.Series(run.equity["buy_hold"].to_numpy(), index=times)
    jan_end = eq[eq.index < pd.Timestamp("2024-02-01", tz="UTC")].iloc[-1]
    assert z[2, 0] == pytest.approx((jan_end / eq.iloc[0] - 1.0) * 100.0)
    assert np.isnan(z[:, 4:]).all()  # no data after April


def test_monthly_returns_compound_to_the_total() -> None:
    idx = pd.date_range("2023-11-20", periods=120, freq="D", tz="UTC")
    eq = pd.Series(np.linspace(100.0, 160.0, 120), index=idx)
    table = monthly_returns(eq)
    assert list(table.index) == [2023, 2024]
    values = table.to_numpy()[~np.isnan(table.to_numpy())]
    assert np.prod(1.0 + values) == pytest.approx(1.6)
    nov = eq[eq.index.month == 11].iloc[-1] / 100.0 - 1.0
    assert table.loc[2023, 11] == pytest.approx(nov)


def test_run_without_trades(tmp_path: Path) -> None:
    loaded = make_run(tmp_path, with_trades=False, n_bars=100)
    out = render_report(loaded)
    page = out.read_text()
    assert page.count("No leg of this run has a trade list.") == 3
    assert figures(page)["pnl"]["data"] == []
    assert combined_trades(loaded).empty
    _, rows = metrics_table(loaded)
    assert dict((r[0], r[1]) for r in rows)["Trades"] == "n/a"


def test_render_to_another_place(run: LoadedRun, tmp_path: Path) -> None:
    out = render_report(run, tmp_path / "site" / "r.html")
    assert out == tmp_path / "site" / "r.html"
    assert (tmp_path / "site" / "trades.csv").is_file()
    assert json.loads((tmp_path / "site" / "metrics.json").read_text()) == run.metrics


def test_infinite_and_missing_values_are_spelled_out(run: LoadedRun, tmp_path: Path) -> None:
    metrics = json.loads(json.dumps(run.metrics))
    metrics["legs"]["primary"]["trades"]["profit_factor"] = "inf"
    metrics["legs"]["primary"]["returns"]["calmar"] = "-inf"
    metrics["legs"]["primary"]["returns"]["sortino"] = None
    edited = LoadedRun(run.path, run.record, metrics, run.equity, run.trades, None)
    rows = {r[0]: r[1] for r in metrics_table(edited)[1]}
    assert rows["Profit factor"] == "∞"
    assert rows["Calmar"] == "-∞"
    assert rows["Sortino (annualised)"] == "n/a"


def test_terminal_summary(run: LoadedRun) -> None:
    buf = io.StringIO()
    Console(file=buf, width=200, color_system=None).print(terminal_summary(run))
    text = buf.getvalue()
    words = " ".join(text.split())  # the caption wraps at the table's width
    assert f"ATRA run {run.record.run_id} (SYNTHETIC data, 1h bars)" in text
    assert "PSR (P[true Sharpe > 0])" in text
    assert "Sharpe annualised x sqrt(8760) (1h bars, 365-day year)" in words
    assert "Out-of-sample only, costs included" in words
    sharpe = run.metrics["legs"]["filtered"]["returns"]["sharpe"]
    line = next(li for li in text.splitlines() if "Sharpe (annualised)" in li)
    assert f"{sharpe:.2f}" in line


# --------------------------------------------------------------------------------------------
# what was run, and liquidated legs


def test_what_was_run_is_a_table_at_the_top(tmp_path: Path) -> None:
    tf = Timeframe.H1
    legs = [RunLeg("buy_hold", buy_hold(300, tf), None)]
    path = write_run(tmp_path, legs=legs, timeframe=tf, config={"k": 1}, data_hash="0" * 64,
                     seed=1, data_label="real", setup=sample_setup())  # fmt: skip
    page = render_html(read_run(path))
    assert page.index('<section id="setup"><h2>What was run</h2>') < page.index('id="metrics"')
    rows = dict((r[0], r[1]) for r in table_cells(page, "data setup")[1:])
    assert rows["Exchange"] == "binance"
    assert rows["Market"] == "perp"
    assert rows["Symbols"] == "BTCUSDT, ETHUSDT"
    assert rows["Timeframe"] == "1h"
    assert rows["Primary rule"] == "ema_cross (fast 10, slow 30)"
    assert rows["Barriers"].startswith("SL 1 x ATR(14), TP1 1.5 x ATR(14), TP2 3 x ATR(14); ")
    assert "horizon 24 bars" in rows["Barriers"]
    assert rows["Fees"] == "maker 2 bps, taker 5 bps; take-profits pay taker"
    assert rows["Slippage"] == "2 bps"
    assert rows["Funding"].startswith("on")
    assert rows["Sides"] == "long/short (perp)"
    assert "risk per trade 1.00% (cap 2.00%); Kelly not used" in rows["Sizing"]
    assert rows["Leverage caps"].startswith("position 1x equity, gross 3x equity; 5 positions")
    assert rows["Signal bars"] == "2024-01-01 00:00 UTC to 2024-01-05 03:00 UTC"
    assert rows["Out-of-sample"] == "2024-01-03 02:00 UTC to 2024-01-09 07:00 UTC"
    assert "retrain every 30 days, embargo 48 h, expanding" in rows["Walk-forward"]
    assert rows["Models"] == f"fold 0: {'0' * 12}, fold 1: {'1' * 12}"


def test_a_run_without_a_setup_says_so(report_html: str) -> None:
    assert "did not record what was run" in report_html


def _liquidated_run(root: Path) -> LoadedRun:
    tf = Timeframe.H1
    n_bars = 24 * 70  # into March: months after the liquidation have no return
    times = bar_times(n_bars, tf)
    liq = int(times[24 * 40])
    eq = buy_hold(n_bars, tf).to_numpy(copy=True)
    eq[24 * 40 :] = 0.0
    primary = fake_trades(20, tf)
    legs = [
        RunLeg("primary", step_equity(primary, n_bars, tf), primary),
        RunLeg(
            "buy_hold",
            pd.Series(eq, index=times),
            None,
            (
                Liquidation("buy_hold", "ETHUSDT", int(times[24 * 10])),
                Liquidation("buy_hold", None, liq),
            ),
        ),
    ]
    path = write_run(root, legs=legs, timeframe=tf, config={"k": 2}, data_hash="0" * 64,
                     seed=1, data_label="real")  # fmt: skip
    return read_run(path)


def test_a_liquidated_leg_is_reported_in_the_page_and_the_terminal(tmp_path: Path) -> None:
    run = _liquidated_run(tmp_path)
    page = render_report(run).read_text(encoding="utf-8")
    leg_line = "buy_hold: liquidated at 2024-02-10 00:00 UTC (equity 0 from then on)"
    symbol_line = "buy_hold ETHUSDT: liquidated at 2024-01-11 00:00 UTC"
    assert f'<p class="liquidated">{leg_line}</p>' in page
    assert symbol_line in page
    rows = {r[0]: r[1:] for r in table_cells(page, "data metrics")[1:]}
    assert rows["Liquidated at (UTC)"] == ["no", "2024-02-10 00:00"]
    assert rows["Total return"][1] == "-100.00%"
    assert rows["Max drawdown"][1] == "-100.00%"
    (trace,) = figures(page)["monthly"]["data"]
    z = np.array(decode(trace["z"]), dtype=float)
    assert z[1, 1] == pytest.approx(-100.0)  # February: the liquidation month
    assert np.isnan(z[1, 2])  # March: nothing left to return on
    buf = io.StringIO()
    Console(file=buf, width=300, color_system=None).print(terminal_summary(run))
    words = " ".join(buf.getvalue().split())
    assert leg_line in words
    assert symbol_line in words


# --------------------------------------------------------------------------------------------
# CLI


def test_cli_report(run: LoadedRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.html"
    assert main(["report", str(run.path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"report: {out}" in printed
    assert "Sharpe (annualised)" in printed
    assert out.is_file()


def test_cli_report_of_a_missing_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path / "nope")]) == 4
    err = capsys.readouterr().err.strip()
    assert err.startswith("DataError: ")
    assert "nope" in err
    assert len(err.splitlines()) == 1
