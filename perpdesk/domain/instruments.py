"""Instruments: what can be traded, with the exchange facts that change the arithmetic."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

HOURS_PER_YEAR = 24.0 * 365.0


class InstrumentKind(StrEnum):
    """Market kind of an instrument."""

    PERP = "perp"
    SPOT = "spot"
    OPTION = "option"


@dataclass(frozen=True, slots=True)
class Instrument:
    """One tradable instrument on one venue.

    ``funding_interval_h`` is the hours between funding settlements (8 on most Binance
    USD-M perps, 4 or 1 on some; 0 for spot and options, which pay no funding).
    ``funding_cap`` / ``funding_floor`` are the exchange clamp on the rate per settlement
    as fractions (Binance publishes them per symbol, e.g. +0.0075 / -0.0075); ``None``
    means the venue sets no clamp.
    """

    venue: str
    symbol: str
    kind: InstrumentKind
    base: str
    quote: str
    tick_size: float
    lot_size: float
    funding_interval_h: int = 0
    funding_cap: float | None = None
    funding_floor: float | None = None

    def __post_init__(self) -> None:
        if self.tick_size <= 0 or self.lot_size <= 0:
            raise ValueError(f"{self.venue}:{self.symbol}: tick_size and lot_size must be > 0")
        if self.kind is InstrumentKind.PERP and self.funding_interval_h not in (1, 2, 4, 8):
            raise ValueError(
                f"{self.venue}:{self.symbol}: funding_interval_h={self.funding_interval_h} "
                "must be one of 1, 2, 4, 8 for a perp"
            )
        if (
            self.funding_cap is not None
            and self.funding_floor is not None
            and self.funding_floor > self.funding_cap
        ):
            raise ValueError(f"{self.venue}:{self.symbol}: funding_floor above funding_cap")

    @property
    def settlements_per_year(self) -> float:
        """Funding settlements in a 365-day year (1095 for 8h, 2190 for 4h, 8760 for 1h)."""
        if self.funding_interval_h <= 0:
            raise ValueError(f"{self.symbol} pays no funding")
        return HOURS_PER_YEAR / self.funding_interval_h


def annualise_rate(rate: float, interval_h: float) -> float:
    """Annualised funding in percent from a rate per settlement (fraction).

    ``ann_pct = rate × (24 / interval_h) × 365 × 100`` — simple (not compounded)
    annualisation with the symbol's own settlement interval, as exchanges and funding
    dashboards quote it. 0.0001 per 8h → 10.95 %; the same rate per 1h → 87.6 %.
    Works element-wise on NumPy arrays too.
    """
    return rate * (HOURS_PER_YEAR / interval_h) * 100.0


SPOT_SUFFIX = ".SPOT"


def spot_symbol(symbol: str) -> str:
    """The engine's name for the spot leg of a perp symbol: ``BTCUSDT`` → ``BTCUSDT.SPOT``.

    Inside one engine run every instrument is addressed by a unique symbol string; perps
    keep the exchange symbol and spot legs take this suffix (the catalog keeps spot bars
    under the exchange symbol in ``spot_bars_<tf>``).
    """
    return symbol + SPOT_SUFFIX
