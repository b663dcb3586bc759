"""``atra search`` throughput: trials per minute with 1 and 2 workers, with and without the
shared feature / event / label cache, on one fixed workload, all in the same run.

Workload (real data, /work/shared/data): spot 1h candles of BTCUSDT, ETHUSDT, SOLUSDT and
XRPUSDT, 2021-01-01 to 2024-01-01; the config defaults (EMA cross, triple barrier, LightGBM
300 trees, one thread per fit) with a fixed list of trials: ``strategy.params.fast`` in {10, 20}
x ``meta.lgbm.num_leaves`` in {15, 31} (4 trials, two primary configurations: with the cache,
2 datasets built and 2 reused). Walk-forward: 30-day retraining, 24 h embargo, first test
window 365 days in. Every trial is :meth:`atra.research.search_trials.TrialRunner.run`, the
call ``atra search`` makes per trial (the optuna bookkeeping around it is negligible).

Runs (``--repeat`` rounds, interleaved; the fastest of each run kept), each with a fresh
runner (nothing cached between runs; one untimed warm-up trial before each, for worker
start-up, imports and compiles), the universe loaded once:

1. ``1 worker``: folds one after the other (``n_jobs=1``), cache on: the baseline;
2. ``2 workers``: two worker processes fit the folds (``--engine local``: joblib's loky;
   ``dask`` / ``ray``: a local 2-worker cluster through :mod:`atra.research.backends`), cache on;
3. ``1 worker, no cache``: as 1 with ``cache_size=0`` (every trial builds its dataset).

The runs must give the same Sharpe ratio per trial (checked). Printed: wall time, trials per
minute, the ratios 2 vs 1 worker (target >= 1.8) and cache vs no cache, the load average; last
line one JSON object. On a loaded machine the wall-time ratio says little: the CPU times give
a load-independent bound (the 1-worker run's CPU time is all the work, the 2-worker run's
driver CPU time its serial part: ``amdahl_bound_2``).

    .venv/bin/python bench/bench_search.py [--data ../shared/data] [--engine local|dask|ray]
        [--symbols BTCUSDT,ETHUSDT] [--start 2021-01-01] [--end 2024-01-01] [--repeat 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from atra.adapters.store import CandleStore
from atra.config import AtraConfig
from atra.core.types import Market, Timeframe
from atra.data.ingest import import_files
from atra.research.backends import BackendSpec, open_backend
from atra.research.pipeline import Universe, load_universe, parse_time_ms
from atra.research.search_space import apply_params
from atra.research.search_trials import TrialRunner, WalkForwardOverrides

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT")
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TRIALS = [
    {"strategy.params.fast": fast, "meta.lgbm.num_leaves": leaves}
    for fast in (10.0, 20.0)
    for leaves in (15, 31)
]
WF = WalkForwardOverrides(retrain_days=30, embargo_hours=24.0, min_train_days=365)


def _run(
    universe: Universe, configs: list[AtraConfig], *, workers: int, cache: bool, engine: str
) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"seed": 7, "n_jobs": workers, "joblib_backend": "loky"}
    if not cache:
        kwargs["cache_size"] = 0
    spec = BackendSpec(engine, workers=workers) if engine != "local" and workers > 1 else None
    with open_backend(spec or BackendSpec(), n_jobs=workers):
        # warm-up (not timed, its datasets not kept): worker start-up, imports, JIT compiles
        TrialRunner(universe, Market.SPOT, WF, **kwargs).run(configs[0])
        runner = TrialRunner(universe, Market.SPOT, WF, **kwargs)
        s, c = time.perf_counter(), time.process_time()
        sharpes = [runner.run(cfg).sharpe for cfg in configs]
        wall, cpu = time.perf_counter() - s, time.process_time() - c
    return {
        "workers": workers,
        "cache": cache,
        "wall_s": round(wall, 2),
        "driver_cpu_s": round(cpu, 2),
        "trials_per_min": round(60.0 * len(configs) / wall, 3),
        "datasets_built": runner.dataset_builds,
        "datasets_reused": runner.dataset_hits,
        "sharpes": sharpes,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--engine", choices=("local", "dask", "ray"), default="local")
    ap.add_argument("--symbols", default=",".join(SYMBOLS))
    ap.add_argument("--start", default="2021-01-01")
    ap.add_argument("--end", default="2024-01-01")
    ap.add_argument("--repeat", type=int, default=2, help="rounds; the fastest of each run kept")
    args = ap.parse_args()
    symbols = tuple(args.symbols.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        store = CandleStore(Path(tmp) / "store")
        import_files(store, [args.data / f"{s}_spot_1h.parquet" for s in symbols])
        universe = load_universe(store, "binance", symbols, Market.SPOT, Timeframe.H1,
                                 parse_time_ms(args.start), parse_time_ms(args.end))  # fmt: skip
    configs = [apply_params(AtraConfig(), values) for values in TRIALS]
    load_before = os.getloadavg()
    rounds: list[tuple[dict[str, Any], ...]] = []
    for _ in range(max(1, args.repeat)):  # interleaved: a burst of load hits every run alike
        rounds.append(
            tuple(
                _run(universe, configs, workers=w, cache=c, engine=args.engine)
                for w, c in ((1, True), (2, True), (1, False))
            )
        )
    one, two, nocache = (min((r[i] for r in rounds), key=lambda x: x["wall_s"]) for i in range(3))
    load_after = os.getloadavg()
    for run in (two, nocache):
        same = all(
            a == b or (math.isnan(a) and math.isnan(b))
            for a, b in zip(one["sharpes"], run["sharpes"], strict=True)
        )
        if not same:
            raise SystemExit(f"results differ: {one['sharpes']} vs {run['sharpes']}")
    scaling = two["trials_per_min"] / one["trials_per_min"]
    # load-independent: the 1-worker run's CPU time is all the work, the 2-worker run's driver
    # CPU time its serial part (the fold fits run in the workers): Amdahl's bound for 2 workers
    serial = min(two["driver_cpu_s"], one["driver_cpu_s"])
    bound = one["driver_cpu_s"] / (serial + (one["driver_cpu_s"] - serial) / 2.0)
    cache_gain = one["trials_per_min"] / nocache["trials_per_min"]
    cache_gain_cpu = nocache["driver_cpu_s"] / one["driver_cpu_s"]  # both in-process: all work
    print(f"workload: {', '.join(symbols)} spot 1h {args.start} .. {args.end}, "
          f"{len(configs)} trials, engine {args.engine} for 2 workers")  # fmt: skip
    for name, run in (("1 worker", one), ("2 workers", two), ("1 worker, no cache", nocache)):
        built, reused = run["datasets_built"], run["datasets_reused"]
        print(f"{name:20s} {run['wall_s']:8.1f} s  {run['trials_per_min']:6.2f} trials/min  "
              f"datasets built {built}, reused {reused}")  # fmt: skip
    print(f"2 vs 1 worker: x{scaling:.2f} (target >= 1.8; Amdahl bound from CPU times "
          f"x{bound:.2f})")  # fmt: skip
    print(f"cache vs none: x{cache_gain:.2f} (CPU time x{cache_gain_cpu:.2f})")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} "
          f"({os.cpu_count()} CPUs)")  # fmt: skip
    for run in (one, two, nocache):
        del run["sharpes"]
    out = {
        "bench": "search",
        "workload": {
            "symbols": list(symbols),
            "timeframe": "1h",
            "start": args.start,
            "end": args.end,
            "trials": TRIALS,
            "walkforward": dataclasses.asdict(WF),
        },
        "engine": args.engine,
        "runs": {"one_worker": one, "two_workers": two, "one_worker_no_cache": nocache},
        "scaling_2_vs_1": round(scaling, 3),
        "amdahl_bound_2": round(bound, 3),
        "cache_speedup": round(cache_gain, 3),
        "cache_speedup_cpu": round(cache_gain_cpu, 3),
        "loadavg_before": round(load_before[0], 2),
        "loadavg_after": round(load_after[0], 2),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
