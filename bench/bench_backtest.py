#!/usr/bin/env python3
"""Backtest benchmark (WORKLOAD.md): ATRA's workload backtest vs vectorbt, same data, one run.

    python bench/bench_backtest.py --data /tmp/atra-bench/large [--cold]

ATRA: :func:`atra.core.backtest.engine.run_workload` (indicators + events + exit kernel + books +
portfolio, all counted in ``core_s``, the median of ``--repeat`` warm runs; ``first_call_s`` is
the first call, numba compilation or cache load included). Data loading is not timed.

vectorbt (optional bench dependency, ``pip install vectorbt``): the same indicators (pandas
``ewm``), the same events, and ``Portfolio.from_signals`` with entries at the next open,
per-entry ``sl_stop`` / ``tp_stop`` from the ATR, an exit signal at the open 48 bars after the
entry, taker fee 0.04%, all-in, one position per column, ``init_cash`` 1 per symbol, the
portfolio the equal-weight mean of the columns' values. vectorbt checks stops only from the
bar after the entry and takes one order per bar, so its figures differ from WORKLOAD.md's
(printed side by side); the timing compares the same amount of work on the same bars.

Every timed run starts after ``gc.collect()`` (a collection of the other tool's garbage is
not charged to the next run). The ATRA / vectorbt ratio is the median over interleaved pairs
of runs, so both tools see the same machine load.

``--cold`` also times fresh processes (``--tool atra`` / ``--tool vectorbt``, ``--repeat 1``):
interpreter start, imports, data load, numba cache load from disk, one run.

Folder: Parquet files with ``open_time`` (timestamp or int64 ms) and ``open high low close
volume``; the file stem is the symbol; rows sorted by time, duplicate times dropped. The last
line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from atra.core.backtest.engine import WorkloadResult, run_workload

FEE = 0.0004
WARMUP = 50
HORIZON = 48
BARS_PER_YEAR = 365 * 24


def load_folder(folder: Path) -> dict[str, pd.DataFrame]:
    """Every ``*.parquet`` of ``folder`` as a candle frame (int64 ms ``open_time``)."""
    files = sorted(folder.glob("*.parquet"))
    if not files:
        sys.exit(f"DataError: no *.parquet file in {folder}")
    frames: dict[str, pd.DataFrame] = {}
    for path in files:
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
        frame = frame.sort_values("open_time", kind="stable")
        frames[path.stem] = frame.drop_duplicates("open_time", keep="first").reset_index(drop=True)
    return frames


def _timed_atra(
    frames: dict[str, pd.DataFrame], repeat: int
) -> tuple[WorkloadResult, float, float, float]:
    t0 = time.perf_counter()
    res = run_workload(frames)
    first = time.perf_counter() - t0
    runs = []
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        res = run_workload(frames)
        runs.append(time.perf_counter() - t0)
    return res, first, statistics.median(runs) if runs else first, min(runs, default=first)


def vectorbt_workload(frames: dict[str, pd.DataFrame]) -> dict[str, float]:
    """WORKLOAD.md as vectorbt users write it; returns the figures."""
    import vectorbt as vbt

    wide = {
        c: pd.DataFrame({s: f.set_index("open_time")[c] for s, f in frames.items()})
        for c in ("open", "high", "low", "close")
    }
    o, h, lo, c = wide["open"], wide["high"], wide["low"], wide["close"]
    d = c.ewm(span=20, adjust=False).mean() - c.ewm(span=50, adjust=False).mean()
    prev_c = c.shift(1)
    tr = pd.DataFrame(
        np.maximum(h - lo, np.maximum((h - prev_c).abs(), (lo - prev_c).abs())),
        index=c.index,
        columns=c.columns,
    )
    tr.iloc[0] = h.iloc[0] - lo.iloc[0]
    atr = tr.ewm(alpha=1 / 14, adjust=False).mean()
    pos = np.arange(len(c))[:, None]
    n = c.notna().sum().to_numpy()[None, :]
    window = (pos >= WARMUP) & (pos <= n - WARMUP)
    long_sig = (d > 0) & (d.shift(1) <= 0) & window
    short_sig = (d < 0) & (d.shift(1) >= 0) & window
    entries = long_sig.shift(1, fill_value=False)
    short_entries = short_sig.shift(1, fill_value=False)
    a_prev = atr.shift(1)
    sl_stop = (1.5 * a_prev / o).where(entries | short_entries)
    tp_stop = (3.0 * a_prev / o).where(entries | short_entries)
    time_exit = (long_sig | short_sig).shift(1 + HORIZON, fill_value=False)
    pf = vbt.Portfolio.from_signals(
        c,
        entries=entries,
        exits=time_exit,
        short_entries=short_entries,
        short_exits=time_exit,
        price=o,
        open=o,
        high=h,
        low=lo,
        sl_stop=sl_stop,
        tp_stop=tp_stop,
        fees=FEE,
        size=np.inf,
        init_cash=1.0,
        upon_opposite_entry="ignore",
        freq="1h",
    )
    value = pf.value().ffill().fillna(1.0)
    equity = value.mean(axis=1).to_numpy()
    r = equity[1:] / equity[:-1] - 1.0
    rec = pf.trades.values  # the raw trade records (pnl, status): no readable frame built
    pnl = rec["pnl"][rec["status"] == 1]  # TradeStatus.Closed
    return {
        "events": int(long_sig.to_numpy().sum() + short_sig.to_numpy().sum()),
        "trades": int(pnl.size),
        "total_return": float(equity[-1] - 1.0),
        "win_rate": float((pnl > 0).mean()) if pnl.size else float("nan"),
        "sharpe": float(r.mean() / r.std(ddof=1) * np.sqrt(BARS_PER_YEAR)),
    }


def _timed_vectorbt(
    frames: dict[str, pd.DataFrame], repeat: int
) -> tuple[dict[str, float], float, float, float]:
    t0 = time.perf_counter()
    figs = vectorbt_workload(frames)
    first = time.perf_counter() - t0
    runs = []
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        figs = vectorbt_workload(frames)
        runs.append(time.perf_counter() - t0)
    return figs, first, statistics.median(runs) if runs else first, min(runs, default=first)


def _have_vectorbt() -> bool:
    try:
        import vectorbt  # noqa: F401
    except ImportError:
        return False
    return True


def _cold(data: Path, tool: str) -> float:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--data",
        str(data),
        "--tool",
        tool,
        "--repeat",
        "0",
    ]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", required=True, type=Path, help="folder of Parquet candle files")
    ap.add_argument("--repeat", type=int, default=7, help="warm runs of each tool (median)")
    ap.add_argument("--tool", choices=("both", "atra", "vectorbt"), default="both")
    ap.add_argument("--cold", action="store_true", help="also time cold processes")
    a = ap.parse_args(argv)
    frames = load_folder(a.data)
    bars = sum(len(f) for f in frames.values())
    out: dict[str, Any] = {"tool": "atra", "symbols": len(frames), "bars": bars}
    print(f"data                 {a.data}: {len(frames)} symbols, {bars:,} bars")

    if a.tool == "vectorbt":  # a cold vectorbt process (used by --cold)
        figs, first, core, _ = _timed_vectorbt(frames, a.repeat)
        print(
            json.dumps(
                {"tool": "vectorbt", "bars": bars, **figs, "core_s": core, "first_call_s": first}
            )
        )
        return 0

    res, first, core, best = _timed_atra(frames, a.repeat)
    lab = res.label_counts
    print(
        f"events               {len(res.events):,} (labels -1/0/+1: "
        f"{lab[-1]:,} / {lab[0]:,} / {lab[1]:,})"
    )
    print(f"trades               {len(res.trades):,}")
    print(f"total return         {res.total_return:.6f}")
    print(f"win rate             {res.win_rate:.4f}")
    print(f"Sharpe               {res.sharpe:.4f} (annualised x sqrt(8760))")
    print(f"first call           {first:.3f} s (compile or cache load included)")
    print(
        f"core (warm median)   {core * 1e3:.2f} ms  ({bars / core:,.0f} bars/s); "
        f"best {best * 1e3:.2f} ms"
    )
    out |= {
        "events": len(res.events),
        "labels": {str(k): v for k, v in lab.items()},
        "trades": len(res.trades),
        "total_return": round(res.total_return, 9),
        "win_rate": round(res.win_rate, 9),
        "sharpe": round(res.sharpe, 9),
        "core_s": round(core, 6),
        "first_call_s": round(first, 6),
        "bars_per_s": round(bars / core, 1),
        "core_best_s": round(best, 6),
    }
    have_vbt = a.tool == "both" and _have_vectorbt()
    if a.tool == "both" and not have_vbt:
        print("vectorbt             not importable: baseline skipped (pip install vectorbt)")
    if have_vbt:
        import vectorbt

        figs, vfirst, _, _ = _timed_vectorbt(frames, 0)
        # interleaved pairs (ATRA, vectorbt): both see the same machine load
        pairs = []
        for _ in range(max(1, a.repeat)):
            gc.collect()
            t0 = time.perf_counter()
            run_workload(frames)
            t1 = time.perf_counter()
            gc.collect()
            t2 = time.perf_counter()
            vectorbt_workload(frames)
            pairs.append((t1 - t0, time.perf_counter() - t2))
        vcore = statistics.median(v for _, v in pairs)
        vbest = min(v for _, v in pairs)
        ratio = statistics.median(v / t for t, v in pairs)
        print(
            f"vectorbt {vectorbt.__version__:<11} trades {figs['trades']:,}, total return "
            f"{figs['total_return']:.6f}, win rate {figs['win_rate']:.4f}, Sharpe "
            f"{figs['sharpe']:.4f} (stops from the bar after entry: differs by design)"
        )
        print(f"vectorbt first call  {vfirst:.3f} s")
        print(
            f"vectorbt core        {vcore * 1e3:.2f} ms  ({bars / vcore:,.0f} bars/s); "
            f"best {vbest * 1e3:.2f} ms"
        )
        print(
            f"ATRA / vectorbt      {ratio:,.1f}x bars/s (median of {len(pairs)} interleaved "
            f"pairs; medians {vcore / core:,.1f}x, bests {vbest / best:,.1f}x; target >= 10x)"
        )
        out |= {
            "vectorbt_version": vectorbt.__version__,
            "vectorbt_trades": figs["trades"],
            "vectorbt_total_return": round(figs["total_return"], 9),
            "vectorbt_win_rate": round(figs["win_rate"], 9),
            "vectorbt_sharpe": round(figs["sharpe"], 9),
            "vectorbt_core_s": round(vcore, 6),
            "vectorbt_first_call_s": round(vfirst, 6),
            "vectorbt_bars_per_s": round(bars / vcore, 1),
            "vectorbt_core_best_s": round(vbest, 6),
            "speedup_vs_vectorbt": round(ratio, 1),
            "speedup_vs_vectorbt_best": round(vbest / best, 1),
        }
    if a.cold and a.tool == "both":
        cold = _cold(a.data, "atra")
        print(f"cold process ATRA    {cold:.2f} s (python start, imports, load, cache, one run)")
        out["cold_process_s"] = round(cold, 3)
        if have_vbt:
            vcold = _cold(a.data, "vectorbt")
            print(f"cold process vbt     {vcold:.2f} s; ratio {vcold / cold:.1f}x")
            out["vectorbt_cold_process_s"] = round(vcold, 3)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
