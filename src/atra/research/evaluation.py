"""Out-of-sample evaluation of a walk-forward run: primary-only vs meta-filtered vs buy-and-hold.

What is measured, and only that:

- **OOS span**: from the start of the first test window of the walk-forward (the first fold
  whose model could be trained) to the end of the data. Candles before it are never part of an
  equity curve; no trade enters before it.
- **primary** (``primary``): every OOS primary event, i.e. every labelled event whose signal
  bar lies in a test window (it has an out-of-sample prediction).
- **meta-filtered** (``filtered``): the same events, traded only when the model trained before
  their fold said ``take`` (``p_take >= threshold``). Both legs use the same backtest settings
  (sizing, limits, costs), so the difference is the filter alone.
- **buy-and-hold** (``buy_hold``): equal weight of the same symbols over the same span: each
  symbol gets ``initial_equity / n`` at the span start, bought at the open of its first bar in
  the span paying the taker fee and the slippage on entry, then held (no exit fee, marked at
  each close); a perpetual position pays funding as the backtest does. A symbol listed later
  holds its share in cash until its first bar.

Events without an OOS decision inside the span (trade still open when the data ends, so no
label) are left out of both strategy legs and counted in the run notes, never dropped silently.

All three legs share one time grid and go to :func:`atra.research.runrecord.write_run` (run
directory,
content-derived run id, trades hashes) and :func:`atra.research.report.render_report` (HTML report);
statistics are annualised with ``sqrt(bars_per_year)`` of the bar size (365-day year).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pandas as pd
from rich.table import Table

from atra.adapters.store import CandleStore
from atra.config import AtraConfig
from atra.core.backtest.engine import BacktestConfig, BacktestResult, run_backtest
from atra.core.costs import CostModel
from atra.core.meta import MetaParams
from atra.core.sizing import SizingConfig
from atra.core.types import Market, Timeframe
from atra.errors import DataError
from atra.research.pipeline import (
    ResearchDataset,
    ResearchSettings,
    Universe,
    WalkForwardConfig,
    WalkForwardResult,
    build_dataset,
    load_universe,
    run_walkforward,
    spec_to_dict,
)
from atra.research.report import render_report, terminal_summary
from atra.research.runrecord import (
    LoadedRun,
    RunLeg,
    hash_frames,
    leg_from_backtest,
    read_run,
    write_run,
)

__all__ = [
    "BUY_HOLD_RULE",
    "PREDICTION_COLUMNS",
    "BuyHold",
    "Evaluation",
    "LegFigures",
    "OOSEvents",
    "backtest_config_from",
    "buy_and_hold",
    "data_label_of",
    "evaluate_walkforward",
    "oos_events",
    "run_research_loop",
    "universe_hash",
]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
ProgressFn = Callable[[int, int, str], None]
StageProgress = Callable[[str, int, int, str], None]
"""``(stage, done, total, item)``; stages: ``dataset``, ``walk-forward``, ``evaluation``."""

BUY_HOLD_RULE: Final[str] = (
    "equal weight of the same symbols over the same OOS span; each bought at the open of its "
    "first bar in the span paying the taker fee and slippage on entry, held to the end (no exit "
    "fee), marked at each close; perpetuals pay funding"
)
PREDICTION_COLUMNS: Final[tuple[str, ...]] = (
    "symbol",
    "time_ms",
    "side",
    "fold",
    "p_take",
    "threshold",
    "take",
    "label",
    "meta_label",
    "ret_net",
)
"""Columns of the OOS predictions stored with the run (``oos_predictions.csv``)."""
_STAGES: Final[int] = 5


def data_label_of(exchange: str) -> str:
    """``"synthetic"`` for the embedded synthetic market, ``"real"`` for any exchange."""
    return "synthetic" if exchange == "synthetic" else "real"


def backtest_config_from(cfg: AtraConfig) -> BacktestConfig:
    """The backtest settings of the config: taker / maker fees and slippage (``costs``),
    fixed-fractional risk per trade and the position limits (``risk``). Every fill pays the
    taker fee (take-profits too), as the labels assume. Kelly sizing is not used here, so the
    primary and filtered legs are sized alike and differ by the filter only."""
    c, r = cfg.costs, cfg.risk
    return BacktestConfig(
        sizing=SizingConfig(risk_fraction=r.risk_per_trade),
        costs=CostModel(
            maker_fee_rate=c.maker_fee_bps / 1e4,
            taker_fee_rate=c.taker_fee_bps / 1e4,
            slippage_bps=c.slippage_bps,
        ),
        max_positions=r.max_open_positions,
        max_per_symbol=r.max_per_symbol,
        max_gross_leverage=r.max_gross_leverage,
    )


# --------------------------------------------------------------------------------------------
# OOS events


@dataclass(frozen=True, slots=True, eq=False)
class OOSEvents:
    """The out-of-sample part of a walk-forward run."""

    start_ms: int
    """Start of the first test window: the first bar of the OOS span."""
    end_ms: int
    """Open time of the last bar of the span (the data end)."""
    events: pd.DataFrame
    """One row per OOS primary event (signal time order): the event columns, the label and the
    fold's decision (``fold, p_take, threshold, take``)."""
    without_decision: int
    """Events with a signal in the span but no OOS decision (label unknown at the data end)."""

    @property
    def n_take(self) -> int:
        return int(self.events["take"].sum())


