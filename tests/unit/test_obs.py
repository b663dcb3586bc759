"""Observability: structlog setup and redaction, OpenTelemetry spans, Prometheus metrics."""

from __future__ import annotations

import enum
import importlib.util
import io
import json
import logging
import os
import re
import socket
import string
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client.parser import text_string_to_metric_families

from atra import obs
from atra.config import load_config
from atra.errors import ConfigError
from atra.obs import Metrics, Redactor, start_metrics_server

API_KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
API_SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"


class TTYStream(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _clean_obs() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    yield
    obs.reset_logging()
    obs.shutdown_tracing()
    structlog.contextvars.clear_contextvars()
    root.setLevel(level)


def ours() -> list[logging.Handler]:
    """The root handlers configure_logging installed (pytest adds its own)."""
    return [h for h in logging.getLogger().handlers if getattr(h, "_atra_obs_handler", False)]


def json_lines(buf: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buf.getvalue().splitlines() if line.strip()]


def configure_json(level: str = "DEBUG", secrets: tuple[str, ...] = ()) -> io.StringIO:
    buf = io.StringIO()
    obs.configure_logging("json", level, stream=buf, secrets=secrets)
    return buf


# ------------------------------------------------------------------ logging


def test_json_lines_carry_the_common_fields() -> None:
    buf = configure_json()
    structlog.contextvars.bind_contextvars(run_id="run-1", cycle_id=7)
    obs.get_logger("atra.live.loop").info("signal_generated", symbol="BTCUSDT", ml_probability=0.61)
    (line,) = json_lines(buf)
    assert line["event"] == "signal_generated"
    assert line["level"] == "info"
    assert line["logger"] == "atra.live.loop"
    assert (line["run_id"], line["cycle_id"]) == ("run-1", 7)
    assert (line["symbol"], line["ml_probability"]) == ("BTCUSDT", 0.61)
    assert line["timestamp"].endswith("Z")
    stamp = datetime.fromisoformat(line["timestamp"])
    assert stamp.utcoffset() is not None
    assert abs((datetime.now(UTC) - stamp).total_seconds()) < 60
    assert "trace_id" not in line  # no active span


def test_library_records_use_the_same_processors() -> None:
    buf = configure_json()
    structlog.contextvars.bind_contextvars(run_id="run-2")
    logging.getLogger("httpx").warning("HTTP Request: %s %s", "GET", "https://api/x")
    (line,) = json_lines(buf)
    assert line["event"] == "HTTP Request: GET https://api/x"
    assert (line["level"], line["logger"], line["run_id"]) == ("warning", "httpx", "run-2")
    assert line["timestamp"].endswith("Z")


def test_level_filters_structlog_and_library_records() -> None:
    buf = configure_json(level="warning")
    obs.get_logger().info("cycle_completed")
    logging.getLogger("lightgbm").info("noise")
    obs.get_logger().warning("cycle_late", latency_ms=1200)
    assert [line["event"] for line in json_lines(buf)] == ["cycle_late"]


@pytest.mark.parametrize(
    ("fmt", "stream_cls", "expect_json"),
    [
        ("auto", io.StringIO, True),
        ("auto", TTYStream, False),
        ("json", TTYStream, True),
        ("console", io.StringIO, False),
    ],
)
def test_format_selection(
    fmt: obs.LogFormat, stream_cls: type[io.StringIO], expect_json: bool
) -> None:
    stream = stream_cls()
    obs.configure_logging(fmt, stream=stream)
    obs.get_logger("atra.t").info("order_filled", symbol="ETHUSDT", price=1.5)
    text = stream.getvalue()
    assert "order_filled" in text
    if expect_json:
        assert json.loads(text)["price"] == 1.5
    else:
        with pytest.raises(json.JSONDecodeError):
            json.loads(text)
        plain = re.sub(r"\x1b\[[0-9;]*m", "", text)  # colours on a TTY
        assert "symbol=ETHUSDT" in plain
        assert ("\x1b[" in text) is (stream_cls is TTYStream)
        assert "info" in text


def test_unknown_format_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"obs\.log_format"):
        obs.configure_logging("xml", stream=io.StringIO())  # type: ignore[arg-type]


