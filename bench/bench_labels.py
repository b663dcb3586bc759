#!/usr/bin/env python3
"""Triple-barrier labelling benchmark (WORKLOAD.md): ATRA's exit kernel vs the pandas loop.

    python bench/bench_labels.py --data /tmp/atra-bench/small

Events: EMA20/50 crossovers (ATRA's primary model, WORKLOAD.md's rule) with
``50 <= t <= n - 50``; barriers SL 1.5 ATR / TP 3 ATR re-anchored at ``open[t+1]``, 48 bars,
taker fee 0.04% per side. Labels come from ``atra.core.labels.label_events`` (the full pandas
API: validation, kernel, result frame) and from two pandas loops on the same events; the
labels must be identical:

* the book's pattern (getEvents / applyPtSlOnT1 / getBins of Lopez de Prado): events indexed
  by t0, per event ``.loc[t0:t1]``, ``.index.min()`` of the touches written back with
  ``out.loc[loc, 'sl']``, single process: the baseline of the ``speedup`` figure;
* a leaner loop (``iterrows``, no per-event writes), reported beside it.

The loops are slow, so by default they run on an evenly spread subset of at most
``--baseline-max-events`` events and their events/s is extrapolated to all events (stated
in the output). Every timing is the best of several runs (``--repeat`` warm runs of ATRA,
``--baseline-repeat`` runs of each loop), the usual guard against other load on the machine;
``first_call_s`` is the first call (numba compilation or cache load included).

Folder: Parquet files with ``open_time`` (timestamp or int64 ms) and ``open high low close
volume``; the symbol is the file stem (``BTCUSDT_spot_1h.parquet`` -> ``BTCUSDT``). Rows are
sorted by time and duplicate times dropped. On real data with gaps the signals follow
``atra.core.signals`` (indicators restart after a gap); both sides label the same events.
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from atra.core.exits.api import ExitSpec
from atra.core.exits.kernel import simulate_exits_nb
from atra.core.labels import label_events, label_stats
from atra.core.signals.events import generate_events
from atra.core.signals.spec import SignalSpec

WARMUP = 50
TAIL = 50  # t <= n - TAIL: entry, the whole horizon and the time-exit bar are in the data
SPEC = SignalSpec()  # EMA 20/50, ATR(14) Wilder, SL 1.5 ATR, TP 3 ATR, horizon 48
EXIT = ExitSpec(tp1_fraction=1.0, fee_entry=0.0004, fee_tp=0.0004, fee_stop=0.0004)
_STEM = re.compile(r"^(?P<symbol>[A-Za-z0-9]+)_(spot|perp)_\w+$")


def load_folder(folder: Path) -> dict[str, pd.DataFrame]:
    """Every ``*.parquet`` of ``folder`` as a candle frame (int64 ms ``open_time``)."""
    frames: dict[str, pd.DataFrame] = {}
    files = sorted(folder.glob("*.parquet"))
    if not files:
        sys.exit(f"DataError: no *.parquet file in {folder}")
    for path in files:
        match = _STEM.match(path.stem)
        symbol = match.group("symbol") if match else path.stem
        df = pd.read_parquet(path)
        missing = {"open_time", "open", "high", "low", "close", "volume"} - set(df.columns)
        if missing:
            sys.exit(f"DataError: {path}: missing column(s) {', '.join(sorted(missing))}")
        ot = df["open_time"]
        if pd.api.types.is_datetime64_any_dtype(ot.dtype):
            ms = pd.to_datetime(ot, utc=True).dt.as_unit("ms").astype("int64")
        else:
            ms = ot.astype("int64")
        frame = pd.DataFrame(
            {"open_time": ms.to_numpy()}
            | {c: df[c].to_numpy(dtype=np.float64) for c in ("open", "high", "low", "close")}
            | {"volume": df["volume"].to_numpy(dtype=np.float64)}
        )
        frame = frame.sort_values("open_time").drop_duplicates("open_time", keep="first")
        if symbol in frames:
            sys.exit(f"DataError: {path}: symbol {symbol} appears twice in {folder}")
        frames[symbol] = frame.reset_index(drop=True)
    return frames


def make_events(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """WORKLOAD.md's events on every symbol: crossovers with 50 <= t <= n - 50."""
    parts = []
    for symbol, frame in frames.items():
        ev = generate_events(frame, SPEC, symbol=symbol)
        n = len(frame)
        parts.append(ev[(ev["t"] >= WARMUP) & (ev["t"] <= n - TAIL)])
    return pd.concat(parts, ignore_index=True)


