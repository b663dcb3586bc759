"""Run records: every backtest / walk-forward run written so that two runs can be proven equal.

A run directory ``root/<run_id>/`` holds

- ``run.json``: the :class:`~atra.research.runrecord.record.RunRecord` (config hash, data
  hash, code version, seed, timeframe, the annualisation sentence, one trades SHA-256 per leg,
  the data label, what was run as a :class:`~atra.research.runrecord.setup.RunSetup`, and the
  liquidations of legs or of their holdings);
- ``metrics.json``: per leg, :func:`atra.core.stats.report.compute_stats` as a dict
  (annualisation factor, PSR, DSR with ``n_trials``) plus the realised costs per year and
  ``blocked_by``: the leg's signals, those taken and the rest by what blocked them (the meta
  model, each risk guard, the sizing);
- ``trades_<leg>.csv`` for every leg with trades, ``equity.csv`` (``open_time_ms`` + one
  column per leg) and ``oos_predictions.csv`` when given.

The run id is a content id, not a timestamp: the first 12 hex digits of a SHA-256 over the
config hash, data hash, code version, seed, timeframe, data label, ``n_trials`` and every leg's
trades and equity hashes. The same run gets the same id; writing it again is a no-op.

Modules: :mod:`~atra.research.runrecord.legs` (the legs and their liquidations),
:mod:`~atra.research.runrecord.blocked` (signals counted by what blocked them),
:mod:`~atra.research.runrecord.setup` (what was run), :mod:`~atra.research.runrecord.record`
(``run.json`` and a run read back), :mod:`~atra.research.runrecord.directory` (writing and
reading run directories), :mod:`~atra.research.runrecord.hashes` (config, frame, trade and
equity hashes, the code version) and :mod:`~atra.research.runrecord.metrics` (the figures of a
leg).

May import: :mod:`atra.core`, :mod:`atra.errors` and the package root (its version).
"""