def test_log_file_gets_json_lines_and_reconfigure_closes_it(tmp_path: Path) -> None:
    log_file = tmp_path / "logs" / "nested" / "atra.jsonl"
    stream = io.StringIO()
    obs.configure_logging("console", "INFO", log_file, stream=stream, secrets=[API_KEY])
    obs.get_logger().info("cycle_completed", token=API_KEY, note=f"k={API_KEY}")
    file_handlers = [h for h in ours() if isinstance(h, logging.FileHandler)]
    assert len(file_handlers) == 1
    (line,) = [json.loads(x) for x in log_file.read_text().splitlines()]
    assert line["event"] == "cycle_completed"
    assert line["token"] == "***"
    assert "cycle_completed" in stream.getvalue()
    for text in (stream.getvalue(), log_file.read_text()):
        assert API_KEY not in text
    obs.configure_logging("json", stream=io.StringIO())
    assert file_handlers[0].stream is None  # closed by the reconfiguration
    assert len(ours()) == 1
    obs.reset_logging()
    assert ours() == []


@pytest.mark.parametrize("fmt", ["json", "console"])
@pytest.mark.parametrize("source", ["structlog", "stdlib"])
def test_exceptions_are_rendered_and_redacted(fmt: obs.LogFormat, source: str) -> None:
    stream = io.StringIO()
    obs.configure_logging(fmt, stream=stream, secrets=[API_SECRET])
    try:
        raise RuntimeError(f"signing failed with {API_SECRET}")
    except RuntimeError:
        if source == "structlog":
            obs.get_logger().exception("order_failed", symbol="BTCUSDT")
        else:
            logging.getLogger("aiohttp.client").exception("request to %s failed", API_SECRET)
    text = stream.getvalue()
    assert "Traceback" in text
    assert "RuntimeError: signing failed with ***" in text
    assert API_SECRET not in text


def test_json_lines_lead_with_timestamp_level_logger_event() -> None:
    buf = configure_json()
    obs.get_logger("atra.live.loop").info("order_filled", aaa=1, symbol="BTCUSDT")
    (line,) = json_lines(buf)
    assert list(line)[:4] == ["timestamp", "level", "logger", "event"]


# ------------------------------------------------------------------ redaction