def atra_labels(frames: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame, pd.DataFrame]:
    events = make_events(frames)
    return events, label_events(frames, events, EXIT)


def kernel_only(frames: dict[str, pd.DataFrame], events: pd.DataFrame) -> float:
    """Seconds of the bare kernel call on pre-built arrays (no pandas at all)."""
    offsets, base = {}, 0
    for s, f in frames.items():
        offsets[s] = base
        base += len(f)
    o = np.concatenate([f["open"].to_numpy() for f in frames.values()])
    h = np.concatenate([f["high"].to_numpy() for f in frames.values()])
    lo = np.concatenate([f["low"].to_numpy() for f in frames.values()])
    off = events["symbol"].map(offsets).to_numpy(dtype=np.int64)
    ends = off + events["symbol"].map({s: len(f) for s, f in frames.items()}).to_numpy(np.int64)
    eb = off + events["t"].to_numpy(np.int64) + 1
    args = (
        o, h, lo, eb, ends, events["side"].to_numpy(np.int8), events["sl_dist"].to_numpy(),
        events["tp1_dist"].to_numpy(), events["tp2_dist"].to_numpy(),
        events["horizon_bars"].to_numpy(np.int64), 1.0, False, 0.0004, 0.0004, 0.0004, 0.0,
    )  # fmt: skip
    simulate_exits_nb(*args)
    runs = []
    for _ in range(7):
        t0 = time.perf_counter()
        simulate_exits_nb(*args)
        runs.append(time.perf_counter() - t0)
    return min(runs)


def _price_frame(frame: pd.DataFrame) -> pd.DataFrame:
    idx = pd.DatetimeIndex(pd.to_datetime(frame["open_time"], unit="ms", utc=True))
    return pd.DataFrame(
        {c: frame[c].to_numpy() for c in ("open", "high", "low")},
        index=idx,
    )


def afml_loop_labels(frames: dict[str, pd.DataFrame], events: pd.DataFrame) -> pd.Series:
    """The book's pattern (getEvents / applyPtSlOnT1 / getBins), single process.

    Events indexed by t0 (the entry bar), ``t1`` the last barrier bar, ``trgt`` = ATR / entry;
    per event the path ``.loc[t0:t1]``, side-adjusted returns of the bar extremes, and
    ``out.loc[loc, 'sl'/'pt'] = touches.index.min()``; then the earliest touch decides.
    """
    ptsl = (SPEC.tp1_atr, SPEC.sl_atr)
    out_all = pd.Series(0, index=events.index, dtype="int64")
    for symbol, ev_sym in events.groupby("symbol", sort=False):
        px = _price_frame(frames[str(symbol)])
        t = ev_sym["t"].to_numpy()
        t0 = px.index[t + 1]
        entry = px["open"].iloc[t + 1].to_numpy()
        # getEvents
        ev = pd.concat(
            {
                "t1": pd.Series(px.index[t + SPEC.horizon_bars], index=t0),
                "trgt": pd.Series(ev_sym["atr"].to_numpy() / entry, index=t0),
                "side": pd.Series(ev_sym["side"].to_numpy(), index=t0),
                "entry": pd.Series(entry, index=t0),
            },
            axis=1,
        )
        # applyPtSlOnT1 (molecule = every event: one process)
        out = ev[["t1"]].copy(deep=True)
        out["sl"] = pd.Series(pd.NaT, index=out.index, dtype=out["t1"].dtype)
        out["pt"] = pd.Series(pd.NaT, index=out.index, dtype=out["t1"].dtype)
        pt = ptsl[0] * ev["trgt"]
        sl = -ptsl[1] * ev["trgt"]
        for loc, t1 in ev["t1"].items():
            path = px.loc[loc:t1]
            side = ev.at[loc, "side"]
            entry_px = ev.at[loc, "entry"]
            if side > 0:
                fav = path["high"] / entry_px - 1.0
                adv = path["low"] / entry_px - 1.0
            else:
                fav = -(path["low"] / entry_px - 1.0)
                adv = -(path["high"] / entry_px - 1.0)
            out.loc[loc, "sl"] = adv[adv <= sl[loc]].index.min()
            out.loc[loc, "pt"] = fav[fav >= pt[loc]].index.min()
        # getBins: the first touch decides; a bar holding both counts as SL
        sl_first = out["sl"].notna() & (out["pt"].isna() | (out["sl"] <= out["pt"]))
        label = np.where(sl_first, -1, np.where(out["pt"].notna(), 1, 0))
        out_all.loc[ev_sym.index] = label
    return out_all


