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
CORE_FILES = sorted((SRC / "core").rglob("*.py"))

FORBIDDEN_IN_CORE = {
    "atra.adapters",
    "atra.cli",
    "atra.live.loop",
    "atra.data.ingest",
    "atra.research.pipeline",
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


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: str(p.relative_to(SRC)))
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


# Imports run downward only: cli -> live | research | data -> sim | adapters -> obs -> config ->
# core -> errors. Each package may import the ones listed for it (and itself); the three apps
# never import each other.
APPS = ("atra.data", "atra.research", "atra.live")
ALLOWED: dict[str, set[str]] = {
    "atra.errors": set(),
    "atra.core": {"atra.errors"},
    "atra.config": {"atra.core", "atra.errors"},
    "atra.obs": {"atra.config", "atra.core", "atra.errors"},
    "atra.adapters": {"atra.obs", "atra.config", "atra.core", "atra.errors", "atra"},
    "atra.sim": {"atra.adapters", "atra.obs", "atra.config", "atra.core", "atra.errors"},
    "atra.data": {"atra.adapters", "atra.obs", "atra.config", "atra.core", "atra.errors"},
    "atra.research": {
        "atra.adapters",
        "atra.obs",
        "atra.config",
        "atra.core",
        "atra.errors",
        "atra",
    },
    "atra.api": {
        "atra.research",
        "atra.data",
        "atra.adapters",
        "atra.obs",
        "atra.config",
        "atra.core",
        "atra.errors",
        "atra",
    },
    "atra.live": {
        "atra.sim",
        "atra.adapters",
        "atra.obs",
        "atra.config",
        "atra.core",
        "atra.errors",
    },
}
"""``atra`` itself (the package root) is allowed where the version is read."""
SPLIT_FROM: dict[str, str] = {
    "atra.config_notify": "atra.config",
    "atra.config_live": "atra.config",
}
"""Modules split out of a package's module (its 500 lines), layered as that package."""


def _package_of(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    name = "atra." + rel.parts[0] if rel.parts else "atra"
    return SPLIT_FROM.get(name, name)


def _layer_violations(path: Path, package: str) -> list[str]:
    allowed = ALLOWED[package] | {package}
    bad = []
    for name in _imports(path):
        if name != "atra" and not name.startswith("atra."):
            continue
        top = name if name == "atra" else ".".join(name.split(".")[:2])
        top = SPLIT_FROM.get(top, top)
        if top not in allowed:
            bad.append(name)
    return bad


LAYERED_FILES = sorted(
    p
    for p in SRC.rglob("*.py")
    if (_package_of(p) in ALLOWED and p.name != "__init__.py")
    or (p.name == "__init__.py" and p.parent != SRC and _package_of(p) in ALLOWED)
)


@pytest.mark.parametrize("path", LAYERED_FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_run_downward(path: Path) -> None:
    package = _package_of(path)
    assert _layer_violations(path, package) == [], f"{path} imports above or beside {package}"


def test_every_package_is_layered() -> None:
    packages = {
        _package_of(p) for p in SRC.rglob("*.py") if p.parent != SRC or p.stem != "__init__"
    }
    assert packages - set(ALLOWED) == {"atra.cli"}, "a new package needs a rule in ALLOWED"


def test_layer_checker_catches_an_app_importing_another(tmp_path: Path) -> None:
    bad = tmp_path / "x.py"
    bad.write_text("from atra.research.pipeline import load_universe\nimport atra.core.exits\n")
    assert _layer_violations(bad, "atra.live") == ["atra.research.pipeline"]
    assert _layer_violations(bad, "atra.research") == []


@pytest.mark.parametrize(
    "package", sorted({p.parent for p in SRC.rglob("__init__.py")}), ids=lambda p: str(p)
)
def test_every_package_says_what_it_may_import(package: Path) -> None:
    doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text(encoding="utf-8")))
    assert doc, f"{package}/__init__.py has no docstring"


MAX_MODULE_LINES = 500


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_no_module_over_500_lines(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path.relative_to(SRC)} has {lines} lines"
