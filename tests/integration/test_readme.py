"""Every command in the README works as written, on the shared data.

``bash`` blocks are run line by line (backslash continuations joined, comments dropped) in a
scratch project folder whose ``../shared`` is the real shared folder, with the project's
virtualenv first on ``PATH`` (the README says to activate it). A line ending in ``&`` starts a
background process that is stopped at the end. ``make`` lines are the quick start: CI runs
them itself (``make test`` is this suite), so they are not re-run here. ``text`` blocks hold
commands that cannot run here (real orders need keys, the paper loop runs until stopped): each
of their ``atra`` invocations must name a real command and only options that command has.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import PROJECT_ROOT, SHARED_DATA

README = PROJECT_ROOT / "README.md"
VENV_BIN = Path(sys.executable).parent
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.M | re.S)

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]


def commands(lang: str, text: str | None = None) -> list[str]:
    """The README's commands in ``lang`` blocks, continuations joined, comments removed."""
    out: list[str] = []
    for found_lang, body in BLOCK.findall(
        README.read_text(encoding="utf-8") if text is None else text
    ):
        if found_lang != lang:
            continue
        joined = re.sub(r"\s*\\\n\s*", " ", body)
        for line in joined.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                out.append(line)
    return out


def test_the_extractor_joins_continuations_and_drops_comments() -> None:
    text = (
        "```bash\natra a \\\n   --b 1   # note\n# only a comment\nmake x\n```\n"
        "```text\natra y\n```\n"
    )
    assert commands("bash", text) == ["atra a --b 1", "make x"]
    assert commands("text", text) == ["atra y"]


def test_readme_has_runnable_commands() -> None:
    runnable = [c for c in commands("bash") if not c.startswith("make ")]
    assert len(runnable) >= 10, runnable


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.pop("ATRA_DATA_DIR", None)
    env["COLUMNS"] = "200"
    return env


def test_every_bash_command_runs_as_written(tmp_path: Path) -> None:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not beside the project")
    (tmp_path / "shared").symlink_to(SHARED_DATA.parent, target_is_directory=True)
    work = tmp_path / "work"
    work.mkdir()
    (work / "examples").symlink_to(PROJECT_ROOT / "examples", target_is_directory=True)
    env = _env()
    background: list[subprocess.Popen[bytes]] = []
    try:
        for line in commands("bash"):
            if line.startswith("make "):
                continue
            if line.endswith("&"):
                background.append(
                    subprocess.Popen(
                        line.rstrip("&").strip(), shell=True, cwd=work, env=env,
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                        start_new_session=True,
                    )
                )  # fmt: skip
                time.sleep(3.0)  # a server: give it time to bind
                continue
            done = subprocess.run(
                line, shell=True, cwd=work, env=env, capture_output=True, text=True, timeout=300
            )
            assert done.returncode == 0, f"{line}\nexit {done.returncode}\n{done.stderr[-2000:]}"
    finally:
        for proc in background:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)


def _help(argv: list[str]) -> str:
    done = subprocess.run(
        [*argv, "--help"], capture_output=True, text=True, env=_env(), timeout=60, check=False
    )
    assert done.returncode == 0, f"{' '.join(argv)} --help: {done.stderr}"
    return done.stdout


def test_text_block_commands_exist_with_their_options() -> None:
    checked = 0
    for line in commands("text"):
        words = [w.strip("[]|") for w in shlex.split(line)]
        words = [w for w in words if w and not re.match(r"^[A-Z_]+=", w)]  # env assignments
        if not words or words[0] != "atra":
            continue
        argv, rest = [str(VENV_BIN / "atra")], words[1:]
        text = _help(argv)
        while rest and re.search(rf"^\W*{re.escape(rest[0])}\s", text, re.M) and "Commands" in text:
            argv, rest = [*argv, rest[0]], rest[1:]
            text = _help(argv)
        known = set(re.findall(r"--[a-z][a-z0-9-]*", text))
        used = {w.split("=")[0] for w in rest if w.startswith("--")}
        assert used <= known, f"{line}: unknown option(s) {sorted(used - known)}"
        checked += 1
    assert checked >= 1
