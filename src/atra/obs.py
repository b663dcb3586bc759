"""Observability, configured in this module only: structlog logs, OpenTelemetry traces, and
(re-exported from :mod:`atra.obs_metrics`) the Prometheus metrics.

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

import enum
import importlib
import logging
import os
import re
import sys
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path, PurePath
from typing import Any, Final, Literal, TextIO

import structlog
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.util.types import AttributeValue

from atra.config import AtraConfig
from atra.errors import ConfigError
from atra.obs_metrics import Metrics, MetricsServer, start_metrics_server

__all__ = [
    "FIELDS",
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

LogFormat = Literal["auto", "json", "console"]

# fmt: off
FIELDS: Final[frozenset[str]] = frozenset({
    "run_id", "cycle_id", "trace_id", "span_id", "symbol", "side", "market", "timeframe",
    "open_time", "price", "qty", "notional", "ml_probability", "threshold", "reasons", "model_id",
    "guard", "endpoint", "status", "latency_ms", "attempt", "weight_used", "retry_after_s", "error",
})
# fmt: on
"""The field vocabulary of ATRA log events (besides timestamp, level, logger, event)."""

MASK: Final[str] = "***"
MIN_SECRET_LEN: Final[int] = 4
"""Configured secrets shorter than this are not searched for inside strings (too ambiguous)."""

_SENSITIVE_KEY = re.compile(
    r"api[_-]?key|apikey|secret|signature|token|passw(?:or)?d|authorization|cookie", re.IGNORECASE
)
_INLINE = (
    # query strings and form bodies: signature=..., apiKey=..., token=...
    re.compile(
        r"(?i)(\b(?:signature|api[_-]?key|apikey|api[_-]?secret|secret|token|password)=)"
        r"[^&\s\"',;]+"
    ),
    # header dumps: X-MBX-APIKEY: v, 'x-mbx-apikey': 'v', Authorization: Bearer v
    re.compile(r"(?i)(x-mbx-apikey[\"']?\s*[:=]\s*[\"']?)[^\s\"',;}&]+"),
    re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?(?:(?:bearer|basic)\s+)?)[^\s\"',;}&]+"),
)

_HANDLER_FLAG: Final[str] = "_atra_obs_handler"
_TRACER_NAME: Final[str] = "atra"
_log = structlog.stdlib.get_logger("atra.obs")


class Redactor:
    """structlog processor masking secrets; runs last before the renderer, on every event."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: tuple[str, ...] = ()
        self.add_secrets(secrets)

    def add_secrets(self, secrets: Iterable[str]) -> None:
        """Also mask these exact strings wherever they appear (longest first)."""
        merged = set(self._secrets) | {s for s in secrets if len(s) >= MIN_SECRET_LEN}
        self._secrets = tuple(sorted(merged, key=len, reverse=True))

    def __call__(
        self, logger: object, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        return {key: self._value(str(key), val) for key, val in event_dict.items()}

    def redact_text(self, text: str) -> str:
        """``text`` with configured secrets and inline credentials masked."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        for pattern in _INLINE:
            text = pattern.sub(lambda m: m.group(1) + MASK, text)
        return text

    def _value(self, key: str, value: object) -> object:
        if value is None or isinstance(value, bool):
            return value
        if _SENSITIVE_KEY.search(key):
            return MASK
        if isinstance(value, str):
            return self.redact_text(value)
        if isinstance(value, int | float):
            return value
        if isinstance(value, Mapping):
            return {str(k): self._value(str(k), v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self._value(key, v) for v in value]
        if isinstance(value, enum.Enum):
            return self._value(key, value.value)
        if isinstance(value, PurePath):
            return self.redact_text(str(value))
        if isinstance(value, datetime | date):
            return value.isoformat()
        return self.redact_text(repr(value))


def add_trace_ids(
    logger: object, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: ``trace_id``/``span_id`` (hex) of the current span, if any."""
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event_dict.setdefault("trace_id", format(ctx.trace_id, "032x"))
        event_dict.setdefault("span_id", format(ctx.span_id, "016x"))
    return event_dict


_LEAD_FIELDS: Final = ("timestamp", "level", "logger", "event")
_json_dumps = structlog.processors.JSONRenderer()


def _json_renderer(logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> str:
    """JSON line with timestamp, level, logger and event first (easier to scan and grep)."""
    ordered = {k: event_dict[k] for k in _LEAD_FIELDS if k in event_dict}
    ordered.update((k, v) for k, v in event_dict.items() if k not in ordered)
    return str(_json_dumps(logger, method_name, ordered))


def _is_tty(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty()) if callable(isatty) else False


def _formatter(
    renderer: structlog.types.Processor,
    shared: list[structlog.types.Processor],
    redactor: Redactor,
) -> structlog.stdlib.ProcessorFormatter:
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, redactor, renderer],
    )


