"""I/O shell to real things: the exchange client and its shared rate limiter, the signed order
client and the order API contract, the Parquet store, importers of Binance dumps and files,
readers of point-in-time series, the SQLite journal, the model registry (artifacts) and
the loader of the user's plug-ins.

May import: :mod:`atra.core`, :mod:`atra.obs`, :mod:`atra.config`, :mod:`atra.errors`. Never the
apps (data, research, live), :mod:`atra.sim` or the CLI.
"""
