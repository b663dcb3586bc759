"""The docs site's generated reference: every CLI command and option, every config key and every
package of ``src/atra`` is on a page, and the tutorial only uses commands and options that exist.

The pages come from ``tools/gen_ref.py`` (the mkdocs hook); these tests enumerate the CLI tree,
the config models and the source folders on their own and look each item up in the pages.
``make docs`` then builds the site with ``mkdocs build --strict``.
"""

from __future__ import annotations

import enum
import importlib.util
import re
import shlex
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any, Literal

import pytest
import typer
from pydantic import BaseModel, Field

from atra.cli import app
from atra.config import AtraConfig

ROOT = Path(__file__).resolve().parents[2]
GEN_REF = ROOT / "tools" / "gen_ref.py"
TUTORIAL = ROOT / "docs" / "tutorial.md"


@pytest.fixture(scope="module")
def gen_ref() -> ModuleType:
    spec = importlib.util.spec_from_file_location("atra_docs_gen_ref", GEN_REF)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pages(gen_ref: ModuleType) -> dict[str, str]:
    result: dict[str, str] = gen_ref.reference_pages()
    return result


def commands(
    cmd: Any, path: tuple[str, ...], parent: Any
) -> Iterator[tuple[tuple[str, ...], Any, Any]]:
    """(path, command, context) of every visible command, walked independently of the generator."""
    ctx = typer.Context(cmd, info_name=path[-1], parent=parent)
    yield path, cmd, ctx
    for name, sub in getattr(cmd, "commands", {}).items():
        if not sub.hidden:
            yield from commands(sub, (*path, name), ctx)


def section(page: str, heading: str) -> str:
    """The text from ``heading`` to the next heading of the same level."""
    assert heading in page, f"missing heading {heading!r}"
    level = heading.split(" ", 1)[0]
    rest = page.split(heading, 1)[1]
    return re.split(rf"^{level} ", rest, maxsplit=1, flags=re.M)[0]


