"""Live sources of the external daily series (:mod:`atra.core.features.external`): one module
per source (:mod:`.fear_greed` for alternative.me, :mod:`.coinmetrics` for Coin Metrics'
community API), their shared HTTP rules (:mod:`.http`: timeouts, retries with backoff) and the
:class:`~atra.adapters.sources.refresher.SeriesRefresher` a live loop calls once per cycle.

May import: :mod:`atra.adapters` (the clock and one-line helpers), :mod:`atra.obs`,
:mod:`atra.core`, :mod:`atra.errors`.
"""