SECRETS = st.text(string.ascii_letters + string.digits + "-_", min_size=12, max_size=64).filter(
    lambda s: any(c.isdigit() for c in s) and any(c.isalpha() for c in s)
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(key=SECRETS, secret=SECRETS, fmt=st.sampled_from(["json", "console"]))
def test_configured_secrets_never_appear_in_any_rendered_line(
    key: str, secret: str, fmt: obs.LogFormat
) -> None:
    stream = io.StringIO()
    obs.configure_logging(fmt, stream=stream, secrets=[key, secret])
    log = obs.get_logger("atra.exchange")
    url = f"https://fapi.binance.com/fapi/v1/order?symbol=BTCUSDT&timestamp=1&signature={secret}"
    log.info("request_sent", url=url, headers={"X-MBX-APIKEY": key, "Accept": "json"})
    log.info("request_failed", error=f"401 for key {key}", reasons=[f"sig {secret}", "x"])
    log.info("debug_dumped", payload={"nested": {"list": [key, {"deeper": secret}]}})
    log.info(f"weird_event_{key}", obj=Opaque(secret), raw=secret.encode())
    logging.getLogger("httpx").info("HTTP Request: POST %s %r", url, {"X-MBX-APIKEY": key})
    structlog.contextvars.bind_contextvars(cycle_id=key)
    log.info("cycle_started")
    structlog.contextvars.clear_contextvars()
    text = stream.getvalue()
    assert text.count("\n") >= 6
    assert key not in text
    assert secret not in text
    obs.reset_logging()


class Opaque:
    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"Opaque({self.value})"


def test_secrets_from_config_are_masked_everywhere(caplog: pytest.LogCaptureFixture) -> None:
    cfg = load_config(
        None,
        env={
            "ATRA__EXCHANGE__API_KEY": API_KEY,
            "ATRA__EXCHANGE__API_SECRET": API_SECRET,
            "ATRA__OBS__LOG_FORMAT": "json",
        },
    )
    stream = io.StringIO()
    obs.configure_logging_from(cfg, stream=stream)
    log = obs.get_logger()
    assert cfg.exchange.api_key is not None
    log.info("config_loaded", config=cfg.model_dump(), exchange=cfg.exchange)
    log.info("key_leaked_by_mistake", value=cfg.exchange.api_key.get_secret_value())
    log.warning(f"bad {API_SECRET}")
    text = stream.getvalue()
    assert len(json_lines(stream)) == 3
    # other handlers on the root logger (here pytest's) only ever see redacted event dicts
    assert len(caplog.records) == 3
    for rendered in (text, caplog.text, repr([r.msg for r in caplog.records])):
        assert API_KEY not in rendered
        assert API_SECRET not in rendered


@pytest.mark.parametrize(
    "key",
    ["api_key", "apiKey", "API-KEY", "secret", "api_secret", "signature", "token", "access_token",
     "password", "passwd", "Authorization", "X-MBX-APIKEY", "cookie"],
)  # fmt: skip
def test_values_of_sensitive_keys_are_masked(key: str) -> None:
    buf = configure_json()
    obs.get_logger().info("request_sent", **{key: "hunter2-plain"}, flag_key=True)
    (line,) = json_lines(buf)
    assert line[key] == "***"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("GET /api/v3/order?a=X&signature=abc123&ts=1", "GET /api/v3/order?a=X&signature=***&ts=1"),
        ("https://x/y?apiKey=k1&b=2", "https://x/y?apiKey=***&b=2"),
        ("headers={'X-MBX-APIKEY': 'k9k9k9'}", "headers={'X-MBX-APIKEY': '***'}"),
        ("X-MBX-APIKEY: k9k9k9 next", "X-MBX-APIKEY: *** next"),
        ("Authorization: Bearer eyJhbGc.x.y", "Authorization: Bearer ***"),
        ('{"authorization": "Basic dXNlcg=="}', '{"authorization": "Basic ***"}'),
        ("token=t0k&password=pw", "token=***&password=***"),
        ("nothing to hide here", "nothing to hide here"),
    ],
)  # fmt: skip
def test_inline_credentials_are_masked(text: str, expected: str) -> None:
    assert Redactor().redact_text(text) == expected


class Colour(enum.Enum):
    RED = "red"


def test_redactor_handles_every_value_type() -> None:
    red = Redactor(["s3cr3t-value", "abc"])  # "abc" is too short to search for
    out = red(
        None,
        "info",
        {
            "event": "x s3cr3t-value",
            "n": 3,
            "f": 0.5,
            "none": None,
            "flag": True,
            "api_key_set": False,
            "colour": Colour.RED,
            "path": Path("/tmp/s3cr3t-value/x"),
            "when": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
            "items": ("a", "s3cr3t-value"),
            "tags": {"abc"},
            "raw": b"s3cr3t-value",
            "mapping": {"password": "p", "inner": ["s3cr3t-value"]},
        },
    )
    assert out["event"] == "x ***"
    assert (out["n"], out["f"], out["none"], out["flag"], out["api_key_set"]) == (
        3,
        0.5,
        None,
        True,
        False,
    )
    assert out["colour"] == "red"
    assert out["path"] == "/tmp/***/x"
    assert out["when"] == "2026-01-02T03:04:05+00:00"
    assert out["items"] == ["a", "***"]
    assert out["tags"] == ["abc"]
    assert out["raw"] == "b'***'"
    assert out["mapping"] == {"password": "***", "inner": ["***"]}
    red.add_secrets(["late-secret"])
    assert red.redact_text("a late-secret b") == "a *** b"


