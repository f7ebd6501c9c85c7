"""The live venue: ccxt async REST (``ccxt.pro`` classes include it) + ccxt.pro websockets.

Binance USD-M first (``binanceusdm``); Bybit (``bybit``, linear USDT perps) and OKX (``okx``,
USDT swaps) go through the same unified calls — ``create_order``, order lookup and
``cancel_order`` by client id, own trades, ``fetch_positions``, ``fetch_balance``, funding
payments, ``set_leverage``, ``watch_trades_for_symbols``, ``watch_bids_asks``,
``watch_mark_prices`` (Bybit: ``watch_tickers``; OKX: ``watch_mark_prices`` +
``watch_funding_rates``), ``watch_liquidations_for_symbols``, ``watch_my_trades`` — with the
per-venue differences below.

**What is tested where.** Binance USD-M (tests/test_execution_live.py, fake
tests/fake_exchange.py): REST and websockets — orders, stops, fills on the user stream and
its REST fallback, positions, balances, funding, executions, spot leg, faults; the runner
over spot + USD-M (tests/test_runner_live.py). Bybit and OKX REST (tests/test_live_bybit_okx.py,
fakes tests/fake_venues.py, signed like the venues and shaped from recorded answers): perps:
instruments (tick, lot, funding interval), limit and market orders by client id, query,
cancel, open orders, partial fills, positions in one-way and hedge mode, balances,
``executions_since`` across pages, funding payments, leverage, business refusals, duplicate
client ids, a timeout after execution (adopted, not resent), rate limits and 5xx, keys kept
out of errors; spot legs (``spot=True``): spot instruments only, limit and market orders by
client id with base-unit sizes on the wire, query, cancel, open orders, base-asset balances
as positions, own trades with trade ids and base-asset fees in USD, refusals (balance,
minimum, duplicate id), the reduce-only cut to the holding; a short-perp / long-spot pair
through :func:`open_spot_perp_venue` (hedged within a lot, one unified balance);
:class:`~perpdesk.live.runner.Runner` entering and exiting a pair live (prices fed to the
runner). Bybit and OKX websockets (tests/test_live_bybit_okx_ws.py, the same fakes' websocket
endpoints, frames shaped from the recorded ones): :meth:`LiveVenue.trades` (Bybit
``publicTrade``, OKX ``trades``) and :meth:`LiveVenue.book_tops` (Bybit ``orderbook.1``, OKX
``bbo-tbt``) with engine symbols and base-unit sizes (OKX contracts × ``ctVal``), a dropped
public socket resubscribed; :meth:`LiveVenue.fills` on the private stream (Bybit ``auth`` +
``execution``, OKX ``login`` + ``orders``; the fakes check the signatures): each execution
once with its maker fee, duplicated and reordered frames, a dropped socket (REST polls while
it is refused, then the stream again; nothing lost or doubled), keepalive pings answered, a
spot-perp pair on one unified account booking each leg once from the shared stream, keys in
no log or error after a refused login; :meth:`LiveVenue.mark_prices` (Bybit linear
``tickers.<symbol>``: the recorded snapshot's mark, index, predicted rate and next funding
time exactly, then deltas of single fields merged into the last full values; OKX
``mark-price`` + ``funding-rate`` joined per symbol, the rate and ``fundingTime`` kept across
mark messages and the mark across funding messages); a stream ccxt.pro lacks (Bybit
``watch_liquidations_for_symbols``) is a one-line :class:`VenueError`. Paper trading on
Bybit's and OKX's live public streams, marks and funding included, through the CLI:
tests/test_paper_live_multi.py. ``perpdesk audit`` on both legs with the key's permissions
(Bybit ``/v5/user/query-api``, OKX ``/api/v5/account/config``): tests/test_audit_multi.py.
**Not tested on Bybit/OKX**: either venue's liquidations
(the fakes serve no ``liquidation-orders`` / ``allLiquidation`` channel), OKX's index price
(its ``mark-price`` channel has none and ``index-tickers`` is not subscribed: ``index_price``
is NaN on OKX), a reconnect of the mark streams, Bybit's ``execution.fast`` topic, the order /
position / wallet topics, stop orders (refused: REJECTED). Binance's spot leg paying its
commission in BTC (no BNB) is tested with the Binance fake's ``spot_fee_asset="base"`` (tests/test_runner_live.py).

- **Symbols.** The engine names a market by the exchange's id (``market['id']``: ``BTCUSDT``
  on Binance and Bybit, ``BTC-USDT-SWAP`` on OKX → ``BTCUSDT``); :class:`SymbolMap`
  converts to ccxt's unified symbol (``BTC/USDT:USDT``) and back.
- **Quantities** are base units in the engine. OKX swaps trade in contracts: orders go out
  as ``qty_base / ctVal`` (ccxt ``contractSize``; BTC-USDT-SWAP 0.01 BTC), and order, trade
  and position sizes come back × ``contractSize``, as do streamed public trade and book
  sizes (ccxt.pro passes OKX's contracts through); a lot is ``lotSz × ctVal`` base units.
- **Client ids** go out in each venue's alphabet (:func:`venue_client_id`, reversible by
  :func:`engine_client_id`): Binance as they are, Bybit ``orderLinkId`` (letters, digits,
  ``-``, ``_``; ≤ 36), OKX ``clOrdId`` (letters and digits; ≤ 32). An id too long after
  escaping is REJECTED before anything is sent (OKX: each ``-`` takes two characters). The
  rules live in :mod:`perpdesk.execution.orders` (:data:`CLIENT_ID_RULES`), where the id
  makers check them: the runner's ``client_order_id`` shortens an id (hashes) until it fits
  every venue it trades on.
- **Funding interval** per venue: Binance publishes only the symbols whose interval differs
  from 8 h (``GET /fapi/v1/fundingInfo``, ``fundingIntervalHours``), so the others are 8 h;
  Bybit gives ``fundingInterval`` in minutes in each instrument's info; OKX: ccxt's
  ``fetch_funding_rates`` (one request, ``instId=ANY``) names each swap's ``interval`` from
  ``nextFundingTime − fundingTime``; a swap it does not list gets the 8 h default.
- **Orders** go through :class:`~perpdesk.execution.orders.OrderManager` (idempotent by client
  id: a timeout is followed by a query, never a blind resend). Bybit and OKX answer a create
  or cancel with ids only: the state is then read back by client id (Bybit: open orders, then
  the order history, by ``orderLinkId``; OKX: ``GET /api/v5/trade/order`` by ``clOrdId``).
  Hedge-mode sides: Binance ``positionSide``, Bybit ``positionIdx`` 1/2, OKX ``posSide``.
  Errors are mapped from ccxt and the venue's code in the quoted body: rate limits
  (``DDoSProtection``; Binance -1003, Bybit 10006, OKX 50011/50061) →
  :class:`RateLimitedError` with ``Retry-After`` or Bybit's ``X-Bapi-Limit-Reset-Timestamp``;
  timeouts, network errors, 5xx, Binance -1021 / Bybit 10002 (outside the recv window: not
  executed) and "system error" codes (Bybit 10016, OKX 50026) → :class:`TransientVenueError`;
  duplicate client ids (Binance -4116, Bybit 110072, OKX 51016) →
  :class:`DuplicateClientIdError`; business refusals (insufficient margin, bad
  price/quantity, post-only would take) → a REJECTED :class:`OrderState` with the
  exchange's message.
- **Balances**: ``total`` is the margin balance (wallet + unrealised PnL): ccxt's total on
  Binance and OKX (``eq``), the coin's ``equity`` on Bybit (ccxt's total there is the wallet).
  Bybit's and OKX's unified accounts list every coin (USDT and the spot legs' BTC …) in one
  balance, read once by :class:`SpotPerpVenue`.
- **Own fills** arrive on the user-data stream (``watch_my_trades``). When the stream fails,
  :meth:`LiveVenue.fills` polls own trades (REST) every ``poll_interval_s`` for the
  symbols it trades until the stream has been healthy for ``resync_polls`` polls; every
  execution is booked once by ``(client_order_id, trade id)``, so repeats, out-of-order
  messages and the REST/stream overlap never double a fill. Bybit's ``execution`` topic and
  OKX's ``orders`` channel (subscribed with ``instType`` SWAP or SPOT) carry the whole
  unified account: a venue books only its own leg's rows (:meth:`LiveVenue._own_leg`: the
  row's ``category`` / ``instType``), as ccxt.pro on a spot-only client parses a linear
  ``BTCUSDT`` execution as the spot market. OKX's stream fee (``fillFee``, negative =
  charged) is negated to a cost as ccxt does on REST (ccxt.pro passes it through as it is).
  A stream ccxt.pro does not have for the venue (``has`` false) raises a one-line
  :class:`VenueError` instead of retrying; :meth:`LiveVenue.has_stream` tells beforehand.
- **Spot** (``LiveVenue(..., spot=True)``; :meth:`LiveVenue.from_env` builds ``binance``
  as spot by default): the spot markets only (ccxt ``fetchMarkets`` types ``["spot"]``,
  ``defaultType`` spot); engine symbols carry the spot suffix (``BTCUSDT.SPOT``,
  :func:`~perpdesk.domain.spot_symbol`); "positions" are the base-asset balances of the
  markets quoted in ``spot_quote`` (USDT); no funding, no leverage; no ``reduceOnly`` or
  position side on the wire (Binance spot refuses parameters it does not read). A
  reduce-only sell is cut to the free base balance (rounded down to the lot) before it is
  sent, as the exchange cuts a reduce-only perp order to the position: a spot leg holds
  its buy less the commission when that was taken in the base asset (Bybit, OKX, Binance
  without BNB), so closing the bought quantity would be refused. A commission charged in
  the base asset is booked in USD at the fill price (``fee_usd``) and reported in base units
  (:attr:`~perpdesk.execution.orders.VenueExecution.fee_qty_base`): the ledger keeps the
  spot holding net of it, as the exchange does. Market orders go without a price and
  are sized in base units: Bybit ``marketUnit=baseCoin`` (a spot market buy's ``qty`` is
  otherwise USDT), OKX ``tgtCcy=base_ccy`` (idem for ``sz``); OKX spot orders are
  ``tdMode=cash``. Binance: another account and ccxt class (``binance``), own fills on the
  websocket API's user-data stream (``userDataStream.subscribe.signature``, ccxt.pro 4.5).
  Bybit and OKX: the unified account of the same key, through a second ccxt client of the
  same id restricted to spot (Bybit ``category=spot``, OKX ``instType=SPOT``; own trades
  from ``/v5/execution/list`` / ``fills-history`` of that category; spot duplicate client
  ids are Bybit 170141). :class:`SpotPerpVenue` puts a spot and a perp venue behind one
  :class:`~perpdesk.execution.protocol.Venue`, routing ``.SPOT`` symbols to the spot one.
- **Stop orders** (``STOP_MARKET`` on USD-M only): ccxt sends them to the conditional-order
  service (``POST /fapi/v1/algoOrder``, ``clientAlgoId``, ``triggerPrice``); they are queried
  and cancelled there by client id, and once triggered the state is the one of the
  market order it became (``actualOrderId``).
- **Executions by REST**: :meth:`LiveVenue.executions_since` lists own trades per symbol with
  the exchange's trade id. Binance: ``fetch_my_trades`` paged forward by time; a trade whose
  order this process did not send is attributed to its client id by fetching the order once.
  Bybit and OKX answer the newest rows first, so they are read by :meth:`LiveVenue._own_trades`
  (Bybit ``/v5/execution/list`` in 7-day windows, paged by cursor, at most 2 years back; OKX
  ``/api/v5/trade/fills-history`` from ``begin``, paged back by bill id); their rows carry the
  client id.
- **Funding payments** (+ received): Binance income ``FUNDING_FEE``; Bybit the transaction
  log's ``SETTLEMENT`` rows (``funding``, documented + received; ccxt's
  ``fetch_funding_history`` reads the execution list's ``execFee`` instead), in 7-day windows;
  OKX bills of type 8 (``balChg``) from ``begin``, paged back by bill id.
- **Keys** only from the environment / ``.env`` through :mod:`perpdesk.secrets` (never
  logged; error text passes through :func:`~perpdesk.secrets.redact`); OKX also needs
  ``PERPDESK_OKX_API_PASSPHRASE`` (sent as ccxt's ``password``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from decimal import ROUND_DOWN, Decimal
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
from perpdesk.execution.orders import (  # the client id codec, re-exported from here
    DuplicateClientIdError,
    OrderManager,
    RetryPolicy,
    Sleep,
    VenueExecution,
    engine_client_id,
    venue_client_id,
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
    "point_ws_at",
]

log = logging.getLogger(__name__)

CREDENTIAL_NAMES = {"binanceusdm": "binance", "binance": "binance", "bybit": "bybit", "okx": "okx"}
"""Venue id → the name in ``PERPDESK_<NAME>_API_KEY`` / ``_API_SECRET`` (/ ``_API_PASSPHRASE``)."""

DEFAULT_FUNDING_INTERVAL_H = {"binanceusdm": 8, "bybit": 8, "okx": 8}
RATE_WINDOW_MS = 10_000.0
"""Window of ccxt's rolling-window throttle (ms): the weight sent in any 10 s stays within
10 s / ``rateLimit`` (Binance USD-M: 200 weight units at 50 ms each; Bybit 500 at 20 ms;
OKX 90 at 110 ms), ccxt's average rate, while a burst inside that budget (an exit leg right
after a funding read) is not delayed. See :func:`make_exchange`."""
STREAM_WATCH = {
    "trades": "watch_trades_for_symbols",
    "book_tops": "watch_bids_asks",
    "mark_prices": "watch_mark_prices",
    "liquidations": "watch_liquidations_for_symbols",
    "fills": "watch_my_trades",
}
""":class:`LiveVenue` stream → the ccxt.pro call behind it (:meth:`LiveVenue.has_stream`)."""
VENUE_STREAM_WATCH = {
    ("bybit", "mark_prices"): ("watch_tickers",),
    ("okx", "mark_prices"): ("watch_mark_prices", "watch_funding_rates"),
}
"""Where a venue's stream needs other ccxt.pro calls than :data:`STREAM_WATCH`: Bybit's mark,
index and predicted funding are fields of the linear ``tickers.<symbol>`` topic; OKX sends
the mark on ``mark-price`` and the funding on ``funding-rate``."""
NEWEST_FIRST_TRADE_LISTS = frozenset({"bybit", "okx"})
"""Venues whose own-trade lists answer the newest rows of a window first (paged by cursor /
bill id, not by time): read through :meth:`LiveVenue._own_trades`."""
BYBIT_HISTORY_MS = 730 * 86_400_000
"""Bybit keeps executions and the transaction log for 2 years: older windows are not asked."""
USD_ASSETS = frozenset({"USDT", "USDC", "USD", "BUSD", "FDUSD"})
_CODE_RE = re.compile(r'"(?:code|retCode|sCode)"\s*:\s*"?(-?\d+)')
_HOURS_RE = re.compile(r"^(\d+)h$")

DUPLICATE_CLIENT_ID_CODES = frozenset({-4116, 110072, 170141, 51016})
"""Binance -4116, Bybit 110072 ("OrderLinkedID is duplicate"; on spot 170141 "Duplicate
clientOrderId"), OKX 51016 ("Duplicated clOrdId")."""
RATE_LIMIT_CODES = frozenset({-1003, 10006, 50011, 50061})
"""Binance -1003, Bybit 10006 ("Too many visits"), OKX 50011 / 50061 (request / order rate)."""
TRANSIENT_CODES = frozenset({-1021, 10002, 10016, 50026})
"""Refused before execution or server trouble (query before any resend): Binance -1021 and
Bybit 10002 (outside the recv window), Bybit 10016 and OKX 50026 ("System error")."""


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
    spot: bool | None = None,
) -> Any:
    """A ``ccxt.pro`` exchange (REST + websockets) with keys from ``credentials``.

    ``spot`` (default: only for ``binance``, Binance's spot account) makes it a spot
    client: ``defaultType`` spot and the spot markets only (``fetchMarkets`` types
    ``["spot"]``) — on Bybit and OKX a second instance of ``bybit`` / ``okx`` whose markets
    are the spot ones of the same unified account (one key trades both).

    ``enable_rate_limit`` keeps ccxt's client-side throttle (request weights per the
    exchange's limits) — switch it off only against a local fake. The throttle is ccxt's
    rolling window (:data:`RATE_WINDOW_MS`), not its default leaky bucket: the leaky bucket
    makes every request wait until the previous one's weight has drained (Binance USD-M
    ``GET /fapi/v1/income`` weighs 30 at ccxt's 50 ms per unit, so an order sent after a
    funding-payments read waited 1.5 s, and 0.25 s per ``userTrades`` read). The window
    admits a request at once while the weight of the last ``RATE_WINDOW_MS`` stays within
    ``RATE_WINDOW_MS / rateLimit`` — the same average rate, without queueing an exit leg
    behind bookkeeping. The exchanges' own limits are per minute (Binance: 2,400 weight per
    minute per IP on USD-M, *General Info → Limits*) and well above one window's budget.

    ``api_url`` / ``ws_url`` point it at another host (a loopback fake in tests): REST via
    :func:`~perpdesk.data.sources.ccxt_download.point_ccxt_at`; ``ws_url`` replaces the
    linear-futures websocket base (Binance: ``wss://fstream.binance.com/ws``) — for ``binance``
    (spot) the spot stream base (``wss://stream.binance.com:9443/ws``), and ``ws_api_url`` its
    websocket API (``wss://ws-api.binance.com:443/ws-api/v3``, the spot user-data stream).
    Bybit: ``ws_url`` is the host (``wss://stream.bybit.com``) and every url of ccxt.pro's
    ``urls['api']['ws']`` is rebuilt on it with Bybit's paths (``/v5/public/<category>``,
    private ``/v5/private``, …). OKX: ``ws_url`` replaces ccxt.pro's one base
    (``wss://ws.okx.com:443/ws/v5``; it appends ``/public``, ``/private``, ``/business``).
    Neither has a ``ws_api_url``."""
    cls = getattr(ccxtpro, exchange_id, None)
    if cls is None:
        raise VenueError(f"venue {exchange_id!r}: not a ccxt.pro exchange id")
    cfg: dict[str, Any] = {
        "timeout": timeout_ms,
        "enableRateLimit": enable_rate_limit,
        "rateLimiterAlgorithm": "rollingWindow",
        "rollingWindowSize": RATE_WINDOW_MS,
        "options": {
            "recvWindow": recv_window_ms,
            "adjustForTimeDifference": False,
            "warnOnFetchOpenOrdersWithoutSymbol": False,
            "defaultType": "swap",
            "fetchCurrencies": False,
        },
    }
    if spot is None:
        spot = exchange_id == "binance"
    if spot:  # the spot account: spot markets only, no margin pairs
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
        point_ws_at(ex, exchange_id, ws_url, ws_api_url)
    return ex