def oos_events(dataset: ResearchDataset, wf: WalkForwardResult) -> OOSEvents:
    """The OOS events of ``wf``: events whose signal lies in a test window, each with the
    decision of the model trained before its fold."""
    if not wf.folds or wf.predictions.empty:
        raise DataError("evaluation: the walk-forward has no out-of-sample prediction")
    start = min(int(f.test_start_ms) for f in wf.folds)
    preds = wf.predictions
    early = preds["time_ms"].to_numpy(dtype=np.int64) < start
    if early.any():
        row = int(np.flatnonzero(early)[0])
        raise DataError(
            f"evaluation: OOS prediction row {row} has signal time {preds['time_ms'].iloc[row]} "
            f"before the first test window ({start})"
        )
    take = preds["take"]
    if not pd.api.types.is_bool_dtype(take.dtype):
        raise DataError(
            f"evaluation: predictions column take has dtype {take.dtype}, expected bool"
        )
    order = np.lexsort(
        (preds["symbol"].to_numpy(dtype=str), preds["time_ms"].to_numpy(dtype=np.int64))
    )
    events = preds.iloc[order].reset_index(drop=True)
    in_span = dataset.events["time_ms"].to_numpy(dtype=np.int64) >= start
    end = max(int(d.candles["open_time"].iloc[-1]) for d in dataset.universe.symbols.values())
    return OOSEvents(start, end, events, int(in_span.sum()) - len(events))


def _oos_candles(
    universe: Universe, start_ms: int
) -> tuple[dict[str, pd.DataFrame], dict[str, int]]:
    """Each symbol's candles from ``start_ms`` on (index reset) and its row offset."""
    out: dict[str, pd.DataFrame] = {}
    offsets: dict[str, int] = {}
    for sym, data in universe.symbols.items():
        times = data.candles["open_time"].to_numpy(dtype=np.int64)
        first = int(np.searchsorted(times, start_ms, side="left"))
        if first >= times.size:
            continue  # the symbol's data ends before the OOS span: no bar to hold or trade
        out[sym] = data.candles.iloc[first:].reset_index(drop=True)
        offsets[sym] = first
    if not out:
        raise DataError(f"evaluation: no symbol has bars after the OOS start {start_ms}")
    return out, offsets


# --------------------------------------------------------------------------------------------
# buy-and-hold


@dataclass(frozen=True, slots=True, eq=False)
class BuyHold:
    """Equal-weight buy-and-hold equity on a grid, and what it paid."""

    equity: pd.Series
    """Index = the grid (bar open times, ms), values marked at each bar's close."""
    fees: float
    slippage: float
    funding: float


