"""Performance statistics from an equity curve (or per-bar returns) and a trade list.

:mod:`atra.core.stats.returns` holds the return statistics (annualised Sharpe, Sortino, CAGR,
Calmar, drawdowns, PSR / DSR); :mod:`atra.core.stats.trades` the trade records and trade
statistics (win rate, profit factor, costs, per symbol); :mod:`atra.core.stats.report` the full
report of a backtest or run (:func:`~atra.core.stats.report.compute_stats`: both of the above
plus exposure, turnover and costs). Every result's ``to_dict()`` is strict JSON (NaN as
``None``, ``±inf`` as ``"inf"`` / ``"-inf"``).

May import: :mod:`atra.core.types`, :mod:`atra.errors`, numpy and pandas; pure.
"""
