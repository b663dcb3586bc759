"""The spot broker: real orders on a Binance spot account, long only, managed bar by bar.

:class:`SpotBroker` is :class:`atra.live.execution.ExchangeBroker` with the exits spot allows.
Spot has no reduce-only orders, no close-position stops and no positions; what it has is the
OCO order list: a LIMIT_MAKER take-profit above the price and a STOP_LOSS below it, one
quantity for both, one cancelling the other. So:

* **entry**: a MARKET BUY at the entry bar's open (as on futures: same client id scheme, the
  same look-up of an order whose answer was lost, never a second order). A short decision is
  refused (``order_rejected``: spot is long only here, no margin shorts), and so is an entry
  whose notional at the reference price is below the symbol's NOTIONAL / MIN_NOTIONAL filter.
* **protection**: one SELL OCO as soon as the entry has filled, for the quantity bought (never
  more: a balance of the base asset ATRA did not buy is not sold): above, ``tp1`` a
  LIMIT_MAKER at ``P + tp1_dist``; below, ``sl`` a STOP_LOSS at ``P - sl_dist``; the list's
  client id is the position's ``oco`` id, each leg has the id the futures order of its kind
  would have. When one leg fills the venue expires the other.
* **time barrier**: at the open of bar ``entry + horizon_bars`` the OCO is cancelled (one
  cancel ends the list) and a MARKET SELL (``time``) sells the remainder.
* **stop already beyond**: an OCO refused because its stop would trigger at once (-2010 "Stop
  price would trigger immediately.") is the kernel's gap-through fill: the holding is sold at
  market right away (kind ``sl``). Any other refusal, or a leg the venue reports cancelled /
  expired while the holding is open: logged, journalled, and the remainder sold at market
  (``close``), never re-placed.
* **reconciliation**: spot's "position" is the base asset's balance (free + locked). At
  :meth:`SpotBroker.recover` it is compared with what the journal says ATRA holds: more at the
  venue is a balance ATRA does not own (``foreign_balance``: reported, never sold, never
  booked), less is a ``position_mismatch``.

Limits, said plainly: the STOP_LOSS leg is a market order once the last price trades at the
stop, so it fills at the stop or worse (slippage, gaps: the backtest charges ``slippage_bps``
there, a thin book can cost more); the LIMIT_MAKER leg never takes liquidity (it fills at its
price or better, maker fee). An OCO has one quantity, so a TP1 partial with a TP2 and a
break-even move cannot be one list: this broker requires ``tp1_fraction == 1`` (a
:class:`~atra.errors.ConfigError` otherwise). Fees taken in the base asset make the holding
smaller than the quantity bought: pay spot fees in BNB (Binance's "use BNB for fees"), or the
OCO for the full quantity is refused for balance. A partial fill of the take-profit makes Binance
expire the stop leg: the broker sees the expired leg at the next bar close and sells the rest at
market (the fake exchange fills whole orders only).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from atra.adapters.orders import AssetBalance, OrderApi, OrderRequest, OrderState
from atra.adapters.trading.spot_wire import OcoRequest, SpotRules
from atra.core.exits.api import ExitSpec
from atra.core.types import Timeframe
from atra.errors import ConfigError, ExchangeError, OrderRejected
from atra.live.bookkeeping import error_text, order_event
from atra.live.execution import ExchangeBroker
from atra.live.order_plan import QTY_TOL, Track, round_step_nearest
from atra.live.paper import OPEN, BrokerUpdate, client_order_id
from atra.obs import get_logger

__all__ = ["OCO", "SpotBroker", "SpotOrderApi"]

OCO = "oco"
"""The kind whose client id names a position's OCO order list."""

log = get_logger("atra.live.spot_execution")


class SpotOrderApi(OrderApi, Protocol):
    """What a spot venue offers the spot broker: the order API plus OCO lists, balances and
    the spot filters (:class:`atra.adapters.trading.spot_trader.SpotTrader`)."""

    async def place_oco(self, oco: OcoRequest) -> tuple[OrderState, OrderState]: ...

    async def balances(self) -> Sequence[AssetBalance]: ...

    async def spot_rules(self, symbol: str) -> SpotRules: ...

    async def base_asset(self, symbol: str) -> str: ...


