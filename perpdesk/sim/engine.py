"""The backtest engine: one event loop over the replay, a simulated venue around a pure
order step, and the account.

Per event at time ``t`` (events in :mod:`perpdesk.sim.replay` order):

1. the clock advances to ``t``; engine time events due at or before ``t`` run first, in
   time order and at one instant as: equity sample → order/cancel arrivals → timers;
2. market data updates the symbol's :class:`~perpdesk.sim.fills.Quote` and the fill model
   matches the resting orders (fills → ``Account.apply_fill`` → ``on_fill``);
3. a funding settlement is booked: ``Account.settle_funding(symbol, t, rate, mark)`` with
   the settlement's mark price, or the last mark (mark stream) or last price when NaN;
4. a mark update (mark-price stream, else mark bars, else the symbol's bars/trades) goes to
   ``Account.update_mark`` while the symbol has a position (liquidations → ``on_fill``);
5. the strategy's callback runs; orders it sends go through :func:`check_order` (static
   rules) now and :func:`check_arrival` (reduce-only, margin) when they reach the venue
   after the latency model's delay; with zero latency they arrive at once.

Speed: events are built as Python objects only for *hot* streams — the strategy overrides
their callback, they are funding settlements, or the engine needs them (price streams of
a symbol with working orders, the mark stream of a symbol with a position). Other rows
stay in NumPy; the quote of a symbol is caught up from them lazily when needed.

Equity samples are taken at ``start + k × equity_every_ns`` with the state after every
event stamped before the sample time, and once at the end. ``on_start`` runs at
``start_ns`` (or the first event's time); ``on_end`` at ``end_ns`` (or the last event's).
Orders and cancels still travelling then (latency; e.g. sent in ``on_end``) arrive at their
arrival times against the last market state (no data after the end: a market order fills
at the last price); timers and equity samples after the end do not run; the final equity
sample is taken after them. Resting orders left at the end stay open (nothing is
force-closed).

Quantities: order methods take a float or a ``Decimal``; the engine snaps it to the lot
grid in Decimal (:func:`snap_qty`) and books exactly that, so closing with
``ctx.position(sym).qty_base`` (a Decimal) leaves no dust. Result tables are built in a
38-digit decimal context (quantities of 1e10 base units and more fit ``decimal128(38, 18)``).
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import gc
import heapq
import itertools
import math
import operator
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from enum import StrEnum
from typing import Any

import numpy as np
import pyarrow as pa

from perpdesk.data.catalog import Catalog
from perpdesk.domain import (
    Fill,
    FundingSettlement,
    Instrument,
    InstrumentKind,
    Liquidity,
    Order,
    OrderType,
    PositionSide,
    Side,
    TimeInForce,
    Timer,
    spot_symbol,
    to_decimal,
)
from perpdesk.domain.instruments import SPOT_SUFFIX
from perpdesk.errors import PerpdeskError
from perpdesk.sim.account import Account
from perpdesk.sim.costs import ConstantLatency, Costs
from perpdesk.sim.fills import BarFillModel, Execution, FillModel, Quote, WorkingOrder
from perpdesk.sim.replay import (
    BAR,
    BOOK,
    FUNDING,
    MARK,
    OI,
    TRADE,
    Chunk,
    Replay,
    StreamSpec,
    fast_constructor,
)
from perpdesk.sim.replay import event_maker as _event_maker
from perpdesk.sim.replay import events_maker as _events_maker
from perpdesk.strategies.base import OrderMethods, Strategy, overridden

# enum members as module constants (an Enum class attribute costs ~100 ns a read)
_BUY = Side.BUY
_SELL = Side.SELL
_LIMIT = OrderType.LIMIT
_STOP_MARKET = OrderType.STOP_MARKET
_PS_BOTH = PositionSide.BOTH
_PS_LONG = PositionSide.LONG
_PS_SHORT = PositionSide.SHORT
_MAKER = Liquidity.MAKER
_PERP = InstrumentKind.PERP
_SPOT = InstrumentKind.SPOT

DEC_TYPE = pa.decimal128(38, 18)
_Q18 = Decimal("1e-18")
_Q8 = Decimal("1e-8")

_WINDOW = 65_536  # events scanned for hot streams at a time

# engine time-event classes, in their order at one instant
_EQUITY, _ARRIVAL, _CANCEL, _TIMER = 0, 1, 2, 3

_CALLBACK_OF_KIND = {
    BAR: "on_bar",
    MARK: "on_mark_price",
    BOOK: "on_book_top",
    TRADE: "on_trade",
    OI: "on_open_interest",
    FUNDING: "on_funding",
}


class EngineError(PerpdeskError):
    """A run cannot start or continue (names the symbol/stream and the problem)."""


@dataclass(frozen=True, slots=True)
class AccountConfig:
    """How to open the run's :class:`~perpdesk.sim.account.Account` (see its docstring)."""

    cash_usd: Decimal | float | str
    hedge_mode: bool = False
    margin_mode: str = "cross"
    leverage: Mapping[str, int] | None = None
    brackets: Mapping[str, Any] | None = None
    liquidation_fee_rate: Decimal | str = "0.0125"

    def build(self, instruments: Iterable[Instrument]) -> Account:
        """A fresh account over ``instruments``."""
        return Account(
            instruments,
            self.cash_usd,
            hedge_mode=self.hedge_mode,
            margin_mode=self.margin_mode,
            leverage=self.leverage,
            brackets=self.brackets,
            liquidation_fee_rate=self.liquidation_fee_rate,
        )


@dataclass(frozen=True)
class EngineResult:
    """What a run produced.

    ``fills``: every execution (incl. liquidations), Decimal columns ``qty_base``,
    ``price``, ``fee_usd``, ``slippage_usd``. ``orders``: every decision (``ts_ns`` = when
    the strategy sent it) — the lookahead test compares these. ``equity``: samples
    ``ts_ns, equity_usd, cash_usd`` (float64, for curves). ``funding``: settlements booked
    on a position (``amount_usd`` + received). ``rejections``: refused/expired orders with
    the reason. ``pnl``: the account's per-(strategy, symbol) breakdown. ``events``: events
    replayed; ``dispatched``: events built as objects and processed. ``orders`` is built
    from ``order_list`` (the :class:`Order` objects) on first access: a run with tens of
    thousands of orders does not pay for a table nobody reads.
    """

    fills: pa.Table
    equity: pa.Table
    funding: pa.Table
    rejections: pa.Table
    pnl: list
    events: int
    dispatched: int
    account: Account = field(repr=False)
    order_list: Sequence[Order] = field(default=(), repr=False, compare=False)

    @functools.cached_property
    def orders(self) -> pa.Table:
        """Every order sent, one row each (see the class docstring)."""
        return orders_table(self.order_list)


def _col(rows: Sequence[Any], name: str, typ: pa.DataType) -> pa.Array:
    return pa.array(list(map(operator.attrgetter(name), rows)), typ)


def _enum_col(rows: Sequence[Any], name: str) -> pa.Array:
    """An enum field as text: plain str first (pyarrow converts str-enum members ~30×
    slower than str); a StrEnum member's text is its value (``str(m) == m._value_``)."""
    vals = list(map(operator.attrgetter(name), rows))
    if all(issubclass(k, StrEnum) for k in set(map(type, vals))):
        vals = list(map(operator.attrgetter("_value_"), vals))
    else:
        vals = list(map(str, vals))
    return pa.array(vals, pa.string())


