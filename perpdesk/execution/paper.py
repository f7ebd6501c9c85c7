"""The paper venue: live (or replayed) market data in, simulated fills, local balances.

- **Market data in** from any async event source (:meth:`PaperVenue.run` takes an
  ``AsyncIterator`` of :class:`~perpdesk.domain.Trade`, :class:`~perpdesk.domain.BookTop`,
  :class:`~perpdesk.domain.MarkPrice` and :class:`~perpdesk.domain.FundingSettlement`; use
  :func:`merge_streams` to join a :class:`~perpdesk.execution.ccxt_live.LiveVenue`'s
  ``trades``/``book_tops``/``mark_prices``). Events drive the clock: ``now_ns`` is the time of
  the event being handled, and nothing decides with data stamped after it.
- **Fills** from the simulator's fill model (default
  :class:`~perpdesk.sim.fills.TickFillModel`: a resting limit fills only when a trade prints
  through its price, or at it with the aggressor on the other side — no fill without a
  counterparty at the price; a market order takes the book top's size at the best price and
  slips the remainder). Executions are put on the lot grid and the tick grid exactly as the
  backtest engine does, with fees from :class:`~perpdesk.sim.costs.FeeModel`.
- **Balances** in a local :class:`~perpdesk.sim.account.Account` (Decimal): fills, marks
  (liquidations included) and funding. Funding settles either from an explicit
  :class:`FundingSettlement` event or, on a live mark stream, when the first event at or after
  a symbol's announced ``next_funding_ts_ns`` arrives: Binance charges the rate in force at
  settlement, which is the last predicted rate seen before it, at the last mark seen before
  it (``payment = −qty × mark × rate``, :meth:`Account.settle_funding`).
- Orders arrive with no latency at the market state of the last event received (a paper
  venue on live data has no better estimate of the exchange's book).
- The same :class:`~perpdesk.strategies.base.Strategy` object runs here as in the backtest,
  through :class:`PaperContext`.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import math
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from perpdesk.domain import (
    BookTop,
    Fill,
    FundingSettlement,
    Instrument,
    InstrumentKind,
    Liquidity,
    MarkPrice,
    Order,
    OrderType,
    PositionSide,
    Side,
    Timer,
    Trade,
    to_decimal,
)
from perpdesk.execution.protocol import (
    Balance,
    FundingPayment,
    Liquidation,
    OrderState,
    OrderStatus,
    VenueError,
    VenuePosition,
)
from perpdesk.sim.account import Account
from perpdesk.sim.costs import Costs
from perpdesk.sim.engine import _to_lot, _to_tick, check_arrival, check_order, reducible_qty
from perpdesk.sim.fills import Execution, FillModel, Quote, TickFillModel, WorkingOrder
from perpdesk.strategies.base import OrderMethods, Strategy

__all__ = ["PaperContext", "PaperVenue", "merge_streams"]

MarketEvent = Trade | BookTop | MarkPrice | FundingSettlement | Liquidation
_Q8 = Decimal("1e-8")


@dataclass(slots=True)
class _PaperOrder:
    order: Order
    status: OrderStatus = OrderStatus.NEW
    filled: Decimal = Decimal(0)
    notional: Decimal = Decimal(0)
    reason: str = ""
    ts_ns: int = 0
    working: WorkingOrder | None = None


@dataclass(slots=True)
class _FundingClock:
    next_ts_ns: int = 0
    rate: float = math.nan
    mark: float = math.nan
    settled_ts_ns: int = 0  # the last settlement booked: a late mark cannot re-arm it


@dataclass(slots=True)
class _Subscribers:
    queues: list[tuple[frozenset[str] | None, asyncio.Queue[Any]]] = field(default_factory=list)

    def put(self, symbol: str, item: Any) -> None:
        for syms, q in self.queues:
            if syms is None or symbol in syms:
                q.put_nowait(item)


class PaperVenue:
    """A paper venue (see the module docstring) implementing
    :class:`~perpdesk.execution.protocol.Venue`.

    ``instruments`` are what may be traded (engine symbols); ``cash_usd`` the starting wallet;
    ``costs`` fees and slippage (latency is not used); ``fill_model`` defaults to
    :class:`TickFillModel`; ``hedge_mode`` / ``leverage`` as :class:`Account`. ``strategy``
    (optional) is called through a :class:`PaperContext` as events arrive.
    """

    def __init__(
        self,
        instruments: Iterable[Instrument],
        cash_usd: Decimal | str | float,
        *,
        venue: str = "paper",
        costs: Costs | None = None,
        fill_model: FillModel | None = None,
        hedge_mode: bool = False,
        leverage: Mapping[str, int] | None = None,
        strategy: Strategy | None = None,
    ) -> None:
        self._venue = venue
        self._instruments = {i.symbol: i for i in instruments}
        self.account = Account(
            self._instruments.values(), cash_usd, hedge_mode=hedge_mode, leverage=leverage
        )
        self.costs = costs or Costs()
        self.fill_model = fill_model or TickFillModel()
        self.now_ns = 0
        self._quotes: dict[str, Quote] = {s: Quote() for s in self._instruments}
        self._orders: dict[str, _PaperOrder] = {}
        self._books: dict[str, list[WorkingOrder]] = {s: [] for s in self._instruments}
        self._seq = 0
        self._funding_clock: dict[str, _FundingClock] = {}
        self.funding: list[FundingPayment] = []
        self.fill_log: list[Fill] = []
        self._fills_q: asyncio.Queue[Fill] | None = None
        self._subs: dict[str, _Subscribers] = {
            k: _Subscribers() for k in ("trade", "book", "mark", "liq")
        }
        self._timers: list[tuple[int, int, str, int]] = []
        self.strategy = strategy
        self.ctx = PaperContext(self)
        self._started = False

    # ------------------------------------------------------------------ protocol: requests
    @property
    def venue_id(self) -> str:
        """The venue name given at construction."""
        return self._venue

    async def instruments(self) -> Mapping[str, Instrument]:
        """The tradable instruments."""
        return dict(self._instruments)

    async def balances(self) -> Mapping[str, Balance]:
        """``USDT``: total = margin balance (cash + unrealised perp PnL), free = available
        margin."""
        a = self.account
        return {"USDT": Balance("USDT", a.margin_balance_usd, a.available_usd)}

    async def positions(self) -> list[VenuePosition]:
        """Non-zero positions from the account."""
        out = []
        for p in self.account.positions():
            if p.qty_base == 0:
                continue
            out.append(
                VenuePosition(
                    p.symbol,
                    p.position_side,
                    p.qty_base,
                    p.entry_price,
                    p.unrealised_pnl_usd,
                    p.mark_price,
                )
            )
        return out

    async def place(self, order: Order) -> OrderState:
        """Submit ``order`` (idempotent by client id)."""
        return self.submit(order)

    async def cancel(self, client_order_id: str, symbol: str) -> OrderState:
        """Cancel an open order (its final state if it is no longer open)."""
        po = self._orders.get(client_order_id)
        if po is None:
            raise VenueError(f"cancel {client_order_id}: unknown client order id")
        self._cancel(po)
        return self._state(po)

    async def query(self, client_order_id: str, symbol: str) -> OrderState | None:
        """The order's state, None when unknown."""
        po = self._orders.get(client_order_id)
        return None if po is None else self._state(po)

    async def open_orders(self, symbol: str | None = None) -> list[OrderState]:
        """Orders still working, in submission order."""
        return [
            self._state(po)
            for po in self._orders.values()
            if po.status.is_open and (symbol is None or po.order.symbol == symbol)
        ]

    async def funding_payments(self, since_ns: int) -> list[FundingPayment]:
        """Funding booked at or after ``since_ns``."""
        return [f for f in self.funding if f.ts_ns >= since_ns]

    async def close(self) -> None:
        """Nothing to release."""

    # ------------------------------------------------------------------ protocol: streams
    async def fills(self) -> AsyncIterator[Fill]:
        """Fills as they are booked, from the first iteration on (one consumer)."""
        if self._fills_q is None:
            self._fills_q = asyncio.Queue()
        q = self._fills_q
        while True:
            yield await q.get()

    async def _tap(self, kind: str, symbols: Sequence[str] | None) -> AsyncIterator[Any]:
        q: asyncio.Queue[Any] = asyncio.Queue()
        entry = (None if symbols is None else frozenset(symbols), q)
        self._subs[kind].queues.append(entry)
        try:
            while True:
                yield await q.get()
        finally:
            self._subs[kind].queues.remove(entry)

    def trades(self, symbols: Sequence[str]) -> AsyncIterator[Trade]:
        """The trades the venue processes (a tap on its input)."""
        return self._tap("trade", symbols)

    def book_tops(self, symbols: Sequence[str]) -> AsyncIterator[BookTop]:
        """The book tops the venue processes."""
        return self._tap("book", symbols)

    def mark_prices(self, symbols: Sequence[str]) -> AsyncIterator[MarkPrice]:
        """The marks the venue processes."""
        return self._tap("mark", symbols)

    def liquidations(self, symbols: Sequence[str]) -> AsyncIterator[Liquidation]:
        """Liquidations fed in with :meth:`on_liquidation`."""
        return self._tap("liq", symbols)

    # ------------------------------------------------------------------ orders
    def _state(self, po: _PaperOrder) -> OrderState:
        o = po.order
        return OrderState(
            o.client_order_id,
            o.symbol,
            o.side,
            po.status,
            to_decimal(o.qty_base),
            po.filled,
            avg_price=po.notional / po.filled if po.filled else None,
            price=None if o.price is None else to_decimal(o.price),
            venue_order_id=o.client_order_id,
            reason=po.reason,
            ts_ns=po.ts_ns,
        )

    def submit(self, order: Order) -> OrderState:
        """Check and execute ``order`` against the current market (synchronous; the
        strategy context calls it). A second submission of the same order returns its
        state; another order with a used client id is rejected."""
        cid = order.client_order_id
        known = self._orders.get(cid)
        if known is not None:
            if known.order == order:
                return self._state(known)
            return self._reject(
                _PaperOrder(order, ts_ns=self.now_ns), f"duplicate client_order_id {cid}", False
            )
        po = _PaperOrder(order, ts_ns=self.now_ns)
        self._orders[cid] = po
        inst = self._instruments.get(order.symbol)
        reason = check_order(order, inst, hedge_mode=self.account.hedge_mode, known_ids=set())
        if reason is None:
            q = self._quotes[order.symbol]
            ref = order.price if order.type is OrderType.LIMIT else q.last_price
            if order.type is OrderType.MARKET and not math.isnan(
                q.ask if order.side is Side.BUY else q.bid
            ):
                ref = q.ask if order.side is Side.BUY else q.bid
            if order.type is OrderType.STOP_MARKET:
                ref = order.stop_price
            reason = check_arrival(order, self.account, ref)
        if reason is not None:
            return self._reject(po, reason)
        self._seq += 1
        w = WorkingOrder(order, self.now_ns, order.qty_base, self._seq)
        res = self.fill_model.on_arrival(w, self._quotes[order.symbol], self.costs.slippage)
        if res.reject_reason is not None:
            return self._reject(po, res.reject_reason)
        po.working = w
        fills = [f for ex in res.executions if (f := self._execute(po, ex)) is not None]
        if po.status.is_open:
            if res.rests and w.remaining_base > 0:
                self._books[order.symbol].append(w)
            else:  # an IOC/market remainder that does not rest
                po.status = OrderStatus.EXPIRED
                po.reason = "unfilled remainder expired"
        self._notify(fills)
        return self._state(po)

    def _reject(self, po: _PaperOrder, reason: str, notify: bool = True) -> OrderState:
        po.status = OrderStatus.REJECTED
        po.reason = reason
        if notify and self.strategy is not None:
            self.strategy.on_reject(self.ctx, po.order, reason)
        return self._state(po)

    def _cancel(self, po: _PaperOrder) -> bool:
        if not po.status.is_open:
            return False
        po.status = OrderStatus.CANCELED
        po.ts_ns = self.now_ns
        book = self._books[po.order.symbol]
        if po.working is not None and po.working in book:
            book.remove(po.working)
        return True

    def _execute(self, po: _PaperOrder, ex: Execution) -> Fill | None:
        """Book one execution (lot/tick grid, reduce-only cap, fee) on the account."""
        o = po.order
        w = po.working
        assert w is not None
        inst = self._instruments[o.symbol]
        qty_dec = _to_lot(min(ex.qty_base, w.remaining_base), inst.lot_size)
        pos = self.account.position(o.symbol, o.position_side).qty_base
        red = reducible_qty(o, pos, self.account.hedge_mode)
        if red is None and inst.kind is InstrumentKind.SPOT and o.side is Side.SELL:
            red = max(pos, Decimal(0))
        if red is not None and qty_dec > red:
            qty_dec = red
            if red == 0:
                po.status = OrderStatus.EXPIRED
                po.reason = "expired: nothing left to reduce"
                self._done(po)
                return None
        if qty_dec <= 0:
            return None
        exact = ex.liquidity is Liquidity.MAKER or ex.price == ex.ref_price
        price = _to_tick(ex.price, inst.tick_size, o.side, exact)
        fee = self.costs.fees.fee_usd(o.symbol, inst.kind, qty_dec * price, ex.liquidity)
        ref = Decimal(repr(ex.ref_price))
        slip = (o.side.sign * (price - ref) * qty_dec).quantize(_Q8) + 0
        fill = Fill(
            o.client_order_id,
            self._venue,
            o.symbol,
            o.side,
            qty_dec,
            price,
            fee,
            ex.liquidity,
            self.now_ns,
            o.position_side,
            slip,
            o.strategy_id,
            o.label,
        )
        self.account.apply_fill(fill)
        self.fill_log.append(fill)
        po.filled += qty_dec
        po.notional += qty_dec * price
        po.ts_ns = self.now_ns
        w.remaining_base -= float(qty_dec)
        if w.remaining_base < inst.lot_size / 2:
            w.remaining_base = 0.0
            po.status = OrderStatus.FILLED
            self._done(po)
        else:
            po.status = OrderStatus.PARTIALLY_FILLED
        return fill

    def _done(self, po: _PaperOrder) -> None:
        book = self._books[po.order.symbol]
        if po.working is not None and po.working in book:
            book.remove(po.working)

    def _notify(self, fills: Sequence[Fill]) -> None:
        for f in fills:
            if self._fills_q is not None:
                self._fills_q.put_nowait(f)
            if self.strategy is not None:
                self.strategy.on_fill(self.ctx, f)

    # ------------------------------------------------------------------ market data
    def _advance(self, ts_ns: int) -> None:
        """Move the clock to ``ts_ns``: fire due timers and settle due funding first."""
        while self._timers and self._timers[0][0] <= ts_ns:
            t, _, name, every = heapq.heappop(self._timers)
            self.now_ns = max(self.now_ns, t)
            if every:
                self._push_timer(t + every, name, every)
            if self.strategy is not None:
                self.strategy.on_timer(self.ctx, Timer(t, name))
        for sym, fc in self._funding_clock.items():
            if fc.next_ts_ns and ts_ns >= fc.next_ts_ns and not math.isnan(fc.rate):
                due = fc.next_ts_ns
                fc.next_ts_ns = 0
                fc.settled_ts_ns = max(fc.settled_ts_ns, due)
                ih = self._instruments[sym].funding_interval_h
                self._settle(FundingSettlement(self._venue, sym, due, fc.rate, ih, fc.mark))
        self.now_ns = max(self.now_ns, ts_ns)

    def _push_timer(self, ts_ns: int, name: str, every_ns: int) -> None:
        self._seq += 1
        heapq.heappush(self._timers, (ts_ns, self._seq, name, every_ns))

    def _settle(self, ev: FundingSettlement) -> None:
        mark = ev.mark_price
        if math.isnan(mark):
            m = self.account.mark(ev.symbol)
            if m is None:
                raise VenueError(f"{ev.symbol}: funding at {ev.ts_ns} with no mark known")
            mark = float(m)
        self.now_ns = max(self.now_ns, ev.ts_ns)
        amount = self.account.settle_funding(ev.symbol, ev.ts_ns, ev.funding_rate, mark)
        self.funding.append(FundingPayment(ev.symbol, ev.ts_ns, amount, ev.funding_rate))
        if self.strategy is not None:
            self.strategy.on_funding(self.ctx, ev)

    def on_event(self, ev: MarketEvent) -> list[Fill]:
        """Process one market event (in time order): update the quote, fill resting orders
        (trades only, by the fill model), book marks and funding, call the strategy.
        Events of symbols the venue does not trade are ignored; a :class:`Liquidation` is
        passed on to ``liquidations`` subscribers. Returns the fills."""
        if ev.symbol not in self._instruments:
            return []
        if isinstance(ev, Liquidation):
            self.on_liquidation(ev)
            return []
        if not self._started:
            self._started = True
            if self.strategy is not None:
                self.strategy.on_start(self.ctx)
        self._advance(ev.ts_ns)
        q = self._quotes[ev.symbol]
        fills: list[Fill] = []
        if isinstance(ev, Trade):
            q.last_price = ev.price
            book = self._books[ev.symbol]
            if book:
                live = [w for w in book if w.arrival_ts_ns <= ev.ts_ns]
                for w, ex in self.fill_model.on_trade(live, ev, q, self.costs.slippage):
                    po = self._orders[w.order.client_order_id]
                    if po.status.is_open and (f := self._execute(po, ex)) is not None:
                        fills.append(f)
            self._notify(fills)
            self._subs["trade"].put(ev.symbol, ev)
            if self.strategy is not None:
                self.strategy.on_trade(self.ctx, ev)
        elif isinstance(ev, BookTop):
            q.bid, q.bid_qty_base, q.ask, q.ask_qty_base = (
                ev.bid,
                ev.bid_qty_base,
                ev.ask,
                ev.ask_qty_base,
            )
            self._subs["book"].put(ev.symbol, ev)
            if self.strategy is not None:
                self.strategy.on_book_top(self.ctx, ev)
        elif isinstance(ev, MarkPrice):
            liq = self.account.update_mark(ev.symbol, ev.ts_ns, ev.mark_price)
            self.fill_log.extend(liq)
            self._notify(liq)
            fills += liq
            fc = self._funding_clock.setdefault(ev.symbol, _FundingClock())
            # a mark stamped before a settlement that arrives after it (another stream's
            # event triggered it) announces the time already settled: not again
            if ev.next_funding_ts_ns > max(ev.ts_ns, fc.settled_ts_ns):
                fc.next_ts_ns, fc.rate, fc.mark = (
                    ev.next_funding_ts_ns,
                    ev.predicted_funding_rate,
                    ev.mark_price,
                )
            self._subs["mark"].put(ev.symbol, ev)
            if self.strategy is not None:
                self.strategy.on_mark_price(self.ctx, ev)
        elif isinstance(ev, FundingSettlement):
            fc = self._funding_clock.setdefault(ev.symbol, _FundingClock())
            fc.settled_ts_ns = max(fc.settled_ts_ns, ev.ts_ns)
            if fc.next_ts_ns == ev.ts_ns:
                fc.next_ts_ns = 0  # settled explicitly; not again from the mark clock
            self._settle(ev)
        else:
            raise VenueError(f"paper venue: unsupported event {type(ev).__name__}")
        return fills

    def on_liquidation(self, liq: Liquidation) -> None:
        """Pass a public liquidation on to ``liquidations`` subscribers."""
        self._subs["liq"].put(liq.symbol, liq)

    async def run(self, events: AsyncIterator[MarketEvent]) -> None:
        """Consume ``events`` until the source ends, then call the strategy's ``on_end``."""
        async for ev in events:
            self.on_event(ev)
        if self.strategy is not None and self._started:
            self.strategy.on_end(self.ctx)


