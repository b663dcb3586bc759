"""The CLI reference: every command of a typer/click command tree with its usage line,
arguments, options, defaults and help, plus the exit codes of an error tree."""

from __future__ import annotations

import enum
import inspect
from dataclasses import dataclass, field
from typing import Any, Literal

from refdocs import code, doc_text, md_doc, md_text, table


@dataclass(frozen=True, slots=True)
class ParamDoc:
    """One argument or option of a command, as the reference shows it."""

    names: str
    kind: Literal["argument", "option"]
    type_name: str
    default: str
    required: bool
    help: str
    envvar: str


@dataclass(frozen=True, slots=True)
class CommandDoc:
    """One command (or group) of the CLI: its full path, help, usage and parameters."""

    path: tuple[str, ...]
    help: str
    short_help: str
    usage: str
    params: tuple[ParamDoc, ...]
    subcommands: tuple[str, ...] = field(default=())

    @property
    def name(self) -> str:
        return " ".join(self.path)


def _cli_default(param: Any, ctx: Any) -> str:
    if isinstance(getattr(param, "show_default", None), str):
        return str(param.show_default)
    value = param.get_default(ctx, call=False)
    if getattr(param, "is_flag", False):
        if param.secondary_opts:
            return str(param.opts[0] if value else param.secondary_opts[0])
        return "on" if value else "off"
    if callable(value):
        return "(computed at run time)"
    if value is None or value == () or value == []:
        return ""
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def _cli_type(param: Any, ctx: Any) -> str:
    if getattr(param, "is_flag", False):
        return "flag"
    display = getattr(param, "display_type", None)
    if callable(display):
        return str(display(ctx)).strip("<>")
    return str(getattr(param.type, "name", param.type))


def describe_commands(root: Any, prog: str) -> list[CommandDoc]:
    """Every visible command of a click/typer command tree, depth first in registration order.

    ``root`` is what ``typer.main.get_command(app)`` returns (typer's click ``Command``)."""
    import typer  # the CLI's own dependency; imported here so the module loads without it

    out: list[CommandDoc] = []

    def walk(cmd: Any, path: tuple[str, ...], parent: Any) -> None:
        ctx = typer.Context(cmd, info_name=path[-1], parent=parent)
        help_option = cmd.get_help_option(ctx)
        params: list[ParamDoc] = []
        for param in cmd.get_params(ctx):
            if param is help_option or getattr(param, "hidden", False):
                continue
            kind: Literal["argument", "option"] = (
                "argument" if param.param_type_name == "argument" else "option"
            )
            names = ", ".join([*param.opts, *param.secondary_opts])
            envvar = param.envvar if isinstance(param.envvar, str) else ""
            params.append(
                ParamDoc(
                    names=param.name.upper() if kind == "argument" else names,
                    kind=kind,
                    type_name=_cli_type(param, ctx),
                    default=_cli_default(param, ctx),
                    required=bool(param.required),
                    help=inspect.cleandoc(getattr(param, "help", None) or ""),
                    envvar=envvar,
                )
            )
        subs = getattr(cmd, "commands", {})
        visible = tuple(n for n, c in subs.items() if not getattr(c, "hidden", False))
        out.append(
            CommandDoc(
                path=path,
                help=inspect.cleandoc(cmd.help or "").partition("\f")[0],
                short_help=cmd.get_short_help_str(limit=120),
                usage=cmd.get_usage(ctx).removeprefix("Usage: "),
                params=tuple(params),
                subcommands=visible,
            )
        )
        for name in visible:
            walk(subs[name], (*path, name), ctx)

    walk(root, (prog,), None)
    return out


def exit_codes(base: type[Any]) -> list[tuple[str, str, str]]:
    """(exit code, class name, first docstring paragraph) of ``base`` and every subclass, depth
    first; each class carries its CLI exit status in ``exit_code``."""
    rows: list[tuple[str, str, str]] = []

    def walk(cls: type[Any]) -> None:
        doc = inspect.getdoc(cls) or ""
        rows.append((str(cls.exit_code), cls.__name__, doc.split("\n\n", 1)[0]))
        for sub in cls.__subclasses__():
            walk(sub)

    walk(base)
    return rows


def cli_reference(commands: list[CommandDoc], exit_codes: list[tuple[str, str, str]]) -> str:
    """The CLI reference page."""
    prog = commands[0].path[0]
    out = [
        "# CLI reference",
        "",
        f"Generated from the `{prog}` command tree when the site is built. Every command also "
        "takes `--help`.",
        "",
        table(
            ("command", "what it does"),
            [(f"[{code(c.name)}](#{'-'.join(c.path)})", md_text(c.short_help)) for c in commands],
        ),
        "",
        "## Exit codes",
        "",
        "Bad input is one line `ErrorType: message` on stderr and the error's exit code "
        f"(`{prog} --debug ...` adds the traceback); usage errors exit 2.",
        "",
        table(
            ("code", "error", "meaning"),
            [(num, f"`{name}`", md_doc(doc_text(doc))) for num, name, doc in exit_codes],
        ),
    ]
    for cmd in commands:
        out += ["", f"## {code(cmd.name)} {{#{'-'.join(cmd.path)}}}", ""]
        if cmd.help:
            out += [md_text(p) + "\n" for p in cmd.help.split("\n\n")]
        out += ["```text", cmd.usage, "```"]
        args = [p for p in cmd.params if p.kind == "argument"]
        opts = [p for p in cmd.params if p.kind == "option"]
        if args:
            out += ["", "**Arguments**", ""]
            rows = [
                (code(p.names), code(p.type_name), "yes" if p.required else "no", md_text(p.help))
                for p in args
            ]
            out.append(table(("argument", "type", "required", "description"), rows))
        if opts:
            out += ["", "**Options**", ""]
            rows = []
            for p in opts:
                notes = ["**Required.**"] if p.required else []
                notes += [md_text(p.help)] if p.help else []
                if p.envvar and p.envvar not in p.help:
                    notes.append(f"Env {code(p.envvar)}.")
                default = code(p.default) if p.default else ""
                rows.append((code(p.names), code(p.type_name), default, " ".join(notes)))
            out.append(table(("option", "type", "default", "description"), rows))
        if cmd.subcommands:
            links = ", ".join(f"[{code(n)}](#{'-'.join((*cmd.path, n))})" for n in cmd.subcommands)
            out += ["", f"Commands: {links}"]
    return "\n".join(out) + "\n"
