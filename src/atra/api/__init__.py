"""The notebook API behind ``import atra``: thin wrappers over the research pipeline.

:mod:`atra.api.candles` loads candles (a pandas frame, a Parquet file or the Parquet store)
into validated :class:`~atra.api.candles.Candles` and groups them into a research universe;
:mod:`atra.api.workflow` runs the steps on them: features, primary signals, triple-barrier
labels and meta-labels, the walk-forward meta model, the backtest, statistics and the run
report. Every step calls the function the CLI uses (:mod:`atra.research`, :mod:`atra.core`);
nothing is implemented twice. The package root exposes these names lazily, so ``import atra``
stays light.

Sits at the CLI's level. May import: the research app (:mod:`atra.research`),
:mod:`atra.adapters`, :mod:`atra.obs`, :mod:`atra.config`, :mod:`atra.core`,
:mod:`atra.errors` and the package root. Nothing imports it but the root and the CLI.
"""
