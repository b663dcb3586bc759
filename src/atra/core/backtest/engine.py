"""Portfolio backtests over many symbols, on the exit kernel; typed API over numba loops.

Two entry points:

:func:`run_backtest` — the research / live-replay backtest (kernel
:func:`atra.core.backtest.portfolio_nb.portfolio_nb`). Shared equity across symbols.

* Events (one row per primary signal; the frame of :func:`atra.core.signals.events.generate_events`,
  possibly with a meta-model probability and a ``take`` decision column): ``symbol, t, side,
  sl_dist, tp1_dist, tp2_dist, horizon_bars``; ``t`` is the row of the signal bar in the
  symbol's candles. Rows whose decision column (``take`` by default) is False are not traded,
  so the same frame runs primary-only (no ``take`` column, or ``decision_column=None``) or
  meta-filtered.
* Entry at the next bar's open (``t + 1``, moved adversely by the slippage); the exit legs
  (SL / TP1 partial / TP2 / break-even / time barrier) come from
  :func:`atra.core.exits.kernel.simulate_exit_nb`, so a trade exits exactly as its label says. A
  trade whose barriers do not resolve before its symbol's data end is closed at the last close
  (reason ``END``).
* Sizing from what the decision at the signal bar ``t`` knows: the equity marked at ``t``'s
  close and the reference price ``R = close[t]`` moved adversely by the slippage (the fill
  at ``open[t + 1]`` is not known when the order's quantity is set; the live loop sizes the
  same way). Fixed-fractional risk (2% default) or ``kelly_multiplier`` x Kelly from a
  per-event probability column and the TP1/SL payoff, never above the 2% cap
  (:data:`atra.core.sizing.RISK_FRACTION_CAP`), and notional ``quantity x R`` <=
  ``sizing.max_leverage`` x equity. **Planned risk** of a trade (``risk_amount``) =
  ``quantity x risk_per_unit`` with stop ``S = R - side x sl_dist``: long
  ``R(1 + f_entry) - S(1 - slip)(1 - f_stop)``, short ``S(1 + slip)(1 + f_stop) - R(1 -
  f_entry)`` (the loss at the stop with both fees and the stop fill's slippage). The loss a
  stopped trade realises differs from it by the gap between ``close[t]`` and ``open[t + 1]``
  (none on most 24/7 bars, where the next open is the last close).
* Risk guards, after the sizing (a size the sizing refuses is ``blocked_by = "sizing"``, as
  live), with the live guards' own rule (:func:`atra.core.risk.entry_guard_nb`) in their
  order: the daily loss (equity at the signal bar's close minus the equity at 00:00 UTC of
  that bar's day at or below ``-max_daily_loss`` x the latter), ``max_positions`` open at once,
  ``max_per_symbol``, and the gross notional (open positions at their last close + the new one
  at ``R``) <= ``max_gross_leverage`` x equity. An event that breaks one is not traded; its
  ``outcome`` says why and its ``blocked_by`` names the guard as the live journal does
  (``daily_loss``, ``max_positions``, ``max_per_symbol``, ``leverage``). The kill switch is
  live-only (there is no kill switch file in the past): the backtest never trips it, and a live
  block by it is journalled with its reason.
* Costs: ``CostModel`` taker fee on entry, stop, time and liquidation fills, maker fee on
  take-profits when ``tp_maker`` (else taker); slippage on market fills (entry, stops, time
  exit). Funding on perpetual symbols from real funding history: at each funding time ``ft``
  with ``entry_time < ft <= exit_time`` (times = bar open times of the entry / exit bars) a
  position pays ``side x quantity_open x mark x rate``, ``mark`` = the open of the symbol's
  latest bar at or before ``ft`` (positive rate: longs pay, shorts receive).
* Margin interest of spot shorts (``BacktestConfig.spot_borrow_rate_per_hour``): a short on a
  spot symbol borrows the asset and pays ``quantity_open x mark x rate`` at its entry and at
  every full hour after it while it is open (to a time exit's open, else to the close of its
  exit bar), ``mark`` = the open of the symbol's latest bar at or before that hour; trade
  column ``borrow``. Longs and perpetuals pay none.
* Leverage (perps): isolated margin ``notional / leverage``; liquidation price long
  ``P(1 - 1/L)/(1 - mmr)``, short ``P(1 + 1/L)/(1 + mmr)``, checked on each bar's range from
  the entry bar to the kernel's exit bar (see ``first_liquidation_nb``). A liquidation ends the
  trade (or its remainder after a TP1 partial): the leg loses its margin plus a taker fee at the
  liquidation price; reason ``LIQ``.
* Equity marked at every close of the common time grid (the union of the symbols' open
  times): realised P&L plus open positions at their symbol's last close.

:func:`run_workload` — WORKLOAD.md exactly (:mod:`atra.core.backtest.workload`, re-exported here).

Config and result types are in :mod:`atra.core.backtest.results`, the candle / funding arrays in
:mod:`atra.core.backtest.inputs`; every public name stays importable from this module.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt
import pandas as pd

from atra.core.backtest.inputs import (
    F64,
    I64,
    CandleBundle,
    Columns,
    bundle_candles,
    checked_columns,
    funding_arrays,
)
from atra.core.backtest.portfolio_nb import portfolio_nb
from atra.core.backtest.position_nb import EV_NO_ENTRY_BAR, EV_TAKEN
from atra.core.backtest.results import (
    ALL_REASON_NAMES,
    BLOCKED_BY,
    EVENT_COLUMNS,
    NOT_TAKEN_DECISION,
    OUTCOME_NAMES,
    TRADE_COLUMNS,
    BacktestConfig,
    BacktestResult,
    categorical,
)
from atra.core.backtest.workload import WorkloadParams, WorkloadResult, run_workload
from atra.core.exits.api import event_arrays
from atra.core.signals.candles import infer_step_ms
from atra.core.types import Market, Timeframe
from atra.errors import DataError

__all__ = [
    "ALL_REASON_NAMES",
    "EVENT_COLUMNS",
    "F64",
    "I64",
    "NOT_TAKEN_DECISION",
    "OUTCOME_NAMES",
    "TRADE_COLUMNS",
    "BacktestConfig",
    "BacktestResult",
    "CandleBundle",
    "Columns",
    "WorkloadParams",
    "WorkloadResult",
    "bundle_candles",
    "checked_columns",
    "run_backtest",
    "run_workload",
]


def run_backtest(
    candles: Mapping[str, pd.DataFrame],
    events: pd.DataFrame,
    config: BacktestConfig | None = None,
    *,
    funding: Mapping[str, pd.DataFrame] | None = None,
    markets: Mapping[str, Market] | None = None,
    timeframe: Timeframe | None = None,
) -> BacktestResult:
    """Backtest ``events`` on ``candles`` (``{symbol: frame}``) with shared equity.

    ``markets``: the market of each symbol (default: PERP for the symbols in ``funding``, SPOT
    for the others); a perpetual needs its funding frame (``funding_time`` int64 ms,
    ``funding_rate``). ``timeframe`` (default: inferred from the bar spacing) annualises the
    statistics and sets the bar length of the margin interest. See the module docstring for
    the rules.
    """
    cfg = config if config is not None else BacktestConfig()
    fund = dict(funding) if funding is not None else {}
    cb = bundle_candles(candles)
    missing = [c for c in EVENT_COLUMNS if c not in events.columns]
    if missing:
        raise DataError(f"events: missing column(s) {', '.join(missing)}")
    perp = np.array(
        [
            (
                markets[s]
                if markets is not None and s in markets
                else (Market.PERP if s in fund else Market.SPOT)
            )
            is Market.PERP
            for s in cb.symbols
        ],
        dtype=np.bool_,
    )
    n_ev = len(events)
    ev_sym_names = events["symbol"].astype(str).to_numpy()
    unknown = sorted(set(ev_sym_names.tolist()) - set(cb.symbols))
    if unknown:
        raise DataError(f"events: symbol {unknown[0]!r} has no candles")
    sym_index = {s: k for k, s in enumerate(cb.symbols)}
    ev_sym = np.fromiter((sym_index[s] for s in ev_sym_names), np.int64, n_ev)
    t = events["t"].to_numpy()
    if n_ev and not np.issubdtype(t.dtype, np.integer):
        raise DataError(f"events: column t has dtype {t.dtype}, expected integer bar indices")
    t = t.astype(np.int64)
    arrays = event_arrays(
        t + 1,
        events["side"].to_numpy(),
        events["sl_dist"].to_numpy(),
        events["tp1_dist"].to_numpy(),
        events["tp2_dist"].to_numpy(),
        events["horizon_bars"].to_numpy(),
    )
    n_bars = cb.end[ev_sym] - cb.start[ev_sym]
    bad = np.flatnonzero((t < 0) | (t >= n_bars))
    if bad.size:
        row = int(bad[0])
        raise DataError(
            f"events row {row}: t = {t[row]} is not a bar of {ev_sym_names[row]} "
            f"(0..{n_bars[row] - 1})"
        )
    prob = np.full(n_ev, np.nan)
    if cfg.probability_column is not None:
        if cfg.probability_column not in events.columns:
            raise DataError(f"events: missing probability column {cfg.probability_column}")
        prob = events[cfg.probability_column].to_numpy(dtype=np.float64)
        badp = np.flatnonzero(~((prob >= 0.0) & (prob <= 1.0)))
        if badp.size:
            row = int(badp[0])
            raise DataError(
                f"events row {row}: {cfg.probability_column} = {prob[row]}, "
                "expected a probability in [0, 1]"
            )
    decide = np.ones(n_ev, np.bool_)
    if cfg.decision_column is not None and cfg.decision_column in events.columns:
        col = events[cfg.decision_column]
        if not pd.api.types.is_bool_dtype(col.dtype):
            raise DataError(
                f"events: column {cfg.decision_column} has dtype {col.dtype}, expected bool"
            )
        decide = col.to_numpy(dtype=np.bool_)
    has_entry = t + 1 < n_bars
    use = np.flatnonzero(decide & has_entry)
    entry_row = cb.start[ev_sym] + t + 1
    bar_grid = cb.bar_grid()
    order = use[np.argsort(bar_grid[entry_row[use]], kind="stable")]
    ft, fr, fb, fs, fe = funding_arrays(cb, perp, fund)
    if timeframe is not None:
        tf = timeframe
    elif cb.grid_time.shape[0] > 1:
        tf = Timeframe.from_ms(infer_step_ms(cb.grid_time))
    else:
        tf = Timeframe.H1
    sz = cfg.sizing
    costs = cfg.costs
    out = portfolio_nb(
        cb.open,
        cb.high,
        cb.low,
        cb.close,
        cb.open_time,
        bar_grid,
        cb.start,
        cb.end,
        perp,
        cb.grid_time,
        ft,
        fr,
        fb,
        fs,
        fe,
        ev_sym[order],
        entry_row[order],
        arrays.side[order],
        arrays.sl_dist[order],
        arrays.tp1_dist[order],
        arrays.tp2_dist[order],
        arrays.horizon_bars[order],
        prob[order],
        float(cfg.initial_equity),
        float(sz.risk_fraction),
        float(sz.risk_fraction_cap),
        float(sz.kelly_multiplier),
        float(sz.max_leverage),
        float(cfg.max_gross_leverage),
        float(cfg.leverage),
        float(cfg.maintenance_margin_rate),
        int(cfg.max_positions),
        int(cfg.max_per_symbol),
        float(cfg.max_daily_loss),
        float(cfg.tp1_fraction),
        bool(cfg.move_to_be),
        float(costs.taker_fee_rate),
        float(costs.maker_fee_rate if cfg.tp_maker else costs.taker_fee_rate),
        float(costs.taker_fee_rate),
        float(costs.slippage_bps) / 1e4,
        float(cfg.spot_borrow_rate_per_hour),
        int(tf.ms),
    )
    (
        outcome,
        qty,
        eq_entry,
        risk,
        entry_px,
        lret,
        b1,
        p1,
        f1,
        c1,
        b2,
        p2,
        f2,
        c2,
        fees,
        slip,
        fund_paid,
        borrow_paid,
        pnl,
        label,
        equity,
        gross,
        n_open,
    ) = out

    outcome_all = np.full(n_ev, NOT_TAKEN_DECISION, dtype=object)
    outcome_all[~has_entry] = OUTCOME_NAMES[EV_NO_ENTRY_BAR]
    outcome_all[order] = [OUTCOME_NAMES[int(c)] for c in outcome]
    events_out = events.copy()
    events_out["outcome"] = pd.Categorical(
        outcome_all, categories=[*OUTCOME_NAMES.values(), NOT_TAKEN_DECISION]
    )
    # who blocked each event: the decision stage's own name where its column said no
    blocked: npt.NDArray[np.object_] = np.full(n_ev, NOT_TAKEN_DECISION, dtype=object)
    if "blocked_by" in events.columns:
        stage = events["blocked_by"].to_numpy(dtype=object)
        named = ~pd.isna(stage)
        blocked[named] = stage[named]
    blocked[~has_entry] = BLOCKED_BY[EV_NO_ENTRY_BAR]
    blocked[order] = [BLOCKED_BY.get(int(c)) for c in outcome]
    events_out["blocked_by"] = pd.Series(blocked, index=events.index, dtype=object)

    taken = np.flatnonzero(outcome == EV_TAKEN)
    rows = order[taken]
    sym = ev_sym[rows]
    base = cb.start[sym]
    has2 = b2[taken] >= 0
    fb1 = b1[taken]
    fb2 = np.where(has2, b2[taken], fb1)
    exit_price = np.where(has2, p2[taken], p1[taken])
    final_code = np.where(has2, c2[taken], c1[taken])
    names = list(ALL_REASON_NAMES.values())

    def reasons(codes: npt.NDArray[np.int8]) -> pd.Categorical:
        return categorical(codes, names)

    leg2_bar = pd.array(np.where(has2, b2[taken] - base, 0), dtype="Int64")
    leg2_bar[~has2] = pd.NA
    q = qty[taken]
    trades = pd.DataFrame(
        {
            "symbol": pd.Series(np.asarray(cb.symbols, dtype=object)[sym], dtype=object),
            "side": arrays.side[rows],
            "event_row": events.index.to_numpy()[rows],
            "signal_time_ms": cb.open_time[base + t[rows]],
            "entry_bar": t[rows] + 1,
            "entry_time_ms": cb.open_time[base + t[rows] + 1],
            "entry_price": entry_px[taken],
            "exit_bar": fb2 - base,
            "exit_time_ms": cb.open_time[fb2],
            "exit_price": exit_price,
            "reason": reasons(final_code),
            "leg1_bar": fb1 - base,
            "leg1_price": p1[taken],
            "leg1_fraction": f1[taken],
            "leg1_reason": reasons(c1[taken]),
            "leg2_bar": leg2_bar,
            "leg2_price": p2[taken],
            "leg2_fraction": f2[taken],
            "leg2_reason": reasons(c2[taken]),
            "quantity": q,
            "notional": q * entry_px[taken],
            "pnl": pnl[taken],
            "fees": fees[taken],
            "slippage": slip[taken],
            "funding": fund_paid[taken],
            "borrow": borrow_paid[taken],
            "risk_amount": risk[taken],
            "equity_at_entry": eq_entry[taken],
            "label": label[taken],
            "label_ret": lret[taken],
        }
    )
    return BacktestResult(
        trades=trades,
        events=events_out,
        open_time_ms=cb.grid_time,
        equity=equity,
        gross_leverage=gross,
        n_open=n_open,
        initial_equity=float(cfg.initial_equity),
        timeframe=tf,
    )
