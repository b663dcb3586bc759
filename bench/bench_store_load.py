"""Store-load benchmark: CandleStore.read_candles vs bare pyarrow on the same stored files.

Imports the ten spot 1h files of ``--data`` (default ``../shared/data``) into a temporary
store through the normal import path, then loads all ten datasets repeatedly both ways and
keeps the best time of each. Target: ratio (store / pyarrow) <= 1.5. The last line printed
is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq

from atra.adapters.store import CandleStore, DatasetKey
from atra.core.types import Market, Timeframe
from atra.data.ingest import import_files

PROJECT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = PROJECT.parent / "shared" / "data"


def timed(fn: Callable[[], int]) -> tuple[float, int]:
    t0 = time.perf_counter()
    rows = fn()
    return time.perf_counter() - t0, rows


def best_of_interleaved(
    a: Callable[[], int], b: Callable[[], int], repeats: int
) -> tuple[float, float, int, int]:
    """Best time of each, run alternately (a, b, b, a, ...) so machine noise hits both."""
    best_a = best_b = float("inf")
    rows_a = rows_b = 0
    for i in range(repeats):
        order = (a, b) if i % 2 == 0 else (b, a)
        for fn in order:
            secs, rows = timed(fn)
            if fn is a:
                best_a, rows_a = min(best_a, secs), rows
            else:
                best_b, rows_b = min(best_b, secs), rows
    return best_a, best_b, rows_a, rows_b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--repeats", type=int, default=25)
    args = parser.parse_args()
    files = sorted(args.data.glob("*_spot_1h.parquet"))
    if len(files) != 10:
        raise SystemExit(f"expected 10 *_spot_1h.parquet files in {args.data}, got {len(files)}")
    with tempfile.TemporaryDirectory() as tmp:
        store = CandleStore(Path(tmp) / "data")
        t0 = time.perf_counter()
        import_files(store, files)
        import_s = time.perf_counter() - t0
        keys = [
            DatasetKey("binance", Market.SPOT, f.name.split("_")[0], Timeframe.H1) for f in files
        ]
        paths = [store.candle_path(k) for k in keys]

        def via_store() -> int:
            return sum(len(store.read_candles(k)) for k in keys)

        def via_pyarrow() -> int:
            return sum(len(pq.read_table(p).to_pandas()) for p in paths)

        via_store(), via_pyarrow()  # warm the page cache and imports
        store_s, arrow_s, rows, arrow_rows = best_of_interleaved(
            via_store, via_pyarrow, args.repeats
        )
    assert rows == arrow_rows
    ratio = store_s / arrow_s
    print(f"imported 10 files ({rows:,} bars) in {import_s:.3f} s")
    print(f"CandleStore.read_candles x10: {store_s * 1000:.2f} ms (best of {args.repeats})")
    print(f"pyarrow read_table().to_pandas() x10: {arrow_s * 1000:.2f} ms (best of {args.repeats})")
    print(f"ratio store/pyarrow: {ratio:.3f} (target <= 1.5)")
    print(
        json.dumps(
            {
                "bench": "store_load",
                "symbols": len(files),
                "bars": rows,
                "import_s": round(import_s, 4),
                "store_s": round(store_s, 5),
                "pyarrow_s": round(arrow_s, 5),
                "ratio": round(ratio, 3),
                "target_ratio": 1.5,
            }
        )
    )


if __name__ == "__main__":
    main()
