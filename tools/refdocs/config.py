"""The configuration reference: every key of a pydantic model tree with its type, default,
allowed values, environment override and description."""

from __future__ import annotations

import ast
import enum
import inspect
import itertools
import json
import re
import textwrap
import types
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from refdocs import code, doc_text, md_doc, md_text, table


@dataclass(frozen=True, slots=True)
class KeyDoc:
    """One configuration key: its path in the tree and what the reference says about it."""

    path: tuple[str, ...]
    type_name: str
    default: str
    allowed: str
    env: str
    description: str


@dataclass(frozen=True, slots=True)
class SectionDoc:
    """One section (a nested model) of the configuration tree."""

    path: tuple[str, ...]
    doc: str
    keys: tuple[KeyDoc, ...]


def _strip_optional(annotation: Any) -> tuple[Any, bool]:
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(get_args(annotation)) == 2:
            return args[0], True
    return annotation, False


def _type_name(annotation: Any) -> str:
    inner, optional = _strip_optional(annotation)
    origin = get_origin(inner)
    if origin is Literal or (isinstance(inner, type) and issubclass(inner, enum.Enum)):
        name = "string"
    elif origin in (tuple, list):
        name = f"list of {_type_name(get_args(inner)[0])}"
    elif origin is dict:
        name = f"table of {_type_name(get_args(inner)[1])}"
    elif inner is SecretStr:
        name = "secret string"
    elif inner is str:
        name = "string"
    elif inner is Path or (isinstance(inner, type) and issubclass(inner, Path)):
        name = "path"
    else:
        name = getattr(inner, "__name__", str(inner))
    return f"{name} (optional)" if optional else name


def toml_value(value: object) -> str:
    """``value`` as it would be written in the TOML file (``""`` for unset)."""
    if value is None or isinstance(value, SecretStr):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        return toml_value(value.value)
    if isinstance(value, str | Path):
        return json.dumps(str(value))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return repr(value)


def _allowed(annotation: Any, info: FieldInfo) -> str:
    inner, _ = _strip_optional(annotation)
    if get_origin(inner) is Literal:
        return ", ".join(code(toml_value(v)) for v in get_args(inner))
    if isinstance(inner, type) and issubclass(inner, enum.Enum):
        return ", ".join(code(toml_value(m.value)) for m in inner)
    bounds = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))
    parts: list[str] = []
    for meta in info.metadata:
        for attr, op in bounds:
            if getattr(meta, attr, None) is not None:
                parts.append(f"{op} {getattr(meta, attr)}")
        if getattr(meta, "min_length", None) is not None:
            parts.append(f"length >= {meta.min_length}")
        if getattr(meta, "pattern", None) is not None:
            parts.append(f"matches {code(str(meta.pattern))}")
    return ", ".join(p if p.startswith("matches") else md_text(p) for p in parts)


def attribute_docstrings(model: type[BaseModel]) -> dict[str, str]:
    """The string literal right below each field of ``model``'s class body (PEP 257 style)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(model)))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    found: dict[str, str] = {}
    for node, nxt in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            found[node.target.id] = nxt.value.value
    return found


_TOML_SECTION = re.compile(r"^\s*\[([\w.]+)\]")
_TOML_KEY = re.compile(r"^\s*#?\s*(\w+)\s*=\s*[^#]*#\s*(.+?)\s*$")


def example_comments(text: str) -> dict[tuple[str, ...], str]:
    """``key = value  # comment`` lines of an example TOML file, by key path (commented-out
    keys too: ``# key = value  # comment``)."""
    section: tuple[str, ...] = ()
    found: dict[tuple[str, ...], str] = {}
    for line in text.splitlines():
        if m := _TOML_SECTION.match(line):
            section = tuple(m.group(1).split("."))
        elif m := _TOML_KEY.match(line):
            found[(*section, m.group(1))] = m.group(2)
    return found


def describe_config(
    model: type[BaseModel],
    env_prefix: str,
    comments: Mapping[tuple[str, ...], str],
    secret_keys: frozenset[str] = frozenset(),
) -> list[SectionDoc]:
    """Every section of a pydantic model tree (sub-models are sections), depth first."""
    out: list[SectionDoc] = []

    def walk(section: type[BaseModel], path: tuple[str, ...]) -> None:
        docstrings = attribute_docstrings(section)
        keys: list[KeyDoc] = []
        subsections: list[tuple[type[BaseModel], tuple[str, ...]]] = []
        for name, info in section.model_fields.items():
            ann = info.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                subsections.append((ann, (*path, name)))
                continue
            key_path = (*path, name)
            env = env_prefix + "__".join(key_path).upper()
            description = info.description or docstrings.get(name) or comments.get(key_path, "")
            if name in secret_keys:
                description = f"Environment only ({env}); a config file holding it is refused."
            keys.append(
                KeyDoc(
                    path=key_path,
                    type_name=_type_name(ann),
                    default=toml_value(info.get_default(call_default_factory=True)),
                    allowed=_allowed(ann, info),
                    env=env,
                    description=doc_text(description),
                )
            )
        if path:
            out.append(SectionDoc(path, doc_text(inspect.getdoc(section) or ""), tuple(keys)))
        for sub, sub_path in subsections:
            walk(sub, sub_path)

    walk(model, ())
    return out


def config_reference(
    sections: list[SectionDoc], rule_params: Mapping[str, Mapping[str, int]]
) -> str:
    """The configuration reference page."""
    out = [
        "# Configuration reference",
        "",
        "Generated from the pydantic models in `src/atra/config.py` when the site is built. "
        "A key's description is its field docstring, else its comment in `examples/atra.toml`.",
        "",
        "Every command that takes `--config FILE` reads a TOML file; every key is optional and "
        "defaults to the value below. An unknown key is refused with one line naming the file and "
        "the key path. Any key can be overridden from the environment as "
        "`ATRA__SECTION__KEY=value` (nested sections add a level: `ATRA__META__LGBM__NUM_LEAVES`); "
        "the override wins over the file. Lists take `A,B` or a JSON list. API keys are read from "
        "the environment only.",
    ]
    for sec in sections:
        out += ["", f"## {code('[' + '.'.join(sec.path) + ']')}", ""]
        if sec.doc:
            out += [sec.doc, ""]
        rows = [
            (
                code(k.path[-1]),
                md_text(k.type_name) + (f": {k.allowed}" if k.allowed else ""),
                code(k.default) if k.default else "unset",
                code(k.env),
                md_doc(k.description),
            )
            for k in sec.keys
        ]
        out.append(table(("key", "type", "default", "environment", "description"), rows))
        if sec.path == ("strategy",) and rule_params:
            out += [
                "",
                "Parameters of each `rule` (`[strategy.params]`; whole numbers of bars):",
                "",
            ]
            out.append(
                table(
                    ("rule", "parameters (default)"),
                    [
                        (code(rule), ", ".join(f"`{k}` ({v})" for k, v in params.items()))
                        for rule, params in rule_params.items()
                    ],
                )
            )
    return "\n".join(out) + "\n"
