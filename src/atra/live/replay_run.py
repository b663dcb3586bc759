"""Which run a replay journal belongs to: a replay's run id, and the check that a journal is
never silently reused by another run.

A replay is identified by what decides its journal's content: the range (``--from`` ..
``--to``), the symbols, the market and timeframe, a hash of the settings it trades with
(signal rule and barriers, sizing, fees and slippage, risk limits, starting equity, candle
window, funding on or off, paper or order path, the retrain schedule and trainer settings when
retraining) and the model id. The run id reads
``{name}-{from}..{to}-{hash}``: ``name`` is ``--run-id`` (default ``paper``), ``hash`` the first
eight hex digits of the identity, so two runs with the same name and range but other settings
get other ids.

The identity is stored as JSON under the ``replay_run`` key of the journal's ``meta`` table
(the table of schema version 1: no migration, old journals stay readable). A replay writes
into a journal only when the journal is new (no cycles, signals, orders, fills, positions or
equity marks) or holds the same run id: then it resumes where the journal ends. Anything else
(another range, symbols, settings or model; a live run; a replay of an older atra that stored
no identity) is a :class:`ConfigError` naming ``--journal``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from atra.adapters.journal.database import Journal
from atra.core.decision import ModelHandle
from atra.core.exits.api import ExitSpec
from atra.core.meta import MetaModel
from atra.core.types import Market
from atra.errors import ConfigError, DataError
from atra.live.deciders import DecisionFn, StrategyDecider
from atra.live.guards import GuardLimits
from atra.live.settings import LoopSettings

RUN_KEY: Final[str] = "replay_run"
"""The ``meta`` key holding a replay's :class:`ReplayRun` as JSON."""
_HASH_HEX: Final[int] = 8
_CONTENT_TABLES: Final[tuple[str, ...]] = (
    "cycles",
    "signals",
    "orders",
    "fills",
    "positions",
    "equity",
)


@dataclass(frozen=True, slots=True)
class ReplayRun:
    """The identity of one replay (see the module docstring)."""

    run_id: str
    start_ms: int
    stop_ms: int
    symbols: tuple[str, ...]
    market: str
    timeframe: str
    config_hash: str
    model_id: str
    initial_equity: float
    execution: str
    """``paper`` (the paper broker) or ``orders`` (the order path on the fake exchange)."""

    @property
    def range_text(self) -> str:
        """``2024-01-01..2024-03-01`` (ISO times when a bound is not midnight UTC)."""
        return f"{day_text(self.start_ms)}..{day_text(self.stop_ms)}"

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, where: str) -> ReplayRun:
        """Parse the stored identity; ``where`` names the journal for the error."""
        try:
            raw = json.loads(text)
            fields = {f.name for f in dataclasses.fields(cls)}
            if not isinstance(raw, dict) or set(raw) != fields:
                raise ValueError(f"expected the keys {', '.join(sorted(fields))}")
            raw["symbols"] = tuple(raw["symbols"])
            return cls(**raw)
        except (ValueError, TypeError) as exc:
            raise DataError(f"{where}: meta {RUN_KEY!r} is not a replay identity ({exc})") from None


def day_text(ms: int) -> str:
    """``2024-01-01`` at midnight UTC, else ``2024-01-01T12:00``."""
    when = datetime.fromtimestamp(ms / 1000, tz=UTC)
    if when.hour == when.minute == when.second == 0 and when.microsecond == 0:
        return when.strftime("%Y-%m-%d")
    return when.strftime("%Y-%m-%dT%H:%M")