# ------------------------------------------------------------------ tracing


def test_nested_spans_and_log_lines_share_the_trace() -> None:
    buf = configure_json()
    exporter = InMemorySpanExporter()
    obs.configure_tracing("atra-test", exporter=exporter)
    log = obs.get_logger("atra.live.loop")
    with obs.span("cycle", cycle_id=3) as outer:
        log.info("cycle_started")
        with obs.span("fetch_candles", symbol="BTCUSDT") as inner:
            log.info("candles_fetched", symbol="BTCUSDT")
            logging.getLogger("httpx").info("HTTP Request: GET /klines")
    log.info("outside")
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"cycle", "fetch_candles"}
    cycle, fetch = spans["cycle"], spans["fetch_candles"]
    assert cycle.parent is None
    assert fetch.parent is not None
    assert fetch.parent.span_id == cycle.context.span_id
    assert fetch.context.trace_id == cycle.context.trace_id
    assert cycle.resource.attributes["service.name"] == "atra-test"
    assert dict(fetch.attributes or {}) == {"symbol": "BTCUSDT"}
    trace_hex = format(cycle.context.trace_id, "032x")
    lines = {line["event"]: line for line in json_lines(buf)}
    assert lines["cycle_started"]["trace_id"] == trace_hex
    assert lines["cycle_started"]["span_id"] == format(outer.get_span_context().span_id, "016x")
    for event in ("candles_fetched", "HTTP Request: GET /klines"):
        assert lines[event]["trace_id"] == trace_hex
        assert lines[event]["span_id"] == format(inner.get_span_context().span_id, "016x")
    assert "trace_id" not in lines["outside"]


def test_span_attributes_are_coerced() -> None:
    exporter = InMemorySpanExporter()
    obs.configure_tracing(exporter=exporter)
    with obs.span(
        "decide",
        side=Colour.RED,
        skip=None,
        reasons=("a", "b"),
        n=2,
        p=0.5,
        ok=True,
        path=Path("x"),
    ):
        pass
    (done,) = exporter.get_finished_spans()
    assert dict(done.attributes or {}) == {
        "side": "red",
        "reasons": ("a", "b"),
        "n": 2,
        "p": 0.5,
        "ok": True,
        "path": "x",
    }


def test_exceptions_mark_the_span_as_failed() -> None:
    exporter = InMemorySpanExporter()
    obs.configure_tracing(exporter=exporter)
    with pytest.raises(ValueError, match="boom"), obs.span("cycle"):
        raise ValueError("boom")
    (done,) = exporter.get_finished_spans()
    assert done.status.status_code is StatusCode.ERROR
    assert [e.name for e in done.events] == ["exception"]


def test_without_tracing_spans_are_no_ops() -> None:
    obs.shutdown_tracing()
    buf = configure_json()
    with obs.span("cycle") as current:
        obs.get_logger().info("cycle_started")
        assert not current.get_span_context().is_valid
    (line,) = json_lines(buf)
    assert "trace_id" not in line


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"OTEL_TRACES_EXPORTER": "none"},
        {"OTEL_TRACES_EXPORTER": "console,none"},
        {"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "console"},
    ],
)
def test_no_exporter_unless_asked(env: dict[str, str], capfd: pytest.CaptureFixture[str]) -> None:
    provider = obs.configure_tracing(env=env)
    with obs.span("quiet_span"):
        pass
    provider.shutdown()
    assert "quiet_span" not in capfd.readouterr().out


