"""The live app: the asyncio signal loop and its settings, candle feed, portfolio and bar trader,
the per-bar deciders, the ledger (realised cash and funding), the paper broker, the exchange
broker with its bookkeeping and order planning (and the spot broker: OCO exits), replays of
history through the loop, and the risk guards.

May import: :mod:`atra.sim` (replays run against the simulated venue), :mod:`atra.adapters`,
:mod:`atra.obs`, :mod:`atra.config`, :mod:`atra.core`, :mod:`atra.errors`. Never the other apps
(data, research) or the CLI.
"""
