"""Out-of-sample evaluation of a walk-forward run: primary-only vs meta-filtered vs buy-and-hold.

Modules: :mod:`~atra.research.evaluation.oos` (the OOS span, its events and candles),
:mod:`~atra.research.evaluation.buy_hold` (the equal-weight buy-and-hold leg and its
liquidations), :mod:`~atra.research.evaluation.settings` (backtest settings from the config, what
was run, data label and hash), :mod:`~atra.research.evaluation.result` (the evaluation and each
leg's headline figures) and :mod:`~atra.research.evaluation.loop`
(:func:`~atra.research.evaluation.loop.evaluate_walkforward` and the whole research loop).

May import: :mod:`atra.adapters`, :mod:`atra.config`, :mod:`atra.core`, :mod:`atra.errors` and
the rest of :mod:`atra.research`.
"""