def orders_table(orders: Sequence[Order]) -> pa.Table:
    """The orders as :attr:`EngineResult.orders` holds them (enums as text, floats)."""
    o = orders
    return pa.table(
        {
            "ts_ns": _col(o, "ts_ns", pa.int64()),
            "client_order_id": _col(o, "client_order_id", pa.string()),
            "strategy_id": _col(o, "strategy_id", pa.string()),
            "symbol": _col(o, "symbol", pa.string()),
            "side": _enum_col(o, "side"),
            "type": _enum_col(o, "type"),
            "qty_base": _col(o, "qty_base", pa.float64()),
            "price": _col(o, "price", pa.float64()),
            "stop_price": _col(o, "stop_price", pa.float64()),
            "tif": _enum_col(o, "tif"),
            "reduce_only": _col(o, "reduce_only", pa.bool_()),
            "position_side": _enum_col(o, "position_side"),
            "label": _col(o, "label", pa.string()),
        }
    )


# --------------------------------------------------------------------- order objects

_REF_DEC: dict[float, Decimal] = {}
"""``Decimal(repr(price))`` of positive finite float reference prices seen by ``_execute``."""

_make_order = fast_constructor(Order)  # Order(...) with every field, ~2x faster
_make_fill = fast_constructor(Fill)


# --------------------------------------------------------------------- the pure order step


def _off_grid(x: float, step: float) -> bool:
    n = x / step
    return abs(n - round(n)) > 1e-6


def check_order(
    order: Order, instrument: Instrument | None, *, hedge_mode: bool, known_ids: set[str]
) -> str | None:
    """Static checks of an order at submission; ``None`` if it may be sent, else the reason.

    Rules (Binance USD-M ``POST /fapi/v1/order``): a known symbol; quantity a multiple of
    the lot size (``LOT_SIZE`` filter), prices multiples of the tick (``PRICE_FILTER``); a
    unique client id; one-way mode takes ``positionSide`` BOTH only; hedge mode needs LONG
    or SHORT and refuses ``reduceOnly`` (it closes with the opposite side on the same
    position side); spot legs take BOTH only and no stops.
    """
    if instrument is None:
        return f"unknown symbol {order.symbol}"
    if order.client_order_id in known_ids:
        return f"duplicate client_order_id {order.client_order_id}"
    if _off_grid(order.qty_base, instrument.lot_size):
        return f"qty {order.qty_base} is not a multiple of lot_size {instrument.lot_size}"
    px = order.price
    if px is not None and _off_grid(px, instrument.tick_size):
        return f"price {px} is not a multiple of tick_size {instrument.tick_size}"
    px = order.stop_price
    if px is not None and _off_grid(px, instrument.tick_size):
        return f"stop_price {px} is not a multiple of tick_size {instrument.tick_size}"
    if instrument.kind is _SPOT:
        if order.position_side is not _PS_BOTH:
            return "a spot leg takes position_side BOTH"
        if order.type is _STOP_MARKET:
            return "stop orders are not supported on spot legs"
    elif hedge_mode:
        if order.position_side is _PS_BOTH:
            return "hedge mode needs position_side LONG or SHORT"
        if order.reduce_only:
            return "reduce_only is not accepted in hedge mode (close with the opposite side)"
    elif order.position_side is not _PS_BOTH:
        return "one-way mode takes position_side BOTH only"
    return None


def _passes_check(order: Order, inst: Instrument, hedge_mode: bool, known_ids: set[str]) -> bool:
    """True only when :func:`check_order` would return ``None`` (the hot path of
    :meth:`Engine.submit`: the same tests, inline); False means "ask check_order"."""
    if order.client_order_id in known_ids:
        return False
    step = inst.lot_size
    n = order.qty_base / step
    if abs(n - round(n)) > 1e-6:
        return False
    step = inst.tick_size
    px = order.price
    if px is not None:
        n = px / step
        if abs(n - round(n)) > 1e-6:
            return False
    px = order.stop_price
    if px is not None:
        n = px / step
        if abs(n - round(n)) > 1e-6:
            return False
    if inst.kind is _SPOT:
        return order.position_side is _PS_BOTH and order.type is not _STOP_MARKET
    if hedge_mode:
        return order.position_side is not _PS_BOTH and not order.reduce_only
    return order.position_side is _PS_BOTH


def reducible_qty(order: Order, position_qty: Decimal, hedge_mode: bool) -> Decimal | None:
    """How much of ``order`` may reduce the book it trades (``position_qty`` signed), or
    ``None`` when the order is not a closing order (it may open). Closing orders:
    ``reduce_only`` ones, and in hedge mode SELL on LONG / BUY on SHORT."""
    closing = order.reduce_only or (
        hedge_mode
        and (
            (order.position_side is _PS_LONG and order.side is _SELL)
            or (order.position_side is _PS_SHORT and order.side is _BUY)
        )
    )
    if not closing:
        return None
    if position_qty == 0 or (position_qty > 0) == (order.side is _BUY):
        return Decimal(0)
    return abs(position_qty)


def check_arrival(
    order: Order, account: Account, price: float, qty_base: Decimal | None = None
) -> str | None:
    """Checks when the order reaches the venue: a closing order must have something to
    close (Binance -2022 "ReduceOnly Order is rejected"; a one-way reduce-only order larger
    than the position is cut to it when it fills, a hedge-mode close larger than its book
    is refused); an opening order must pass the account's initial-margin check at ``price``
    (the limit or stop price, else the current one). ``qty_base``: the order's exact size
    (default ``order.qty_base`` converted from float)."""
    qty = to_decimal(order.qty_base) if qty_base is None else qty_base
    pos = account.position_qty(order.symbol, order.position_side)
    red = reducible_qty(order, pos, account.hedge_mode)
    if red is not None:
        if red == 0:
            return "reduce-only order would not reduce the position"
        if account.hedge_mode and qty > red:
            return f"closing {order.qty_base} exceeds the {order.position_side} position {red}"
        return None
    if math.isnan(price):
        return "no price known yet"
    return account.can_open(order.symbol, order.side, qty, price, order.position_side)


def _to_tick(price: float, tick: float, side: Side, exact: bool) -> Decimal:
    """``price`` on the tick grid as a Decimal: nearest multiple when already on it
    (``exact`` or within 1e-6 tick), else rounded against the taker (buy up, sell down)."""
    n = price / tick
    r = round(n)
    on_grid = exact or abs(n - r) <= 1e-6
    k = r if on_grid else (math.ceil(n) if side is _BUY else math.floor(n))
    return Decimal(k) * _lot_decimal(tick)


@functools.lru_cache(maxsize=256)
def _lot_decimal(lot_size: float) -> Decimal:
    """``Decimal(repr(float(lot_size)))`` (the lot or tick as written), memoised."""
    return Decimal(repr(float(lot_size)))


