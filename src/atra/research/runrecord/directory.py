"""Writing and reading run directories: :func:`write_run` (atomic, content-derived run id) and
:func:`read_run` (one-line :class:`~atra.errors.DataError` naming the file on any damage)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from atra.core.types import Timeframe
from atra.errors import ConfigError, DataError
from atra.research.runrecord.hashes import (
    canonical_json,
    code_version,
    equity_sha256,
    hash_config,
    hash_frames,
    normalize_trades,
    trades_sha256,
)
from atra.research.runrecord.legs import Liquidation, RunLeg, liquidation_row
from atra.research.runrecord.metrics import leg_metrics
from atra.research.runrecord.record import (
    DATA_LABELS,
    RUN_ID_HEX,
    LoadedRun,
    RunRecord,
    annualization_sentence,
    record_from,
    record_json,
)
from atra.research.runrecord.setup import RunSetup

__all__ = ["read_run", "write_run"]

F64 = npt.NDArray[np.float64]


# --------------------------------------------------------------------------------------------
# writing


def _check_liquidations(leg: RunLeg, index: npt.NDArray[np.int64], values: F64) -> None:
    """The leg's equity is positive, or positive up to its liquidation and 0 from it on."""
    name = leg.name
    times = set(index.tolist())
    for liq in leg.liquidations:
        if liq.leg != name:
            raise ConfigError(f"leg {name}: holds a liquidation of leg {liq.leg!r}")
        if liq.time_ms not in times:
            raise DataError(f"leg {name}: liquidation time {liq.time_ms} is not a bar of the leg")
    whole = [liq for liq in leg.liquidations if liq.symbol is None]
    if len(whole) > 1:
        raise ConfigError(f"leg {name}: {len(whole)} leg liquidations, expected at most one")
    end = len(values) if not whole else int(np.searchsorted(index, whole[0].time_ms))
    row = liquidation_row(values[:end])
    if row is not None:
        raise DataError(f"leg {name}: equity at row {row} is {float(values[row])!r}, expected > 0")
    if whole:
        if end == 0:
            raise DataError(f"leg {name}: liquidated at its first point, expected a start > 0")
        after = np.flatnonzero(values[end:] != 0.0)
        if after.size:
            at = end + int(after[0])
            raise DataError(
                f"leg {name}: liquidated at {whole[0].time_ms}, expected equity 0 from row {end} "
                f"on, got {float(values[at])!r} at row {at}"
            )


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
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise DataError(
            f"leg {name}: equity at row {int(bad[0])} is {values[bad[0]]!r}, expected > 0"
        )
    _check_liquidations(leg, index, values)
    series = pd.Series(values, index=pd.Index(index, name="open_time_ms"), name=name)
    trades = None if leg.trades is None else normalize_trades(leg.trades, f"leg {name}")
    return series, trades


def _liquidation_order(liq: Liquidation) -> tuple[int, str, bool, str]:
    """Time order; at one time a leg's holdings before the leg itself."""
    return liq.time_ms, liq.leg, liq.symbol is None, liq.symbol or ""


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
    setup: RunSetup | None = None,
) -> Path:
    """Write the run to ``root/<run_id>/`` atomically (temp dir + rename); return that path.

    Statistics per leg come from :func:`atra.core.stats.report.compute_stats` (a liquidated leg:
    :func:`~atra.research.runrecord.metrics.liquidated_report`), annualised with
    ``sqrt(timeframe.bars_per_year)``. The DSR uses ``n_trials`` configurations tried and
    ``trials_sharpe_variance`` (annualised); when that is ``None`` and ``n_trials > 1`` the
    leg's own Sharpe estimator variance stands in (``trials_sharpe_variance_source`` in
    ``metrics.json`` says which). All legs share one equity index. Each leg's signals counted by
    what blocked them (:attr:`RunLeg.blocked`) go to ``metrics.json`` as ``blocked_by`` (null
    for a leg without them). ``setup`` (what was run) and the legs' liquidations go to
    ``run.json``. Writing an identical run again returns the existing directory untouched.
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
    blocked = {leg.name: leg.blocked.to_json() for leg in legs if leg.blocked is not None}
    if blocked:  # runs written without the counts keep their identity
        identity["blocked_by"] = blocked
    run_id = hashlib.sha256(canonical_json(identity).encode()).hexdigest()[:RUN_ID_HEX]
    root = Path(root)
    final = root / run_id
    if final.exists():
        existing = read_run(final)  # a corrupt directory is a DataError, never overwritten
        if existing.record.run_id != run_id:
            raise DataError(f"{final / 'run.json'}: run_id {existing.record.run_id!r} "
                            f"does not match its directory {run_id!r}")  # fmt: skip
        return final
    liquidations: list[Liquidation] = [liq for leg in legs for liq in leg.liquidations]
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
        setup=setup,
        liquidations=tuple(sorted(liquidations, key=_liquidation_order)),
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
            leg.name: {
                **leg_metrics(series, trades, timeframe, n_trials, trials_sharpe_variance),
                "blocked_by": blocked.get(leg.name),
            }
            for leg, (series, trades) in zip(legs, checked, strict=True)
        },
    }
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{run_id}.", dir=root))
    try:
        _write_json(tmp / "run.json", record_json(record))
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


def read_run(path: Path) -> LoadedRun:
    """Read a run directory back. A missing or corrupt file, or trades whose SHA-256 no longer
    matches ``run.json``, is a one-line :class:`DataError` naming the file."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: not a run directory (missing)")
    record = record_from(path / "run.json", _read_json(path / "run.json"))
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
    run = LoadedRun(path, record, metrics, equity, trades, oos)
    _ = run.blocked  # a malformed blocked_by is an error on reading, not on display
    return run
