"""Backtests on the exit kernel: :mod:`atra.core.backtest.engine` (``run_backtest``, shared
equity across symbols), its inputs and results (:mod:`~atra.core.backtest.inputs`,
:mod:`~atra.core.backtest.results`), the numba portfolio kernels (``*_nb``) and WORKLOAD.md's
canonical benchmark backtest (:mod:`atra.core.backtest.workload`).

May import: the rest of :mod:`atra.core` (exits, signals, sizing, costs, stats, types) and
:mod:`atra.errors`; pure.
"""
