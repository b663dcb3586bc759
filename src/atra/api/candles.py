"""Candles for notebooks: :func:`load_candles` from a frame, a Parquet file or the store,
:func:`universe` to group them for the research steps, :func:`synthetic_market` for data that
needs no files.

Symbols are ccxt's (``BTC/USDT`` spot, ``BTC/USDT:USDT`` USDT-M perpetual) or the exchange's
(``BTCUSDT`` with ``market``), parsed by :func:`atra.core.symbols.parse_symbol`. Frames go
through :func:`atra.core.frame_input.candles_from_frame` (a tz-aware DatetimeIndex or ATRA's
int64 ``open_time``, any column case, extra columns ignored and listed) and the frame contract;
bad input is one :class:`~atra.errors.DataError` line naming the source, row and rule.
Times (``start`` / ``end``) are epoch ms, tz-aware timestamps or ISO strings, which are UTC as
everywhere in ATRA (``"2024-01-01"``); a naive timestamp is refused.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from atra.adapters.importers import verify_checksum
from atra.adapters.store import CandleStore, DatasetKey
from atra.core.features.registry import HISTORY_BARS
from atra.core.frame_input import candles_from_frame, funding_from_frame
from atra.core.frames import ValidationReport, ms_to_iso
from atra.core.symbols import SymbolRef, parse_symbol
from atra.core.synthetic.market import SyntheticConfig, SyntheticMarket, generate_market
from atra.core.types import Market, Timeframe
from atra.errors import ConfigError, DataError
from atra.research.dataset import SymbolData, Universe, parse_time_ms

__all__ = [
    "DEFAULT_EXCHANGE",
    "Candles",
    "TimeLike",
    "load_candles",
    "synthetic_market",
    "time_ms",
    "universe",
]

DEFAULT_EXCHANGE: Final[str] = "binance"
"""The exchange of data whose source does not say (the only exchange ATRA trades)."""
TimeLike = int | str | dt.datetime | pd.Timestamp
FrameOrPath = pd.DataFrame | str | Path


@dataclass(frozen=True, slots=True, eq=False)
class Candles:
    """One symbol's validated bars on one market and bar size, with its funding (perps)."""

    symbol: str
    market: Market
    timeframe: Timeframe
    frame: pd.DataFrame
    """The frame contract: ``open_time`` (int64 ms, bar open, UTC) ``open high low close
    volume`` (float64), RangeIndex."""
    report: ValidationReport
    """Rows, span, gaps (missing bars) and zero-volume bars, as validated."""
    exchange: str = DEFAULT_EXCHANGE
    funding: pd.DataFrame | None = None
    """``funding_time`` (int64 ms), ``funding_rate``: what a perpetual position pays."""
    source: str = ""
    ignored_columns: tuple[str, ...] = ()
    """Input columns that are not OHLCV (``Adj Close`` among them): not used."""

    def __len__(self) -> int:
        return len(self.frame)

    def to_pandas(self) -> pd.DataFrame:
        """The bars indexed by their UTC open time (a copy, for plots and pandas work)."""
        out = self.frame.drop(columns="open_time")
        out.index = pd.DatetimeIndex(
            pd.to_datetime(self.frame["open_time"].to_numpy(), unit="ms", utc=True),
            name="open_time",
        )
        return out

    def __repr__(self) -> str:
        rep = self.report
        span = (
            ""
            if rep.first_ms is None or rep.last_ms is None
            else (f", {ms_to_iso(rep.first_ms)}..{ms_to_iso(rep.last_ms)}")
        )
        funding = "" if self.funding is None else f", {len(self.funding)} funding events"
        return (
            f"Candles({self.exchange} {self.symbol} {self.market} {self.timeframe}: "
            f"{rep.rows} bars{span}, {rep.gap_count} gaps ({rep.missing_bars} bars missing)"
            f"{funding})"
        )


