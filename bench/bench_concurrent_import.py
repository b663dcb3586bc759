"""Concurrent-writer check: N ``atra data import`` processes of disjoint slices into ONE dataset.

Each round writes ``--writers`` Parquet files, each a disjoint slice of ``--rows`` 5-minute bars
of one symbol, starts one ``atra data import`` process per file at the same moment into one new
store and waits for all of them. A round passes when every process exits 0, the rows each
process reports as new sum to the rows written, and the stored dataset holds exactly that many
rows, in order, with no duplicate. Without the store's writer lock, processes that read the
dataset before another one replaced it overwrite its rows (the lost-update bug of issue 16).

Prints one line per round, then one JSON object; exits 1 when any round fails.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from atra.adapters.store import CandleStore, DatasetKey
from atra.core.types import Market, Timeframe

T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
STEP = 300_000  # 5m
KEY = DatasetKey("binance", Market.SPOT, "BTCUSDT", Timeframe.M5)
ADDED = re.compile(r"([\d,]+) new row\(s\)")
ATRA = Path(sys.executable).with_name("atra")


def slice_frame(k: int, rows: int) -> pd.DataFrame:
    """Slice ``k`` of the dataset: bars ``k*rows .. (k+1)*rows - 1``."""
    i = np.arange(k * rows, (k + 1) * rows, dtype=np.int64)
    close = 100.0 + (i % 97) * 0.5
    return pd.DataFrame(
        {
            "open_time": T0 + i * STEP,
            "open": close - 0.25,
            "high": close + 1.0,
            "low": close - 1.0,
            "close": close,
            "volume": np.full(i.size, 2.0),
        }
    )


def run_round(workdir: Path, writers: int, rows: int) -> dict[str, object]:
    """One round in the empty folder ``workdir``; the figures of the round."""
    files = []
    for k in range(writers):
        path = workdir / f"slice{k}.parquet"
        slice_frame(k, rows).to_parquet(path, index=False)
        files.append(path)
    store = workdir / "store"
    args = ["--data-dir", str(store), "--symbol", KEY.symbol, "--market", "spot"]
    args += ["--timeframe", "5m", "--exchange", KEY.exchange]
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(
            [str(ATRA), "data", "import", str(f), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for f in files
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    seconds = time.perf_counter() - t0
    codes = [p.returncode for p in procs]
    reported = []
    for out, err in outs:
        found = ADDED.search(out)
        reported.append(int(found[1].replace(",", "")) if found else -1)
        if err.strip():
            print(err.strip(), file=sys.stderr)
    stored = CandleStore(store).read_candles(KEY)
    times = stored["open_time"].to_numpy()
    expected = writers * rows
    ok = (
        codes == [0] * writers
        and sum(reported) == expected
        and len(stored) == expected
        and bool((np.diff(times) == STEP).all())
    )
    return {
        "ok": ok,
        "exit_codes": codes,
        "reported_new": reported,
        "stored_rows": len(stored),
        "expected_rows": expected,
        "seconds": round(seconds, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", type=int, default=5)
    parser.add_argument("--rows", type=int, default=20_000, help="rows per writer")
    parser.add_argument("--rounds", type=int, default=20)
    ns = parser.parse_args()
    results = []
    for r in range(ns.rounds):
        with tempfile.TemporaryDirectory(prefix="atra-concurrent-") as tmp:
            res = run_round(Path(tmp), ns.writers, ns.rows)
        results.append(res)
        print(
            f"round {r + 1:2d}: {'ok ' if res['ok'] else 'FAIL'} stored {res['stored_rows']:,} "
            f"of {res['expected_rows']:,}; reported new {res['reported_new']}; "
            f"exit {res['exit_codes']}; {res['seconds']} s",
            flush=True,
        )
    passed = sum(bool(r["ok"]) for r in results)
    summary = {
        "writers": ns.writers,
        "rows_per_writer": ns.rows,
        "rounds": ns.rounds,
        "rounds_exact": passed,
        "stored_rows": sorted({int(str(r["stored_rows"])) for r in results}),
    }
    print(json.dumps(summary))
    return 0 if passed == ns.rounds else 1


if __name__ == "__main__":
    sys.exit(main())
