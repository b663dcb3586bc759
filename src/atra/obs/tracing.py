"""OpenTelemetry traces: :func:`configure_tracing` installs an SDK ``TracerProvider`` whose
exporter follows the standard ``OTEL_*`` variables (OTLP when ``OTEL_TRACES_EXPORTER=otlp`` or an
``OTEL_EXPORTER_OTLP_*ENDPOINT`` is set, ``console`` on request, none otherwise); :func:`span`
opens a child of the current span."""

from __future__ import annotations

import enum
import importlib
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Final

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

from atra.obs.logs import get_logger

__all__ = ["configure_tracing", "get_tracer", "shutdown_tracing", "span"]

_TRACER_NAME: Final[str] = "atra"
_log = get_logger("atra.obs")

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
