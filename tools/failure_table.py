"""Run ATRA's failure cases and print a table: command -> exit code -> first line of output.

``python tools/failure_table.py [--out FILE]``. Every case runs ``atra`` in a fresh process on
throw-away folders; ``tests/integration/test_cli_failures.py`` runs the same cases and checks
each gives one line and a non-zero exit with the store unchanged.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SHARED = Path("/work/shared/data")
SAMPLE = "BTCUSDT_spot_1h.parquet"


@dataclass(frozen=True)
class Case:
    name: str
    args: list[str]
    fsize_limit: int | None = None


@dataclass(frozen=True)
class Outcome:
    case: Case
    code: int
    stderr_lines: list[str]

    @property
    def first_line(self) -> str:
        return self.stderr_lines[0] if self.stderr_lines else ""


def _limit(fsize: int | None) -> Callable[[], None] | None:
    if fsize is None:
        return None

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    return apply


def run_case(case: Case, cwd: Path) -> Outcome:
    cmd = [
        sys.executable,
        "-c",
        "import sys; from atra.cli import main; sys.exit(main())",
        *case.args,
    ]
    proc = subprocess.run(  # noqa: S603  (our own CLI, fixed arguments)
        cmd,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_limit(case.fsize_limit),
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    return Outcome(case, proc.returncode, lines)


def build_cases(root: Path) -> list[Case]:
    """Create the inputs under ``root`` and return the cases."""
    store = root / "store"
    (root / "a_file").write_text("not a folder\n")
    (root / "journal_dir").mkdir()
    src = root / "in"
    src.mkdir()
    if (SHARED / SAMPLE).exists():
        shutil.copy(SHARED / SAMPLE, src / SAMPLE)
    bad_zip = root / "BTCUSDT-1h-2024-01.zip"
    good = b"1704067200000,1,2,0.5,1.5,3,1704070799999,0,1,0,0,0\n" * 200
    import zipfile

    with zipfile.ZipFile(bad_zip, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("BTCUSDT-1h-2024-01.csv", good)
    raw = bytearray(bad_zip.read_bytes())
    start = 30 + len("BTCUSDT-1h-2024-01.csv")
    for i in range(start + 2, start + 40):  # scramble the deflate stream, keep the headers
        raw[i] ^= 0x5A
    bad_zip.write_bytes(bytes(raw))
    (root / "bad.toml").write_text("[nope]\nkey = 1\n")
    return [
        Case(
            "import, file-size limit hit (disk full)",
            ["data", "import", str(src / SAMPLE), "--data-dir", str(store)],
            20_000,
        ),
        Case("import, corrupt zip", ["data", "import", str(bad_zip), "--data-dir", str(store)]),
        Case("list, data dir is a file", ["data", "list", "--data-dir", str(root / "a_file")]),
        Case(
            "import, data dir is a file",
            ["data", "import", str(src / SAMPLE), "--data-dir", str(root / "a_file")],
        ),
        Case("list, missing data dir", ["data", "list", "--data-dir", str(root / "missing")]),
        Case(
            "download, --timeout nan",
            [
                "data",
                "download",
                "--symbols",
                "BTCUSDT",
                "--since",
                "2024-01-01",
                "--timeout",
                "nan",
                "--data-dir",
                str(store),
            ],
        ),
        Case(
            "download, --timeout inf",
            [
                "data",
                "download",
                "--symbols",
                "BTCUSDT",
                "--since",
                "2024-01-01",
                "--timeout",
                "inf",
                "--data-dir",
                str(store),
            ],
        ),
        Case(
            "download, unknown timeframe",
            [
                "data",
                "download",
                "--symbols",
                "BTCUSDT",
                "--since",
                "2024-01-01",
                "--timeframe",
                "7h",
                "--data-dir",
                str(store),
            ],
        ),
    ]


def table(outcomes: list[Outcome]) -> str:
    rows = ["| case | command | exit | first line of stderr |", "|---|---|---|---|"]
    for o in outcomes:
        cmd = "atra " + " ".join(o.case.args)
        rows.append(f"| {o.case.name} | `{cmd}` | {o.code} | {o.first_line} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        outcomes = [run_case(c, root) for c in build_cases(root)]
        text = table(outcomes).replace(str(root), "$TMP")
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