def field_paths(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, info in model.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from field_paths(ann, (*prefix, name))
        else:
            yield (*prefix, name)


def key_row(page: str, path: tuple[str, ...]) -> list[str]:
    """The cells of the reference row of the config key at ``path``."""
    body = section(page, f"## `[{'.'.join(path[:-1])}]`")
    rows = [line for line in body.splitlines() if line.startswith(f"| `{path[-1]}` |")]
    assert len(rows) == 1, f"{'.'.join(path)}: expected one row, found {len(rows)}"
    return [cell.strip() for cell in rows[0].strip("|").split(" | ")]


def default_of(model: type[BaseModel], path: tuple[str, ...]) -> object:
    """The key's default as TOML would read it back (enums as values, tuples as lists)."""
    value: Any = model().model_dump(mode="json")
    for key in path:
        value = value[key]
    return value


# ----------------------------------------------------------------------------------- the CLI


def test_cli_reference_has_every_command_option_and_default(pages: dict[str, str]) -> None:
    page = pages["reference/cli.md"]
    seen = 0
    for path, cmd, ctx in commands(typer.main.get_command(app), ("atra",), None):
        seen += 1
        body = section(page, f"## `{' '.join(path)}`")
        assert cmd.get_usage(ctx).removeprefix("Usage: ") in body, f"{path}: usage line"
        for param in cmd.params:
            if param.param_type_name == "argument":
                assert f"`{param.name.upper()}`" in body, f"{path}: argument {param.name}"
                continue
            for opt in [*param.opts, *param.secondary_opts]:
                assert opt in body, f"{' '.join(path)}: option {opt} is not in the reference"
            default = param.get_default(ctx, call=False)
            if default not in (None, (), []) and not param.is_flag:
                shown = default.value if isinstance(default, enum.Enum) else default
                assert f"`{shown}`" in body, f"{' '.join(path)} {param.opts[0]}: default {shown}"
            if param.help:
                first_words = " ".join(param.help.split()[:3])
                plain = body.replace("\\", "")
                assert first_words in plain, f"{' '.join(path)} {param.opts[0]}: help text"
    assert seen >= 10, "the walk found almost no commands: is atra.cli.app empty?"


def test_cli_reference_lists_the_exit_code_of_every_error(pages: dict[str, str]) -> None:
    from atra import errors

    page = section(pages["reference/cli.md"], "## Exit codes")
    for obj in vars(errors).values():
        if isinstance(obj, type) and issubclass(obj, errors.AtraError):
            assert f"| {obj.exit_code} | `{obj.__name__}` |" in page, obj.__name__


def test_cli_generator_renders_any_typer_app(gen_ref: ModuleType) -> None:
    toy = typer.Typer(name="toy", add_completion=False)
    group = typer.Typer(help="Grouped tools.")
    toy.add_typer(group, name="tools")

    @toy.callback()
    def _root() -> None:
        """Toy root."""

    @group.command("hello")
    def _hello(
        name: str = typer.Argument(..., help="Who to greet."),
        count: int = typer.Option(3, "--count", help="How many times."),
        loud: bool = typer.Option(False, "--loud/--quiet", help="Shout."),
    ) -> None:
        """Say hello to NAME."""

    @group.command("secret", hidden=True)
    def _secret() -> None:
        """Never documented."""

    docs = gen_ref.describe_commands(typer.main.get_command(toy), "toy")
    page = gen_ref.cli_reference(docs, [])
    body = section(page, "## `toy tools hello`")
    assert "Say hello to NAME." in body
    assert "| `NAME` | `str` | yes | Who to greet. |" in body
    assert "| `--count` | `int` | `3` | How many times. |" in body
    assert "| `--loud, --quiet` | `flag` | `--quiet` | Shout. |" in body
    assert "secret" not in page


# -------------------------------------------------------------------------------- the config


def test_config_reference_has_every_key_with_its_env_override_and_default(
    pages: dict[str, str],
) -> None:
    page = pages["reference/config.md"]
    paths = list(field_paths(AtraConfig))
    assert len(paths) > 40
    for path in paths:
        _key, _type, default, env, _description = key_row(page, path)
        assert env == f"`ATRA__{'__'.join(path).upper()}`", f"{'.'.join(path)}: env override"
        expected = default_of(AtraConfig, path)
        if default == "unset":
            assert expected is None, f"{'.'.join(path)}: default {expected!r} shown as unset"
        else:
            shown = tomllib.loads(f"v = {default.strip('`')}")["v"]
            assert shown == expected, f"{'.'.join(path)}: default {shown!r} != {expected!r}"


def test_config_generator_renders_any_model_tree(gen_ref: ModuleType) -> None:
    class Inner(BaseModel):
        """Inner section."""

        depth: int = Field(default=2, ge=1)
        """How deep."""

    class Section(BaseModel):
        """A section."""

        mode: Literal["a", "b"] = "a"
        where: Path | None = None
        inner: Inner = Field(default_factory=Inner)

    class Tree(BaseModel):
        section: Section = Field(default_factory=Section)

    comments = {("section", "mode"): "pick one"}
    sections = gen_ref.describe_config(Tree, "TOY__", comments)
    page = gen_ref.config_reference(sections, {})
    mode = key_row(page, ("section", "mode"))
    assert mode == ["`mode`", 'string: `"a"`, `"b"`', '`"a"`', "`TOY__SECTION__MODE`", "pick one"]
    assert key_row(page, ("section", "where"))[1:3] == ["path (optional)", "unset"]
    depth = key_row(page, ("section", "inner", "depth"))
    assert depth == ["`depth`", "int: \\>= 1", "`2`", "`TOY__SECTION__INNER__DEPTH`", "How deep."]


# ----------------------------------------------------------------------------------- the API


def test_api_pages_cover_every_package_and_module(
    gen_ref: ModuleType, pages: dict[str, str]
) -> None:
    src = ROOT / "src"
    api = "\n".join(text for name, text in pages.items() if name.startswith("reference/api/"))
    nav = [next(iter(entry.values())) for entry in gen_ref.api_nav()]
    for module in sorted((src / "atra").rglob("*.py")):
        dotted = ".".join(module.relative_to(src).with_suffix("").parts)
        if dotted.startswith("atra.cli") or module.stem.startswith("_"):
            continue
        assert f"\n::: {dotted}\n" in api, f"{dotted} has no API entry"
    for init in sorted((src / "atra").rglob("__init__.py")):
        package = ".".join(init.parent.relative_to(src).parts)
        if package.startswith("atra.cli"):
            continue
        page = f"reference/api/{package}.md"
        assert page in pages, f"{package} has no API page"
        assert page in nav, f"{package}: its API page is not in the nav"


def test_nav_placeholder_is_expanded_and_required(gen_ref: ModuleType) -> None:
    exceptions = pytest.importorskip("mkdocs.exceptions")
    config = SimpleNamespace(nav=[{"Reference": [{"API reference": "reference/api/index.md"}]}])
    gen_ref.on_config(config)
    expanded = config.nav[0]["Reference"][0]["API reference"]
    assert expanded[0] == {"Overview": "reference/api/index.md"}
    assert {"atra.core": "reference/api/atra.core.md"} in expanded
    with pytest.raises(exceptions.PluginError, match="API reference"):
        gen_ref.on_config(SimpleNamespace(nav=[{"Home": "index.md"}]))


# ------------------------------------------------------------------------------ the tutorial


def tutorial_commands(text: str) -> Iterator[list[str]]:
    """The ``atra ...`` command lines of the fenced blocks (continuation lines joined)."""
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.M | re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #", 1)[0].strip()
            if line.startswith("atra "):
                yield shlex.split(line)


def test_tutorial_uses_only_existing_commands_and_options() -> None:
    found = list(tutorial_commands(TUTORIAL.read_text(encoding="utf-8")))
    assert len(found) >= 9, "the tutorial's atra commands were not found"
    root = typer.main.get_command(app)
    for argv in found:
        cmd: Any = root
        words = argv[1:]
        while words and words[0] in getattr(cmd, "commands", {}):
            cmd = cmd.commands[words.pop(0)]
        assert not hasattr(cmd, "commands"), f"{' '.join(argv)}: names a group, not a command"
        known = {opt for p in cmd.params for opt in [*p.opts, *p.secondary_opts]}
        for word in words:
            if word.startswith("--"):
                assert word in known, f"{' '.join(argv)}: {cmd.name} has no option {word}"
