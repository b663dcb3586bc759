"""Trade exits through SL / TP1 / TP2 / time barrier, shared by labels and backtests.

:mod:`atra.core.exits.kernel` holds the numba exit kernel (``simulate_exit_nb``, its per-event
loop and the reason / status codes); :mod:`atra.core.exits.api` its typed API (``ExitSpec``,
``EventArrays``, ``ExitResult``, ``run_exits``, ``simulate_exits``).

May import: :mod:`atra.errors`, numpy, pandas and numba; pure.
"""
