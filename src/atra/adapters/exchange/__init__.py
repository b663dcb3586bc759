"""Market data from exchanges: the :class:`~atra.adapters.exchange.client.ExchangeClient`
protocol ATRA codes against, and Binance spot / USDT-M futures behind it.

- :mod:`atra.adapters.exchange.client`: the protocol, :class:`BinanceClient` (klines, funding,
  premium index, exchangeInfo), page planning.
- :mod:`atra.adapters.exchange.transport`: one HTTP connection pool, the host's rate limiter,
  timeouts, retries and the mapping of HTTP answers to ATRA errors.
- :mod:`atra.adapters.exchange.wire`: request weights and the parsing of Binance JSON.

May import what :mod:`atra.adapters` may.
"""
