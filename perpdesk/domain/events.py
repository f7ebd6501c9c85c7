"""Market events. Timestamps are ``ts_ns`` (exchange event time, ns since epoch, UTC)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Bar:
    """An OHLC bar that opened at ``ts_ns`` and lasted ``interval_s`` seconds.

    Volumes follow Binance klines: ``volume_base`` in base units, ``volume_quote`` and
    ``taker_buy_volume_quote`` in quote currency (USD). A bar is known only once it has
    closed, at ``ts_ns + interval_s × 1e9``.
    """

    venue: str
    symbol: str
    ts_ns: int
    interval_s: int
    open: float
    high: float
    low: float
    close: float
    volume_base: float
    volume_quote: float
    taker_buy_volume_quote: float

    @property
    def close_ts_ns(self) -> int:
        """When the bar's values are final (and may first be used by a decision)."""
        return self.ts_ns + self.interval_s * 1_000_000_000


@dataclass(frozen=True, slots=True)
class FundingSettlement:
    """A funding payment settled at ``ts_ns``.

    ``funding_rate`` is the fraction per settlement; longs pay shorts when it is
    positive (Binance USD-M: payment = position notional × mark price × rate).
    ``funding_interval_h`` is the length of the interval that ends here.
    ``mark_price`` is the mark at settlement (NaN when the source lacks it).
    """

    venue: str
    symbol: str
    ts_ns: int
    funding_rate: float
    funding_interval_h: int
    mark_price: float


@dataclass(frozen=True, slots=True)
class OpenInterest:
    """Open interest observed at ``ts_ns`` (contracts in base units and in USD)."""

    venue: str
    symbol: str
    ts_ns: int
    open_interest_base: float
    open_interest_usd: float


@dataclass(frozen=True, slots=True)
class Trade:
    """One public trade printed at ``ts_ns``: ``qty_base`` base units at ``price``.

    ``buyer_is_maker`` follows Binance's ``m`` flag: True means the aggressor sold.
    """

    venue: str
    symbol: str
    ts_ns: int
    price: float
    qty_base: float
    buyer_is_maker: bool


@dataclass(frozen=True, slots=True)
class BookTop:
    """Best bid/ask with the size resting at each (base units), as of ``ts_ns``."""

    venue: str
    symbol: str
    ts_ns: int
    bid: float
    bid_qty_base: float
    ask: float
    ask_qty_base: float


@dataclass(frozen=True, slots=True)
class MarkPrice:
    """Mark and index price at ``ts_ns``, with the venue's predicted funding rate for the
    settlement at ``next_funding_ts_ns`` (Binance ``markPrice`` stream: p, i, r, T)."""

    venue: str
    symbol: str
    ts_ns: int
    mark_price: float
    index_price: float
    predicted_funding_rate: float
    next_funding_ts_ns: int


@dataclass(frozen=True, slots=True)
class Timer:
    """A timer a strategy set, firing at ``ts_ns`` (simulated or wall clock)."""

    ts_ns: int
    name: str
