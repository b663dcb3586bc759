"""Structured logs (structlog + the standard-library root logger) and secret redaction; see
:mod:`atra.obs` for the event and field conventions."""

from __future__ import annotations

import enum
import logging
import re
import sys
from collections.abc import Iterable, Mapping, MutableMapping
from datetime import date, datetime
from pathlib import Path, PurePath
from typing import Any, Final, Literal, TextIO

import structlog
from opentelemetry import trace

from atra.config import AtraConfig
from atra.errors import ConfigError

__all__ = [
    "FIELDS",
    "STDLIB_FIELDS",
    "LogFormat",
    "Redactor",
    "RequestLogDemoter",
    "add_trace_ids",
    "configure_logging",
    "configure_logging_from",
    "get_logger",
    "reset_logging",
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

STDLIB_FIELDS: Final[tuple[str, ...]] = ("method", "endpoint", "status")
"""Fields a standard-library record may carry as ``extra`` into the rendered line (the
exchange transport's ``exchange_answer`` lines); other extras are left out."""

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
_HTTPX_LOGGER: Final[str] = "httpx"


class RequestLogDemoter(logging.Filter):
    """A filter for the ``httpx`` logger (notifications, series sources): its per-request line
    (``HTTP Request: METHOD URL "HTTP/1.1 STATUS REASON"``) is re-levelled from INFO to DEBUG
    when the status is below 400, and dropped unless that logger has DEBUG enabled. Lines for
    4xx/5xx answers and every other record pass unchanged."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.msg
        if record.levelno != logging.INFO or not (
            isinstance(msg, str) and msg.startswith("HTTP Request:")
        ):
            return True
        args = record.args
        status = args[3] if isinstance(args, tuple) and len(args) == 5 else None
        if not isinstance(status, int) or status >= 400:
            return True
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return logging.getLogger(_HTTPX_LOGGER).isEnabledFor(logging.DEBUG)


def demote_request_logs() -> None:
    """Install :class:`RequestLogDemoter` on the ``httpx`` logger (once per process)."""
    logger = logging.getLogger(_HTTPX_LOGGER)
    if not any(isinstance(f, RequestLogDemoter) for f in logger.filters):
        logger.addFilter(RequestLogDemoter())


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
        foreign_pre_chain=[structlog.stdlib.ExtraAdder(allow=STDLIB_FIELDS), *shared],
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
    demote_request_logs()
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