class SpotBroker(ExchangeBroker):
    """Real spot orders for one strategy's long positions (see the module docstring).
    ``symbols``: the symbols traded (their base balances are reconciled at recovery)."""

    def __init__(
        self,
        api: SpotOrderApi,
        spec: ExitSpec,
        *,
        strategy: str,
        run_id: str,
        timeframe: Timeframe,
        clock: Callable[[], float],
        symbols: Sequence[str] = (),
    ) -> None:
        if spec.tp1_fraction < 1.0:
            raise ConfigError(
                f"spot orders: exits.tp1_fraction must be 1.0 (one OCO: take-profit + stop),"
                f" got {spec.tp1_fraction}; a TP1 partial with TP2 is futures only for now"
            )
        super().__init__(
            api, spec, strategy=strategy, run_id=run_id, timeframe=timeframe, clock=clock
        )
        self.spot: SpotOrderApi = api
        self.symbols = tuple(symbols)
        self._reported: set[tuple[str, float]] = set()

    # ---- entry -------------------------------------------------------------------------------

    async def _place_entry(
        self, track: Track, out: BrokerUpdate, created_ms: int, next_open: int
    ) -> None:
        pos = track.pos
        if pos.side < 0:
            self.books.reject_entry(track, out, created_ms, "spot is long only: no margin shorts")
            return
        try:
            rules = await self.spot.spot_rules(pos.symbol)
        except OrderRejected as exc:
            self.books.reject_entry(track, out, created_ms, str(exc))
            return
        price = pos.entry_price or 0.0
        if price > 0.0 and pos.quantity * price < rules.min_notional:
            error = f"notional {pos.quantity * price:.8g} below the minimum {rules.min_notional}"
            self.books.reject_entry(track, out, created_ms, error)
            return
        await super()._place_entry(track, out, created_ms, next_open)

    # ---- exits -------------------------------------------------------------------------------

    async def _place_protective(
        self, track: Track, out: BrokerUpdate, plan: dict[str, OrderRequest], desired: list[str]
    ) -> bool:
        """The ``sl`` and ``tp1`` legs as one OCO (placed when either is not known yet: a list
        the venue already has is returned by its legs' client ids, never placed twice)."""
        if all(kind in track.states for kind in desired):
            return True
        pos = track.pos
        take, stop = plan["tp1"], plan["sl"]
        assert take.price is not None  # plan_orders sets it
        assert stop.stop_price is not None
        rules = await self._rules_of(pos.symbol)
        qty = round_step_nearest(min(take.quantity or 0.0, self.remaining(pos)), rules.step_size)
        oco = OcoRequest(
            pos.symbol,
            quantity=qty,
            take_price=take.price,
            stop_price=stop.stop_price,
            take_client_order_id=take.client_order_id,
            stop_client_order_id=stop.client_order_id,
            list_client_order_id=client_order_id(self.run_id, pos.symbol, pos.signal_time_ms, OCO),
        )
        try:
            legs = await self._place_oco(oco)
        except OrderRejected as exc:
            if "would trigger immediately" in str(exc).lower():
                order_event(log.warning, "stop_would_trigger", pos.symbol,
                            oco.stop_client_order_id, "sl", "rejected",
                            price=oco.stop_price)  # fmt: skip
                await self._market_close(track, out, "sl")
            else:
                self.books.exit_refused(out, pos, "protective_order_rejected", "sl", qty, exc)
                await self._market_close(track, out, "close")
            return False
        for kind, st in zip(("tp1", "sl"), legs, strict=True):
            self.books.note(out, track, kind, st)
        return True

    async def _place_oco(self, oco: OcoRequest) -> tuple[OrderState, OrderState]:
        """Place ``oco``; a lost answer is retried once (the venue's list is found by its
        legs' client ids instead of a second list)."""
        try:
            return await self.spot.place_oco(oco)
        except OrderRejected:
            raise
        except ExchangeError as exc:
            order_event(log.warning, "order_outcome_unknown", oco.symbol,
                        oco.list_client_order_id, OCO, "unknown",
                        error=error_text(exc))  # fmt: skip
            return await self.spot.place_oco(oco)

    # ---- reconciliation ----------------------------------------------------------------------

    async def recover(self) -> BrokerUpdate:
        """As on futures (pending entries, fills while down, protection put back, the time
        barrier), then the base-asset balances against the journal
        (:meth:`reconcile_balances`) instead of a position endpoint."""
        out = BrokerUpdate()
        now_bar = self.books.bar(self.books.now_ms())
        for pos in self.positions():
            await self._advance(self.books.track(pos.position_id), out, now_bar)
        await self.reconcile_balances()
        await self._report_resting()
        return out

    async def reconcile_balances(self) -> dict[str, float]:
        """Compare each traded symbol's base balance (free + locked) with the quantity the
        journal says ATRA holds; return ``{symbol: foreign quantity}`` (the excess, left
        alone). A shortfall is logged ``position_mismatch``; a failed read is logged only."""
        held: dict[str, float] = {}
        for pos in self.positions():
            if pos.status == OPEN:
                held[pos.symbol] = held.get(pos.symbol, 0.0) + self.remaining(pos)
        symbols = sorted(set(self.symbols) | set(held))
        try:
            balances = {b.asset: b.balance for b in await self.spot.balances()}
            bases = {s: await self.spot.base_asset(s) for s in symbols}
        except ExchangeError as exc:
            log.warning("balances_unavailable", error=error_text(exc))
            return {}
        foreign: dict[str, float] = {}
        for symbol in symbols:
            ours, at_venue = held.get(symbol, 0.0), balances.get(bases[symbol], 0.0)
            tol = QTY_TOL * max(1.0, ours)
            if at_venue < ours - tol:
                order_event(log.warning, "position_mismatch", symbol, None, None, OPEN,
                            qty=at_venue,
                            error=f"journal holds {ours}, the account {at_venue}")  # fmt: skip
            elif at_venue > ours + tol:
                excess = at_venue - ours
                foreign[symbol] = excess
                if (symbol, excess) not in self._reported:
                    self._reported.add((symbol, excess))
                    order_event(log.warning, "foreign_balance", symbol, None, None, "unmanaged",
                                qty=excess, asset=bases[symbol])  # fmt: skip
        return foreign
