"""A real Prometheus server for integration tests, and the Grafana dashboard's PromQL.

:func:`start_prometheus` runs the ``prometheus`` binary on a free loopback port with a 1 s
scrape interval. Scrape targets come from a file-based service discovery directory, so a test
adds its ``/metrics`` endpoint with :meth:`PromServer.add_target` while the server runs. Queries
go through Prometheus' HTTP API (``/api/v1/...``) exactly as Grafana sends them.

:func:`dashboard_queries` collects every PromQL expression of a Grafana dashboard JSON,
:func:`render_grafana` replaces Grafana's variables with concrete values and
:func:`metric_names` lists the metric names an expression selects.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

T = TypeVar("T")

READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0


class PromError(RuntimeError):
    """Prometheus did not start, or its HTTP API answered with an error."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the kernel's choice for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def prometheus_binary() -> str | None:
    """The ``prometheus`` executable on PATH, or ``None``."""
    return shutil.which("prometheus")


def prometheus_version(binary: str) -> str:
    """The first line of ``prometheus --version``."""
    out = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, timeout=10, check=True
    )
    return (out.stdout or out.stderr).splitlines()[0].strip()


def _duration(seconds: float) -> str:
    """A Prometheus duration in whole milliseconds (``100ms``, ``1000ms``)."""
    ms = round(seconds * 1000)
    if ms < 1:
        raise ValueError(f"scrape interval {seconds} s: expected at least 1 ms")
    return f"{ms}ms"


def scrape_config(targets_dir: Path, scrape_interval_s: float = 1.0) -> str:
    """prometheus.yml: one ``atra`` job whose targets are the JSON files in ``targets_dir``."""
    every = _duration(scrape_interval_s)
    return (
        "global:\n"
        f"  scrape_interval: {every}\n"
        f"  scrape_timeout: {every}\n"
        f"  evaluation_interval: {every}\n"
        "scrape_configs:\n"
        "  - job_name: atra\n"
        "    metrics_path: /metrics\n"
        "    file_sd_configs:\n"
        f"      - files: ['{targets_dir}/*.json']\n"
        "        refresh_interval: 1s\n"
    )


def poll(probe: Callable[[], T | None], timeout_s: float, what: str, interval_s: float = 0.2) -> T:
    """Call ``probe`` until it returns something other than ``None``; raise after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


@dataclass
class PromServer:
    """A running Prometheus: its process, HTTP base URL and working directory."""

    proc: subprocess.Popen[bytes]
    port: int
    workdir: Path
    client: httpx.Client = field(repr=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "prometheus.log"

    def log_tail(self, lines: int = 20) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    # ---- HTTP API ----------------------------------------------------------------------------

    def api(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """GET ``/api/v1/<path>``; the ``data`` member, or :class:`PromError` with its message."""
        resp = self.client.get(f"{self.base_url}/api/v1/{path}", params=params)
        try:
            body = resp.json()
        except ValueError:
            raise PromError(f"/api/v1/{path}: HTTP {resp.status_code}, not JSON") from None
        if resp.status_code != 200 or body.get("status") != "success":
            raise PromError(
                f"/api/v1/{path} {dict(params or {})}: HTTP {resp.status_code} "
                f"{body.get('errorType')}: {body.get('error')}"
            )
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Evaluate ``expr`` now (instant query); the result list (vector, or one scalar)."""
        data = self.api("query", {"query": expr})
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def values_by(self, expr: str, label: str) -> dict[str, float]:
        """``{series[label]: value}`` of an instant vector query."""
        return {r["metric"].get(label, ""): float(r["value"][1]) for r in self.query(expr)}

    def series(self, match: str, lookback_s: float = 600.0) -> list[dict[str, str]]:
        """Series matching ``match`` seen in the last ``lookback_s`` seconds."""
        now = time.time()
        found: list[dict[str, str]] = self.api(
            "series", {"match[]": match, "start": f"{now - lookback_s:.3f}", "end": f"{now:.3f}"}
        )
        return found

    def label_values(self, label: str, match: str) -> list[str]:
        """Values of ``label`` on the series matching ``match`` (Grafana's ``label_values``)."""
        values: list[str] = self.api(f"label/{label}/values", {"match[]": match})
        return values

    # ---- targets -----------------------------------------------------------------------------

    def add_target(self, host_port: str) -> None:
        """Start scraping ``http://host_port/metrics`` (file service discovery picks it up)."""
        name = host_port.replace(":", "_").replace(".", "_")
        tmp = self.workdir / "targets" / f".{name}.tmp"
        tmp.write_text(json.dumps([{"targets": [host_port]}]))
        tmp.replace(self.workdir / "targets" / f"{name}.json")  # atomic for the file watcher

    def wait_scraped(self, host_port: str, timeout_s: float = 15.0) -> None:
        """Wait until a scrape of ``host_port`` succeeded (``up == 1``) and is queryable."""

        def probe() -> bool | None:
            up = self.values_by(f'up{{instance="{host_port}"}}', "instance")
            return True if up.get(host_port) == 1.0 else None

        poll(probe, timeout_s, f"a successful scrape of {host_port}")

    # ---- lifecycle ---------------------------------------------------------------------------

    def stop(self) -> None:
        """SIGTERM, wait; SIGKILL if it does not exit within :data:`STOP_TIMEOUT_S`."""
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT_S)


