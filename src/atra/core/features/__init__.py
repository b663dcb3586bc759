"""Features: the registry (:mod:`atra.core.features.registry`: definitions, families, warm-up,
``bar_features``), the frame builder (:mod:`atra.core.features.frame`), the catalog of built-ins
(:mod:`atra.core.features.catalog`) and the point-in-time joins of side series: funding, basis,
cross-asset, external (:mod:`atra.core.features.sources`).

May import: the rest of :mod:`atra.core` below it (types, frames) and :mod:`atra.errors`; pure.
"""
