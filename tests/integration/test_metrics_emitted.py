"""After a replay, every metric the Grafana dashboard reads has a non-zero sample on /metrics.

A short replay runs the live loop (meta model, risk guards, paper fills) against the fake
exchange on 127.0.0.1 with a weight limit it has to wait for and injected 5xx answers (so
requests are retried and some symbols fail a cycle), its bars over the WebSocket feed with
dropped and duplicated messages and closed connections (the stream metrics), while
``/metrics`` is served on a free port. The endpoint is scraped over HTTP during the replay,
as Prometheus would (a gauge such as ``atra_open_positions`` moves up and down), and once after
it; every scrape is parsed with ``prometheus_client``'s own parser, and every metric name in the
dashboard's expressions (read from the JSON, not listed here) must have had a sample above
zero.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from prom_harness import dashboard_queries, metric_names, parse_label_values
from prometheus_client.parser import text_string_to_metric_families

from atra.adapters.notify import Notifier, WebhookDestination
from atra.core.decision import EVENT_FEATURES, ModelHandle
from atra.core.exits.api import ExitSpec
from atra.core.meta import MetaModel, MetaParams
from atra.core.signals.spec import SignalSpec
from atra.core.types import Timeframe
from atra.live.guards import GuardLimits, RiskGuards
from atra.live.loop import LoopSettings, StrategyDecider
from atra.live.notifications import LoopNotifications
from atra.live.replay import ReplayReport, ReplaySetup, run_replay
from atra.obs.metrics import Metrics, start_metrics_server
from atra.sim.exchange import Faults
from atra.sim.stream import StreamFaults
from helpers_live import STEP, T0, synthetic
from helpers_logging import quiet_structlog
from helpers_notify import recording_server

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboards" / "atra.json"
TF = Timeframe.H1
SPEC = SignalSpec(ema_fast=3, ema_slow=8, atr_n=5, horizon_bars=6)
CANDLES = {s: synthetic(k + 1) for k, s in enumerate(("AAAUSDT", "BBBUSDT", "CCCUSDT"))}
CYCLES = 48
STREAM: dict[str, Any] = {
    "feed": "ws",
    "stream_faults": StreamFaults(
        p_drop=0.15, p_duplicate=0.1, p_garbage=0.05, close_every=31, seed=4
    ),
    "stream_wait_s": 0.2,
}
"""The replay's WebSocket feed: dropped messages are fetched over REST (through the limiter
and the 5xx faults), duplicates ignored, the connection closed now and then (reconnects) and
after a garbled message (an error; the bars it missed are backfilled over REST)."""
EXEMPT: dict[str, str] = {}
"""Dashboard metrics a short replay cannot move, with the reason. Empty: the replay exercises
every one (a guard trips, requests are retried, a symbol fails, the limiter waits)."""


def _meta_model() -> ModelHandle:
    rng = np.random.default_rng(0)
    names = ["ret_1", "rsi_14", *EVENT_FEATURES]
    X = pd.DataFrame({k: rng.normal(size=400) for k in names})
    y = (X["ret_1"] + rng.normal(size=400) > 0).astype(int)
    model = MetaModel(MetaParams(n_estimators=5, min_child_samples=5)).fit(X, y)
    return ModelHandle(model, "meta-metrics-1")


def dashboard_metrics() -> set[str]:
    """Every metric name the dashboard's expressions and variable queries select."""
    names: set[str] = set()
    for q in dashboard_queries(json.loads(DASHBOARD.read_text())):
        if q.kind == "variable":
            match, _ = parse_label_values(q.text)
            assert match is not None, f"{q.where}: label_values without a metric selector"
            names |= metric_names(match)
        else:
            names |= metric_names(q.text)
    return names


async def scrape(http: httpx.AsyncClient, url: str, peaks: dict[str, float]) -> None:
    """Scrape a real ``/metrics`` answer once; keep the largest value of every sample name."""
    resp = await http.get(url)
    assert resp.status_code == 200, resp.text[:200]
    for family in text_string_to_metric_families(resp.text):
        for sample in family.samples:
            peaks[sample.name] = max(peaks.get(sample.name, -math.inf), float(sample.value))


