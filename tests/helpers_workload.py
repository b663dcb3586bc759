"""The benchmark workload's small synthetic set, generated once per test module by WORKLOAD.md's
own generator (/work/shared/bench/gen_data.py; tests using it skip when it is absent)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

GEN_DATA = Path(__file__).resolve().parents[2] / "shared" / "bench" / "gen_data.py"


def load_generator() -> ModuleType:
    """``gen_data.py`` as a module; skips the test when it is not beside the project."""
    if not GEN_DATA.exists():
        pytest.skip(f"{GEN_DATA} is not beside the project")
    spec = importlib.util.spec_from_file_location("atra_bench_gen_data", GEN_DATA)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def generate_small_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run ``gen_data.py --size small`` into a fresh temp folder; return the ``small`` folder."""
    gen = load_generator()
    out = tmp_path_factory.mktemp("bench")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "argv", ["gen_data.py", "--size", "small", "--out", str(out)])
        gen.main()
    return out / "small"
