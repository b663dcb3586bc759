"""Every environment failure is one line and a non-zero exit, with the store untouched."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location(
    "failure_table", Path(__file__).parents[2] / "tools" / "failure_table.py"
)
assert _SPEC is not None
assert _SPEC.loader is not None
failure_table = importlib.util.module_from_spec(_SPEC)
sys.modules["failure_table"] = failure_table
_SPEC.loader.exec_module(failure_table)


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_each_failure_is_one_line_with_a_non_zero_exit(tmp_path: Path) -> None:
    if not (failure_table.SHARED / failure_table.SAMPLE).exists():
        pytest.skip("shared sample data not available")
    cases = failure_table.build_cases(tmp_path)
    before = _snapshot(tmp_path)
    outcomes = [failure_table.run_case(c, tmp_path) for c in cases]
    for o in outcomes:
        assert o.code not in (0, 1), (o.case.name, o.stderr_lines)
        assert len(o.stderr_lines) == 1, (o.case.name, o.stderr_lines)
        assert o.first_line.split(":")[0] in ("ConfigError", "DataError"), o.first_line
    by_name = {o.case.name: o for o in outcomes}
    assert "file too large" in by_name["import, file-size limit hit (disk full)"].first_line
    assert "corrupt compressed data" in by_name["import, corrupt zip"].first_line
    after = _snapshot(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before
    assert not any("store" in k and not k.endswith(".lock") for k in set(after) - set(before))
