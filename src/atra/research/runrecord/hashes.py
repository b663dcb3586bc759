"""The hashes of a run record (:mod:`atra.research.runrecord`): config, input frames, trade lists,
equity curves and the code version."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

import atra
from atra.core.exits.kernel import REASON_NAMES
from atra.errors import ConfigError, DataError

__all__ = [
    "TRADE_COLUMNS",
    "TRADE_COLUMN_ALIASES",
    "canonical_json",
    "code_version",
    "equity_sha256",
    "hash_config",
    "hash_frames",
    "normalize_trades",
    "trades_sha256",
]

TRADE_COLUMNS: Final[tuple[str, ...]] = (
    "symbol",
    "side",
    "entry_ms",
    "exit_ms",
    "entry_price",
    "exit_price",
    "pnl",
    "fees",
    "slippage",
    "funding",
    "reason",
)
"""Columns every trade list needs, in the order :func:`trades_sha256` hashes them."""
TRADE_COLUMN_ALIASES: Final[dict[str, str]] = {
    "entry_ms": "entry_time_ms",
    "exit_ms": "exit_time_ms",
}
"""The backtester's names (``BacktestResult.trades``) accepted for the required columns."""
_INT_COLUMNS: Final[frozenset[str]] = frozenset({"entry_ms", "exit_ms"})
_STR_COLUMNS: Final[frozenset[str]] = frozenset({"symbol", "reason"})
_GIT_TIMEOUT_S: Final[float] = 5.0


def canonical_json(value: Any, what: str = "config") -> str:
    """Sorted-key, whitespace-free JSON of ``value``; a value JSON cannot hold is a
    :class:`ConfigError` naming ``what``."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False, default=_json_default)  # fmt: skip
    except ValueError as exc:
        raise ConfigError(f"{what}: cannot store a non-finite number ({exc})") from None
    except TypeError as exc:
        raise ConfigError(f"{what}: {exc}") from None


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    if hasattr(value, "value") and isinstance(value.value, str | int):  # enums
        return value.value
    raise TypeError(f"cannot store a value of type {type(value).__name__}: {value!r}")


def hash_config(config: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of ``config`` (sorted keys, no whitespace)."""
    return hashlib.sha256(canonical_json(dict(config)).encode()).hexdigest()


def _update_column(digest: Any, name: str, values: pd.Series) -> None:
    digest.update(f"col:{name}:{values.dtype}:{len(values)}\n".encode())
    if isinstance(values.dtype, np.dtype) and values.dtype.kind in "biufcmM":
        arr = np.ascontiguousarray(values.to_numpy())
        digest.update(arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes())
        return
    for item in values.to_numpy(dtype=object):
        text = "\x00" if item is None or item is pd.NA else repr(item)
        raw = text.encode()
        digest.update(len(raw).to_bytes(8, "little"))
        digest.update(raw)


def hash_frames(frames: Iterable[pd.DataFrame]) -> str:
    """Content hash of input data: column names, dtypes and values of each frame, in the
    given order (pass frames in a fixed order, e.g. sorted by symbol). The index is ignored."""
    digest = hashlib.sha256()
    for i, frame in enumerate(frames):
        digest.update(f"frame:{i}:{frame.shape[0]}x{frame.shape[1]}\n".encode())
        for name in frame.columns:
            _update_column(digest, str(name), frame[name])
    return digest.hexdigest()


def _float_text(value: float) -> str:
    if value == 0.0:
        return "0.0"  # -0.0 and 0.0 are the same amount
    return repr(float(value))


def _side_text(value: Any) -> str:
    if isinstance(value, str):
        norm = value.strip().upper()
        mapped = {"LONG": "1", "BUY": "1", "SHORT": "-1", "SELL": "-1"}.get(norm)
        if mapped is None:
            raise DataError(f"trades: side {value!r}: expected 1/-1 or LONG/SHORT")
        return mapped
    side = float(value)
    if side not in (1.0, -1.0):
        raise DataError(f"trades: side {value!r}: expected 1/-1 or LONG/SHORT")
    return str(int(side))


def _reason_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int | np.integer):
        return REASON_NAMES.get(int(value), str(int(value)))
    return str(value)


