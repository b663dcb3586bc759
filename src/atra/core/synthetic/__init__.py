"""The embedded synthetic market (``make demo``'s default data): its config
(:mod:`atra.core.synthetic.config`), the generator (:mod:`atra.core.synthetic.market`) and its
numba kernels (:mod:`atra.core.synthetic.market_nb`). Deterministic for a seed.

May import: :mod:`atra.core.types` and :mod:`atra.errors`; pure.
"""