def start_prometheus(binary: str, workdir: Path, scrape_interval_s: float = 1.0) -> PromServer:
    """Run ``binary`` on a free 127.0.0.1 port with its TSDB in ``workdir``; wait for
    ``/-/ready``. The caller must :meth:`PromServer.stop` it."""
    (workdir / "targets").mkdir(parents=True, exist_ok=True)
    (workdir / "data").mkdir(exist_ok=True)
    config = workdir / "prometheus.yml"
    config.write_text(scrape_config(workdir / "targets", scrape_interval_s))
    last_error = ""
    for _ in range(3):  # the free port can be taken between the check and the bind
        port = free_port()
        with (workdir / "prometheus.log").open("wb") as log:
            proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    "--storage.tsdb.retention.time=1h",
                    "--log.level=warn",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=workdir,
                env={**os.environ, "GOMAXPROCS": "2"},
            )
        server = PromServer(proc, port, workdir, httpx.Client(timeout=5.0, trust_env=False))
        try:
            _wait_ready(server)
        except PromError as exc:
            server.stop()
            last_error = str(exc)
            if "address already in use" not in last_error:
                raise
            continue
        return server
    raise PromError(last_error)


def _wait_ready(server: PromServer) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        if server.proc.poll() is not None:
            raise PromError(
                f"prometheus exited with code {server.proc.returncode} before it was ready:\n"
                f"{server.log_tail()}"
            )
        with contextlib.suppress(httpx.TransportError):
            if server.client.get(f"{server.base_url}/-/ready").status_code == 200:
                return
        if time.monotonic() > deadline:
            raise PromError(
                f"prometheus not ready after {READY_TIMEOUT_S:.0f} s:\n{server.log_tail()}"
            )
        time.sleep(0.1)


# ---- Grafana dashboard -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DashboardQuery:
    """One query of a dashboard: where it is (panel title / variable name) and its text."""

    where: str
    text: str
    kind: str  # "expr" (panel target) or "variable" (templating query)


def _walk_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _walk_panels(panel.get("panels", []))


def dashboard_queries(dashboard: Mapping[str, Any]) -> list[DashboardQuery]:
    """Every panel target ``expr`` and every templating query of a Grafana dashboard."""
    found: list[DashboardQuery] = []
    for panel in _walk_panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            if target.get("expr"):
                where = f"panel {panel.get('title')!r} target {target.get('refId')}"
                found.append(DashboardQuery(where, target["expr"], "expr"))
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        query = var.get("query")
        text = query.get("query") if isinstance(query, dict) else query
        if text:
            found.append(DashboardQuery(f"variable ${var.get('name')}", str(text), "variable"))
    return found


_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")


def render_grafana(expr: str, values: Mapping[str, str]) -> str:
    """Replace ``$name``, ``${name}``, ``${name:fmt}`` and ``[[name]]`` with ``values[name]``;
    a variable without a value raises ``KeyError`` (so a new dashboard variable is noticed)."""

    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        if name not in values:
            raise KeyError(f"Grafana variable ${name} in {expr!r} has no test value")
        return values[name]

    return _VARIABLE.sub(sub, expr)


_LABEL_VALUES = re.compile(
    r"^\s*label_values\(\s*(?:(?P<match>.+?)\s*,\s*)?(?P<label>\w+)\s*\)\s*$"
)


def parse_label_values(text: str) -> tuple[str | None, str]:
    """Grafana's ``label_values(selector, label)`` -> ``(selector or None, label)``."""
    m = _LABEL_VALUES.match(text)
    if m is None:
        raise ValueError(f"unsupported Grafana variable query {text!r}")
    return m.group("match"), m.group("label")


_KEYWORDS = frozenset(
    {
        "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
        "offset", "bool", "inf", "nan", "atan2",
    }
)  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_BRACES = re.compile(r"\{[^{}]*\}")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_IDENT = re.compile(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])(?!\s*\()")


def metric_names(expr: str) -> set[str]:
    """Metric names selected by a PromQL expression: identifiers that are not functions,
    keywords, label names inside ``{...}`` / ``by (...)``, strings or durations."""
    names = {m.group(1) for m in re.finditer(r'__name__\s*=\s*"([^"]+)"', expr)}
    text = _STRING.sub('""', expr)
    text = _BRACES.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = _RANGE.sub(" ", text)
    for m in _IDENT.finditer(text):
        word = m.group(1)
        if word.lower() not in _KEYWORDS:
            names.add(word)
    return names
