"""Pure core: arrays and frames in, values out. No network, disk, environment, clock or logging.

Flat modules hold the pieces every app shares (types, frames, validation, labels, weights,
decision, sizing, costs, the look-ahead truncation test); subpackages hold the larger groups:
:mod:`atra.core.signals`, :mod:`atra.core.exits`, :mod:`atra.core.stats`,
:mod:`atra.core.features`, :mod:`atra.core.meta`, :mod:`atra.core.backtest`,
:mod:`atra.core.synthetic`.

May import: :mod:`atra.errors`, numpy, pandas, numba, scipy, LightGBM, scikit-learn and pydantic
(plug-in parameters). Never the I/O shell (adapters, sim, obs, config, the apps, the CLI), the
clock or the environment (``tests/unit/test_layering.py`` checks it on the source).
"""