def snap_qty(qty_base: Decimal | float | int | str, lot_size: float) -> Decimal | None:
    """An order quantity on the lot grid as an exact Decimal, or ``None`` when it is not on
    it (Binance ``LOT_SIZE``: quantity a multiple of the step). A ``Decimal`` (or ``str``,
    ``int``) must be an exact multiple of the lot; a float may be off by float noise (up to
    1e-6 lot) and is snapped to the nearest multiple — so ``float(k × lot)`` and
    ``k × lot`` name the same quantity."""
    lot = _lot_decimal(lot_size)
    if isinstance(qty_base, float):
        n = qty_base / lot_size
        k = round(n)
        if not math.isfinite(n) or abs(n - k) > 1e-6:
            return None
        return Decimal(k) * lot
    try:
        q = Decimal(qty_base)
    except (ArithmeticError, TypeError, ValueError):
        return None
    if not q.is_finite():
        return None
    with localcontext() as ctx:
        ctx.prec = 60
        k, r = divmod(q, lot)
    if r != 0:
        return None
    return k * lot


def _to_lot(qty: float, lot: float) -> Decimal:
    """Whole lots in ``qty`` (floor, with a 1e-9-lot tolerance for float noise): a fill
    capped by a trade's size never exceeds it."""
    return Decimal(math.floor(qty / lot + 1e-9)) * _lot_decimal(lot)


def _band_with(band: tuple[float, float], o: Order) -> tuple[float, float]:
    """``(lo, hi)`` widened by one resting order: a bar/trade reaching at or below ``lo``
    or at or above ``hi`` may fill or trigger something (see :meth:`Engine._reaches`)."""
    lo, hi = band
    if o.type is _LIMIT:
        if o.side is _BUY:
            lo = max(lo, o.price)
        else:
            hi = min(hi, o.price)
    elif o.type is _STOP_MARKET:
        if o.side is _BUY:
            hi = min(hi, o.stop_price)
        else:
            lo = max(lo, o.stop_price)
    else:  # a market order waiting for the next bar
        lo = math.inf
    return lo, hi


# --------------------------------------------------------------------- context


class SimContext(OrderMethods):
    """The engine's implementation of :class:`perpdesk.strategies.base.Context`."""

    def __init__(self, engine: Engine) -> None:
        self._e = engine
        # the order methods hand their request straight to the engine (one call, no
        # re-packed keyword arguments): same signature as ``_send`` below
        self._send = engine.submit  # type: ignore[method-assign]
        self.cancel = engine.cancel  # type: ignore[method-assign]

    @property
    def now_ns(self) -> int:
        """The simulated clock (ns)."""
        return self._e.now_ns

    @property
    def instruments(self) -> Mapping[str, Instrument]:
        """Instruments by engine symbol."""
        return self._e.instruments

    @property
    def portfolio(self) -> Any:
        """``Account.view()``: a read-only snapshot."""
        return self._e.account.view()

    def position(self, symbol: str, position_side: PositionSide = PositionSide.BOTH) -> Any:
        """``Account.position``."""
        return self._e.account.position(symbol, position_side)

    def last_price(self, symbol: str) -> float:
        """Last traded price / bar close of ``symbol`` known now (NaN if none)."""
        return self._e.quote(symbol).last_price

    def _send(self, symbol: str, side: Side, qty_base: float | Decimal, **kw: Any) -> str:
        """Orders go to :meth:`Engine.submit` (checked there; arrive after the latency)."""
        return self._e.submit(symbol, side, qty_base, **kw)

    def cancel(self, client_order_id: str) -> bool:
        """Request a cancel (travels with the latency)."""
        return self._e.cancel(client_order_id)

    def open_orders(self, symbol: str | None = None) -> list[Order]:
        """Orders sent and not yet done, in submission order."""
        return [o for o in self._e.open.values() if symbol is None or o.symbol == symbol]

    def set_timer(self, ts_ns: int, name: str) -> None:
        """``on_timer`` once at ``ts_ns`` (not in the past)."""
        self._e.set_timer(ts_ns, name, 0)

    def set_interval(self, every_ns: int, name: str, start_ns: int | None = None) -> None:
        """``on_timer`` every ``every_ns`` from ``start_ns`` (default now + every)."""
        if every_ns <= 0:
            raise ValueError(f"timer {name}: every_ns {every_ns} must be > 0")
        first = self._e.now_ns + every_ns if start_ns is None else start_ns
        self._e.set_timer(first, name, every_ns)


# --------------------------------------------------------------------- engine


@dataclass(slots=True)
class _SymState:
    """Market state of one symbol and the global sequence numbers of its last updates (so a
    lazily caught-up older row never overwrites a newer one)."""

    quote: Quote = field(default_factory=Quote)
    px_seq: int = -1
    book_seq: int = -1
    mark: float = math.nan
    mark_seq: int = -1


def _updater(kind: str, st: _SymState, price: bool, mark: bool) -> Any:
    """A closure ``(event, seq) -> None`` applying one event of ``kind`` to ``st``."""
    q = st.quote
    if kind == BAR:

        def bar(ev: Any, seq: int) -> None:
            if price:
                q.last_price = ev.close
                st.px_seq = seq
            if mark:
                st.mark = ev.close
                st.mark_seq = seq

        return bar
    if kind == TRADE:
        if mark:

            def trade_mark(ev: Any, seq: int) -> None:
                q.last_price = st.mark = ev.price
                st.px_seq = st.mark_seq = seq

            return trade_mark

        def trade(ev: Any, seq: int) -> None:
            q.last_price = ev.price
            st.px_seq = seq

        return trade
    if kind == BOOK:

        def book(ev: Any, seq: int) -> None:
            q.bid = ev.bid
            q.bid_qty_base = ev.bid_qty_base
            q.ask = ev.ask
            q.ask_qty_base = ev.ask_qty_base
            st.book_seq = seq

        return book
    if kind == MARK and mark:

        def mark_price(ev: Any, seq: int) -> None:
            st.mark = ev.mark_price
            st.mark_seq = seq

        return mark_price

    def nothing(ev: Any, seq: int) -> None:
        return None

    return nothing


@dataclass(slots=True)
class _StreamInfo:
    spec: StreamSpec
    kind: str
    symbol: str
    make: Any
    handler: Any  # bound strategy method or None
    price: bool  # updates the quote's last price (bars, trades)
    book: bool  # updates bid/ask
    match: bool  # fill model matches resting orders on it
    mark: bool  # the symbol's mark source
    traded: bool  # the symbol is an instrument of the account
    st: _SymState
    update: Any  # (event, seq) -> None, set once the mark source is known
    full: bool = False  # needs the full dispatch (matching, funding, marks for liquidation)
    matcher: Any = None  # the fill model's on_bar/on_trade/on_book when ``match``
    settles: bool = False  # a funding stream of a traded perp


def normalise_instruments(instruments: Iterable[Instrument]) -> dict[str, Instrument]:
    """Instruments keyed by engine symbol; a spot instrument named like its perp
    (``BTCUSDT``, kind SPOT, as the catalog stores it) is renamed ``BTCUSDT.SPOT``."""
    out: dict[str, Instrument] = {}
    for inst in instruments:
        if inst.kind is _SPOT and not inst.symbol.endswith(SPOT_SUFFIX):
            inst = dataclasses.replace(inst, symbol=spot_symbol(inst.symbol))
        if inst.symbol in out:
            raise EngineError(f"instrument {inst.symbol} given twice")
        out[inst.symbol] = inst
    return out


