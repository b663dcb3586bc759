"""``tools/failure_table.py`` loaded as the module ``failure_table``: the failure cases, and the
bad-file builders and servers the tests of importers and downloads use too."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_PATH = Path(__file__).resolve().parents[1] / "tools" / "failure_table.py"

if "failure_table" in sys.modules:
    failure_table = sys.modules["failure_table"]
else:
    _SPEC = importlib.util.spec_from_file_location("failure_table", _PATH)
    assert _SPEC is not None
    assert _SPEC.loader is not None
    failure_table = importlib.util.module_from_spec(_SPEC)
    sys.modules["failure_table"] = failure_table  # its dataclasses resolve their module
    _SPEC.loader.exec_module(failure_table)

T0: int = failure_table.T0
H: int = failure_table.H
KLINE_HEADER: str = failure_table.KLINE_HEADER
candles = failure_table.candles
funding = failure_table.funding
snapshot = failure_table.snapshot
tcp_server = failure_table.tcp_server
drip_server = failure_table.drip_server
serving = failure_table.serving
