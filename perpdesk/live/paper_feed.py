"""Paper trading on live market data: the public streams of a real exchange feed the
journaled paper venue (``perpdesk run --paper`` without ``--replay``).

- **Perp leg**: a :class:`~perpdesk.execution.ccxt_live.LiveVenue` built **without API keys**
  (:func:`public_perp_venue`; ``connect`` loads markets and funding intervals, both public)
  gives its ``trades``, ``book_tops`` and ``mark_prices`` streams (ccxt.pro
  ``watch_trades_for_symbols``, ``watch_bids_asks``, and for the marks with the predicted
  funding rate and next settlement time: Binance ``watch_mark_prices``, Bybit
  ``watch_tickers``, OKX ``watch_mark_prices`` + ``watch_funding_rates``) and the real
  instruments (tick, lot, each symbol's funding interval). A stream the venue's ccxt.pro
  client lacks (:meth:`~perpdesk.execution.ccxt_live.LiveVenue.has_stream`) is not opened,
  and that is logged once (without marks the paper venue books no funding).
- **Spot leg**: :class:`SpotStreams`, a keyless ``ccxt.pro`` spot client (Binance spot for
  ``binanceusdm``; for Bybit and OKX a spot-only client of the same exchange, Bybit's
  ``/v5/public/spot`` and OKX's public channels of the spot ids) with the spot market's trades
  and best bid/ask, renamed to the engine's spot symbols (``BTCUSDT`` → ``BTCUSDT.SPOT``,
  :func:`perpdesk.domain.spot_symbol`); the spot market of a perp is the one with the same
  base and quote asset.
- Tested end to end through the CLI against loopback fakes: Binance (tests/test_paper_live.py),
  Bybit and OKX (tests/test_paper_live_multi.py: a paper fill on the live book and a funding
  payment at the fake's announced settlement and predicted rate; the stream skipped when the
  client lacks it).
- :func:`live_feed` applies every event to a
  :class:`~perpdesk.live.runner.DurablePaperVenue` (journaled, so a killed paper run restarts
  with exactly the fills it had). The runner taps the paper venue's input for its prices,
  tick VPIN and mark-price funding signals, so the runner, the strategy, the safeguards and
  the ledger are the same objects as in ``--live``; only the venue differs.

Fills come from the paper venue's tick fill model (a resting limit fills only where a public
trade printed at or through its price; a market order takes the live book top and slips the
rest), balances are kept locally. Timestamps are the exchange's (``ts_ns``); the paper clock
never goes backwards (:meth:`PaperVenue._advance` keeps the maximum).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import ccxt
import ccxt.pro as ccxtpro

from perpdesk.data.sources.ccxt_download import point_ccxt_at
from perpdesk.domain import BookTop, Instrument, InstrumentKind, MarkPrice, Trade, spot_symbol
from perpdesk.execution.ccxt_live import LiveVenue, make_exchange, point_ws_at
from perpdesk.execution.paper import merge_streams
from perpdesk.execution.protocol import VenueError
from perpdesk.secrets import redact

__all__ = [
    "SPOT_EXCHANGE",
    "LiveMarketData",
    "SpotStreams",
    "live_feed",
    "public_perp_venue",
]

log = logging.getLogger(__name__)

SPOT_EXCHANGE = {"binanceusdm": "binance", "bybit": "bybit", "okx": "okx"}
"""The ccxt id of the spot market of each perp venue."""

MarketEvent = Trade | BookTop | MarkPrice


def public_perp_venue(
    exchange_id: str,
    *,
    api_url: str | None = None,
    ws_url: str | None = None,
    timeout_ms: int = 10_000,
    enable_rate_limit: bool = True,
    reconnect_delay_s: float = 1.0,
) -> LiveVenue:
    """A :class:`LiveVenue` with no API keys: ``connect``, ``instruments`` and the public
    streams work; any private call fails at the exchange (no key is sent)."""
    ex = make_exchange(
        exchange_id,
        None,
        api_url=api_url,
        ws_url=ws_url,
        timeout_ms=timeout_ms,
        enable_rate_limit=enable_rate_limit,
    )
    return LiveVenue(ex, reconnect_delay_s=reconnect_delay_s)


def _one_line(text: str, limit: int = 300) -> str:
    return redact(" ".join(str(text).split()))[:limit]


class SpotStreams:
    """Public spot trades and book tops of one ``ccxt.pro`` exchange (no keys).

    ``legs`` maps each engine spot symbol to its ``(base, quote)``; :meth:`connect` loads the
    spot markets and finds each leg's market. ``api_url`` / ``ws_url`` point REST and the
    spot websocket base (Binance ``urls['api']['ws']['spot']``) at another host (a loopback
    fake in tests); on Bybit and OKX ``ws_url`` is what
    :func:`~perpdesk.execution.ccxt_live.make_exchange` takes for them
    (:func:`~perpdesk.execution.ccxt_live.point_ws_at`; Bybit: the host, the spot stream is
    ``/v5/public/spot`` on it; OKX: the ``/ws/v5`` base). Streams reconnect after an error
    with capped exponential backoff (``reconnect_delay_s × 2^k``, at most 30 s), counting
    ``stream_errors``."""

    def __init__(
        self,
        exchange_id: str,
        legs: Mapping[str, tuple[str, str]],
        *,
        api_url: str | None = None,
        ws_url: str | None = None,
        timeout_ms: int = 10_000,
        enable_rate_limit: bool = True,
        reconnect_delay_s: float = 1.0,
    ) -> None:
        cls = getattr(ccxtpro, exchange_id, None)
        if cls is None:
            raise VenueError(f"spot venue {exchange_id!r}: not a ccxt.pro exchange id")
        self.ex: Any = cls(
            {
                "timeout": timeout_ms,
                "enableRateLimit": enable_rate_limit,
                "options": {
                    "defaultType": "spot",
                    "fetchMarkets": {"types": ["spot"]},
                    "fetchCurrencies": False,
                },
            }
        )
        if api_url is not None:
            point_ccxt_at(self.ex, api_url)
        if ws_url is not None and exchange_id in ("bybit", "okx"):
            point_ws_at(self.ex, exchange_id, ws_url, None)  # Bybit: a host; OKX: the base
        elif ws_url is not None:
            ws = self.ex.urls["api"].get("ws")
            if not isinstance(ws, dict) or "spot" not in ws:
                raise VenueError(
                    f"spot venue {exchange_id}: ws_url override needs Binance-style urls"
                )
            ws["spot"] = ws_url
        self.legs = dict(legs)
        self.reconnect_delay_s = reconnect_delay_s
        self.to_unified: dict[str, str] = {}
        self.to_engine: dict[str, str] = {}
        self.stream_errors = 0

    @property
    def venue_id(self) -> str:
        """The ccxt id (``binance``)."""
        return str(self.ex.id)

    async def connect(self) -> None:
        """Load the spot markets and map each leg to its market (one line naming the leg
        when the exchange has no spot market for it)."""
        await self.ex.load_markets(reload=True)
        by_pair = {
            (m["base"], m["quote"]): u
            for u, m in self.ex.markets.items()
            if m.get("spot") and m.get("active") is not False
        }
        for leg, (base, quote) in self.legs.items():
            u = by_pair.get((base, quote))
            if u is None:
                raise VenueError(f"{self.venue_id}: no spot market {base}/{quote} for {leg}")
            self.to_unified[leg] = u
            self.to_engine[u] = leg

    def instruments(self, venue: str = "paper") -> list[Instrument]:
        """Spot instruments of the legs: tick and lot from the market's precision (steps,
        or decimal places converted to a step)."""
        out = []
        for leg, u in self.to_unified.items():
            m = self.ex.markets[u]
            p = m.get("precision") or {}
            tick, lot = p.get("price"), p.get("amount")
            if tick is None or lot is None:
                raise VenueError(f"{self.venue_id} {u}: market has no price/amount precision")
            if self.ex.precisionMode != ccxt.TICK_SIZE:
                tick, lot = 10.0 ** -float(tick), 10.0 ** -float(lot)
            base, quote = self.legs[leg]
            out.append(
                Instrument(venue, leg, InstrumentKind.SPOT, base, quote, float(tick), float(lot))
            )
        return out

    async def _watch(self, call: Callable[[], Any], what: str) -> AsyncIterator[Any]:
        k = 0
        while True:
            try:
                res = await call()
                k = 0
            except ccxt.BaseError as exc:
                self.stream_errors += 1
                log.warning("%s spot %s stream: %s", self.venue_id, what, _one_line(str(exc)))
                await asyncio.sleep(min(30.0, self.reconnect_delay_s * 2**k))
                k += 1
                continue
            yield res

    async def trades(self, legs: Sequence[str]) -> AsyncIterator[Trade]:
        """Public spot trades of ``legs`` (engine spot symbols); ``buyer_is_maker`` = the
        taker sold."""
        uni = [self.to_unified[s] for s in legs]
        async for batch in self._watch(lambda: self.ex.watch_trades_for_symbols(uni), "trades"):
            for t in batch:
                leg = self.to_engine.get(t["symbol"])
                if leg is None:
                    continue
                yield Trade(
                    self.venue_id,
                    leg,
                    int(t["timestamp"]) * 1_000_000,
                    float(t["price"]),
                    float(t["amount"]),
                    t.get("side") == "sell",
                )

    async def book_tops(self, legs: Sequence[str]) -> AsyncIterator[BookTop]:
        """Best bid/ask of ``legs`` (``watch_bids_asks``; Binance spot ``bookTicker``)."""
        uni = [self.to_unified[s] for s in legs]
        async for tickers in self._watch(lambda: self.ex.watch_bids_asks(uni), "book"):
            for u, t in tickers.items():
                leg = self.to_engine.get(u)
                if leg is None or t.get("bid") is None or t.get("ask") is None:
                    continue
                yield BookTop(
                    self.venue_id,
                    leg,
                    int(t.get("timestamp") or time.time_ns() // 1_000_000) * 1_000_000,
                    float(t["bid"]),
                    float(t.get("bidVolume") or "nan"),
                    float(t["ask"]),
                    float(t.get("askVolume") or "nan"),
                )

    async def close(self) -> None:
        """Close the HTTP session and websockets."""
        await self.ex.close()


class LiveMarketData:
    """The public market data of a carry book: perp streams of ``perp`` (a keyless
    :class:`LiveVenue`) and spot streams of ``spot``, as one stream of domain events with
    engine symbols. Build with :meth:`public`, then :meth:`connect`."""

    def __init__(
        self,
        perp: LiveVenue,
        perps: Sequence[str],
        spot: SpotStreams | None = None,
        *,
        spot_args: Mapping[str, Any] | None = None,
    ) -> None:
        self.perp = perp
        self.spot = spot
        self._perps = list(perps)
        self._spot_args = None if spot_args is None else dict(spot_args)
        self._perp_inst: dict[str, Instrument] = {}
        self._skipped: set[str] = set()

    @classmethod
    def public(
        cls,
        exchange_id: str,
        perps: Sequence[str],
        *,
        spot_exchange_id: str | None = None,
        api_url: str | None = None,
        ws_url: str | None = None,
        spot_api_url: str | None = None,
        spot_ws_url: str | None = None,
        timeout_ms: int = 10_000,
        enable_rate_limit: bool = True,
        reconnect_delay_s: float = 1.0,
    ) -> LiveMarketData:
        """Keyless clients for ``exchange_id``'s perps and its spot exchange
        (:data:`SPOT_EXCHANGE` unless ``spot_exchange_id`` is given; ``""`` = no spot)."""
        perp = public_perp_venue(
            exchange_id,
            api_url=api_url,
            ws_url=ws_url,
            timeout_ms=timeout_ms,
            enable_rate_limit=enable_rate_limit,
            reconnect_delay_s=reconnect_delay_s,
        )
        spot_args = dict(  # the spot client is built in connect(), once base/quote are known
            exchange_id=SPOT_EXCHANGE.get(exchange_id, exchange_id)
            if spot_exchange_id is None
            else spot_exchange_id,
            api_url=spot_api_url,
            ws_url=spot_ws_url,
            timeout_ms=timeout_ms,
            enable_rate_limit=enable_rate_limit,
            reconnect_delay_s=reconnect_delay_s,
        )
        return cls(perp, perps, spot_args=spot_args)

    async def connect(self) -> None:
        """Load perp markets (and funding intervals), then the spot markets of the legs."""
        await self.perp.connect()
        self._perp_inst = dict(await self.perp.instruments())
        for s in self._perps:
            if s not in self._perp_inst:
                raise VenueError(f"{self.perp.venue_id}: {s} is not a linear perpetual there")
        args = dict(self._spot_args or {})
        if self.spot is None and args.get("exchange_id"):
            legs = {
                spot_symbol(s): (self._perp_inst[s].base, self._perp_inst[s].quote)
                for s in self._perps
            }
            ex_id = args.pop("exchange_id")
            self.spot = SpotStreams(ex_id, legs, **args)
        if self.spot is not None:
            await self.spot.connect()

    def instruments(self, venue: str = "paper") -> list[Instrument]:
        """The perps (real tick, lot and funding interval) and their spot legs, renamed to
        ``venue`` (the paper venue trades them under its own name)."""
        out = [dataclasses.replace(self._perp_inst[s], venue=venue) for s in self._perps]
        if self.spot is not None:
            out += self.spot.instruments(venue)
        return out

    def events(self) -> AsyncIterator[MarketEvent]:
        """Perp trades, book tops and marks, spot trades and book tops, in arrival order.
        A perp stream the venue's ccxt.pro client lacks
        (:meth:`~perpdesk.execution.ccxt_live.LiveVenue.has_stream`) is not opened; that is
        logged once per stream (a paper run without ``mark_prices`` books no funding)."""
        streams: list[AsyncIterator[Any]] = []
        for name in ("trades", "book_tops", "mark_prices"):
            if self.perp.has_stream(name):
                streams.append(getattr(self.perp, name)(self._perps))
            elif name not in self._skipped:
                self._skipped.add(name)
                log.warning(
                    "%s: no %s stream in ccxt.pro for this venue; paper feed runs without it",
                    self.perp.venue_id,
                    name,
                )
        if self.spot is not None:
            legs = list(self.spot.to_unified)
            streams += [self.spot.trades(legs), self.spot.book_tops(legs)]
        return merge_streams(*streams)

    @property
    def stream_errors(self) -> int:
        """Stream failures seen (each one reconnects)."""
        return self.perp.stream_errors + (0 if self.spot is None else self.spot.stream_errors)

    async def close(self) -> None:
        """Close every client."""
        try:
            await self.perp.close()
        finally:
            if self.spot is not None:
                await self.spot.close()


async def live_feed(
    venue: Any,
    events: Callable[[], AsyncIterator[MarketEvent]],
    *,
    flush_s: float = 0.2,
    on_event: Callable[[MarketEvent], None] | None = None,
    restart_delay_s: float = 1.0,
    on_error: Callable[[BaseException], None] | None = None,
) -> None:
    """Apply each event of ``events()`` to ``venue`` (a
    :class:`~perpdesk.live.runner.DurablePaperVenue`, ``on_market``) as it arrives,
    committing the journal at least every ``flush_s`` seconds of wall time while events flow
    (and always before anything derived from them is handed out: the venue flushes on every
    request). The streams reconnect by themselves after exchange errors; if the merged stream
    fails otherwise (a malformed message), the error is logged (redacted), passed to
    ``on_error``, and the streams are opened again after ``restart_delay_s × 2^k`` (at most
    30 s). Runs until ``events()`` ends or the task is cancelled."""
    k = 0
    while True:
        last = time.monotonic()
        try:
            async for ev in events():
                venue.on_market(ev)
                k = 0
                if on_event is not None:
                    on_event(ev)
                now = time.monotonic()
                if now - last >= flush_s:
                    venue.flush()
                    last = now
            venue.flush()
            return
        except Exception as exc:  # the feed stays up; the runner keeps its last prices
            venue.flush()
            log.warning("paper market feed: %s: %s", type(exc).__name__, _one_line(str(exc)))
            if on_error is not None:
                on_error(exc)
            await asyncio.sleep(min(30.0, restart_delay_s * 2**k))
            k += 1
