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
  backtest engine does, with fees from :class:`~perpdesk.sim.costs.FeeModel`. With
  ``spot_buy_fee_in_base`` (``FeeModel.for_venue``: Binance, Bybit, OKX) a spot buy of q at p
  with rate r pays its commission in the coin, as the exchange does: the holding grows by
  ``q − q·r`` (exact Decimal, :meth:`~perpdesk.sim.costs.FeeModel.base_fee_qty`), cash moves
  by ``−q·p``, and the fill's ``fee_usd`` is ``q·r·p`` (unrounded, so the ledger's
  ``−q·p − fee_usd + fee_qty_base·p`` is the venue's cash exactly);
  :meth:`PaperVenue.fill_fee_qty_base` gives the ``q·r`` of each fill.
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
- **State export**: :meth:`PaperVenue.state` is everything a replay of the venue's inputs
  would rebuild (account books and lots, cash, marks, orders and their working remainders,
  resting books, quotes, clock, funding clocks, fill and funding logs, sequence counters,
  timers), as a JSON-serialisable dict (Decimals as strings, non-finite floats as
  ``"nan"``/``"inf"``); :meth:`PaperVenue.restore` loads it into a fresh venue of the same
  instruments, which then behaves exactly as the venue that exported it. The layout is
  :data:`PAPER_STATE_VERSION`.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import math
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
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
    TimeInForce,
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
from perpdesk.sim.account import Account, _Attr, _Book, _Lot, _Owner
from perpdesk.sim.costs import Costs
from perpdesk.sim.engine import _to_lot, _to_tick, check_arrival, check_order, reducible_qty
from perpdesk.sim.fills import Execution, FillModel, Quote, TickFillModel, WorkingOrder
from perpdesk.strategies.base import OrderMethods, Strategy

__all__ = [
    "PAPER_STATE_READS",
    "PAPER_STATE_VERSION",
    "PaperContext",
    "PaperVenue",
    "merge_streams",
]

PAPER_STATE_VERSION = 2
"""Layout version of :meth:`PaperVenue.state`; :meth:`PaperVenue.restore` refuses any other
but the ones in :data:`PAPER_STATE_READS`. Bump it whenever a field is added, removed or
changes meaning (the layout check of :func:`_check_layout` fails the tests when the venue,
account or fill-model classes gain a field this version does not cover). Version 2 added
``fee_base`` (the base-asset commission of each fill, :meth:`PaperVenue.fill_fee_qty_base`)."""

PAPER_STATE_READS = (1, 2)
"""State versions :meth:`PaperVenue.restore` loads: a version-1 state has no ``fee_base`` —
its fills were all charged in USD (base-asset fees did not exist then), so none is right."""

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


# ---------------------------------------------------------------------------- state codec
# The attributes each class holds, as this state layout knows them: a class that gains a
# field fails :func:`_check_layout` loudly instead of being left out of a checkpoint.
_VENUE_ATTRS = frozenset(
    {
        "_venue", "_instruments", "account", "costs", "fill_model", "now_ns", "_quotes",
        "_orders", "_books", "_seq", "_funding_clock", "funding", "fill_log", "_fills_q",
        "_subs", "_timers", "strategy", "ctx", "_started", "_fee_base",
    }
)  # fmt: skip
_ACCOUNT_ATTRS = frozenset(
    {
        "_instruments", "_cash", "_hedge", "_margin_mode", "_liq_fee_rate", "_brackets",
        "_leverage", "_lev_dec", "_books", "_symbol_books", "_perp_books", "_spot_books",
        "_open_perp", "_open_spot", "_marks", "_attr", "_seq", "_fees_total",
        "_funding_total", "_avail_c",
    }
)  # fmt: skip
_SLOTS: tuple[tuple[type, tuple[str, ...]], ...] = (
    (_Book, ("symbol", "position_side", "is_spot", "qty", "cost", "realised", "funding",
             "fees", "isolated_margin", "owners", "upnl_c", "mm_c")),
    (_Owner, ("lots", "qty", "cost")),
    (_Lot, ("seq", "qty", "price", "client_order_id", "ts_ns")),
    (_Attr, ("realised", "funding", "fees", "slippage")),
    (WorkingOrder, ("order", "arrival_ts_ns", "remaining_base", "seq", "remaining_exact")),
    (Quote, ("last_price", "bid", "bid_qty_base", "ask", "ask_qty_base")),
    (Order, ("client_order_id", "venue", "symbol", "side", "qty_base", "type", "price",
             "stop_price", "tif", "reduce_only", "position_side", "ts_ns", "strategy_id",
             "label")),
    (Fill, ("client_order_id", "venue", "symbol", "side", "qty_base", "price", "fee_usd",
            "liquidity", "ts_ns", "position_side", "slippage_usd", "strategy_id", "label")),
    (FundingPayment, ("symbol", "ts_ns", "amount_usd", "rate")),
)  # fmt: skip