def point_ws_at(ex: Any, exchange_id: str, ws_url: str | None, ws_api_url: str | None) -> None:
    """Replace ccxt.pro's websocket urls (``urls['api']['ws']``) of ``ex``: see
    :func:`make_exchange`."""
    ws = ex.urls["api"]["ws"]
    if exchange_id == "okx":  # one base; ccxt.pro appends /public, /private, /business
        if ws_api_url is not None:
            raise VenueError("venue okx: no websocket API url to replace (ws_api_url)")
        ex.urls["api"]["ws"] = str(ws_url).rstrip("/")
        return
    if exchange_id == "bybit":  # a host; the paths are Bybit's (public per category)
        if ws_api_url is not None:
            raise VenueError("venue bybit: no websocket API url to replace (ws_api_url)")
        base = str(ws_url).rstrip("/")
        for category in ("spot", "inverse", "option", "linear"):
            ws["public"][category] = f"{base}/v5/public/{category}"
        private = ws["private"]
        private["spot"]["unified"] = private["contract"] = f"{base}/v5/private"
        private["spot"]["nonUnified"] = f"{base}/spot/private/v3"
        private["usdc"] = f"{base}/trade/option/usdc/private/v1"
        private["trade"] = f"{base}/v5/trade"
        return
    if not isinstance(ws, dict) or "linear" not in ws:
        raise VenueError(f"venue {exchange_id}: no ws_url override for this venue")
    if ws_url is not None:
        ws["spot" if exchange_id == "binance" else "linear"] = ws_url
    if ws_api_url is not None:
        ws["ws-api"]["spot" if exchange_id == "binance" else "linear"] = ws_api_url


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


