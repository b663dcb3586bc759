"""A real Prometheus server scraping ATRA on loopback.

Test A serves a :class:`~atra.obs.metrics.Metrics` populated as a live cycle would, and checks
through Prometheus' HTTP API that ``atra_signals_total`` carries the symbols' counts and that
every PromQL expression of the provisioned Grafana dashboard evaluates without error, over
metrics that really exist. Test B runs ``atra live --replay`` as a subprocess and checks that
its signals reach Prometheus. Test C runs a replay of the live loop against the fake exchange
over HTTP (rate limited, injected 5xx answers retried, signed orders on the fake's matching
engine, a risk guard, notifications to a local webhook) while a second Prometheus scrapes its
``/metrics`` every 100 ms, and requires every metric the dashboard reads (taken from the
dashboard JSON) to hold a non-zero sample in Prometheus itself, and Prometheus' figures to agree
with what the fake exchange and the journal saw.

The ``prometheus`` binary comes from Debian's package (``.ci/install-prometheus.sh``). Without
it these tests skip, except under ``CI`` where they fail: CI must not skip them silently.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from prom_harness import (
    PromError,
    PromServer,
    dashboard_queries,
    free_port,
    metric_names,
    parse_label_values,
    poll,
    prometheus_binary,
    prometheus_version,
    render_grafana,
    start_prometheus,
)
from test_metrics_emitted import (
    CANDLES,
    CYCLES,
    SPEC,
    STREAM,
    TF,
    _meta_model,
    dashboard_metrics,
)

from atra.adapters.journal.database import Journal
from atra.adapters.journal.records import SignalRecord
from atra.adapters.notify import Notifier, WebhookDestination
from atra.core.exits.api import ExitSpec
from atra.live.guards import GuardLimits, RiskGuards
from atra.live.loop import LoopSettings, StrategyDecider
from atra.live.notifications import LoopNotifications
from atra.live.replay import ReplayReport, ReplaySetup, run_replay
from atra.obs.metrics import Metrics, MetricsServer, start_metrics_server
from atra.sim.exchange import Faults
from helpers_live import STEP, T0
from helpers_logging import quiet_structlog
from helpers_notify import Recorder, recording_server

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = PROJECT_ROOT / "deploy" / "grafana" / "dashboards" / "atra.json"
SYMBOLS = ("BTCUSDT", "ETHUSDT")

GRAFANA_VALUES = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "1h",
    "__range_s": "3600",
    "symbol": "(BTCUSDT|ETHUSDT)",  # a multi-value selection as Grafana renders it for =~
}
"""Concrete values for the dashboard's Grafana variables (1 s scrapes: 1m spans 60 samples)."""


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _binary_or_skip() -> str:
    binary = prometheus_binary()
    if binary is None:
        reason = "prometheus binary not on PATH (install it with .ci/install-prometheus.sh)"
        if _in_ci():
            pytest.fail(f"{reason}; CI is set, so this test must not be skipped")
        pytest.skip(reason)
    return binary


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PromServer]:
    """A real Prometheus on a free 127.0.0.1 port with 1 s scrapes; stopped after the module."""
    server = start_prometheus(_binary_or_skip(), tmp_path_factory.mktemp("prometheus"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def served(prometheus: PromServer) -> Iterator[tuple[Metrics, MetricsServer]]:
    """A fresh, populated :class:`Metrics` on a loopback ``/metrics``, scraped by Prometheus."""
    metrics = Metrics()
    populate_like_a_live_cycle(metrics)
    server = start_metrics_server(metrics, "127.0.0.1", 0)
    try:
        yield metrics, server
    finally:
        server.stop()


def populate_like_a_live_cycle(m: Metrics) -> None:
    """What a few paper cycles over BTCUSDT and ETHUSDT leave behind: every family has series.

    Signals: BTCUSDT 3 taken + 2 blocked = 5, ETHUSDT 1 taken + 3 blocked = 4."""
    for seconds in (0.12, 0.4, 1.7, 0.08):
        m.cycle_duration_seconds.observe(seconds)
    m.cycles_total.labels(status="ok").inc(3)
    m.cycles_total.labels(status="late").inc()
    m.candle_age_seconds.labels(symbol="BTCUSDT").set(2.4)
    m.candle_age_seconds.labels(symbol="ETHUSDT").set(2.9)
    m.exchange_requests_total.labels(endpoint="/fapi/v1/klines", status="2xx").inc(40)
    m.exchange_requests_total.labels(endpoint="/fapi/v1/klines", status="429").inc(2)
    m.exchange_requests_total.labels(endpoint="/fapi/v1/exchangeInfo", status="2xx").inc()
    for endpoint, seconds in (("/fapi/v1/klines", 0.031), ("/fapi/v1/exchangeInfo", 0.2)):
        m.exchange_request_duration_seconds.labels(endpoint=endpoint).observe(seconds)
    m.ratelimit_weight_used.labels(market="perp").set(320)
    m.ratelimit_weight_limit.labels(market="perp").set(2400)
    m.ratelimit_wait_seconds_total.labels(market="perp").inc(1.5)
    m.retries_total.labels(endpoint="/fapi/v1/klines").inc(2)
    m.signals_total.labels(symbol="BTCUSDT", side="long", decision="taken").inc(3)
    m.signals_total.labels(symbol="BTCUSDT", side="short", decision="blocked").inc(2)
    m.signals_total.labels(symbol="ETHUSDT", side="long", decision="taken").inc(1)
    m.signals_total.labels(symbol="ETHUSDT", side="short", decision="blocked").inc(3)
    for p in (0.61, 0.42, 0.77, 0.55, 0.3, 0.58, 0.49, 0.7, 0.35):
        m.meta_probability.observe(p)
    m.open_positions.set(2)
    m.equity_usdt.set(10_250.5)
    m.daily_pnl_usdt.set(250.5)
    m.risk_guard_breaches_total.labels(guard="max_positions").inc()
    m.risk_guard_breaches_total.labels(guard="daily_loss").inc()
    m.errors_total.labels(type="TransientExchangeError").inc(2)
    notes = m.notifications_total
    notes.labels(destination="telegram", event="signal_taken", outcome="sent").inc(4)
    notes.labels(destination="webhook", event="guard", outcome="dropped").inc()
    m.stream_messages_total.labels(market="perp").inc(200)
    m.stream_reconnects_total.labels(market="perp", reason="error").inc()
    m.stream_backfilled_bars_total.labels(market="perp").inc(3)
    m.stream_duplicate_bars_total.labels(market="perp").inc(2)
    for seconds in (0.02, 0.05, 0.3):
        m.stream_lag_seconds.labels(market="perp").observe(seconds)


def _instance(server: MetricsServer) -> str:
    return f"{server.host}:{server.port}"


# ---- the harness's PromQL helpers (no server needed) -----------------------------------------


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("atra_equity_usdt", {"atra_equity_usdt"}),
        (
            'sum by (symbol, decision) (increase(atra_signals_total{symbol=~"a|b"}[1h]))',
            {"atra_signals_total"},
        ),
        (
            "histogram_quantile(0.99, sum by (le) (rate(atra_x_bucket[5m] offset 1h)))",
            {"atra_x_bucket"},
        ),
        (
            "1 - max by (m) (a_used) / on(m) group_left(n) max by (m) (a_limit)",
            {"a_used", "a_limit"},
        ),
        ('count({__name__="atra_up"}) > bool 1e3 and nan', {"atra_up"}),
        ("vector(1) + time()", set()),
    ],
)
def test_metric_names(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_render_grafana_variables() -> None:
    expr = 'rate(x{s=~"$symbol"}[$__rate_interval]) + y{s=~"${symbol:regex}"} + [[symbol]]'
    assert render_grafana(expr, {"symbol": "A", "__rate_interval": "1m"}) == (
        'rate(x{s=~"A"}[1m]) + y{s=~"A"} + A'
    )
    with pytest.raises(KeyError, match=r"\$unknown"):
        render_grafana("x[$unknown]", {})


def test_parse_label_values() -> None:
    assert parse_label_values("label_values(atra_candle_age_seconds, symbol)") == (
        "atra_candle_age_seconds",
        "symbol",
    )
    assert parse_label_values("label_values(symbol)") == (None, "symbol")
    with pytest.raises(ValueError, match="unsupported"):
        parse_label_values("query_result(up)")


# ---- Test A: a served Metrics, scraped by a real Prometheus ---------------------------------


def test_prometheus_version(prometheus: PromServer) -> None:
    binary = prometheus_binary()
    assert binary is not None
    assert prometheus_version(binary).startswith("prometheus, version 2.")
    build = prometheus.api("status/buildinfo")
    assert build["version"].startswith("2.")


def test_signals_reach_prometheus_and_dashboard_queries_run(
    prometheus: PromServer, served: tuple[Metrics, MetricsServer]
) -> None:
    metrics, server = served
    inst = _instance(server)
    prometheus.add_target(inst)
    prometheus.wait_scraped(inst)

    signals = prometheus.values_by(
        f'sum by (symbol) (atra_signals_total{{instance="{inst}"}})', "symbol"
    )
    assert signals == {"BTCUSDT": 5.0, "ETHUSDT": 4.0}

    # a syntax error or unknown function is an API error: the harness must surface it
    with pytest.raises(PromError, match="bad_data"):
        prometheus.query("sum by (symbol) (no_such_function(atra_signals_total))")

    queries = dashboard_queries(json.loads(DASHBOARD.read_text()))
    exprs = [q for q in queries if q.kind == "expr"]
    assert len(exprs) >= 10, "the dashboard lost its panels, or its JSON layout changed"

    failed: list[str] = []
    referenced: set[str] = set()
    for q in queries:
        if q.kind == "variable":
            match, label = parse_label_values(q.text)
            assert match is not None, f"{q.where}: label_values without a metric selector"
            referenced |= metric_names(match)
            try:
                values = prometheus.label_values(label, match)
            except PromError as exc:
                failed.append(f"{q.where}: {q.text}: {exc}")
                continue
            assert set(SYMBOLS) <= set(values), f"{q.where}: {values}"
            continue
        expr = render_grafana(q.text, GRAFANA_VALUES)
        referenced |= metric_names(expr)
        try:
            prometheus.query(expr)
        except PromError as exc:
            failed.append(f"{q.where}: {expr}: {exc}")
    assert not failed, "dashboard queries Prometheus rejected:\n" + "\n".join(failed)

    # every metric the dashboard reads is one atra exports, and Prometheus holds its series
    assert referenced, "no metric names found in the dashboard"
    assert referenced <= metrics.sample_names(), referenced - metrics.sample_names()
    missing = [
        name for name in sorted(referenced) if not prometheus.series(f'{name}{{instance="{inst}"}}')
    ]
    assert not missing, f"dashboard metrics with no series in Prometheus: {missing}"

    # once two scrapes exist, rate()/increase() panels have data too: every panel shows something
    def empty_panels() -> list[str]:
        return [
            q.where for q in exprs if not prometheus.query(render_grafana(q.text, GRAFANA_VALUES))
        ]

    try:
        poll(lambda: True if not empty_panels() else None, 10.0, "data in every panel", 0.5)
    except TimeoutError:
        pytest.fail(f"dashboard expressions still empty after 10 s of scrapes: {empty_panels()}")

    # the values move with the process: new signals show up on the next scrape
    metrics.signals_total.labels(symbol="ETHUSDT", side="long", decision="taken").inc(6)
    expr = f'sum by (symbol) (atra_signals_total{{instance="{inst}"}})'

    def updated() -> dict[str, float] | None:
        found = prometheus.values_by(expr, "symbol")
        return found if found.get("ETHUSDT") == 10.0 else None

    assert poll(updated, 10.0, "the new ETHUSDT signals") == {"BTCUSDT": 5.0, "ETHUSDT": 10.0}


# ---- Test B: `atra live --replay` scraped by the same Prometheus ----------------------------

LIVE_CLI_AVAILABLE = importlib.util.find_spec("atra.cli.live") is not None

H1_MS = 3_600_000
T0_MS = 1_704_067_200_000  # 2024-01-01 00:00 UTC
N_BARS = 200
REPLAY_FROM = "2024-01-05T04:00:00"  # T0 + 100 h
REPLAY_TO = "2024-01-06T20:00:00"  # T0 + 140 h
WINDOW_BARS = 50


def zigzag_candles(seed: int) -> pd.DataFrame:
    """Hourly candles whose close alternates up and down: a 1-bar time-series momentum rule
    turns every bar, so every replayed bar carries a primary signal."""
    rng = np.random.default_rng(seed)
    i = np.arange(N_BARS)
    close = 100.0 * (1.0 + 0.0005 * i) * (1.0 + 0.01 * np.where(i % 2 == 0, 1.0, -1.0))
    close *= 1.0 + rng.uniform(-0.001, 0.001, N_BARS)
    open_ = np.concatenate(([close[0]], close[:-1]))
    return pd.DataFrame(
        {
            "open_time": T0_MS + i.astype(np.int64) * H1_MS,
            "open": open_,
            "high": np.maximum(open_, close) * 1.002,
            "low": np.minimum(open_, close) * 0.998,
            "close": close,
            "volume": rng.uniform(1.0, 10.0, N_BARS),
        }
    )


def replay_config(tmp: Path, metrics_port: int) -> Path:
    path = tmp / "atra.toml"
    path.write_text(
        f"""\
[strategy]
rule = "tsmom"
params = {{ lookback = 1.0 }}
atr_window = 2
horizon_bars = 2

[risk]
kill_switch_file = "{tmp / "KILL"}"

[live]
symbols = ["BTCUSDT", "ETHUSDT"]
market = "perp"
timeframe = "1h"
journal_path = "{tmp / "journal.sqlite"}"
metrics_host = "127.0.0.1"
metrics_port = {metrics_port}

[obs]
log_format = "json"
log_level = "WARNING"
"""
    )
    return path


@pytest.mark.skipif(not LIVE_CLI_AVAILABLE, reason="live replay not available yet")
def test_live_replay_signals_reach_prometheus(prometheus: PromServer, tmp_path: Path) -> None:
    data = tmp_path / "candles"
    data.mkdir()
    for k, sym in enumerate(SYMBOLS):
        zigzag_candles(k).to_parquet(data / f"{sym}_perp_1h.parquet", index=False)
    port = free_port()
    inst = f"127.0.0.1:{port}"
    config = replay_config(tmp_path, port)
    prometheus.add_target(inst)
    # `atra live` as the console script runs it; importing atra.cli.live registers the command
    launcher = "import sys, atra.cli.live; from atra.cli import main; sys.exit(main())"
    cmd = [
        sys.executable, "-c", launcher, "live", "--config", str(config), "--replay",
        "--from", REPLAY_FROM, "--to", REPLAY_TO, "--speed", "3600",  # one bar a second
        "--data", str(data), "--window-bars", str(WINDOW_BARS),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("ATRA__")}
    log = tmp_path / "atra-live.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
    expr = f'sum by (symbol) (atra_signals_total{{instance="{inst}"}})'

    def signalled() -> dict[str, float] | None:
        if proc.poll() is not None:
            pytest.fail(
                f"atra live --replay exited ({proc.returncode}) before Prometheus saw its "
                f"signals:\n{log.read_text(errors='replace')[-3000:]}"
            )
        found = prometheus.values_by(expr, "symbol")
        return found if all(found.get(s, 0.0) > 0.0 for s in SYMBOLS) else None

    try:
        signals = poll(signalled, 20.0, "atra_signals_total of the replay in Prometheus")
        cycles = prometheus.values_by(f'sum(atra_cycles_total{{instance="{inst}"}})', "")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # a graceful stop, as systemd sends it
        rc: int | None = None
        try:
            rc = proc.wait(15.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5.0)
    assert set(signals) == set(SYMBOLS)
    assert all(v >= 1.0 for v in signals.values()), signals
    assert cycles.get("", 0.0) >= 1.0, cycles
    assert rc == 0, f"atra live exited with {rc} on SIGTERM:\n{log.read_text(errors='replace')}"


# ---- Test C: a replay of the live loop over HTTP; every dashboard metric in Prometheus -------

FAST_SCRAPE_S = 0.1
"""Test C's scrape interval: a gauge up for a few cycles of a seconds-long replay is sampled."""
BOGUS_METRIC = "atra_never_emitted_total"


@pytest.fixture(scope="module")
def fast_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PromServer]:
    """A second real Prometheus, scraping every :data:`FAST_SCRAPE_S`."""
    workdir = tmp_path_factory.mktemp("prometheus-fast")
    server = start_prometheus(_binary_or_skip(), workdir, FAST_SCRAPE_S)
    try:
        yield server
    finally:
        server.stop()


