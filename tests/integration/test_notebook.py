"""``examples/quickstart.ipynb`` runs top to bottom in a fresh ``python3`` kernel (ipykernel of
this environment, as ``pip install -e '.[dev]'`` installs it) and prints what it promises."""

from __future__ import annotations

import math
import re
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "quickstart.ipynb"
BUDGET_S = 60.0
"""The notebook's promise: the whole loop in under a minute on 2 cores."""
LEG = re.compile(
    r"^(?P<leg>primary|meta-filtered): Sharpe (?P<sharpe>-?\d+\.\d+) "
    r"\(annualised x sqrt\((?P<bars>\d+)\)\), trades (?P<trades>\d+),",
    re.MULTILINE,
)


def _stdout(cell: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("name") == "stdout")


def test_notebook_is_stored_without_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    assert nb.metadata["kernelspec"]["name"] == "python3"


@pytest.mark.slow
def test_quickstart_runs_and_prints_its_results(tmp_path: Path) -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=int(BUDGET_S),
        resources={"metadata": {"path": str(tmp_path)}},
    )
    started = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - started
    assert elapsed < BUDGET_S

    printed = "\n".join(_stdout(c) for c in nb.cells if c.cell_type == "code")
    assert "same bars as the open_time frame: True" in printed
    assert "ignored columns: ('Adj Close',)" in printed
    assert re.search(r"refused: .*no time zone \(naive\)", printed)
    assert re.search(r"^\d+ primary signals$", printed, re.MULTILINE)

    legs = {m["leg"]: m for m in LEG.finditer(printed)}
    assert set(legs) == {"primary", "meta-filtered"}
    for leg in legs.values():
        assert int(leg["bars"]) == 8760  # 1h bars, 365-day year: sqrt(8760)
        assert math.isfinite(float(leg["sharpe"]))
        assert int(leg["trades"]) > 0
    assert int(legs["meta-filtered"]["trades"]) <= int(legs["primary"]["trades"])

    found = re.search(r"^run (?P<id>[0-9a-f]{12}) report: (?P<path>\S+)$", printed, re.MULTILINE)
    assert found is not None
    report = tmp_path / found["path"]
    assert report.parent.name == found["id"]
    assert "<html" in report.read_text(encoding="utf-8").lower()