def configure_logging(
    fmt: LogFormat = "auto",
    level: str | int = "INFO",
    log_file: Path | None = None,
    *,
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> Redactor:
    """Configure structlog and the stdlib root logger (idempotent: replaces the previous setup).

    ``fmt="auto"`` renders a pretty console when ``stream`` (default stdout) is a TTY, JSON lines
    otherwise; ``log_file`` additionally appends JSON lines there. ``secrets`` are masked
    everywhere. Returns the :class:`Redactor` so more secrets can be added later.
    """
    if fmt not in ("auto", "json", "console"):
        raise ConfigError(f"obs.log_format: expected auto, json or console, not {fmt!r}")
    out = sys.stdout if stream is None else stream
    resolved = ("console" if _is_tty(out) else "json") if fmt == "auto" else fmt
    reset_logging()
    redactor = Redactor(secrets)
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_trace_ids,
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]
    json_renderer = _json_renderer
    renderer: structlog.types.Processor = (
        json_renderer
        if resolved == "json"
        else structlog.dev.ConsoleRenderer(colors=_is_tty(out), sort_keys=True)
    )
    handlers: list[logging.Handler] = [logging.StreamHandler(out)]
    handlers[0].setFormatter(_formatter(renderer, shared, redactor))
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(log_file, encoding="utf-8")
        file_handler.setFormatter(_formatter(json_renderer, shared, redactor))
        handlers.append(file_handler)
    root = logging.getLogger()
    for handler in handlers:
        setattr(handler, _HANDLER_FLAG, True)
        root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.stdlib.PositionalArgumentsFormatter(),
            *shared,
            redactor,  # also here, so no handler ever sees an unredacted event dict
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    return redactor


def configure_logging_from(config: AtraConfig, stream: TextIO | None = None) -> Redactor:
    """:func:`configure_logging` from ``config.obs``, masking the configured exchange secrets."""
    obs = config.obs
    return configure_logging(
        obs.log_format, obs.log_level, obs.log_file, secrets=config.secret_values(), stream=stream
    )


def reset_logging() -> None:
    """Remove (and close) the handlers :func:`configure_logging` installed; reset structlog."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_FLAG, False):
            root.removeHandler(handler)
            handler.close()
    structlog.reset_defaults()


def get_logger(name: str = "atra") -> structlog.stdlib.BoundLogger:
    """A structlog logger routed through the configured processors."""
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger


# --------------------------------------------------------------------------- tracing

_provider: TracerProvider | None = None
_global_set = False


def configure_tracing(
    service_name: str = "atra",
    *,
    exporter: SpanExporter | None = None,
    env: Mapping[str, str] | None = None,
) -> TracerProvider:
    """Install an SDK tracer provider for ``service_name`` and return it.

    ``exporter`` (tests: ``InMemorySpanExporter``) is attached synchronously. Otherwise the
    exporters follow ``OTEL_TRACES_EXPORTER`` (``otlp``, ``console``, ``none``; default: ``otlp``
    when ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set, else
    none) read from ``env`` (``os.environ`` when ``None``); ``OTEL_SDK_DISABLED=true`` disables.
    """
    global _provider, _global_set
    environ = os.environ if env is None else env
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        for chosen in _exporters_from_env(environ):
            provider.add_span_processor(BatchSpanProcessor(chosen))
    _provider = provider
    if not _global_set:  # the OpenTelemetry global can be set once per process
        trace.set_tracer_provider(provider)
        _global_set = True
    return provider


def shutdown_tracing() -> None:
    """Flush and shut down the provider installed by :func:`configure_tracing`."""
    global _provider
    if _provider is not None:
        _provider.shutdown()
        _provider = None


def get_tracer() -> trace.Tracer:
    """The ATRA tracer: from :func:`configure_tracing`'s provider; a no-op one after
    :func:`shutdown_tracing`; the global (proxy) tracer when ATRA never configured tracing."""
    if _provider is not None:
        return _provider.get_tracer(_TRACER_NAME)
    if _global_set:
        return trace.NoOpTracer()
    return trace.get_tracer(_TRACER_NAME)


@contextmanager
def span(name: str, **attrs: object) -> Iterator[trace.Span]:
    """Open ``name`` as a child of the current span; exceptions are recorded and re-raised."""
    with get_tracer().start_as_current_span(name, attributes=_attributes(attrs)) as current:
        yield current


def _attributes(attrs: Mapping[str, object]) -> dict[str, AttributeValue]:
    out: dict[str, AttributeValue] = {}
    for key, value in attrs.items():
        if value is None:
            continue
        if isinstance(value, enum.Enum):
            value = value.value
        if isinstance(value, str | bool | int | float):
            out[key] = value
        elif isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            out[key] = [str(v) for v in value]
        else:
            out[key] = str(value)
    return out


_OTLP_MODULES: Final[dict[str, tuple[str, str]]] = {
    "http/protobuf": (
        "opentelemetry.exporter.otlp.proto.http.trace_exporter",
        "opentelemetry-exporter-otlp-proto-http",
    ),
    "grpc": (
        "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
        "opentelemetry-exporter-otlp-proto-grpc",
    ),
}


def _exporters_from_env(env: Mapping[str, str]) -> list[SpanExporter]:
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    names = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()]
    if not names and (
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    ):
        names = ["otlp"]
    exporters: list[SpanExporter] = []
    for name in names:
        if name == "none":
            return []
        if name == "console":
            exporters.append(ConsoleSpanExporter())
        elif name == "otlp":
            otlp = _otlp_exporter(env)
            if otlp is not None:
                exporters.append(otlp)
        else:
            _log.warning("trace_exporter_unknown", exporter=name, expected="otlp, console, none")
    return exporters


def _otlp_exporter(env: Mapping[str, str]) -> SpanExporter | None:
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if protocol not in _OTLP_MODULES:
        _log.warning("trace_exporter_unknown", protocol=protocol, expected="http/protobuf, grpc")
        return None
    module_name, package = _OTLP_MODULES[protocol]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        _log.warning(
            "trace_exporter_unavailable",
            exporter="otlp",
            protocol=protocol,
            error=f"{package} is not installed: traces are not exported (pip install {package})",
        )
        return None
    exporter: SpanExporter = module.OTLPSpanExporter()
    return exporter
