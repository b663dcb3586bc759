"""`atra live`: the signal loop. Paper trading by default; `--replay` runs it on history.

The live stack (exchange client, journal, loop, metrics server) loads when the command runs,
not when ``atra`` starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Final

import typer

from atra.cli import app
from atra.cli.replay_data import DATA_DIR_SETTING, read_candles, read_funding
from atra.core.symbols import split_symbols
from atra.core.types import Market, Timeframe
from atra.errors import ConfigError, DataError

if TYPE_CHECKING:
    import pandas as pd
    import structlog

    from atra.cli.replay_output import ReplayDone
    from atra.config import AtraConfig
    from atra.core.exits.api import ExitSpec
    from atra.core.signals.spec import SignalSpec
    from atra.live.guards import RiskGuards
    from atra.live.loop import LoopSettings, StrategyDecider
    from atra.live.notifications import LoopNotifications
    from atra.live.retrain import Retrainer
    from atra.obs import Metrics

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
WINDOW_BARS_HELP: Final[int] = 1500
"""``atra.core.features.registry.HISTORY_BARS``, repeated for the help text only (importing it
loads pandas at start-up); a test keeps the two equal. The command uses HISTORY_BARS itself."""


def _log() -> structlog.stdlib.BoundLogger:
    from atra.obs import get_logger

    return get_logger("atra.cli.live")


def parse_day(text: str, option: str) -> int:
    """``2024-01-01`` (or an ISO time, UTC) -> epoch milliseconds."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{option} {text!r}: expected a date like 2024-01-01") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def parse_speed(text: str) -> float:
    """``max`` -> infinity; otherwise a positive factor (``60``: an hour a minute)."""
    if text.strip().lower() == "max":
        return math.inf
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"--speed {text!r}: expected 'max' or a number > 0") from None
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"--speed {text!r}: expected 'max' or a number > 0")
    return value


def signal_spec(cfg: AtraConfig) -> SignalSpec:
    """The primary model of the ``strategy`` section (ATR barriers), as research maps it."""
    from atra.live.settings import check_live_sides
    from atra.research.pipeline import settings_from_config

    check_live_sides(cfg.strategy.spot_shorts, cfg.live.market)
    return settings_from_config(cfg, cfg.live.market).signal


def exit_spec(cfg: AtraConfig) -> ExitSpec:
    """Taker fees on every fill and the configured slippage (the backtest's defaults)."""
    from atra.research.pipeline import settings_from_config

    return settings_from_config(cfg, cfg.live.market).exit


def _settings(
    cfg: AtraConfig,
    symbols: tuple[str, ...],
    run_id: str,
    window_bars: int,
    max_cycles: int | None,
) -> LoopSettings:
    from atra.live.loop import LoopSettings

    lv = cfg.live
    return LoopSettings(
        symbols=symbols,
        timeframe=lv.timeframe,
        strategy=cfg.strategy.rule,
        run_id=run_id,
        bar_close_delay_s=lv.bar_close_delay_s,
        cycle_deadline_s=lv.cycle_deadline_s,
        symbol_timeout_s=min(lv.cycle_deadline_s, cfg.exchange.read_timeout_s * 2),
        window_bars=window_bars,
        max_cycles=max_cycles,
        funding=lv.market is Market.PERP,
        settle_heap=True,  # one loop per process: no full garbage collection inside a cycle
    )