def _map_error(
    ex: Any, exc: Exception, where: str, now_ms: Callable[[], int] | None = None
) -> VenueError | None:
    """A ccxt exception as one of ours; None for a business refusal (the caller makes a
    REJECTED state). The venue's codes are read from the body ccxt quotes (Binance ``code``,
    Bybit ``retCode``, OKX ``code`` and per-order ``sCode``); ``now_ms`` is the clock a
    reset timestamp is measured against."""
    msg = f"{where}: {type(exc).__name__}: {_one_line(str(exc))}"
    codes = {int(c) for c in _CODE_RE.findall(str(exc))}
    if isinstance(exc, ccxt.DDoSProtection) or codes & RATE_LIMIT_CODES:
        headers = getattr(ex, "last_response_headers", None)
        return RateLimitedError(msg, _retry_after_s(headers, now_ms))
    if (
        codes & DUPLICATE_CLIENT_ID_CODES
        or isinstance(exc, ccxt.DuplicateOrderId)
        or "Duplicate order sent" in msg
    ):
        return DuplicateClientIdError(msg)
    if isinstance(exc, (ccxt.NetworkError, ccxt.InvalidNonce, ccxt.BadResponse)) or (
        codes & TRANSIENT_CODES
    ):
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


def _retry_after_s(headers: Any, now_ms: Callable[[], int] | None = None) -> float | None:
    """Seconds to wait from a rate-limited answer's headers: ``Retry-After`` (delta-seconds
    form only), else Bybit's ``X-Bapi-Limit-Reset-Timestamp`` (ms since the epoch) minus now."""
    if not headers:
        return None
    low = {str(k).lower(): v for k, v in dict(headers).items()}
    try:
        if "retry-after" in low:
            return max(0.0, float(low["retry-after"]))
        if "x-bapi-limit-reset-timestamp" in low:
            now = (now_ms or (lambda: time.time_ns() // 1_000_000))()
            return max(0.0, (int(low["x-bapi-limit-reset-timestamp"]) - now) / 1000.0)
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
    """:class:`~perpdesk.execution.orders.OrderTransport` over one ccxt exchange: errors
    mapped (see the module docstring). ``spot``: the exchange is a spot account (no
    ``reduceOnly``/``positionSide``, no stop orders).

    Per venue: the client id goes out in the venue's alphabet (:func:`venue_client_id`);
    quantities are base units here and contracts on the wire where the market has a contract
    size (OKX swaps: ``ctVal``); Bybit and OKX answer a create or cancel with ids only, so
    the state is then read back by client id (a second request); Bybit is queried by
    ``orderLinkId`` among the open orders, then the closed ones (``/v5/order/realtime``,
    ``/v5/order/history``), OKX by ``clOrdId`` (``/api/v5/trade/order``)."""

    def __init__(
        self,
        exchange: Any,
        symbols: SymbolMap,
        *,
        spot: bool = False,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.ex = exchange
        self.symbols = symbols
        self.spot = spot
        self.clock_ns = clock_ns

    def _now_ms(self) -> int:
        return self.clock_ns() // 1_000_000

    @property
    def venue_id(self) -> str:
        """The ccxt id."""
        return str(self.ex.id)

    def contract_size(self, unified: str | None) -> Decimal:
        """Base units per order unit of a market (1 unless it trades in contracts)."""
        m = self.ex.markets.get(unified) if unified else None
        cs = (m or {}).get("contractSize")
        return _dec(cs) if cs else Decimal(1)

    def parse_order(self, o: Mapping[str, Any], order: Order | None = None) -> OrderState:
        """A ccxt order structure as an :class:`OrderState` (amounts × contract size: base
        units); raises :class:`TransientVenueError` when ccxt handed back an unparsed
        (garbled) body. With ``order`` its client id wins (a Binance spot cancel answers
        with the cancel request's own ``clientOrderId``)."""
        if not isinstance(o, Mapping) or not isinstance(o.get("info"), Mapping) or not o.get("id"):
            cid = order.client_order_id if order else "?"
            raise TransientVenueError(f"{self.ex.id} order {cid}: unreadable response")
        st = o.get("status")
        sym = o.get("symbol")
        cs = self.contract_size(sym)
        filled = _dec(o.get("filled")) * cs
        amount = _dec(o.get("amount")) * cs
        if st == "open":
            status = OrderStatus.PARTIALLY_FILLED if filled > 0 else OrderStatus.NEW
        elif st == "closed":
            status = OrderStatus.FILLED if filled >= amount else OrderStatus.EXPIRED
        else:
            status = _STATUS.get(str(st), OrderStatus.NEW)
        info = o["info"]
        if str(info.get("status", "")).upper() == "EXPIRED":
            status = OrderStatus.EXPIRED
        venue_cid = str(o.get("clientOrderId") or "")
        cid = (order.client_order_id if order else "") or engine_client_id(self.venue_id, venue_cid)
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

    def _position_params(self, order: Order) -> dict[str, Any]:
        """Hedge-mode side of a perp order: Binance ``positionSide`` LONG/SHORT, Bybit
        ``positionIdx`` 1/2, OKX ``posSide`` long/short (one-way: nothing is sent)."""
        if order.position_side is PositionSide.BOTH or self.spot:
            return {}
        side = order.position_side.value.lower()
        if self.venue_id == "bybit":
            return {"positionIdx": 1 if side == "long" else 2}
        if self.venue_id == "okx":
            return {"positionSide": side}
        return {"positionSide": side.upper()}

    def _spot_market_unit(self) -> dict[str, Any]:
        """The parameter that makes a spot market order's size base units on both sides.
        Bybit reads a spot market *buy*'s ``qty`` as quote (USDT) unless ``marketUnit`` is
        ``baseCoin`` (v5 *Place Order*; ccxt 4.5 sends ``baseCoin`` itself only on a unified
        account and when no price is given); OKX reads a spot market buy's ``sz`` as quote
        unless ``tgtCcy`` is ``base_ccy`` (ccxt's ``tgtCcy`` option defaults to it; sent
        here explicitly so an option change cannot turn a size into a cost)."""
        if self.venue_id == "bybit":
            return {"marketUnit": "baseCoin"}
        if self.venue_id == "okx":
            return {"tgtCcy": "base_ccy"}
        return {}

    async def send(self, order: Order) -> OrderState:
        """``create_order`` with the client id; business refusals → REJECTED. An answer
        carrying ids only (Bybit, OKX) is followed by a :meth:`lookup` (if that fails, the
        acknowledged order is reported NEW)."""
        stop = order.type is OrderType.STOP_MARKET
        if stop and (self.spot or self.venue_id != "binanceusdm"):
            return self._rejected(
                order, f"{self.venue_id}: stop orders are not supported by LiveVenue"
            )
        try:
            vcid = venue_client_id(self.venue_id, order.client_order_id)
        except VenueError as exc:
            return self._rejected(order, str(exc))
        params: dict[str, Any] = {"clientOrderId": vcid, **self._position_params(order)}
        if order.reduce_only and not self.spot:
            params["reduceOnly"] = True
        if stop:
            params["triggerPrice"] = order.stop_price  # → POST /fapi/v1/algoOrder
        if order.type is OrderType.LIMIT:
            if order.tif is TimeInForce.IOC:
                params["timeInForce"] = "IOC"
            elif order.tif is TimeInForce.POST_ONLY:
                params["postOnly"] = True
        elif self.spot:
            params.update(self._spot_market_unit())
        where = f"{self.ex.id} place {order.client_order_id}"
        uni = self.symbols.unified(order.symbol)
        amount = float(_dec(order.qty_base) / self.contract_size(uni))
        # a market order goes without a price: with one, ccxt turns a spot market buy's
        # amount into a quote cost (amount × price) on Bybit and OKX
        price = order.price if order.type is OrderType.LIMIT else None
        try:
            res = await self.ex.create_order(
                uni,
                "limit" if order.type is OrderType.LIMIT else "market",
                order.side.value,
                amount,
                price,
                params,
            )
            if stop:
                return await self._algo_state(res, order)
        except PARSE_ERRORS as exc:  # ccxt parsed a garbled body: outcome unknown
            raise _unreadable(where, exc) from None
        except ccxt.BaseError as exc:
            err = _map_error(self.ex, exc, where, self._now_ms)
            if err is not None:
                raise err from None
            return self._rejected(order, _one_line(str(exc)))
        if isinstance(res, Mapping) and res.get("id") and res.get("status") is None:
            return await self._read_back(res, order)
        return self.parse_order(res, order)

    async def _read_back(self, ack: Mapping[str, Any], order: Order) -> OrderState:
        """The state of an order the venue acknowledged with its ids only."""
        try:
            found = await self.lookup(order)
        except VenueError:
            found = None
        if found is not None:
            return found
        return OrderState(
            order.client_order_id,
            order.symbol,
            order.side,
            OrderStatus.NEW,
            _dec(order.qty_base),
            Decimal(0),
            price=None if order.price is None else _dec(order.price),
            venue_order_id=str(ack.get("id")),
            ts_ns=time.time_ns(),
        )

    def _by_cid(self, order: Order) -> dict[str, Any]:
        vcid = venue_client_id(self.venue_id, order.client_order_id)
        if self.venue_id == "bybit":
            return {"orderLinkId": vcid}
        params: dict[str, Any] = {"clientOrderId": vcid}
        if order.type is OrderType.STOP_MARKET:
            params["trigger"] = True  # the conditional-order endpoints
        return params

    async def _fetch_by_cid(self, order: Order) -> Mapping[str, Any] | None:
        """The ccxt order with our client id; None when the venue does not know it."""
        uni = self.symbols.unified(order.symbol)
        if self.venue_id == "bybit":
            # open orders first, then the closed ones (the order history)
            for fetch in (self.ex.fetch_open_orders, self.ex.fetch_canceled_and_closed_orders):
                rows = await fetch(uni, None, None, self._by_cid(order))
                if rows:
                    return rows[0]
            return None
        try:
            return await self.ex.fetch_order(None, uni, self._by_cid(order))
        except ccxt.OrderNotFound:
            return None

    async def lookup(self, order: Order) -> OrderState | None:
        """The order by client id; None when the exchange does not know it."""
        where = f"{self.ex.id} query {order.client_order_id}"
        try:
            res = await self._fetch_by_cid(order)
            if res is None:
                return None
            if order.type is OrderType.STOP_MARKET:
                return await self._algo_state(res, order)
        except PARSE_ERRORS as exc:  # ccxt parsed a garbled body: outcome unknown
            raise _unreadable(where, exc) from None
        except ccxt.BaseError as exc:
            raise (_map_error(self.ex, exc, where, self._now_ms) or VenueError(where)) from None
        return self.parse_order(res, order)

    async def cancel(self, order: Order) -> OrderState:
        """``cancel_order`` by client id; an order the exchange no longer holds open is
        answered with its final state (also read back after an ids-only answer)."""
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
            err = _map_error(self.ex, exc, where, self._now_ms)
            if err is None:
                found = await self.lookup(order)
                if found is not None:
                    return found
                err = VenueError(f"{where}: {_one_line(str(exc))}")
            raise err from None
        ack_only = isinstance(res, Mapping) and res.get("status") is None
        if order.type is OrderType.STOP_MARKET or ack_only:  # an ack: read the state
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
        :data:`CREDENTIAL_NAMES`, e.g. ``BINANCE``) in the environment or ``.env``. With
        ``spot=True`` the exchange is built as a spot client (:func:`make_exchange`)."""
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
            spot=kwargs.get("spot"),
        )
        return cls(ex, **kwargs)

    @property
    def venue_id(self) -> str:
        """The ccxt id (``binanceusdm``)."""
        return str(self.ex.id)

    def _now_ms(self) -> int:
        return self.clock_ns() // 1_000_000

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
                err = _map_error(self.ex, exc, where, self._now_ms) or VenueError(
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
        transport = CcxtTransport(self.ex, self.symbols, spot=self.spot, clock_ns=self.clock_ns)
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
        elif self.venue_id == "okx":
            # one request for every swap (instId=ANY); ccxt names the interval from
            # nextFundingTime − fundingTime ("8h", "4h")
            rates = await self._rest(lambda: self.ex.fetch_funding_rates(), "okx funding rates")
            for unified, r in (rates or {}).items():
                m = _HOURS_RE.match(str(r.get("interval") or ""))
                if m and unified in self.symbols.to_engine and int(m.group(1)) > 0:
                    out[self.symbols.engine(unified)] = int(m.group(1))
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
        """``fetch_balance``: margin balance (wallet + unrealised PnL) and free per asset.
        ccxt's total is that on Binance USD-M (``marginBalance``) and OKX (``eq``); on Bybit
        it is the wallet balance, so the coin's ``equity`` (wallet + unrealised PnL) of the
        unified account is read instead."""
        b = await self._rest(lambda: self.ex.fetch_balance(), f"{self.venue_id} balance")
        equity: dict[str, Any] = {}
        if self.venue_id == "bybit":
            info = b.get("info") if isinstance(b.get("info"), Mapping) else {}
            for acct in (info.get("result") or {}).get("list") or []:
                for c in acct.get("coin") or []:
                    if c.get("equity") not in (None, ""):
                        equity[str(c.get("coin"))] = c["equity"]
        out = {}
        for asset, tot in (b.get("total") or {}).items():
            if tot is None:
                continue
            free = (b.get("free") or {}).get(asset)
            out[asset] = Balance(asset, _dec(equity.get(asset, tot)), _dec(free))
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
            # hedge mode: ccxt's ``hedged`` (Bybit positionIdx 1/2, OKX posSide long/short,
            # Binance positionSide LONG/SHORT); one-way positions are BOTH
            ps = str((p.get("info") or {}).get("positionSide", "BOTH")).lower()
            if p.get("hedged") and p.get("side") in ("long", "short"):
                ps = str(p["side"])
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
        if self.spot and order.reduce_only and order.side is Side.SELL and inst is not None:
            capped = await self._cap_to_holding(order, inst)
            if isinstance(capped, OrderState):
                return capped
            order = capped
        return await om.submit(order)

    async def _cap_to_holding(self, order: Order, inst: Instrument) -> Order | OrderState:
        """A reduce-only spot sell sells at most the free base balance, rounded down to the
        lot (as a reduce-only perp order is cut to the position by the exchange). The spot
        legs hold less than they bought when the commission was taken in the base asset
        (Bybit, OKX, Binance without BNB: a buy of q leaves q × (1 − fee rate)), so a close
        of the bought quantity would be refused for want of balance. Nothing held: REJECTED,
        nothing sent. Idempotent: an order this process already sent is left as it is, and
        before a cut the venue is asked for the client id (an earlier process may have sent
        it) — its state is returned when it exists."""
        assert self.orders is not None
        if self.orders.order(order.client_order_id) is not None:
            return order
        b = await self._rest(lambda: self.ex.fetch_balance(), f"{self.venue_id} balance")
        free = _dec((b.get("free") or {}).get(inst.base))
        lot = _dec(inst.lot_size)
        held = (free / lot).to_integral_value(rounding=ROUND_DOWN) * lot
        qty = _dec(order.qty_base)
        if held >= qty:
            return order
        # sent by an earlier process (its sale is why less is held)? then that is the order
        existing = await self.query(order.client_order_id, order.symbol)
        if existing is not None:
            return existing
        if held <= 0:
            return OrderState(
                order.client_order_id,
                order.symbol,
                order.side,
                OrderStatus.REJECTED,
                qty,
                Decimal(0),
                reason=f"reduce-only spot sell: no {inst.base} held",
                ts_ns=self.clock_ns(),
            )
        log.info(
            "%s %s: reduce-only sell of %s cut to the %s %s held",
            self.venue_id,
            order.client_order_id,
            qty,
            held,
            inst.base,
        )
        return dataclasses.replace(order, qty_base=float(held))

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
        """Funding booked since ``since_ns`` (oldest first; + received); none on spot.

        Binance: ``fetch_funding_history`` (income ``FUNDING_FEE``). Bybit: the transaction
        log's ``SETTLEMENT`` rows (``GET /v5/account/transaction-log``; ``funding`` > 0 is
        received, per its doc — ccxt's ``fetch_funding_history`` reads the execution list's
        ``execFee``, a fee), in 7-day windows (the endpoint's limit) up to now, each paged by
        cursor. OKX: ``fetch_funding_history`` (bills, type 8; ``balChg`` > 0 received) with
        ``begin`` = since (ccxt filters ``since`` only on the page it got), paged back by
        ``after`` = the oldest bill id."""
        assert self._om() and self.symbols is not None
        if self.spot:
            return []
        since_ms = since_ns // 1_000_000
        if self.venue_id == "bybit":
            return await self._bybit_funding(since_ms)
        if self.venue_id == "okx":
            rows = await self._okx_funding_rows(since_ms)
        else:
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

    async def _okx_funding_rows(self, since_ms: int, page: int = 100) -> list[Mapping[str, Any]]:
        rows: list[Mapping[str, Any]] = []
        after: str | None = None
        while True:
            params: dict[str, Any] = {"begin": since_ms}
            if after is not None:
                params["after"] = after
            got = await self._rest(
                lambda params=params: self.ex.fetch_funding_history(None, since_ms, page, params),
                "okx funding",
            )
            rows += got
            ids = [int((r.get("info") or {}).get("billId") or 0) for r in got]
            if len(got) < page or not ids:
                return rows
            after = str(min(ids))

    async def _bybit_funding(self, since_ms: int) -> list[FundingPayment]:
        assert self.symbols is not None
        week_ms = 7 * 86_400_000
        now_ms = self.clock_ns() // 1_000_000
        out = []
        start = max(since_ms, now_ms - BYBIT_HISTORY_MS)
        while start <= now_ms:
            end = min(start + week_ms, now_ms)
            cursor = ""
            while True:
                req: dict[str, Any] = {
                    "accountType": "UNIFIED",
                    "category": "linear",
                    "type": "SETTLEMENT",
                    "startTime": start,
                    "endTime": end,
                    "limit": 50,
                }
                if cursor:
                    req["cursor"] = cursor
                res = await self._rest(
                    lambda req=req: self.ex.privateGetV5AccountTransactionLog(req),
                    "bybit transaction log",
                )
                result = (res or {}).get("result") or {}
                for r in result.get("list") or []:
                    uni = self._linear_unified(str(r.get("symbol")))
                    ts = int(r.get("transactionTime") or 0)
                    if uni not in self.symbols.to_engine or ts < since_ms:
                        continue
                    rate = r.get("feeRate")
                    out.append(
                        FundingPayment(
                            self.symbols.engine(uni),
                            ts * 1_000_000,
                            _dec(r.get("funding")),
                            float(rate) if rate not in (None, "") else None,
                        )
                    )
                cursor = str(result.get("nextPageCursor") or "")
                if not cursor:
                    break
            start = end + 1
        return sorted(out, key=lambda f: (f.ts_ns, f.symbol))

    def _linear_unified(self, market_id: str) -> str | None:
        """The unified symbol of the linear perp with exchange id ``market_id`` (Bybit's
        ``BTCUSDT`` is also its spot market's id)."""
        for m in (self.ex.markets_by_id or {}).get(market_id) or []:
            if m.get("swap") and m.get("linear"):
                return str(m["symbol"])
        return None

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
        cid = self._trade_client_id(t) or self.orders.client_id_of(oid) or f"#{oid}"
        fee = t.get("fee") or {}
        cur = fee.get("currency")
        fee_usd = _dec(fee.get("cost"))
        if self.venue_id == "okx" and "fillFee" in info:
            # ccxt.pro's OKX own trade (``orders`` channel) passes ``fillFee`` through with
            # OKX's sign (negative = charged); its REST trades are negated to a cost
            fee_usd = -_dec(info.get("fillFee") or "0")
        fee_base = Decimal(0)
        if fee_usd != 0 and cur not in USD_ASSETS:
            base = (self.ex.markets.get(t["symbol"]) or {}).get("base")
            if not self.spot or cur != base:
                raise VenueError(f"{self.venue_id} trade {t.get('id')}: fee in {cur}, not USD")
            fee_base = fee_usd  # taken out of the base asset received: the holding is net
            fee_usd = fee_usd * _dec(t.get("price"))  # base-asset commission at the fill price
        # Binance positionSide (REST) / ps (stream), OKX posSide (net = one-way)
        ps = str(info.get("positionSide") or info.get("ps") or info.get("posSide") or "BOTH")
        ps = ps.lower()
        return VenueExecution(
            client_order_id=str(cid),
            symbol=self.symbols.engine(t["symbol"]),
            side=Side.BUY if t.get("side") == "buy" else Side.SELL,
            trade_id=str(t.get("id")),
            qty_base=_dec(t.get("amount")) * self._contract_size(t.get("symbol")),
            price=_dec(t.get("price")),
            fee_usd=fee_usd,
            liquidity=Liquidity.MAKER if t.get("takerOrMaker") == "maker" else Liquidity.TAKER,
            ts_ns=int(t.get("timestamp") or 0) * 1_000_000,
            venue_order_id=oid,
            position_side=PositionSide(ps) if ps in ("long", "short") else PositionSide.BOTH,
            fee_qty_base=fee_base,
        )

    def _trade_client_id(self, t: Mapping[str, Any]) -> str:
        """Our client id of an own trade when the venue names it (Binance websocket ``c``,
        Bybit ``orderLinkId``, OKX ``clOrdId``; decoded: :func:`engine_client_id`), else ""."""
        info = t.get("info") if isinstance(t.get("info"), Mapping) else {}
        vcid = t.get("clientOrderId") or info.get("c") or info.get("orderLinkId")
        vcid = vcid or info.get("clOrdId")
        return engine_client_id(self.venue_id, str(vcid)) if vcid else ""

    def _contract_size(self, unified: Any) -> Decimal:
        """Base units per order unit (ccxt's ``contractSize``; OKX swaps: ``ctVal``)."""
        cs = (self.ex.markets.get(unified) or {}).get("contractSize") if unified else None
        return _dec(cs) if cs else Decimal(1)

    def _own_leg(self, t: Mapping[str, Any]) -> bool:
        """True when an own trade belongs to this venue's markets. One unified account
        (Bybit, OKX) streams the executions of both legs to both clients: Bybit's
        ``execution`` topic every category, and ccxt.pro parses a ``linear`` execution of
        ``BTCUSDT`` as the spot ``BTC/USDT`` on a client that loaded only spot markets, so
        the row's own ``instType`` (OKX) / ``category`` (Bybit) decides, then the symbol."""
        assert self.symbols is not None
        info = t.get("info") if isinstance(t.get("info"), Mapping) else {}
        kind = str(info.get("instType") or info.get("category") or "").lower()  # OKX first:
        # its order rows carry a ``category`` too ("normal")
        if kind and (kind == "spot") != self.spot:
            return False
        return t.get("symbol") in self.symbols.to_engine

    def _watch_my_trades(self) -> Any:
        """``watch_my_trades`` of this venue's instruments: OKX's ``orders`` channel takes an
        ``instType`` (ccxt.pro's default ANY would push the other leg's orders, and ccxt.pro
        raises ``BadSymbol`` inside its handler for a market this client did not load)."""
        if self.venue_id == "okx":
            return self.ex.watch_my_trades(
                None, None, None, {"type": "SPOT" if self.spot else "SWAP"}
            )
        return self.ex.watch_my_trades()

    def _book(self, trades: Sequence[Mapping[str, Any]]) -> list[Fill]:
        out = []
        assert self.orders is not None
        for t in trades:
            if not self._own_leg(t):
                continue  # the other leg's trade on a shared (unified) account's stream
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
            if self.venue_id in NEWEST_FIRST_TRADE_LISTS:
                out += self._book(await self._own_trades(uni, since))
                continue
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
        (Binance's trade lists carry only the order id): one ``fetch_order`` per order.
        Bybit and OKX trade rows carry the client id (``orderLinkId`` / ``clOrdId``) when the
        order had one, so nothing is fetched there (an order without one stays ``#<id>``)."""
        om = self._om()
        if self.venue_id in NEWEST_FIRST_TRADE_LISTS:
            return
        for r in rows:
            oid = str(r.get("order") or "")
            if not oid or self._trade_client_id(r) or om.client_id_of(oid):
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
            if self.venue_id in NEWEST_FIRST_TRADE_LISTS:
                rows = await self._own_trades(uni, since_ns // 1_000_000)
                await self._resolve_client_ids(rows, uni)
                out += [e for e in map(self._execution, rows) if e.ts_ns >= since_ns]
                continue
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

    async def _own_trades(self, uni: str, since_ms: int) -> list[Mapping[str, Any]]:
        """Every own trade of ``uni`` from ``since_ms`` to now on a venue whose trade list
        answers newest first (ccxt trade structures, deduplicated by id).

        Bybit ``GET /v5/execution/list`` (``category`` linear, or spot on a spot venue;
        ``execType=Trade``): at most 7 days a request, so 7-day windows up to now, each paged
        by ``cursor`` (100 rows a page). OKX ``GET /api/v5/trade/fills-history``
        (``instType`` SWAP, or SPOT): ``begin`` = since, paged back by ``after`` = the oldest
        ``billId`` (100 rows a page)."""
        market = self.ex.markets[uni]
        raw: list[Mapping[str, Any]] = []
        where = f"{self.venue_id} my trades"
        if self.venue_id == "bybit":
            week_ms = 7 * 86_400_000
            now_ms = self.clock_ns() // 1_000_000
            start = max(since_ms, now_ms - BYBIT_HISTORY_MS)
            while start <= now_ms:
                end = min(start + week_ms, now_ms)
                cursor = ""
                while True:
                    req: dict[str, Any] = {
                        "category": "spot" if self.spot else "linear",
                        "symbol": market["id"],
                        "execType": "Trade",
                        "startTime": start,
                        "endTime": end,
                        "limit": 100,
                    }
                    if cursor:
                        req["cursor"] = cursor
                    res = await self._rest(
                        lambda req=req: self.ex.privateGetV5ExecutionList(req), where
                    )
                    result = (res or {}).get("result") or {}
                    raw += result.get("list") or []
                    cursor = str(result.get("nextPageCursor") or "")
                    if not cursor:
                        break
                start = end + 1
        else:
            after: str | None = None
            while True:
                q: dict[str, Any] = {
                    "instType": "SPOT" if self.spot else "SWAP",
                    "instId": market["id"],
                    "begin": since_ms,
                    "limit": 100,
                }
                if after is not None:
                    q["after"] = after
                res = await self._rest(lambda q=q: self.ex.privateGetTradeFillsHistory(q), where)
                data = (res or {}).get("data") or []
                raw += data
                bills = [int(r.get("billId") or 0) for r in data]
                if len(data) < 100 or not bills:
                    break
                after = str(min(bills))
        trades = self.ex.parse_trades(raw, market)
        uniq = {str(t.get("id")): t for t in trades}
        return sorted(uniq.values(), key=lambda t: (int(t.get("timestamp") or 0), str(t["id"])))

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
        self._require("fills")
        degraded, clean = False, 0
        last_poll = 0.0
        loop = asyncio.get_running_loop()
        task: asyncio.Task[Any] | None = None
        try:
            while True:
                if task is None:
                    task = asyncio.ensure_future(self._watch_my_trades())
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
    def _stream_calls(self, stream: str) -> tuple[str, ...]:
        """The ccxt.pro calls behind ``stream`` on this venue (:data:`STREAM_WATCH`, or
        :data:`VENUE_STREAM_WATCH` where the venue needs other ones)."""
        return VENUE_STREAM_WATCH.get((self.venue_id, stream), (STREAM_WATCH[stream],))

    def has_stream(self, stream: str) -> bool:
        """Whether ccxt.pro has every watch call behind the stream ``stream`` (a method of
        this class: ``trades``, ``book_tops``, ``mark_prices``, ``liquidations``, ``fills``;
        see :data:`STREAM_WATCH` and :data:`VENUE_STREAM_WATCH`) for this venue. Bybit's
        marks come from ``watch_tickers``, OKX's from ``watch_mark_prices`` +
        ``watch_funding_rates``; Bybit (ccxt.pro 4.5) has no
        ``watch_liquidations_for_symbols``."""
        return all(
            bool(self.ex.has.get(re.sub(r"_(\w)", lambda m: m.group(1).upper(), method)))
            for method in self._stream_calls(stream)
        )

    def _require(self, stream: str) -> None:
        """Raise a one-line :class:`VenueError` naming the venue and the ccxt.pro method when
        it lacks the one behind ``stream`` (``has[...]`` false or absent: the base class would
        raise ``NotSupported`` on every call, which a reconnect loop would retry for ever)."""
        if not self.has_stream(stream):
            raise VenueError(
                f"{self.venue_id}: ccxt.pro {ccxt.__version__} has no"
                f" {' + '.join(self._stream_calls(stream))} for this venue"
            )

    async def _watch(self, call: Callable[[], Any], what: str) -> AsyncIterator[Any]:
        """Repeat a ccxt.pro watch call forever, reconnecting with backoff on errors (a
        ``NotSupported`` is raised as a :class:`VenueError`: retrying cannot help)."""
        k = 0
        while True:
            try:
                res = await call()
                k = 0
            except ccxt.NotSupported as exc:
                raise VenueError(f"{self.venue_id} {what} stream: {_one_line(str(exc))}") from None
            except ccxt.BaseError as exc:
                self.stream_errors += 1
                log.warning("%s %s stream: %s", self.venue_id, what, _one_line(str(exc)))
                await self.sleep(min(30.0, self.reconnect_delay_s * 2**k))
                k += 1
                continue
            yield res

    def _base_qty(self, unified: Any, qty: Any) -> float:
        """A streamed size in base units: × ``contractSize`` (OKX swaps trade and quote in
        contracts of ``ctVal``; 1 elsewhere); NaN when the venue sent none."""
        if qty is None or qty == "":
            return float("nan")
        return float(_dec(qty) * self._contract_size(unified))

    async def trades(self, symbols: Sequence[str]) -> AsyncIterator[Trade]:
        """Public trades (``watch_trades_for_symbols``); ``buyer_is_maker`` = taker sold;
        sizes in base units (OKX swaps: contracts × ``ctVal``)."""
        self._om()
        self._require("trades")
        assert self.symbols is not None
        uni = [self.symbols.unified(s) for s in symbols]
        async for batch in self._watch(lambda: self.ex.watch_trades_for_symbols(uni), "trades"):
            for t in batch:
                yield Trade(
                    self.venue_id,
                    self.symbols.engine(t["symbol"]),
                    int(t["timestamp"]) * 1_000_000,
                    float(t["price"]),
                    self._base_qty(t["symbol"], t["amount"]),
                    t.get("side") == "sell",
                )

    async def book_tops(self, symbols: Sequence[str]) -> AsyncIterator[BookTop]:
        """Best bid/ask (``watch_bids_asks``: Bybit ``orderbook.1.<symbol>``, OKX
        ``bbo-tbt``, Binance ``bookTicker``); sizes in base units (OKX swaps: contracts ×
        ``ctVal``)."""
        self._om()
        self._require("book_tops")
        assert self.symbols is not None
        uni = [self.symbols.unified(s) for s in symbols]
        async for tickers in self._watch(lambda: self.ex.watch_bids_asks(uni), "book"):
            for u, t in tickers.items():
                yield BookTop(
                    self.venue_id,
                    self.symbols.engine(u),
                    int(t.get("timestamp") or 0) * 1_000_000,
                    float(t["bid"]),
                    self._base_qty(u, t.get("bidVolume")),
                    float(t["ask"]),
                    self._base_qty(u, t.get("askVolume")),
                )

    async def mark_prices(self, symbols: Sequence[str]) -> AsyncIterator[MarkPrice]:
        """Mark and index price with the predicted funding rate of the next settlement and
        its time, per venue:

        - Binance: ``watch_mark_prices`` (``markPrice`` stream: ``p``, ``i``, and the rate
          ``r`` for the settlement at ``T``, read from ``info``);
        - Bybit: ``watch_tickers`` (linear ``tickers.<symbol>``: ``markPrice``, ``indexPrice``,
          ``fundingRate`` — the rate of the settlement at ``nextFundingTime``). Bybit sends a
          snapshot, then deltas with only the fields that changed: the last value of each
          field is kept per symbol (:meth:`_bybit_marks`);
        - OKX: ``watch_mark_prices`` (``mark-price``: ``markPx``) and ``watch_funding_rates``
          (``funding-rate``: ``fundingRate``, the rate settled at ``fundingTime``), joined
          per symbol (:meth:`_okx_marks`); OKX's mark channel has no index: ``index_price``
          is NaN.

        A rate or time not yet seen is NaN / 0 (the paper venue then settles nothing);
        ``ts_ns`` is the exchange's stamp of the newest message behind the event."""
        self._om()
        self._require("mark_prices")
        assert self.symbols is not None
        uni = [self.symbols.unified(s) for s in symbols]
        if self.venue_id == "bybit":
            async for mp in self._bybit_marks(uni):
                yield mp
            return
        if self.venue_id == "okx":
            async for mp in self._okx_marks(uni):
                yield mp
            return
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

    async def _bybit_marks(self, uni: Sequence[str]) -> AsyncIterator[MarkPrice]:
        """Bybit linear ``tickers.<symbol>`` as marks. Each message's ``info`` is merged into
        the last full values of its symbol (a delta carries only the fields that changed; a
        snapshot replaces them), so a delta with a new mark keeps the last funding rate and
        time. No event before a mark price is known."""
        assert self.symbols is not None
        wanted = set(uni)
        last: dict[str, dict[str, Any]] = {}
        async for tickers in self._watch(lambda: self.ex.watch_tickers(list(uni)), "mark"):
            for u, t in tickers.items():
                if u not in wanted:
                    continue
                info = {k: v for k, v in (t.get("info") or {}).items() if v not in (None, "")}
                state = last.setdefault(u, {})
                state.update(info)
                ts_ms = int(t.get("timestamp") or 0)
                state["_ts"] = max(int(state.get("_ts", 0)), ts_ms)
                if "markPrice" not in state:
                    continue
                yield MarkPrice(
                    self.venue_id,
                    self.symbols.engine(u),
                    int(state["_ts"]) * 1_000_000,
                    float(state["markPrice"]),
                    float(state.get("indexPrice", "nan")),
                    float(state.get("fundingRate", "nan")),
                    int(state.get("nextFundingTime", 0)) * 1_000_000,
                )

    async def _okx_marks(self, uni: Sequence[str]) -> AsyncIterator[MarkPrice]:
        """OKX ``mark-price`` and ``funding-rate`` joined per symbol: an event on every
        message once the symbol's mark is known, with the last funding rate and its
        ``fundingTime`` (NaN / 0 until the first ``funding-rate`` message)."""
        from perpdesk.execution.paper import merge_streams

        assert self.symbols is not None

        async def tagged(kind: str, call: Callable[[], Any]) -> AsyncIterator[Any]:
            async for x in self._watch(call, kind):
                yield kind, x

        wanted = set(uni)
        marks: dict[str, tuple[float, int]] = {}  # unified → (mark, ts ms)
        rates: dict[str, tuple[float, int, int]] = {}  # unified → (rate, fundingTime, ts ms)
        async for kind, got in merge_streams(
            tagged("mark", lambda: self.ex.watch_mark_prices(list(uni))),
            tagged("funding", lambda: self.ex.watch_funding_rates(list(uni))),
        ):
            for u, t in got.items():
                if u not in wanted:
                    continue
                info = t.get("info") or {}
                if kind == "mark":
                    px = info.get("markPx") or t.get("markPrice") or t.get("last")
                    if px in (None, ""):
                        continue
                    marks[u] = (float(px), int(info.get("ts") or t.get("timestamp") or 0))
                else:
                    rate = info.get("fundingRate")
                    when = info.get("fundingTime")
                    if rate in (None, "") or when in (None, ""):
                        continue
                    rates[u] = (float(rate), int(when), int(info.get("ts") or 0))
                if u not in marks:
                    continue
                mark, mark_ts = marks[u]
                rate_, when_, rate_ts = rates.get(u, (float("nan"), 0, 0))
                yield MarkPrice(
                    self.venue_id,
                    self.symbols.engine(u),
                    max(mark_ts, rate_ts) * 1_000_000,
                    mark,
                    float("nan"),
                    rate_,
                    when_ * 1_000_000,
                )

    async def liquidations(self, symbols: Sequence[str]) -> AsyncIterator[Liquidation]:
        """Public liquidations (``watch_liquidations_for_symbols``)."""
        self._om()
        self._require("liquidations")
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
    the same exchange (Binance spot + USD-M; Bybit and OKX: two clients of one unified
    account): symbols ending in ``.SPOT`` go to ``spot``, every other one to ``perp``. Its
    ``venue_id`` is the perp venue's (fills of both legs are booked under it; the symbols
    keep them apart). On Binance the balances of the spot account are keyed
    ``<asset>.SPOT`` (the two accounts are separate wallets); on Bybit and OKX (both venues
    have one id: one unified account) the perp venue's balances are the account's, every
    coin once. Positions and own executions are the union of both; funding, marks and
    liquidations come from the perp venue."""

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

    @property
    def shared_account(self) -> bool:
        """True when both legs trade from one account (Bybit and OKX unified accounts: the
        spot venue is a second client of the same exchange id)."""
        return self.spot.venue_id == self.perp.venue_id

    async def balances(self) -> Mapping[str, Balance]:
        """Perp wallet by asset, spot wallet by ``<asset>.SPOT`` (one unified account: its
        balances by asset, once)."""
        out = dict(await self.perp.balances())
        if self.shared_account:
            return out
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


SPOT_EXCHANGE = {"binanceusdm": "binance", "bybit": "bybit", "okx": "okx"}
"""Perp exchange id → the ccxt id of the same exchange's spot account (the carry's spot leg):
Binance's spot account is another ccxt class; Bybit and OKX trade spot from the unified
account of the same key, through a second client of the same id restricted to the spot
markets (:func:`make_exchange` with ``spot=True``)."""


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
    :class:`SpotPerpVenue`, keys from the environment / ``.env`` (one key trades both:
    Binance spot + USD-M, Bybit's and OKX's unified account), both connected. ``spot_api_url`` defaults to ``api_url``; ``kwargs`` go to both
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
