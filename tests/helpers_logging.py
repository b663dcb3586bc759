"""Logging helpers shared by the live-loop tests."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import structlog


@contextmanager
def quiet_structlog(level: int = logging.WARNING) -> Iterator[None]:
    """Only ``level`` and above while inside: a line per cycle would dominate the run time."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(level))
    try:
        yield
    finally:
        structlog.reset_defaults()