def _check_layout(v: PaperVenue) -> None:
    """Raise :class:`VenueError` if the venue, its account or a record class holds fields
    that the state layout :data:`PAPER_STATE_VERSION` does not cover (or lost one)."""
    checks: list[tuple[str, set[str], set[str]]] = [
        ("PaperVenue", set(vars(v)), set(_VENUE_ATTRS)),
        ("Account", set(vars(v.account)), set(_ACCOUNT_ATTRS)),
        ("_PaperOrder", {f.name for f in fields(_PaperOrder)},
         {"order", "status", "filled", "notional", "reason", "ts_ns", "working"}),
        ("_FundingClock", {f.name for f in fields(_FundingClock)},
         {"next_ts_ns", "rate", "mark", "settled_ts_ns"}),
        ("PaperContext", set(vars(v.ctx)), {"_v", "_n"}),
    ]  # fmt: skip
    checks += [(c.__name__, {f.name for f in fields(c)}, set(names)) for c, names in _SLOTS]
    for name, have, known in checks:
        if have != known:
            raise VenueError(
                f"paper state v{PAPER_STATE_VERSION}: {name} fields changed "
                f"(new {sorted(have - known)}, gone {sorted(known - have)}); extend the state"
            )


def _f(x: float) -> float | str:
    """A float for JSON: finite as is (``repr`` round-trips it), else ``"nan"``/``"inf"``/
    ``"-inf"`` (decoded by ``float``)."""
    x = float(x)
    return x if math.isfinite(x) else repr(x)


def _fo(x: float | None) -> float | str | None:
    return None if x is None else _f(x)


def _uf(x: float | str | None) -> float | None:
    return None if x is None else float(x)


def _d(x: Decimal) -> str:
    if not isinstance(x, Decimal):
        raise VenueError(f"paper state: {x!r} is not a Decimal")
    return str(x)  # exact: digits, exponent and sign round-trip through Decimal(str)


def _enc_order(o: Order) -> list[Any]:
    return [
        o.client_order_id, o.venue, o.symbol, o.side.value, _f(o.qty_base), o.type.value,
        _fo(o.price), _fo(o.stop_price), o.tif.value, o.reduce_only, o.position_side.value,
        o.ts_ns, o.strategy_id, o.label,
    ]  # fmt: skip


def _dec_order(r: list[Any]) -> Order:
    return Order(
        r[0], r[1], r[2], Side(r[3]), float(r[4]), OrderType(r[5]), _uf(r[6]), _uf(r[7]),
        TimeInForce(r[8]), bool(r[9]), PositionSide(r[10]), int(r[11]), r[12], r[13],
    )  # fmt: skip


def _enc_fill(f: Fill) -> list[Any]:
    return [
        f.client_order_id, f.venue, f.symbol, f.side.value, _d(f.qty_base), _d(f.price),
        _d(f.fee_usd), f.liquidity.value, f.ts_ns, f.position_side.value,
        _d(f.slippage_usd), f.strategy_id, f.label,
    ]  # fmt: skip


def _dec_fill(r: list[Any]) -> Fill:
    return Fill(
        r[0], r[1], r[2], Side(r[3]), Decimal(r[4]), Decimal(r[5]), Decimal(r[6]),
        Liquidity(r[7]), int(r[8]), PositionSide(r[9]), Decimal(r[10]), r[11], r[12],
    )  # fmt: skip


def _account_state(a: Account) -> dict[str, Any]:
    books = []
    for (sym, ps), b in a._books.items():
        owners = [
            [sid, _d(o.qty), _d(o.cost),
             [[lot.seq, _d(lot.qty), _d(lot.price), lot.client_order_id, lot.ts_ns]
              for lot in o.lots]]
            for sid, o in b.owners.items()
        ]  # fmt: skip
        books.append(
            [sym, ps.value, _d(b.qty), _d(b.cost), _d(b.realised), _d(b.funding),
             _d(b.fees), _d(b.isolated_margin), owners]
        )  # fmt: skip
    return {
        "cash": _d(a._cash),
        "seq": a._seq,
        "fees_total": _d(a._fees_total),
        "funding_total": _d(a._funding_total),
        "marks": [[s, _d(m)] for s, m in a._marks.items()],
        "attr": [
            [sid, sym, _d(x.realised), _d(x.funding), _d(x.fees), _d(x.slippage)]
            for (sid, sym), x in a._attr.items()
        ],
        "books": books,
    }


