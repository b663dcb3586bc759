"""The main job on the embedded default data: what `make demo` / `atra demo` runs.

Stage 1 lives in :func:`atra.data.demo.stage_data`; this module is stage 2.

Stage 1 (data): generate the deterministic synthetic market (or import a folder of real Parquet
files), store it through the validated store, re-check every dataset and summarise it.

Stage 2 (research loop, :func:`run_demo_loop`): features -> primary signals -> triple-barrier
labels -> walk-forward meta model (retrain and embargo from the config's ``meta`` section:
monthly, 24 h by default; first test window after 180 days) -> out-of-sample backtests of
primary-only vs meta-filtered vs buy-and-hold, after costs -> run record + HTML report. On the
synthetic data it runs on every generated symbol (spot, 1h, the whole 2.5 years); on real data
on :data:`REAL_DEMO_SYMBOLS` spot 1h from :data:`REAL_DEMO_START` to the end of the data (under
a minute on 2 cores); both can be narrowed with ``symbols`` / ``start_ms`` / ``end_ms``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

from atra.adapters.store import CandleStore
from atra.config import AtraConfig
from atra.core.synthetic.market import EXCHANGE as SYNTHETIC_EXCHANGE
from atra.core.types import Market, Timeframe
from atra.errors import ConfigError

if TYPE_CHECKING:  # the research stack (LightGBM, ...) loads when the loop runs
    from atra.research.evaluation.loop import StageProgress
    from atra.research.evaluation.result import Evaluation

REAL_DEMO_SYMBOLS: Final[tuple[str, ...]] = (
    "BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT",
    "DOGEUSDT", "LTCUSDT", "LINKUSDT", "AVAXUSDT", "DOTUSDT",
)  # fmt: skip
"""The real-data demo's universe: the ten spot pairs of ../shared/data (those stored)."""
REAL_DEMO_START: Final[str] = "2021-01-01"
"""First signal time of the real-data demo: four years to the data end, OOS from mid-2021
(every pair is listed by then); about half a minute on 2 cores."""
DEMO_MIN_TRAIN_DAYS: Final[int] = 180
DEMO_SEED: Final[int] = 7


def run_demo_loop(
    store: CandleStore,
    exchange: str,
    source: str,
    *,
    runs_dir: Path,
    symbols: Sequence[str] | None = None,
    start_ms: int | None = None,
    end_ms: int | None = None,
    config: AtraConfig | None = None,
    seed: int = DEMO_SEED,
    n_jobs: int = 2,
    progress: StageProgress | None = None,
) -> Evaluation:
    """Stage 2: the research loop on the staged data (see the module docstring); returns the
    evaluation with the run directory and the report path."""
    from atra.research.evaluation.loop import run_research_loop
    from atra.research.evaluation.settings import backtest_config_from
    from atra.research.pipeline import parse_time_ms, settings_from_config

    cfg = config or AtraConfig()
    settings = settings_from_config(cfg, Market.SPOT)
    settings = dataclasses.replace(
        settings,
        walkforward=dataclasses.replace(
            settings.walkforward,
            min_train_days=DEMO_MIN_TRAIN_DAYS,
        ),
    )
    synthetic = exchange == SYNTHETIC_EXCHANGE
    stored = sorted(
        {
            info.symbol
            for info in store.datasets()
            if info.kind == "candles"
            and info.exchange == exchange
            and info.market is Market.SPOT
            and info.timeframe is Timeframe.H1
        }
    )
    if symbols:
        chosen = list(symbols)
    elif synthetic:
        chosen = stored
    else:
        chosen = [s for s in REAL_DEMO_SYMBOLS if s in stored]
    if not synthetic and start_ms is None:
        start_ms = parse_time_ms(REAL_DEMO_START)
    if not chosen:
        raise ConfigError(f"demo: no {exchange} spot 1h symbol stored in {store.root}")
    return run_research_loop(
        store,
        exchange=exchange,
        symbols=chosen,
        market=Market.SPOT,
        timeframe=Timeframe.H1,
        start_ms=start_ms,
        end_ms=end_ms,
        settings=settings,
        backtest_config=backtest_config_from(cfg),
        runs_dir=runs_dir,
        seed=seed,
        n_jobs=n_jobs,
        notes={"source": source},
        progress=progress,
    )
