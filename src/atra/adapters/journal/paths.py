"""Where a live run may keep its journal: checked before anything is created.

A live run or a replay writes its journal, the journal's lock (``.{name}.lock``) and SQLite's
``-wal`` / ``-shm`` files in the journal's folder. :func:`check_journal_path` refuses, with one
:class:`~atra.errors.ConfigError` line naming the option or key that gave the path, every path
that cannot hold them: a folder, something that is not a regular file, a file standing where a
folder should be, a folder (or journal) this process may not write, and, for a path typed on
the command line (``--journal``), a folder that does not exist: a typo would otherwise create
a journal somewhere unexpected. The configured ``live.journal_path`` may name a folder still
to be created (a deployment's ``/var/lib/atra/journal.sqlite``, the default
``data/journal.sqlite``); it is created when the journal opens.
"""

from __future__ import annotations

import os
from pathlib import Path

from atra.errors import ConfigError


def check_journal_path(path: Path, key: str, *, folder_may_be_new: bool = False) -> None:
    """Refuse a journal path no live run can write, naming ``key`` (``--journal`` or
    ``live.journal_path``) and what is wrong; nothing is created, whatever the outcome.
    ``folder_may_be_new``: a missing folder is fine if it can be created."""
    shown = f"{key} {path}"
    if path.is_dir():
        raise ConfigError(
            f"{shown}: is a folder, expected a journal file (e.g. {path / 'journal.sqlite'})"
        )
    if path.exists() and not path.is_file():
        raise ConfigError(f"{shown}: is not a regular file, expected a journal file")
    folder = path.parent
    if not folder.is_dir():
        blocker = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
        if not blocker.is_dir():
            raise ConfigError(f"{shown}: {blocker} is a file, not a folder")
        if not folder_may_be_new:
            raise ConfigError(
                f"{shown}: folder {folder} does not exist (create it first; --journal never "
                "creates a folder)"
            )
        folder = blocker  # where the new folders would be created
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(
            f"{shown}: folder {folder} is not writable (the journal, its lock and its WAL "
            "files are written there)"
        )
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise ConfigError(f"{shown}: the journal file is not readable and writable")
