"""Small typed records of the grid: trade labels, the side of an open fill, an open fill."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum

__all__ = ["FillSide", "OpenFill", "TradeLabel"]


class TradeLabel(StrEnum):
    """Why a trade happened (perpdesk issue 7); carried on ``Order.label`` and the fills."""

    BUY_OPEN_LONG = "BUY_OPEN_LONG"
    SELL_CLOSE_LONG = "SELL_CLOSE_LONG"
    SELL_OPEN_SHORT = "SELL_OPEN_SHORT"
    BUY_CLOSE_SHORT = "BUY_CLOSE_SHORT"
    STOP_LONG = "STOP_LONG"
    STOP_SHORT = "STOP_SHORT"
    PRUNE_DEVIANCE = "PRUNE_DEVIANCE"
    PRUNE_OLDEST = "PRUNE_OLDEST"
    PRUNE_GAP = "PRUNE_GAP"
    PRUNE_FUNDING = "PRUNE_FUNDING"
    PRUNE_OFFSET = "PRUNE_OFFSET"
    LIQUIDATION = "LIQUIDATION"


class FillSide(IntEnum):
    """Which hedge-mode book an open fill belongs to; the value is the sign of its exposure."""

    LONG = 1
    SHORT = -1


@dataclass(frozen=True, slots=True)
class OpenFill:
    """One grid fill still open (its closing order not yet filled).

    ``qty_base`` > 0 in base units, ``price`` its entry price (quote per base), ``ts_ns`` the
    fill time (ns UTC), ``funding_usd`` the funding this fill has paid so far (positive = paid,
    negative = received; Binance USD-M: qty × mark × rate at each settlement).
    """

    side: FillSide
    qty_base: float
    price: float
    ts_ns: int
    funding_usd: float = 0.0

    def upnl_usd(self, price: float) -> float:
        """Unrealised PnL at ``price`` in USD: side × qty × (price − entry), before fees."""
        return self.side * self.qty_base * (price - self.price)
