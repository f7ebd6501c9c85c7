"""The strategy protocol: typed events in, orders out, no venue in sight.

A strategy subclasses :class:`Strategy` and overrides only the callbacks it needs; the
engine (backtest) or a paper/live venue calls them in event-time order with a
:class:`Context`. The context is a protocol, so the simulator and a live venue each
implement it; a strategy imports nothing from :mod:`perpdesk.sim` or any venue.

Callbacks (all no-ops by default; a venue may skip building events for callbacks a
strategy does not override — see :func:`overridden`):

- ``on_start(ctx)`` / ``on_end(ctx)`` — once, before the first and after the last event;
- ``on_bar(ctx, bar)`` — at the bar's close (``bar.close_ts_ns``), never at its open;
- ``on_trade``, ``on_book_top``, ``on_mark_price``, ``on_open_interest`` — market data;
- ``on_funding(ctx, settlement)`` — after the venue settled it on the account;
- ``on_timer(ctx, timer)`` — a timer set with ``ctx.set_timer`` / ``ctx.set_interval``;
- ``on_fill(ctx, fill)`` — an execution of one of the strategy's orders (or a liquidation);
- ``on_reject(ctx, order, reason)`` — an order the venue refused or expired.

Point-in-time: inside a callback ``ctx.now_ns`` is the event's time; everything the
context shows is as of the events delivered so far.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable

from perpdesk.domain import (
    Bar,
    BookTop,
    Fill,
    FundingSettlement,
    Instrument,
    MarkPrice,
    OpenInterest,
    Order,
    OrderType,
    PositionSide,
    Side,
    TimeInForce,
    Timer,
    Trade,
)


@runtime_checkable
class Context(Protocol):
    """What a strategy may see and do. Quantities in base units, prices in USD.

    Every order method returns the order's ``client_order_id`` (unique per run: generated
    deterministically as ``<strategy_id>-<n>`` unless given). Submission never raises for
    a business reason: a refused order comes back through ``on_reject`` with the reason
    (for static checks — lot/tick size, duplicate id, position side — before the order
    method returns; for venue checks — margin, reduce-only, post-only — on arrival).
    """

    @property
    def now_ns(self) -> int:
        """The clock: the time of the event being handled (ns since epoch, UTC)."""
        ...

    @property
    def instruments(self) -> Mapping[str, Instrument]:
        """Tradable instruments by engine symbol (spot legs as ``BTCUSDT.SPOT``)."""
        ...

    @property
    def portfolio(self) -> Any:
        """A read-only view of the account (``Account.view()``: cash, equity, positions)."""
        ...

    def position(self, symbol: str, position_side: PositionSide = PositionSide.BOTH) -> Any:
        """The position in ``symbol`` (``qty_base`` signed Decimal, ``entry_price`` …)."""
        ...

    def last_price(self, symbol: str) -> float:
        """Last traded price (or last bar close) of ``symbol`` known now; NaN if none."""
        ...

    def market(
        self,
        symbol: str,
        side: Side,
        qty_base: float | Decimal,
        *,
        reduce_only: bool = False,
        position_side: PositionSide = PositionSide.BOTH,
        label: str = "",
        client_order_id: str | None = None,
    ) -> str:
        """A market order."""
        ...

    def limit(
        self,
        symbol: str,
        side: Side,
        qty_base: float | Decimal,
        price: float,
        *,
        tif: TimeInForce = TimeInForce.GTC,
        reduce_only: bool = False,
        position_side: PositionSide = PositionSide.BOTH,
        label: str = "",
        client_order_id: str | None = None,
    ) -> str:
        """A limit order (GTC, IOC or POST_ONLY)."""
        ...

    def post_only(
        self,
        symbol: str,
        side: Side,
        qty_base: float | Decimal,
        price: float,
        *,
        reduce_only: bool = False,
        position_side: PositionSide = PositionSide.BOTH,
        label: str = "",
        client_order_id: str | None = None,
    ) -> str:
        """A post-only limit order (rejected if it would take liquidity on arrival)."""
        ...

    def stop_market(
        self,
        symbol: str,
        side: Side,
        qty_base: float | Decimal,
        stop_price: float,
        *,
        reduce_only: bool = False,
        position_side: PositionSide = PositionSide.BOTH,
        label: str = "",
        client_order_id: str | None = None,
    ) -> str:
        """A stop-market order: triggers when the price trades at/through ``stop_price``."""
        ...

    def cancel(self, client_order_id: str) -> bool:
        """Request a cancel; False when the id is not an open order."""
        ...

    def cancel_all(self, symbol: str | None = None) -> int:
        """Cancel every open order (of ``symbol``); returns how many were requested."""
        ...

    def open_orders(self, symbol: str | None = None) -> list[Order]:
        """Orders sent and not yet filled, cancelled or rejected (in submission order)."""
        ...

    def set_timer(self, ts_ns: int, name: str) -> None:
        """Call ``on_timer`` once at ``ts_ns`` (must not be in the past)."""
        ...

    def set_interval(self, every_ns: int, name: str, start_ns: int | None = None) -> None:
        """Call ``on_timer`` every ``every_ns`` from ``start_ns`` (default: now + every)."""
        ...


class OrderMethods:
    """The order methods of :class:`Context` written once, for every implementation
    (simulated, paper, live): each builds its request and hands it to ``_send``, which the
    implementation provides (validation, ids and routing are its business)."""

    def _send(
        self,
        symbol: str,
        side: Side,
        qty_base: float | Decimal,
        *,
        type: OrderType,
        price: float | None = None,
        stop_price: float | None = None,
        tif: TimeInForce = TimeInForce.GTC,
        reduce_only: bool = False,
        position_side: PositionSide = PositionSide.BOTH,
        label: str = "",
        client_order_id: str | None = None,
    ) -> str:
        raise NotImplementedError

    def market(
        self,
        symbol: str,
        side: Side,
        qty_base: float | Decimal,
        *,
        reduce_only: bool = False,
        position_side: PositionSide = PositionSide.BOTH,
        label: str = "",
        client_order_id: str | None = None,
    ) -> str:
        """A market order; returns its client id."""
        return self._send(
            symbol,
            side,
            qty_base,
            type=OrderType.MARKET,
            reduce_only=reduce_only,
            position_side=position_side,
            label=label,
            client_order_id=client_order_id,
        )

    def limit(
        self,
        symbol: str,
        side: Side,
        qty_base: float | Decimal,
        price: float,
        *,
        tif: TimeInForce = TimeInForce.GTC,
        reduce_only: bool = False,
        position_side: PositionSide = PositionSide.BOTH,
        label: str = "",
        client_order_id: str | None = None,
    ) -> str:
        """A limit order (GTC, IOC or POST_ONLY); returns its client id."""
        return self._send(
            symbol,
            side,
            qty_base,
            type=OrderType.LIMIT,
            price=price,
            tif=tif,
            reduce_only=reduce_only,
            position_side=position_side,
            label=label,
            client_order_id=client_order_id,
        )

    def post_only(
        self,
        symbol: str,
        side: Side,
        qty_base: float | Decimal,
        price: float,
        *,
        reduce_only: bool = False,
        position_side: PositionSide = PositionSide.BOTH,
        label: str = "",
        client_order_id: str | None = None,
    ) -> str:
        """A post-only limit order (Binance GTX); returns its client id."""
        return self.limit(
            symbol,
            side,
            qty_base,
            price,
            tif=TimeInForce.POST_ONLY,
            reduce_only=reduce_only,
            position_side=position_side,
            label=label,
            client_order_id=client_order_id,
        )

    def stop_market(
        self,
        symbol: str,
        side: Side,
        qty_base: float | Decimal,
        stop_price: float,
        *,
        reduce_only: bool = False,
        position_side: PositionSide = PositionSide.BOTH,
        label: str = "",
        client_order_id: str | None = None,
    ) -> str:
        """A stop-market order; returns its client id."""
        return self._send(
            symbol,
            side,
            qty_base,
            type=OrderType.STOP_MARKET,
            stop_price=stop_price,
            reduce_only=reduce_only,
            position_side=position_side,
            label=label,
            client_order_id=client_order_id,
        )

    def open_orders(self, symbol: str | None = None) -> list[Order]:
        raise NotImplementedError

    def cancel(self, client_order_id: str) -> bool:
        raise NotImplementedError

    def cancel_all(self, symbol: str | None = None) -> int:
        """Cancel every open order (of ``symbol``); returns how many were cancelled."""
        return sum(self.cancel(o.client_order_id) for o in self.open_orders(symbol))


class Strategy:
    """Base class of every strategy: override the callbacks you need.

    ``strategy_id`` names the strategy on its orders and fills (default: the class name);
    client order ids are ``<strategy_id>-<n>``.
    """

    strategy_id: str = ""

    def __init__(self, strategy_id: str | None = None) -> None:
        if strategy_id is not None:
            self.strategy_id = strategy_id
        elif not self.strategy_id:
            self.strategy_id = type(self).__name__

    def on_start(self, ctx: Context) -> None:
        """Before the first event."""

    def on_bar(self, ctx: Context, bar: Bar) -> None:
        """A bar closed (``ctx.now_ns == bar.close_ts_ns``)."""

    def on_trade(self, ctx: Context, trade: Trade) -> None:
        """A public trade printed."""

    def on_book_top(self, ctx: Context, top: BookTop) -> None:
        """The best bid/ask changed."""

    def on_mark_price(self, ctx: Context, mark: MarkPrice) -> None:
        """A new mark price."""

    def on_open_interest(self, ctx: Context, oi: OpenInterest) -> None:
        """A new open-interest observation."""

    def on_funding(self, ctx: Context, settlement: FundingSettlement) -> None:
        """A funding settlement (already booked on the account)."""

    def on_timer(self, ctx: Context, timer: Timer) -> None:
        """A timer fired."""

    def on_fill(self, ctx: Context, fill: Fill) -> None:
        """One of the strategy's orders (or a liquidation) executed."""

    def on_reject(self, ctx: Context, order: Order, reason: str) -> None:
        """An order was refused (or expired) with ``reason``."""

    def on_end(self, ctx: Context) -> None:
        """After the last event."""


CALLBACKS = (
    "on_bar",
    "on_trade",
    "on_book_top",
    "on_mark_price",
    "on_open_interest",
    "on_funding",
    "on_timer",
    "on_fill",
    "on_reject",
)


def overridden(strategy: object, callback: str) -> bool:
    """True when ``strategy`` defines ``callback`` itself (not the no-op of
    :class:`Strategy`), so a venue knows which events it must build."""
    base = getattr(Strategy, callback, None)
    mine = getattr(type(strategy), callback, None)
    return mine is not None and mine is not base
