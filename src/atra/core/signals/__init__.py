"""The primary momentum model: rule-based entries with SL / TP1 / TP2 / horizon barriers.

:mod:`atra.core.signals.spec` holds its parameters (``SignalSpec``, ``BarrierMode``) and its
trade proposal (``Signal``); :mod:`atra.core.signals.rules` the entry rules: the built-in ones
(``Rule``) and the registry of the user's plug-in rules (``@atra.rule``);
:mod:`atra.core.signals.candles` the candle columns as arrays (frame contract, gap-free
segments, bar length) and the indicators (EMA, Wilder's ATR); :mod:`atra.core.signals.events`
the rules that turn candles into signal events.

May import: :mod:`atra.core.types`, :mod:`atra.errors`, numpy, pandas and pydantic (plug-in
parameters); pure.
"""
