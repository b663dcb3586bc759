"""Meta-model machinery benchmark: label uniqueness and walk-forward fitting.

1. Average uniqueness on the bar clock, ours (sort + prefix sums) against the AFML ch. 4
   pandas loop (``mpNumCoEvents`` + ``mpSampleTW``) on the same events; results must agree.
2. ``walk_forward_predict`` on synthetic events x features with monthly (30-day) folds,
   expanding window, 1-day embargo, default ``MetaParams`` (200 trees, 2 inner threshold
   folds): ``n_jobs=2`` against ``n_jobs=1`` in the same run.

    .venv/bin/python bench/bench_meta.py [--events 50000] [--features 40] [--loop-events 4000]

``walk_forward_cpu_s`` is the CPU time of the sequential run: on a busy machine wall times
(and the parallel speedup) depend on other load, so ``loadavg_1m`` (before, after) is printed
too. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from atra.core.meta import MetaParams, oos_metrics_by_year, walk_forward_predict
from atra.core.validation import DAY_MS, walk_forward_splits
from atra.core.weights import average_uniqueness, fold_weights_fn

HOUR_MS = 3_600_000
T_START = 1_577_836_800_000  # 2020-01-01 UTC


def make_events(n: int, n_features: int, seed: int = 20240601) -> dict[str, object]:
    rng = np.random.default_rng(seed)
    days = 4 * 365
    t0 = T_START + np.sort(rng.integers(0, days * 24, n)) * HOUR_MS
    t1 = t0 + rng.integers(1, 73, n) * HOUR_MS
    symbols = rng.choice([f"SYN{i:02d}USDT" for i in range(10)], n)
    X = pd.DataFrame(
        rng.normal(size=(n, n_features)), columns=[f"feat_{i:02d}" for i in range(n_features)]
    )
    X.iloc[rng.random(n) < 0.02, 3] = np.nan
    signal = 0.8 * X.iloc[:, 0] - 0.5 * X.iloc[:, 1] + 0.3 * X.iloc[:, 2] * X.iloc[:, 3].fillna(0)
    y = (signal + rng.normal(size=n) * 1.5 > 0.4).to_numpy().astype(np.int64)
    net = np.where(y == 1, 0.015, -0.01) + rng.normal(0, 0.005, n)
    return {"X": X, "y": y, "t0": t0, "t1": t1, "symbols": symbols, "net": net}


def afml_uniqueness_loop(t0: np.ndarray, t1: np.ndarray) -> np.ndarray:
    """AFML snippets 4.1 + 4.2, on an hourly bar index."""
    bars = pd.Index(np.arange(t0.min(), t1.max() + HOUR_MS, HOUR_MS))
    ends = pd.Series(t1, index=t0)
    count = pd.Series(0, index=bars)
    for t_in, t_out in ends.items():
        count.loc[t_in:t_out] += 1
    out = np.empty(len(t0))
    for i, (t_in, t_out) in enumerate(ends.items()):
        out[i] = (1.0 / count.loc[t_in:t_out]).mean()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--features", type=int, default=40)
    ap.add_argument("--loop-events", type=int, default=4_000)
    args = ap.parse_args()
    ev = make_events(args.events, args.features)
    X, y, t0, t1 = ev["X"], ev["y"], ev["t0"], ev["t1"]
    assert isinstance(X, pd.DataFrame)
    y, t0, t1 = np.asarray(y), np.asarray(t0), np.asarray(t1)

    # 1. uniqueness
    m = args.loop_events
    s = time.perf_counter()
    ref = afml_uniqueness_loop(t0[:m], t1[:m])
    loop_s = time.perf_counter() - s
    s = time.perf_counter()
    ours = average_uniqueness(t0[:m], t1[:m], bar_ms=HOUR_MS)
    ours_s = time.perf_counter() - s
    np.testing.assert_allclose(ours, ref, rtol=1e-12)
    s = time.perf_counter()
    average_uniqueness(t0, t1, ev["symbols"], bar_ms=HOUR_MS)
    full_u_s = time.perf_counter() - s
    print(
        f"uniqueness {m} events: ours {ours_s * 1e3:.2f} ms, AFML pandas loop {loop_s:.2f} s, "
        f"x{loop_s / ours_s:,.0f}; all {t0.size} events per symbol {full_u_s * 1e3:.1f} ms"
    )

    # 2. walk-forward
    folds = walk_forward_splits(
        t0,
        t1,
        start_ms=T_START + 365 * DAY_MS,
        test_span_ms=30 * DAY_MS,
        embargo_ms=DAY_MS,
        min_train_events=500,
    )
    wfn = fold_weights_fn(y, t0, t1, ev["symbols"], decay=0.5)
    params = MetaParams()
    timings: dict[int, float] = {}
    frames = {}
    cpu_s = 0.0
    load_before = os.getloadavg()[0]
    for n_jobs in (1, 2):
        s = time.perf_counter()
        c = time.process_time()
        oos = walk_forward_predict(
            X,
            y,
            t0,
            t1,
            folds,
            weights_fn=wfn,
            params=params,
            net_return=ev["net"],
            n_jobs=n_jobs,
        )
        timings[n_jobs] = time.perf_counter() - s
        if n_jobs == 1:
            cpu_s = time.process_time() - c  # every fit ran in this process
        frames[n_jobs] = oos.frame
        print(
            f"walk-forward n_jobs={n_jobs}: {timings[n_jobs]:.1f} s "
            f"({len(folds)} folds, {len(oos.frame)} OOS events)"
        )
    pd.testing.assert_frame_equal(frames[1], frames[2])
    f = frames[2]
    auc = float(roc_auc_score(y[f["pos"]], f["p_take"]))
    metrics = oos_metrics_by_year(oos, y, t0, ev["net"])
    print(metrics.round(3).to_string())
    print(
        json.dumps(
            {
                "tool": "atra",
                "bench": "meta",
                "cpus": os.cpu_count(),
                "events": int(t0.size),
                "features": X.shape[1],
                "folds": len(folds),
                "oos_events": len(f),
                "uniqueness_events": m,
                "uniqueness_s": round(ours_s, 5),
                "uniqueness_afml_loop_s": round(loop_s, 3),
                "uniqueness_speedup": round(loop_s / ours_s),
                "uniqueness_all_s": round(full_u_s, 4),
                "walk_forward_1job_s": round(timings[1], 2),
                "walk_forward_2jobs_s": round(timings[2], 2),
                "parallel_speedup": round(timings[1] / timings[2], 2),
                "walk_forward_cpu_s": round(cpu_s, 2),
                "loadavg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                "oos_auc": round(auc, 4),
            }
        )
    )


if __name__ == "__main__":
    main()
