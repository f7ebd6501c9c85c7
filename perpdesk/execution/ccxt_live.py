"""The live venue: ccxt async REST (``ccxt.pro`` classes include it) + ccxt.pro websockets.

Binance USD-M first (``binanceusdm``); Bybit (``bybit``) and OKX (``okx``) go through the same
unified calls — ``create_order``, ``fetch_order``/``cancel_order`` by client id,
``fetch_my_trades``, ``fetch_positions``, ``fetch_balance``, ``fetch_funding_history``,
``watch_trades_for_symbols``, ``watch_bids_asks``, ``watch_mark_prices``,
``watch_liquidations_for_symbols``, ``watch_my_trades``.

- **Symbols.** The engine names a market by the exchange's id (``market['id']``: ``BTCUSDT``
  on Binance and Bybit, ``BTC-USDT-SWAP`` on OKX); :class:`SymbolMap` converts to ccxt's
  unified symbol (``BTC/USDT:USDT``) and back.
- **Funding interval** per venue: Binance publishes only the symbols whose interval differs
  from 8 h (``GET /fapi/v1/fundingInfo``, ``fundingIntervalHours``), so the others are 8 h;
  Bybit gives ``fundingInterval`` in minutes in each instrument's info; OKX's default
  settlement is every 8 h (an instrument's actual interval is in ``fetch_funding_rate``'s
  ``interval``; not yet read here).
- **Orders** go through :class:`~perpdesk.execution.orders.OrderManager` (idempotent by client
  id: a timeout is followed by a query, never a blind resend). Errors are mapped from ccxt:
  429/418 (``DDoSProtection``, Binance -1003) → :class:`RateLimitedError` with ``Retry-After``;
  timeouts, network errors, 5xx and -1021 (request expired in recvWindow: not executed) →
  :class:`TransientVenueError`; -4116 → :class:`DuplicateClientIdError`; business refusals
  (insufficient margin, bad price/quantity, post-only would take) → a REJECTED
  :class:`OrderState` with the exchange's message.
- **Own fills** arrive on the user-data stream (``watch_my_trades``). When the stream fails,
  :meth:`LiveVenue.fills` polls ``fetch_my_trades`` (REST) every ``poll_interval_s`` for the
  symbols it trades until the stream has been healthy for ``resync_polls`` polls; every
  execution is booked once by ``(client_order_id, trade id)``, so repeats, out-of-order
  messages and the REST/stream overlap never double a fill.
- **Spot** (``binance``, ``LiveVenue(..., spot=True)``, what :meth:`LiveVenue.from_env` builds
  for ``binance``): the spot markets only (ccxt ``fetchMarkets`` types ``["spot"]``); engine
  symbols carry the spot suffix (``BTCUSDT.SPOT``, :func:`~perpdesk.domain.spot_symbol`);
  "positions" are the base-asset balances of the markets quoted in ``spot_quote`` (USDT);
  no funding; no ``reduceOnly`` (Binance spot refuses parameters it does not read); a
  commission charged in the base asset is booked in USD at the fill price. Own fills on
  the websocket API's user-data stream (``userDataStream.subscribe.signature``, ccxt.pro
  4.5). :class:`SpotPerpVenue` puts a spot and a perp venue behind one
  :class:`~perpdesk.execution.protocol.Venue`, routing ``.SPOT`` symbols to the spot one.
- **Stop orders** (``STOP_MARKET`` on USD-M): ccxt sends them to the conditional-order
  service (``POST /fapi/v1/algoOrder``, ``clientAlgoId``, ``triggerPrice``); they are queried
  and cancelled there by client id, and once triggered the state is the one of the
  market order it became (``actualOrderId``).
- **Executions by REST**: :meth:`LiveVenue.executions_since` lists own trades (``fetch_my_trades``
  per symbol, paged) with the exchange's trade id; a trade whose order this process did not
  send is attributed to its client id by fetching the order once.
- **Keys** only from the environment / ``.env`` through :mod:`perpdesk.secrets` (never
  logged; error text passes through :func:`~perpdesk.secrets.redact`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import ccxt
import ccxt.pro as ccxtpro

from perpdesk.data.sources.ccxt_download import engine_symbol, point_ccxt_at
from perpdesk.domain import (
    BookTop,
    Fill,
    Instrument,
    InstrumentKind,
    Liquidity,
    MarkPrice,
    Order,
    OrderType,
    PositionSide,
    Side,
    TimeInForce,
    Trade,
)
from perpdesk.domain.instruments import SPOT_SUFFIX
from perpdesk.execution.orders import (
    DuplicateClientIdError,
    OrderManager,
    RetryPolicy,
    Sleep,
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
    VenueError,
    VenuePosition,
)
from perpdesk.secrets import (
    ApiCredentials,
    install_log_redaction,
    load_api_credentials,
    redact,
)
from perpdesk.sim.engine import check_order

__all__ = [
    "CREDENTIAL_NAMES",
    "CcxtTransport",
    "LiveVenue",
    "SpotPerpVenue",
    "SymbolMap",
    "make_exchange",
    "open_spot_perp_venue",
]

log = logging.getLogger(__name__)

CREDENTIAL_NAMES = {"binanceusdm": "binance", "binance": "binance", "bybit": "bybit", "okx": "okx"}
"""Venue id → the name in ``PERPDESK_<NAME>_API_KEY`` / ``_API_SECRET`` (/ ``_API_PASSPHRASE``)."""

DEFAULT_FUNDING_INTERVAL_H = {"binanceusdm": 8, "bybit": 8, "okx": 8}
USD_ASSETS = frozenset({"USDT", "USDC", "USD", "BUSD", "FDUSD"})
_CODE_RE = re.compile(r'"code"\s*:\s*(-?\d+)')


def _dec(x: Any) -> Decimal:
    """A ccxt number (float or str) as the shortest Decimal that round-trips it."""
    if x is None:
        return Decimal(0)
    if isinstance(x, str):
        return Decimal(x)
    return Decimal(repr(float(x)))


def _one_line(text: str, limit: int = 300) -> str:
    return redact(" ".join(str(text).split()))[:limit]


def make_exchange(
    exchange_id: str,
    credentials: ApiCredentials | None,
    *,
    api_url: str | None = None,
    ws_url: str | None = None,
    timeout_ms: int = 10_000,
    recv_window_ms: int = 5_000,
    enable_rate_limit: bool = True,
    ws_api_url: str | None = None,
) -> Any:
    """A ``ccxt.pro`` exchange (REST + websockets) with keys from ``credentials``.

    ``enable_rate_limit`` keeps ccxt's client-side throttle (request weights per the
    exchange's limits) — switch it off only against a local fake.

    ``api_url`` / ``ws_url`` point it at another host (a loopback fake in tests): REST via
    :func:`~perpdesk.data.sources.ccxt_download.point_ccxt_at`; ``ws_url`` replaces the
    linear-futures websocket base (Binance: ``wss://fstream.binance.com/ws``) — for ``binance``
    (spot) the spot stream base (``wss://stream.binance.com:9443/ws``), and ``ws_api_url`` its
    websocket API (``wss://ws-api.binance.com:443/ws-api/v3``, the spot user-data stream)."""
    cls = getattr(ccxtpro, exchange_id, None)
    if cls is None:
        raise VenueError(f"venue {exchange_id!r}: not a ccxt.pro exchange id")
    cfg: dict[str, Any] = {
        "timeout": timeout_ms,
        "enableRateLimit": enable_rate_limit,
        "options": {
            "recvWindow": recv_window_ms,
            "adjustForTimeDifference": False,
            "warnOnFetchOpenOrdersWithoutSymbol": False,
            "defaultType": "swap",
            "fetchCurrencies": False,
        },
    }
    if exchange_id == "binance":  # the spot account: spot markets only, no margin pairs
        cfg["options"].update(
            {"defaultType": "spot", "fetchMarkets": {"types": ["spot"]}, "fetchMargins": False}
        )
    if credentials is not None:
        # ccxt's DEBUG log prints request headers (X-MBX-APIKEY): mask keys in every record
        install_log_redaction()
        cfg["apiKey"] = credentials.api_key.reveal()
        cfg["secret"] = credentials.api_secret.reveal()
        if credentials.passphrase is not None:
            cfg["password"] = credentials.passphrase.reveal()
    ex = cls(cfg)
    if api_url is not None:
        point_ccxt_at(ex, api_url)
    if ws_url is not None or ws_api_url is not None:
        ws = ex.urls["api"]["ws"]
        if not isinstance(ws, dict) or "linear" not in ws:
            raise VenueError(f"venue {exchange_id}: ws_url override supports Binance-style urls")
        if ws_url is not None:
            ws["spot" if exchange_id == "binance" else "linear"] = ws_url
        if ws_api_url is not None:
            ws["ws-api"]["spot" if exchange_id == "binance" else "linear"] = ws_api_url
    return ex


class SymbolMap:
    """Engine symbol ↔ ccxt unified symbol, for the linear perps of one exchange's loaded
    markets (engine symbol = :func:`~perpdesk.data.sources.ccxt_download.engine_symbol`, the
    market id without dashes and ``-SWAP``: ``BTCUSDT`` on Binance, Bybit and OKX), or with
    ``spot`` for its spot markets (engine symbol = id without dashes + ``.SPOT``,
    ``BTCUSDT.SPOT`` ↔ ``BTC/USDT``)."""

    def __init__(self, markets: Mapping[str, Mapping[str, Any]], *, spot: bool = False) -> None:
        self.spot = spot
        self.kind = "spot market" if spot else "linear perpetual"
        self.to_unified: dict[str, str] = {}
        self.to_engine: dict[str, str] = {}
        for unified, m in markets.items():
            ok = m.get("spot") if spot else (m.get("swap") and m.get("linear"))
            if ok:
                # one name per market on every venue: OKX's BTC-USDT-SWAP is BTCUSDT, its
                # BTC-USDT spot BTCUSDT.SPOT (the scanner and the catalog use the same names)
                engine = (
                    str(m["id"]).replace("-", "") + SPOT_SUFFIX if spot else engine_symbol(dict(m))
                )
                self.to_unified[engine] = unified
                self.to_engine[unified] = engine

    def unified(self, symbol: str) -> str:
        """``BTCUSDT`` → ``BTC/USDT:USDT``; raises :class:`VenueError` for an unknown one."""
        u = self.to_unified.get(symbol)
        if u is None:
            raise VenueError(f"symbol {symbol!r}: not a {self.kind} of this venue")
        return u

    def engine(self, unified: str) -> str:
        """``BTC/USDT:USDT`` → ``BTCUSDT``."""
        e = self.to_engine.get(unified)
        if e is None:
            raise VenueError(f"symbol {unified!r}: not a {self.kind} of this venue")
        return e


_STATUS = {
    "canceled": OrderStatus.CANCELED,
    "cancelled": OrderStatus.CANCELED,
    "expired": OrderStatus.EXPIRED,
    "rejected": OrderStatus.REJECTED,
}


def _map_error(ex: Any, exc: Exception, where: str) -> VenueError | None:
    """A ccxt exception as one of ours; None for a business refusal (the caller makes a
    REJECTED state)."""
    msg = f"{where}: {type(exc).__name__}: {_one_line(str(exc))}"
    m = _CODE_RE.search(str(exc))
    code = int(m.group(1)) if m else None
    if isinstance(exc, ccxt.DDoSProtection) or code == -1003:
        return RateLimitedError(msg, _retry_after_s(getattr(ex, "last_response_headers", None)))
    if code == -4116 or isinstance(exc, ccxt.DuplicateOrderId) or "Duplicate order sent" in msg:
        return DuplicateClientIdError(msg)
    if isinstance(exc, (ccxt.NetworkError, ccxt.InvalidNonce, ccxt.BadResponse)) or code == -1021:
        return TransientVenueError(msg)
    if isinstance(exc, ccxt.AuthenticationError | ccxt.PermissionDenied | ccxt.BadSymbol):
        return VenueError(msg)
    if isinstance(exc, ccxt.ExchangeError):
        return None
    return VenueError(msg)


PARSE_ERRORS = (AttributeError, TypeError, KeyError, ValueError, IndexError)
"""What ccxt raises when it parses a truncated or garbled body it did not reject itself
(it returns the raw text, then its parser fails)."""


def _unreadable(where: str, exc: Exception) -> TransientVenueError:
    return TransientVenueError(f"{where}: unreadable response ({type(exc).__name__})")


def _retry_after_s(headers: Any) -> float | None:
    """``Retry-After`` in seconds (delta-seconds form only)."""
    if not headers:
        return None
    for k, v in dict(headers).items():
        if str(k).lower() == "retry-after":
            try:
                return max(0.0, float(v))
            except (TypeError, ValueError):
                return None
    return None


_ALGO_STATUS = {
    "NEW": OrderStatus.NEW,
    "CANCELED": OrderStatus.CANCELED,
    "CANCELLED": OrderStatus.CANCELED,
    "EXPIRED": OrderStatus.EXPIRED,
    "REJECTED": OrderStatus.REJECTED,
}


class CcxtTransport:
    """:class:`~perpdesk.execution.orders.OrderTransport` over one ccxt exchange: one request
    per call, errors mapped (see the module docstring). ``spot``: the exchange is a spot
    account (no ``reduceOnly``/``positionSide``, no stop orders)."""

    def __init__(self, exchange: Any, symbols: SymbolMap, *, spot: bool = False) -> None:
        self.ex = exchange
        self.symbols = symbols
        self.spot = spot

    def parse_order(self, o: Mapping[str, Any], order: Order | None = None) -> OrderState:
        """A ccxt order structure as an :class:`OrderState`; raises
        :class:`TransientVenueError` when ccxt handed back an unparsed (garbled) body. With
        ``order`` its client id wins (a Binance spot cancel answers with the cancel
        request's own ``clientOrderId``)."""
        if not isinstance(o, Mapping) or not isinstance(o.get("info"), Mapping) or not o.get("id"):
            cid = order.client_order_id if order else "?"
            raise TransientVenueError(f"{self.ex.id} order {cid}: unreadable response")
        st = o.get("status")
        filled = _dec(o.get("filled"))
        amount = _dec(o.get("amount"))
        if st == "open":
            status = OrderStatus.PARTIALLY_FILLED if filled > 0 else OrderStatus.NEW
        elif st == "closed":
            status = OrderStatus.FILLED if filled >= amount else OrderStatus.EXPIRED
        else:
            status = _STATUS.get(str(st), OrderStatus.NEW)
        info = o["info"]
        if str(info.get("status", "")).upper() == "EXPIRED":
            status = OrderStatus.EXPIRED
        cid = (order.client_order_id if order else "") or o.get("clientOrderId") or ""
        sym = o.get("symbol")
        symbol = self.symbols.engine(sym) if sym else (order.symbol if order else "")
        side = Side.BUY if o.get("side") == "buy" else Side.SELL
        ts = o.get("lastUpdateTimestamp") or o.get("timestamp") or 0
        avg = o.get("average")
        return OrderState(
            client_order_id=cid,
            symbol=symbol,
            side=side,
            status=status,
            qty_base=amount,
            filled_base=filled,
            avg_price=_dec(avg) if avg else None,
            price=_dec(o["price"]) if o.get("price") else None,
            venue_order_id=str(o.get("id") or ""),
            ts_ns=int(ts) * 1_000_000,
        )

    def _rejected(self, order: Order, reason: str) -> OrderState:
        return OrderState(
            order.client_order_id,
            order.symbol,
            order.side,
            OrderStatus.REJECTED,
            _dec(order.qty_base),
            Decimal(0),
            reason=reason,
            ts_ns=time.time_ns(),
        )

    async def _algo_state(self, res: Mapping[str, Any], order: Order) -> OrderState:
        """The state of a conditional (algo) order from its raw answer: waiting → NEW; once
        triggered, the state of the order it became (``actualOrderId``) under our id."""
        info = res.get("info") if isinstance(res.get("info"), Mapping) else res
        if not isinstance(info, Mapping) or not (info.get("algoId") or info.get("algoStatus")):
            raise TransientVenueError(f"{self.ex.id} stop {order.client_order_id}: unreadable")
        raw = str(info.get("algoStatus", "")).upper()
        actual = info.get("actualOrderId")
        if raw in ("TRIGGERED", "FINISHED") and actual:
            got = await self.ex.fetch_order(str(actual), self.symbols.unified(order.symbol))
            return self.parse_order(got, order)
        status = _ALGO_STATUS.get(raw, OrderStatus.NEW)
        return OrderState(
            order.client_order_id,
            order.symbol,
            order.side,
            status,
            _dec(order.qty_base),
            Decimal(0),
            price=_dec(info.get("triggerPrice")) if info.get("triggerPrice") else None,
            venue_order_id=str(info.get("algoId") or ""),
            ts_ns=int(info.get("updateTime") or 0) * 1_000_000,
        )

    async def send(self, order: Order) -> OrderState:
        """``create_order`` with the client id; business refusals → REJECTED."""
        stop = order.type is OrderType.STOP_MARKET
        if stop and self.spot:
            return self._rejected(order, "spot stop orders are not supported by LiveVenue")
        params: dict[str, Any] = {"clientOrderId": order.client_order_id}
        if order.reduce_only and not self.spot:
            params["reduceOnly"] = True
        if order.position_side is not PositionSide.BOTH and not self.spot:
            params["positionSide"] = order.position_side.value.upper()
        if stop:
            params["triggerPrice"] = order.stop_price  # → POST /fapi/v1/algoOrder
        if order.type is OrderType.LIMIT:
            if order.tif is TimeInForce.IOC:
                params["timeInForce"] = "IOC"
            elif order.tif is TimeInForce.POST_ONLY:
                params["postOnly"] = True
        where = f"{self.ex.id} place {order.client_order_id}"
        try:
            res = await self.ex.create_order(
                self.symbols.unified(order.symbol),
                "limit" if order.type is OrderType.LIMIT else "market",
                order.side.value,
                order.qty_base,
                order.price,
                params,
            )
            if stop:
                return await self._algo_state(res, order)
        except PARSE_ERRORS as exc:  # ccxt parsed a garbled body: outcome unknown
            raise _unreadable(where, exc) from None
        except ccxt.BaseError as exc:
            err = _map_error(self.ex, exc, where)
            if err is not None:
                raise err from None
            return self._rejected(order, _one_line(str(exc)))
        return self.parse_order(res, order)

    def _by_cid(self, order: Order) -> dict[str, Any]:
        params: dict[str, Any] = {"clientOrderId": order.client_order_id}
        if order.type is OrderType.STOP_MARKET:
            params["trigger"] = True  # the conditional-order endpoints
        return params

    async def lookup(self, order: Order) -> OrderState | None:
        """``fetch_order`` by client id; None when the exchange does not know it."""
        where = f"{self.ex.id} query {order.client_order_id}"
        try:
            res = await self.ex.fetch_order(
                None, self.symbols.unified(order.symbol), self._by_cid(order)
            )
            if order.type is OrderType.STOP_MARKET:
                return await self._algo_state(res, order)
        except ccxt.OrderNotFound:
            return None
        except PARSE_ERRORS as exc:  # ccxt parsed a garbled body: outcome unknown
            raise _unreadable(where, exc) from None
        except ccxt.BaseError as exc:
            raise (_map_error(self.ex, exc, where) or VenueError(where)) from None
        return self.parse_order(res, order)

    async def cancel(self, order: Order) -> OrderState:
        """``cancel_order`` by client id; an order the exchange no longer holds open is
        answered with its final state."""
        where = f"{self.ex.id} cancel {order.client_order_id}"
        try:
            res = await self.ex.cancel_order(
                None, self.symbols.unified(order.symbol), self._by_cid(order)
            )
        except ccxt.OrderNotFound:
            found = await self.lookup(order)
            if found is None:
                raise VenueError(f"{where}: unknown to the exchange") from None
            return found
        except PARSE_ERRORS as exc:  # ccxt parsed a garbled body: outcome unknown
            raise _unreadable(where, exc) from None
        except ccxt.BaseError as exc:
            err = _map_error(self.ex, exc, where)
            if err is None:
                found = await self.lookup(order)
                if found is not None:
                    return found
                err = VenueError(f"{where}: {_one_line(str(exc))}")
            raise err from None
        if order.type is OrderType.STOP_MARKET:  # the answer is only an ack: read the state
            found = await self.lookup(order)
            if found is None:
                raise VenueError(f"{where}: unknown to the exchange after the cancel")
            return found
        return self.parse_order(res, order)


class LiveVenue:
    """A live venue on ccxt (see the module docstring). Build with :meth:`from_env` (keys
    from the environment) or pass a ready ``ccxt.pro`` exchange; call :meth:`connect` first.
    :meth:`fills` is meant for one consumer (the runner); orders placed by an earlier process
    are re-registered with ``venue.orders.restore(...)`` before they are cancelled or resent.

    ``sleep`` is injectable (rate-limit waits, stream backoff); ``retry`` sets the order
    manager's rules (``settle_s`` must cover the exchange's recvWindow). ``spot`` (default:
    the exchange's ``defaultType`` is spot) makes it a spot venue; ``spot_quote`` is the quote
    asset whose markets stand for the base-asset "positions"."""

    def __init__(
        self,
        exchange: Any,
        *,
        spot: bool | None = None,
        spot_quote: str = "USDT",
        retry: RetryPolicy | None = None,
        sleep: Sleep = asyncio.sleep,
        poll_interval_s: float = 2.0,
        resync_polls: int = 2,
        scan_interval_s: float = 0.5,
        reconnect_delay_s: float = 1.0,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.ex = exchange
        self.spot = exchange.options.get("defaultType") == "spot" if spot is None else bool(spot)
        self.spot_quote = spot_quote
        self._cids_fetched: set[str] = set()
        # after an ambiguous failure wait out the request's recvWindow (+1 s for clock
        # skew between us and the exchange) before asking whether the order exists
        self.retry = retry or RetryPolicy(
            settle_s=exchange.options.get("recvWindow", 5000) / 1000.0 + 1.0
        )
        self.sleep = sleep
        self.poll_interval_s = poll_interval_s
        self.resync_polls = resync_polls
        self.scan_interval_s = scan_interval_s
        self.reconnect_delay_s = reconnect_delay_s
        self.clock_ns = clock_ns
        self.symbols: SymbolMap | None = None
        self.orders: OrderManager | None = None
        self._instruments: dict[str, Instrument] = {}
        self._fill_symbols: set[str] = set()
        self._last_trade_ms: dict[str, int] = {}
        self._started_ms = clock_ns() // 1_000_000
        self.stream_errors = 0
        """User-data stream failures seen by :meth:`fills` (each one switches to polling)."""
        self.rest_polls = 0
        """REST polls of own trades made by :meth:`fills`."""

    @classmethod
    def from_env(
        cls,
        exchange_id: str = "binanceusdm",
        *,
        environ: Mapping[str, str] | None = None,
        dotenv_path: str | None = ".env",
        api_url: str | None = None,
        ws_url: str | None = None,
        timeout_ms: int = 10_000,
        recv_window_ms: int = 5_000,
        enable_rate_limit: bool = True,
        ws_api_url: str | None = None,
        **kwargs: Any,
    ) -> LiveVenue:
        """A venue with keys from ``PERPDESK_<NAME>_API_KEY`` / ``_API_SECRET`` (name from
        :data:`CREDENTIAL_NAMES`, e.g. ``BINANCE``) in the environment or ``.env``."""
        name = CREDENTIAL_NAMES.get(exchange_id, exchange_id)
        creds = load_api_credentials(
            name, environ=environ, dotenv_path=dotenv_path, require_passphrase=exchange_id == "okx"
        )
        ex = make_exchange(
            exchange_id,
            creds,
            api_url=api_url,
            ws_url=ws_url,
            timeout_ms=timeout_ms,
            recv_window_ms=recv_window_ms,
            enable_rate_limit=enable_rate_limit,
            ws_api_url=ws_api_url,
        )
        return cls(ex, **kwargs)

    @property
    def venue_id(self) -> str:
        """The ccxt id (``binanceusdm``)."""
        return str(self.ex.id)

    # ------------------------------------------------------------------ setup
    async def _rest(self, coro_fn: Callable[[], Any], where: str) -> Any:
        """One REST call with rate-limit / transient retries (for idempotent reads)."""
        for k in range(self.retry.max_attempts):
            try:
                return await coro_fn()
            except PARSE_ERRORS as exc:  # a garbled body: read again
                log.warning("%s", _unreadable(where, exc))
                await self.sleep(self.retry.delay_s(k, None))
            except ccxt.BaseError as exc:
                err = _map_error(self.ex, exc, where) or VenueError(
                    f"{where}: {_one_line(str(exc))}"
                )
                if isinstance(err, RateLimitedError):
                    await self.sleep(self.retry.delay_s(k, err.retry_after_s))
                elif isinstance(err, TransientVenueError):
                    await self.sleep(self.retry.delay_s(k, None))
                else:
                    raise err from None
        raise VenueError(f"{where}: gave up after {self.retry.max_attempts} attempts")

    async def connect(self) -> None:
        """Load markets and funding intervals; set up the order manager."""
        await self._rest(lambda: self.ex.load_markets(reload=True), f"{self.venue_id} markets")
        self.symbols = SymbolMap(self.ex.markets, spot=self.spot)
        intervals = {} if self.spot else await self._funding_intervals()
        self._instruments = {}
        for engine, unified in self.symbols.to_unified.items():
            m = self.ex.markets[unified]
            if m.get("active") is False:
                continue
            tick, lot = self._steps(m)
            ih = intervals.get(engine, DEFAULT_FUNDING_INTERVAL_H.get(self.venue_id, 8))
            self._instruments[engine] = Instrument(
                venue=self.venue_id,
                symbol=engine,
                kind=InstrumentKind.SPOT if self.spot else InstrumentKind.PERP,
                base=m["base"],
                quote=m["quote"],
                tick_size=tick,
                lot_size=lot,
                funding_interval_h=0 if self.spot else ih,
            )
        transport = CcxtTransport(self.ex, self.symbols, spot=self.spot)
        self.orders = OrderManager(
            transport, self.venue_id, retry=self.retry, sleep=self.sleep, clock_ns=self.clock_ns
        )

    def _steps(self, m: Mapping[str, Any]) -> tuple[float, float]:
        p = m.get("precision") or {}
        price, amount = p.get("price"), p.get("amount")
        if price is None or amount is None:
            raise VenueError(f"{self.venue_id} {m.get('id')}: market has no price/amount precision")
        if self.ex.precisionMode != ccxt.TICK_SIZE:  # decimal places → step
            price, amount = 10.0 ** -float(price), 10.0 ** -float(amount)
        return float(price), float(amount) * float(m.get("contractSize") or 1.0)

    async def _funding_intervals(self) -> dict[str, int]:
        """Hours between settlements by engine symbol, where the venue publishes them."""
        out: dict[str, int] = {}
        assert self.symbols is not None
        if self.venue_id == "binanceusdm":
            rows = await self._rest(
                lambda: self.ex.fapiPublicGetFundingInfo(), "binanceusdm fundingInfo"
            )
            for r in rows or []:
                out[r["symbol"]] = int(r["fundingIntervalHours"])
        elif self.venue_id == "bybit":
            for engine, unified in self.symbols.to_unified.items():
                minutes = (self.ex.markets[unified].get("info") or {}).get("fundingInterval")
                if minutes:
                    out[engine] = int(minutes) // 60
        return out

    def _om(self) -> OrderManager:
        if self.orders is None or self.symbols is None:
            raise VenueError(f"{self.venue_id}: call connect() first")
        return self.orders

    # ------------------------------------------------------------------ requests
    async def instruments(self) -> Mapping[str, Instrument]:
        """Linear perps by engine symbol (after :meth:`connect`)."""
        self._om()
        return dict(self._instruments)

    async def balances(self) -> Mapping[str, Balance]:
        """``fetch_balance``: wallet total and free per asset."""
        b = await self._rest(lambda: self.ex.fetch_balance(), f"{self.venue_id} balance")
        out = {}
        for asset, tot in (b.get("total") or {}).items():
            if tot is None:
                continue
            free = (b.get("free") or {}).get(asset)
            out[asset] = Balance(asset, _dec(tot), _dec(free))
        return out

    async def positions(self) -> list[VenuePosition]:
        """``fetch_positions``: non-zero positions, qty signed (+ long). Spot: the non-zero
        base-asset balances (total = free + locked) of the instruments quoted in
        ``spot_quote``, entry price unknown (0)."""
        om = self._om()
        assert self.symbols is not None and om
        if self.spot:
            return await self._spot_positions()
        rows = await self._rest(lambda: self.ex.fetch_positions(), f"{self.venue_id} positions")
        out = []
        for p in rows:
            contracts = _dec(p.get("contracts"))
            if contracts == 0 or p.get("symbol") not in self.symbols.to_engine:
                continue
            size = contracts * _dec(p.get("contractSize") or 1)
            qty = size if p.get("side") == "long" else -size
            ps = str((p.get("info") or {}).get("positionSide", "BOTH")).lower()
            out.append(
                VenuePosition(
                    symbol=self.symbols.engine(p["symbol"]),
                    position_side=PositionSide(ps)
                    if ps in ("long", "short")
                    else PositionSide.BOTH,
                    qty_base=qty,
                    entry_price=_dec(p.get("entryPrice")),
                    unrealised_pnl_usd=_dec(p.get("unrealizedPnl")),
                    mark_price=_dec(p["markPrice"]) if p.get("markPrice") else None,
                )
            )
        return out

    async def _spot_positions(self) -> list[VenuePosition]:
        b = await self._rest(lambda: self.ex.fetch_balance(), f"{self.venue_id} balance")
        totals = b.get("total") or {}
        out = []
        for sym, inst in sorted(self._instruments.items()):
            if inst.quote != self.spot_quote:
                continue
            qty = _dec(totals.get(inst.base))
            if qty != 0:
                out.append(VenuePosition(sym, PositionSide.BOTH, qty, Decimal(0)))
        return out

    async def place(self, order: Order) -> OrderState:
        """Place through the order manager (idempotent; see the module docstring). Static
        checks first (known symbol, quantity on the lot grid, prices on the tick grid —
        ccxt would otherwise truncate an off-grid size silently): a failure is a REJECTED
        state and nothing is sent."""
        om = self._om()
        inst = self._instruments.get(order.symbol)
        hedge = order.position_side is not PositionSide.BOTH
        reason = check_order(order, inst, hedge_mode=hedge, known_ids=set())
        if reason is not None:
            return OrderState(
                order.client_order_id,
                order.symbol,
                order.side,
                OrderStatus.REJECTED,
                _dec(order.qty_base),
                Decimal(0),
                reason=reason,
                ts_ns=self.clock_ns(),
            )
        self._fill_symbols.add(order.symbol)
        return await om.submit(order)

    async def cancel(self, client_order_id: str, symbol: str) -> OrderState:
        """Cancel an order placed through this venue."""
        return await self._om().cancel(client_order_id)

    async def query(self, client_order_id: str, symbol: str) -> OrderState | None:
        """``fetch_order`` by client id (merged into the manager's state when it knows it)."""
        om = self._om()
        o = om.order(client_order_id)
        probe = o or Order(client_order_id, self.venue_id, symbol, Side.BUY, 1.0)
        for k in range(self.retry.max_attempts):
            try:
                st = await om.transport.lookup(probe)
                return None if st is None else om.on_order_update(st)
            except RateLimitedError as e:
                await self.sleep(self.retry.delay_s(k, e.retry_after_s))
            except TransientVenueError:
                await self.sleep(self.retry.delay_s(k, None))
        raise VenueError(f"query {client_order_id}: gave up after {self.retry.max_attempts}")

    async def open_orders(self, symbol: str | None = None) -> list[OrderState]:
        """``fetch_open_orders`` (all symbols when None)."""
        om = self._om()
        assert self.symbols is not None
        uni = None if symbol is None else self.symbols.unified(symbol)
        tr = om.transport
        assert isinstance(tr, CcxtTransport)
        rows = await self._rest(
            lambda: self.ex.fetch_open_orders(uni), f"{self.venue_id} open orders"
        )
        return [
            om.on_order_update(tr.parse_order(r))
            for r in rows
            if r.get("symbol") in self.symbols.to_engine
        ]

    async def funding_payments(self, since_ns: int) -> list[FundingPayment]:
        """``fetch_funding_history`` since ``since_ns`` (oldest first); none on spot."""
        assert self._om() and self.symbols is not None
        if self.spot:
            return []
        since_ms = since_ns // 1_000_000
        rows = await self._rest(
            lambda: self.ex.fetch_funding_history(None, since_ms), f"{self.venue_id} funding"
        )
        out = []
        for r in rows:
            if r.get("symbol") not in self.symbols.to_engine or r["timestamp"] < since_ms:
                continue
            out.append(
                FundingPayment(
                    self.symbols.engine(r["symbol"]),
                    int(r["timestamp"]) * 1_000_000,
                    _dec(r["amount"]),
                )
            )
        return sorted(out, key=lambda f: f.ts_ns)

    async def set_leverage(self, symbol: str, leverage: int) -> None:
        """``set_leverage`` on ``symbol``."""
        assert self._om() and self.symbols is not None
        if self.spot:
            raise VenueError(f"{self.venue_id}: spot has no leverage")
        uni = self.symbols.unified(symbol)
        await self._rest(lambda: self.ex.set_leverage(leverage, uni), f"{self.venue_id} leverage")

    # ------------------------------------------------------------------ own fills
    def _execution(self, t: Mapping[str, Any]) -> VenueExecution:
        """A ccxt trade structure (own trade) as a :class:`VenueExecution`."""
        assert self.symbols is not None and self.orders is not None
        info = t.get("info")
        if not isinstance(info, Mapping):
            info = {}
        oid = str(t.get("order") or "")
        cid = (
            t.get("clientOrderId")
            or info.get("c")
            or info.get("orderLinkId")
            or info.get("clOrdId")
            or self.orders.client_id_of(oid)
            or f"#{oid}"
        )
        fee = t.get("fee") or {}
        cur = fee.get("currency")
        fee_usd = _dec(fee.get("cost"))
        if fee_usd != 0 and cur not in USD_ASSETS:
            base = (self.ex.markets.get(t["symbol"]) or {}).get("base")
            if not self.spot or cur != base:
                raise VenueError(f"{self.venue_id} trade {t.get('id')}: fee in {cur}, not USD")
            fee_usd = fee_usd * _dec(t.get("price"))  # base-asset commission at the fill price
        ps = str(info.get("positionSide", info.get("ps", "BOTH"))).lower()
        return VenueExecution(
            client_order_id=str(cid),
            symbol=self.symbols.engine(t["symbol"]),
            side=Side.BUY if t.get("side") == "buy" else Side.SELL,
            trade_id=str(t.get("id")),
            qty_base=_dec(t.get("amount")),
            price=_dec(t.get("price")),
            fee_usd=fee_usd,
            liquidity=Liquidity.MAKER if t.get("takerOrMaker") == "maker" else Liquidity.TAKER,
            ts_ns=int(t.get("timestamp") or 0) * 1_000_000,
            venue_order_id=oid,
            position_side=PositionSide(ps) if ps in ("long", "short") else PositionSide.BOTH,
        )

    def _book(self, trades: Sequence[Mapping[str, Any]]) -> list[Fill]:
        out = []
        assert self.orders is not None
        for t in trades:
            ex = self._execution(t)
            ms = ex.ts_ns // 1_000_000
            self._last_trade_ms[ex.symbol] = max(self._last_trade_ms.get(ex.symbol, 0), ms)
            f = self.orders.on_execution(ex)
            if f is not None:
                out.append(f)
        return out

    async def poll_fills(self) -> list[Fill]:
        """REST fallback: ``fetch_my_trades`` of every symbol traded through this venue
        since the last execution seen (minus 1 s overlap); only new executions returned."""
        assert self.symbols is not None
        self.rest_polls += 1
        out: list[Fill] = []
        for sym in sorted(self._fill_symbols):
            since = max(self._last_trade_ms.get(sym, self._started_ms), self._started_ms) - 1000
            uni = self.symbols.unified(sym)
            rows = await self._rest(
                lambda uni=uni, since=since: self.ex.fetch_my_trades(uni, since),
                f"{self.venue_id} my trades",
            )
            out += self._book(rows)
        return out

    def track(self, symbols: Sequence[str]) -> None:
        """Read the own trades of ``symbols`` (those this venue lists) in
        :meth:`executions_since` and the REST fallback of :meth:`fills` even before this
        process trades them (a restarted runner's pairs)."""
        self._om()
        self._fill_symbols.update(s for s in symbols if s in self._instruments)

    async def _resolve_client_ids(self, rows: Sequence[Mapping[str, Any]], uni: str) -> None:
        """Learn the client id of every order in ``rows`` this process did not send
        (Binance's trade lists carry only the order id): one ``fetch_order`` per order."""
        om = self._om()
        for r in rows:
            info = r.get("info") if isinstance(r.get("info"), Mapping) else {}
            oid = str(r.get("order") or "")
            if not oid or r.get("clientOrderId") or info.get("c") or om.client_id_of(oid):
                continue
            if oid in self._cids_fetched:
                continue
            got = await self._rest(
                lambda oid=oid: self.ex.fetch_order(oid, uni), f"{self.venue_id} order {oid}"
            )
            tr = om.transport
            assert isinstance(tr, CcxtTransport)
            om.on_order_update(tr.parse_order(got))
            self._cids_fetched.add(oid)

    async def executions_since(
        self, since_ns: int, symbols: Sequence[str] | None = None, *, page: int = 1000
    ) -> list[VenueExecution]:
        """Own executions at or after ``since_ns`` (ns UTC) of ``symbols`` (default: every
        symbol traded through or :meth:`track`-ed by this venue), oldest first, each with the
        exchange's trade id. REST ``fetch_my_trades`` per symbol, ``page`` rows a request,
        the next page starting at the last row's time (rows already returned are skipped).
        Unlike :meth:`fills` nothing is marked as booked: callers dedupe by trade id."""
        self._om()
        assert self.symbols is not None
        wanted = self._fill_symbols if symbols is None else set(symbols)
        out: list[VenueExecution] = []
        for sym in sorted(s for s in wanted if s in self._instruments):
            uni = self.symbols.unified(sym)
            since_ms, seen = since_ns // 1_000_000, set()
            while True:
                rows = await self._rest(
                    lambda uni=uni, since_ms=since_ms: self.ex.fetch_my_trades(uni, since_ms, page),
                    f"{self.venue_id} my trades",
                )
                full = len(rows) >= page
                rows = [r for r in rows if str(r.get("id")) not in seen]
                if not rows:
                    break
                await self._resolve_client_ids(rows, uni)
                for r in rows:
                    seen.add(str(r.get("id")))
                    ex = self._execution(r)
                    if ex.ts_ns >= since_ns:
                        out.append(ex)
                since_ms = max(int(r.get("timestamp") or since_ms) for r in rows)
                if not full:
                    break
        return sorted(out, key=lambda e: (e.ts_ns, e.symbol, e.trade_id))

    def _cached_trades(self) -> list[Mapping[str, Any]]:
        """Every own trade in ccxt.pro's cache (a message that lands while no watch call
        is waiting is cached but returned by no call, so the cache is scanned too)."""
        cache = getattr(self.ex, "myTrades", None)
        return list(cache) if cache else []

    async def fills(self) -> AsyncIterator[Fill]:
        """Own fills, each once: the user-data stream (and ccxt.pro's trade cache, scanned
        every ``scan_interval_s``), REST polling while the stream is down and until it has
        been up for ``resync_polls`` polls (see the module docstring)."""
        self._om()
        degraded, clean = False, 0
        last_poll = 0.0
        loop = asyncio.get_running_loop()
        task: asyncio.Task[Any] | None = None
        try:
            while True:
                if task is None:
                    task = asyncio.ensure_future(self.ex.watch_my_trades())
                done, _ = await asyncio.wait({task}, timeout=self.scan_interval_s)
                if not done:  # stream quiet (or connecting): scan the cache, poll if degraded
                    for f in self._book(self._cached_trades()):
                        yield f
                    if degraded and loop.time() - last_poll >= self.poll_interval_s:
                        last_poll = loop.time()
                        for f in await self.poll_fills():
                            yield f
                        clean += 1
                        if clean >= self.resync_polls:
                            degraded = False
                    continue
                finished, task = task, None
                exc = finished.exception()
                if exc is not None:
                    if not isinstance(exc, ccxt.BaseError):
                        raise exc
                    self.stream_errors += 1
                    log.warning("%s user stream: %s", self.venue_id, _one_line(str(exc)))
                    degraded, clean = True, 0
                    last_poll = loop.time()
                    for f in await self.poll_fills():
                        yield f
                    await self.sleep(self.reconnect_delay_s)
                    continue
                for f in self._book([*finished.result(), *self._cached_trades()]):
                    yield f
        finally:
            if task is not None and not task.done():
                task.cancel()

    # ------------------------------------------------------------------ market data
    async def _watch(self, call: Callable[[], Any], what: str) -> AsyncIterator[Any]:
        """Repeat a ccxt.pro watch call forever, reconnecting with backoff on errors."""
        k = 0
        while True:
            try:
                res = await call()
                k = 0
            except ccxt.BaseError as exc:
                self.stream_errors += 1
                log.warning("%s %s stream: %s", self.venue_id, what, _one_line(str(exc)))
                await self.sleep(min(30.0, self.reconnect_delay_s * 2**k))
                k += 1
                continue
            yield res

    async def trades(self, symbols: Sequence[str]) -> AsyncIterator[Trade]:
        """Public trades (``watch_trades_for_symbols``); ``buyer_is_maker`` = taker sold."""
        self._om()
        assert self.symbols is not None
        uni = [self.symbols.unified(s) for s in symbols]
        async for batch in self._watch(lambda: self.ex.watch_trades_for_symbols(uni), "trades"):
            for t in batch:
                yield Trade(
                    self.venue_id,
                    self.symbols.engine(t["symbol"]),
                    int(t["timestamp"]) * 1_000_000,
                    float(t["price"]),
                    float(t["amount"]),
                    t.get("side") == "sell",
                )

    async def book_tops(self, symbols: Sequence[str]) -> AsyncIterator[BookTop]:
        """Best bid/ask (``watch_bids_asks``)."""
        self._om()
        assert self.symbols is not None
        uni = [self.symbols.unified(s) for s in symbols]
        async for tickers in self._watch(lambda: self.ex.watch_bids_asks(uni), "book"):
            for u, t in tickers.items():
                yield BookTop(
                    self.venue_id,
                    self.symbols.engine(u),
                    int(t.get("timestamp") or 0) * 1_000_000,
                    float(t["bid"]),
                    float(t.get("bidVolume") or "nan"),
                    float(t["ask"]),
                    float(t.get("askVolume") or "nan"),
                )

    async def mark_prices(self, symbols: Sequence[str]) -> AsyncIterator[MarkPrice]:
        """Mark/index price and predicted funding (``watch_mark_prices``; Binance
        ``markPrice`` stream fields r and T from ``info``)."""
        self._om()
        assert self.symbols is not None
        uni = [self.symbols.unified(s) for s in symbols]
        async for tickers in self._watch(lambda: self.ex.watch_mark_prices(uni), "mark"):
            for u, t in tickers.items():
                info = t.get("info") or {}
                yield MarkPrice(
                    self.venue_id,
                    self.symbols.engine(u),
                    int(t.get("timestamp") or info.get("E") or 0) * 1_000_000,
                    float(t.get("markPrice") or info.get("p")),
                    float(t.get("indexPrice") or info.get("i") or "nan"),
                    float(info.get("r", "nan")),
                    int(info.get("T", 0)) * 1_000_000,
                )

    async def liquidations(self, symbols: Sequence[str]) -> AsyncIterator[Liquidation]:
        """Public liquidations (``watch_liquidations_for_symbols``)."""
        self._om()
        assert self.symbols is not None
        uni = [self.symbols.unified(s) for s in symbols]
        async for batch in self._watch(
            lambda: self.ex.watch_liquidations_for_symbols(uni), "liquidations"
        ):
            for liq in batch:
                info = liq.get("info") or {}
                side = str(liq.get("side") or info.get("S") or "").lower()
                qty = liq.get("contracts") or liq.get("baseValue") or info.get("q")
                yield Liquidation(
                    self.venue_id,
                    self.symbols.engine(liq["symbol"]),
                    int(liq.get("timestamp") or 0) * 1_000_000,
                    Side.BUY if side == "buy" else Side.SELL,
                    float(liq.get("price") or info.get("ap") or info.get("p")),
                    float(qty) * float(liq.get("contractSize") or 1.0),
                )

    async def close(self) -> None:
        """Close the exchange's HTTP session and websockets."""
        await self.ex.close()


class SpotPerpVenue:
    """One :class:`~perpdesk.execution.protocol.Venue` over a spot venue and a perp venue of
    the same exchange (Binance spot + USD-M): symbols ending in ``.SPOT`` go to ``spot``,
    every other one to ``perp``. Its ``venue_id`` is the perp venue's (fills of both legs
    are booked under it; the symbols keep them apart). Balances of the spot account are
    keyed ``<asset>.SPOT`` (the two accounts are separate wallets); positions and own
    executions are the union of both; funding, marks and liquidations come from the perp
    venue."""

    def __init__(self, spot: LiveVenue, perp: LiveVenue) -> None:
        if not spot.spot or perp.spot:
            raise VenueError("SpotPerpVenue: give a spot venue and a perp venue, in that order")
        self.spot = spot
        self.perp = perp

    def _of(self, symbol: str) -> LiveVenue:
        return self.spot if symbol.endswith(SPOT_SUFFIX) else self.perp

    def _split(self, symbols: Sequence[str]) -> tuple[list[str], list[str]]:
        return (
            [s for s in symbols if s.endswith(SPOT_SUFFIX)],
            [s for s in symbols if not s.endswith(SPOT_SUFFIX)],
        )

    @property
    def venue_id(self) -> str:
        """The perp venue's id (``binanceusdm``)."""
        return self.perp.venue_id

    async def connect(self) -> None:
        """Connect both venues."""
        await asyncio.gather(self.spot.connect(), self.perp.connect())

    def track(self, symbols: Sequence[str]) -> None:
        """:meth:`LiveVenue.track` on the venue of each symbol."""
        sp, pp = self._split(symbols)
        self.spot.track(sp)
        self.perp.track(pp)

    async def instruments(self) -> Mapping[str, Instrument]:
        """Both venues' instruments (spot ones under ``<id>.SPOT``)."""
        return {**(await self.perp.instruments()), **(await self.spot.instruments())}

    async def balances(self) -> Mapping[str, Balance]:
        """Perp wallet by asset, spot wallet by ``<asset>.SPOT``."""
        out = dict(await self.perp.balances())
        for asset, b in (await self.spot.balances()).items():
            key = asset + SPOT_SUFFIX
            out[key] = Balance(key, b.total, b.free)
        return out

    async def positions(self) -> list[VenuePosition]:
        """Perp positions and spot base-asset holdings."""
        return [*(await self.perp.positions()), *(await self.spot.positions())]

    async def place(self, order: Order) -> OrderState:
        """Route to the symbol's venue."""
        return await self._of(order.symbol).place(order)

    async def cancel(self, client_order_id: str, symbol: str) -> OrderState:
        """Route to the symbol's venue."""
        return await self._of(symbol).cancel(client_order_id, symbol)

    async def query(self, client_order_id: str, symbol: str) -> OrderState | None:
        """Route to the symbol's venue."""
        return await self._of(symbol).query(client_order_id, symbol)

    async def open_orders(self, symbol: str | None = None) -> list[OrderState]:
        """Open orders of ``symbol``'s venue, or of both."""
        if symbol is not None:
            return await self._of(symbol).open_orders(symbol)
        return [*(await self.perp.open_orders()), *(await self.spot.open_orders())]

    async def funding_payments(self, since_ns: int) -> list[FundingPayment]:
        """The perp venue's funding."""
        return await self.perp.funding_payments(since_ns)

    async def executions_since(
        self, since_ns: int, symbols: Sequence[str] | None = None
    ) -> list[VenueExecution]:
        """Both venues' executions (:meth:`LiveVenue.executions_since`), oldest first."""
        if symbols is None:
            got = [
                await self.perp.executions_since(since_ns),
                await self.spot.executions_since(since_ns),
            ]
        else:
            sp, pp = self._split(symbols)
            got = [
                await self.perp.executions_since(since_ns, pp),
                await self.spot.executions_since(since_ns, sp),
            ]
        return sorted([*got[0], *got[1]], key=lambda e: (e.ts_ns, e.symbol, e.trade_id))

    def fills(self) -> AsyncIterator[Fill]:
        """Own fills of both venues, in arrival order."""
        from perpdesk.execution.paper import merge_streams

        return merge_streams(self.perp.fills(), self.spot.fills())

    def _both(self, symbols: Sequence[str], what: str) -> AsyncIterator[Any]:
        from perpdesk.execution.paper import merge_streams

        sp, pp = self._split(symbols)
        streams = []
        if pp:
            streams.append(getattr(self.perp, what)(pp))
        if sp:
            streams.append(getattr(self.spot, what)(sp))
        return merge_streams(*streams)

    def trades(self, symbols: Sequence[str]) -> AsyncIterator[Trade]:
        """Public trades of perp and spot symbols."""
        return self._both(symbols, "trades")

    def book_tops(self, symbols: Sequence[str]) -> AsyncIterator[BookTop]:
        """Best bid/ask of perp and spot symbols."""
        return self._both(symbols, "book_tops")

    def mark_prices(self, symbols: Sequence[str]) -> AsyncIterator[MarkPrice]:
        """Marks of the perp symbols (spot has none)."""
        return self.perp.mark_prices(self._split(symbols)[1])

    def liquidations(self, symbols: Sequence[str]) -> AsyncIterator[Liquidation]:
        """Liquidations of the perp symbols."""
        return self.perp.liquidations(self._split(symbols)[1])

    async def close(self) -> None:
        """Close both venues."""
        try:
            await self.perp.close()
        finally:
            await self.spot.close()


SPOT_EXCHANGE = {"binanceusdm": "binance"}
"""Perp exchange id → the ccxt id of the same exchange's spot account (the carry's spot leg)."""


async def open_spot_perp_venue(
    exchange_id: str = "binanceusdm",
    *,
    spot_exchange_id: str | None = None,
    environ: Mapping[str, str] | None = None,
    dotenv_path: str | None = ".env",
    api_url: str | None = None,
    ws_url: str | None = None,
    spot_api_url: str | None = None,
    spot_ws_url: str | None = None,
    spot_ws_api_url: str | None = None,
    **kwargs: Any,
) -> SpotPerpVenue:
    """The live venue of ``perpdesk run --live``: the perp venue ``exchange_id`` and its
    spot account (:data:`SPOT_EXCHANGE`, or ``spot_exchange_id``) behind one
    :class:`SpotPerpVenue`, keys from the environment / ``.env`` (one Binance key trades
    both), both connected. ``spot_api_url`` defaults to ``api_url``; ``kwargs`` go to both
    :class:`LiveVenue` constructors."""
    spot_id = spot_exchange_id or SPOT_EXCHANGE.get(exchange_id)
    if spot_id is None:
        raise VenueError(f"venue {exchange_id}: no spot account wired for the carry's spot leg")
    common: dict[str, Any] = {"environ": environ, "dotenv_path": dotenv_path, **kwargs}
    perp = LiveVenue.from_env(exchange_id, api_url=api_url, ws_url=ws_url, **common)
    spot = LiveVenue.from_env(
        spot_id,
        api_url=spot_api_url or api_url,
        ws_url=spot_ws_url,
        ws_api_url=spot_ws_api_url,
        spot=True,
        **common,
    )
    venue = SpotPerpVenue(spot, perp)
    try:
        await venue.connect()
    except BaseException:
        await venue.close()
        raise
    return venue