def lean_loop_labels(frames: dict[str, pd.DataFrame], events: pd.DataFrame) -> pd.Series:
    """A tighter pandas loop (no per-event ``.loc`` writes): a second, harder baseline."""
    out = pd.Series(0, index=events.index, dtype="int64")
    for symbol, ev_sym in events.groupby("symbol", sort=False):
        px = _price_frame(frames[str(symbol)])
        t = ev_sym["t"].to_numpy()
        entry = px["open"].iloc[t + 1].to_numpy()
        ev = pd.DataFrame(
            {
                "t1": px.index[t + SPEC.horizon_bars],
                "side": ev_sym["side"].to_numpy(),
                "entry": entry,
                "trgt": ev_sym["atr"].to_numpy() / entry,
            },
            index=px.index[t + 1],
        )
        found = []
        for t0, row in ev.iterrows():
            path = px.loc[t0 : row["t1"]]
            ret_high = path["high"] / row["entry"] - 1.0
            ret_low = path["low"] / row["entry"] - 1.0
            if row["side"] > 0:
                sl = path.index[ret_low <= -SPEC.sl_atr * row["trgt"]].min()
                pt = path.index[ret_high >= SPEC.tp1_atr * row["trgt"]].min()
            else:
                sl = path.index[ret_high >= SPEC.sl_atr * row["trgt"]].min()
                pt = path.index[ret_low <= -SPEC.tp1_atr * row["trgt"]].min()
            if pd.isna(sl) and pd.isna(pt):
                label = 0
            elif pd.isna(pt) or (not pd.isna(sl) and sl <= pt):
                label = -1
            else:
                label = 1
            found.append(label)
        out.loc[ev_sym.index] = found
    return out