async def _run_live(
    cfg: AtraConfig,
    settings: LoopSettings,
    journal_path: Path,
    decider: StrategyDecider,
    guards: RiskGuards,
    metrics: Metrics,
    live: bool = False,
    retrain: Callable[..., Retrainer] | None = None,
) -> int:
    from atra.adapters.exchange.client import BinanceClient
    from atra.adapters.journal.database import Journal
    from atra.adapters.ratelimit import SystemClock
    from atra.adapters.trading.spot_trader import SpotTrader
    from atra.adapters.trading.trader import BinanceTrader
    from atra.live.execution import ExchangeBroker
    from atra.live.loop import LiveLoop, run_until_signal
    from atra.live.paper import Broker
    from atra.live.spot_execution import SpotBroker
    from atra.live.stream_feed import live_stream

    lv = cfg.live
    ex = cfg.exchange
    base = ex.spot_base_url if lv.market is Market.SPOT else ex.perp_base_url
    client = BinanceClient(
        lv.market,
        base_url=base,
        timeout_s=ex.read_timeout_s,
        connect_timeout_s=ex.connect_timeout_s,
        max_attempts=ex.max_retries + 1,
        max_connections=ex.max_connections,
        metrics=metrics,
    )
    from atra.cli.models import side_client as make_side_client
    from atra.cli.series import live_series

    side_client = make_side_client(cfg, decider.inputs)
    async with (
        client,
        side_client or contextlib.nullcontext(),
        Journal.open(journal_path, exclusive=True) as journal,
        live_series(cfg, decider.inputs, settings.symbol_timeout_s) as series,
        live_stream(
            lv,
            client,
            settings.symbols,
            settings.timeframe,
            inputs=decider.inputs,
            side_client=side_client,
        ) as stream,
    ):
        run_id = await journal.meta("run_id", settings.run_id)
        clock = SystemClock()
        broker: Broker | None = None
        if live:
            key = ex.api_key.get_secret_value() if ex.api_key else ""
            secret = ex.api_secret.get_secret_value() if ex.api_secret else ""
            if lv.market is Market.SPOT:  # long only; exits as OCO lists (docs: live trading)
                broker = SpotBroker(
                    SpotTrader(client, api_key=key, api_secret=secret),
                    exit_spec(cfg),
                    strategy=settings.strategy,
                    run_id=run_id,
                    timeframe=settings.timeframe,
                    clock=clock.time,
                    symbols=settings.symbols,
                )
            else:
                broker = ExchangeBroker(
                    BinanceTrader(client, api_key=key, api_secret=secret),
                    exit_spec(cfg),
                    strategy=settings.strategy,
                    run_id=run_id,
                    timeframe=settings.timeframe,
                    clock=clock.time,
                )
            _log().warning("live_orders_enabled", run_id=run_id, symbols=list(settings.symbols),
                        base_url=base)  # fmt: skip
        loop = LiveLoop(
            replace(settings, run_id=run_id),
            client=client,
            journal=journal,
            decider=decider,
            exit_spec=exit_spec(cfg),
            guards=guards,
            clock=clock,
            metrics=metrics,
            broker=broker,
            side_client=side_client,
            series=series,
            retrainer=None if retrain is None else retrain(until_ms=int(clock.time() * 1000)),
            stream=stream,
        )
        notes = _notifications(cfg, metrics)
        notes.attach(loop)
        return await notes.around(run_until_signal(loop, STOP_SIGNALS))