def test_console_exporter_from_env() -> None:
    # ConsoleSpanExporter binds sys.stdout at import time: observe it in a child process
    code = (
        "from atra import obs\n"
        "provider = obs.configure_tracing('atra-console')\n"
        "with obs.span('printed_span'):\n"
        "    pass\n"
        "provider.shutdown()\n"
    )
    env = {**os.environ, "OTEL_TRACES_EXPORTER": "console"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert '"name": "printed_span"' in done.stdout
    assert '"service.name": "atra-console"' in done.stdout


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


@pytest.mark.parametrize(
    ("env", "event", "fragment"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "trace_exporter_unknown", "zipkin"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "carrier-pigeon"},
            "trace_exporter_unknown",
            "carrier-pigeon",
        ),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},  # noqa: E501
            "trace_exporter_unavailable",
            "pip install opentelemetry-exporter-otlp-proto-grpc",
        ),
    ],
)  # fmt: skip
def test_unusable_exporters_warn_and_run_without(
    env: dict[str, str], event: str, fragment: str
) -> None:
    exporter = "opentelemetry.exporter.otlp.proto.grpc"
    if event == "trace_exporter_unavailable" and _importable(exporter):
        pytest.skip("the grpc OTLP exporter is installed here")
    buf = configure_json()
    provider = obs.configure_tracing(env=env)
    with obs.span("unexported"):
        pass
    provider.shutdown()
    (line,) = json_lines(buf)
    assert (line["event"], line["level"]) == (event, "warning")
    assert fragment in json.dumps(line)