def _compare(name: str, ours: np.ndarray, theirs: pd.Series, subset: pd.DataFrame) -> bool:
    mismatch = np.flatnonzero(ours != theirs.to_numpy())
    if mismatch.size:
        i = int(mismatch[0])
        row = subset.iloc[i]
        print(
            f"LABEL MISMATCH ({name}) on {mismatch.size} of {len(subset)} events, first: "
            f"{row['symbol']} t={row['t']} atra={ours[i]} {name}={theirs.iloc[i]}",
            file=sys.stderr,
        )
    return mismatch.size == 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", required=True, type=Path, help="folder of Parquet candle files")
    ap.add_argument("--repeat", type=int, default=9, help="warm runs of ATRA (best of)")
    ap.add_argument("--baseline-repeat", type=int, default=3, help="runs of each loop (best of)")
    ap.add_argument(
        "--baseline-max-events",
        type=int,
        default=2000,
        help="time the pandas loop on at most this many events (0: all) and extrapolate",
    )
    a = ap.parse_args(argv)
    frames = load_folder(a.data)
    bars = sum(len(f) for f in frames.values())

    t0 = time.perf_counter()
    events, labels = atra_labels(frames)
    first_call_s = time.perf_counter() - t0
    core, lab_only = [], []
    for _ in range(a.repeat):
        t0 = time.perf_counter()
        events, labels = atra_labels(frames)
        t1 = time.perf_counter()
        label_events(frames, events, EXIT)
        t2 = time.perf_counter()
        core.append(t1 - t0)
        lab_only.append(t2 - t1)
    core_s = min(core)
    labels_s = min(lab_only)
    kernel_s = kernel_only(frames, events)
    n_ev = len(events)

    k = n_ev if a.baseline_max_events <= 0 else min(n_ev, a.baseline_max_events)
    pick = np.unique(np.linspace(0, n_ev - 1, k).round().astype(np.int64)) if k else []
    subset = events.iloc[pick]
    ours = labels["label"].iloc[pick].to_numpy(dtype=np.int64)
    afml_runs, lean_runs = [], []
    for _ in range(max(a.baseline_repeat, 1)):
        t0 = time.perf_counter()
        afml = afml_loop_labels(frames, subset)
        afml_runs.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        lean = lean_loop_labels(frames, subset)
        lean_runs.append(time.perf_counter() - t0)
    afml_s = min(afml_runs)
    lean_s = min(lean_runs)
    if not (_compare("afml", ours, afml, subset) & _compare("lean", ours, lean, subset)):
        return 1
    afml_eps = len(subset) / afml_s
    lean_eps = len(subset) / lean_s
    ours_eps = n_ev / labels_s
    kern_eps = n_ev / kernel_s
    stats = label_stats(labels)
    extra = "" if len(subset) == n_ev else f"; timed on {len(subset):,} events, extrapolated"
    print(f"data                 {a.data}: {len(frames)} symbols, {bars:,} bars, {n_ev:,} events")
    print(f"labels -1/0/+1       {stats.labels[-1]:,} / {stats.labels[0]:,} / {stats.labels[1]:,}")
    print(f"first call           {first_call_s:.3f} s (compile or cache load included)")
    print(f"core: events+labels  {core_s * 1e3:9.2f} ms ({bars / core_s:,.0f} bars/s)")
    print(f"label_events         {labels_s * 1e3:9.2f} ms ({ours_eps:,.0f} events/s)")
    print(f"kernel only          {kernel_s * 1e3:9.3f} ms ({kern_eps:,.0f} events/s)")
    print(
        f"pandas AFML loop     {afml_s:9.2f} s  ({afml_eps:,.0f} events/s; all events "
        f"~{n_ev / afml_eps:.1f} s{extra})"
    )
    print(
        f"pandas lean loop     {lean_s:9.2f} s  ({lean_eps:,.0f} events/s; all events "
        f"~{n_ev / lean_eps:.1f} s{extra})"
    )
    print(f"labels identical     yes ({len(subset):,} events, both loops)")
    print(
        f"speed-up vs AFML     {ours_eps / afml_eps:,.0f}x label_events, "
        f"{kern_eps / afml_eps:,.0f}x kernel only"
    )
    print(
        f"speed-up vs lean     {ours_eps / lean_eps:,.0f}x label_events, "
        f"{kern_eps / lean_eps:,.0f}x kernel only"
    )
    result = {
        "tool": "atra",
        "symbols": len(frames),
        "bars": bars,
        "events": n_ev,
        "labels": {str(key): int(v) for key, v in stats.labels.items()},
        "core_s": round(core_s, 6),
        "first_call_s": round(first_call_s, 6),
        "bars_per_s": round(bars / core_s, 1),
        "labels_s": round(labels_s, 6),
        "kernel_s": round(kernel_s, 6),
        "events_per_s": round(ours_eps, 1),
        "baseline_events_timed": len(subset),
        "baseline_extrapolated": len(subset) != n_ev,
        "afml_loop_events_per_s": round(afml_eps, 1),
        "lean_loop_events_per_s": round(lean_eps, 1),
        "labels_identical": True,
        "speedup": round(ours_eps / afml_eps, 1),
        "speedup_kernel": round(kern_eps / afml_eps, 1),
        "speedup_vs_lean": round(ours_eps / lean_eps, 1),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
