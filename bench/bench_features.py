"""Feature benchmark: every registered feature for every symbol of a data folder.

    .venv/bin/python bench/bench_features.py --data ../shared/data

On the shared Binance folder the symbols are the ``*_spot_1h`` files; the context holds
BTCUSDT spot (cross-asset), the symbol's perp candles (basis) and its funding history when
the folder has them. Any other folder: every ``*.parquet`` file is a symbol, BTC context from
a file whose stem starts with ``BTC`` if there is one.

Baseline, measured in the same run: the same features computed segment by segment (split at
every gap, one ``compute_features`` call per contiguous run, then concatenated), the other
way to keep windows from spanning gaps. Its output must equal ours. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from atra.core.features.registry import FeatureContext, FeatureFrame, compute_features
from atra.core.types import Timeframe


@dataclass(frozen=True, slots=True)
class Job:
    symbol: str
    candles: pd.DataFrame
    ctx: FeatureContext


def _read(path: Path) -> pd.DataFrame:
    frame = pd.read_parquet(path)
    for col in ("open_time", "funding_time"):
        if col in frame.columns and pd.api.types.is_datetime64_any_dtype(frame[col].dtype):
            stamps = pd.DatetimeIndex(frame[col]).tz_convert("UTC").as_unit("ms")
            frame[col] = stamps.asi8
    return frame.sort_values(frame.columns[0]).reset_index(drop=True)


def load_jobs(data: Path) -> list[Job]:
    spot = sorted(data.glob("*_spot_1h.parquet"))
    if spot:
        btc = _read(data / "BTCUSDT_spot_1h.parquet")
        jobs = []
        for path in spot:
            sym = path.name.split("_")[0]
            perp, funding = data / f"{sym}_perp_1h.parquet", data / f"{sym}_perp_funding.parquet"
            ctx = FeatureContext(
                timeframe=Timeframe.H1,
                btc=btc,
                counterpart=_read(perp) if perp.exists() else None,
                funding=_read(funding) if funding.exists() else None,
            )
            jobs.append(Job(sym, _read(path), ctx))
        return jobs
    files = sorted(data.glob("*.parquet"))
    btc_files = [f for f in files if f.stem.startswith("BTC")]
    btc_frame = _read(btc_files[0]) if btc_files else None
    ctx = FeatureContext(timeframe=Timeframe.H1, btc=btc_frame)
    return [Job(f.stem, _read(f), ctx) for f in files]


def per_segment(job: Job) -> pd.DataFrame:
    ff = FeatureFrame(job.candles, job.ctx)
    parts = [compute_features(job.candles.iloc[seg], job.ctx) for seg in ff.segments()]
    return pd.concat(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).parents[2] / "shared/data")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs; the best one counts")
    args = parser.parse_args()
    jobs = load_jobs(args.data)
    bars = sum(len(j.candles) for j in jobs)

    t0 = time.perf_counter()
    first = compute_features(jobs[0].candles, jobs[0].ctx)
    first_call_s = time.perf_counter() - t0

    runs = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        outputs = [compute_features(j.candles, j.ctx) for j in jobs]
        runs.append(time.perf_counter() - t0)
    core_s = min(runs)

    t0 = time.perf_counter()
    baseline = [per_segment(j) for j in jobs]
    baseline_s = time.perf_counter() - t0
    for job, ours, theirs in zip(jobs, outputs, baseline, strict=True):
        pd.testing.assert_frame_equal(ours, theirs, rtol=1e-9, atol=1e-12, obj=job.symbol)

    n_features = first.shape[1] - 1
    cells = sum(o.shape[0] * (o.shape[1] - 1) for o in outputs)
    filled = sum(int(np.isfinite(o.drop(columns="open_time").to_numpy()).sum()) for o in outputs)
    print(f"data: {args.data}  symbols: {len(jobs)}  bars: {bars:,}")
    for job, out in zip(jobs, outputs, strict=True):
        segs = len(list(FeatureFrame(job.candles, replace(job.ctx)).segments()))
        print(
            f"  {job.symbol:<10} bars {len(job.candles):>7,}  segments {segs:>3}  "
            f"features {out.shape[1] - 1}"
        )
    print(f"first call (one symbol): {first_call_s:.3f} s")
    print(
        f"all features, all symbols (best of {args.repeat}): {core_s:.3f} s "
        f"= {bars / core_s:,.0f} bars/s, {cells / core_s:,.0f} values/s, "
        f"{filled / cells:.1%} non-NaN"
    )
    print(f"baseline, segment by segment: {baseline_s:.3f} s  (ratio {baseline_s / core_s:.1f}x)")
    print(
        json.dumps(
            {
                "tool": "atra",
                "bench": "features",
                "symbols": len(jobs),
                "bars": bars,
                "features": n_features,
                "core_s": round(core_s, 4),
                "first_call_s": round(first_call_s, 4),
                "bars_per_s": round(bars / core_s),
                "baseline": "per_segment_compute",
                "baseline_s": round(baseline_s, 4),
                "ratio": round(baseline_s / core_s, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