class _OtlpSink(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, self.headers["Content-Type"], body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_otlp_http_exporter_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http.trace_exporter")
    _OtlpSink.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OtlpSink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
        monkeypatch.setenv("NO_PROXY", "*")
        provider = obs.configure_tracing("atra-otlp")
        with obs.span("exported_span"):
            pass
        provider.shutdown()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert len(_OtlpSink.received) == 1
    path, content_type, body = _OtlpSink.received[0]
    assert path == "/v1/traces"
    assert content_type == "application/x-protobuf"
    assert b"exported_span" in body
    assert b"atra-otlp" in body


# ------------------------------------------------------------------ metrics

EXPECTED_FAMILIES = {
    "atra_cycle_duration_seconds": ("histogram", set()),
    "atra_cycles": ("counter", {"status"}),
    "atra_candle_age_seconds": ("gauge", {"symbol"}),
    "atra_exchange_requests": ("counter", {"endpoint", "status"}),
    "atra_exchange_request_duration_seconds": ("histogram", {"endpoint"}),
    "atra_ratelimit_weight_used": ("gauge", {"market"}),
    "atra_ratelimit_weight_limit": ("gauge", {"market"}),
    "atra_ratelimit_wait_seconds": ("counter", {"market"}),
    "atra_retries": ("counter", {"endpoint"}),
    "atra_signals": ("counter", {"symbol", "side", "decision"}),
    "atra_meta_probability": ("histogram", set()),
    "atra_open_positions": ("gauge", set()),
    "atra_equity_usdt": ("gauge", set()),
    "atra_daily_pnl_usdt": ("gauge", set()),
    "atra_risk_guard_breaches": ("counter", {"guard"}),
    "atra_errors": ("counter", {"type"}),
    "atra_notifications": ("counter", {"destination", "event", "outcome"}),
    "atra_stream_messages": ("counter", {"market"}),
    "atra_stream_reconnects": ("counter", {"market", "reason"}),
    "atra_stream_backfilled_bars": ("counter", {"market"}),
    "atra_stream_duplicate_bars": ("counter", {"market"}),
    "atra_stream_lag_seconds": ("histogram", {"market"}),
}


def exercise(m: Metrics) -> None:
    m.cycle_duration_seconds.observe(0.3)
    m.cycles_total.labels(status="ok").inc()
    m.candle_age_seconds.labels(symbol="BTCUSDT").set(2.5)
    m.exchange_requests_total.labels(endpoint="/fapi/v1/klines", status="200").inc(3)
    m.exchange_request_duration_seconds.labels(endpoint="/fapi/v1/klines").observe(0.08)
    m.ratelimit_weight_used.labels(market="perp").set(120)
    m.ratelimit_weight_limit.labels(market="perp").set(2400)
    m.ratelimit_wait_seconds_total.labels(market="perp").inc(1.5)
    m.retries_total.labels(endpoint="/fapi/v1/klines").inc()
    m.signals_total.labels(symbol="BTCUSDT", side="long", decision="taken").inc()
    m.signals_total.labels(symbol="ETHUSDT", side="short", decision="blocked").inc(2)
    m.meta_probability.observe(0.62)
    m.open_positions.set(1)
    m.equity_usdt.set(10_250.5)
    m.daily_pnl_usdt.set(-12.25)
    m.risk_guard_breaches_total.labels(guard="max_positions").inc()
    m.errors_total.labels(type="TransientExchangeError").inc()
    m.notifications_total.labels(destination="telegram", event="guard", outcome="sent").inc()
    m.stream_messages_total.labels(market="perp").inc(100)
    m.stream_reconnects_total.labels(market="perp", reason="planned").inc()
    m.stream_backfilled_bars_total.labels(market="perp").inc(2)
    m.stream_duplicate_bars_total.labels(market="perp").inc()
    m.stream_lag_seconds.labels(market="perp").observe(0.04)


def test_metric_families_names_types_and_labels() -> None:
    m = Metrics()
    exercise(m)
    found = {}
    for family in m.registry.collect():
        labels: set[str] = set()
        for sample in family.samples:
            labels |= set(sample.labels) - {"le"}
        found[family.name] = (family.type, labels)
    assert found == EXPECTED_FAMILIES
    assert all(name.startswith("atra_") for name in m.sample_names())
    assert "atra_meta_probability_bucket" in m.sample_names()
    assert "atra_signals_total" in m.sample_names()


def test_registries_are_independent() -> None:
    a, b = Metrics(), Metrics()
    a.open_positions.set(3)
    assert a.registry.get_sample_value("atra_open_positions") == 3
    assert b.registry.get_sample_value("atra_open_positions") == 0
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Metrics(a.registry)


def test_probability_buckets_span_zero_to_one() -> None:
    m = Metrics()
    for p in (0.0, 0.049, 0.5, 1.0):
        m.meta_probability.observe(p)
    value = m.registry.get_sample_value
    assert value("atra_meta_probability_bucket", {"le": "0.05"}) == 2
    assert value("atra_meta_probability_bucket", {"le": "0.5"}) == 3
    assert value("atra_meta_probability_bucket", {"le": "1.0"}) == 4
    assert value("atra_meta_probability_count") == 4


def test_metrics_are_scraped_over_http() -> None:
    m = Metrics()
    exercise(m)
    handle = start_metrics_server(m, host="127.0.0.1", port=0)
    try:
        assert handle.port > 0
        with httpx.Client(trust_env=False, timeout=5.0) as client:
            resp = client.get(handle.url)
        assert resp.status_code == 200
        families = {
            f.name: f
            for f in text_string_to_metric_families(resp.text)
            if not f.name.endswith("_created")  # creation timestamps of counters/histograms
        }
        assert set(families) == set(EXPECTED_FAMILIES)
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for f in families.values()
            for s in f.samples
        }
        key = (
            "atra_signals_total",
            (("decision", "blocked"), ("side", "short"), ("symbol", "ETHUSDT")),
        )
        assert samples[key] == 2.0
        assert samples[("atra_equity_usdt", ())] == 10_250.5
        assert samples[("atra_daily_pnl_usdt", ())] == -12.25
        assert samples[("atra_candle_age_seconds", (("symbol", "BTCUSDT"),))] == 2.5
    finally:
        handle.stop()
    with httpx.Client(trust_env=False, timeout=2.0) as client, pytest.raises(httpx.ConnectError):
        client.get(handle.url)