@app.command("live")
def live_cmd(
    config: Annotated[Path | None, typer.Option("--config", help="TOML config file.")] = None,
    replay: Annotated[
        bool, typer.Option("--replay", help="Run on history against a fake exchange.")
    ] = False,
    from_: Annotated[
        str | None, typer.Option("--from", help="Replay start (UTC date, 2024-01-01).")
    ] = None,
    to: Annotated[str | None, typer.Option("--to", help="Replay end (UTC, exclusive).")] = None,
    speed: Annotated[
        str, typer.Option("--speed", help="Replay speed: 'max' or a factor (60 = 1 h/min).")
    ] = "max",
    live: Annotated[
        bool,
        typer.Option(
            "--live",
            help="Send REAL orders (needs API keys in the env); with --replay: the order path "
            "against the fake exchange.",
        ),
    ] = False,
    journal: Annotated[
        Path | None, typer.Option("--journal", help="Journal file (default live.journal_path).")
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option("--data", help="Replay from {SYMBOL}_{market}_{tf}.parquet files here."),
    ] = None,
    symbols: Annotated[
        str | None, typer.Option("--symbols", help="Comma-separated symbols (default: config).")
    ] = None,
    run_id: Annotated[
        str, typer.Option("--run-id", help="Run name for client order ids (first start).")
    ] = "paper",
    window_bars: Annotated[
        int | None,
        typer.Option(
            "--window-bars",
            help=f"Candles per decision, >= 1 (default: the features' warm-up, "
            f"{WINDOW_BARS_HELP}).",
        ),
    ] = None,
    max_cycles: Annotated[int | None, typer.Option("--max-cycles", help="Stop after N.")] = None,
    compare: Annotated[
        bool,
        typer.Option(
            "--compare",
            help="With --replay: run the backtest on the same range, data, config and model "
            "and compare; exit code 4 (DataError) when they differ.",
        ),
    ] = False,
    metrics: Annotated[
        bool, typer.Option("--metrics/--no-metrics", help="Serve Prometheus /metrics.")
    ] = True,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="Meta model that decides: a model folder or an id in --models-dir "
            "(default: live.model; none: every signal is taken).",
        ),
    ] = None,
    models_dir: Annotated[
        Path, typer.Option("--models-dir", help="Where model ids are looked up (atra train --out).")
    ] = Path("models"),
    retrain_days: Annotated[
        int | None,
        typer.Option(
            "--retrain-days",
            help="Retrain the model every N days on the data seen so far and swap it in at a "
            "bar (default: live.retrain_days; 0: off). Models are saved in --models-dir.",
        ),
    ] = None,
) -> None:
    """Run the signal loop: paper trading at every bar close, or a replay of history.

    A replay ends with a summary read back from its journal; its journal must be new or hold
    the same run (range, symbols, settings, model), which it then resumes."""
    if compare and not replay:
        raise ConfigError("--compare needs --replay (it compares a replay with the backtest)")
    if window_bars is not None and window_bars < 1:
        raise ConfigError(f"--window-bars must be >= 1, got {window_bars}")
    from atra.cli.plugins import load_run_config
    from atra.core.features.registry import HISTORY_BARS
    from atra.core.risk import kelly_multiplier_of, sizing_of
    from atra.live.guards import GuardLimits, RiskGuards
    from atra.live.loop import StrategyDecider
    from atra.obs import Metrics, configure_logging_from, start_metrics_server

    cfg = load_run_config(config)
    configure_logging_from(cfg).add_secrets(cfg.notify.secret_values())
    if live:
        if not replay and cfg.live.paper:
            raise ConfigError(
                "--live: the config says live.paper = true; real orders need live.paper = false "
                "(or ATRA__LIVE__PAPER=false) as well"
            )
        if not replay and (cfg.exchange.api_key is None or cfg.exchange.api_secret is None):
            raise ConfigError(
                "--live sends real orders and needs ATRA__EXCHANGE__API_KEY and "
                "ATRA__EXCHANGE__API_SECRET in the environment"
            )
    syms = split_symbols(symbols) if symbols else cfg.live.symbols  # the config's validator
    spec = signal_spec(cfg)
    handle, inputs = None, None
    model_ref = model or cfg.live.model
    if model_ref is not None:  # refused here, with one line, before anything runs
        from atra.cli.models import check_servable_config, load_decision_model

        handle, inputs = load_decision_model(
            model_ref,
            models_dir,
            market=cfg.live.market,
            timeframe=cfg.live.timeframe,
            signal=spec,
            exit_spec=exit_spec(cfg),
        )
        check_servable_config(cfg, inputs)
    need = HISTORY_BARS if inputs is None else inputs.history_bars
    need = max(need, spec.warmup + 1)  # a rule (e.g. a plug-in's) warming up on more bars
    bars = need if window_bars is None else window_bars
    settings = _settings(cfg, syms, run_id, bars, max_cycles)
    # the backtest's [risk] mapping: risk_per_trade, the Kelly share, the gross cap per position
    sizing = sizing_of(cfg.risk)
    # sized exactly as the backtest sizes: fees and slippage in the risk per unit
    decider = StrategyDecider(
        spec,
        cfg.live.timeframe,
        model=handle,
        sizing=sizing,
        use_kelly=kelly_multiplier_of(cfg.risk.kelly) is not None,  # from p(take), if a model
        costs=exit_spec(cfg),
    )
    guards = RiskGuards(GuardLimits.from_config(cfg.risk, base_dir=Path.cwd()))
    journal_path = journal or cfg.live.journal_path
    from atra.adapters.journal.paths import check_journal_path

    if journal is not None:  # typed: its folder must exist (a typo creates nothing)
        check_journal_path(journal, "--journal")
    else:  # configured: its folder is created when the journal opens
        check_journal_path(journal_path, "live.journal_path", folder_may_be_new=True)
    registry = Metrics()
    server = (
        start_metrics_server(registry, cfg.live.metrics_host, cfg.live.metrics_port)
        if metrics
        else None
    )
    from atra.cli.retraining import check_retraining, make_retrainer, retrain_days_of

    days = retrain_days_of(cfg, retrain_days)
    check_retraining(days, model_ref=model_ref, compare=compare)
    retrain = None  # built once the run's first bar is known (its history ends there)
    if days and model_ref is not None:
        retrain = partial(make_retrainer, cfg, days=days, model_ref=model_ref,
                          models_dir=models_dir, decider=decider, symbols=syms, data=data,
                          wait=replay)  # fmt: skip
    done: ReplayDone | None = None
    status_api = None
    try:
        from atra.cli.status import start_configured

        status_api = start_configured(cfg, journal_path, orders=live, replay=replay)
        if replay:
            done = _replay(cfg, settings, journal_path, decider, guards, registry, from_, to,
                           speed, data, orders=live, retrain=retrain)  # fmt: skip
            cycles = done.report.cycles
        else:
            cycles = asyncio.run(
                _run_live(cfg, settings, journal_path, decider, guards, registry, live, retrain)
            )
    finally:
        if server is not None:
            server.stop()
        if status_api is not None:
            status_api.stop()
    typer.echo(f"atra live: {cycles} cycles journalled in {journal_path}")
    if done is not None:
        from atra.cli.replay_output import finish_replay

        finish_replay(done, journal_path, compare=compare)
        if retrain is not None:
            from atra.cli.retraining import print_retrains

            print_retrains(journal_path)


