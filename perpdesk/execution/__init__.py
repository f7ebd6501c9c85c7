"""Venues behind one protocol (paper, ccxt live), the order manager and idempotency.

- :mod:`perpdesk.execution.protocol` — the :class:`Venue` protocol and its value types;
- :mod:`perpdesk.execution.orders` — client ids, idempotent submission, fills booked once;
- :mod:`perpdesk.execution.paper` — :class:`PaperVenue`: live (or replayed) market data in,
  fills from the simulator's tick fill model, balances in a local
  :class:`~perpdesk.sim.account.Account`;
- :mod:`perpdesk.execution.ccxt_live` — :class:`LiveVenue` on ccxt async + ccxt.pro (a perp
  account, e.g. Binance USD-M, or a spot account, Binance spot) and :class:`SpotPerpVenue`,
  one venue over the two legs of a carry pair (``.SPOT`` symbols to the spot account).

Import the venues from their modules (ccxt is only loaded by the live one).
"""

from perpdesk.execution.orders import (
    ClientIdFactory,
    DuplicateClientIdError,
    OrderManager,
    OutcomeUnknownError,
    RetryPolicy,
    VenueExecution,
)
from perpdesk.execution.protocol import (
    Balance,
    FundingPayment,
    Liquidation,
    OrderState,
    OrderStatus,
    RateLimitedError,
    TransientVenueError,
    Venue,
    VenueError,
    VenuePosition,
)

__all__ = [
    "Balance",
    "ClientIdFactory",
    "DuplicateClientIdError",
    "FundingPayment",
    "Liquidation",
    "OrderManager",
    "OrderState",
    "OrderStatus",
    "OutcomeUnknownError",
    "RateLimitedError",
    "RetryPolicy",
    "TransientVenueError",
    "Venue",
    "VenueError",
    "VenueExecution",
    "VenuePosition",
]
