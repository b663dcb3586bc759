"""Signed orders on Binance USDT-M futures and spot, serving
:class:`atra.adapters.orders.OrderApi`.

- :mod:`atra.adapters.trading.trader`: :class:`BinanceTrader` (place, look up, cancel, list
  orders, regular ones on ``/fapi/v1/order`` and conditional ones on the Algo Order API;
  positions; symbol rules).
- :mod:`atra.adapters.trading.signed`: signed requests of one account and its API credentials,
  and what both traders share: the placement that never sends a POST twice, exchangeInfo.
- :mod:`atra.adapters.trading.wire`: decimal rounding and formatting at the venue's precision,
  order parameters, and the parsing of order, position and filter JSON (the parameters, list
  and exchangeInfo readers serve spot too).
- :mod:`atra.adapters.trading.algo_wire`: Algo Order API parameters and answers.
- :mod:`atra.adapters.trading.spot_trader`: :class:`SpotTrader`, the same over a Binance spot
  account (``/api/v3``: MARKET / LIMIT orders, SELL OCO lists, account balances, spot filters).
- :mod:`atra.adapters.trading.spot_wire`: spot order and OCO parameters, spot order, order list,
  account and filter JSON.

May import what :mod:`atra.adapters` may.
"""
