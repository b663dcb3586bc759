"""The research app: universe and dataset (features at the signal bar, kernel labels),
walk-forward meta model, out-of-sample evaluation, HTML report, run records, explanations of
journalled decisions, and the demo's research loop.

May import: :mod:`atra.adapters`, :mod:`atra.obs`, :mod:`atra.config`, :mod:`atra.core`,
:mod:`atra.errors`. Never the other apps (data, live), :mod:`atra.sim` or the CLI.
"""
