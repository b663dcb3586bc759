"""Observability, configured in this package only: structlog logs (:mod:`atra.obs.logs`),
OpenTelemetry traces (:mod:`atra.obs.tracing`) and Prometheus metrics (:mod:`atra.obs.metrics`).

May import: :mod:`atra.config`, :mod:`atra.errors`, structlog, prometheus_client, opentelemetry.
Imported by the adapters and the apps; never by :mod:`atra.core`.

Logs
----
:func:`configure_logging` sets up structlog *and* the standard-library root logger, so library
records (httpx, aiohttp, lightgbm, ...) pass through the same processors and renderer: JSON lines
in production (stdout and/or a file), a pretty console on a TTY. Every event carries
``timestamp`` (ISO 8601, UTC), ``level``, ``logger``, ``event``, the context bound with
``structlog.contextvars.bind_contextvars(run_id=..., cycle_id=...)``, and ``trace_id``/``span_id``
of the current OpenTelemetry span (when one is active). The last step before rendering is the
:class:`Redactor`: values of secret-looking keys, configured secret strings anywhere in any string,
``signature=...`` and ``X-MBX-APIKEY`` in URLs / headers are replaced by ``***``.

Event names are past-tense snake_case constants (``signal_generated``, ``signal_blocked``,
``order_filled``, ``cycle_completed``), never f-strings. Fields come from one vocabulary:

    run_id, cycle_id        ids of the process run and of one live cycle (contextvars)
    trace_id, span_id       OpenTelemetry ids (added automatically)
    symbol, side, market    instrument and direction (side: "long" / "short")
    timeframe, open_time    bar size and bar open time (int ms UTC)
    price, qty, notional    order or fill figures (quote currency: USDT)
    ml_probability          meta model p(take); threshold: its cut-off
    reasons                 list of short strings explaining a decision / block
    model_id                artifact id of the meta model used
    guard                   the risk guard that fired
    endpoint, status        exchange endpoint template and HTTP status
    latency_ms, attempt     request latency and retry attempt number
    weight_used, retry_after_s, error

Traces
------
:func:`configure_tracing` installs an SDK ``TracerProvider``; its exporter follows the standard
``OTEL_*`` variables (OTLP when ``OTEL_TRACES_EXPORTER=otlp`` or an ``OTEL_EXPORTER_OTLP_*ENDPOINT``
is set, ``console`` on request, none otherwise). :func:`span` opens a child of the current span.
"""

from __future__ import annotations

from atra.obs.logs import (
    FIELDS,
    LogFormat,
    Redactor,
    add_trace_ids,
    configure_logging,
    configure_logging_from,
    get_logger,
    reset_logging,
)
from atra.obs.metrics import Metrics, MetricsServer, start_metrics_server
from atra.obs.tracing import configure_tracing, get_tracer, shutdown_tracing, span

__all__ = [
    "FIELDS",
    "LogFormat",
    "Metrics",
    "MetricsServer",
    "Redactor",
    "add_trace_ids",
    "configure_logging",
    "configure_logging_from",
    "configure_tracing",
    "get_logger",
    "get_tracer",
    "reset_logging",
    "shutdown_tracing",
    "span",
    "start_metrics_server",
]