@dataclass
class PromReplay:
    """A replay whose ``/metrics`` (``instance``) ``prom`` scraped from before its first cycle
    to after its last; ``hook`` recorded the notifications it sent."""

    prom: PromServer
    instance: str
    report: ReplayReport
    journal: Path
    hook: Recorder


async def _replay_with_metrics(metrics: Metrics, journal: Path, hook: Recorder) -> ReplayReport:
    """The replay of ``test_metrics_emitted`` through the order path: three synthetic
    perpetuals, the meta model, one position at a time (the guard blocks the others), a weight
    limit the limiter waits for, 20% of the requests answered 503 and retried (some twice,
    failing the symbol's cycle)."""
    settings = LoopSettings(
        tuple(CANDLES), TF, window_bars=40, bar_close_delay_s=2.0, start_ms=T0,
        stop_ms=T0 + CYCLES * STEP, symbol_timeout_s=2.0, cycle_deadline_s=3.0,
    )  # fmt: skip
    setup = ReplaySetup(
        weight_limit=12,
        faults=Faults(p_5xx=0.2, seed=11),
        max_attempts=2,
        backoff_s=0.05,
        orders=True,  # entries and exits as signed orders on the fake's matching engine
        **STREAM,  # the bars over the WebSocket feed, with dropped and duplicated messages
    )
    async with recording_server(hook) as rec:
        destination = WebhookDestination(rec.url + "/hook", "json")
        notifier = Notifier([destination], metrics=metrics, rate_per_minute=60_000.0, burst=1000)
        notes = LoopNotifications(notifier)
        return await notes.around(run_replay(
            settings, CANDLES, journal, decider=StrategyDecider(SPEC, TF, model=_meta_model()),
            exit_spec=ExitSpec(), guards=RiskGuards(GuardLimits(max_open_positions=1)),
            setup=setup, metrics=metrics, on_start=notes.attach,
        ))  # fmt: skip


