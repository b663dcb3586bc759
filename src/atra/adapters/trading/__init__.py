"""Signed orders on Binance USDT-M futures, serving :class:`atra.adapters.orders.OrderApi`.

- :mod:`atra.adapters.trading.trader`: :class:`BinanceTrader` (place, look up, cancel, list
  orders; positions; symbol rules) and the API credentials.
- :mod:`atra.adapters.trading.wire`: decimal rounding and formatting at the venue's precision,
  order parameters, and the parsing of order, position and filter JSON.

May import what :mod:`atra.adapters` may.
"""