def _notifications(cfg: AtraConfig, metrics: Metrics) -> LoopNotifications:
    """The ``[notify]`` notifier wired to the loop (a no-op when it enables nothing)."""
    from atra.adapters.notify import Notifier
    from atra.live.notifications import LoopNotifications

    return LoopNotifications(Notifier.from_config(cfg, metrics))


def _replay(
    cfg: AtraConfig,
    settings: LoopSettings,
    journal_path: Path,
    decider: StrategyDecider,
    guards: RiskGuards,
    registry: Metrics,
    from_: str | None,
    to: str | None,
    speed: str,
    data: Path | None,
    *,
    orders: bool = False,
    retrain: Callable[..., Retrainer] | None = None,
) -> ReplayDone:
    if from_ is None or to is None:
        raise ConfigError("--replay needs --from and --to (UTC dates)")
    from atra.live.replay import ReplaySetup, run_replay

    start_ms = parse_day(from_, "--from")
    stop_ms = parse_day(to, "--to")
    setup = ReplaySetup(market=cfg.live.market, speed=parse_speed(speed), orders=orders,
                        feed=cfg.live.feed, stream_wait_s=cfg.live.stream_wait_s)  # fmt: skip
    if stop_ms <= start_ms:
        raise ConfigError(f"--to {to} must be after --from {from_}")
    tf: Timeframe = settings.timeframe
    lead = settings.window_bars * tf.ms
    tail = (decider.spec.horizon_bars + 2) * tf.ms
    asked = (
        f"--from {from_} to --to {to} UTC with {settings.window_bars} warm-up bars before "
        f"and {decider.spec.horizon_bars + 2} after"
    )
    candles: Mapping[str, pd.DataFrame] = read_candles(
        cfg, settings.symbols, start_ms - lead, stop_ms + tail, data, asked
    )
    funding = read_funding(cfg, settings.symbols, start_ms - lead, stop_ms + tail, data)
    from atra.cli.models import read_context_candles
    from atra.cli.series import replay_series

    inputs = decider.inputs
    series, sourced = replay_series(cfg, inputs)  # sourced: through the fake series server
    context_candles = read_context_candles(
        cfg, settings.symbols, inputs, start_ms - lead, stop_ms + tail, data
    )
    if inputs is not None and inputs.needs_funding and funding is None:
        raise DataError(
            f"replay: the model needs funding rates and {data or DATA_DIR_SETTING} holds no "
            "{SYMBOL}_perp_funding history of the replayed symbols"
        )
    if settings.funding and funding is None:
        _log().warning("funding_not_charged", reason="no funding history for the replayed perps")
        settings = replace(settings, funding=False)
    from atra.cli.replay_output import ReplayDone

    settings = replace(settings, start_ms=start_ms, stop_ms=stop_ms, bar_close_delay_s=0.0)
    notes = _notifications(cfg, registry)
    run = run_replay(
        settings,
        candles,
        journal_path,
        decider=decider,
        exit_spec=exit_spec(cfg),
        guards=guards,
        setup=setup,
        metrics=registry,
        stop_signals=STOP_SIGNALS,
        funding=funding,
        context_candles=context_candles,
        series=series,
        series_sources=sourced,
        retrainer=None if retrain is None else retrain(until_ms=stop_ms),
        on_start=notes.attach,
    )
    report = asyncio.run(notes.around(run))
    return ReplayDone(report, settings, candles, funding, decider, exit_spec(cfg), guards.limits,
                      cfg.live.market, orders, context_candles, series)  # fmt: skip