def time_ms(value: TimeLike | None, what: str) -> int | None:
    """``value`` as epoch ms: ints are ms, strings ISO (UTC), timestamps must be tz-aware."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ConfigError(f"{what}: expected a time, got {value!r}")
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, str):
        return parse_time_ms(value)
    if isinstance(value, dt.datetime):
        stamp = pd.Timestamp(value)
        if stamp.tzinfo is None:
            raise ConfigError(
                f"{what}: {value} has no time zone; give a tz-aware time or an ISO string "
                "(read as UTC)"
            )
        ns = int(stamp.tz_convert("UTC").as_unit("ns").value)
        if ns % 1_000_000:
            raise ConfigError(f"{what}: {value} is not a whole millisecond")
        return ns // 1_000_000
    raise ConfigError(
        f"{what}: expected epoch ms, an ISO string or a tz-aware datetime, got "
        f"{type(value).__name__}"
    )


def _timeframe(value: Timeframe | str | None) -> Timeframe | None:
    if value is None or isinstance(value, Timeframe):
        return value
    return Timeframe.parse(value)


def _in_range(
    frame: pd.DataFrame, col: str, start_ms: int | None, end_ms: int | None
) -> pd.DataFrame:
    """Rows with ``start_ms <= col < end_ms`` (the store's bounds), index reset."""
    times = frame[col].to_numpy(dtype=np.int64)
    keep = np.ones(times.size, dtype=bool)
    if start_ms is not None:
        keep &= times >= start_ms
    if end_ms is not None:
        keep &= times < end_ms
    if keep.all():
        return frame
    return frame.loc[keep].reset_index(drop=True)


def _read_parquet(path: Path) -> pd.DataFrame:
    verify_checksum(path)
    try:
        frame: pd.DataFrame = pq.read_table(path).to_pandas()
    except (OSError, pa.ArrowException) as exc:
        reason = " ".join(str(exc).split())
        raise DataError(f"{path}: not a readable Parquet file ({reason})") from None
    return frame


def _name_parts(path: Path) -> tuple[str, Market, Timeframe] | None:
    """``BTCUSDT_spot_1h.parquet`` -> ``(BTCUSDT, spot, 1h)``; None for other names."""
    parts = path.stem.split("_")
    if len(parts) != 3:
        return None
    try:
        return (
            parse_symbol(parts[0], parts[1]).symbol,
            Market.parse(parts[1]),
            Timeframe.parse(parts[2]),
        )
    except ConfigError:
        return None


def _resolve(
    symbol: str | None,
    market: Market | str | None,
    named: tuple[str, Market, Timeframe] | None,
    source: str,
) -> SymbolRef:
    if symbol is None:
        if named is None:
            raise ConfigError(f"{source}: give the symbol (e.g. 'BTC/USDT' or 'BTC/USDT:USDT')")
        ref = parse_symbol(named[0], market if market is not None else named[1])
    else:
        ref = parse_symbol(symbol, market)
    if named is not None and (ref.symbol, ref.market) != named[:2]:
        raise ConfigError(
            f"{source}: the file name says {named[0]} {named[1]}, but {ref} was asked for"
        )
    return ref


def _funding_frame(
    funding: FrameOrPath | None, ref: SymbolRef, end_ms: int | None
) -> pd.DataFrame | None:
    if funding is None:
        return None
    if ref.market is not Market.PERP:
        raise ConfigError(f"funding given for {ref}: funding is paid on perpetuals only")
    if isinstance(funding, pd.DataFrame):
        frame, source = funding, f"funding {ref.symbol}"
    else:
        path = Path(funding)
        if not path.is_file():
            raise DataError(f"{path}: no such funding file")
        frame, source = _read_parquet(path), str(path)
    return _in_range(funding_from_frame(frame, source=source).frame, "funding_time", None, end_ms)


def load_candles(
    source: FrameOrPath,
    symbol: str | None = None,
    *,
    market: Market | str | None = None,
    timeframe: Timeframe | str | None = None,
    exchange: str | None = None,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
    funding: FrameOrPath | None = None,
) -> Candles:
    """Validated candles of one symbol, from

    * a pandas frame: a tz-aware DatetimeIndex OHLCV frame (any column case) or ATRA's
      ``open_time`` frame (:mod:`atra.core.frame_input`); ``symbol`` is needed;
    * a Parquet file: the same layouts; ``BTCUSDT_spot_1h.parquet`` names its symbol, market
      and bar size (a ``.CHECKSUM`` beside it is verified);
    * a store directory (:class:`~atra.adapters.store.CandleStore`): ``symbol`` and
      ``timeframe`` are needed; a perpetual's stored funding comes along.

    ``timeframe`` defaults to the most common bar spacing (frames, files). ``start <= open
    time < end`` selects bars after validation of the whole input. ``funding`` (frame or
    Parquet file; perpetuals only) is what a position pays; kept up to ``end``.
    """
    tf = _timeframe(timeframe)
    start_ms, end_ms = _range(start, end)
    exch = exchange or DEFAULT_EXCHANGE
    if not isinstance(source, pd.DataFrame) and Path(source).is_dir():
        return _from_store(CandleStore(source), symbol, market, tf, exch, start_ms, end_ms, funding)
    if isinstance(source, pd.DataFrame):
        ref = _resolve(symbol, market, None, "load_candles")
        label = f"candles {ref.symbol} {ref.market}"
        raw = source
    else:
        path = Path(source)
        if not path.is_file():
            raise DataError(f"{path}: no such file or store directory")
        if path.suffix.lower() != ".parquet":
            raise DataError(f"{path}: expected a .parquet file or a store directory")
        named = _name_parts(path)
        ref = _resolve(symbol, market, named, str(path))
        if named is not None:
            if tf is not None and tf is not named[2]:
                raise ConfigError(f"{path}: the file name says {named[2]}, but {tf} was asked for")
            tf = named[2]
        label = str(path)
        raw = _read_parquet(path)
    got = candles_from_frame(raw, source=label, timeframe=tf)
    fund = _funding_frame(funding, ref, end_ms)
    frame = _in_range(got.frame, "open_time", start_ms, end_ms)
    if frame.empty:
        raise DataError(f"{label}: no bars in the range {_range_text(start_ms, end_ms)}")
    report = got.report if frame is got.frame else _report_of(frame, got.timeframe, label)
    return Candles(
        ref.symbol, ref.market, got.timeframe, frame, report, exch, fund, label, got.ignored_columns
    )


def _range(start: TimeLike | None, end: TimeLike | None) -> tuple[int | None, int | None]:
    start_ms, end_ms = time_ms(start, "start"), time_ms(end, "end")
    if start_ms is not None and end_ms is not None and end_ms <= start_ms:
        raise ConfigError(f"empty range: end {ms_to_iso(end_ms)} <= start {ms_to_iso(start_ms)}")
    return start_ms, end_ms


def _range_text(start_ms: int | None, end_ms: int | None) -> str:
    first = ms_to_iso(start_ms) if start_ms is not None else "start"
    last = ms_to_iso(end_ms) if end_ms is not None else "end"
    return f"[{first}, {last})"


def _report_of(frame: pd.DataFrame, tf: Timeframe, label: str) -> ValidationReport:
    return candles_from_frame(frame, source=label, timeframe=tf).report


def _from_store(
    store: CandleStore,
    symbol: str | None,
    market: Market | str | None,
    tf: Timeframe | None,
    exchange: str,
    start_ms: int | None,
    end_ms: int | None,
    funding: FrameOrPath | None,
) -> Candles:
    ref = _resolve(symbol, market, None, f"store {store.root}")
    if tf is None:
        raise ConfigError(f"store {store.root}: give the timeframe to read (e.g. '1h')")
    if funding is not None:
        raise ConfigError(
            f"store {store.root}: funding is read from the store; do not pass funding too"
        )
    key = DatasetKey(exchange, ref.market, ref.symbol, tf)
    if not store.candle_path(key).exists():
        raise DataError(
            f"no candles {key} in the store at {store.root} (expected {store.candle_path(key)})"
        )
    frame = store.read_candles(key, start_ms, end_ms)
    if frame.empty:
        raise DataError(f"{key}: no bars in the range {_range_text(start_ms, end_ms)}")
    got = candles_from_frame(frame, source=str(key), timeframe=tf)
    fund = None
    if ref.market is Market.PERP and store.funding_path(exchange, ref.symbol).exists():
        stored = store.read_funding(exchange, ref.symbol, None, end_ms)
        fund = stored if not stored.empty else None
    return Candles(ref.symbol, ref.market, tf, got.frame, got.report, exchange, fund, str(key))


# ---- the universe -----------------------------------------------------------------------------


def _same(candles: Sequence[Candles], what: str) -> None:
    first = candles[0]
    for c in candles[1:]:
        for attr in ("market", "timeframe", "exchange"):
            if getattr(c, attr) != getattr(first, attr):
                raise ConfigError(
                    f"{what}: {c.symbol} is {attr} {getattr(c, attr)}, {first.symbol} is "
                    f"{getattr(first, attr)} (a universe has one {attr})"
                )


def _cut(c: Candles, read_from: int | None, end_ms: int | None, what: str) -> pd.DataFrame:
    frame = _in_range(c.frame, "open_time", read_from, end_ms)
    if frame.empty:
        raise DataError(f"{what} {c.symbol}: no bars in the range {_range_text(read_from, end_ms)}")
    return frame


def universe(
    candles: Candles | Sequence[Candles],
    *,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
    btc: Candles | None = None,
    counterparts: Sequence[Candles] = (),
    warmup_bars: int = HISTORY_BARS,
) -> Universe:
    """The research universe of ``candles`` (one market, bar size and exchange), as
    :func:`atra.research.dataset.load_universe` builds it from the store.

    ``start`` is the first signal time; ``warmup_bars`` bars before it stay for the features'
    warm-up, earlier ones and those at or after ``end`` are not used. ``btc``: BTCUSDT of the
    same market and bar size as cross-asset context (taken from ``candles`` when listed there).
    ``counterparts``: the same symbols on the other market (basis features).
    """
    given = [candles] if isinstance(candles, Candles) else list(candles)
    if not given:
        raise ConfigError("universe: no candles given")
    if not all(isinstance(c, Candles) for c in given):
        raise ConfigError("universe: expected Candles from atra.load_candles")
    names = [c.symbol for c in given]
    if len(set(names)) != len(names):
        raise ConfigError(f"universe: duplicate symbols in {names}")
    if warmup_bars < 0:
        raise ConfigError(f"warmup_bars must be >= 0, got {warmup_bars}")
    _same(given, "universe")
    first = given[0]
    start_ms, end_ms = _range(start, end)
    read_from = None if start_ms is None else start_ms - warmup_bars * first.timeframe.ms
    others: dict[str, pd.DataFrame] = {}
    for c in counterparts:
        if c.symbol not in names or c.market is first.market or c.timeframe is not first.timeframe:
            raise ConfigError(
                f"counterpart {c.symbol} {c.market} {c.timeframe}: expected a symbol of the "
                f"universe on the other market at {first.timeframe}"
            )
        if c.symbol in others:
            raise ConfigError(f"counterpart {c.symbol} given twice")
        others[c.symbol] = _cut(c, read_from, end_ms, "counterpart")
    symbols = {
        c.symbol: SymbolData(
            c.symbol,
            _cut(c, read_from, end_ms, "candles"),
            None if c.funding is None else _in_range(c.funding, "funding_time", None, end_ms),
            others.get(c.symbol),
        )
        for c in given
    }
    btc_frame: pd.DataFrame | None = None
    if btc is not None:
        if "BTCUSDT" in symbols:
            raise ConfigError("universe: BTCUSDT is in the candles; do not pass btc too")
        _same([first, btc], "btc")
        btc_frame = _cut(btc, read_from, end_ms, "btc")
    elif "BTCUSDT" in symbols:
        btc_frame = symbols["BTCUSDT"].candles
    return Universe(
        first.exchange, first.market, first.timeframe, start_ms, end_ms, symbols, btc_frame
    )


def synthetic_market(
    symbols: Sequence[str] | None = None,
    *,
    bars: int | None = None,
    timeframe: Timeframe | str | None = None,
    seed: int | None = None,
    start: str | None = None,
) -> SyntheticMarket:
    """The embedded synthetic market (:func:`atra.core.synthetic.market.generate_market`):
    spot and perp candles, funding and ground-truth regimes per symbol, no files needed.
    Unset arguments take :class:`~atra.core.synthetic.config.SyntheticConfig`'s defaults. Load
    its frames with ``load_candles(m.spot[s], s, market="spot", exchange="synthetic")`` so that
    runs are labelled synthetic."""
    base = SyntheticConfig()
    config = SyntheticConfig(
        seed=base.seed if seed is None else seed,
        symbols=base.symbols if symbols is None else tuple(symbols),
        start=base.start if start is None else start,
        bars=base.bars if bars is None else bars,
        timeframe=_timeframe(timeframe) or base.timeframe,
    )
    return generate_market(config)
