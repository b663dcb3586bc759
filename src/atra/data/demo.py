"""Stage the demo's data: generate the deterministic synthetic market (or import a folder of real
Parquet files), store it through the validated store and re-check every dataset. The research
half of the demo is :func:`atra.research.demo.run_demo_loop`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from atra.adapters.store import CandleStore, DatasetKey
from atra.core.synthetic.market import EXCHANGE as SYNTHETIC_EXCHANGE
from atra.core.synthetic.market import SyntheticConfig, generate_market
from atra.core.types import Market
from atra.data.ingest import DatasetCheck, ProgressFn, check_datasets, import_files

REAL_EXCHANGE = "binance"
"""The exchange name real-data folders are imported under."""


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