def buy_and_hold(
    candles: Mapping[str, pd.DataFrame],
    grid_ms: I64,
    initial_equity: float,
    costs: CostModel,
    *,
    funding: Mapping[str, pd.DataFrame] | None = None,
) -> BuyHold:
    """Equal-weight buy-and-hold of ``candles`` on ``grid_ms`` (see :data:`BUY_HOLD_RULE`).

    Each symbol gets ``initial_equity / n``: cash until its first bar, then ``quantity``
    bought at that bar's open moved up by the slippage, the taker fee taken from the share;
    marked at the latest close at or before each grid time. Symbols in ``funding`` pay
    ``quantity x open x rate`` at each funding time after the entry bar's open, ``open`` of the
    latest bar at or before it (positive rates: longs pay)."""
    grid = np.asarray(grid_ms, dtype=np.int64)
    if grid.size == 0 or not candles:
        raise DataError("buy-and-hold: no bars")
    share = initial_equity / len(candles)
    slip = costs.slippage_bps / 1e4
    total = np.zeros(grid.size)
    fees = slippage = paid = 0.0
    for sym in sorted(candles):
        frame = candles[sym]
        times = frame["open_time"].to_numpy(dtype=np.int64)
        close = frame["close"].to_numpy(dtype=np.float64)
        opens = frame["open"].to_numpy(dtype=np.float64)
        fill = float(opens[0]) * (1.0 + slip)
        notional = share / (1.0 + costs.taker_fee_rate)
        qty = notional / fill
        fees += notional * costs.taker_fee_rate
        slippage += qty * (fill - float(opens[0]))
        at = np.searchsorted(times, grid, side="right") - 1
        value = np.where(at >= 0, qty * close[np.maximum(at, 0)], share)
        fund = (funding or {}).get(sym)
        if fund is not None and len(fund):
            ft = fund["funding_time"].to_numpy(dtype=np.int64)
            rate = fund["funding_rate"].to_numpy(dtype=np.float64)
            keep = (ft > times[0]) & (ft <= grid[-1])
            ft, rate = ft[keep], rate[keep]
            mark = opens[np.searchsorted(times, ft, side="right") - 1]
            pay = qty * mark * rate
            cum = np.concatenate(([0.0], np.cumsum(pay)))
            value = value - cum[np.searchsorted(ft, grid, side="right")]
            paid += float(pay.sum())
        total += value
    if not np.all(np.isfinite(total) & (total > 0.0)):
        raise DataError("buy-and-hold: equity fell to zero or below (funding exceeded the value)")
    return BuyHold(pd.Series(total, index=grid), fees, slippage, paid)


# --------------------------------------------------------------------------------------------
# the evaluation


@dataclass(frozen=True, slots=True)
class LegFigures:
    """The headline numbers of one leg (costs as positive amounts paid, quote currency)."""

    total_return: float | None
    cagr: float | None
    sharpe: float | None
    sortino: float | None
    psr: float | None
    dsr: float | None
    max_drawdown: float | None
    win_rate: float | None
    profit_factor: float | None
    n_trades: int | None
    fees_paid: float | None
    slippage_paid: float | None
    funding_paid: float | None


