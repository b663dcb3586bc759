"""The simulated venue, a product feature used by replays and tests: a fake Binance exchange
(a real HTTP server on 127.0.0.1 serving candles and funding, with fault injection), its
market-data endpoints and IP weight limits, its signed order endpoints, and the bar-driven
USDT-M matching engine behind them (with its books, orders and fills); the spot order endpoints
and their matching engine (OCO lists, account balances: :mod:`atra.sim.spot_desk`,
:mod:`atra.sim.spot_engine`).

May import: :mod:`atra.adapters` (the order API contract it implements), :mod:`atra.obs`,
:mod:`atra.core`, :mod:`atra.errors`. Never the apps or the CLI.
"""