def _account_restore(a: Account, d: Mapping[str, Any]) -> None:
    a._cash = Decimal(d["cash"])
    a._seq = int(d["seq"])
    a._fees_total = Decimal(d["fees_total"])
    a._funding_total = Decimal(d["funding_total"])
    a._marks = {s: Decimal(m) for s, m in d["marks"]}
    a._attr = {
        (sid, sym): _Attr(Decimal(r), Decimal(fu), Decimal(fe), Decimal(sl))
        for sid, sym, r, fu, fe, sl in d["attr"]
    }
    for sym, ps, qty, cost, realised, funding, fees, iso, owners in d["books"]:
        b = a._books.get((sym, PositionSide(ps)))
        if b is None:
            raise VenueError(f"paper state: the account has no {sym} {ps} book")
        b.qty, b.cost, b.realised = Decimal(qty), Decimal(cost), Decimal(realised)
        b.funding, b.fees, b.isolated_margin = Decimal(funding), Decimal(fees), Decimal(iso)
        b.owners = {
            sid: _Owner(
                deque(_Lot(int(s), Decimal(q), Decimal(p), c, int(t)) for s, q, p, c, t in lots),
                Decimal(oq),
                Decimal(oc),
            )
            for sid, oq, oc, lots in owners
        }
        b.upnl_c = b.mm_c = None
    # derived: the non-flat books in book order, and no cached sums
    a._open_perp = [b for b in a._perp_books if b.qty != 0]
    a._open_spot = [b for b in a._spot_books if b.qty != 0]
    a._avail_c = None


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
        # base-asset commission (base units) of fill_log[i], for the fills that had one
        self._fee_base: dict[int, Decimal] = {}
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

    def fill_fee_qty_base(self, index: int) -> Decimal:
        """The commission taken in the base asset by ``fill_log[index]`` (base units; 0 when
        it was paid in USD): the holding moved by ``±qty_base − this`` (module docstring)."""
        return self._fee_base.get(index, Decimal(0))

    async def close(self) -> None:
        """Nothing to release."""

    # ------------------------------------------------------------------ state export
    def state(self) -> dict[str, Any]:
        """Everything a replay of this venue's inputs would rebuild, JSON-serialisable
        (layout :data:`PAPER_STATE_VERSION`; module docstring). Configuration (instruments,
        costs, fill model, leverage) is not included: :meth:`restore` takes it from the
        venue it loads into. A venue with a strategy attached is refused (the strategy's
        own state is not the venue's)."""
        if self.strategy is not None:
            raise VenueError("paper state: a venue with a strategy attached cannot be exported")
        _check_layout(self)
        orders = []
        for po in self._orders.values():
            w = po.working
            orders.append(
                [
                    _enc_order(po.order), po.status.value, _d(po.filled), _d(po.notional),
                    po.reason, po.ts_ns,
                    None if w is None else [
                        w.arrival_ts_ns, _f(w.remaining_base), w.seq,
                        None if w.remaining_exact is None else _d(w.remaining_exact),
                    ],
                ]
            )  # fmt: skip
        return {
            "version": PAPER_STATE_VERSION,
            "config": {
                "venue": self._venue,
                "symbols": sorted(self._instruments),
                "hedge_mode": self.account.hedge_mode,
                "margin_mode": self.account.margin_mode,
            },
            "now_ns": self.now_ns,
            "seq": self._seq,
            "started": self._started,
            "ctx_n": self.ctx._n,
            "quotes": [
                [s, _f(q.last_price), _f(q.bid), _f(q.bid_qty_base), _f(q.ask), _f(q.ask_qty_base)]
                for s, q in self._quotes.items()
            ],
            "orders": orders,
            "books": [[s, [w.order.client_order_id for w in b]] for s, b in self._books.items()],
            "funding_clock": [
                [s, c.next_ts_ns, _f(c.rate), _f(c.mark), c.settled_ts_ns]
                for s, c in self._funding_clock.items()
            ],
            "funding": [[p.symbol, p.ts_ns, _d(p.amount_usd), _fo(p.rate)] for p in self.funding],
            "fill_log": [_enc_fill(f) for f in self.fill_log],
            "fee_base": [[i, _d(b)] for i, b in sorted(self._fee_base.items())],
            "timers": [list(t) for t in self._timers],
            "account": _account_state(self.account),
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Load a :meth:`state` into this venue, which must be fresh (nothing processed yet),
        without a strategy, and trade every symbol of the state with the same hedge and
        margin mode; symbols the state does not know start empty. Raises a one-line
        :class:`VenueError` on an unknown layout version or a mismatch."""
        version = state.get("version")
        if version not in PAPER_STATE_READS:
            reads = ", ".join(map(str, PAPER_STATE_READS))
            raise VenueError(
                f"paper state: unknown format version {version!r} (this code reads versions "
                f"{reads}; writes {PAPER_STATE_VERSION})"
            )
        if self.strategy is not None:
            raise VenueError("paper state: cannot restore into a venue with a strategy attached")
        if self._orders or self.fill_log or self.funding or self.now_ns or self._started:
            raise VenueError("paper state: restore needs a fresh venue")
        _check_layout(self)
        cfg = state["config"]
        missing = sorted(set(cfg["symbols"]) - set(self._instruments))
        if missing:
            raise VenueError(f"paper state: symbols {missing} are not among the instruments")
        if cfg["venue"] != self._venue:
            raise VenueError(f"paper state: venue {cfg['venue']!r}, this venue is {self._venue!r}")
        mine = (self.account.hedge_mode, self.account.margin_mode)
        if (cfg["hedge_mode"], cfg["margin_mode"]) != mine:
            raise VenueError(
                f"paper state: hedge/margin mode {cfg['hedge_mode']}/{cfg['margin_mode']}, "
                f"this venue {mine[0]}/{mine[1]}"
            )
        _account_restore(self.account, state["account"])
        self.now_ns = int(state["now_ns"])
        self._seq = int(state["seq"])
        self._started = bool(state["started"])
        self.ctx._n = int(state["ctx_n"])
        for s, last, bid, bq, ask, aq in state["quotes"]:
            self._quotes[s] = Quote(float(last), float(bid), float(bq), float(ask), float(aq))
        for enc, status, filled, notional, reason, ts_ns, w in state["orders"]:
            order = _dec_order(enc)
            po = _PaperOrder(
                order, OrderStatus(status), Decimal(filled), Decimal(notional), reason, int(ts_ns)
            )
            if w is not None:
                arrival, remaining, seq, exact = w
                po.working = WorkingOrder(
                    order,
                    int(arrival),
                    float(remaining),
                    int(seq),
                    None if exact is None else Decimal(exact),
                )
            self._orders[order.client_order_id] = po
        for s, cids in state["books"]:
            book = self._books[s] = []
            for cid in cids:
                po = self._orders.get(cid)
                if po is None or po.working is None:
                    raise VenueError(f"paper state: resting order {cid} has no working state")
                book.append(po.working)
        self._funding_clock = {
            s: _FundingClock(int(n), float(r), float(m), int(st))
            for s, n, r, m, st in state["funding_clock"]
        }
        self.funding = [
            FundingPayment(s, int(t), Decimal(a), _uf(r)) for s, t, a, r in state["funding"]
        ]
        self.fill_log = [_dec_fill(r) for r in state["fill_log"]]
        self._fee_base = {int(i): Decimal(b) for i, b in state.get("fee_base", ())}
        if any(not 0 <= i < len(self.fill_log) for i in self._fee_base):
            raise VenueError("paper state: fee_base names a fill that is not in fill_log")
        # saved in heap order (the list is the heap): not re-heapified, so ties keep their place
        self._timers = [(int(t), int(q), str(n), int(e)) for t, q, n, e in state["timers"]]

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
        fees = self.costs.fees
        fee_base = fees.base_fee_qty(o.symbol, inst.kind, o.side, qty_dec, ex.liquidity)
        if fee_base:  # paid with the coin bought: its value at the fill price, unrounded
            fee = fee_base * price
        else:
            fee = fees.fee_usd(o.symbol, inst.kind, qty_dec * price, ex.liquidity)
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
        self.account.apply_fill(fill, fee_base)
        if fee_base:
            self._fee_base[len(self.fill_log)] = fee_base
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
