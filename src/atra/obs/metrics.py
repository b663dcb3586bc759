"""Prometheus metrics: every ATRA metric, on one registry per :class:`Metrics` instance.

Names carry the ``atra_`` prefix and their unit; labels are low-cardinality (symbol, side,
endpoint path template, market, status class, guard name, error type) — never order ids or
prices. The live loop creates one :class:`Metrics`, serves it with :func:`start_metrics_server`
and passes it down, to the exchange client too (``BinanceClient(metrics=...)``: request counts,
latency, retries; its rate limiter: weight used, limit and waits); tests create a fresh one
each.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Final
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from atra.errors import ConfigError

CYCLE_BUCKETS_S: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0)
REQUEST_BUCKETS_S: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STREAM_LAG_BUCKETS_S: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
PROBABILITY_BUCKETS: Final = tuple(round(0.05 * i, 2) for i in range(1, 21))
"""0.05, 0.10, ..., 1.00: the meta model's p(take) distribution."""


class Metrics:
    """Every ATRA metric, registered on ``self.registry`` (a fresh one unless given)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True) if registry is None else registry
        reg = self.registry
        # loop health
        self.cycle_duration_seconds = Histogram(
            "atra_cycle_duration_seconds",
            "Wall time of one live cycle (bar close to decisions done).",
            buckets=CYCLE_BUCKETS_S,
            registry=reg,
        )
        self.cycles_total = Counter(
            "atra_cycles_total",
            "Live cycles by outcome (ok, late, failed, skipped).",
            ["status"],
            registry=reg,
        )
        self.candle_age_seconds = Gauge(
            "atra_candle_age_seconds",
            "Age of the newest closed candle at decision time (staleness).",
            ["symbol"],
            registry=reg,
        )
        # exchange
        self.exchange_requests_total = Counter(
            "atra_exchange_requests_total",
            "Exchange HTTP requests by endpoint template and status (2xx, 4xx, 418, 429, 5xx, "
            "or error: no answer).",
            ["endpoint", "status"],
            registry=reg,
        )
        self.exchange_request_duration_seconds = Histogram(
            "atra_exchange_request_duration_seconds",
            "Exchange HTTP request latency.",
            ["endpoint"],
            buckets=REQUEST_BUCKETS_S,
            registry=reg,
        )
        self.ratelimit_weight_used = Gauge(
            "atra_ratelimit_weight_used",
            "Request weight used in the current minute (X-MBX-USED-WEIGHT-1m).",
            ["market"],
            registry=reg,
        )
        self.ratelimit_weight_limit = Gauge(
            "atra_ratelimit_weight_limit",
            "Request weight allowed per minute (from exchangeInfo rateLimits).",
            ["market"],
            registry=reg,
        )
        self.ratelimit_wait_seconds_total = Counter(
            "atra_ratelimit_wait_seconds_total",
            "Seconds spent waiting on the shared rate limiter.",
            ["market"],
            registry=reg,
        )
        self.retries_total = Counter(
            "atra_retries_total",
            "Retries of transient exchange failures.",
            ["endpoint"],
            registry=reg,
        )
        # decisions
        self.signals_total = Counter(
            "atra_signals_total",
            "Primary signals by symbol, side and decision (taken or blocked).",
            ["symbol", "side", "decision"],
            registry=reg,
        )
        self.meta_probability = Histogram(
            "atra_meta_probability",
            "Meta model p(take) of every primary signal.",
            buckets=PROBABILITY_BUCKETS,
            registry=reg,
        )
        # portfolio and risk
        self.open_positions = Gauge(
            "atra_open_positions", "Open positions (paper or live).", registry=reg
        )
        self.equity_usdt = Gauge("atra_equity_usdt", "Account equity in USDT.", registry=reg)
        self.daily_pnl_usdt = Gauge(
            "atra_daily_pnl_usdt", "Profit and loss since 00:00 UTC in USDT.", registry=reg
        )
        self.risk_guard_breaches_total = Counter(
            "atra_risk_guard_breaches_total",
            "Actions refused by a risk guard (max_positions, daily_loss, leverage, kill_switch).",
            ["guard"],
            registry=reg,
        )
        self.errors_total = Counter(
            "atra_errors_total",
            "Errors by type (the AtraError class name).",
            ["type"],
            registry=reg,
        )
        # WebSocket streams (live.feed = "ws")
        self.stream_messages_total = Counter(
            "atra_stream_messages_total",
            "WebSocket messages received, by market.",
            ["market"],
            registry=reg,
        )
        self.stream_reconnects_total = Counter(
            "atra_stream_reconnects_total",
            "WebSocket reconnects by market and reason (planned: before the 24 h limit; "
            "error: the connection failed or was closed).",
            ["market", "reason"],
            registry=reg,
        )
        self.stream_backfilled_bars_total = Counter(
            "atra_stream_backfilled_bars_total",
            "Closed bars fetched over REST because the stream missed them (after a reconnect "
            "or a bar still missing when the cycle's wait ended).",
            ["market"],
            registry=reg,
        )
        self.stream_duplicate_bars_total = Counter(
            "atra_stream_duplicate_bars_total",
            "Closed bars received again (a duplicate message or a bar REST already delivered), "
            "ignored.",
            ["market"],
            registry=reg,
        )
        self.stream_lag_seconds = Histogram(
            "atra_stream_lag_seconds",
            "Stream event time to receipt (the loop's clock), per message.",
            ["market"],
            buckets=STREAM_LAG_BUCKETS_S,
            registry=reg,
        )
        # notifications
        self.notifications_total = Counter(
            "atra_notifications_total",
            "Notifications by destination (telegram, webhook), event and outcome (sent, "
            "failed after retries, dropped: queue full or unsent at shutdown).",
            ["destination", "event", "outcome"],
            registry=reg,
        )

    def sample_names(self) -> frozenset[str]:
        """Every series name this registry exposes (histograms as ``_bucket/_sum/_count``)."""
        names: set[str] = set()
        for family in self.registry.collect():
            if family.type == "histogram":
                names.update(f"{family.name}{s}" for s in ("_bucket", "_sum", "_count"))
            elif family.type == "counter":
                names.add(f"{family.name}_total")
            else:
                names.add(family.name)
        return frozenset(names)


@dataclass(frozen=True, slots=True)
class MetricsServer:
    """A running ``/metrics`` HTTP server; :meth:`stop` shuts it down and joins its thread."""

    server: WSGIServer
    thread: threading.Thread
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def stop(self, timeout_s: float = 5.0) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout_s)


def start_metrics_server(
    metrics: Metrics, host: str = "127.0.0.1", port: int = 9108
) -> MetricsServer:
    """Serve ``metrics.registry`` at ``http://host:port/metrics`` (``port=0``: any free port)."""
    try:
        server, thread = start_http_server(port, addr=host, registry=metrics.registry)
    except OSError as exc:
        raise ConfigError(
            f"live.metrics_host/metrics_port: cannot serve metrics on {host}:{port}: {exc.strerror}"
        ) from None
    return MetricsServer(server=server, thread=thread, host=host, port=server.server_port)