class Engine:
    """One backtest run. Build it, call :meth:`run` once.

    ``replay``: the merged data; ``instruments``: what the account may trade (others may
    still be replayed as data); ``account``: an :class:`AccountConfig` (or a ready
    :class:`Account`); ``fill_model``: :class:`BarFillModel` (default) or
    :class:`~perpdesk.sim.fills.TickFillModel`; ``costs``: fee/slippage/latency models;
    ``equity_every_ns``: equity sampling period (None: only at the end).
    """

    def __init__(
        self,
        strategy: Strategy,
        replay: Replay,
        instruments: Iterable[Instrument],
        account: AccountConfig | Account,
        fill_model: FillModel | None = None,
        costs: Costs | None = None,
        *,
        equity_every_ns: int | None = None,
    ) -> None:
        self.strategy = strategy
        self.replay = replay
        self.instruments = normalise_instruments(instruments)
        self.account = (
            account if isinstance(account, Account) else account.build(self.instruments.values())
        )
        self.fill_model: FillModel = fill_model if fill_model is not None else BarFillModel()
        self.costs = costs if costs is not None else Costs()
        self._slippage = self.costs.slippage
        self._arrival_ns = self.costs.latency.arrival_ns
        # a ConstantLatency's delay (ns), added inline (what its arrival_ns does); None: call
        # the latency model for every order and cancel
        lat = self.costs.latency
        self._lat_ns: int | None = (
            lat.latency_ns
            if lat.__class__ is ConstantLatency and lat.latency_ns.__class__ is int
            else None
        )
        if equity_every_ns is not None and equity_every_ns <= 0:
            raise EngineError(f"equity_every_ns {equity_every_ns} must be > 0")
        self.equity_every_ns = equity_every_ns
        self.ctx = SimContext(self)
        self.now_ns = replay.start_ns if replay.start_ns is not None else 0
        self._hedge = self.account.hedge_mode
        # order state
        self.open: dict[str, Order] = {}  # sent, not done (pending + working)
        self._working: dict[str, WorkingOrder] = {}
        # resting orders per symbol in arrival (time priority) order, keyed by their unique
        # ``seq``: removing one is a dict delete, not a scan of the book
        self._books: dict[str, dict[int, WorkingOrder]] = {}
        self._bands: dict[str, tuple[float, float]] = {}
        self._ids: set[str] = set()
        self._exact: dict[str, Decimal] = {}  # exact quantity of each order sent
        # per lot size, per whole number of lots k: (k × lot as Decimal, its float, whether
        # that float passes the lot test of _passes_check) — submit's memo
        self._snaps: dict[float, dict[int, tuple[Decimal, float, bool]]] = {}
        self._ended = False
        self._n_orders = 0
        self._seq = 0
        self._heap: list[tuple] = []
        # the last time looked up in the loaded chunk by _drain (searchsorted once per time)
        self._ss_ts = -1
        self._ss_chunk: Chunk | None = None
        self._ss_pos = 0
        self._ts_list: list[int] | None = None  # the loaded chunk's times as a list, once built
        # market state
        self._state: dict[str, _SymState] = {s: _SymState() for s in self.instruments}
        self._has_pos: set[str] = set()
        # records
        self._fills: list[Fill] = []
        self._orders: list[Order] = []
        self._rejects: list[tuple[int, str, str, str]] = []
        self._funding: list[tuple[int, str, float, float, Decimal]] = []
        self._equity: list[tuple[int, float, float]] = []
        self._events = 0
        self._dispatched = 0
        self._setup_streams()

    # ------------------------------------------------------------------ setup

    def _setup_streams(self) -> None:
        fm = self.fill_model.matches
        infos: list[_StreamInfo] = []
        # per symbol: the bar stream used for fills = the shortest bars of that symbol
        fill_bar: dict[str, int] = {}
        mark_src: dict[str, tuple[int, int]] = {}  # symbol -> (rank, stream)
        for i, spec in enumerate(self.replay.streams):
            kind, sym = spec.kind, spec.engine_symbol
            handler = None
            cb = _CALLBACK_OF_KIND[kind]
            if overridden(self.strategy, cb):
                handler = getattr(self.strategy, cb)
            infos.append(
                _StreamInfo(
                    spec,
                    kind,
                    sym,
                    _event_maker(spec),
                    handler,
                    price=kind in (BAR, TRADE),
                    book=kind == BOOK,
                    match=False,
                    mark=False,
                    traded=sym in self.instruments,
                    st=self._state.setdefault(sym, _SymState()),
                    update=None,
                    full=False,
                )
            )
            if kind == BAR:
                j = fill_bar.get(sym)
                if j is None or spec.interval_s < self.replay.streams[j].interval_s:
                    fill_bar[sym] = i
            rank = {"mark_price": 0}.get(spec.dataset)
            if rank is None:
                rank = 1 if spec.dataset.startswith("mark_bars_") else None
            if rank is None and kind in (BAR, TRADE):
                rank = 2 if kind == BAR else 3
            if rank is not None and (sym not in mark_src or rank < mark_src[sym][0]):
                mark_src[sym] = (rank, i)
        for i, info in enumerate(infos):
            if info.kind == BAR:
                info.match = "bar" in fm and fill_bar.get(info.symbol) == i
            elif info.kind == TRADE:
                info.match = "trade" in fm
            elif info.kind == BOOK:
                info.match = "book" in fm
            info.mark = mark_src.get(info.symbol, (0, -1))[1] == i
            info.update = _updater(info.kind, info.st, info.price, info.mark)
            if info.match:
                info.matcher = {
                    BAR: self.fill_model.on_bar,
                    TRADE: self.fill_model.on_trade,
                    BOOK: self.fill_model.on_book,
                }[info.kind]
            info.settles = (
                info.kind == FUNDING and info.traded and self.instruments[info.symbol].kind is _PERP
            )
        self._infos = infos
        self._streams_of: dict[str, list[int]] = {}
        for i, info in enumerate(infos):
            self._streams_of.setdefault(info.symbol, []).append(i)
        self._base_hot = np.array(
            [info.handler is not None or info.kind == FUNDING for info in infos], dtype=bool
        )
        self._hot = self._base_hot.copy()
        # the same flags as Python lists, for scalar reads (numpy's cost ~10x more each)
        self._base_hot_l: list[bool] = self._base_hot.tolist()
        self._hot_l: list[bool] = self._hot.tolist()
        self._cold: dict[str, tuple[int, ...]] = {}
        for sym in self._streams_of:
            self._set_cold(sym)
        self._carry: list[tuple[dict[str, Any], int] | None] = [None] * len(infos)
        self._seen: list[int] = [-1] * len(infos)
        self._all_events = [
            _events_maker(sp) if self._base_hot[i] else None
            for i, sp in enumerate(self.replay.streams)
        ]

    # ------------------------------------------------------------------ public API

    def quote(self, symbol: str) -> Quote:
        """The symbol's market state as of now (caught up from cold streams)."""
        self._catch_up(symbol)
        st = self._state.get(symbol)
        if st is None:
            st = self._state[symbol] = _SymState()
        return st.quote

    def submit(
        self,
        symbol: str,
        side: Side,
        qty_base: float | Decimal,
        *,
        type: OrderType = OrderType.MARKET,
        price: float | None = None,
        stop_price: float | None = None,
        tif: TimeInForce = TimeInForce.GTC,
        reduce_only: bool = False,
        position_side: PositionSide = PositionSide.BOTH,
        label: str = "",
        client_order_id: str | None = None,
    ) -> str:
        """Send an order now (see :func:`check_order`); returns its client id.

        ``qty_base`` may be a float or a ``Decimal``: it is snapped to the lot grid in
        Decimal (:func:`snap_qty`) and that exact quantity is what fills; ``Order.qty_base``
        holds it as a float (a quantity off the grid is refused by :func:`check_order`)."""
        sid = self.strategy.strategy_id
        now = self.now_ns
        if client_order_id is None:
            n_orders = self._n_orders = self._n_orders + 1
            client_order_id = f"{sid}-{n_orders}"
        inst = self.instruments.get(symbol)
        qty_f = None  # float(exact), from the memo
        qty_ok = None  # _passes_check's lot test of qty_f, from the memo
        if inst is None:
            exact = None
        elif qty_base.__class__ is float and (n := qty_base / (lot := inst.lot_size)) - n == 0.0:
            # snap_qty(qty_base, lot_size) of a finite float, inline (the hot path), memoised
            # per lot and whole number of lots: (exact, float(exact), its lot test)
            k = round(n)
            if abs(n - k) <= 1e-6:
                memo = self._snaps.get(lot)
                if memo is None:
                    memo = self._snaps[lot] = {}
                got = memo.get(k)
                if got is None:
                    e = Decimal(k) * _lot_decimal(lot)
                    ef = float(e)
                    n = ef / lot
                    got = memo[k] = (e, ef, not abs(n - round(n)) > 1e-6)
                exact, qty_f, qty_ok = got
            else:
                exact = None
        else:
            exact = snap_qty(qty_base, inst.lot_size)
        try:
            # enum members pass through as they are (Side(Side.BUY) is Side.BUY)
            order = _make_order(
                client_order_id,
                inst.venue if inst else "",
                symbol,
                side if side.__class__ is Side else Side(side),
                qty_f
                if qty_f is not None
                else (float(exact) if exact is not None else float(qty_base)),
                type if type.__class__ is OrderType else OrderType(type),
                # float(x) of a float is x itself
                price if price.__class__ is float else (None if price is None else float(price)),
                stop_price
                if stop_price.__class__ is float
                else (None if stop_price is None else float(stop_price)),
                tif if tif.__class__ is TimeInForce else TimeInForce(tif),
                reduce_only if reduce_only.__class__ is bool else bool(reduce_only),
                position_side
                if position_side.__class__ is PositionSide
                else PositionSide(position_side),
                now,
                sid,
                label,
            )
        except ValueError as exc:
            self._rejects.append((now, client_order_id, symbol, str(exc)))
            return client_order_id
        self._orders.append(order)
        ids = self._ids
        if qty_ok is not None:
            # _passes_check(order, inst, self._hedge, ids) with the lot test memoised
            ok = qty_ok and client_order_id not in ids
            if ok:
                step = inst.tick_size
                px = order.price
                if px is not None:
                    n = px / step
                    ok = not abs(n - round(n)) > 1e-6
                px = order.stop_price
                if ok and px is not None:
                    n = px / step
                    ok = not abs(n - round(n)) > 1e-6
                if ok:
                    ps = order.position_side
                    if inst.kind is _SPOT:
                        ok = ps is _PS_BOTH and order.type is not _STOP_MARKET
                    elif self._hedge:
                        ok = ps is not _PS_BOTH and not order.reduce_only
                    else:
                        ok = ps is _PS_BOTH
        else:
            ok = inst is not None and _passes_check(order, inst, self._hedge, ids)
        reason = None if ok else check_order(order, inst, hedge_mode=self._hedge, known_ids=ids)
        if reason is None and exact is None and not isinstance(qty_base, float):
            reason = f"qty {qty_base} is not a multiple of lot_size {inst.lot_size}"
        ids.add(client_order_id)
        if reason is not None:
            self._reject(order, reason)
            return client_order_id
        self.open[client_order_id] = order
        if exact is None:  # passed check_order's float tolerance
            exact = snap_qty(order.qty_base, inst.lot_size) or to_decimal(order.qty_base)
        self._exact[client_order_id] = exact
        seq = self._seq = self._seq + 1
        lat = self._lat_ns
        heapq.heappush(
            self._heap,
            (now + lat if lat is not None else self._arrival_ns(now), _ARRIVAL, seq, order),
        )
        return client_order_id

    def cancel(self, client_order_id: str) -> bool:
        """Request a cancel; it arrives after the latency."""
        if client_order_id not in self.open:
            return False
        seq = self._seq = self._seq + 1
        lat = self._lat_ns
        now = self.now_ns
        heapq.heappush(
            self._heap,
            (
                now + lat if lat is not None else self._arrival_ns(now),
                _CANCEL,
                seq,
                client_order_id,
            ),
        )
        return True

    def set_timer(self, ts_ns: int, name: str, every_ns: int) -> None:
        """Schedule a timer (``every_ns`` > 0 repeats)."""
        if ts_ns < self.now_ns:
            raise ValueError(f"timer {name}: {ts_ns} is before now ({self.now_ns})")
        self._push(ts_ns, _TIMER, (name, every_ns))

    # ------------------------------------------------------------------ time events

    def _push(self, ts_ns: int, cls: int, payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (ts_ns, cls, self._seq, payload))

    def _drain(self, upto_ns: int, strict: bool = False) -> None:
        """Run engine time events with time ≤ ``upto_ns`` (< when ``strict``)."""
        heap = self._heap
        pop = heapq.heappop
        working = self._working
        arrive = self._arrive
        done = self._done
        last = None  # the time of the last event run by this call
        while heap:
            top = heap[0][0]
            if top > upto_ns or (strict and top == upto_ns):
                break
            ts, cls, _, payload = pop(heap)
            # the clock and the chunk position only move forward during a drain: after the
            # first event at ``ts`` they are already where another event at ``ts`` puts them
            if ts != last:
                last = ts
                if ts > self.now_ns:
                    self.now_ns = ts
                chunk = self._chunk
                if chunk is not None:
                    # _pos = max(_pos, first position of the chunk at or after ts)
                    tl = self._ts_list
                    if tl is not None:
                        pos = self._pos
                        if pos < len(tl) and tl[pos] < ts:  # else that position is <= pos
                            self._pos = bisect.bisect_left(tl, ts, pos)
                    else:
                        if ts != self._ss_ts or self._ss_chunk is not chunk:
                            self._ss_ts, self._ss_chunk = ts, chunk
                            self._ss_pos = int(np.searchsorted(self._ts, ts, "left"))
                        if self._ss_pos > self._pos:
                            self._pos = self._ss_pos
            if cls == _ARRIVAL:
                arrive(payload)
            elif cls == _CANCEL:
                # self._cancel_arrives(payload), inline
                w = working.get(payload)
                if w is not None:
                    done(w)
                else:
                    self.open.pop(payload, None)  # still in flight: dropped on arrival
            elif self._ended:
                continue  # after on_end: only orders and cancels still arrive
            elif cls == _EQUITY:
                self._sample(ts)
                self._push(ts + self.equity_every_ns, _EQUITY, None)
            else:
                name, every = payload
                if every:
                    self._push(ts + every, _TIMER, payload)
                self.strategy.on_timer(self.ctx, Timer(ts, name))
            if self._dirty and self._chunk is not None:
                return  # the hot set changed: the loop rescans the chunk from here first

    def _sample(self, ts_ns: int) -> None:
        a = self.account
        self._equity.append((ts_ns, float(a.equity_usd), float(a.cash_usd)))

    # ------------------------------------------------------------------ orders at the venue

    def _reject(self, order: Order, reason: str) -> None:
        self._rejects.append((self.now_ns, order.client_order_id, order.symbol, reason))
        if self.open.get(order.client_order_id) is order:
            del self.open[order.client_order_id]
        self.strategy.on_reject(self.ctx, order, reason)

    def _arrive(self, order: Order) -> None:
        cid = order.client_order_id
        if cid not in self.open:
            return  # cancelled before arrival
        symbol = order.symbol
        # q = self.quote(symbol), inline (a catch-up only when the symbol has cold streams)
        if self._cold.get(symbol):
            self._catch_up(symbol)
        st = self._state.get(symbol)
        if st is None:
            st = self._state[symbol] = _SymState()
        q = st.quote
        otype = order.type
        if otype is _LIMIT:
            ref = order.price
        elif otype is _STOP_MARKET:
            ref = order.stop_price
        else:
            ref = q.last_price
        exact = self._exact.get(cid)
        if exact is None:
            reason = check_arrival(order, self.account, ref, exact)
        else:
            # check_arrival(order, self.account, ref, exact) with reducible_qty, inline
            acct = self.account
            side = order.side
            ps = order.position_side
            pos = acct.position_qty(symbol, ps)
            hedge = self._hedge  # = acct.hedge_mode (read at construction)
            if order.reduce_only or (
                hedge and ((ps is _PS_LONG and side is _SELL) or (ps is _PS_SHORT and side is _BUY))
            ):
                if pos == 0 or (pos > 0) == (side is _BUY):
                    reason = "reduce-only order would not reduce the position"
                elif hedge and exact > abs(pos):
                    reason = f"closing {order.qty_base} exceeds the {ps} position {abs(pos)}"
                else:
                    reason = None
            elif math.isnan(ref):
                reason = "no price known yet"
            else:
                reason = acct.can_open(symbol, side, exact, ref, ps)
        if reason is not None:
            self._reject(order, reason)
            return
        seq = self._seq = self._seq + 1
        w = WorkingOrder(order, self.now_ns, order.qty_base, seq, exact)
        res = self.fill_model.on_arrival(w, q, self._slippage)
        if res.reject_reason is not None:
            self._reject(order, res.reject_reason)
            return
        working = self._working
        working[cid] = w
        fills = None
        if res.executions:
            fills = [f for ex in res.executions if (f := self._execute(w, ex)) is not None]
        if cid in working:
            if res.rests and w.remaining_base > 0:
                book = self._books.get(symbol)
                if book is None:
                    book = self._books[symbol] = {}
                book[seq] = w
                band = self._bands.get(symbol)
                if band is not None:  # widen the band by this order (see _reaches)
                    self._bands[symbol] = _band_with(band, order)
                if len(book) == 1:  # the hot set depends on whether the book is empty
                    self._update_hot(symbol)
            else:
                self._done(w)
        if fills:
            self._notify(fills)

    def _cancel_arrives(self, cid: str) -> None:
        w = self._working.get(cid)
        if w is not None:
            self._done(w)
        else:
            self.open.pop(cid, None)  # still in flight: it will be dropped on arrival

    def _done(self, w: WorkingOrder) -> None:
        o = w.order
        cid = o.client_order_id
        self._working.pop(cid, None)
        self.open.pop(cid, None)
        sym = o.symbol
        book = self._books.get(sym)
        band = self._bands.get(sym)
        if band is not None:
            # the band stays what _reaches would rebuild without this order when the order
            # lies strictly inside it (it sets neither edge); else it is rebuilt on demand
            t = o.type
            if t is _LIMIT:
                inside = o.price < band[0] if o.side is _BUY else o.price > band[1]
            elif t is _STOP_MARKET:
                inside = o.stop_price > band[1] if o.side is _BUY else o.stop_price < band[0]
            else:
                inside = False
            if not inside:
                del self._bands[sym]
        if book and book.get(w.seq) is w:  # identity: a working order is one object
            del book[w.seq]
            if not book:
                self._update_hot(sym)

    def _execute(self, w: WorkingOrder, ex: Execution) -> Fill | None:
        """Book one execution of ``w`` (the pure step's result) on the account."""
        o = w.order
        if o.client_order_id not in self._working:
            return None
        inst = self.instruments[o.symbol]
        rem = w.remaining_exact
        if rem is not None and ex.qty_base >= w.remaining_base:
            qty_dec = rem  # the whole remainder, exactly (no float floor, no dust)
        else:
            qty_dec = _to_lot(min(ex.qty_base, w.remaining_base), inst.lot_size)
            if rem is not None and qty_dec > rem:
                qty_dec = rem
        pos = self.account.position_qty(o.symbol, o.position_side)
        red = reducible_qty(o, pos, self._hedge)
        if red is None and inst.kind is _SPOT and o.side is _SELL:
            red = max(pos, Decimal(0))  # a spot leg sells only what it holds
        if red is not None and qty_dec > red:
            qty_dec = red
            if red == 0:
                self._rejects.append(
                    (self.now_ns, o.client_order_id, o.symbol, "expired: nothing left to reduce")
                )
                self._done(w)
                return None
        if qty_dec <= 0:
            return None
        maker_exact = ex.liquidity is _MAKER or ex.price == ex.ref_price
        price = _to_tick(ex.price, inst.tick_size, o.side, maker_exact)
        fee = self.costs.fees.fee_usd(o.symbol, inst.kind, qty_dec * price, ex.liquidity)
        rp = ex.ref_price
        ref = _REF_DEC.get(rp) if rp.__class__ is float and 0.0 < rp < math.inf else None
        if ref is None:
            ref = Decimal(repr(rp))
            if rp.__class__ is float and 0.0 < rp < math.inf:  # memoised (positive floats)
                if len(_REF_DEC) >= 65_536:
                    _REF_DEC.clear()
                _REF_DEC[rp] = ref
        sign = 1 if o.side is _BUY else -1  # o.side.sign
        slip = (sign * (price - ref) * qty_dec).quantize(_Q8, ROUND_HALF_EVEN) + 0
        fill = _make_fill(
            o.client_order_id,
            o.venue,
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
        self._fills.append(fill)
        w.remaining_base -= float(qty_dec)
        if rem is not None:
            w.remaining_exact = rem - qty_dec
            w.remaining_base = float(w.remaining_exact)
        if w.remaining_base < inst.lot_size / 2:
            w.remaining_base = 0.0
            self._done(w)
        self._position_changed(o.symbol)
        return fill

    def _position_changed(self, symbol: str) -> None:
        a = self.account
        if self.instruments[symbol].kind is _PERP and self._hedge:
            has = a.position_qty(symbol, _PS_LONG) != 0 or a.position_qty(symbol, _PS_SHORT) != 0
        else:
            has = a.position_qty(symbol, _PS_BOTH) != 0
        if has != (symbol in self._has_pos):
            if has:
                self._has_pos.add(symbol)
            else:
                self._has_pos.discard(symbol)
            self._update_hot(symbol)

    def _notify(self, fills: Sequence[Fill]) -> None:
        on_fill = self.strategy.on_fill
        ctx = self.ctx
        heap = self._heap
        for f in fills:
            on_fill(ctx, f)
            if heap and heap[0][0] <= self.now_ns:  # else _drain would run nothing
                self._drain(self.now_ns)

    # ------------------------------------------------------------------ hot streams

    def _update_hot(self, symbol: str) -> None:
        orders = bool(self._books.get(symbol))
        pos = symbol in self._has_pos
        for i in self._streams_of.get(symbol, ()):
            info = self._infos[i]
            h = bool(
                self._base_hot_l[i]
                or (orders and (info.price or info.book or info.match))
                or (pos and info.mark)
            )
            info.full = bool(
                (info.settles and pos)
                or (orders and info.match)
                or (pos and info.mark and info.traded)
            )
            if h != self._hot_l[i]:
                if h:
                    self._catch_up(symbol)  # state of the now-hot stream up to here
                self._hot[i] = h
                self._hot_l[i] = h
                self._set_cold(symbol)
                self._dirty = True

    def _set_cold(self, symbol: str) -> None:
        """The symbol's cold streams that carry prices, book tops or marks, in stream
        order: what :meth:`_catch_up` reads (kept in step with ``_hot``)."""
        self._cold[symbol] = tuple(
            i
            for i in self._streams_of.get(symbol, ())
            if not self._hot_l[i]
            and (self._infos[i].price or self._infos[i].book or self._infos[i].mark)
        )

    def _last_row(self, i: int) -> tuple[dict[str, Any], int] | None:
        """Values and global sequence number of stream ``i``'s last row before now."""
        ch = self._chunk
        if ch is not None:
            r, p = ch.last_before(i, self._pos)
            if r >= 0:
                cols = ch.columns[i]
                return {k: v[r].item() for k, v in cols.items()}, self._base + p
        return self._carry[i]

    def _catch_up(self, symbol: str) -> None:
        """Bring the symbol's quote and mark up to date from its cold streams."""
        for i in self._cold.get(symbol, ()):
            info = self._infos[i]
            got = self._last_row(i)
            if got is None or got[1] <= self._seen[i]:
                continue
            vals, seq = got
            self._seen[i] = seq
            self._apply_values(info, vals, seq)

    @staticmethod
    def _apply_values(info: _StreamInfo, v: Mapping[str, Any], seq: int) -> None:
        st = info.st
        q = st.quote
        if info.price and seq > st.px_seq:
            q.last_price = v["close"] if info.kind == BAR else v["price"]
            st.px_seq = seq
        if info.book and seq > st.book_seq:
            q.bid, q.bid_qty_base = v["bid_px"], v["bid_qty"]
            q.ask, q.ask_qty_base = v["ask_px"], v["ask_qty"]
            st.book_seq = seq
        if info.mark and seq > st.mark_seq:
            st.mark = v.get("mark_px", v.get("close", v.get("price")))
            st.mark_seq = seq

    def _mark_of(self, symbol: str) -> float:
        q = self.quote(symbol)
        st = self._state[symbol]
        return q.last_price if math.isnan(st.mark) else st.mark

    # ------------------------------------------------------------------ dispatch

    def _dispatch(self, p: int, info: _StreamInfo, ev: Any) -> None:
        """The full path of one event: state, matching, funding, marks, the strategy."""
        st = info.st
        info.update(ev, self._base + p)
        fills: list[Fill] | None = None
        # 1. matching of resting orders
        if info.match:
            book = self._books.get(info.symbol)
            if book and self._reaches(info, book, ev):
                matched = info.matcher(list(book.values()), ev, st.quote, self._slippage)
                if matched:
                    fills = []
                    for w, ex in matched:
                        f = self._execute(w, ex)
                        if f is not None:
                            fills.append(f)
        # 2. funding
        if info.settles:
            self._settle(ev)
        # 3. marks → liquidations
        if info.mark and info.traded and info.symbol in self._has_pos:
            liq = self.account.update_mark(info.symbol, self.now_ns, st.mark)
            if liq:  # cross margin: may close every symbol's positions
                self._fills.extend(liq)
                fills = (fills or []) + liq
                for sym in dict.fromkeys(f.symbol for f in liq):
                    self._position_changed(sym)
        if fills:
            self._notify(fills)
        # 4. the strategy
        if info.handler is not None:
            info.handler(self.ctx, ev)
            if self._heap and self._heap[0][0] <= self.now_ns:
                self._drain(self.now_ns)

    def _reaches(self, info: _StreamInfo, book: dict[int, WorkingOrder], ev: Any) -> bool:
        """False when a trade/bar cannot fill or trigger any resting order: a buy limit
        needs a price at or below it, a sell limit at or above, a buy stop at or above, a
        sell stop at or below (true of every fill model here; a pre-filter, not a rule)."""
        if info.kind == TRADE:
            low = high = ev.price
        elif info.kind == BAR:
            low, high = ev.low, ev.high
        else:
            return True
        band = self._bands.get(info.symbol)
        if band is None:  # as _band_with over the book, inline
            lo, hi = -math.inf, math.inf
            for w in book.values():
                o = w.order
                if o.type is _LIMIT:
                    if o.side is _BUY:
                        lo = max(lo, o.price)
                    else:
                        hi = min(hi, o.price)
                elif o.type is _STOP_MARKET:
                    if o.side is _BUY:
                        hi = min(hi, o.stop_price)
                    else:
                        lo = max(lo, o.stop_price)
                else:  # a market order waiting for the next bar
                    lo = math.inf
            band = self._bands[info.symbol] = (lo, hi)
        return low <= band[0] or high >= band[1]

    def _settle(self, ev: FundingSettlement) -> None:
        sym = ev.symbol
        if sym not in self._has_pos:
            return
        mark = ev.mark_price
        if math.isnan(mark):
            mark = self._mark_of(sym)
        if math.isnan(mark):
            raise EngineError(f"{sym}: funding at {ev.ts_ns} with no mark price known")
        paid = self.account.settle_funding(sym, ev.ts_ns, ev.funding_rate, mark)
        self._funding.append((ev.ts_ns, sym, ev.funding_rate, mark, paid))

    # ------------------------------------------------------------------ the loop

    def run(self) -> EngineResult:
        """Replay everything and return the result.

        Python's automatic garbage collection is paused during the run (and restored
        after), the young generation collected once per chunk: events are acyclic and
        freed by reference counting, while the generational collector's passes over the
        millions of live event objects of a chunk cost ~15-20 % of a bar-driven run."""
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            return self._run()
        finally:
            if gc_was_enabled:
                gc.enable()

    def _run(self) -> EngineResult:
        self._chunk: Chunk | None = None
        self._pos = 0
        self._base = 0
        self._dirty = False
        chunks = self.replay.chunks()
        first = next(chunks, None)
        start = self.replay.start_ns
        if start is None:  # the run starts at its first event
            start = int(first.ts_ns[0]) if first is not None else 0
        self.now_ns = start
        if self.equity_every_ns is not None:
            self._push(start, _EQUITY, None)
        self.strategy.on_start(self.ctx)
        self._drain(self.now_ns)
        infos = self._infos
        heap = self._heap
        ctx = self.ctx
        all_events = self._all_events
        n_disp = 0
        for ch in itertools.chain([first] if first is not None else [], chunks):
            self._chunk = ch
            self._ts = ch.ts_ns
            self._sid = ch.stream
            n = len(ch)
            ts_list: list[int] | None = None
            self._ts_list = None
            lists: list[dict[str, list] | None] = [None] * len(infos)
            events: list[list | None] = [None] * len(infos)
            base = self._base
            rows = ch.row
            pos = 0  # every event before pos is done (dispatched, or cold and skipped)
            while True:
                self._dirty = False
                restart = False
                # scan a window at a time: a change of the hot set rescans only a window
                hi = min(n, pos + _WINDOW)
                hot_idx = np.flatnonzero(self._hot[ch.stream[pos:hi]])
                if hot_idx.size:
                    hot_idx += pos
                    if ts_list is None:
                        ts_list = self._ts_list = ch.ts_ns.tolist()
                    sids = ch.stream[hot_idx].tolist()
                    rws = rows[hot_idx].tolist()
                    for p, s, r in zip(hot_idx.tolist(), sids, rws, strict=True):
                        t = ts_list[p]
                        if heap and heap[0][0] <= t:
                            self._pos = pos
                            self._drain(t)
                            if self._dirty:  # the hot set changed at an earlier time
                                pos = self._pos
                                restart = True
                                break
                        self.now_ns = t
                        self._pos = p
                        evs = events[s]
                        if evs is not None:
                            ev = evs[r]
                        else:
                            mk = all_events[s]
                            if mk is not None:  # always hot: build the chunk's events at once
                                evs = events[s] = mk(ch.columns[s])
                                ev = evs[r]
                            else:
                                cols = lists[s]
                                if cols is None:
                                    cols = lists[s] = {
                                        k: v.tolist() for k, v in ch.columns[s].items()
                                    }
                                ev = infos[s].make(cols, r)
                        info = infos[s]
                        if info.full:
                            self._dispatch(p, info, ev)
                        else:  # fast path: state update and the callback
                            info.update(ev, base + p)
                            if info.handler is not None:
                                info.handler(ctx, ev)
                                if heap and heap[0][0] <= t:
                                    self._drain(t)
                        n_disp += 1
                        pos = p + 1
                        if self._dirty:
                            restart = True
                            break
                if restart:
                    continue
                if hi < n:
                    pos = hi
                    continue
                # engine events before the next chunk's first possible event (last chunk:
                # up to end_ns, or up to its last event) run while the chunk is loaded, so
                # a lazy catch-up sees exactly the rows before each event's time
                self._pos = pos
                if ch.horizon_ns != math.inf:
                    self._drain(int(ch.horizon_ns), strict=True)
                elif self.replay.end_ns is not None:
                    self._drain(self.replay.end_ns, strict=True)
                else:
                    self._drain(int(ch.ts_ns[-1]))
                if self._dirty:
                    pos = self._pos
                    continue
                break
            self.now_ns = max(self.now_ns, int(ch.ts_ns[-1]))
            for i, cols in enumerate(ch.columns):
                if cols is not None:
                    k = cols["_ev"].size - 1
                    last = int(ch.positions(i)[-1])
                    self._carry[i] = ({c: v[k].item() for c, v in cols.items()}, self._base + last)
            self._base += n
            self._events += n
            self._chunk = None
            gc.collect(0)
        self._dispatched = n_disp
        end = self.replay.end_ns
        if end is not None:
            self._drain(end, strict=True)
            self.now_ns = max(self.now_ns, end)
        self.strategy.on_end(self.ctx)
        self._drain(self.now_ns)
        # orders and cancels still travelling (sent with latency, e.g. in on_end) reach the
        # venue at their arrival times against the last market state (no data after the
        # end: a market order fills at the last price, a limit order may rest); timers and
        # equity samples after the end do not run
        self._ended = True
        while any(c in (_ARRIVAL, _CANCEL) for _, c, _, _ in self._heap):
            self._drain(max(t for t, c, _, _ in self._heap if c in (_ARRIVAL, _CANCEL)))
        self._sample(self.now_ns)
        return self._result()

    # ------------------------------------------------------------------ results

    def _result(self) -> EngineResult:
        def dec(xs: Iterable[Decimal]) -> pa.Array:
            vals = list(xs)
            try:  # exact when every value has at most 18 decimals (the usual case)
                return pa.array(vals, DEC_TYPE)
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
                pass
            # 38 significant digits, as decimal128(38, 18): quantities ≥ 1e10 need more
            # than the default 28 to be quantized to 1e-18
            with localcontext() as c:
                c.prec = 38
                return pa.array([x.quantize(_Q18) for x in vals], DEC_TYPE)

        f = self._fills
        fills = pa.table(
            {
                "ts_ns": _col(f, "ts_ns", pa.int64()),
                "client_order_id": _col(f, "client_order_id", pa.string()),
                "strategy_id": _col(f, "strategy_id", pa.string()),
                "venue": _col(f, "venue", pa.string()),
                "symbol": _col(f, "symbol", pa.string()),
                "side": _enum_col(f, "side"),
                "position_side": _enum_col(f, "position_side"),
                "qty_base": dec(map(operator.attrgetter("qty_base"), f)),
                "price": dec(map(operator.attrgetter("price"), f)),
                "fee_usd": dec(map(operator.attrgetter("fee_usd"), f)),
                "slippage_usd": dec(map(operator.attrgetter("slippage_usd"), f)),
                "liquidity": _enum_col(f, "liquidity"),
                "label": _col(f, "label", pa.string()),
            }
        )
        eq = self._equity
        equity = pa.table(
            {
                "ts_ns": pa.array([x[0] for x in eq], pa.int64()),
                "equity_usd": pa.array([x[1] for x in eq], pa.float64()),
                "cash_usd": pa.array([x[2] for x in eq], pa.float64()),
            }
        )
        fu = self._funding
        funding = pa.table(
            {
                "ts_ns": pa.array([x[0] for x in fu], pa.int64()),
                "symbol": pa.array([x[1] for x in fu], pa.string()),
                "funding_rate": pa.array([x[2] for x in fu], pa.float64()),
                "mark_price": pa.array([x[3] for x in fu], pa.float64()),
                "amount_usd": dec(x[4] for x in fu),
            }
        )
        rj = self._rejects
        rejections = pa.table(
            {
                "ts_ns": pa.array([x[0] for x in rj], pa.int64()),
                "client_order_id": pa.array([x[1] for x in rj], pa.string()),
                "symbol": pa.array([x[2] for x in rj], pa.string()),
                "reason": pa.array([x[3] for x in rj], pa.string()),
            }
        )
        return EngineResult(
            fills,
            equity,
            funding,
            rejections,
            self.account.breakdown(),
            self._events,
            self._dispatched,
            self.account,
            order_list=self._orders,
        )


def run_backtest(
    strategy: Strategy,
    data: Replay | Catalog | str | os.PathLike[str],
    instruments: Iterable[Instrument],
    account: AccountConfig | Account,
    fill_model: FillModel | None = None,
    costs: Costs | None = None,
    *,
    streams: Sequence[StreamSpec] | None = None,
    start_ns: int | None = None,
    end_ns: int | None = None,
    equity_every_ns: int | None = None,
) -> EngineResult:
    """Run ``strategy`` over ``data`` (a :class:`Replay`, or a catalog root plus
    ``streams``) and return an :class:`EngineResult`. See :class:`Engine`."""
    if isinstance(data, Replay):
        if streams is not None or start_ns is not None or end_ns is not None:
            raise EngineError("pass streams/start_ns/end_ns to the Replay, not to run_backtest")
        replay = data
    else:
        if not streams:
            raise EngineError("run_backtest over a catalog needs streams=[StreamSpec(...), ...]")
        replay = Replay(data, streams, start_ns, end_ns)
    engine = Engine(
        strategy, replay, instruments, account, fill_model, costs, equity_every_ns=equity_every_ns
    )
    return engine.run()