@dataclass
class Replayed:
    report: ReplayReport
    url: str
    peaks: dict[str, float]
    """Sample name -> the largest value any scrape saw."""
    scrapes: int


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replayed]:
    """The replay, run once for the module, scraped every 50 ms while it runs and after."""
    metrics = Metrics()
    server = start_metrics_server(metrics, "127.0.0.1", 0)
    settings = LoopSettings(
        tuple(CANDLES),
        TF,
        window_bars=40,
        bar_close_delay_s=2.0,  # decisions 2 s after the close: candle ages above zero
        start_ms=T0,
        stop_ms=T0 + CYCLES * STEP,
        symbol_timeout_s=2.0,
        cycle_deadline_s=3.0,
    )
    setup = ReplaySetup(
        weight_limit=12,  # per scaled minute: a real second at time_scale 60, so it waits
        faults=Faults(p_5xx=0.2, seed=11),  # retried; sometimes twice, and the symbol fails
        max_attempts=2,
        backoff_s=0.05,
        **STREAM,  # bars over the WebSocket feed, REST for the fill, backfills and fallbacks
    )
    peaks: dict[str, float] = {}
    scrapes = 0

    async def replay() -> ReplayReport:
        nonlocal scrapes
        async with (
            httpx.AsyncClient(timeout=5.0) as http,
            recording_server() as hook,  # a webhook receiving the loop's notifications
        ):
            notes = LoopNotifications(
                Notifier(
                    [WebhookDestination(hook.url + "/hook", "json")],
                    metrics=metrics,
                    rate_per_minute=60_000.0,
                    burst=1000,
                )
            )

            async def scraper() -> None:
                nonlocal scrapes
                while True:
                    await scrape(http, server.url, peaks)
                    scrapes += 1
                    await asyncio.sleep(0.05)

            task = asyncio.create_task(scraper())
            try:
                report = await notes.around(run_replay(
                    settings,
                    CANDLES,
                    tmp_path_factory.mktemp("metrics") / "journal.sqlite",
                    decider=StrategyDecider(SPEC, TF, model=_meta_model()),
                    exit_spec=ExitSpec(),
                    guards=RiskGuards(GuardLimits(max_open_positions=1)),
                    setup=setup,
                    metrics=metrics,
                    on_start=notes.attach,
                ))  # fmt: skip
            finally:
                task.cancel()
            await scrape(http, server.url, peaks)
            scrapes += 1
            return report

    try:
        with quiet_structlog():
            report = asyncio.run(replay())
        yield Replayed(report, server.url, peaks, scrapes)
    finally:
        server.stop()


def test_every_dashboard_metric_has_a_non_zero_sample(replayed: Replayed) -> None:
    assert replayed.report.cycles == CYCLES
    assert replayed.scrapes >= 3
    wanted = dashboard_metrics()
    assert len(wanted) >= 15, f"the dashboard lost its panels, or its layout changed: {wanted}"
    assert set(EXEMPT) <= wanted, "an exemption names a metric the dashboard no longer reads"
    peaks = replayed.peaks
    missing = sorted(n for n in wanted - set(EXEMPT) if n not in peaks)
    assert not missing, f"dashboard metrics not exported at all: {missing}"
    zero = sorted(n for n in wanted - set(EXEMPT) if peaks[n] <= 0.0)
    assert not zero, f"dashboard metrics never above zero during and after a replay: {zero}"


def test_exchange_metrics_match_what_the_fake_exchange_saw(replayed: Replayed) -> None:
    report = replayed.report
    text = httpx.get(replayed.url, timeout=5.0).text
    by_status: dict[str, float] = {}
    endpoints: set[str] = set()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "atra_exchange_requests_total":
                by_status[s.labels["status"]] = by_status.get(s.labels["status"], 0.0) + s.value
                endpoints.add(s.labels["endpoint"])
    # every answer the fake sent is counted once, by status class; faults answered 503
    assert by_status.get("2xx", 0.0) == report.statuses.get(200, 0)
    assert by_status.get("5xx", 0.0) == report.statuses.get(503, 0)
    assert sum(by_status.values()) == report.requests
    assert endpoints <= {"/fapi/v1/klines", "/fapi/v1/fundingRate", "/fapi/v1/exchangeInfo"}
    assert "/fapi/v1/klines" in endpoints  # path templates, never a query string
