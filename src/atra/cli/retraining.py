"""``atra live --retrain-days`` / ``live.retrain_days``: the retrainer of a live run or a replay
(:class:`atra.live.retrain.Retrainer`) built from the config, the starting model and the
history before the run, and the retrains a replay lists at its end.

The trainer is :class:`atra.research.retrain.WindowTrainer` with the walk-forward's settings
of the config (``meta``: LightGBM parameters, threshold, ``embargo_hours``) and
``live.retrain_min_events``; its data start is ``live.retrain_from``, else the one the
starting model was trained from (its metadata's ``data_start_ms``; a model saved without it:
the UTC day of its first training event). The history is read like the replay's candles
(``--data`` files or the store): from that start, less the features' warm-up, up to the
first bar the run decides; the loop adds what it fetches.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from atra.errors import ConfigError

if TYPE_CHECKING:
    from atra.config import AtraConfig
    from atra.live.deciders import StrategyDecider
    from atra.live.retrain import Retrainer

__all__ = ["check_retraining", "make_retrainer", "print_retrains", "retrain_days_of", "utc_ms"]


def retrain_days_of(cfg: AtraConfig, option: int | None) -> int:
    """Days between retrains: ``--retrain-days``, else ``live.retrain_days``; 0 = off."""
    days = cfg.live.retrain_days if option is None else option
    if days is not None and days < 0:
        raise ConfigError(f"--retrain-days must be >= 0 (0: off), got {days}")
    return days or 0


def check_retraining(days: int, *, model_ref: str | None, compare: bool) -> None:
    """Refuse retraining without a model to start from, and with ``--compare`` (the backtest
    runs one model; the walk-forward is the comparison of a retraining run)."""
    if days and model_ref is None:
        raise ConfigError(
            f"live.retrain_days = {days} needs a model to start from (--model or live.model)"
        )
    if days and compare:
        raise ConfigError(
            "--compare backtests one model; a retraining replay changes models: compare it with "
            "atra walkforward --first-test (live.retrain_anchor) --retrain-days instead"
        )


def utc_ms(when: datetime) -> int:
    """Epoch ms of a config time (a time without a zone is UTC)."""
    return int((when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp() * 1000)


def _data_start_ms(cfg: AtraConfig, model_dir: Path) -> int:
    from atra.adapters.artifacts import read_metadata
    from atra.core.validation import DAY_MS

    if cfg.live.retrain_from is not None:
        return utc_ms(cfg.live.retrain_from)
    meta = read_metadata(model_dir)
    start = (meta.get("extra") or {}).get("data_start_ms")
    if isinstance(start, int):
        return start
    first = (meta.get("training_window") or {}).get("start_ms")
    if not isinstance(first, int):
        raise ConfigError(
            f"model {model_dir}: its metadata names no training start; set live.retrain_from"
        )
    return (first // DAY_MS) * DAY_MS


def make_retrainer(
    cfg: AtraConfig,
    *,
    days: int,
    model_ref: str,
    models_dir: Path,
    decider: StrategyDecider,
    symbols: tuple[str, ...],
    data: Path | None,
    until_ms: int,
    wait: bool,
) -> Retrainer:
    """The retrainer of a run deciding from ``until_ms`` on (``wait``: a replay)."""
    from atra.adapters.artifacts import resolve_model_dir
    from atra.cli.models import read_context_candles
    from atra.cli.replay_data import read_candles, read_funding
    from atra.core.decision import model_bar_features
    from atra.core.features.context import counterpart_market
    from atra.core.features.registry import HISTORY_BARS
    from atra.core.retraining import MarketHistory
    from atra.core.validation import DAY_MS
    from atra.live.feed import BTC_SYMBOL
    from atra.live.retrain import Retrainer
    from atra.research.pipeline import settings_from_config
    from atra.research.retrain import WindowTrainer

    inputs = decider.inputs
    if decider.model is None or inputs is None:
        raise ConfigError(f"live.retrain_days = {days} needs a model to start from (--model)")
    if inputs.series:
        raise ConfigError(
            f"live.retrain_days: the model reads the external series {', '.join(inputs.series)}; "
            "retraining while live covers candle, funding, basis and BTC features only"
        )
    lv = cfg.live
    start_ms = _data_start_ms(cfg, resolve_model_dir(model_ref, models_dir))
    read_from = start_ms - HISTORY_BARS * lv.timeframe.ms
    if read_from >= until_ms:
        raise ConfigError(
            f"live.retrain_from must be before the run's first bar ({until_ms} ms), "
            f"{HISTORY_BARS} warm-up bars included"
        )
    asked = "the retrain history (live.retrain_from less the features' warm-up, to the run)"
    candles = read_candles(cfg, symbols, read_from, until_ms, data, asked)
    funding = None
    if inputs.needs_funding:
        funding = read_funding(cfg, symbols, read_from - 31 * DAY_MS, until_ms, data)
    side = read_context_candles(cfg, symbols, inputs, read_from, until_ms, data)
    other = counterpart_market(lv.market)
    history = MarketHistory(
        candles,
        {sym: frame for (mkt, sym), frame in side.items() if mkt is other},
        side.get((lv.market, BTC_SYMBOL)),
        dict(funding or {}),
    )
    settings = settings_from_config(cfg, lv.market)
    walkforward = replace(
        settings.walkforward, retrain_days=days, min_train_events=lv.retrain_min_events
    )
    trainer = WindowTrainer(
        exchange=cfg.data.exchange,
        market=lv.market,
        timeframe=lv.timeframe,
        symbols=symbols,
        signal_spec=decider.spec,
        exit_spec=settings.exit,
        bar_features=tuple(model_bar_features(decider.model)),
        params=settings.meta,
        walkforward=walkforward,
        data_start_ms=start_ms,
        out=models_dir,
    )
    anchor = None if lv.retrain_anchor is None else utc_ms(lv.retrain_anchor)
    return Retrainer(
        trainer, days=days, anchor_ms=anchor, history=history, decider=decider, wait=wait
    )


def print_retrains(journal_path: Path) -> None:
    """One line per retrain journalled in ``journal_path``: the window, the model and the bar
    it took over at, or the error."""
    import typer

    from atra.adapters.journal.database import Journal
    from atra.cli.console import when
    from atra.live.retrain import retrain_log

    async def read() -> list[str]:
        async with Journal.open(journal_path) as journal:
            records = await retrain_log(journal)
        lines = []
        for rec in records:
            head = f"retrain for {when(rec.window_ms)} UTC:"
            if rec.status == "registered" and rec.swapped_at_ms is not None:
                lines.append(
                    f"{head} model {rec.model_id} ({rec.n_train} training events, fit "
                    f"{rec.elapsed_s:.1f} s, {rec.wall_s or 0.0:.1f} s in all) decides from "
                    f"{when(rec.swapped_at_ms)} UTC"
                )
            else:
                lines.append(f"{head} failed, the previous model kept deciding: {rec.error}")
        return lines

    for line in asyncio.run(read()):
        typer.echo(line)
