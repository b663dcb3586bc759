"""Run records: every backtest / walk-forward run written so that two runs can be proven equal.

A run directory ``root/<run_id>/`` holds

- ``run.json``: the :class:`RunRecord` (config hash, data hash, code version, seed, timeframe,
  the annualisation sentence, one trades SHA-256 per leg, the data label);
- ``metrics.json``: per leg, :func:`atra.core.stats.compute_stats` as a dict (annualisation
  factor, PSR, DSR with ``n_trials``) plus the realised costs per year;
- ``trades_<leg>.csv`` for every leg with trades, ``equity.csv`` (``open_time_ms`` + one
  column per leg) and ``oos_predictions.csv`` when given.

The run id is a content id, not a timestamp: the first 12 hex digits of a SHA-256 over the
config hash, data hash, code version, seed, timeframe, data label, ``n_trials`` and every leg's
trades and equity hashes. The same run gets the same id; writing it again is a no-op.

The hashes live in :mod:`atra.research.run_hashes`, the per-leg figures in
:mod:`atra.research.run_metrics`; this module writes and reads run directories.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt
import pandas as pd

from atra.core.types import Timeframe
from atra.errors import ConfigError, DataError
from atra.research.run_hashes import (
    TRADE_COLUMN_ALIASES,
    TRADE_COLUMNS,
    canonical_json,
    code_version,
    equity_sha256,
    hash_config,
    hash_frames,
    normalize_trades,
    trades_sha256,
)
from atra.research.run_metrics import leg_metrics, sharpe_estimator_variance

__all__ = [
    "DATA_LABELS",
    "LEG_NAMES",
    "RUN_ID_HEX",
    "SCHEMA_VERSION",
    "TRADE_COLUMNS",
    "TRADE_COLUMN_ALIASES",
    "BacktestLike",
    "LoadedRun",
    "RunLeg",
    "RunRecord",
    "annualization_sentence",
    "code_version",
    "hash_config",
    "hash_frames",
    "leg_from_backtest",
    "normalize_trades",
    "ordered_legs",
    "read_run",
    "sharpe_estimator_variance",
    "trades_sha256",
    "write_run",
]

SCHEMA_VERSION: Final[int] = 1
RUN_ID_HEX: Final[int] = 12
LEG_NAMES: Final[tuple[str, ...]] = ("primary", "filtered", "buy_hold")
"""The usual legs, in display order; other names are allowed and shown after these."""
DATA_LABELS: Final[tuple[str, ...]] = ("synthetic", "real")


@dataclass(frozen=True, slots=True)
class RunLeg:
    """One strategy variant of a run: ``"primary"``, ``"filtered"`` or ``"buy_hold"``."""

    name: str
    equity: pd.Series
    """Equity by bar; index = bar open time in ms (int64); the first value is the initial
    equity."""
    trades: pd.DataFrame | None
    """The backtest's trade list (``None`` for buy-and-hold); needs :data:`TRADE_COLUMNS`
    (``entry_time_ms`` / ``exit_time_ms`` accepted for ``entry_ms`` / ``exit_ms``); other
    columns are kept in the CSV. ``quantity``, when present, feeds the turnover."""


@dataclass(frozen=True, slots=True)
class RunRecord:
    """The identity of a run (``run.json``)."""

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
    """Leg name -> :func:`trades_sha256` of its trades (legs with trades only)."""
    data_label: str
    """``"synthetic"`` or ``"real"``."""
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LoadedRun:
    """A run directory read back by :func:`read_run`."""

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


class BacktestLike(Protocol):
    """What :func:`leg_from_backtest` reads (``atra.core.backtest.engine.BacktestResult``)."""

    @property
    def trades(self) -> pd.DataFrame: ...
    @property
    def open_time_ms(self) -> npt.NDArray[np.int64]: ...
    @property
    def equity(self) -> npt.NDArray[np.float64]: ...
    @property
    def initial_equity(self) -> float: ...
    @property
    def timeframe(self) -> Timeframe: ...


def leg_from_backtest(name: str, result: BacktestLike) -> RunLeg:
    """A :class:`RunLeg` from a backtest result: its equity (marked at each bar's close,
    indexed by the bar's open time) with the initial equity prepended one bar earlier (the
    close before the first bar), and its trade list."""
    times = np.asarray(result.open_time_ms, dtype=np.int64)
    if times.size == 0:
        raise DataError(f"leg {name}: the backtest has no bars")
    index = np.concatenate(([times[0] - result.timeframe.ms], times))
    values = np.concatenate(([float(result.initial_equity)], np.asarray(result.equity, float)))
    return RunLeg(name, pd.Series(values, index=index), result.trades)


def ordered_legs(names: Iterable[str]) -> list[str]:
    """``names`` with the usual legs first, in :data:`LEG_NAMES` order, then the rest."""
    given = list(names)
    known = [n for n in LEG_NAMES if n in given]
    return known + [n for n in given if n not in LEG_NAMES]


def annualization_sentence(timeframe: Timeframe) -> str:
    """``Sharpe annualised x sqrt(8760) (1h bars, 365-day year)``."""
    return (
        f"Sharpe annualised x sqrt({timeframe.bars_per_year}) "
        f"({timeframe.value} bars, 365-day year)"
    )


# --------------------------------------------------------------------------------------------
# writing


def _check_leg(leg: RunLeg) -> tuple[pd.Series, pd.DataFrame | None]:
    name = leg.name
    if not name or not name.replace("_", "").replace("-", "").isalnum():
        raise ConfigError(f"leg name {name!r}: expected letters, digits, '_' or '-'")
    eq = leg.equity
    if not pd.api.types.is_integer_dtype(eq.index.dtype):
        raise DataError(
            f"leg {name}: equity index has dtype {eq.index.dtype}, expected int64 open times (ms)"
        )
    index = np.asarray(eq.index, dtype=np.int64)
    if len(eq) < 2:
        raise DataError(f"leg {name}: equity has {len(eq)} point(s), expected at least 2")
    if np.any(np.diff(index) <= 0):
        row = int(np.flatnonzero(np.diff(index) <= 0)[0]) + 1
        raise DataError(f"leg {name}: equity index not strictly increasing at row {row}")
    values = eq.to_numpy(dtype=float)
    bad = np.flatnonzero(~(np.isfinite(values) & (values > 0.0)))
    if bad.size:
        raise DataError(
            f"leg {name}: equity at row {int(bad[0])} is {values[bad[0]]!r}, expected > 0"
        )
    series = pd.Series(values, index=pd.Index(index, name="open_time_ms"), name=name)
    trades = None if leg.trades is None else normalize_trades(leg.trades, f"leg {name}")
    return series, trades


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=False, allow_nan=False) + "\n")


def write_run(
    root: Path,
    *,
    legs: Sequence[RunLeg],
    timeframe: Timeframe,
    config: Mapping[str, Any],
    data_hash: str,
    seed: int,
    data_label: str,
    oos_predictions: pd.DataFrame | None = None,
    n_trials: int = 1,
    notes: Mapping[str, Any] | None = None,
    trials_sharpe_variance: float | None = None,
) -> Path:
    """Write the run to ``root/<run_id>/`` atomically (temp dir + rename); return that path.

    Statistics per leg come from :func:`atra.core.stats.compute_stats`, annualised with
    ``sqrt(timeframe.bars_per_year)``. The DSR uses ``n_trials`` configurations tried and
    ``trials_sharpe_variance`` (annualised); when that is ``None`` and ``n_trials > 1`` the
    leg's own Sharpe estimator variance stands in (``trials_sharpe_variance_source`` in
    ``metrics.json`` says which). All legs share one equity index. Writing an identical run
    again returns the existing directory untouched.
    """
    if data_label not in DATA_LABELS:
        raise ConfigError(f"data_label={data_label!r}: expected 'synthetic' or 'real'")
    if not legs:
        raise ConfigError("write_run: expected at least one leg")
    names = [leg.name for leg in legs]
    if len(set(names)) != len(names):
        raise ConfigError(f"leg names must be unique, got {names}")
    if n_trials < 1:
        raise ConfigError(f"n_trials={n_trials}: expected at least 1")
    checked = [_check_leg(leg) for leg in legs]
    index0 = checked[0][0].index
    for leg, (series, _) in zip(legs, checked, strict=True):
        if not series.index.equals(index0):
            raise DataError(
                f"leg {leg.name}: equity index differs from leg {legs[0].name}'s "
                f"({len(series)} vs {len(index0)} bars): legs must share the bars"
            )
    config_hash = hash_config(config)
    version = code_version()
    trade_hashes = {
        leg.name: trades_sha256(trades)
        for leg, (_, trades) in zip(legs, checked, strict=True)
        if trades is not None
    }
    identity = {
        "config_hash": config_hash,
        "data_hash": data_hash,
        "code_version": version,
        "seed": int(seed),
        "timeframe": timeframe.value,
        "data_label": data_label,
        "n_trials": n_trials,
        "trials_sharpe_variance": trials_sharpe_variance,
        "trades": trade_hashes,
        "equity": {leg.name: equity_sha256(s) for leg, (s, _) in zip(legs, checked, strict=True)},
        "oos_predictions": None if oos_predictions is None else hash_frames([oos_predictions]),
    }
    run_id = hashlib.sha256(canonical_json(identity).encode()).hexdigest()[:RUN_ID_HEX]
    root = Path(root)
    final = root / run_id
    if final.exists():
        existing = read_run(final)  # a corrupt directory is a DataError, never overwritten
        if existing.record.run_id != run_id:
            raise DataError(f"{final / 'run.json'}: run_id {existing.record.run_id!r} "
                            f"does not match its directory {run_id!r}")  # fmt: skip
        return final
    record = RunRecord(
        run_id=run_id,
        created_utc=datetime.now(UTC).isoformat(timespec="seconds"),
        config_hash=config_hash,
        data_hash=data_hash,
        code_version=version,
        seed=int(seed),
        timeframe=timeframe.value,
        annualization=annualization_sentence(timeframe),
        trades_sha256=trade_hashes,
        data_label=data_label,
        notes=json.loads(canonical_json(dict(notes or {}), "notes")),
    )
    metrics = {
        "run_id": run_id,
        "timeframe": timeframe.value,
        "bars_per_year": timeframe.bars_per_year,
        "annualization_factor": timeframe.annualization_factor,
        "annualization": record.annualization,
        "n_trials": n_trials,
        "data_label": data_label,
        "out_of_sample_only": True,
        "costs_included": True,
        "legs": {
            leg.name: leg_metrics(series, trades, timeframe, n_trials, trials_sharpe_variance)
            for leg, (series, trades) in zip(legs, checked, strict=True)
        },
    }
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{run_id}.", dir=root))
    try:
        _write_json(tmp / "run.json", {"schema_version": SCHEMA_VERSION, **asdict(record)})
        _write_json(tmp / "metrics.json", metrics)
        for leg, (_, trades) in zip(legs, checked, strict=True):
            if trades is not None:
                trades.to_csv(tmp / f"trades_{leg.name}.csv", index=False)
        columns = {leg.name: s.to_numpy() for leg, (s, _) in zip(legs, checked, strict=True)}
        equity = pd.DataFrame(columns)
        equity.insert(0, "open_time_ms", index0.to_numpy(dtype=np.int64))
        equity.to_csv(tmp / "equity.csv", index=False)
        if oos_predictions is not None:
            oos_predictions.to_csv(tmp / "oos_predictions.csv", index=False)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "run.json").exists():  # not a concurrent writer of the same run
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


# --------------------------------------------------------------------------------------------
# reading


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: missing (not a run directory?)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: corrupt JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(value, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def _read_csv(path: Path, **kwargs: Any) -> pd.DataFrame:
    try:
        frame: pd.DataFrame = pd.read_csv(path, **kwargs)
        return frame
    except FileNotFoundError:
        raise DataError(f"{path}: missing") from None
    except (OSError, ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: corrupt CSV ({first})") from None


def _record_from(path: Path, raw: Mapping[str, Any]) -> RunRecord:
    names = [f.name for f in fields(RunRecord)]
    missing = [n for n in names if n not in raw]
    if missing:
        raise DataError(f"{path}: missing key(s) {', '.join(missing)}")
    record = RunRecord(**{n: raw[n] for n in names})
    if not isinstance(record.trades_sha256, dict) or not isinstance(record.notes, dict):
        raise DataError(f"{path}: trades_sha256 and notes must be JSON objects")
    if record.data_label not in DATA_LABELS:
        raise DataError(f"{path}: data_label {record.data_label!r}: expected synthetic or real")
    try:
        Timeframe.parse(str(record.timeframe))
    except ConfigError as exc:
        raise DataError(f"{path}: {exc}") from None
    return record


def read_run(path: Path) -> LoadedRun:
    """Read a run directory back. A missing or corrupt file, or trades whose SHA-256 no longer
    matches ``run.json``, is a one-line :class:`DataError` naming the file."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: not a run directory (missing)")
    record = _record_from(path / "run.json", _read_json(path / "run.json"))
    metrics_path = path / "metrics.json"
    metrics = _read_json(metrics_path)
    legs = metrics.get("legs")
    if not isinstance(legs, dict) or not legs:
        raise DataError(f"{metrics_path}: expected a non-empty 'legs' object")
    equity_path = path / "equity.csv"
    equity = _read_csv(equity_path)
    expected = ["open_time_ms", *legs]
    if list(equity.columns) != expected:
        raise DataError(f"{equity_path}: columns {list(equity.columns)}, expected {expected}")
    if len(equity) < 2 or equity.isna().any().any():
        raise DataError(f"{equity_path}: expected at least 2 complete rows")
    trades: dict[str, pd.DataFrame] = {}
    for leg, expected_hash in record.trades_sha256.items():
        trades_path = path / f"trades_{leg}.csv"
        frame = _read_csv(trades_path, dtype={"symbol": str, "reason": str})
        try:
            actual = trades_sha256(frame)
        except DataError as exc:
            raise DataError(f"{trades_path}: {exc}") from None
        if actual != expected_hash:
            raise DataError(f"{trades_path}: sha256 {actual[:12]}... does not match run.json "
                            f"({str(expected_hash)[:12]}...): the file was changed")  # fmt: skip
        trades[leg] = frame
    oos_path = path / "oos_predictions.csv"
    oos = _read_csv(oos_path) if oos_path.exists() else None
    return LoadedRun(path, record, metrics, equity, trades, oos)