def test_busy_port_is_a_config_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            start_metrics_server(Metrics(), port=port)


# ------------------------------------------------------------------ deploy files

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "atra.json"
PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "inf", "nan"}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names referenced by a PromQL expression (functions, labels, durations removed)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    e = re.sub(r"\{[^}]*\}", "", e)  # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)  # ranges and subqueries
    e = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    names = set()
    for m in re.finditer(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*", e):
        if e[m.end() :].lstrip().startswith("(") or m.group() in PROMQL_WORDS:
            continue  # a function or aggregation
        names.add(m.group())
    return names


def dashboard_queries(node: Any) -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                found.append(value)
            elif key == "definition" and isinstance(value, str):
                found.extend(re.findall(r"label_values\(\s*([A-Za-z_:][\w:]*)", value))
            else:
                found.extend(dashboard_queries(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(dashboard_queries(item))
    return found


def test_promql_extraction() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, endpoint) (rate(atra_x_bucket{a="b",c=~"$d"}'
        "[$__rate_interval]))) / on(x) group_left(y) foo:bar offset 1h > bool 1e3"
    )
    assert promql_metric_names(expr) == {"atra_x_bucket", "foo:bar"}


def test_dashboard_uses_only_defined_metrics_and_all_of_them() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    defined = Metrics().sample_names()
    queries = dashboard_queries(dashboard)
    assert len(queries) >= 15
    used: set[str] = set()
    for query in queries:
        names = promql_metric_names(query)
        assert names, f"no metric in {query!r}"
        unknown = names - defined
        assert not unknown, f"{query!r} uses metrics not defined in atra.obs.Metrics: {unknown}"
        used |= names
    families = {f.name for f in Metrics().registry.collect()}
    for family in families:
        assert any(name.startswith(family) for name in used), f"{family} has no panel"


def test_dashboard_layout() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    panels = dashboard["panels"]
    titles = {p["title"] for p in panels}
    for required in (
        "Cycle duration p50 / p99",
        "Cycles by status",
        "Candle age (staleness)",
        "Request latency p50 / p99 by endpoint",
        "Rate-limit headroom",
        "Signals taken vs blocked per symbol",
        "Meta probability distribution",
        "Equity",
        "Drawdown",
        "Open positions",
        "Daily P&L",
        "Risk-guard breaches",
        "Errors by type",
    ):
        assert required in titles
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in panels:  # no two panels overlap on the 24-column grid
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not mine & cells, p["title"]
        cells |= mine
    yaml = pytest.importorskip("yaml")
    datasources = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    uid = datasources["datasources"][0]["uid"]
    for p in panels:
        if p["type"] != "row":
            assert p["datasource"]["uid"] == uid
            assert all(t["datasource"]["uid"] == uid for t in p["targets"])


def test_prometheus_scrapes_the_live_metrics_port() -> None:
    yaml = pytest.importorskip("yaml")
    port = load_config(None, env={}).live.metrics_port
    compose = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    host = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.host.yml").read_text())
    targets = [
        t
        for cfg in (compose, host)
        for job in cfg["scrape_configs"]
        for sc in job["static_configs"]
        for t in sc["targets"]
    ]
    assert targets == [f"atra:{port}", f"127.0.0.1:{port}"]


def test_compose_file_is_consistent() -> None:
    yaml = pytest.importorskip("yaml")
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"atra", "prometheus", "grafana"}
    atra = services["atra"]
    assert (ROOT / atra["build"]["dockerfile"]).exists()
    assert atra["environment"]["ATRA__LIVE__METRICS_PORT"] == str(
        load_config(None, env={}).live.metrics_port
    )
    assert "ports" not in atra  # metrics stay on the compose network
    for svc in services.values():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), volume
        for port in svc.get("ports", []):
            assert port.startswith("127.0.0.1:"), "published ports bind to loopback only"


def test_dockerfile_runs_atra_as_non_root() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.MULTILINE)
    user = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert user
    assert not user[-1].startswith(("root", "0"))
    assert 'ENTRYPOINT ["atra"]' in text
    assert "pip install" in text


