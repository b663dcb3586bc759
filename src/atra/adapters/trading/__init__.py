"""Signed orders on Binance USDT-M futures, serving :class:`atra.adapters.orders.OrderApi`.

- :mod:`atra.adapters.trading.trader`: :class:`BinanceTrader` (place, look up, cancel, list
  orders, regular ones on ``/fapi/v1/order`` and conditional ones on the Algo Order API;
  positions; symbol rules).
- :mod:`atra.adapters.trading.signed`: signed requests of one account and its API credentials.
- :mod:`atra.adapters.trading.wire`: decimal rounding and formatting at the venue's precision,
  order parameters, and the parsing of order, position and filter JSON.
- :mod:`atra.adapters.trading.algo_wire`: Algo Order API parameters and answers.

May import what :mod:`atra.adapters` may.
"""
