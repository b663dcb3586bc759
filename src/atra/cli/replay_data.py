"""What a replay (and a retrain's history) reads: candles and funding rates, from ``--data``
files (``{SYMBOL}_{market}_{tf}.parquet``, ``{SYMBOL}_perp_funding.parquet``) or the store under
``data.data_dir``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Final

from atra.cli.console import when
from atra.cli.selection import open_store
from atra.core.types import Market, Timeframe
from atra.errors import ConfigError, DataError

if TYPE_CHECKING:
    import pandas as pd

    from atra.config import AtraConfig

__all__ = ["DATA_DIR_SETTING", "read_candles", "read_candles_file", "read_funding"]

DATA_DIR_SETTING: Final[str] = "data.data_dir in the config / ATRA__DATA__DATA_DIR"


def read_candles_file(
    data: Path,
    market: Market,
    symbol: str,
    timeframe: Timeframe,
    start_ms: int,
    end_ms: int,
    needed_for: str = "",
) -> tuple[Path, pd.DataFrame]:
    """The ``data/{SYMBOL}_{market}_{tf}.parquet`` file and its candles opening in
    ``[start_ms, end_ms)``; a missing file is a :class:`DataError` naming it (and
    ``needed_for``, what needs it, when given)."""
    import pandas as pd

    path = data / f"{symbol}_{market.value}_{timeframe.value}.parquet"
    if not path.exists():
        why = f"; the model needs it for {needed_for}" if needed_for else ""
        raise DataError(f"replay data {path} does not exist{why}")
    frame = pd.read_parquet(path)
    keep = (frame["open_time"] >= start_ms) & (frame["open_time"] < end_ms)
    return path, frame[keep].reset_index(drop=True)


def read_candles(
    cfg: AtraConfig,
    symbols: tuple[str, ...],
    start_ms: int,
    end_ms: int,
    data: Path | None,
    asked: str = "",
) -> dict[str, pd.DataFrame]:
    """Candles for a replay: from ``data`` (``{SYMBOL}_{market}_{tf}.parquet`` files) or the
    store under ``data.data_dir``. ``asked`` is the range as the user typed it, for errors."""
    from atra.adapters.store import DatasetKey

    lv = cfg.live
    out: dict[str, pd.DataFrame] = {}
    for sym in symbols:
        if data is not None:
            _, frame = read_candles_file(data, lv.market, sym, lv.timeframe, start_ms, end_ms)
            where = str(data)
        else:
            store = open_store(cfg.data.data_dir, DATA_DIR_SETTING)
            key = DatasetKey(cfg.data.exchange, lv.market, sym, lv.timeframe)
            if not store.candle_path(key).exists():
                raise ConfigError(f"replay: {store.describe_missing(key)}")
            frame = store.read_candles(key, start_ms, end_ms)
            where = str(store.root)
        if frame.empty:
            raise ConfigError(
                f"replay data for {sym} {lv.market} {lv.timeframe} in {where}: no candles in the "
                f"requested range{', ' + asked if asked else ''} (read {when(start_ms)} .. "
                f"{when(end_ms)} UTC)"
            )
        out[sym] = frame
    return out


def read_funding(
    cfg: AtraConfig,
    symbols: tuple[str, ...],
    start_ms: int,
    end_ms: int,
    data: Path | None,
) -> dict[str, pd.DataFrame] | None:
    """Funding history of perpetuals for a replay (``{SYMBOL}_perp_funding.parquet`` files in
    ``data``, or the store); None when no symbol has any, an error when only some have."""
    if cfg.live.market is not Market.PERP:
        return None
    import pandas as pd

    from atra.adapters.store import CandleStore

    out: dict[str, pd.DataFrame] = {}
    store = CandleStore(cfg.data.data_dir)
    for sym in symbols:
        if data is not None:
            path = data / f"{sym}_perp_funding.parquet"
            if not path.exists():
                continue
            frame = pd.read_parquet(path)
            frame = frame[(frame["funding_time"] >= start_ms) & (frame["funding_time"] < end_ms)]
            out[sym] = frame.reset_index(drop=True)
        elif store.funding_path(cfg.data.exchange, sym).exists():
            out[sym] = store.read_funding(cfg.data.exchange, sym, start_ms, end_ms)
    if not out:
        return None
    missing = sorted(set(symbols) - set(out))
    if missing:
        raise DataError(f"replay funding: no funding history for {', '.join(missing)}")
    return out