def normalize_trades(trades: pd.DataFrame, leg: str = "trades") -> pd.DataFrame:
    """A copy with the required columns under their canonical names (``entry_time_ms`` ->
    ``entry_ms``), reasons as names (``1`` -> ``"SL"``); other columns kept after them.
    A missing column or a non-finite price / amount is a :class:`DataError` naming the leg."""
    frame = trades.copy()
    for name, alias in TRADE_COLUMN_ALIASES.items():
        if name not in frame.columns and alias in frame.columns:
            frame = frame.rename(columns={alias: name})
    missing = [c for c in TRADE_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{leg}: missing trade column(s) {', '.join(missing)}")
    for col in ("entry_price", "exit_price", "pnl", "fees", "slippage", "funding"):
        values = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=float)
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise DataError(f"{leg}: {col} at row {int(bad[0])} is {frame[col].iloc[bad[0]]!r}, "
                            "expected a finite number")  # fmt: skip
        frame[col] = values
    for col in sorted(_INT_COLUMNS):
        times = pd.Series(pd.to_numeric(frame[col], errors="coerce"), index=frame.index)
        if times.isna().any():
            row = int(np.flatnonzero(times.isna().to_numpy())[0])
            raise DataError(f"{leg}: {col} at row {row} is missing, expected a time in ms")
        frame[col] = times.astype(np.int64)
    frame["symbol"] = frame["symbol"].astype(str).astype(object)
    frame["reason"] = pd.Series(
        [_reason_text(v) for v in frame["reason"]], index=frame.index, dtype=object
    )
    frame["side"] = [int(_side_text(v)) for v in frame["side"]]
    order = list(TRADE_COLUMNS) + [c for c in frame.columns if c not in TRADE_COLUMNS]
    return frame[order].reset_index(drop=True)


def trades_sha256(trades: pd.DataFrame) -> str:
    """SHA-256 of the trade list: :data:`TRADE_COLUMNS` in that order, rows sorted by
    ``(entry_ms, symbol)`` then the other columns, floats as round-trip ``repr`` text (so a
    CSV round trip keeps the hash). Identical trades give identical hashes; extra columns are
    not hashed."""
    frame = normalize_trades(trades)
    rows: list[tuple[int, str, tuple[str, ...]]] = []
    columns = [frame[c].tolist() for c in TRADE_COLUMNS]
    for values in zip(*columns, strict=True):
        rec = dict(zip(TRADE_COLUMNS, values, strict=True))
        text = tuple(
            str(int(rec[c]))
            if c in _INT_COLUMNS
            else str(rec[c])
            if c in _STR_COLUMNS or c == "side"
            else _float_text(rec[c])
            for c in TRADE_COLUMNS
        )
        rows.append((int(rec["entry_ms"]), str(rec["symbol"]), text))
    rows.sort()
    digest = hashlib.sha256()
    digest.update(("|".join(TRADE_COLUMNS) + "\n").encode())
    for _, _, text in rows:
        digest.update(("|".join(text) + "\n").encode())
    return digest.hexdigest()


def equity_sha256(equity: pd.Series) -> str:
    """SHA-256 of an equity curve: ``time:value`` lines, floats as round-trip text."""
    digest = hashlib.sha256()
    for t, v in zip(equity.index.tolist(), equity.tolist(), strict=True):
        digest.update(f"{int(t)}:{_float_text(float(v))}\n".encode())
    return digest.hexdigest()


def _git(args: Sequence[str], cwd: Path) -> str | None:
    try:
        done = subprocess.run(  # noqa: S603  (fixed argv, no shell)
            ["git", "--no-optional-locks", *args],  # noqa: S607  (git from PATH on purpose)
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def code_version(source_dir: Path | None = None) -> str:
    """``atra.__version__``, plus ``+g<commit>`` when the package sits in a git checkout and
    ``.dirty`` when tracked files have uncommitted changes (best effort: no git, no commit)."""
    version = atra.__version__
    cwd = source_dir if source_dir is not None else Path(atra.__file__).resolve().parent
    commit = _git(["rev-parse", "HEAD"], cwd)
    if not commit:
        return version
    status = _git(["status", "--porcelain", "--untracked-files=no"], cwd)
    dirty = "+dirty" if status else ""
    return f"{version}+g{commit}{dirty}"