def _plain(value: object) -> object:
    """Dataclasses, enums and paths as JSON-ready values (for hashing)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def model_id_of(model: ModelHandle | MetaModel | None) -> str:
    """The registry id of a handle; a bare model is named by a hash of its pickled state."""
    if model is None:
        return "primary"
    if isinstance(model, ModelHandle):
        return model.model_id
    return "meta-" + hashlib.sha256(pickle.dumps(model)).hexdigest()[:12]


def decider_settings(decider: DecisionFn) -> tuple[dict[str, Any], str]:
    """What a decider decides with (for the hash) and its model id."""
    if isinstance(decider, StrategyDecider):
        return (
            {
                "spec": _plain(decider.spec),
                "sizing": _plain(decider.sizing),
                "use_kelly": decider.use_kelly,
                "costs": _plain(decider.costs),
                "features": _plain(decider.feature_context is not None),
            },
            model_id_of(decider.model),
        )
    kind = type(decider)
    return {"decider": f"{kind.__module__}.{kind.__qualname__}"}, "custom"


def replay_run(
    settings: LoopSettings,
    *,
    decider: DecisionFn,
    exit_spec: ExitSpec,
    limits: GuardLimits,
    market: Market,
    orders: bool,
    retrain: Mapping[str, object] | None = None,
) -> ReplayRun:
    """The identity of a replay of ``settings`` (``start_ms`` and ``stop_ms`` required).
    ``retrain``: the schedule and trainer settings of retraining while live (part of the
    config hash; where the retrained models are saved is not)."""
    if settings.start_ms is None or settings.stop_ms is None:
        raise ConfigError("replay needs a start and an end (--from, --to)")
    decided, model_id = decider_settings(decider)
    limits_plain = _plain(limits)
    assert isinstance(limits_plain, dict)
    limits_plain.pop("kill_switch_file", None)  # where the switch lives changes no decision
    config = {
        "strategy": settings.strategy,
        "window_bars": settings.window_bars,
        "initial_equity": settings.initial_equity,
        "funding": settings.funding,
        "exit": _plain(exit_spec),
        "limits": limits_plain,
        **decided,
    }
    if retrain is not None:  # absent without retraining: older journals keep their ids
        plain = _plain(retrain)
        assert isinstance(plain, dict)
        trainer = plain.get("trainer")
        if isinstance(trainer, dict):
            trainer.pop("out", None)
        config["retrain"] = plain
    config_hash = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()
    symbols = tuple(sorted(settings.symbols))
    execution = "orders" if orders else "paper"
    identity = {
        "start_ms": settings.start_ms,
        "stop_ms": settings.stop_ms,
        "symbols": symbols,
        "market": market.value,
        "timeframe": settings.timeframe.value,
        "config_hash": config_hash,
        "model_id": model_id,
        "execution": execution,
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    span = f"{day_text(settings.start_ms)}..{day_text(settings.stop_ms)}"
    return ReplayRun(
        run_id=f"{settings.run_id}-{span}-{digest[:_HASH_HEX]}",
        start_ms=settings.start_ms,
        stop_ms=settings.stop_ms,
        symbols=symbols,
        market=market.value,
        timeframe=settings.timeframe.value,
        config_hash=config_hash,
        model_id=model_id,
        initial_equity=settings.initial_equity,
        execution=execution,
    )


def _differences(held: ReplayRun, ours: ReplayRun) -> str:
    out = []
    if (held.start_ms, held.stop_ms) != (ours.start_ms, ours.stop_ms):
        out.append(f"range {ours.range_text}")
    if held.symbols != ours.symbols:
        out.append(f"symbols {','.join(ours.symbols)}")
    if (held.market, held.timeframe) != (ours.market, ours.timeframe):
        out.append(f"market {ours.market} {ours.timeframe}")
    if held.model_id != ours.model_id:
        out.append(f"model {ours.model_id}")
    if held.execution != ours.execution:
        out.append(f"execution {ours.execution}")
    if held.config_hash != ours.config_hash:
        out.append("other settings (config hash)")
    if not out:
        out.append(f"run id {ours.run_id}")
    return ", ".join(out)


async def stored_run(journal: Journal) -> ReplayRun | None:
    """The replay identity stored in ``journal``, None when there is none."""
    text = await journal.meta_value(RUN_KEY)
    return None if text is None else ReplayRun.from_json(text, f"journal {journal.path}")


async def claim_journal(journal: Journal, run: ReplayRun) -> bool:
    """Make ``journal`` the journal of ``run``: True when it was new (identity stored now),
    False when it already held ``run`` (a resume). Any other journal is a ConfigError naming
    ``--journal``; nothing is written to it then."""
    held = await stored_run(journal)
    if held is None:
        counts = await journal.row_counts(_CONTENT_TABLES)
        if any(counts.values()):
            used = ", ".join(f"{n} {t}" for t, n in counts.items() if n)
            raise ConfigError(
                f"--journal {journal.path} holds {used} of a run with no replay identity "
                f"(a live run, or a replay of an older atra); use a new file for replay "
                f"{run.run_id}"
            )
        await journal.set_meta(RUN_KEY, run.to_json())
        return True
    if held.run_id != run.run_id or held != run:
        raise ConfigError(
            f"--journal {journal.path} holds run {held.run_id} ({','.join(held.symbols)}); "
            f"this replay has {_differences(held, run)}: use a new file, or the same range, "
            f"symbols and settings to resume"
        )
    return False
