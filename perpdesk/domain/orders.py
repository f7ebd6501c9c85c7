"""Orders and fills: what a strategy asks for and what a venue did.

Quantities are base units (contracts of 1 base unit on Binance USD-M linear perps),
prices are quote per base (USD). Orders carry floats (decisions are signals); fills carry
``Decimal`` because they are booked (ARCHITECTURE: money is exact where it is booked).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum


class Side(StrEnum):
    """Order side."""

    BUY = "buy"
    SELL = "sell"

    @property
    def sign(self) -> int:
        """+1 for a buy, -1 for a sell."""
        return 1 if self is Side.BUY else -1


class OrderType(StrEnum):
    """Order type. ``STOP_MARKET`` triggers at ``stop_price`` and then fills as a market order."""

    MARKET = "market"
    LIMIT = "limit"
    STOP_MARKET = "stop_market"


class TimeInForce(StrEnum):
    """GTC rests; IOC fills what it can now and cancels the rest; POST_ONLY (Binance GTX)
    is rejected if it would take liquidity on arrival."""

    GTC = "gtc"
    IOC = "ioc"
    POST_ONLY = "post_only"


class PositionSide(StrEnum):
    """Which book a fill goes to. ``BOTH`` is one-way mode (one net position per symbol);
    ``LONG``/``SHORT`` are hedge mode's independent books (Binance ``positionSide``)."""

    BOTH = "both"
    LONG = "long"
    SHORT = "short"


class Liquidity(StrEnum):
    """Maker (rested on the book) or taker (crossed the spread)."""

    MAKER = "maker"
    TAKER = "taker"


@dataclass(frozen=True, slots=True)
class Order:
    """A request from a strategy. ``client_order_id`` is unique per run (duplicates are
    rejected). ``ts_ns`` is the decision time; the venue may add latency before arrival.
    ``label`` is free text carried onto the fills (e.g. ``BUY_OPEN_LONG``)."""

    client_order_id: str
    venue: str
    symbol: str
    side: Side
    qty_base: float
    type: OrderType = OrderType.MARKET
    price: float | None = None
    stop_price: float | None = None
    tif: TimeInForce = TimeInForce.GTC
    reduce_only: bool = False
    position_side: PositionSide = PositionSide.BOTH
    ts_ns: int = 0
    strategy_id: str = ""
    label: str = ""

    def __post_init__(self) -> None:
        if not self.qty_base > 0:
            raise ValueError(f"order {self.client_order_id}: qty_base {self.qty_base} must be > 0")
        if self.type is OrderType.LIMIT and (self.price is None or not self.price > 0):
            raise ValueError(f"order {self.client_order_id}: a limit order needs a price > 0")
        if self.type is OrderType.STOP_MARKET and (
            self.stop_price is None or not self.stop_price > 0
        ):
            raise ValueError(f"order {self.client_order_id}: a stop order needs stop_price > 0")


@dataclass(frozen=True, slots=True)
class Fill:
    """An execution of (part of) an order at ``ts_ns``.

    ``fee_usd`` is positive when paid, negative for a maker rebate. ``slippage_usd`` is the
    cost against the reference price the fill model started from (positive = worse),
    already included in ``price``; it is reported, not booked a second time.
    """

    client_order_id: str
    venue: str
    symbol: str
    side: Side
    qty_base: Decimal
    price: Decimal
    fee_usd: Decimal
    liquidity: Liquidity
    ts_ns: int
    position_side: PositionSide = PositionSide.BOTH
    slippage_usd: Decimal = Decimal(0)
    strategy_id: str = ""
    label: str = ""

    @property
    def notional_usd(self) -> Decimal:
        """``qty_base × price``."""
        return self.qty_base * self.price


def to_decimal(x: float) -> Decimal:
    """The shortest decimal that round-trips the float (``Decimal(repr(x))``), so 0.1 books
    as 0.1 and not as 0.1000000000000000055511151231257827."""
    return Decimal(repr(float(x)))
