"""The research loops take their keyword arguments as ``**args`` (one list for
:func:`run_research_loop` and :func:`run_ablation_loop`): a keyword they do not take, or a
required one left out, is still a TypeError naming it, before any data is read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from atra.adapters.store import CandleStore
from atra.config import AtraConfig
from atra.core.types import Market, Timeframe
from atra.research.ablation import run_ablation_loop
from atra.research.evaluation.loop import checked_loop_args, run_research_loop
from atra.research.evaluation.settings import backtest_config_from
from atra.research.pipeline import settings_from_config


def _args(tmp_path: Path) -> dict[str, Any]:
    cfg = AtraConfig()
    return {
        "exchange": "binance",
        "symbols": ["BTCUSDT"],
        "market": Market.SPOT,
        "timeframe": Timeframe.H1,
        "settings": settings_from_config(cfg, Market.SPOT),
        "backtest_config": backtest_config_from(cfg),
        "runs_dir": tmp_path / "runs",
        "seed": 7,
    }


def test_complete_args_pass_unchanged(tmp_path: Path) -> None:
    args = {**_args(tmp_path), "n_jobs": 1, "start_ms": None}
    assert checked_loop_args(args) is args  # type: ignore[arg-type]


@pytest.mark.parametrize("loop", [run_research_loop, run_ablation_loop])
def test_an_unknown_keyword_is_named(loop: Any, tmp_path: Path) -> None:
    store = CandleStore(tmp_path / "empty")
    with pytest.raises(TypeError, match="unexpected keyword argument 'n_job'"):
        loop(store, **_args(tmp_path), n_job=1)


@pytest.mark.parametrize("loop", [run_research_loop, run_ablation_loop])
def test_a_missing_required_keyword_is_named(loop: Any, tmp_path: Path) -> None:
    args = _args(tmp_path)
    del args["runs_dir"]
    with pytest.raises(TypeError, match="missing keyword argument 'runs_dir'"):
        loop(CandleStore(tmp_path / "empty"), **args)
