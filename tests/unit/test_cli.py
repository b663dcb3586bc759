"""The CLI shell: exit codes, one-line errors, --debug tracebacks, --version."""

from __future__ import annotations

from pathlib import Path

import pytest

from atra import __version__
from atra.cli import main


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"atra {__version__}"


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "no-such-command"]) == 2
    assert "no-such-command" in capsys.readouterr().err


def test_atra_error_is_one_line_with_its_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["data", "check", "--data-dir", str(tmp_path), "--timeframe", "7h"])
    assert code == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [err[0]]
    assert err[0].startswith("ConfigError: unknown timeframe '7h'")


def test_debug_shows_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--debug", "data", "check", "--data-dir", str(tmp_path), "--timeframe", "7h"])
    assert code == 3
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert err.strip().splitlines()[-1].startswith("ConfigError: unknown timeframe")