@pytest.fixture(scope="module")
def prom_replay(
    fast_prometheus: PromServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PromReplay]:
    """The replay, run once for the module's tests, scraped by :func:`fast_prometheus`."""
    metrics = Metrics()
    server = start_metrics_server(metrics, "127.0.0.1", 0)
    inst = _instance(server)
    try:
        fast_prometheus.add_target(inst)
        fast_prometheus.wait_scraped(inst)  # scraped before the first cycle: series start at 0
        journal = tmp_path_factory.mktemp("prom-replay") / "journal.sqlite"
        hook = Recorder()
        with quiet_structlog():
            report = asyncio.run(_replay_with_metrics(metrics, journal, hook))
        expr = f'sum(atra_exchange_requests_total{{instance="{inst}"}})'

        def final_state_scraped() -> bool | None:
            found = fast_prometheus.values_by(expr, "").get("")
            return True if found == float(report.requests) else None

        poll(final_state_scraped, 10.0, "a scrape after the replay's last request")
        yield PromReplay(fast_prometheus, inst, report, journal, hook)
    finally:
        server.stop()


def unseen_in_prometheus(prom: PromServer, instance: str, names: set[str]) -> dict[str, str]:
    """``{metric name: why}`` for each of ``names`` with no series of ``instance`` in
    Prometheus, or whose every sample over the last hour was 0."""
    out: dict[str, str] = {}
    for name in sorted(names):
        sel = f'{{__name__="{name}", instance="{instance}"}}'
        high = prom.values_by(f"max(max_over_time({sel}[1h]))", "")
        low = prom.values_by(f"min(min_over_time({sel}[1h]))", "")
        if not high:
            out[name] = "no series"
        elif high[""] == 0.0 and low[""] == 0.0:
            out[name] = "only zero samples"
    return out


