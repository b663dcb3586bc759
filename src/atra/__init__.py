"""ATRA: crypto momentum research to live signals, without lying on the way."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
