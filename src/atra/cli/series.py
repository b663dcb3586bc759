"""The configured external series (``[[features.series]]``) for the commands that decide.

Research, ``atra backtest``, ``atra walkforward``, ``atra train`` / ``signals`` read them from
their files or the store (:func:`configured_inputs`); ``atra live --replay`` gives the model's
series to each decision point in time, the ones with a live ``source`` through that source
against the fake series server on the replay's clock (:func:`replay_series`), exactly as a
live run fetches them (:func:`live_series`). Everything loads when a command runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from atra.config import AtraConfig
    from atra.core.features.context import ModelInputs, SeriesInput
    from atra.live.series_feed import SeriesFeed

__all__ = ["configured_inputs", "live_series", "replay_series"]


def configured_inputs(
    cfg: AtraConfig, data_dir: Path, names: Sequence[str] | None = None
) -> tuple[SeriesInput, ...]:
    """Every configured series (or those in ``names``), from its ``path`` or the store at
    ``data_dir``, validated (one-line errors naming the series, file, row and column)."""
    if not cfg.features.series:
        return ()
    from atra.adapters.series import configured_series

    return configured_series(cfg.features.series, data_dir, names=names)


def _needed(cfg: AtraConfig, inputs: ModelInputs | None) -> tuple[str, ...]:
    from atra.errors import ModelError

    names = () if inputs is None else inputs.series
    known = {s.name for s in cfg.features.series}
    lacking = [n for n in names if n not in known]
    if lacking:
        raise ModelError(
            f"the model reads the external series {', '.join(lacking)}, which the config does "
            "not define (add a [[features.series]] entry; examples/series.toml)"
        )
    return names


def replay_series(
    cfg: AtraConfig, inputs: ModelInputs | None
) -> tuple[tuple[SeriesInput, ...], frozenset[str]]:
    """The series a replay of a model reading ``inputs`` gives its decisions, and those that
    come through their (faked) live source."""
    names = _needed(cfg, inputs)
    if not names:
        return (), frozenset()
    series = configured_inputs(cfg, cfg.data.data_dir, names)
    sourced = frozenset(s.name for s in cfg.features.series if s.name in names and s.source)
    return series, sourced


@contextlib.asynccontextmanager
async def live_series(
    cfg: AtraConfig, inputs: ModelInputs | None, timeout_s: float
) -> AsyncIterator[SeriesFeed | None]:
    """The series feed of a live run of a model reading ``inputs`` (None: it reads none)."""
    names = _needed(cfg, inputs)
    if not names:
        yield None
        return
    from atra.adapters.ratelimit import SystemClock
    from atra.live.series_feed import live_series_feed

    async with live_series_feed(
        cfg.features.series, cfg.data.data_dir, names, SystemClock(), timeout_s=timeout_s
    ) as feed:
        yield feed
