"""`atra features list` and `atra features lookahead`: the feature registry, plug-ins included.

``list`` prints every registered feature with its family, warm-up, inputs and origin
(``built-in`` or the plug-in module), and the entry rules; ``--json`` prints the same as one
JSON object. ``lookahead`` runs the truncation test (:mod:`atra.research.lookahead`) over
every feature and the configured rule on the stored data: exit 0 with a summary when nothing
changes, else a table of what changed and a one-line :class:`~atra.errors.DataError` naming
every feature (exit 4).

Both load the config's plug-ins first (:func:`atra.cli.plugins.load_run_config`).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from atra.cli import app
from atra.cli.console import make_console, print_wide, progress_bar, when
from atra.cli.options import ConfigOpt, Selection, with_selection
from atra.cli.selection import resolve
from atra.errors import ConfigError, DataError

if TYPE_CHECKING:
    from rich.console import Console

    from atra.research.lookahead import LookaheadReport

features_app = typer.Typer(
    help="The feature registry: list every feature, check them all for look-ahead.",
    no_args_is_help=True,
)
app.add_typer(features_app, name="features")


def registry_rows() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(features, rules)``: every registered feature and entry rule as plain fields."""
    from atra.core.features.registry import feature_origin, feature_registry
    from atra.core.signals.rules import BUILTIN, Rule, rule_registry

    features = [
        {
            "name": spec.name,
            "family": spec.family.value,
            "warmup_bars": spec.warmup_bars,
            "inputs": list(spec.inputs),
            "origin": feature_origin(spec.name),
            "definition": spec.definition,
        }
        for spec in feature_registry().values()
    ]
    rules: list[dict[str, Any]] = [{"name": r.value, "origin": BUILTIN, "params": []} for r in Rule]
    rules += [
        {"name": d.name, "origin": d.origin, "params": list(d.param_names),
         "definition": d.definition}
        for d in rule_registry().values()
    ]  # fmt: skip
    return features, rules


@features_app.command("list")
def list_cmd(
    config: ConfigOpt = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of the table.")
    ] = False,
) -> None:
    """Every feature with its family, warm-up, inputs and origin (built-in or plug-in)."""
    from atra.cli.plugins import load_run_config

    load_run_config(config)
    features, rules = registry_rows()
    if json_out:
        typer.echo(json.dumps({"features": features, "rules": rules}))
        return
    console = make_console()
    table = Table(title=f"Features ({len(features)})")
    for head in ("feature", "family", "warm-up", "inputs", "origin"):
        table.add_column(head, justify="right" if head == "warm-up" else "left")
    for f in features:
        table.add_row(
            f["name"], f["family"], str(f["warmup_bars"]), ", ".join(f["inputs"]), f["origin"]
        )
    print_wide(console, table)
    plugins = sum(f["origin"] != "built-in" for f in features)
    console.print(
        f"{len(features) - plugins} built-in, {plugins} plug-in feature(s); each configured "
        "[[features.series]] entry adds its own value and change features. Rules: "
        + ", ".join(f"{r['name']} ({r['origin']})" for r in rules)
        + ".",
        markup=False,
        soft_wrap=True,
    )


def _print_report(console: Console, report: LookaheadReport, what: str) -> None:
    from atra.core.features.registry import feature_origin
    from atra.core.signals.rules import rule_origin

    n_plugin = sum(feature_origin(n) not in (None, "built-in") for n in report.checked)
    console.print(
        f"Look-ahead check of {len(report.checked)} feature(s) ({n_plugin} plug-in) and rule "
        f"{report.rule} on {len(report.symbols)} symbol(s) ({what}): {report.bars:,} bars, "
        f"{report.cuts:,} cuts; each value at or before a cut recomputed on the data known at "
        f"the cut's close (candles, funding, counterpart, BTC, series) and compared bit for bit "
        f"(NaN = NaN); {report.elapsed_s:.1f} s.",
        markup=False,
        soft_wrap=True,
    )
    if report.unchecked:
        console.print(
            "Not checked, no data for their inputs: "
            + ", ".join(f"{n} ({', '.join(i)})" for n, i in report.unchecked.items()),
            markup=False,
            soft_wrap=True,
        )
    if report.ok:
        console.print("No feature and no rule changes when later data is removed.", markup=False)
        return
    table = Table(title="Values that change when later data is removed (look-ahead)")
    heads = ("feature", "origin", "symbol", "first changed bar", "cut at", "full", "truncated")
    for head in heads:
        table.add_column(head, justify="right" if head in ("full", "truncated") else "left")
    for sf in report.first_by_name():
        f = sf.finding
        origin = (
            rule_origin(f.name.removeprefix("rule:"))
            if f.name.startswith("rule:")
            else feature_origin(f.name)
        )
        table.add_row(f.name, origin or "-", sf.symbol, when(f.first_ms), when(f.cut_ms),
                      f"{f.full:.6g}", f"{f.truncated:.6g}")  # fmt: skip
    print_wide(console, table)


@features_app.command("lookahead")
@with_selection
def lookahead_cmd(
    selection: Selection,
    cuts: Annotated[
        int, typer.Option("--cuts", help="Random cut bars per symbol (plus the special ones).")
    ] = 12,
    max_gaps: Annotated[
        int,
        typer.Option("--max-gaps", help="Gaps per symbol whose bars are cut around (-1: all)."),
    ] = 6,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random cuts.")] = 0,
) -> None:
    """Truncation test of every registered feature (plug-ins included) and the configured rule
    on the stored data: exit 0 when no value at or before a cut changes once the data after it
    is removed, else name every feature that changes and its first changed bar (exit 4)."""
    if cuts < 0:
        raise ConfigError(f"--cuts must be >= 0, got {cuts}")
    if max_gaps < -1:
        raise ConfigError(f"--max-gaps must be >= 0 or -1 (all), got {max_gaps}")
    from atra.cli.plugins import load_run_config
    from atra.cli.series import configured_inputs
    from atra.research.lookahead import run_lookahead
    from atra.research.pipeline import load_universe, settings_from_config

    cfg = load_run_config(selection.config)
    spec = settings_from_config(cfg, selection.market).signal
    sel = resolve(selection)
    series = configured_inputs(cfg, selection.data_dir)  # [[features.series]], as research
    universe = load_universe(
        sel.store, sel.exchange, sel.symbols, sel.market, sel.timeframe,
        sel.range.start_ms, sel.range.end_ms, series=series,
    )  # fmt: skip
    console = make_console()
    with progress_bar(console, "look-ahead") as progress:
        report = run_lookahead(
            universe,
            spec,
            n_random=cuts,
            seed=seed,
            max_gaps=None if max_gaps < 0 else max_gaps,
            progress=progress,
        )
    what = f"{sel.exchange}/{sel.market}/{sel.timeframe}, {sel.range.describe()}"
    _print_report(console, report, what)
    if not report.ok:
        named = [
            f"{sf.finding.name} ({sf.symbol} from {when(sf.finding.first_ms)})"
            for sf in report.first_by_name()
        ]
        raise DataError(
            f"look-ahead: {len(named)} feature(s) / rule change when later data is removed: "
            + ", ".join(named)
        )
