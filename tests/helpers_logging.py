"""Logging helpers shared by the tests: quieting structlog, capturing rendered log lines."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import structlog

from atra import obs


@contextmanager
def quiet_structlog(level: int = logging.WARNING) -> Iterator[None]:
    """Only ``level`` and above while inside: a line per cycle would dominate the run time."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(level))
    try:
        yield
    finally:
        structlog.reset_defaults()


@contextmanager
def json_log_lines(level: str = "DEBUG") -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """Configure ATRA's logging (JSON lines, ``level``) into a buffer while inside; yields a
    function returning the lines written so far, parsed. The previous setup is restored."""
    root = logging.getLogger()
    previous = root.level
    buf = io.StringIO()
    obs.configure_logging("json", level, stream=buf)
    try:
        yield lambda: [json.loads(line) for line in buf.getvalue().splitlines() if line.strip()]
    finally:
        obs.reset_logging()
        root.setLevel(previous)
