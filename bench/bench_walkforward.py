"""Full research walk-forward on the real data: ten spot symbols, 1h, 2018-2024.

Pipeline (the same calls as ``atra wf-metrics``): load the universe from a store (perp
counterpart + funding where stored, BTCUSDT context), build the dataset (EMA 20/50 primary
signals of the config defaults, features at the signal bar, triple-barrier labels from the
exit kernel), then a walk-forward with monthly (30-day) retraining, expanding window, 24 h
embargo, sample weights balanced x uniqueness, ``n_jobs=2`` (threads). The baseline, measured in
the same run, is the same walk-forward with ``n_jobs=1`` (sequential folds); the two must give
identical predictions. CPU time (all threads) is printed beside the wall time: on a shared
machine the wall time depends on the load, the CPU time much less.

    .venv/bin/python bench/bench_walkforward.py [--data ../shared/data] [--no-baseline]

Prints per-stage wall times, the per-year OOS table and, as its last line, one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import pandas as pd

from atra.adapters.store import CandleStore
from atra.config import AtraConfig
from atra.core.types import Market, Timeframe
from atra.data.ingest import import_files
from atra.research.pipeline import (
    WalkForwardConfig,
    build_dataset,
    load_universe,
    parse_time_ms,
    run_walkforward,
    settings_from_config,
)

SYMBOLS = (
    "BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT",
    "DOGEUSDT", "LTCUSDT", "LINKUSDT", "AVAXUSDT", "DOTUSDT",
)  # fmt: skip
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--no-baseline", action="store_true", help="skip the n_jobs=1 run")
    args = ap.parse_args()
    files = sorted(
        p
        for p in args.data.glob("*.parquet")
        if p.name.endswith(("_1h.parquet", "_funding.parquet"))
    )
    with tempfile.TemporaryDirectory() as tmp:
        store = CandleStore(Path(tmp) / "store")
        s = time.perf_counter()
        import_files(store, files, exchange="binance")
        import_s = time.perf_counter() - s

        settings = settings_from_config(AtraConfig())
        s = time.perf_counter()
        universe = load_universe(
            store,
            "binance",
            SYMBOLS,
            Market.SPOT,
            Timeframe.H1,
            parse_time_ms("2018-01-01"),
            parse_time_ms("2025-01-01"),
        )
        load_s = time.perf_counter() - s
        s = time.perf_counter()
        dataset = build_dataset(universe, settings.signal, settings.exit)
        dataset_s = time.perf_counter() - s
        cfg = WalkForwardConfig(retrain_days=30, embargo_hours=24.0, min_train_days=365)
        s, c = time.perf_counter(), time.process_time()
        result = run_walkforward(dataset, cfg, settings.meta, n_jobs=2)
        wf_s, wf_cpu_s = time.perf_counter() - s, time.process_time() - c
        base_s = float("nan")
        if not args.no_baseline:
            s = time.perf_counter()
            base = run_walkforward(dataset, cfg, settings.meta, n_jobs=1)
            base_s = time.perf_counter() - s
            pd.testing.assert_frame_equal(base.predictions, result.predictions)

    rep = dataset.report
    total_s = load_s + dataset_s + wf_s
    print(f"import 1h + funding files into a store: {import_s:.2f} s ({len(files)} files)")
    print(
        f"load universe {load_s:.2f} s; dataset {dataset_s:.2f} s: {rep.events:,} events, "
        f"{rep.complete:,} complete, {rep.incomplete:,} incomplete (excluded), "
        f"{len(dataset.feature_names)} features"
    )
    for sym, absent in rep.absent_inputs.items():
        print(f"  {sym}: no {', '.join(absent)} (NaN features)")
    print(
        f"walk-forward n_jobs=2: {wf_s:.2f} s, {len(result.folds)} folds, "
        f"{len(result.predictions):,} OOS events, CPU {wf_cpu_s:.2f} s (all threads); "
        f"n_jobs=1 baseline {base_s:.2f} s (x{base_s / wf_s:.2f}); "
        f"load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    print(f"pipeline wall time (load + dataset + walk-forward, 2 jobs): {total_s:.2f} s")
    cols = ["n_events", "base_rate", "auc", "n_take", "precision", "recall", "mean_net_return_take"]
    print(result.metrics[cols].round(4).to_string())
    all_row = result.metrics.loc["all"]
    print(
        json.dumps(
            {
                "tool": "atra",
                "bench": "walkforward",
                "cpus": os.cpu_count(),
                "symbols": len(SYMBOLS),
                "events": rep.events,
                "complete": rep.complete,
                "incomplete": rep.incomplete,
                "features": len(dataset.feature_names),
                "folds": len(result.folds),
                "oos_events": len(result.predictions),
                "load_s": round(load_s, 3),
                "dataset_s": round(dataset_s, 3),
                "walkforward_2jobs_s": round(wf_s, 3),
                "walkforward_2jobs_cpu_s": round(wf_cpu_s, 3),
                "walkforward_1job_s": round(base_s, 3),
                "load_average_1m": round(os.getloadavg()[0], 2),
                "parallel_speedup": round(base_s / wf_s, 3),
                "pipeline_s": round(total_s, 3),
                "oos_auc": round(float(all_row["auc"]), 4),
                "oos_precision": round(float(all_row["precision"]), 4),
                "oos_recall": round(float(all_row["recall"]), 4),
                "oos_base_rate": round(float(all_row["base_rate"]), 4),
                "auc_by_year": {
                    str(k): round(float(v), 4) for k, v in result.metrics["auc"].items()
                },
            }
        )
    )


if __name__ == "__main__":
    main()
