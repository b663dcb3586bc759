"""What a command works on: the store, the symbols, the time range.

Each wrong choice stops the command before any heavy work with one
:class:`~atra.errors.ConfigError` line that names the option and says what is stored instead:

- a data dir that does not exist (every command: exit 3, the same class everywhere);
- an unknown symbol (the nearest stored symbols of that exchange / market / bar size);
- an empty range (the dates as typed, never epoch milliseconds, and the stored span).

Missing *input* files (``data import PATH``, ``demo --data``, ``report RUN_DIR``) stay
:class:`~atra.errors.DataError`: data that should be there is not. The data dir is a setting.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from atra.adapters.store import CandleStore, DatasetInfo, DatasetKey, listing
from atra.cli.console import make_console, stage_progress, when
from atra.cli.options import Selection, check_min_train, embargo_hours_or, retrain_days_or
from atra.core.bounds import DEFAULT_LIMITS, Limits
from atra.core.symbols import split_symbols as parse_symbol_list
from atra.core.times import parse_time_ms
from atra.core.types import Market, Timeframe
from atra.errors import ConfigError

if TYPE_CHECKING:
    from rich.console import Console

    from atra.cli.backend_options import BackendOptions

_T = TypeVar("_T")

DATA_DIR_OPTION = "--data-dir / ATRA_DATA_DIR"


def open_store(
    data_dir: Path, option: str = DATA_DIR_OPTION, *, limits: Limits = DEFAULT_LIMITS
) -> CandleStore:
    """The store at ``data_dir``, which must be an existing folder; its writes are validated
    against ``limits`` (``[data.bounds]``)."""
    if not data_dir.is_dir():
        what = "is not a folder" if data_dir.exists() else "does not exist"
        exc = ConfigError(f"data dir {data_dir} {what} ({option})")
        exc.hint = f"import data first: atra data import FILES --data-dir {data_dir}"
        raise exc
    return CandleStore(data_dir, limits=limits)


def split_symbols(given: Sequence[str] | None, where: str = "--symbols") -> list[str]:
    """``--symbols`` as given (repeatable or comma-separated), upper-cased, in order, once;
    each checked by the one symbol validator (:func:`atra.core.symbols.check_symbol`)."""
    return list(parse_symbol_list(given, where))


def stored_symbols(
    infos: Sequence[DatasetInfo], exchange: str, market: Market, tf: Timeframe
) -> list[str]:
    """Symbols with candles of ``exchange`` / ``market`` / ``tf`` in ``infos``, sorted."""
    return sorted(
        {
            i.symbol
            for i in infos
            if i.kind == "candles"
            and i.exchange == exchange
            and i.market is market
            and i.timeframe is tf
        }
    )


def resolve_symbols(
    store: CandleStore,
    exchange: str,
    market: Market,
    tf: Timeframe,
    given: Sequence[str] | None,
) -> list[str]:
    """``--symbols`` (each one must be stored), else every stored symbol of the market."""
    infos = store.datasets()
    stored = stored_symbols(infos, exchange, market, tf)
    wanted = split_symbols(given)
    if not wanted:
        if not stored:
            combos = sorted({f"{i.exchange}/{i.market}/*/{i.timeframe}" for i in infos if i.key})
            exc = ConfigError(
                f"no {exchange}/{market}/*/{tf} candles in the store at {store.root} "
                f"(the store holds {listing(combos) or 'nothing'})"
            )
            exc.hint = "pass --data-dir / --exchange / --market / --timeframe, or import data"
            raise exc
        return stored
    for sym in wanted:
        if sym not in stored:
            raise ConfigError(store.describe_missing(DatasetKey(exchange, market, sym, tf)))
    return wanted


@dataclass(frozen=True, slots=True)
class TimeRange:
    """``--start`` (inclusive) and ``--end`` (exclusive) as typed and in epoch ms (UTC)."""

    start: str | None
    end: str | None
    start_ms: int | None
    end_ms: int | None

    def describe(self) -> str:
        """The range as the user typed it: ``from 2024-01-01 to 2024-02-01 UTC (end
        exclusive)``."""
        if self.start is not None and self.end is not None:
            return f"from {self.start} to {self.end} UTC (end exclusive)"
        if self.start is not None:
            return f"from {self.start} UTC on"
        if self.end is not None:
            return f"before {self.end} UTC"
        return "at all"


def parse_time(text: str, option: str) -> int:
    """A UTC time option (``2024-01-01[T12:00]`` or epoch ms) -> epoch ms; errors name it."""
    try:
        return parse_time_ms(text)
    except ConfigError as exc:
        raise ConfigError(f"{option}: {exc}") from None


def parse_range(
    start: str | None, end: str | None, start_option: str = "--start", end_option: str = "--end"
) -> TimeRange:
    """Parse ``--start`` / ``--end`` (UTC); an end not after the start is an empty range."""
    rng = TimeRange(
        start,
        end,
        None if start is None else parse_time(start, start_option),
        None if end is None else parse_time(end, end_option),
    )
    if rng.start_ms is not None and rng.end_ms is not None and rng.end_ms <= rng.start_ms:
        raise ConfigError(
            f"empty range: {end_option} {end} is not after {start_option} {start} "
            f"({end_option} is exclusive)"
        )
    return rng


def check_range(
    store: CandleStore,
    exchange: str,
    market: Market,
    tf: Timeframe,
    symbols: Sequence[str],
    rng: TimeRange,
) -> None:
    """Every symbol has at least one stored bar in the range (the time column is read)."""
    if rng.start_ms is None and rng.end_ms is None:
        return
    infos = {i.key: i for i in store.datasets() if i.key is not None}
    for sym in symbols:
        key = DatasetKey(exchange, market, sym, tf)
        if store.count_candles(key, rng.start_ms, rng.end_ms) > 0:
            continue
        info = infos.get(key)
        span = f"{when(info.first_ms)} .. {when(info.last_ms)}" if info is not None else "-"
        raise ConfigError(
            f"no candles for {sym} {market} {tf} on {exchange} {rng.describe()} "
            f"in {store.root} (stored: {span} UTC)"
        )


@dataclass(frozen=True, slots=True)
class Resolved:
    """A :class:`~atra.cli.options.Selection` checked against the store."""

    store: CandleStore
    exchange: str
    market: Market
    timeframe: Timeframe
    symbols: list[str]
    range: TimeRange


def resolve(selection: Selection) -> Resolved:
    """Check the options (bar size, market, range), then the store, symbols and data in range."""
    market = Market.parse(selection.market)
    tf = Timeframe.parse(selection.timeframe)
    rng = parse_range(selection.start, selection.end)
    store = open_store(selection.data_dir)
    exchange = selection.exchange
    symbols = resolve_symbols(store, exchange, market, tf, selection.symbols)
    check_range(store, exchange, market, tf, symbols, rng)
    return Resolved(store, exchange, market, tf, symbols, rng)


def run_walkforward_loop(
    loop: Callable[..., _T],
    selection: Selection,
    *,
    retrain_days: int | None,
    embargo_hours: float | None,
    min_train_days: int,
    min_train_events: int,
    first_test: str | None,
    runs_dir: Path,
    n_trials: int,
    seed: int,
    n_jobs: int,
    backend: BackendOptions,
) -> tuple[Console, _T]:
    """Check the walk-forward options, apply them to the settings of ``--config``, resolve the
    selection and run ``loop`` on it with a stage progress bar, its fold fits on ``backend``
    (:func:`atra.research.backends.open_backend`; the options over ``[research]`` of
    ``--config``); the console and its result.

    ``loop`` is :func:`atra.research.evaluation.loop.run_research_loop` or
    :func:`atra.research.ablation.run_ablation_loop` (the same keyword arguments)."""
    if n_trials < 1:
        raise ConfigError(f"--n-trials must be >= 1, got {n_trials}")
    check_min_train(min_train_days, min_train_events)
    first_test_ms = None if first_test is None else parse_time(first_test, "--first-test")
    from atra.cli.plugins import load_run_config
    from atra.cli.series import configured_inputs
    from atra.research.backends import open_backend
    from atra.research.evaluation.settings import backtest_config_from
    from atra.research.pipeline import settings_from_config

    cfg = load_run_config(selection.config)
    settings = settings_from_config(cfg, selection.market)
    base = settings.walkforward
    settings = dataclasses.replace(
        settings,
        walkforward=dataclasses.replace(
            base,
            retrain_days=retrain_days_or(retrain_days, base.retrain_days),
            embargo_hours=embargo_hours_or(embargo_hours, base.embargo_hours),
            min_train_days=min_train_days,
            min_train_events=min_train_events,
            first_test_ms=first_test_ms,
        ),
    )
    spec = backend.spec(cfg.research, selection.config)  # over the config's [research]
    with open_backend(spec, n_jobs=n_jobs):  # its errors come before any data is read
        sel = resolve(selection)
        console = make_console()
        with stage_progress(console) as progress:
            result = loop(
                sel.store,
                exchange=sel.exchange,
                symbols=sel.symbols,
                market=sel.market,
                timeframe=sel.timeframe,
                start_ms=sel.range.start_ms,
                end_ms=sel.range.end_ms,
                settings=settings,
                backtest_config=backtest_config_from(cfg),
                runs_dir=runs_dir,
                seed=seed,
                n_trials=n_trials,
                n_jobs=n_jobs,
                progress=progress,
                series=configured_inputs(cfg, sel.store.root),
            )
    return console, result
