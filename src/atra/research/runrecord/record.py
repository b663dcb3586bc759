"""The run record (``run.json``): :class:`RunRecord`, the identity and description of a run, and
:class:`LoadedRun`, a run directory read back (:mod:`atra.research.runrecord.directory`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Final

import pandas as pd
from pydantic import TypeAdapter

from atra.core.types import Timeframe
from atra.errors import ConfigError, DataError
from atra.research.runrecord.blocked import BlockedCounts
from atra.research.runrecord.legs import Liquidation, ordered_legs
from atra.research.runrecord.setup import RunSetup, read_typed

__all__ = [
    "DATA_LABELS",
    "RUN_ID_HEX",
    "SCHEMA_VERSION",
    "LoadedRun",
    "RunRecord",
    "annualization_sentence",
    "record_from",
    "record_json",
]

SCHEMA_VERSION: Final[int] = 2
"""2: ``setup`` and ``liquidations`` added (absent from version 1 records, read as none)."""
RUN_ID_HEX: Final[int] = 12
DATA_LABELS: Final[tuple[str, ...]] = ("synthetic", "real")
_LIQUIDATIONS: Final[TypeAdapter[tuple[Liquidation, ...]]] = TypeAdapter(tuple[Liquidation, ...])


@dataclass(frozen=True, slots=True)
class RunRecord:
    """The identity of a run (``run.json``) and what was run."""

    run_id: str
    created_utc: str
    config_hash: str
    data_hash: str
    code_version: str
    seed: int
    timeframe: str
    annualization: str
    """The sentence reports print, e.g. ``Sharpe annualised x sqrt(8760) (1h bars, 365-day
    year)``."""
    trades_sha256: dict[str, str]
    """Leg name -> :func:`~atra.research.runrecord.hashes.trades_sha256` of its trades (legs
    with trades only)."""
    data_label: str
    """``"synthetic"`` or ``"real"``."""
    notes: dict[str, Any] = field(default_factory=dict)
    setup: RunSetup | None = None
    """What was run (None for runs written without it)."""
    liquidations: tuple[Liquidation, ...] = ()
    """Legs, and holdings of legs, whose equity reached zero (time order)."""


@dataclass(frozen=True, slots=True)
class LoadedRun:
    """A run directory read back by :func:`~atra.research.runrecord.directory.read_run`."""

    path: Path
    record: RunRecord
    metrics: dict[str, Any]
    """``metrics.json``: ``{"legs": {leg: {...}}, "n_trials": ..., ...}``."""
    equity: pd.DataFrame
    """``equity.csv``: ``open_time_ms`` + one column per leg."""
    trades: dict[str, pd.DataFrame]
    """Leg name -> trade list, for the legs with trades."""
    oos_predictions: pd.DataFrame | None

    @property
    def leg_names(self) -> list[str]:
        """Leg names in display order (primary, filtered, buy_hold, then the others)."""
        return ordered_legs(self.metrics["legs"])

    @property
    def timeframe(self) -> Timeframe:
        return Timeframe.parse(self.record.timeframe)

    @property
    def blocked(self) -> dict[str, BlockedCounts]:
        """Leg name -> its signals by what blocked them (``metrics.json`` ``blocked_by``), for
        the legs that recorded them, in display order. A malformed entry is a one-line
        :class:`DataError` naming the file and leg."""
        legs = self.metrics["legs"]
        where = self.path / "metrics.json"
        return {
            leg: BlockedCounts.from_json(raw, f"{where}: legs.{leg}.blocked_by")
            for leg in self.leg_names
            if (raw := legs[leg].get("blocked_by")) is not None
        }


def annualization_sentence(timeframe: Timeframe) -> str:
    """``Sharpe annualised x sqrt(8760) (1h bars, 365-day year)``."""
    return (
        f"Sharpe annualised x sqrt({timeframe.bars_per_year}) "
        f"({timeframe.value} bars, 365-day year)"
    )


def record_json(record: RunRecord) -> dict[str, Any]:
    """``run.json`` of ``record``: the schema version first, then every field."""
    out: dict[str, Any] = {"schema_version": SCHEMA_VERSION, **asdict(record)}
    out["setup"] = None if record.setup is None else record.setup.to_json()
    out["liquidations"] = [asdict(liq) for liq in record.liquidations]
    return out


def record_from(path: Path, raw: Mapping[str, Any]) -> RunRecord:
    """The :class:`RunRecord` in ``raw`` (``run.json`` at ``path``); a missing key, a wrong
    label, timeframe or type is a one-line :class:`DataError` naming the file and key."""
    optional = {"setup", "liquidations"}
    names = [f.name for f in fields(RunRecord) if f.name not in optional]
    missing = [n for n in names if n not in raw]
    if missing:
        raise DataError(f"{path}: missing key(s) {', '.join(missing)}")
    values = {n: raw[n] for n in names}
    if not isinstance(values["trades_sha256"], dict) or not isinstance(values["notes"], dict):
        raise DataError(f"{path}: trades_sha256 and notes must be JSON objects")
    if values["data_label"] not in DATA_LABELS:
        raise DataError(f"{path}: data_label {values['data_label']!r}: expected synthetic or real")
    try:
        Timeframe.parse(str(values["timeframe"]))
    except ConfigError as exc:
        raise DataError(f"{path}: {exc}") from None
    raw_setup = raw.get("setup")
    setup = None if raw_setup is None else RunSetup.from_json(raw_setup, f"{path}: setup")
    liquidations = read_typed(_LIQUIDATIONS, raw.get("liquidations", []), f"{path}: liquidations")
    return RunRecord(**values, setup=setup, liquidations=liquidations)
