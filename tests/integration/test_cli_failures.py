"""Every failure of the table in ``tools/failure_table.py`` is one line and a non-zero exit other
than 1 (a traceback's), with every file byte-identical and none created.

The cases run the real CLI in fresh processes: implausible files (s / us / ns, before 1970, a
timeframe the name contradicts, 8-column CSV rows, out-of-bounds prices and rates, a narrowed
``[data.bounds]``), a corrupt zip, a full disk during an import, a download and a live replay,
a data dir that is a file, a server dripping one byte a second, journal paths that cannot hold
a journal, and symbols that are paths.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from helpers_failures import failure_table

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]

ONE_LINE_TYPES = ("ConfigError", "DataError", "TransientExchangeError")

MUST_SAY = {
    "import, open times in microseconds": "open_time looks like microseconds (1.7e+15 at row 1)",
    "import, open times in nanoseconds": "open_time looks like nanoseconds (1.7e+18 at row 1)",
    "import, open times in seconds (CSV)": "open_time looks like seconds (1.7e+09 at row 1)",
    "import, open times before 1970": "open_time is negative (-3.6e+07 at row 1)",
    "import, 1h bars in a file named _5m": "(no two rows 5m apart), but the file name says 5m",
    "import, Binance CSV row with 8 of 12 columns": "row 3: 8 of 12 columns",
    "import, a price of 1e300": "row 4 (open_time 2024-01-01T03:00:00Z): price >= 1e+09",
    "import, a funding rate of 1e9": "row 2 (funding_time 2024-01-01T08:00:00Z): |funding_rate|",
    "import, data.bounds.max_price narrowed": "must be below data.bounds.max_price = 105",
    "import, data.bounds.max_price = inf": "inf.toml: data.bounds.max_price: ",
    "import, corrupt zip without checksum": "corrupt compressed data",
    "import, file-size limit hit (disk full)": "file too large (file-size limit reached)",
    "import, data dir is a file": "Not a directory",
    "list, data dir is a file": "is not a folder",
    "download, file-size limit hit (disk full)": "file too large (file-size limit reached)",
    "download, drip server, --timeout 2 --retries 1": "no answer within 2 s (whole-request",
    "download, drip server, --timeout 2 --deadline 3": "within the download deadline of 3 s",
    "live, --journal is a folder": "--journal journal_dir: is a folder, expected a journal file",
    "live, --journal in a missing folder": "folder no_such_dir does not exist",
    "live, --journal under a file": "a_file is a file, not a folder",
    "live, --journal in a read-only folder": "folder read_only is not writable",
    "live, the journal fills the disk mid-run (file-size limit)": "disk I/O error",
    "live, --symbols ../OUTSIDE/X": "--symbols: symbol '../OUTSIDE/X' is not an exchange symbol",
    "live, --symbols /etc/passwd": "--symbols: symbol '/ETC/PASSWD' is not an exchange symbol",
}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list, dict, dict]:  # type: ignore[type-arg]
    if not (failure_table.SHARED / failure_table.SAMPLE).exists():
        pytest.skip("shared sample data not available")
    root = tmp_path_factory.mktemp("failures")
    cases = failure_table.build_cases(root)
    before = failure_table.snapshot(root)
    done = [failure_table.run_case(c, root) for c in cases]
    return root, done, before, failure_table.snapshot(root)


def test_each_failure_is_one_line_with_a_non_zero_exit(outcomes: tuple) -> None:  # type: ignore[type-arg]
    _root, done, _before, _after = outcomes
    for o in done:
        assert o.code not in (0, 1), (o.case.name, o.stderr_lines)
        assert len(o.stderr_lines) == 1, (o.case.name, o.stderr_lines)
        assert o.first_line.split(":")[0] in ONE_LINE_TYPES, (o.case.name, o.first_line)
        assert "Traceback" not in o.first_line
    by_name = {o.case.name: o for o in done}
    assert set(MUST_SAY) <= set(by_name)
    for name, text in MUST_SAY.items():
        assert text in by_name[name].first_line, (name, by_name[name].first_line)


def test_the_drip_server_fails_within_twice_the_deadline(outcomes: tuple) -> None:  # type: ignore[type-arg]
    """``--timeout 2``: one byte a second resets every per-read timeout, the whole-request
    deadline still ends the command (the seconds include the interpreter's start-up)."""
    _root, done, _before, _after = outcomes
    drips = [o for o in done if o.case.server == "drip"]
    assert len(drips) == 2
    for o in drips:
        assert o.code == 6  # ExchangeError
        assert o.seconds < 2 * 2.0 + 3.0, (o.case.name, o.seconds)


def test_nothing_changed_and_nothing_appeared(outcomes: tuple) -> None:  # type: ignore[type-arg]
    """Every file that was there is byte-identical; the only new files are empty dataset
    locks and the journal of the replay that started before the disk filled up."""
    root, done, before, after = outcomes
    assert {k: v for k, v in after.items() if k in before} == before
    allowed = {f for o in done for f in o.case.may_create}
    new = set(after) - set(before)
    strays = [k for k in new if k not in allowed and not _empty_lock(k, after[k])]
    assert strays == []
    assert not (root / "j.sqlite").exists()  # the symbols were refused before any journal
    assert not (root / "no_such_dir").exists()


def test_a_journal_cut_by_a_full_disk_keeps_what_it_committed(outcomes: tuple) -> None:  # type: ignore[type-arg]
    root, _done, _before, _after = outcomes
    with sqlite3.connect(root / "full.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        cycles = db.execute("SELECT COUNT(*) FROM cycles").fetchone()[0]
    assert 0 < cycles < 7 * 24  # some hours journalled, then the disk was full


def _empty_lock(name: str, content: bytes) -> bool:
    return Path(name).name.startswith(".") and name.endswith(".lock") and content == b""
