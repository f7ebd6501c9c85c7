"""Immutable value types shared by every room of perpdesk. No I/O here.

Units are in the field names: ``ts_ns`` is nanoseconds since the Unix epoch (UTC),
``*_usd`` is quote currency (USDT treated as USD), ``funding_rate`` is a fraction per
settlement (``0.0001`` = 0.01 %), ``*_h`` is hours.
"""

from perpdesk.domain.events import (
    Bar,
    BookTop,
    FundingSettlement,
    MarkPrice,
    OpenInterest,
    Timer,
    Trade,
)
from perpdesk.domain.instruments import (
    Instrument,
    InstrumentKind,
    annualise_rate,
    spot_symbol,
)
from perpdesk.domain.orders import (
    Fill,
    Liquidity,
    Order,
    OrderType,
    PositionSide,
    Side,
    TimeInForce,
    to_decimal,
)

__all__ = [
    "Bar",
    "BookTop",
    "Fill",
    "FundingSettlement",
    "Instrument",
    "InstrumentKind",
    "Liquidity",
    "MarkPrice",
    "OpenInterest",
    "Order",
    "OrderType",
    "PositionSide",
    "Side",
    "TimeInForce",
    "Timer",
    "Trade",
    "annualise_rate",
    "spot_symbol",
    "to_decimal",
]
