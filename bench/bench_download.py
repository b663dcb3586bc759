"""Download throughput: all symbols at once under the shared limiter vs the same requests in a row.

Serves 10 symbols x 17,520 hourly bars (the canonical synthetic generator,
../shared/bench/gen_data.py) from the fake exchange running in its own process, with weight
limits off on both sides and an optional simulated network round trip (``--latency-ms``).
Downloads everything into a fresh store twice in the same run: concurrently (``download``)
and sequentially (``download(..., sequential=True)``: the very same requests, one at a time),
checks both stores equal the source row for row, prints both times and the speed-up; the last
line is one JSON object.

    .venv/bin/python bench/bench_download.py [--latency-ms 20] [--symbols 10] [--bars 17520]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from atra.adapters.exchange.client import BinanceClient
from atra.adapters.ratelimit import RateLimiter
from atra.adapters.store import CandleStore, DatasetKey
from atra.core.types import Market, Timeframe
from atra.data.download import DownloadSpec, download

GEN = Path(__file__).resolve().parents[2] / "shared" / "bench" / "gen_data.py"


def make_data(out: Path, symbols: int, bars: int) -> dict[str, pd.DataFrame]:
    """Generate the synthetic set and write it as the fake exchange's spot 1h files."""
    raw = out / "raw"
    cmd = [sys.executable, str(GEN), "--size", "custom", "--symbols", str(symbols)]
    cmd += ["--bars", str(bars), "--out", str(raw)]
    subprocess.run(
        cmd,
        check=True,
        capture_output=True,
    )
    served = out / "served"
    served.mkdir()
    frames = {}
    for path in sorted(raw.rglob("*.parquet")):
        df = pd.read_parquet(path)
        t = df["open_time"]
        if not pd.api.types.is_integer_dtype(t):
            t = (pd.to_datetime(t, utc=True) - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(1, "ms")
        df = df.assign(open_time=np.asarray(t, dtype=np.int64))[
            ["open_time", "open", "high", "low", "close", "volume"]
        ]
        df.to_parquet(served / f"{path.stem}_spot_1h.parquet")
        frames[path.stem] = df
    return frames


async def timed_download(url: str, store_dir: Path, spec: DownloadSpec, sequential: bool) -> float:
    limiter = RateLimiter(6000, enabled=False, max_connections=10, name="bench")
    store = CandleStore(store_dir)
    async with BinanceClient(Market.SPOT, base_url=url, limiter=limiter) as client:
        started = time.perf_counter()
        report = await download(
            client, store, spec, now_ms=int(time.time() * 1000), sequential=sequential
        )
        elapsed = time.perf_counter() - started
    report.raise_for_errors()
    return elapsed


def check(store_dir: Path, frames: dict[str, pd.DataFrame]) -> int:
    store = CandleStore(store_dir)
    rows = 0
    for sym, frame in frames.items():
        got = store.read_candles(DatasetKey("binance", Market.SPOT, sym, Timeframe.H1))
        pd.testing.assert_frame_equal(got, frame.reset_index(drop=True), check_exact=True)
        rows += len(got)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=10)
    parser.add_argument("--bars", type=int, default=17_520)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="atra-bench-download-") as tmp:
        root = Path(tmp)
        frames = make_data(root, args.symbols, args.bars)
        first = min(int(f["open_time"].iloc[0]) for f in frames.values())
        last = max(int(f["open_time"].iloc[-1]) for f in frames.values())
        spec = DownloadSpec(
            "binance", Market.SPOT, tuple(frames), Timeframe.H1, first, last + 3_600_000
        )
        cmd = [sys.executable, "-m", "atra.sim.exchange", "--data", str(root / "served")]
        cmd += ["--weight-limit", "0", "--latency-ms", str(args.latency_ms)]
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as server:
            try:
                assert server.stdout is not None
                url = server.stdout.readline().strip().rsplit(" ", 1)[-1]
                asyncio.run(timed_download(url, root / "warmup", spec, False))  # warm the server
                conc_s = asyncio.run(timed_download(url, root / "concurrent", spec, False))
                seq_s = asyncio.run(timed_download(url, root / "sequential", spec, True))
            finally:
                server.terminate()
                server.wait(timeout=10)
        rows = check(root / "concurrent", frames)
        assert check(root / "sequential", frames) == rows
    pages = sum(-(-len(f) // 1000) for f in frames.values())
    print(f"symbols x bars:       {len(frames)} x {args.bars:,} = {rows:,} rows, {pages} requests")
    print(f"simulated latency:    {args.latency_ms:g} ms per request")
    print(f"sequential:           {seq_s:.2f} s ({pages / seq_s:.0f} requests/s)")
    print(f"concurrent (atra):    {conc_s:.2f} s ({pages / conc_s:.0f} requests/s)")
    print(f"speed-up:             {seq_s / conc_s:.1f}x")
    result = {
        "tool": "atra",
        "bench": "download",
        "symbols": len(frames),
        "bars": rows,
        "requests": pages,
        "latency_ms": args.latency_ms,
        "sequential_s": round(seq_s, 3),
        "concurrent_s": round(conc_s, 3),
        "speedup": round(seq_s / conc_s, 2),
        "bars_per_s": round(rows / conc_s),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
