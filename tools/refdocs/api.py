"""The API reference: one mkdocstrings page per package under ``src``, listing the modules
found on disk (so a module that moves or appears needs no edit of the docs)."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from refdocs import code, doc_text, md_doc, table

API_DIR = "reference/api"


@dataclass(frozen=True, slots=True)
class PackageDoc:
    """A package under ``src``: its modules and subpackages as found on disk."""

    name: str
    summary: str
    modules: tuple[str, ...]
    subpackages: tuple[str, ...]

    @property
    def page(self) -> str:
        return f"{API_DIR}/{self.name}.md"


def _summary(path: Path) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    return doc.split("\n\n", 1)[0].replace("\n", " ")


def describe_packages(src: Path, top: str, skip: frozenset[str] = frozenset()) -> list[PackageDoc]:
    """Every package under ``src/top`` (not ``skip`` nor below it), sorted by dotted name."""
    out: list[PackageDoc] = []
    for init in sorted((src / top).rglob("__init__.py")):
        folder = init.parent
        name = ".".join(folder.relative_to(src).parts)
        if any(name == s or name.startswith(s + ".") for s in skip):
            continue
        modules = tuple(
            f"{name}.{p.stem}" for p in sorted(folder.glob("*.py")) if not p.stem.startswith("_")
        )
        subs = tuple(
            f"{name}.{d.name}"
            for d in sorted(folder.iterdir())
            if (d / "__init__.py").is_file() and f"{name}.{d.name}" not in skip
        )
        out.append(PackageDoc(name, _summary(init), modules, subs))
    return out


def api_page(pkg: PackageDoc) -> str:
    """A package's page: its docstring, links to its subpackages, then every module."""
    out = [
        f"# {code(pkg.name)}",
        "",
        f"::: {pkg.name}",
        "    options:",
        "      members: false",
        "      show_root_heading: false",
        "      show_root_toc_entry: false",
    ]
    if pkg.subpackages:
        out += ["", "Subpackages: " + ", ".join(f"[{code(s)}]({s}.md)" for s in pkg.subpackages)]
    for module in pkg.modules:
        out += ["", f"::: {module}"]
    return "\n".join(out) + "\n"


def api_index(packages: list[PackageDoc], intro: str) -> str:
    """The API overview: ``intro``, then one row per package."""
    rows = [(f"[{code(p.name)}]({p.name}.md)", md_doc(doc_text(p.summary))) for p in packages]
    lines = ["# API reference", "", intro, "", table(("package", "what lives there"), rows)]
    return "\n".join(lines) + "\n"
