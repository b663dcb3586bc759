"""Markdown reference pages rendered from ATRA's code: the CLI tree (:mod:`refdocs.cli`), the
configuration models (:mod:`refdocs.config`) and the package layout (:mod:`refdocs.api`).

``tools/gen_ref.py`` (the mkdocs hook) puts them into the docs site; this package holds only
pure functions from objects to Markdown, plus the Markdown helpers below.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Sequence

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|])")
_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|data|attr|mod|exc|obj|const):`~?([\w.]+)`")


def md_text(text: str) -> str:
    """Plain text made safe for a Markdown table cell or paragraph (one line)."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(text.split()))


_CODE_SPAN = re.compile(r"(``.+?``|`[^`]+`)")


def md_doc(text: str) -> str:
    """Docstring-style text for one table cell or line: code spans kept, the rest escaped."""
    parts = _CODE_SPAN.split(" ".join(text.split()))
    return "".join(p if i % 2 else _MD_SPECIAL.sub(r"\\\1", p) for i, p in enumerate(parts))


def doc_text(text: str) -> str:
    """A docstring in Markdown: Sphinx roles become code spans, RST ``code`` stays code."""
    return _ROLE.sub(lambda m: f"`{m.group(1).rsplit('.', 1)[-1]}`", inspect.cleandoc(text))


def code(text: str) -> str:
    """An inline code span that survives any backticks inside ``text``."""
    fence = "``" if "`" in text else "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    """A Markdown table (cells already escaped)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