def test_systemd_unit() -> None:
    pairs = [
        tuple(line.split("=", 1))
        for line in (DEPLOY / "systemd" / "atra-live.service").read_text().splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    ]
    unit = {k.strip(): v.strip() for k, v in pairs}
    assert unit["Restart"] == "on-failure"
    assert unit["KillSignal"] == "SIGTERM"
    assert unit["TimeoutStopSec"] == "20"
    assert unit["EnvironmentFile"] == "/etc/atra/atra.env"
    assert unit["User"] != "root"
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "RestrictSUIDSGID"):
        assert unit[key] == "yes"
    assert unit["ProtectSystem"] == "strict"
    assert "MemoryDenyWriteExecute" not in unit  # numba's JIT needs W+X pages
    assert unit["ExecStart"].split()[1:3] == ["live", "--config"]


def test_release_workflow() -> None:
    yaml = pytest.importorskip("yaml")
    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "release.yml").read_text())
    trigger = wf.get("on", wf.get(True))  # YAML 1.1 reads a bare `on` as a boolean
    assert trigger == {"push": {"tags": ["v*"]}}
    jobs = wf["jobs"]
    runs = [step.get("run", "") for step in jobs["test"]["steps"]]
    assert any("make test" in r for r in runs)
    assert jobs["build"]["needs"] == "test"
    assert jobs["publish-pypi"]["needs"] == "build"
    assert jobs["publish-pypi"]["permissions"] == {"id-token": "write"}
    uses = [s.get("uses", "") for s in jobs["publish-pypi"]["steps"]]
    assert any(u.startswith("pypa/gh-action-pypi-publish@") for u in uses)
    image = jobs["image"]
    assert image["needs"] == "test"
    assert image["permissions"]["packages"] == "write"
    push = next(s for s in image["steps"] if s.get("uses", "").startswith("docker/build-push"))
    assert push["with"]["file"] == "deploy/Dockerfile"
    assert push["with"]["push"] is True
    for job in jobs.values():
        for step in job["steps"]:
            if "uses" in step:
                assert "@" in step["uses"], "every action is pinned"


def test_field_vocabulary_is_documented() -> None:
    doc = obs.__doc__ or ""
    for field in obs.FIELDS:
        assert re.search(rf"\b{field}\b", doc), f"{field} is missing from the module docstring"


@pytest.mark.parametrize(("level", "kept"), [("INFO", [503]), ("DEBUG", [200, 503])])
def test_httpx_request_lines_below_400_are_debug(level: str, kept: list[int]) -> None:
    buf = configure_json(level)
    httpx_log = logging.getLogger("httpx")
    for status in (200, 503):  # httpx's own call: method, URL, HTTP version, status, reason
        httpx_log.info('HTTP Request: %s %s "%s %d %s"', "POST", "https://x/", "HTTP/1.1",
                       status, "OK")  # fmt: skip
    lines = [line for line in json_lines(buf) if line["logger"] == "httpx"]
    assert [int(line["event"].split()[-2]) for line in lines] == kept
    assert [line["level"] for line in lines] == ["debug"] * (len(kept) - 1) + ["info"]


def test_exchange_answer_fields_reach_the_line_and_other_extras_do_not() -> None:
    buf = configure_json("DEBUG")
    logging.getLogger("atra.exchange.http").debug(
        "exchange_answer",
        extra={"method": "GET", "endpoint": "/fapi/v1/klines", "status": 200, "color": "x"},
    )
    (line,) = [line for line in json_lines(buf) if line["event"] == "exchange_answer"]
    assert (line["method"], line["endpoint"], line["status"]) == ("GET", "/fapi/v1/klines", 200)
    assert "color" not in line
