"""The venue protocol: one interface for the paper venue and the live ccxt venue.

Shape: **async methods for requests, async iterators for streams.**

- Requests (instruments, balances, positions, place/cancel/query orders, funding payments)
  are ``async def`` because a live venue waits on the network; the paper venue answers at
  once. They raise :class:`VenueError` subclasses for transport trouble and return an
  :class:`OrderState` with ``status == REJECTED`` for a business refusal (a reject is data,
  not a crash).
- Streams (trades, book tops, mark prices, liquidations, own fills) are async iterators
  (``async for t in venue.trades(["BTCUSDT"])``). Why iterators rather than callbacks: the
  consumer pulls, so a slow consumer applies back-pressure instead of growing an unbounded
  queue inside the venue; a stream is cancelled by cancelling the task that iterates it
  (no unsubscribe bookkeeping); a replay of recorded events is the same type (any
  ``AsyncIterator[Trade | BookTop | MarkPrice]`` can feed the paper venue); and callbacks are
  one ``async for`` away (the runner owns the loop and calls the strategy), whereas turning
  callbacks back into iterators needs queues.

Symbols are the engine's names (the exchange's market id, e.g. ``BTCUSDT``); quantities are
base units and money is ``Decimal`` where it is booked (fills, balances, funding).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Protocol, runtime_checkable

from perpdesk.domain import (
    BookTop,
    Fill,
    Instrument,
    MarkPrice,
    Order,
    PositionSide,
    Side,
    Trade,
)
from perpdesk.errors import PerpdeskError

__all__ = [
    "Balance",
    "FundingPayment",
    "Liquidation",
    "OrderState",
    "OrderStatus",
    "RateLimitedError",
    "TransientVenueError",
    "Venue",
    "VenueError",
    "VenuePosition",
]


class VenueError(PerpdeskError):
    """A venue call failed for a reason that is not a business refusal (auth, bad symbol,
    protocol). One line, never containing an API key."""


class TransientVenueError(VenueError):
    """The request's outcome is unknown (timeout, dropped connection, 5xx): the order
    manager queries before any resubmission."""


class RateLimitedError(VenueError):
    """HTTP 429/418: the request was refused before execution; ``retry_after_s`` is the
    server's ``Retry-After`` (None when absent)."""

    def __init__(self, message: str, retry_after_s: float | None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class OrderStatus(StrEnum):
    """Order life cycle (Binance ``X``: NEW, PARTIALLY_FILLED, FILLED, CANCELED, REJECTED,
    EXPIRED)."""

    NEW = "new"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELED = "canceled"
    REJECTED = "rejected"
    EXPIRED = "expired"

    @property
    def is_open(self) -> bool:
        """True while the order may still fill."""
        return self in (OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED)


@dataclass(frozen=True, slots=True)
class OrderState:
    """What the venue says about one order: ``filled_base`` cumulative base units,
    ``avg_price`` the average fill price (None before a fill), ``reason`` why it was
    rejected/expired (empty otherwise), ``venue_order_id`` the exchange's id."""

    client_order_id: str
    symbol: str
    side: Side
    status: OrderStatus
    qty_base: Decimal
    filled_base: Decimal
    avg_price: Decimal | None = None
    price: Decimal | None = None
    venue_order_id: str = ""
    reason: str = ""
    ts_ns: int = 0

    @property
    def remaining_base(self) -> Decimal:
        """``qty_base − filled_base``."""
        return self.qty_base - self.filled_base


@dataclass(frozen=True, slots=True)
class Balance:
    """One asset's balance in units of ``asset``: ``total`` = margin balance (wallet +
    unrealised PnL, what ccxt's ``fetch_balance`` reports as total on Binance USD-M),
    ``free`` = available for new margin."""

    asset: str
    total: Decimal
    free: Decimal


@dataclass(frozen=True, slots=True)
class VenuePosition:
    """A position as the venue reports it: ``qty_base`` signed (+ long), average
    ``entry_price`` (USD), ``unrealised_pnl_usd`` at the venue's mark."""

    symbol: str
    position_side: PositionSide
    qty_base: Decimal
    entry_price: Decimal
    unrealised_pnl_usd: Decimal = Decimal(0)
    mark_price: Decimal | None = None


@dataclass(frozen=True, slots=True)
class FundingPayment:
    """Funding booked on the account at ``ts_ns``: ``amount_usd`` > 0 received, < 0 paid
    (Binance income type ``FUNDING_FEE``)."""

    symbol: str
    ts_ns: int
    amount_usd: Decimal
    rate: float | None = None


@dataclass(frozen=True, slots=True)
class Liquidation:
    """A public liquidation (Binance ``forceOrder``): the liquidated side's order of
    ``qty_base`` at ``price``."""

    venue: str
    symbol: str
    ts_ns: int
    side: Side
    price: float
    qty_base: float


@runtime_checkable
class Venue(Protocol):
    """One trading venue (paper or live). See the module docstring for the shape."""

    @property
    def venue_id(self) -> str:
        """The venue's name (``binanceusdm``, ``paper:binanceusdm`` …)."""
        ...

    async def instruments(self) -> Mapping[str, Instrument]:
        """Tradable instruments by engine symbol (tick/lot size, funding interval)."""
        ...

    async def balances(self) -> Mapping[str, Balance]:
        """Wallet balances by asset."""
        ...

    async def positions(self) -> list[VenuePosition]:
        """Open positions (zero positions left out)."""
        ...

    async def place(self, order: Order) -> OrderState:
        """Send ``order`` once (idempotent by ``client_order_id``: a second call with the
        same id never creates a second order). A business refusal returns REJECTED."""
        ...

    async def cancel(self, client_order_id: str, symbol: str) -> OrderState:
        """Cancel an open order; the state after the cancel (FILLED if it filled first)."""
        ...

    async def query(self, client_order_id: str, symbol: str) -> OrderState | None:
        """The order's state, or None when the venue does not know the id."""
        ...

    async def open_orders(self, symbol: str | None = None) -> list[OrderState]:
        """Orders that may still fill."""
        ...

    async def funding_payments(self, since_ns: int) -> list[FundingPayment]:
        """Funding booked at or after ``since_ns``, oldest first."""
        ...

    def fills(self) -> AsyncIterator[Fill]:
        """Own executions, each exactly once (deduplicated by the venue's trade id)."""
        ...

    def trades(self, symbols: Sequence[str]) -> AsyncIterator[Trade]:
        """Public trades of ``symbols``."""
        ...

    def book_tops(self, symbols: Sequence[str]) -> AsyncIterator[BookTop]:
        """Best bid/ask updates of ``symbols``."""
        ...

    def mark_prices(self, symbols: Sequence[str]) -> AsyncIterator[MarkPrice]:
        """Mark/index price and predicted funding of ``symbols``."""
        ...

    def liquidations(self, symbols: Sequence[str]) -> AsyncIterator[Liquidation]:
        """Public liquidation orders of ``symbols``."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
