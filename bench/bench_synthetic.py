"""Time the synthetic market generator (default config: 6 symbols x 21,900 1h bars).

Figures: first call (numba compile or cache load), best-of-N warm call, and the same generation
with the two kernels run interpreted (their ``.py_func``) as the in-run baseline. Last line: JSON.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from atra.core.synthetic import market as syn


def best_of(fn: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    cfg = syn.SyntheticConfig()
    t0 = time.perf_counter()
    syn.generate_market(cfg)
    first_s = time.perf_counter() - t0
    warm_s = best_of(lambda: syn.generate_market(cfg), 5)

    jitted = (syn._regime_path_nb, syn._ar1_nb)
    syn._regime_path_nb = jitted[0].py_func  # type: ignore[assignment]
    syn._ar1_nb = jitted[1].py_func  # type: ignore[assignment]
    try:
        interpreted_s = best_of(lambda: syn.generate_market(cfg), 1)
    finally:
        syn._regime_path_nb, syn._ar1_nb = jitted

    bars = cfg.bars * len(cfg.symbols)
    print(f"symbols x bars           : {len(cfg.symbols)} x {cfg.bars} = {bars:,}")
    print(f"first call (compile/load): {first_s:8.3f} s")
    print(f"warm call, best of 5     : {warm_s:8.3f} s  ({bars / warm_s / 1e6:.1f} M bars/s)")
    print(f"interpreted kernels      : {interpreted_s:8.3f} s")
    print(f"speed-up vs interpreted  : {interpreted_s / warm_s:8.1f} x")
    print(f"budget 3 s               : {'ok' if warm_s < 3.0 else 'EXCEEDED'}")
    print(
        json.dumps(
            {
                "bench": "synthetic_generate_market",
                "bars": bars,
                "first_s": round(first_s, 4),
                "warm_s": round(warm_s, 4),
                "interpreted_s": round(interpreted_s, 4),
                "speedup": round(interpreted_s / warm_s, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