async def merge_streams(*streams: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """Interleave several async iterators in arrival order (e.g. a LiveVenue's
    ``trades``, ``book_tops`` and ``mark_prices``). Ends when all have ended; an error in
    one stream is raised here."""
    q: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()
    done = object()

    async def pump(s: AsyncIterator[Any]) -> None:
        try:
            async for x in s:
                await q.put((0, x))
        except Exception as e:  # surfaced to the consumer
            await q.put((1, e))
        finally:
            await q.put((2, done))

    tasks = [asyncio.ensure_future(pump(s)) for s in streams]
    left = len(tasks)
    try:
        while left:
            kind, x = await q.get()
            if kind == 2:
                left -= 1
            elif kind == 1:
                raise x
            else:
                yield x
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t


class PaperContext(OrderMethods):
    """:class:`~perpdesk.strategies.base.Context` of a :class:`PaperVenue`: orders go to the
    venue at once; client ids are ``<strategy_id>-<n>``."""

    def __init__(self, venue: PaperVenue) -> None:
        self._v = venue
        self._n = 0

    @property
    def now_ns(self) -> int:
        """The time of the event being handled (ns)."""
        return self._v.now_ns

    @property
    def instruments(self) -> Mapping[str, Instrument]:
        """Instruments by engine symbol."""
        return self._v._instruments

    @property
    def portfolio(self) -> Any:
        """``Account.view()``."""
        return self._v.account.view()

    def position(self, symbol: str, position_side: PositionSide = PositionSide.BOTH) -> Any:
        """``Account.position``."""
        return self._v.account.position(symbol, position_side)

    def last_price(self, symbol: str) -> float:
        """Last traded price of ``symbol`` (NaN if none yet)."""
        q = self._v._quotes.get(symbol)
        return math.nan if q is None else q.last_price

    def _send(
        self,
        symbol: str,
        side: Side,
        qty_base: float | Decimal,
        *,
        client_order_id: str | None = None,
        **kw: Any,
    ) -> str:
        """Build the order and hand it to the venue at once."""
        sid = self._v.strategy.strategy_id if self._v.strategy is not None else "paper"
        if client_order_id is None:
            self._n += 1
            client_order_id = f"{sid}-{self._n}"
        try:
            order = Order(
                client_order_id,
                self._v.venue_id,
                symbol,
                side,
                float(qty_base),
                ts_ns=self.now_ns,
                strategy_id=sid,
                **kw,
            )
        except ValueError as e:
            raise VenueError(str(e)) from None
        self._v.submit(order)
        return client_order_id

    def cancel(self, client_order_id: str) -> bool:
        """Cancel at once; False when not open."""
        po = self._v._orders.get(client_order_id)
        return po is not None and self._v._cancel(po)

    def open_orders(self, symbol: str | None = None) -> list[Order]:
        """Orders still working, in submission order."""
        return [
            po.order
            for po in self._v._orders.values()
            if po.status.is_open and (symbol is None or po.order.symbol == symbol)
        ]

    def set_timer(self, ts_ns: int, name: str) -> None:
        """``on_timer`` once when the event clock reaches ``ts_ns``."""
        if ts_ns < self.now_ns:
            raise ValueError(f"timer {name}: {ts_ns} is before now ({self.now_ns})")
        self._v._push_timer(ts_ns, name, 0)

    def set_interval(self, every_ns: int, name: str, start_ns: int | None = None) -> None:
        """``on_timer`` every ``every_ns`` from ``start_ns`` (default now + every)."""
        if every_ns <= 0:
            raise ValueError(f"timer {name}: every_ns {every_ns} must be > 0")
        self._v._push_timer(
            self.now_ns + every_ns if start_ns is None else start_ns, name, every_ns
        )
