"""Journal paths that cannot hold a journal are refused with one line naming the option, before
anything is created; ``Journal.open`` refuses a folder without leaving a lock behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from atra.adapters.journal.database import Journal
from atra.adapters.journal.paths import check_journal_path
from atra.errors import ConfigError


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize(
    ("given", "key", "message"),
    [
        ("folder", "--journal", r"^--journal {root}/folder: is a folder, expected a journal"),
        ("missing/j.sqlite", "--journal", r"folder {root}/missing does not exist \(create it"),
        ("a/b/c/j.sqlite", "live.journal_path", r"^live\.journal_path .*folder {root}/a/b/c does"),
        ("file/j.sqlite", "--journal", r": {root}/file is a file, not a folder$"),
        ("file/deeper/j.sqlite", "--journal", r": {root}/file is a file, not a folder$"),
    ],
)
def test_unusable_journal_paths_are_refused_creating_nothing(
    tmp_path: Path, given: str, key: str, message: str
) -> None:
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("x")
    before = _files(tmp_path)
    with pytest.raises(ConfigError, match=message.format(root=tmp_path)):
        check_journal_path(tmp_path / given, key)
    assert _files(tmp_path) == before


def test_a_configured_path_may_name_a_folder_still_to_be_created(tmp_path: Path) -> None:
    """``live.journal_path`` (a deployment's path, or the default ``data/journal.sqlite``):
    the missing folders are created when the journal opens, so only what would make that
    fail is refused."""
    (tmp_path / "file").write_text("x")
    key = "live.journal_path"
    check_journal_path(tmp_path / "var" / "lib" / "j.sqlite", key, folder_may_be_new=True)
    with pytest.raises(ConfigError, match=r"file is a file, not a folder$"):
        check_journal_path(tmp_path / "file" / "x" / "j.sqlite", key, folder_may_be_new=True)
    assert _files(tmp_path) == ["file"]


def test_usable_journal_paths_pass(tmp_path: Path) -> None:
    check_journal_path(tmp_path / "new.sqlite", "--journal")  # a new file in a folder
    existing = tmp_path / "old.sqlite"
    existing.write_bytes(b"")
    check_journal_path(existing, "--journal")
    assert _files(tmp_path) == ["old.sqlite"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_refused(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(ConfigError, match=r"folder .*/ro is not writable"):
            check_journal_path(ro / "j.sqlite", "--journal")
    finally:
        ro.chmod(0o755)


def test_a_fifo_is_not_a_journal(tmp_path: Path) -> None:
    fifo = tmp_path / "j.sqlite"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match=r"is not a regular file"):
        check_journal_path(fifo, "--journal")


async def test_journal_open_refuses_a_folder_without_a_lock_file(tmp_path: Path) -> None:
    folder = tmp_path / "jdir"
    folder.mkdir()
    with pytest.raises(ConfigError, match=r"^journal .*/jdir: is a folder, expected a journal"):
        async with Journal.open(folder, exclusive=True):
            pass  # pragma: no cover
    assert _files(tmp_path) == ["jdir"]
