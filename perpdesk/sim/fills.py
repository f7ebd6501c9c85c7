"""Fill models: how a simulated venue turns working orders and market data into executions.

Every model is a small object behind :class:`FillModel`; its methods are pure — they read a
:class:`WorkingOrder`, the symbol's :class:`Quote` and one market event, and return
:class:`Execution` values (quantity, price, liquidity, reference price). The engine books
them (fees, Decimal rounding to the tick, account) and updates the working order.

- :class:`BarFillModel` (conservative, for bar data). A resting buy limit fills only if a
  bar's low ≤ its price, a sell limit only if the high ≥ its price, at the limit price, for
  the whole remaining size (bars carry no queue information). A stop triggers when the bar
  trades through it and fills at the worse of the stop price and the bar open (a gap jumps
  the stop), then slippage. Only bars that **opened at or after the order's arrival** are
  matched, so a bar partly before the arrival never fills it. Market orders fill on arrival
  at the last close ± slippage (``market_fill="close"``, the default: with zero latency a
  decision at a bar close trades at that close, as the vectorised backtests do) or at the
  next bar's open ± slippage (``market_fill="next_open"``).
- :class:`TickFillModel` (realistic, for trades + book tops). A resting limit fills only
  when a trade prints through its price, or at its price with the aggressor on the other
  side; the fill is at the limit price, capped by the trade's size, the trade's size shared
  by our orders in time priority. Queue assumption ``queue="front"``: at its own price our
  order is first in the queue (optimistic; use ``queue="back"`` to require a trade strictly
  through the price — the pessimistic bound). Market orders take the size shown at the best
  level at that price; the remainder slips per the slippage model from the best price. A
  post-only order that would cross the book on arrival is rejected (Binance GTX). Stops
  trigger on a trade at or through the stop and then execute as market orders.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from perpdesk.domain import (
    Bar,
    BookTop,
    Liquidity,
    Order,
    OrderType,
    Side,
    TimeInForce,
    Trade,
)
from perpdesk.sim.costs import SlippageModel

# enum members as module constants (an Enum class attribute costs ~100 ns a read)
_BUY = Side.BUY
_SELL = Side.SELL
_MARKET = OrderType.MARKET
_LIMIT = OrderType.LIMIT
_STOP_MARKET = OrderType.STOP_MARKET
_GTC = TimeInForce.GTC
_IOC = TimeInForce.IOC
_POST_ONLY = TimeInForce.POST_ONLY
_MAKER = Liquidity.MAKER
_TAKER = Liquidity.TAKER


@dataclass(slots=True)
class WorkingOrder:
    """An order the venue holds: ``remaining_base`` still to fill; ``arrival_ts_ns`` when it
    reached the venue (it is inert before)."""

    order: Order
    arrival_ts_ns: int
    remaining_base: float
    seq: int = 0
    remaining_exact: Decimal | None = None
    """The remainder as an exact Decimal on the lot grid (the engine's booking size; fill
    models keep using the float ``remaining_base``)."""


@dataclass(slots=True)
class Quote:
    """What the venue knows of one symbol's market: last traded price (last trade, or last
    bar close) and the best bid/ask with their sizes (NaN until seen)."""

    last_price: float = math.nan
    bid: float = math.nan
    bid_qty_base: float = math.nan
    ask: float = math.nan
    ask_qty_base: float = math.nan


@dataclass(frozen=True, slots=True)
class Execution:
    """One execution: ``qty_base`` at ``price`` (float, not yet on the tick grid);
    ``ref_price`` is the price before slippage (slippage = side × (price − ref) × qty)."""

    qty_base: float
    price: float
    liquidity: Liquidity
    ref_price: float


@dataclass(frozen=True, slots=True)
class ArrivalResult:
    """What happens when an order arrives: executions now, whether the rest works on, and
    a rejection reason (then nothing else happens)."""

    executions: tuple[Execution, ...] = ()
    rests: bool = False
    reject_reason: str | None = None


class FillModel(Protocol):
    """Protocol of the fill models. ``matches`` names the event kinds (``bar``, ``trade``,
    ``book``) that can fill resting orders; the engine only feeds those."""

    matches: frozenset[str]

    def on_arrival(self, w: WorkingOrder, q: Quote, slip: SlippageModel) -> ArrivalResult:
        """The order reaches the venue with the market in state ``q``."""
        ...

    def on_bar(
        self, orders: list[WorkingOrder], bar: Bar, q: Quote, slip: SlippageModel
    ) -> list[tuple[WorkingOrder, Execution]]:
        """Executions of resting orders (time priority order) during ``bar``."""
        ...

    def on_trade(
        self, orders: list[WorkingOrder], trade: Trade, q: Quote, slip: SlippageModel
    ) -> list[tuple[WorkingOrder, Execution]]:
        """Executions of resting orders caused by ``trade``."""
        ...

    def on_book(
        self, orders: list[WorkingOrder], top: BookTop, q: Quote, slip: SlippageModel
    ) -> list[tuple[WorkingOrder, Execution]]:
        """Executions of resting orders caused by a book update."""
        ...


_RESTS = ArrivalResult(rests=True)
"""The result "no execution now, the order rests" (immutable: one shared instance)."""
_NOTHING = ArrivalResult()


def _slipped(slip: SlippageModel, side: Side, ref: float, qty: float, top_qty: float) -> Execution:
    return Execution(qty, slip.price(side, ref, qty, top_qty), _TAKER, ref)


def _stop_triggered(side: Side, stop: float, price: float) -> bool:
    return price >= stop if side is _BUY else price <= stop


@dataclass(frozen=True, slots=True)
class BarFillModel:
    """Conservative fills from OHLC bars (see the module docstring)."""

    market_fill: str = "close"
    matches: frozenset[str] = frozenset({"bar"})

    def __post_init__(self) -> None:
        if self.market_fill not in ("close", "next_open"):
            raise ValueError(f"market_fill '{self.market_fill}': use 'close' or 'next_open'")

    def on_arrival(self, w: WorkingOrder, q: Quote, slip: SlippageModel) -> ArrivalResult:
        """Market: fill now at the last close (or rest until the next open); limit: take
        now if marketable against the last close, else rest; stop: rest (rejected if it
        would trigger at once, as Binance does, error -2021)."""
        o = w.order
        px = q.last_price
        if o.type is _MARKET:
            if self.market_fill == "next_open":
                return ArrivalResult(rests=True)
            if math.isnan(px):
                return ArrivalResult(reject_reason="no price known yet for a market order")
            return ArrivalResult((_slipped(slip, o.side, px, w.remaining_base, math.nan),))
        if o.type is _STOP_MARKET:
            if not math.isnan(px) and _stop_triggered(o.side, o.stop_price, px):
                return ArrivalResult(reject_reason="stop would trigger immediately")
            return _RESTS
        marketable = not math.isnan(px) and (px <= o.price if o.side is _BUY else px >= o.price)
        if marketable:
            if o.tif is _POST_ONLY:
                return ArrivalResult(reject_reason="post-only order would take liquidity")
            fill_px = slip.price(o.side, px, w.remaining_base, math.nan)
            fill_px = min(fill_px, o.price) if o.side is _BUY else max(fill_px, o.price)
            return ArrivalResult((Execution(w.remaining_base, fill_px, _TAKER, px),))
        if o.tif is _IOC:
            return _NOTHING
        return _RESTS

    def on_bar(
        self, orders: list[WorkingOrder], bar: Bar, q: Quote, slip: SlippageModel
    ) -> list[tuple[WorkingOrder, Execution]]:
        """Executions of resting orders during ``bar`` (only bars opened at/after arrival)."""
        out = []
        for w in orders:
            if bar.ts_ns < w.arrival_ts_ns:
                continue
            o = w.order
            if o.type is _LIMIT:
                hit = bar.low <= o.price if o.side is _BUY else bar.high >= o.price
                if hit:
                    out.append((w, Execution(w.remaining_base, o.price, _MAKER, o.price)))
            elif o.type is _STOP_MARKET:
                stop = o.stop_price
                if o.side is _BUY and bar.high >= stop:
                    ref = max(stop, bar.open)
                elif o.side is _SELL and bar.low <= stop:
                    ref = min(stop, bar.open)
                else:
                    continue
                out.append((w, _slipped(slip, o.side, ref, w.remaining_base, math.nan)))
            else:  # market order waiting for the next open
                out.append((w, _slipped(slip, o.side, bar.open, w.remaining_base, math.nan)))
        return out

    def on_trade(
        self, orders: list[WorkingOrder], trade: Trade, q: Quote, slip: SlippageModel
    ) -> list[tuple[WorkingOrder, Execution]]:
        """Bars only: trades fill nothing."""
        return []

    def on_book(
        self, orders: list[WorkingOrder], top: BookTop, q: Quote, slip: SlippageModel
    ) -> list[tuple[WorkingOrder, Execution]]:
        """Bars only: book updates fill nothing."""
        return []


def take_top(
    side: Side, qty: float, q: Quote, slip: SlippageModel, limit: float | None
) -> list[Execution]:
    """A taker order of ``qty`` against the book top ``q``: the size shown at the best level
    at that price, the remainder at ``slip.price`` from the best price (capped at ``limit``
    for a limit order, whose uncapped remainder is then left unfilled). Without a book, the
    whole size slips from the last trade price. Returns [] when no price is known."""
    best, top_qty = (q.ask, q.ask_qty_base) if side is _BUY else (q.bid, q.bid_qty_base)
    if math.isnan(best):
        if math.isnan(q.last_price):
            return []
        best, top_qty = q.last_price, math.nan
    out = []
    rest = qty
    if top_qty > 0:  # False for NaN
        first = min(qty, top_qty)
        out.append(Execution(first, best, _TAKER, best))
        rest = qty - first
    if rest > 1e-12 * qty:
        px = slip.price(side, best, rest, top_qty)
        if limit is not None:
            px = min(px, limit) if side is _BUY else max(px, limit)
        out.append(Execution(rest, px, _TAKER, best))
    return out


@dataclass(frozen=True, slots=True)
class TickFillModel:
    """Realistic fills from trades and book tops (see the module docstring).

    A marketable limit order takes the best level up to its size; the remainder beyond the
    top then rests (GTC) at its limit price or is cancelled (IOC). Book updates never fill a
    resting order by themselves (only trades do).
    """

    queue: str = "front"
    matches: frozenset[str] = frozenset({"trade"})

    def __post_init__(self) -> None:
        if self.queue not in ("front", "back"):
            raise ValueError(f"queue '{self.queue}': use 'front' or 'back'")

    def on_arrival(self, w: WorkingOrder, q: Quote, slip: SlippageModel) -> ArrivalResult:
        """Market: walk the top now; limit: take if it crosses the book (post-only:
        reject), else rest; stop: rest (rejected if it would trigger at once)."""
        o = w.order
        if o.type is _MARKET:
            ex = take_top(o.side, w.remaining_base, q, slip, None)
            if not ex:
                return ArrivalResult(reject_reason="no price known yet for a market order")
            return ArrivalResult(tuple(ex))
        if o.type is _STOP_MARKET:
            if not math.isnan(q.last_price) and _stop_triggered(o.side, o.stop_price, q.last_price):
                return ArrivalResult(reject_reason="stop would trigger immediately")
            return ArrivalResult(rests=True)
        best = q.ask if o.side is _BUY else q.bid
        if math.isnan(best):
            best = q.last_price
        crosses = not math.isnan(best) and (best <= o.price if o.side is _BUY else best >= o.price)
        if not crosses:
            if o.tif is _IOC:
                return ArrivalResult()
            return ArrivalResult(rests=True)
        if o.tif is _POST_ONLY:
            return ArrivalResult(reject_reason="post-only order would take liquidity")
        top_qty = q.ask_qty_base if o.side is _BUY else q.bid_qty_base
        if math.isnan(top_qty):  # no book: all at the last price, capped at the limit
            ex = take_top(o.side, w.remaining_base, q, slip, o.price)
            return ArrivalResult(tuple(ex))
        first = min(w.remaining_base, top_qty)
        ex = (Execution(first, best, _TAKER, best),)
        return ArrivalResult(ex, rests=o.tif is _GTC)

    def on_trade(
        self, orders: list[WorkingOrder], trade: Trade, q: Quote, slip: SlippageModel
    ) -> list[tuple[WorkingOrder, Execution]]:
        """Resting limits filled by ``trade`` (its size shared in time priority), and stops
        it triggers (executed as market orders against the book ``q``)."""
        out = []
        avail = trade.qty_base
        for w in orders:
            o = w.order
            if o.type is _STOP_MARKET:
                if _stop_triggered(o.side, o.stop_price, trade.price):
                    for ex in take_top(o.side, w.remaining_base, q, slip, None):
                        out.append((w, ex))
                continue
            if o.type is not _LIMIT or avail <= 0:
                continue
            if o.side is _BUY:
                through = trade.price < o.price
                at = trade.price == o.price and trade.buyer_is_maker  # a seller hit the bids
            else:
                through = trade.price > o.price
                at = trade.price == o.price and not trade.buyer_is_maker
            if through or (at and self.queue == "front"):
                qty = min(w.remaining_base, avail)
                avail -= qty
                out.append((w, Execution(qty, o.price, _MAKER, o.price)))
        return out

    def on_bar(
        self, orders: list[WorkingOrder], bar: Bar, q: Quote, slip: SlippageModel
    ) -> list[tuple[WorkingOrder, Execution]]:
        """Ticks only: bars fill nothing."""
        return []

    def on_book(
        self, orders: list[WorkingOrder], top: BookTop, q: Quote, slip: SlippageModel
    ) -> list[tuple[WorkingOrder, Execution]]:
        """Book updates fill nothing (only trades prove a resting order was reached)."""
        return []
