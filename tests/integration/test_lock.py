"""tools/lock.py: the closure it pins, the lock files it accepts, and what --check reports.

These run against the test environment itself (pip freeze of the running interpreter), which
``make test`` installs from constraints.txt with the dev and docs extras.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

LOCK = Path(__file__).resolve().parents[2] / "tools" / "lock.py"


@pytest.fixture(scope="module")
def lock() -> ModuleType:
    spec = importlib.util.spec_from_file_location("atra_tools_lock", LOCK)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_closure_follows_extras_and_transitive_requirements(lock: ModuleType) -> None:
    runtime = lock.closure("atra", ())
    full = lock.closure("atra", ("dev", "docs"))
    assert {"numpy", "pydantic", "typer"} <= set(runtime)
    assert "pydantic-core" in runtime, "a dependency of a dependency is pinned too"
    assert {"pytest", "mkdocs", "mkdocstrings-python"} <= set(full)
    assert "mkdocstrings-python" not in runtime
    assert "atra" not in full, "the project itself is never pinned"
    assert set(runtime) <= set(full)


def test_missing_distribution_is_named_with_who_needs_it(lock: ModuleType) -> None:
    with pytest.raises(lock.LockError, match=r"not-a-real-distribution-xyz .*not installed"):
        lock.closure("not-a-real-distribution-xyz", ())


def test_written_lock_checks_clean_and_a_dropped_or_moved_pin_is_reported(
    lock: ModuleType, tmp_path: Path
) -> None:
    pins = lock.lock()
    path = tmp_path / "constraints.txt"
    path.write_text(lock.render(pins), encoding="utf-8")
    assert lock.read_lock(path) == pins
    assert lock.check(path) == []

    numpy = pins["numpy"]
    text = path.read_text(encoding="utf-8")
    text = text.replace(f"numpy=={numpy}\n", "").replace("typer==", "typer==0.0.0+x\n# ")
    path.write_text(text, encoding="utf-8")
    problems = lock.check(path)
    assert any(p.startswith(f"{path}: numpy is not pinned (installed {numpy})") for p in problems)
    assert any(p.startswith(f"{path}: typer==0.0.0+x but") for p in problems)
    assert len(problems) == 2


@pytest.mark.parametrize("line", ["-e .", "numpy>=2", "numpy", "==1.0"])
def test_lock_lines_other_than_exact_pins_are_refused(
    lock: ModuleType, tmp_path: Path, line: str
) -> None:
    path = tmp_path / "constraints.txt"
    path.write_text(f"# header\npandas==3.0.0\n{line}\n", encoding="utf-8")
    with pytest.raises(lock.LockError, match=r"constraints\.txt:3: expected 'name==version'"):
        lock.read_lock(path)
