"""An example ATRA plug-in package: an RSI-confirmed breakout entry rule and two features.

Importing :mod:`atra_example_plugins.momentum` registers them (ATRA imports it from the config's
``[plugins] modules`` or from this package's ``atra.plugins`` entry point).
"""
