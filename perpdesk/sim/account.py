"""The simulated exchange account: perp positions (one-way or hedge mode, cross or isolated
margin), spot legs, cash, funding, fees, maintenance margin and liquidation.

Money is booked in ``Decimal`` (ARCHITECTURE: money is exact where it is booked); floats
coming in (rates, marks) are converted with :func:`perpdesk.domain.to_decimal`.

Conventions (Binance USD-M unless said otherwise):

- ``cash_usd`` is the wallet balance in USD: initial cash + realised perp PnL − fees ±
  funding − spot purchases + spot sales. One cash pool serves the spot and the futures
  wallet; spot holdings are **not** futures collateral (on the exchange they sit in the
  spot wallet), so the margin balance is ``cash + unrealised perp PnL``. A spot buy whose
  commission the exchange took in the coin bought (``fee_qty_base`` of
  :meth:`Account.apply_fill`) holds ``qty − fee_qty_base`` and costs cash ``qty × price``.
- Perp positions keep the average entry price (Binance ``entryPrice``); realised PnL of a
  reduction is ``closed qty × (exit − average entry)`` (signed for shorts). The cost basis
  released by a partial close is rounded to 1e-10 USD and the rest stays in the position, so
  realised + unrealised PnL always equals the exact cash flows.
- Each book also keeps its open *lots* (one per opening fill: strategy, order id, size,
  price) for attribution and targeted closes: a reducing fill consumes first the lots of
  its own ``strategy_id`` (oldest first), then the oldest lots of others. Per-strategy price
  PnL is lot-based (``lot qty × (exit or mark − lot price)``), so per-strategy rows add up
  exactly to the account's totals.
- Funding: ``payment = −qty × mark × rate`` per book (qty signed, + long), rounded to 1e-8
  USD (USDT's precision on Binance) — longs pay and shorts receive when ``rate > 0``
  (Binance, "Introduction to Binance Futures Funding Rates"). Split over the lot owners by
  size; the last owner takes the rounding remainder so the split adds up.
- Maintenance margin per book from its notional at the mark and the symbol's bracket table
  (:mod:`perpdesk.risk.margin`). Liquidation (Binance "Liquidation Protocols"): cross —
  when margin balance < total maintenance margin, every perp position is closed at its
  symbol's last mark; isolated — when a position's isolated margin + its unrealised PnL <
  its maintenance margin, that position is closed at the mark. The exchange first tries
  partial reductions; we model the full close. The clearance fee is
  ``liquidation_fee_rate × closed notional``; Binance sets it per contract (Binance
  "Liquidation Protocols": a liquidation clearance fee on the liquidated amount), so the
  default 1.25 % is an assumption to replace with the contract's figure. It is charged in
  full: there is no insurance fund, and the wallet may go negative.
- Isolated margin: an opening fill moves ``notional / leverage`` (at the fill price) into the
  position's isolated margin; a reduction releases the closed fraction; funding of an
  isolated position is charged to its isolated margin (and to cash). Fees come from cash.
- Marks: :meth:`Account.update_mark` stores them; until a symbol has one, its last fill
  price serves.

Leverage defaults to 1× per perp (a backtest that forgets to choose gets the safest
setting; Binance's own default is 20×) and must not exceed the first bracket's maximum.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from types import MappingProxyType

from perpdesk.domain.instruments import Instrument, InstrumentKind
from perpdesk.domain.orders import Fill, Liquidity, PositionSide, Side, to_decimal
from perpdesk.errors import PerpdeskError
from perpdesk.risk.margin import (
    BINANCE_BTCUSDT_BRACKETS,
    Bracket,
    MarginError,
    liquidation_price,
    maintenance_margin,
    validate_brackets,
)

# enum members as module constants (an Enum class attribute costs ~100 ns a read)
_BUY = Side.BUY
_SELL = Side.SELL
_PS_BOTH = PositionSide.BOTH
_PS_LONG = PositionSide.LONG
_PS_SHORT = PositionSide.SHORT
_TAKER = Liquidity.TAKER
_PERP = InstrumentKind.PERP
_SPOT = InstrumentKind.SPOT

__all__ = ["Account", "AccountError", "AccountView", "Lot", "PnlRow", "Position"]

ZERO = Decimal(0)
USD_STEP = Decimal("1e-8")
"""Funding and liquidation fees are rounded (half-even) to this USD step."""
_PX_DEC: dict[float, Decimal] = {}
"""``Decimal(repr(price))`` of positive finite float prices and marks (:func:`_float_dec`)."""
COST_STEP = Decimal("1e-10")
"""Cost basis / isolated margin released by a partial close is rounded to this USD step."""
LIQUIDATION_LABEL = "LIQUIDATION"


def _float_dec(x: float) -> Decimal:
    """``Decimal(repr(x))`` of a finite float (what :func:`_dec` gives), memoised in
    :data:`_PX_DEC` for positive x (0.0 and -0.0 are one key but two reprs), at most 65,536
    entries."""
    if 0.0 < x < math.inf:
        d = _PX_DEC.get(x)
        if d is None:
            if len(_PX_DEC) >= 65_536:
                _PX_DEC.clear()
            d = _PX_DEC[x] = Decimal(repr(x))
        return d
    return Decimal(repr(x))


class AccountError(PerpdeskError):
    """A fill, mark or funding event the account cannot book (one line: symbol and why)."""


def _dec(x: Decimal | float | int | str, what: str) -> Decimal:
    if isinstance(x, Decimal):
        d = x
    elif isinstance(x, float):
        d = to_decimal(x)
    else:
        try:
            d = Decimal(x)
        except (InvalidOperation, TypeError, ValueError):
            raise AccountError(f"{what}: {x!r} is not a number") from None
    if not d.is_finite():
        raise AccountError(f"{what}: {x!r} is not a finite number")
    return d


@dataclass(frozen=True, slots=True)
class Position:
    """Read-only view of one book. ``qty_base`` is signed (+ long, − short); ``entry_price``
    the average entry (USD, 0 when flat); PnL, funding (+ received) and fees (+ paid) are
    cumulative since the start of the run. ``liquidation_price`` is ``None`` for spot, flat
    books and positions no positive price can liquidate."""

    symbol: str
    position_side: PositionSide
    qty_base: Decimal
    entry_price: Decimal
    realised_pnl_usd: Decimal
    funding_usd: Decimal
    fees_usd: Decimal
    liquidation_price: Decimal | None
    mark_price: Decimal | None = None
    unrealised_pnl_usd: Decimal = ZERO
    isolated_margin_usd: Decimal = ZERO
    leverage: int = 0
    is_spot: bool = False

    @property
    def notional_usd(self) -> Decimal:
        """``|qty| × mark`` (0 without a mark)."""
        return abs(self.qty_base) * self.mark_price if self.mark_price is not None else ZERO


@dataclass(frozen=True, slots=True)
class Lot:
    """An open lot of a book: what remains of one opening fill."""

    strategy_id: str
    client_order_id: str
    qty_base: Decimal
    price: Decimal
    ts_ns: int


@dataclass(frozen=True, slots=True)
class PnlRow:
    """PnL of one strategy on one symbol (both books of a hedge-mode symbol together).
    ``price_pnl_usd`` is realised + unrealised (lot-based, at last marks); ``funding_usd``
    is + when received; ``fees_usd`` + when paid; ``slippage_usd`` is reported only (already
    inside the fill prices, hence inside ``price_pnl_usd``)."""

    strategy_id: str
    symbol: str
    price_pnl_usd: Decimal
    funding_usd: Decimal
    fees_usd: Decimal
    slippage_usd: Decimal

    @property
    def total_usd(self) -> Decimal:
        """``price_pnl_usd + funding_usd − fees_usd``."""
        return self.price_pnl_usd + self.funding_usd - self.fees_usd


@dataclass(frozen=True, slots=True)
class AccountView:
    """Read-only snapshot of an account for strategies (nothing here can change it)."""

    cash_usd: Decimal
    equity_usd: Decimal
    unrealised_pnl_usd: Decimal
    margin_balance_usd: Decimal
    maint_margin_usd: Decimal
    available_usd: Decimal
    hedge_mode: bool
    margin_mode: str
    positions: tuple[Position, ...]
    marks: Mapping[str, Decimal]

    def position(
        self, symbol: str, position_side: PositionSide = PositionSide.BOTH
    ) -> Position | None:
        """The non-flat position of ``symbol``/``position_side``, or ``None``."""
        for p in self.positions:
            if p.symbol == symbol and p.position_side is position_side:
                return p
        return None


@dataclass(slots=True)
class _Lot:
    seq: int
    qty: Decimal
    price: Decimal
    client_order_id: str
    ts_ns: int


@dataclass(slots=True)
class _Owner:
    lots: deque[_Lot] = field(default_factory=deque)
    qty: Decimal = ZERO  # Σ lot qty (≥ 0)
    cost: Decimal = ZERO  # Σ lot qty × lot price (≥ 0)


@dataclass(slots=True)
class _Attr:
    realised: Decimal = ZERO
    funding: Decimal = ZERO
    fees: Decimal = ZERO
    slippage: Decimal = ZERO


@dataclass(slots=True)
class _Book:
    symbol: str
    position_side: PositionSide
    is_spot: bool
    qty: Decimal = ZERO
    cost: Decimal = ZERO  # signed average-cost basis of the open qty
    realised: Decimal = ZERO
    funding: Decimal = ZERO
    fees: Decimal = ZERO
    isolated_margin: Decimal = ZERO
    owners: dict[str, _Owner] = field(default_factory=dict)
    # unrealised PnL and maintenance margin at the current mark (None: to recompute);
    # cleared whenever the symbol's mark or the book's size/cost changes
    upnl_c: Decimal | None = None
    mm_c: Decimal | None = None


def _sign(x: Decimal) -> int:
    return (x > ZERO) - (x < ZERO)


class Account:
    """A simulated Binance-style account (see the module docstring for every convention).

    ``instruments``: the perps and spot legs it may trade (spot legs addressed as
    ``spot_symbol(perp)``); ``cash_usd``: starting wallet (≥ 0); ``hedge_mode``: Binance
    dual-side positions (fills must carry ``PositionSide.LONG``/``SHORT``) instead of one
    net ``BOTH`` position; ``margin_mode``: ``"cross"`` or ``"isolated"`` for all perps;
    ``leverage``: per perp symbol (default 1); ``brackets``: maintenance tables per perp
    symbol (default :data:`~perpdesk.risk.margin.BINANCE_BTCUSDT_BRACKETS`);
    ``liquidation_fee_rate``: clearance fee as a fraction of the liquidated notional.
    """

    def __init__(
        self,
        instruments: Iterable[Instrument],
        cash_usd: Decimal | float | str,
        *,
        hedge_mode: bool = False,
        margin_mode: str = "cross",
        leverage: Mapping[str, int] | None = None,
        brackets: Mapping[str, Sequence[Bracket]] | None = None,
        liquidation_fee_rate: Decimal | str = "0.0125",
    ) -> None:
        self._instruments: dict[str, Instrument] = {}
        for inst in instruments:
            if inst.symbol in self._instruments:
                raise AccountError(f"{inst.symbol}: instrument given twice")
            if inst.kind not in (_PERP, _SPOT):
                raise AccountError(f"{inst.symbol}: kind {inst.kind} is not traded by Account")
            self._instruments[inst.symbol] = inst
        self._cash = _dec(cash_usd, "cash_usd")
        if self._cash < ZERO:
            raise AccountError(f"cash_usd: {self._cash} is negative")
        if margin_mode not in ("cross", "isolated"):
            raise AccountError(f"margin_mode: {margin_mode!r} is not 'cross' or 'isolated'")
        self._hedge = bool(hedge_mode)
        self._margin_mode = margin_mode
        self._liq_fee_rate = _dec(liquidation_fee_rate, "liquidation_fee_rate")
        if not ZERO <= self._liq_fee_rate < Decimal(1):
            raise AccountError(f"liquidation_fee_rate: {self._liq_fee_rate} not in [0, 1)")
        perps = [s for s, i in self._instruments.items() if i.kind is _PERP]
        self._brackets: dict[str, tuple[Bracket, ...]] = {}
        given = dict(brackets or {})
        for sym in given:
            if sym not in perps:
                raise AccountError(f"brackets: {sym!r} is not a perp of this account")
        for sym in perps:
            try:
                self._brackets[sym] = validate_brackets(
                    given.get(sym, BINANCE_BTCUSDT_BRACKETS), name=f"brackets[{sym}]"
                )
            except MarginError as e:
                raise AccountError(str(e)) from None
        self._leverage: dict[str, int] = {}
        lev_given = dict(leverage or {})
        for sym in lev_given:
            if sym not in perps:
                raise AccountError(f"leverage: {sym!r} is not a perp of this account")
        for sym in perps:
            lev = lev_given.get(sym, 1)
            if isinstance(lev, bool) or not isinstance(lev, int):
                raise AccountError(f"leverage[{sym}]: {lev!r} is not an integer")
            top = self._brackets[sym][0].max_leverage
            if not 1 <= lev <= top:
                raise AccountError(f"leverage[{sym}]: {lev} not in 1..{top} (first bracket)")
            self._leverage[sym] = lev
        self._lev_dec = {sym: Decimal(lev) for sym, lev in self._leverage.items()}
        sides = (_PS_LONG, _PS_SHORT) if self._hedge else (_PS_BOTH,)
        self._books: dict[tuple[str, PositionSide], _Book] = {}
        self._symbol_books: dict[str, tuple[_Book, ...]] = {}
        for sym, inst in self._instruments.items():
            if inst.kind is _SPOT:
                bs: tuple[_Book, ...] = (_Book(sym, _PS_BOTH, True),)
            else:
                bs = tuple(_Book(sym, s, False) for s in sides)
            for b in bs:
                self._books[(sym, b.position_side)] = b
            self._symbol_books[sym] = bs
        self._perp_books = [b for b in self._books.values() if not b.is_spot]
        self._spot_books = [b for b in self._books.values() if b.is_spot]
        # the non-flat books, in the order of ``_perp_books`` / ``_spot_books`` (so sums
        # over them add the same terms in the same order as sums over every book): margin
        # checks on each mark update are O(open positions), not O(instruments)
        self._open_perp: list[_Book] = []
        self._open_spot: list[_Book] = []
        self._marks: dict[str, Decimal] = {}
        self._attr: dict[tuple[str, str], _Attr] = {}
        self._seq = 0
        self._fees_total = ZERO
        self._funding_total = ZERO
        # available margin as of the current state (None: to recompute); cleared by every
        # change of cash, marks or positions (apply_fill, update_mark, settle_funding)
        self._avail_c: Decimal | None = None

    # ------------------------------------------------------------------ lookups

    def _instrument(self, symbol: str) -> Instrument:
        inst = self._instruments.get(symbol)
        if inst is None:
            raise AccountError(f"{symbol}: unknown symbol (not among the account's instruments)")
        return inst

    def _book(self, symbol: str, position_side: PositionSide) -> _Book:
        inst = self._instrument(symbol)
        if inst.kind is _SPOT:
            if position_side is not _PS_BOTH:
                raise AccountError(f"{symbol}: a spot leg has no {position_side} side")
        elif self._hedge and position_side is _PS_BOTH:
            raise AccountError(f"{symbol}: hedge mode needs position_side LONG or SHORT")
        elif not self._hedge and position_side is not _PS_BOTH:
            raise AccountError(f"{symbol}: one-way mode takes position_side BOTH only")
        return self._books[(symbol, position_side)]

    def _attr_of(self, strategy_id: str, symbol: str) -> _Attr:
        key = (strategy_id, symbol)
        a = self._attr.get(key)
        if a is None:
            a = self._attr[key] = _Attr()
        return a

    def _mark(self, symbol: str) -> Decimal | None:
        return self._marks.get(symbol)

    # ------------------------------------------------------------------ booking

    def apply_fill(self, fill: Fill, fee_qty_base: Decimal = ZERO) -> None:
        """Book a fill: perp — update the book (one-way nets and may flip through zero;
        a hedge-mode book may only grow with its own side and shrink with the other, never
        flip), realised PnL and the fee into cash; spot — cash −/+ notional and − fee,
        holdings never negative. Raises :class:`AccountError` (nothing booked) on an unknown
        symbol, a wrong position side, a non-positive size or price, or an oversell.

        ``fee_qty_base`` (b, base units; 0: none; else a spot BUY with ``0 < b < qty``): the part of the
        commission the exchange took out of the coin bought (``fill.fee_usd`` = its value
        ``b × price``). The holding then grows by ``qty − b`` (one lot of ``qty − b`` at the
        fill price) and cash moves by ``−qty × price − fee_usd + b × price`` (= ``−qty ×
        price``: the coins paid the fee, not the cash), the fee still counts in the fees —
        the ledger's booking (:mod:`perpdesk.store.ledger`)."""
        book = self._books.get((fill.symbol, fill.position_side))
        if book is None:
            book = self._book(fill.symbol, fill.position_side)  # raises the one-line error
        if fee_qty_base:
            if not book.is_spot or fill.side is not _BUY:
                raise AccountError(
                    f"{fill.symbol}: fill {fill.client_order_id}: a fee in the base asset is "
                    "booked on spot buys only"
                )
            if not (isinstance(fee_qty_base, Decimal) and ZERO < fee_qty_base < fill.qty_base):
                raise AccountError(
                    f"{fill.symbol}: fill {fill.client_order_id}: fee_qty_base {fee_qty_base!r} "
                    f"not in (0, {fill.qty_base})"
                )
        qty = fill.qty_base
        price = fill.price
        if not (
            isinstance(qty, Decimal)
            and isinstance(price, Decimal)
            and isinstance(fill.fee_usd, Decimal)
            and isinstance(fill.slippage_usd, Decimal)
        ):
            raise AccountError(
                f"{fill.symbol}: fill {fill.client_order_id} qty/price/fee/slippage not Decimal"
            )
        if not qty > ZERO or not price > ZERO:
            raise AccountError(
                f"{fill.symbol}: fill {fill.client_order_id} needs qty > 0 and price > 0 "
                f"(got {qty} @ {price})"
            )
        d = qty if fill.side is _BUY else -qty
        if book.is_spot:
            if d < ZERO and qty > book.qty:
                raise AccountError(
                    f"{fill.symbol}: selling {qty} but only {book.qty} held "
                    f"(fill {fill.client_order_id})"
                )
        elif self._hedge:
            opens = (d > ZERO) == (book.position_side is _PS_LONG)
            if not opens and qty > abs(book.qty):
                raise AccountError(
                    f"{fill.symbol}: {fill.side} {qty} exceeds the {book.position_side} "
                    f"position {abs(book.qty)} (fill {fill.client_order_id})"
                )
        was_flat = True
        for b in self._symbol_books[fill.symbol]:
            if b.qty != ZERO:
                was_flat = False
                break
        self._avail_c = None
        self._touch(fill.symbol)
        d_held = d - fee_qty_base if fee_qty_base else d  # what the book's holding moves by
        realised, opened, closed, q_before = self._trade(book, d_held, price, fill)
        if (q_before == ZERO) != (book.qty == ZERO):
            if book.is_spot:
                self._open_spot = [b for b in self._spot_books if b.qty != ZERO]
            else:
                self._open_perp = [b for b in self._perp_books if b.qty != ZERO]
        fee = fill.fee_usd
        if book.is_spot:
            self._cash += -d * price - fee
            if fee_qty_base:  # the coins paid it: their value comes back (= −qty × price)
                self._cash += fee_qty_base * price
        else:
            self._cash += realised - fee
            if self._margin_mode == "isolated":
                if closed > ZERO:
                    if closed == abs(q_before):
                        book.isolated_margin = ZERO
                    else:
                        rel = (book.isolated_margin * closed / abs(q_before)).quantize(COST_STEP)
                        book.isolated_margin -= rel
                if opened > ZERO:
                    lev = Decimal(self._leverage[fill.symbol])
                    book.isolated_margin += (opened * price / lev).quantize(COST_STEP)
        book.realised += realised
        book.fees += fee
        self._fees_total += fee
        a = self._attr_of(fill.strategy_id, fill.symbol)
        a.fees += fee
        a.slippage += fill.slippage_usd
        if was_flat or fill.symbol not in self._marks:
            # a symbol that gets a position is valued at its fill price until the next mark
            # (not at the mark left from an earlier holding)
            self._marks[fill.symbol] = price
            self._touch(fill.symbol)

    def _trade(
        self, book: _Book, d: Decimal, price: Decimal, fill: Fill
    ) -> tuple[Decimal, Decimal, Decimal, Decimal]:
        """Apply signed size ``d`` at ``price``; returns (realised, opened, closed, qty
        before) with average-cost realised PnL."""
        q = book.qty
        if q == ZERO or (d > ZERO) == (q > ZERO):
            book.qty = q + d
            book.cost += d * price
            self._add_lot(book, fill, abs(d), price)
            return ZERO, abs(d), ZERO, q
        aq = abs(q)
        close = min(abs(d), aq)
        s = _sign(q)
        released = book.cost if close == aq else (book.cost * close / aq).quantize(COST_STEP)
        realised = s * close * price - released
        book.cost -= released
        book.qty = q - s * close
        self._consume(book, close, price, s, fill.strategy_id)
        rest = abs(d) - close
        if rest > ZERO:  # one-way flip through zero
            book.qty = d + q  # = sign(d) × rest
            book.cost = book.qty * price
            self._add_lot(book, fill, rest, price)
        return realised, rest, close, q

    def _add_lot(self, book: _Book, fill: Fill, qty: Decimal, price: Decimal) -> None:
        self._seq += 1
        o = book.owners.get(fill.strategy_id)
        if o is None:
            o = book.owners[fill.strategy_id] = _Owner()
        o.lots.append(_Lot(self._seq, qty, price, fill.client_order_id, fill.ts_ns))
        o.qty += qty
        o.cost += qty * price

    def _consume(self, book: _Book, qty: Decimal, price: Decimal, s: int, sid: str) -> None:
        """Close ``qty`` of lots at ``price``: ``sid``'s own lots first, then the oldest lots
        of others; each lot's PnL goes to its owner."""
        left = qty
        owners = book.owners
        while left > ZERO:
            o = owners.get(sid)
            osid = sid
            if o is None or not o.lots:
                osid, o = min(
                    ((k, v) for k, v in owners.items() if v.lots), key=lambda kv: kv[1].lots[0].seq
                )
            lot = o.lots[0]
            take = lot.qty if lot.qty <= left else left
            self._attr_of(osid, book.symbol).realised += s * take * (price - lot.price)
            o.qty -= take
            o.cost -= take * lot.price
            lot.qty -= take
            if lot.qty == ZERO:
                o.lots.popleft()
            left -= take
        for k in [k for k, v in owners.items() if not v.lots]:
            del owners[k]

    # ------------------------------------------------------------------ funding

    def settle_funding(self, symbol: str, ts_ns: int, rate: float, mark_price: float) -> Decimal:
        """Settle one funding payment on ``symbol``: per book ``−qty × mark × rate`` rounded
        to 1e-8 USD (longs pay when ``rate > 0``, shorts receive; reversed when negative).
        Booked to cash, the book, its isolated margin (isolated mode) and its lot owners.
        Returns the account's cash change in USD. Does not move the stored mark."""
        inst = self._instrument(symbol)
        if inst.kind is not _PERP:
            raise AccountError(f"{symbol}: funding settles on perps only")
        r = _dec(rate, f"{symbol} funding rate at {ts_ns}")
        m = _dec(mark_price, f"{symbol} funding mark at {ts_ns}")
        if not m > ZERO:
            raise AccountError(f"{symbol}: funding mark price {m} at {ts_ns} is not > 0")
        self._avail_c = None
        total = ZERO
        for book in self._symbol_books[symbol]:
            if book.qty == ZERO:
                continue
            pay = (-book.qty * m * r).quantize(USD_STEP, rounding=ROUND_HALF_EVEN)
            book.funding += pay
            if self._margin_mode == "isolated":
                book.isolated_margin += pay
            s = _sign(book.qty)
            owners = sorted(book.owners.items())
            given = ZERO
            for i, (sid, o) in enumerate(owners):
                if i == len(owners) - 1:
                    share = pay - given
                else:
                    share = (-s * o.qty * m * r).quantize(USD_STEP, rounding=ROUND_HALF_EVEN)
                given += share
                self._attr_of(sid, symbol).funding += share
            total += pay
        self._cash += total
        self._funding_total += total
        return total

    # ------------------------------------------------------------------ marks and liquidation

    def _upnl(self, book: _Book) -> Decimal:
        if book.qty == ZERO:
            return ZERO
        u = book.upnl_c
        if u is None:
            u = book.upnl_c = book.qty * self._marks[book.symbol] - book.cost
        return u

    def _mm(self, book: _Book) -> Decimal:
        if book.qty == ZERO:
            return ZERO
        mm = book.mm_c
        if mm is None:
            mm = book.mm_c = maintenance_margin(
                book.qty * self._marks[book.symbol], self._brackets[book.symbol]
            )
        return mm

    def _touch(self, symbol: str) -> None:
        """The symbol's mark or a book's size changed: drop its cached PnL and margin."""
        for b in self._symbol_books[symbol]:
            b.upnl_c = b.mm_c = None

    def update_mark(self, symbol: str, ts_ns: int, mark_price: float) -> list[Fill]:
        """Store ``symbol``'s mark price and liquidate what it breaches: cross — every perp
        position when margin balance < total maintenance margin; isolated — a position of
        this symbol whose isolated margin + unrealised PnL < its maintenance margin.
        Liquidation fills (label ``LIQUIDATION``, taker, at the mark, fee =
        ``liquidation_fee_rate × notional`` rounded to 1e-8) are booked already and
        returned (one per lot owner and book)."""
        inst = self._instruments.get(symbol)
        if inst is None:
            inst = self._instrument(symbol)  # raises the one-line error
        if mark_price.__class__ is float and math.isfinite(mark_price):
            m = _float_dec(mark_price)  # what _dec gives, without building its message
        else:
            m = _dec(mark_price, f"{symbol} mark at {ts_ns}")
        if not m > ZERO:
            raise AccountError(f"{symbol}: mark price {m} at {ts_ns} is not > 0")
        self._marks[symbol] = m
        self._avail_c = None
        for b in self._symbol_books[symbol]:  # self._touch(symbol), inline
            b.upnl_c = b.mm_c = None
        if inst.kind is not _PERP:
            return []
        fills: list[Fill] = []
        if self._margin_mode == "cross":
            # margin_balance_usd < maint_margin_usd, inline (the same sums in the same order)
            upnl = mm = ZERO
            for b in self._open_perp:
                upnl = upnl + self._upnl(b)
            for b in self._open_perp:
                mm = mm + self._mm(b)
            if self._cash + upnl < mm:
                for book in list(self._open_perp):
                    if book.qty != ZERO:
                        fills += self._liquidate(book, ts_ns)
        else:
            for book in self._symbol_books[symbol]:
                if book.qty != ZERO and book.isolated_margin + self._upnl(book) < self._mm(book):
                    fills += self._liquidate(book, ts_ns)
        return fills

    def _liquidate(self, book: _Book, ts_ns: int) -> list[Fill]:
        m = self._marks[book.symbol]
        side = _SELL if book.qty > ZERO else _BUY
        venue = self._instruments[book.symbol].venue
        owners = sorted(book.owners.items(), key=lambda kv: kv[1].lots[0].seq)
        out = []
        for k, (sid, o) in enumerate(owners):
            fee = (o.qty * m * self._liq_fee_rate).quantize(USD_STEP, rounding=ROUND_HALF_EVEN)
            f = Fill(
                client_order_id=f"liq-{book.symbol}-{book.position_side}-{ts_ns}-{k}",
                venue=venue,
                symbol=book.symbol,
                side=side,
                qty_base=o.qty,
                price=m,
                fee_usd=fee,
                liquidity=_TAKER,
                ts_ns=ts_ns,
                position_side=book.position_side,
                strategy_id=sid,
                label=LIQUIDATION_LABEL,
            )
            out.append(f)
        for f in out:
            self.apply_fill(f)
        return out

    # ------------------------------------------------------------------ read side

    @property
    def cash_usd(self) -> Decimal:
        """Wallet balance in USD (see the module docstring)."""
        return self._cash

    @property
    def hedge_mode(self) -> bool:
        """Whether perps keep independent LONG and SHORT books."""
        return self._hedge

    @property
    def margin_mode(self) -> str:
        """``"cross"`` or ``"isolated"``."""
        return self._margin_mode

    @property
    def fees_usd(self) -> Decimal:
        """All fees paid since the start (rebates negative), USD."""
        return self._fees_total

    @property
    def funding_usd(self) -> Decimal:
        """All funding received since the start (payments negative), USD."""
        return self._funding_total

    def leverage(self, symbol: str) -> int:
        """The perp's leverage setting."""
        self._instrument(symbol)
        if symbol not in self._leverage:
            raise AccountError(f"{symbol}: spot legs have no leverage")
        return self._leverage[symbol]

    def brackets(self, symbol: str) -> tuple[Bracket, ...]:
        """The perp's maintenance-margin table."""
        self._instrument(symbol)
        if symbol not in self._brackets:
            raise AccountError(f"{symbol}: spot legs have no margin brackets")
        return self._brackets[symbol]

    def mark(self, symbol: str) -> Decimal | None:
        """Last mark (or, before the first mark, last fill price) of ``symbol``."""
        self._instrument(symbol)
        return self._marks.get(symbol)

    def unrealised_pnl_usd(self, symbol: str | None = None) -> Decimal:
        """Unrealised PnL at the last marks against the average entry, USD: of one symbol
        (perp: its books; spot leg: holdings × mark − their cost), or of all perps when
        ``symbol`` is ``None`` (spot legs enter ``equity_usd`` at their full value)."""
        if symbol is None:
            total = ZERO  # = sum(..., ZERO): the same additions in the same order
            for b in self._open_perp:
                total = total + self._upnl(b)
            return total
        self._instrument(symbol)
        return sum((self._upnl(b) for b in self._symbol_books[symbol]), ZERO)

    @property
    def spot_value_usd(self) -> Decimal:
        """Spot holdings at their last marks, USD."""
        if not self._open_spot:
            return ZERO
        return sum((b.qty * self._marks[b.symbol] for b in self._open_spot), ZERO)

    @property
    def equity_usd(self) -> Decimal:
        """``cash + unrealised perp PnL + spot holdings × mark``, USD."""
        # self.unrealised_pnl_usd() and self.spot_value_usd, inline (the same sums)
        total = ZERO
        for b in self._open_perp:
            total = total + self._upnl(b)
        return self._cash + total + (self.spot_value_usd if self._open_spot else ZERO)

    @property
    def margin_balance_usd(self) -> Decimal:
        """Futures margin balance: ``cash + unrealised perp PnL`` (spot is not collateral)."""
        return self._cash + self.unrealised_pnl_usd()

    @property
    def maint_margin_usd(self) -> Decimal:
        """Σ maintenance margin of every perp book at its mark, USD."""
        total = ZERO  # = sum(..., ZERO): the same additions in the same order
        for b in self._open_perp:
            total = total + self._mm(b)
        return total

    @property
    def available_usd(self) -> Decimal:
        """Margin free for new positions, USD. Cross: ``margin balance − Σ |qty| × mark /
        leverage`` (Binance availableBalance, without open-order margin); isolated: ``cash −
        Σ isolated margins``. Cached until the next fill, mark or funding settlement."""
        avail = self._avail_c
        if avail is not None:
            return avail
        if self._margin_mode == "isolated":
            avail = self._cash - sum((b.isolated_margin for b in self._perp_books), ZERO)
        else:
            used = ZERO
            for b in self._open_perp:
                if b.qty != ZERO:
                    used += abs(b.qty) * self._marks[b.symbol] / Decimal(self._leverage[b.symbol])
            avail = self.margin_balance_usd - used
        self._avail_c = avail
        return avail

    def _liquidation_price(self, book: _Book) -> Decimal | None:
        if book.is_spot or book.qty == ZERO:
            return None
        sym = book.symbol
        brackets = self._brackets[sym]
        mark = self._marks.get(sym)
        if self._margin_mode == "isolated":
            kw = {"wallet_balance_usd": book.isolated_margin}
            legs = [book]
        else:
            others = [b for b in self._open_perp if b.symbol != sym]
            kw = {
                "wallet_balance_usd": self._cash,
                "other_maint_margin_usd": sum((self._mm(b) for b in others), ZERO),
                "other_upnl_usd": sum((self._upnl(b) for b in others), ZERO),
            }
            legs = [b for b in self._symbol_books[sym] if b.qty != ZERO]
        for b in legs:
            ep = b.cost / b.qty
            if b.position_side is _PS_BOTH:
                kw["both_qty_base"], kw["both_entry_price"] = b.qty, ep
            elif b.position_side is _PS_LONG:
                kw["long_qty_base"], kw["long_entry_price"] = b.qty, ep
            else:
                kw["short_qty_base"], kw["short_entry_price"] = -b.qty, ep
        return liquidation_price(brackets, start_price=mark, **kw)

    def _position(self, book: _Book) -> Position:
        mark = self._marks.get(book.symbol)
        return Position(
            symbol=book.symbol,
            position_side=book.position_side,
            qty_base=book.qty,
            entry_price=book.cost / book.qty if book.qty != ZERO else ZERO,
            realised_pnl_usd=book.realised,
            funding_usd=book.funding,
            fees_usd=book.fees,
            liquidation_price=self._liquidation_price(book),
            mark_price=mark,
            unrealised_pnl_usd=self._upnl(book),
            isolated_margin_usd=book.isolated_margin,
            leverage=self._leverage.get(book.symbol, 0),
            is_spot=book.is_spot,
        )

    def position(self, symbol: str, position_side: PositionSide = PositionSide.BOTH) -> Position:
        """Frozen view of one book (flat books too). Hedge mode asks for LONG or SHORT."""
        return self._position(self._book(symbol, position_side))

    def position_qty(self, symbol: str, position_side: PositionSide = PositionSide.BOTH) -> Decimal:
        """Signed size of one book (+ long, − short; 0 when flat): ``position(...).qty_base``
        without building the view (no liquidation price, no PnL). Same errors as
        :meth:`position`."""
        book = self._books.get((symbol, position_side))
        if book is None:
            book = self._book(symbol, position_side)  # raises the one-line error
        return book.qty

    def positions(self) -> list[Position]:
        """Views of the non-flat books, ordered by symbol then side."""
        books = sorted(
            (b for b in self._books.values() if b.qty != ZERO),
            key=lambda b: (b.symbol, b.position_side.value),
        )
        return [self._position(b) for b in books]

    def lots(self, symbol: str, position_side: PositionSide = PositionSide.BOTH) -> list[Lot]:
        """Open lots of a book, oldest first (for targeted closes and attribution)."""
        book = self._book(symbol, position_side)
        rows = [(lot, sid) for sid, o in book.owners.items() for lot in o.lots]
        rows.sort(key=lambda r: r[0].seq)
        return [Lot(sid, lot.client_order_id, lot.qty, lot.price, lot.ts_ns) for lot, sid in rows]

    def breakdown(self) -> list[PnlRow]:
        """PnL per (strategy_id, symbol), sorted: price PnL (lot-based realised + unrealised
        at last marks), funding, fees and slippage. Rows add up to the account's totals."""
        unreal: dict[tuple[str, str], Decimal] = {}
        for b in self._books.values():
            if b.qty == ZERO:
                continue
            m = self._marks[b.symbol]
            s = _sign(b.qty)
            for sid, o in b.owners.items():
                key = (sid, b.symbol)
                unreal[key] = unreal.get(key, ZERO) + s * (o.qty * m - o.cost)
        rows = []
        for key in sorted(self._attr):
            a = self._attr[key]
            rows.append(
                PnlRow(
                    strategy_id=key[0],
                    symbol=key[1],
                    price_pnl_usd=a.realised + unreal.get(key, ZERO),
                    funding_usd=a.funding,
                    fees_usd=a.fees,
                    slippage_usd=a.slippage,
                )
            )
        return rows

    def view(self) -> AccountView:
        """Read-only snapshot for strategies."""
        return AccountView(
            cash_usd=self._cash,
            equity_usd=self.equity_usd,
            unrealised_pnl_usd=self.unrealised_pnl_usd(),
            margin_balance_usd=self.margin_balance_usd,
            maint_margin_usd=self.maint_margin_usd,
            available_usd=self.available_usd,
            hedge_mode=self._hedge,
            margin_mode=self._margin_mode,
            positions=tuple(self.positions()),
            marks=MappingProxyType(dict(self._marks)),
        )

    # ------------------------------------------------------------------ pre-trade

    def can_open(
        self,
        symbol: str,
        side: Side,
        qty: Decimal | float | str,
        price: Decimal | float | str,
        position_side: PositionSide = PositionSide.BOTH,
    ) -> str | None:
        """Initial-margin check of an order before it is sent: ``None`` if allowed, else a
        one-line reason. Reducing size is always allowed. Perp: the opening part needs
        ``qty × price / leverage ≤ available_usd`` and the leverage may not exceed the max
        leverage of the bracket holding the resulting notional (Binance: larger positions
        allow less leverage); spot: a buy needs the cash, a sell the holdings. Fees are not
        reserved."""
        book = self._books.get((symbol, position_side))
        # fast paths (a finite Decimal quantity, a finite float price) give what _dec gives
        if book is not None and qty.__class__ is Decimal and qty.is_finite():
            q = qty
        else:
            try:
                book = self._book(symbol, position_side)
                q = _dec(qty, f"{symbol} qty")
            except AccountError as e:
                return str(e)
        if price.__class__ is float and math.isfinite(price):
            p = _float_dec(price)  # a grid checks the same level prices again
        else:
            try:
                p = _dec(price, f"{symbol} price")
            except AccountError as e:
                return str(e)
        if not q > ZERO or not p > ZERO:
            return f"{symbol}: qty {q} and price {p} must be > 0"
        d = q if side is _BUY else -q
        if book.is_spot:
            if d > ZERO:
                need = q * p
                if need > self._cash:
                    return f"{symbol}: buying {q} at {p} needs {need} USD, cash is {self._cash} USD"
            elif q > book.qty:
                return f"{symbol}: selling {q} but only {book.qty} held"
            return None
        cur = book.qty
        if self._hedge:
            opens = (d > ZERO) == (book.position_side is _PS_LONG)
            if not opens:
                if q > abs(cur):
                    return f"{symbol}: {side} {q} exceeds the {position_side} position {abs(cur)}"
                return None
            opened = q
        elif cur == ZERO or (d > ZERO) == (cur > ZERO):
            opened = q
        else:
            opened = max(ZERO, q - abs(cur))
        if opened == ZERO:
            return None
        new_notional = abs(cur + d) * p
        brackets = self._brackets[symbol]
        lev = self._leverage[symbol]
        if new_notional > brackets[-1].notional_cap_usd:
            return (
                f"{symbol}: notional {new_notional} USD exceeds the largest bracket cap "
                f"{brackets[-1].notional_cap_usd} USD"
            )
        for b in brackets:  # bracket_for(new_notional, brackets): new_notional ≥ 0, ≤ the cap
            if new_notional <= b.notional_cap_usd:
                break
        if lev > b.max_leverage:
            return (
                f"{symbol}: leverage {lev}x exceeds the bracket's max leverage {b.max_leverage}x "
                f"for notional {new_notional} USD"
            )
        need = opened * p / self._lev_dec[symbol]
        avail = self.available_usd
        if need > avail:
            return (
                f"{symbol}: insufficient margin: opening {opened} at {p} needs {need} USD "
                f"at {lev}x, available {avail} USD"
            )
        return None
