"""The HTML report drawn by a real browser: headless Chromium takes a screenshot and the charts'
colours must be in it (plotly.js ran from the inlined copy, with the network off)."""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from atra.core.types import Timeframe
from atra.research.report.figures import LEG_COLORS
from atra.research.report.page import render_report
from atra.research.runrecord.directory import read_run, write_run
from atra.research.runrecord.legs import RunLeg

T0_MS = 1_704_067_200_000
TF = Timeframe.H1
N_BARS = 1500
INITIAL = 10_000.0
_SHOT_TIMEOUT_S = 120.0


def _trades(n: int, every: int) -> pd.DataFrame:
    rows = []
    for i in range(0, n, every):
        entry_bar, side, entry = 4 + 12 * i, (1 if i % 3 else -1), 80.0 + i % 9
        exit_ = entry * (1.0 + side * (((i * 5) % 13) - 5) / 150.0)
        fees = 10.0 * (entry + exit_) * 0.0004
        rows.append({
            "symbol": ("BTCUSDT", "ETHUSDT")[i % 2], "side": side,
            "entry_ms": T0_MS + entry_bar * TF.ms, "exit_ms": T0_MS + (entry_bar + 5) * TF.ms,
            "entry_price": entry, "exit_price": exit_, "quantity": 10.0,
            "pnl": side * 10.0 * (exit_ - entry) - fees, "fees": fees, "slippage": fees / 4,
            "funding": 0.01 * (i % 3), "reason": ("SL", "TP1", "TP2", "TIME")[i % 4],
        })  # fmt: skip
    return pd.DataFrame(rows)


def _equity(trades: pd.DataFrame) -> pd.Series:
    times = T0_MS + np.arange(N_BARS, dtype=np.int64) * TF.ms
    eq = np.full(N_BARS, INITIAL)
    for t, pnl in zip(trades["exit_ms"], trades["pnl"], strict=True):
        eq[times >= t] += pnl
    return pd.Series(eq, index=times)


def _run_dir(root: Path) -> Path:
    primary, filtered = _trades(110, 1), _trades(110, 2)
    steps = np.random.default_rng(5).normal(0.0002, 0.008, N_BARS - 1)
    bh = pd.Series(INITIAL * np.exp(np.concatenate(([0.0], np.cumsum(steps)))),
                   index=T0_MS + np.arange(N_BARS, dtype=np.int64) * TF.ms)  # fmt: skip
    legs = [
        RunLeg("primary", _equity(primary), primary),
        RunLeg("filtered", _equity(filtered), filtered),
        RunLeg("buy_hold", bh, None),
    ]
    return write_run(root, legs=legs, timeframe=TF, config={"demo": True}, data_hash="f" * 64,
                     seed=3, data_label="synthetic", n_trials=3)  # fmt: skip


# --------------------------------------------------------------------------------------------
# PNG decoding with the standard library (8-bit RGB / RGBA, not interlaced)


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def _chunks(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    pos = 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        yield data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length


def decode_png(data: bytes) -> tuple[int, int, int, bytes]:
    """(width, height, bytes per pixel, raw pixel bytes) of an 8-bit RGB(A) PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    ihdr, idat = b"", bytearray()
    for kind, body in _chunks(data):
        if kind == b"IHDR":
            ihdr = body
        elif kind == b"IDAT":
            idat += body
    width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", ihdr)
    assert depth == 8, depth
    assert color in (2, 6), color
    assert interlace == 0
    bpp = 3 if color == 2 else 4
    stride = width * bpp
    raw = zlib.decompress(bytes(idat))
    out = bytearray(height * stride)
    prev = bytearray(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        if kind == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif kind == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, prev, strict=True))
        elif kind == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif kind == 4:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                up_left = prev[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + _paeth(left, prev[i], up_left)) & 0xFF
        out[y * stride : (y + 1) * stride] = line
        prev = line
    return width, height, bpp, bytes(out)


def png_colours(path: Path) -> set[tuple[int, int, int]]:
    """Distinct RGB colours of a PNG (Pillow when installed, else the stdlib decoder)."""
    try:
        from PIL import Image
    except ImportError:
        width, height, bpp, pixels = decode_png(path.read_bytes())
        arr = np.frombuffer(pixels, np.uint8).reshape(height, width, bpp)[:, :, :3]
    else:
        with Image.open(path) as img:
            arr = np.asarray(img.convert("RGB"))
    flat = arr.reshape(-1, 3).astype(np.uint32)
    packed = np.unique((flat[:, 0] << 16) | (flat[:, 1] << 8) | flat[:, 2])
    return {(int(v >> 16), int((v >> 8) & 0xFF), int(v & 0xFF)) for v in packed}


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    h = hex_colour.lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def encode_png(arr: np.ndarray, filters: list[int]) -> bytes:
    """An 8-bit RGB(A) PNG of ``arr`` (height x width x 3|4) with the given filter per row."""
    height, width, bpp = arr.shape
    rows = arr.reshape(height, width * bpp).astype(np.int64)
    body = bytearray()
    prev = np.zeros(width * bpp, np.int64)
    for y in range(height):
        cur, kind = rows[y], filters[y % len(filters)]
        left = np.concatenate((np.zeros(bpp, np.int64), cur[:-bpp]))
        up_left = np.concatenate((np.zeros(bpp, np.int64), prev[:-bpp]))
        pred = {
            0: np.zeros_like(cur),
            1: left,
            2: prev,
            3: (left + prev) >> 1,
            4: np.array([_paeth(a, b, c) for a, b, c in zip(left, prev, up_left, strict=True)]),
        }[kind]
        body += bytes([kind]) + bytes(((cur - pred) & 0xFF).astype(np.uint8))
        prev = cur

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2 if bpp == 3 else 6, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(bytes(body))) + chunk(b"IEND", b""))  # fmt: skip


@pytest.mark.parametrize("bpp", [3, 4])
def test_stdlib_png_decoder_undoes_every_filter(bpp: int) -> None:
    arr = np.random.default_rng(bpp).integers(0, 256, (10, 7, bpp), dtype=np.uint8)
    width, height, got_bpp, raw = decode_png(encode_png(arr, [0, 1, 2, 3, 4]))
    assert (width, height, got_bpp) == (7, 10, bpp)
    np.testing.assert_array_equal(np.frombuffer(raw, np.uint8).reshape(arr.shape), arr)


# --------------------------------------------------------------------------------------------
# the browser


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no chromium / chromium-browser on PATH (apt-get install chromium)")


@pytest.mark.slow
def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    browser = _chromium()
    run = read_run(_run_dir(tmp_path / "runs"))
    report = render_report(run)
    shot = tmp_path / "report.png"
    cmd = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
        # tall enough to hold every chart down to the costs section
        "--window-size=1400,4000", "--virtual-time-budget=5000", report.as_uri(),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=_SHOT_TIMEOUT_S)
    assert shot.is_file(), f"no screenshot (exit {done.returncode}): {done.stderr[-500:]}"
    colours = png_colours(shot)
    assert len(colours) > 200, f"only {len(colours)} colours: the page looks blank"
    # the bar charts fill with the legs' exact colours: only drawn when plotly.js ran
    for leg in ("primary", "filtered"):
        assert _rgb(LEG_COLORS[leg]) in colours, leg
    assert _rgb("#c62828") in colours  # the SYNTHETIC badge
