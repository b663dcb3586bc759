"""The main job on the embedded default data: what `make demo` / `atra demo` runs.

Stage 1 (data): generate the deterministic synthetic market (or import a folder of real Parquet
files), store it through the validated store, re-check every dataset and summarise it.

Stage 2 (research loop, :func:`run_demo_loop`): features -> primary signals -> triple-barrier
labels -> walk-forward meta model (monthly retrain, 48 h embargo, first test window after 180
days) -> out-of-sample backtests of primary-only vs meta-filtered vs buy-and-hold, after costs
-> run record + HTML report. On the synthetic data it runs on every generated symbol (spot,
1h, the whole 2.5 years); on real data on :data:`REAL_DEMO_SYMBOLS` spot 1h from
:data:`REAL_DEMO_START` to the end of the data (under a minute on 2 cores); both can be
narrowed with ``symbols`` / ``start_ms`` / ``end_ms``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from atra.adapters.store import CandleStore, DatasetKey
from atra.config import AtraConfig
from atra.core.synthetic import EXCHANGE as SYNTHETIC_EXCHANGE
from atra.core.synthetic import SyntheticConfig, generate_market
from atra.core.types import Market, Timeframe
from atra.errors import ConfigError
from atra.ingest import DatasetCheck, ProgressFn, check_datasets, import_files

if TYPE_CHECKING:  # the research stack (LightGBM, ...) loads when the loop runs
    from atra.evaluation import Evaluation, StageProgress

REAL_EXCHANGE = "binance"
REAL_DEMO_SYMBOLS: Final[tuple[str, ...]] = (
    "BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT",
    "DOGEUSDT", "LTCUSDT", "LINKUSDT", "AVAXUSDT", "DOTUSDT",
)  # fmt: skip
"""The real-data demo's universe: the ten spot pairs of ../shared/data (those stored)."""
REAL_DEMO_START: Final[str] = "2021-01-01"
"""First signal time of the real-data demo: four years to the data end, OOS from mid-2021
(every pair is listed by then); about half a minute on 2 cores."""
DEMO_RETRAIN_DAYS: Final[int] = 30
DEMO_EMBARGO_HOURS: Final[float] = 48.0
DEMO_MIN_TRAIN_DAYS: Final[int] = 180
DEMO_SEED: Final[int] = 7


@dataclass(frozen=True, slots=True)
class DemoData:
    """The datasets the demo stored and their validation reports."""

    exchange: str
    """``synthetic`` for the embedded data, ``binance`` for an imported folder."""
    source: str
    """Human description of where the data came from."""
    checks: list[DatasetCheck]
    rows_added: int

    @property
    def synthetic(self) -> bool:
        return self.exchange == SYNTHETIC_EXCHANGE


def stage_data(
    store: CandleStore,
    *,
    data: Path | None = None,
    config: SyntheticConfig | None = None,
    progress: ProgressFn | None = None,
) -> DemoData:
    """Store the demo data (synthetic by default, or the Parquet files in ``data``) and check it.

    Idempotent: running it twice stores nothing new the second time.
    """
    if data is not None:
        outcomes = import_files(store, [data], exchange=REAL_EXCHANGE, progress=progress)
        added = sum(o.merge.rows_added for o in outcomes)
        checks = check_datasets(store, exchange=REAL_EXCHANGE, progress=progress)
        return DemoData(REAL_EXCHANGE, f"real data from {data}", checks, added)

    cfg = config or SyntheticConfig()
    market = generate_market(cfg)
    added = 0
    total = 3 * len(cfg.symbols)
    done = 0
    for symbol in cfg.symbols:
        for mkt, frames in ((Market.SPOT, market.spot), (Market.PERP, market.perp)):
            key = DatasetKey(SYNTHETIC_EXCHANGE, mkt, symbol, cfg.timeframe)
            added += store.write_candles(
                key, frames[symbol], source="synthetic generator"
            ).rows_added
            done += 1
            if progress is not None:
                progress(done, total, f"{symbol} {mkt}")
        added += store.write_funding(
            SYNTHETIC_EXCHANGE, symbol, market.funding[symbol], source="synthetic generator"
        ).rows_added
        done += 1
        if progress is not None:
            progress(done, total, f"{symbol} funding")
    checks = check_datasets(store, exchange=SYNTHETIC_EXCHANGE, progress=progress)
    source = (
        f"synthetic market (seed {cfg.seed}, {len(cfg.symbols)} symbols, "
        f"{cfg.bars:,} x {cfg.timeframe} bars from {cfg.start})"
    )
    return DemoData(SYNTHETIC_EXCHANGE, source, checks, added)


def run_demo_loop(
    store: CandleStore,
    staged: DemoData,
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
    from atra.evaluation import backtest_config_from, run_research_loop
    from atra.research import parse_time_ms, settings_from_config

    cfg = config or AtraConfig()
    settings = settings_from_config(cfg)
    settings = dataclasses.replace(
        settings,
        walkforward=dataclasses.replace(
            settings.walkforward,
            retrain_days=DEMO_RETRAIN_DAYS,
            embargo_hours=DEMO_EMBARGO_HOURS,
            min_train_days=DEMO_MIN_TRAIN_DAYS,
        ),
    )
    stored = sorted(
        {
            c.info.symbol
            for c in staged.checks
            if c.info.kind == "candles"
            and c.info.market is Market.SPOT
            and c.info.timeframe is Timeframe.H1
        }
    )
    if symbols:
        chosen = list(symbols)
    elif staged.synthetic:
        chosen = stored
    else:
        chosen = [s for s in REAL_DEMO_SYMBOLS if s in stored]
    if not staged.synthetic and start_ms is None:
        start_ms = parse_time_ms(REAL_DEMO_START)
    if not chosen:
        raise ConfigError(f"demo: no {staged.exchange} spot 1h symbol stored in {store.root}")
    return run_research_loop(
        store,
        exchange=staged.exchange,
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
        notes={"source": staged.source},
        progress=progress,
    )
