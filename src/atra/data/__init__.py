"""The data app: import files and Binance dumps into the store, download from the exchange,
check datasets (gaps reported, never filled) and resample exactly.

May import: :mod:`atra.adapters`, :mod:`atra.obs`, :mod:`atra.config`, :mod:`atra.core`,
:mod:`atra.errors`. Never the other apps (research, live), :mod:`atra.sim` or the CLI.
"""
