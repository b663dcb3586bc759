"""Research commands: `atra train`, `atra signals`, `atra labels`, `atra wf-metrics`.

Every command reads a range of the store (``--start`` inclusive, ``--end`` exclusive, UTC),
builds the research dataset with the strategy / costs / meta settings of ``--config`` (the
defaults of :class:`~atra.config.AtraConfig` when absent) and prints rich tables.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from atra.cli import app
from atra.cli.console import make_console, print_wide, progress_bar, when
from atra.cli.options import (
    EmbargoHours,
    MinTrainDays,
    MinTrainEvents,
    NJobs,
    RetrainDays,
    Selection,
    check_min_train,
    embargo_hours_or,
    retrain_days_or,
    with_selection,
)
from atra.cli.selection import parse_time, resolve
from atra.errors import ConfigError

if TYPE_CHECKING:  # the research stack (pandas, LightGBM, ...) loads when a command runs
    import pandas as pd

    from atra.core.features.context import SeriesInput
    from atra.core.meta import Reason
    from atra.research.pipeline import ResearchDataset, ResearchSettings

_EXPORT_COLUMNS = (
    "symbol",
    "time_ms",
    "side",
    "entry",
    "sl",
    "tp1",
    "tp2",
    "horizon_bars",
    "p_take",
    "threshold",
    "take",
    "blocked_by",
)

Decay = Annotated[
    float | None,
    typer.Option(help="Sample-weight time decay in (-1, 1] (1 or unset: none)."),
]


def _settings(selection: Selection) -> ResearchSettings:
    """The strategy / costs / meta settings of ``--config`` (the defaults when absent)."""
    from atra.cli.plugins import load_run_config
    from atra.research.pipeline import settings_from_config

    return settings_from_config(load_run_config(selection.config), selection.market)


def _prepare(
    console: Console, selection: Selection, settings: ResearchSettings | None = None
) -> tuple[ResearchDataset, ResearchSettings]:
    from atra.research.pipeline import build_dataset, load_universe

    settings = settings if settings is not None else _settings(selection)
    sel = resolve(selection)
    exchange, mkt, tf, syms = sel.exchange, sel.market, sel.timeframe, sel.symbols
    series = _series(selection, sel.store.root)
    universe = load_universe(
        sel.store, exchange, syms, mkt, tf, sel.range.start_ms, sel.range.end_ms, series=series
    )
    with progress_bar(console, "features + labels") as progress:
        dataset = build_dataset(universe, settings.signal, settings.exit, progress=progress)
    rep = dataset.report
    console.print(
        f"{rep.events:,} primary signal(s) on {len(syms)} symbol(s) "
        f"({exchange}/{mkt}/{tf}); {rep.complete:,} labelled, {rep.incomplete:,} incomplete "
        f"(trade still open at the data end: excluded from training), "
        f"{rep.before_start:,} in the feature warm-up before the range.",
        markup=False,
    )
    for sym, absent in rep.absent_inputs.items():
        console.print(
            f"{sym}: no {', '.join(absent)} data stored: those features are NaN.", markup=False
        )
    if series:
        shown = ", ".join(f"{s.name} ({len(s.series.frame):,} days)" for s in series)
        console.print(f"external series: {shown}.", markup=False)
    return dataset, settings


def _series(selection: Selection, data_dir: Path) -> tuple[SeriesInput, ...]:
    """The external series of ``--config`` ([[features.series]]), from their files or the store
    at ``data_dir``."""
    from atra.cli.series import configured_inputs
    from atra.config import load_config

    return configured_inputs(load_config(selection.config), data_dir)


@contextmanager
def _fold_progress(console: Console) -> Iterator[Callable[[int, int], None]]:
    with progress_bar(console, "walk-forward folds") as progress:

        def update(done: int, total: int) -> None:
            progress(done, total, f"fold {done}/{total}")

        yield update


_DIGITS = {"n_": 0, "me": 4}


def _fmt(value: Any, digits: int = 3) -> str:
    v = float(value)
    if math.isnan(v):
        return "-"
    return f"{int(v):,}" if digits == 0 else f"{v:.{digits}f}"


def _metrics_table(metrics: pd.DataFrame, title: str) -> Table:
    table = Table(title=title)
    cols = (
        "n_events",
        "base_rate",
        "auc",
        "n_take",
        "take_rate",
        "precision",
        "recall",
        "mean_net_return",
        "mean_net_return_take",
    )
    table.add_column("year")
    for c in cols:
        table.add_column(c.replace("mean_net_return", "ret"), justify="right")
    for year, row in metrics.iterrows():
        table.add_row(
            str(year),
            *(_fmt(row[c], _DIGITS.get(c[:2], 3)) if c in row else "-" for c in cols),
        )
    return table


def _reasons_text(reasons: Sequence[Reason]) -> str:
    return "; ".join(f"{r.feature}={r.value:.4g} ({r.contribution:+.3f})" for r in reasons)


@app.command("labels")
@with_selection
def labels_cmd(
    selection: Selection,
) -> None:
    """Triple-barrier label statistics: counts per label and exit reason, mean net return,
    meta-positive rate (per symbol and overall)."""
    from atra.core.labels import label_stats

    console = make_console()
    dataset, _ = _prepare(console, selection)
    ev = dataset.events
    table = Table(title="Triple-barrier labels (complete trades; net of fees and slippage)")
    heads = (
        "symbol",
        "events",
        "complete",
        "incomplete",
        "-1 (SL)",
        "0 (time)",
        "+1 (TP)",
        "mean ret",
        "meta+ rate",
        "reasons",
    )
    for h in heads:
        table.add_column(h, justify="left" if h in ("symbol", "reasons") else "right")
    groups = [(str(s), ev[ev["symbol"] == s]) for s in dataset.universe.symbols]
    groups.append(("all", ev))
    for name, part in groups:
        st = label_stats(part)
        table.add_row(
            name,
            f"{st.events:,}",
            f"{st.complete:,}",
            f"{st.incomplete:,}",
            f"{st.labels[-1]:,}",
            f"{st.labels[0]:,}",
            f"{st.labels[1]:,}",
            _fmt(st.mean_ret, 5),
            _fmt(st.meta_positive_rate, 3),
            ", ".join(f"{k} {v}" for k, v in st.reasons.items()),
        )
    print_wide(console, table)


@app.command("wf-metrics")
@with_selection
def wf_metrics_cmd(
    selection: Selection,
    retrain_days: RetrainDays = None,
    train: Annotated[
        str, typer.Option("--train", help="expanding or rolling training window.")
    ] = "expanding",
    train_days: Annotated[
        int | None, typer.Option("--train-days", help="Rolling window length, days (>= 1).")
    ] = None,
    embargo_hours: EmbargoHours = None,
    min_train_days: MinTrainDays = 180,
    min_train_events: MinTrainEvents = 200,
    decay: Decay = None,
    n_jobs: NJobs = 2,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the metrics to this JSON file.")
    ] = None,
) -> None:
    """Walk-forward OOS metrics of the meta model per year: AUC, precision / recall of
    "take", base rate (purge + embargo, sample weights, monthly retrain by default)."""
    if train not in ("expanding", "rolling"):
        raise ConfigError(f"--train must be expanding or rolling, got {train!r}")
    if train == "rolling" and (train_days is None or train_days < 1):
        raise ConfigError(f"--train rolling needs --train-days >= 1, got {train_days}")
    check_min_train(min_train_days, min_train_events)
    from atra.research.pipeline import WalkForwardConfig, run_walkforward

    settings = _settings(selection)
    base = settings.walkforward
    cfg = WalkForwardConfig(
        retrain_days=retrain_days_or(retrain_days, base.retrain_days),
        train="rolling" if train == "rolling" else "expanding",
        train_days=train_days,
        embargo_hours=embargo_hours_or(embargo_hours, base.embargo_hours),
        min_train_days=min_train_days,
        min_train_events=min_train_events,
        decay=decay,
    )
    console = make_console()
    dataset, settings = _prepare(console, selection, settings)
    with _fold_progress(console) as progress:
        result = run_walkforward(dataset, cfg, settings.meta, n_jobs=n_jobs, progress=progress)
    print_wide(console, _metrics_table(result.metrics, "Walk-forward out-of-sample metrics"))
    purged = sum(f.n_purged for f in result.folds)
    embargoed = sum(f.n_embargoed for f in result.folds)
    console.print(
        f"{len(result.folds)} fold(s) every {cfg.retrain_days} d ({cfg.train}), embargo "
        f"{cfg.embargo_hours:g} h; {len(result.predictions):,} OOS event(s), "
        f"{result.untested:,} in the training warm-up, {result.excluded_incomplete:,} "
        f"incomplete excluded; purged {purged:,}, embargoed {embargoed:,} (summed over folds); "
        f"{result.elapsed_s:.1f} s.",
        markup=False,
    )
    if json_out is not None:
        payload = {
            "folds": len(result.folds),
            "oos_events": len(result.predictions),
            "excluded_incomplete": result.excluded_incomplete,
            "metrics": {
                str(y): {
                    k: (None if isinstance(v, float) and math.isnan(v) else v)
                    for k, v in row.items()
                }
                for y, row in result.metrics.to_dict(orient="index").items()
            },
        }
        json_out.write_text(json.dumps(payload, indent=2, default=float))
        console.print(f"metrics written to {json_out}", markup=False)


app.command("walkforward-metrics", help="Same as wf-metrics.")(wf_metrics_cmd)


@app.command("train")
@with_selection
def train_cmd(
    selection: Selection,
    out: Annotated[Path, typer.Option("--out", help="Model registry folder.")] = Path("models"),
    walkforward: Annotated[
        bool,
        typer.Option("--walkforward/--no-walkforward", help="Store walk-forward OOS metrics too."),
    ] = False,
    min_train_days: Annotated[
        int, typer.Option(help="With --walkforward: days before the first test window.")
    ] = 180,
    min_train_events: Annotated[
        int, typer.Option(help="With --walkforward: fewest training events of a fold.")
    ] = 200,
    decay: Decay = None,
    n_jobs: Annotated[int, typer.Option(help="Parallel fold fits (with --walkforward).")] = 2,
) -> None:
    """Train the meta model on a range and save it (LightGBM text + metadata JSON)."""
    check_min_train(min_train_days, min_train_events)
    from atra.research.pipeline import run_walkforward, train_model

    console = make_console()
    dataset, settings = _prepare(console, selection)
    metrics = None
    if walkforward:
        with _fold_progress(console) as progress:
            cfg = dataclasses.replace(
                settings.walkforward,
                min_train_days=min_train_days,
                min_train_events=min_train_events,
                decay=decay,
            )
            wf = run_walkforward(dataset, cfg, settings.meta, n_jobs=n_jobs, progress=progress)
        metrics = wf.metrics
        print_wide(console, _metrics_table(metrics, "Walk-forward out-of-sample metrics"))
    trained = train_model(dataset, out, settings.meta, decay=decay, oos_metrics=metrics)
    reg = trained.registered
    imp = reg.model.feature_importance().head(8)
    table = Table(title=f"Model {reg.model_id}")
    table.add_column("field")
    table.add_column("value")
    table.add_row("path", str(reg.path))
    table.add_row(
        "training window", f"{when(trained.train_start_ms)} .. {when(trained.train_end_ms)}"
    )
    table.add_row(
        "events", f"{trained.n_train:,} (incomplete excluded: {trained.excluded_incomplete:,})"
    )
    table.add_row("threshold", f"{reg.model.threshold:.2f} ({reg.model.threshold_source})")
    table.add_row("top features (gain)", ", ".join(f"{k} {v:.2f}" for k, v in imp.items()))
    print_wide(console, table)
    console.print(f"saved model {reg.model_id} to {reg.path}", markup=False)


@app.command("signals")
@with_selection
def signals_cmd(
    selection: Selection,
    model: Annotated[
        Path | None, typer.Option("--model", help="Registered model folder (meta filter).")
    ] = None,
    explain: Annotated[
        bool, typer.Option("--explain", help="Detail the latest taken and blocked signal.")
    ] = False,
    at: Annotated[
        str | None, typer.Option("--at", help="Only signals at or before this time (UTC).")
    ] = None,
    last: Annotated[int, typer.Option("--last", help="Rows to print (newest).")] = 20,
    export: Annotated[
        Path | None, typer.Option("--export", help="Write every signal to this CSV file.")
    ] = None,
) -> None:
    """Primary signals with p(take), threshold, decision and top reasons."""
    if explain and model is None:
        raise ConfigError("--explain needs --model (reasons come from the meta model)")
    at_ms = parse_time(at, "--at") if at is not None else None
    from atra.core.decision import ModelHandle, decide_events
    from atra.research.pipeline import load_model_for

    console = make_console()
    dataset, _ = _prepare(console, selection)
    handle: ModelHandle | None = None if model is None else load_model_for(model, dataset)
    decided = decide_events(dataset.events, dataset.X, handle, top_k=3)
    if at_ms is not None:
        decided = decided[decided["time_ms"] <= at_ms]
    if export is not None:
        frame = decided.loc[:, list(_EXPORT_COLUMNS)].copy()
        frame.insert(1, "time_utc", [when(int(t)) for t in frame["time_ms"]])
        frame["top_reasons"] = [_reasons_text(r) for r in decided["reasons"]]
        frame.to_csv(export, index=False)
        console.print(f"{len(frame):,} signal(s) written to {export}", markup=False)
    mode = f"model {handle.model_id}" if handle is not None else "primary only"
    table = Table(title=f"Primary signals ({mode}), newest {min(last, len(decided))}")
    for h in (
        "time (UTC)",
        "symbol",
        "side",
        "entry",
        "sl",
        "tp1",
        "p_take",
        "thr",
        "take",
        "top reasons",
    ):
        table.add_column(
            h, justify="right" if h in ("entry", "sl", "tp1", "p_take", "thr") else "left"
        )
    for _, r in decided.tail(max(last, 0)).iterrows():
        table.add_row(
            when(int(r["time_ms"])),
            str(r["symbol"]),
            "LONG" if int(r["side"]) > 0 else "SHORT",
            f"{r['entry']:.6g}",
            f"{r['sl']:.6g}",
            f"{r['tp1']:.6g}",
            _fmt(r["p_take"]),
            _fmt(r["threshold"], 2),
            "yes" if bool(r["take"]) else "no",
            _reasons_text(r["reasons"]),
        )
    print_wide(console, table)
    taken = int(decided["take"].sum())
    console.print(
        f"{len(decided):,} signal(s): {taken:,} taken, {len(decided) - taken:,} blocked.",
        markup=False,
    )
    if explain:
        for label, rows in (
            ("TAKEN", decided[decided["take"]]),
            ("BLOCKED", decided[~decided["take"]]),
        ):
            if rows.empty:
                console.print(f"{label}: no such signal in the range.", markup=False)
                continue
            r = rows.iloc[-1]
            console.print(
                f"{label}: {r['symbol']} {'LONG' if int(r['side']) > 0 else 'SHORT'} at "
                f"{when(int(r['time_ms']))}, p_take {float(r['p_take']):.3f} "
                f"{'>=' if bool(r['take']) else '<'} threshold {float(r['threshold']):.2f}",
                markup=False,
            )
            for reason in r["reasons"]:
                console.print(
                    f"  {reason.feature} = {reason.value:.6g}: {reason.contribution:+.4f} log-odds",
                    markup=False,
                )
