"""Architecture rules: the pure core does no I/O, and imports only run downward.

``atra.core`` must not import the I/O shell (adapters, CLI, live loop), network / disk / logging /
clock libraries, or read the environment. The checks parse the source, so they hold for code
paths no test executes.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "atra"
CORE_FILES = sorted((SRC / "core").glob("*.py"))

FORBIDDEN_IN_CORE = {
    "atra.adapters",
    "atra.cli",
    "atra.live",
    "atra.ingest",
    "atra.research",
    "atra.obs",
    "atra.config",
    "asyncio",
    "aiohttp",
    "aiosqlite",
    "httpx",
    "socket",
    "sqlite3",
    "logging",
    "structlog",
    "prometheus_client",
    "opentelemetry",
    "subprocess",
    "time",
    "os",
    "pathlib",
    "shutil",
    "tempfile",
    "urllib",
}
"""``time`` would let core read the clock; ``os``/``pathlib`` the disk and the environment."""

AMBIENT_READS = {"now", "utcnow", "today", "getenv", "environ", "monotonic", "perf_counter"}
"""Attribute names that read the clock or the environment (``datetime.now()``, ``os.environ``)."""


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _violations(path: Path) -> list[str]:
    bad = [
        f"{node.attr} (line {node.lineno})"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Attribute) and node.attr in AMBIENT_READS
    ]
    for name in _imports(path):
        for forbidden in FORBIDDEN_IN_CORE:
            if name == forbidden or name.startswith(forbidden + "."):
                bad.append(name)
    return bad


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: p.name)
def test_core_module_does_no_io(path: Path) -> None:
    assert _violations(path) == [], f"{path.name} imports I/O or shell modules"


def test_checker_catches_a_forbidden_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import os\nfrom atra.adapters.store import CandleStore\nimport numpy\n"
        "import datetime as dt\nx = dt.datetime.now()\n"
    )
    assert sorted(_violations(bad)) == ["atra.adapters.store", "now (line 5)", "os"]


def test_errors_module_imports_nothing_from_atra() -> None:
    assert not [n for n in _imports(SRC / "errors.py") if n.startswith("atra")]


def test_core_is_not_empty() -> None:
    assert len(CORE_FILES) >= 10