def test_every_dashboard_metric_has_a_non_zero_sample_in_prometheus(
    prom_replay: PromReplay,
) -> None:
    assert prom_replay.report.cycles == CYCLES
    wanted = dashboard_metrics()  # read from the dashboard JSON, not listed here
    assert len(wanted) >= 15, f"the dashboard lost its panels, or its layout changed: {wanted}"
    prom, inst = prom_replay.prom, prom_replay.instance
    # the check can fail: a name nothing emits is reported, and so is a series that stayed 0
    assert unseen_in_prometheus(prom, inst, {BOGUS_METRIC}) == {BOGUS_METRIC: "no series"}
    missing = unseen_in_prometheus(prom, inst, wanted)
    assert not missing, f"dashboard metrics without a non-zero sample in Prometheus: {missing}"


def test_prometheus_agrees_with_the_fake_exchange_and_the_journal(prom_replay: PromReplay) -> None:
    prom, inst, report = prom_replay.prom, prom_replay.instance, prom_replay.report
    sel = f'{{instance="{inst}"}}'
    # every answer the fake exchange sent, counted once by status class; faults answered 503
    by_status = prom.values_by(f"sum by (status) (atra_exchange_requests_total{sel})", "status")
    want: dict[str, float] = {}
    for code, n in report.statuses.items():
        want[f"{code // 100}xx"] = want.get(f"{code // 100}xx", 0.0) + n
    assert by_status == want
    assert want.get("5xx", 0.0) > 0, "the replay must inject 5xx answers for retries to count"
    endpoints = prom.label_values("endpoint", f"atra_exchange_requests_total{sel}")
    assert {"/fapi/v1/klines", "/fapi/v1/order"} <= set(endpoints), endpoints
    assert prom.values_by(f"sum(atra_retries_total{sel})", "")[""] > 0.0
    assert prom.values_by(f"sum(atra_ratelimit_wait_seconds_total{sel})", "")[""] > 0.0
    assert prom.values_by(f"sum(atra_cycles_total{sel})", "") == {"": float(report.cycles)}

    async def journalled() -> tuple[list[SignalRecord], int]:
        async with Journal.open(prom_replay.journal) as j:
            return await j.signals(), len(await j.guard_events())

    signals, guard_events = asyncio.run(journalled())
    decisions = prom.values_by(f"sum by (decision) (atra_signals_total{sel})", "decision")
    taken = sum(s.take for s in signals)
    assert decisions == {
        k: float(v) for k, v in {"taken": taken, "blocked": len(signals) - taken}.items() if v
    }
    assert guard_events > 0
    assert prom.values_by(f"sum(atra_risk_guard_breaches_total{sel})", "") == {
        "": float(guard_events)
    }
    sent = prom.values_by(f'sum(atra_notifications_total{{instance="{inst}", outcome="sent"}})', "")
    assert sent == {"": float(len(prom_replay.hook.received))}