def _number(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        return {"inf": math.inf, "-inf": -math.inf}.get(value)
    return float(value)


def _figures(leg: Mapping[str, Any], costs: BuyHold | None) -> LegFigures:
    r, t = leg["returns"], leg["trades"]
    has_trades = bool(leg.get("has_trades", True))

    def trade(key: str) -> float | None:
        return _number(t[key]) if has_trades else None

    n = t["n_trades"] if has_trades else None
    return LegFigures(
        total_return=_number(r["total_return"]),
        cagr=_number(r["cagr"]),
        sharpe=_number(r["sharpe"]),
        sortino=_number(r["sortino"]),
        psr=_number(r["psr"]),
        dsr=_number(r["dsr"]),
        max_drawdown=_number(r["max_drawdown"]),
        win_rate=trade("win_rate"),
        profit_factor=trade("profit_factor"),
        n_trades=None if n is None else int(n),
        fees_paid=costs.fees if costs is not None else trade("fees_paid"),
        slippage_paid=costs.slippage if costs is not None else trade("slippage_paid"),
        funding_paid=costs.funding if costs is not None else trade("funding_paid"),
    )


@dataclass(frozen=True, slots=True, eq=False)
class Evaluation:
    """The written run, its report and the side-by-side figures."""

    run_dir: Path
    report_path: Path | None
    run: LoadedRun
    oos: OOSEvents
    backtests: dict[str, BacktestResult]
    buy_hold: BuyHold
    figures: dict[str, LegFigures] = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        return self.run.record.run_id

    @property
    def annualization(self) -> str:
        """E.g. ``Sharpe annualised x sqrt(8760) (1h bars, 365-day year)``."""
        return self.run.record.annualization

    @property
    def trades_sha256(self) -> dict[str, str]:
        return dict(self.run.record.trades_sha256)

    def table(self) -> Table:
        """The legs side by side (rich), the annualisation and scope in the caption."""
        return terminal_summary(self.run)


def universe_hash(universe: Universe) -> str:
    """:func:`atra.research.runrecord.hash_frames` of every frame the run read, symbol by symbol
    (candles, funding, counterpart market), then the BTC context."""
    frames: list[pd.DataFrame] = []
    for sym in sorted(universe.symbols):
        data = universe.symbols[sym]
        frames.append(data.candles)
        for extra in (data.funding, data.counterpart):
            frames.append(extra if extra is not None else pd.DataFrame())
    frames.append(universe.btc if universe.btc is not None else pd.DataFrame())
    return hash_frames(frames)


def _plain(value: Any) -> Any:
    """JSON-ready: NaN -> None, numpy scalars -> Python."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _rebased(events: pd.DataFrame, offsets: Mapping[str, int]) -> pd.DataFrame:
    out = events.copy()
    shift = out["symbol"].map(offsets).to_numpy(dtype=np.int64)
    out["t"] = out["t"].to_numpy(dtype=np.int64) - shift
    return out


def evaluate_walkforward(
    dataset: ResearchDataset,
    wf: WalkForwardResult,
    backtest_config: BacktestConfig,
    *,
    runs_dir: Path,
    wf_config: WalkForwardConfig,
    meta_params: MetaParams,
    seed: int,
    n_trials: int = 1,
    notes: Mapping[str, Any] | None = None,
    render: bool = True,
    progress: ProgressFn | None = None,
) -> Evaluation:
    """Backtest the OOS events of ``wf`` primary-only and meta-filtered, add equal-weight
    buy-and-hold, write the run record under ``runs_dir`` and (``render``) its HTML report.

    ``n_trials`` is the number of configurations tried before this one (for the DSR).
    The same inputs give the same run id and trades hashes."""
    uni = dataset.universe
    tf: Timeframe = uni.timeframe

    def step(k: int, what: str) -> None:
        if progress is not None:
            progress(k, _STAGES, what)

    oos = oos_events(dataset, wf)
    candles, offsets = _oos_candles(uni, oos.start_ms)
    perp = uni.market is Market.PERP
    funding = (
        {s: d.funding for s, d in uni.symbols.items() if d.funding is not None and s in candles}
        if perp
        else {}
    )
    missing_funding = sorted(set(candles) - set(funding)) if perp else []
    if missing_funding:
        raise DataError(f"evaluation: perpetual symbol {missing_funding[0]} has no funding stored")
    markets = {s: uni.market for s in candles}
    events = _rebased(oos.events, offsets)
    step(1, "backtest primary")
    primary = run_backtest(
        candles,
        events,
        replace(backtest_config, decision_column=None),  # every OOS event
        funding=funding,
        markets=markets,
        timeframe=tf,
    )
    step(2, "backtest filtered")
    filtered = run_backtest(
        candles,
        events,
        replace(backtest_config, decision_column="take"),  # the fold model's decision
        funding=funding,
        markets=markets,
        timeframe=tf,
    )
    step(3, "buy-and-hold")
    leg_p = leg_from_backtest("primary", primary)
    leg_f = leg_from_backtest("filtered", filtered)
    grid = np.asarray(leg_p.equity.index, dtype=np.int64)
    bh = buy_and_hold(
        candles, grid[1:], backtest_config.initial_equity, backtest_config.costs, funding=funding
    )
    bh_values = np.concatenate(([backtest_config.initial_equity], bh.equity.to_numpy()))
    leg_b = RunLeg("buy_hold", pd.Series(bh_values, index=grid), None)

    config = {
        "universe": {
            "exchange": uni.exchange,
            "market": uni.market.value,
            "timeframe": tf.value,
            "symbols": list(uni.symbols),
            "start_ms": uni.start_ms,
            "end_ms": uni.end_ms,
        },
        "features": list(dataset.bar_features),
        "signal_spec": spec_to_dict(dataset.signal_spec),
        "exit_spec": spec_to_dict(dataset.exit_spec),
        "walkforward": asdict(wf_config),
        "meta_params": asdict(meta_params),
        "backtest": asdict(backtest_config),
        "buy_hold": BUY_HOLD_RULE,
    }
    all_metrics = wf.metrics.loc["all"].to_dict() if "all" in wf.metrics.index else {}
    run_notes: dict[str, Any] = {
        "oos_start_ms": oos.start_ms,
        "oos_end_ms": oos.end_ms,
        "folds": len(wf.folds),
        "oos_events": len(oos.events),
        "oos_events_taken_by_meta": oos.n_take,
        "oos_events_without_decision": oos.without_decision,
        "excluded_incomplete": wf.excluded_incomplete,
        "untested_training_warmup": wf.untested,
        "sizing": "fixed-fractional risk per trade, same for primary and filtered",
        "buy_hold": BUY_HOLD_RULE,
        "buy_hold_costs": {"fees": bh.fees, "slippage": bh.slippage, "funding": bh.funding},
        "walkforward_oos_metrics": all_metrics,
        **dict(notes or {}),
    }
    step(4, "run record")
    preds = oos.events.loc[:, [c for c in PREDICTION_COLUMNS if c in oos.events.columns]]
    run_dir = write_run(
        runs_dir,
        legs=[leg_p, leg_f, leg_b],
        timeframe=tf,
        config=_plain(config),
        data_hash=universe_hash(uni),
        seed=seed,
        data_label=data_label_of(uni.exchange),
        oos_predictions=preds.reset_index(drop=True),
        n_trials=n_trials,
        notes=_plain(run_notes),
    )
    run = read_run(run_dir)
    step(5, "report")
    report = render_report(run) if render else None
    legs = run.metrics["legs"]
    figures = {
        "primary": _figures(legs["primary"], None),
        "filtered": _figures(legs["filtered"], None),
        "buy_hold": _figures(legs["buy_hold"], bh),
    }
    return Evaluation(
        run_dir,
        report,
        run,
        oos,
        {"primary": primary, "filtered": filtered},
        bh,
        figures,
    )


def run_research_loop(
    store: CandleStore,
    *,
    exchange: str,
    symbols: Sequence[str],
    market: Market,
    timeframe: Timeframe,
    settings: ResearchSettings,
    backtest_config: BacktestConfig,
    runs_dir: Path,
    seed: int,
    start_ms: int | None = None,
    end_ms: int | None = None,
    n_trials: int = 1,
    n_jobs: int = 2,
    notes: Mapping[str, Any] | None = None,
    progress: StageProgress | None = None,
) -> Evaluation:
    """The whole research loop on stored data: universe -> features, primary signals and labels
    -> walk-forward meta model (``settings.walkforward``, LightGBM seeded with ``seed``) ->
    OOS backtests primary vs filtered vs buy-and-hold -> run record + HTML report."""

    def stage(name: str) -> Callable[[int, int, str], None]:
        def update(done: int, total: int, item: str) -> None:
            if progress is not None:
                progress(name, done, total, item)

        return update

    universe = load_universe(store, exchange, symbols, market, timeframe, start_ms, end_ms)
    dataset = build_dataset(
        universe, settings.signal, settings.exit, progress=stage("features + labels")
    )
    meta = replace(settings.meta, seed=seed)
    folds = stage("walk-forward folds")
    wf = run_walkforward(
        dataset,
        settings.walkforward,
        meta,
        n_jobs=n_jobs,
        progress=lambda done, total: folds(done, total, f"fold {done}/{total}"),
    )
    return evaluate_walkforward(
        dataset,
        wf,
        backtest_config,
        runs_dir=runs_dir,
        wf_config=settings.walkforward,
        meta_params=meta,
        seed=seed,
        n_trials=n_trials,
        notes=notes,
        progress=stage("backtests + report"),
    )
