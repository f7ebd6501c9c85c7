"""A loopback fake of Binance's USDⓈ-M futures API (REST + websockets), for offline tests of
ccxt clients.

A real HTTP server (``aiohttp.web``) runs on 127.0.0.1 at a free port in a background
thread with its own event loop (so websocket routes can be added later on the same app).
It serves:

- recorded Binance responses (``exchange-responses/binance-nautilus/http_responses/``:
  ``exchangeInfo``, ``premiumIndex``, ``ticker/24hr``, ``openInterest`` …) as they are;
- paginated history held in memory, with Binance's documented parameter semantics:

  - ``/fapi/v1/fundingRate`` (limit default 100, max 1000): ``fundingTime`` in
    [startTime, endTime], oldest first from startTime; endTime alone → the last ``limit``
    up to it;
  - ``/fapi/v1/klines`` (default 500, max 1500): open time in [startTime, endTime], the
    same anchoring; bars opening after ``now_ms`` do not exist, the open one is served;
  - ``/futures/data/openInterestHist`` (default 30, max 500): only the last 30 days
    (a startTime older than ``now - 30 d`` → ``400 -1130``); end-anchored: the newest
    ``limit`` rows of the window.

  Unknown symbols get Binance's ``400 {"code": -1121, "msg": "Invalid symbol."}``.
  A ``limit`` above the maximum is clamped to it.

Private (signed) endpoints, as ccxt 4.5.90's ``binanceusdm`` calls them: ``POST/GET/DELETE
/fapi/v1/order``, ``/fapi/v1/openOrders``, ``/fapi/v1/userTrades``, ``/fapi/v{2,3}/positionRisk``,
``/fapi/v{2,3}/balance``, ``/fapi/v{2,3}/account`` (ccxt's ``fetch_balance``), ``/fapi/v1/income``,
``/fapi/v1/leverage``, ``/fapi/v1/positionSide/dual``, ``/fapi/v1/listenKey`` (API key only) and
``/fapi/v1/leverageBracket`` / ``/fapi/v1/fundingInfo``. Every signed request is checked
like Binance does: ``X-MBX-APIKEY``, the HMAC-SHA256 ``signature`` (-1022) and
``timestamp + recvWindow`` against the wall clock (-1021: a request held in the network
too long is refused, never executed). Response shapes start from the recorded
``http_futures_account_*`` files.

A small matching engine backs them: :meth:`set_book` sets the best bid/ask; a market order or
a crossing limit takes the top (a crossing limit up to the top's size, the rest rests; IOC
and market remainders expire; ``partial_next[symbol] = qty`` caps the next immediate fill);
:meth:`trade` prints a public trade that fills resting limits at/through its price in time
priority; fills move the position (average entry), the wallet (realised PnL − fee; maker
0.02 %, taker 0.05 %) and ``userTrades``; :meth:`settle_funding` books ``FUNDING_FEE`` income.
Business refusals answer as Binance: -2019 margin, -4116 duplicate client id, -5022 post-only
would take, -2013/-2011 unknown order.

Websockets on the same port (ccxt.pro's ``/public/ws``, ``/market/ws``, ``/private/ws``):
market connections answer ``SUBSCRIBE`` and get ``trade``, ``bookTicker``,
``markPriceUpdate`` and ``forceOrder`` frames for their streams (:meth:`publish`); the
user-data connection (``?listenKey=``) gets ``ORDER_TRADE_UPDATE`` messages in the recorded
layout (``ws_messages/ws_futures_order_update_*``) for every NEW/TRADE/CANCELED/EXPIRED.
User-stream faults: :meth:`drop_user_streams` (TCP cut, optionally refusing reconnects with
503), ``user_ws_duplicate`` (every message twice), :meth:`hold_user_messages` (the next n sent
newest first); on REST, ``trade_lists_dup_reversed`` answers own-trade lists with every row
twice, newest first.

Faults are queued per route (optionally per method) and consumed one per request, first in
first out (:meth:`FakeBinanceUSDM.inject`): a 429 or 418 with ``Retry-After``, a 5xx, a delay
longer than the client's timeout (before the request is handled), a lost response (handled at
once, answered late), a truncated JSON body, or any Binance error code. Every request is
logged (:attr:`FakeBinanceUSDM.requests`) with its method, path, parameters and the fault
served.

**Binance spot** on the same server (ccxt ``binance`` with ``fetchMarkets`` = spot only):
public ``/api/v3/ping``, ``time``, ``exchangeInfo`` (the recorded spot file), ``ticker/price``,
``ticker/bookTicker`` and ``ticker/24hr`` (from the spot book); signed ``POST/GET/DELETE
/api/v3/order``, ``/api/v3/openOrders``, ``/api/v3/myTrades``, ``/api/v3/account``. Spot orders
go through the same matching code as the futures ones (:meth:`_match_new`,
:meth:`_match_resting`) against the spot book (:meth:`set_book` / :meth:`trade` with
``spot=True``) and move the spot balances (``spot_balances``: asset → free units; the locked
part is the remainder of open orders, computed). Spot answers as Binance does: a client id
may be reused once the earlier order is closed (only open ids are duplicates: ``-2010
Duplicate order sent.``), ``-2010 Account has insufficient balance for requested action.``,
a cancel answers with a new ``clientOrderId`` and the original in ``origClientOrderId``,
``myTrades`` rows carry no client id. Spot commission (0.1 %, rounded to 8 places) is
charged by default in the quote asset (USDT) — a simplification; with
``spot_fee_asset="base"`` (constructor argument or attribute) it is charged as Binance does
for an account that does not pay fees in BNB: in the asset received — a buy's in the base
asset (buying 0.075 BTC credits 0.074925 BTC, ``commissionAsset`` BTC), a sell's in the quote
asset. Spot websockets: market streams on ``/stream-spot/ws`` (ccxt.pro's
``urls['api']['ws']['spot']``, :meth:`publish` with ``spot=True``); the user-data stream on
the websocket API ``/spot/ws-api/v3`` (``userDataStream.subscribe.signature``, signed like
REST), ``executionReport`` events in the recorded layout
(``ws_messages/ws_spot_execution_report_trade``).

**USD-M conditional (algo) orders**: ccxt 4.5.90 sends a ``STOP_MARKET`` (any order with
``triggerPrice``/``stopPrice``) to ``POST /fapi/v1/algoOrder`` with ``algoType=CONDITIONAL``,
``clientAlgoId`` and ``triggerPrice``; ``GET``/``DELETE /fapi/v1/algoOrder`` (by
``clientAlgoId`` or ``algoId``) and ``GET /fapi/v1/openAlgoOrders`` are served too. A public
trade at or through the trigger price (:meth:`trade`) triggers it: ``algoStatus`` becomes
``TRIGGERED`` with ``actualOrderId`` of a MARKET order (client id = the algo's client id)
that fills against the book.

``now_ms`` is the server's clock (Binance's "now" for the OI lookback and for the klines
still open); tests pin it so the served data does not depend on the wall clock.

Usage::

    with FakeBinanceUSDM(now_ms=...) as fake:
        fake.set_funding("BTCUSDT", ts_ms, rates)
        ex = ccxt.binanceusdm(...)
        point_ccxt_at(ex, fake.url)
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import numpy as np
from aiohttp import web

from tests.realdata import SHARED_DATA, shared_file

RESPONSES_REL = "exchange-responses/binance-nautilus/http_responses"
RESPONSES_DIR = SHARED_DATA / RESPONSES_REL
WS_REL = "exchange-responses/binance-nautilus/ws_messages"

MS_PER_MIN = 60_000
DAY_MS = 86_400_000
OI_LOOKBACK_MS = 30 * DAY_MS

_PERIODS = ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d")
INTERVAL_MS = {
    p: int(p[:-1]) * {"m": MS_PER_MIN, "h": 60 * MS_PER_MIN, "d": DAY_MS}[p[-1]] for p in _PERIODS
}
"""Binance kline / OI period names → length in ms (``1w``/``1M`` are not served)."""

INVALID_SYMBOL = {"code": -1121, "msg": "Invalid symbol."}


def recorded(name: str) -> Any:
    """A recorded Binance response (``http_futures_market_<name>.json``), parsed."""
    return json.loads(shared_file(f"{RESPONSES_REL}/http_futures_market_{name}.json").read_text())


def recorded_spot(name: str) -> Any:
    """A recorded Binance spot response (``http_spot_<name>.json``), parsed."""
    return json.loads(shared_file(f"{RESPONSES_REL}/http_spot_{name}.json").read_text())


@dataclass(frozen=True)
class Fault:
    """One injected failure. Build with the class methods."""

    kind: str  # "status", "delay", "lost_response", "truncated"
    status: int = 200
    body: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    delay_s: float = 0.0

    @classmethod
    def rate_limited(cls, retry_after_s: int) -> Fault:
        """HTTP 429 with ``Retry-After`` (Binance: request weight exceeded)."""
        body = json.dumps({"code": -1003, "msg": "Too many requests; current limit exceeded."})
        return cls("status", 429, body, (("Retry-After", str(retry_after_s)),))

    @classmethod
    def banned(cls, retry_after_s: int) -> Fault:
        """HTTP 418 with ``Retry-After`` (Binance: IP auto-banned after ignoring 429s)."""
        body = json.dumps({"code": -1003, "msg": "Way too many requests; IP banned."})
        return cls("status", 418, body, (("Retry-After", str(retry_after_s)),))

    @classmethod
    def server_error(cls, status: int = 503) -> Fault:
        """A 5xx with an HTML-ish body, as a load balancer sends."""
        return cls("status", status, f"<html><body>{status} Service Unavailable</body></html>")

    @classmethod
    def delay(cls, seconds: float) -> Fault:
        """Answer normally but only after ``seconds`` (longer than the client timeout)."""
        return cls("delay", delay_s=seconds)

    @classmethod
    def lost_response(cls, seconds: float) -> Fault:
        """Execute the request at once, then hold the answer ``seconds`` (longer than the
        client timeout): the order exists although the client saw a timeout."""
        return cls("lost_response", delay_s=seconds)

    @classmethod
    def truncated(cls) -> Fault:
        """The right answer with its JSON body cut in half (status 200, valid HTTP)."""
        return cls("truncated")

    @classmethod
    def binance_error(cls, status: int, code: int, msg: str) -> Fault:
        """A Binance error payload ``{"code": code, "msg": msg}`` with ``status``."""
        return cls("status", status, json.dumps({"code": code, "msg": msg}))


@dataclass
class LoggedRequest:
    """One request the server received: path, query and the fault it was served (or None)."""

    method: str
    path: str
    query: dict[str, str]
    fault: str | None = None

    def int_param(self, name: str) -> int | None:
        v = self.query.get(name)
        return None if v is None else int(v)


Handler = Callable[[dict[str, str]], tuple[int, Any]]
"""A route: query → (HTTP status, JSON-able payload)."""


@dataclass
class _Series:
    ts_ms: np.ndarray
    rows: list[Any] = field(default_factory=list)


def _window(
    ts_ms: np.ndarray,
    query: dict[str, str],
    default_limit: int,
    max_limit: int,
    *,
    end_anchored: bool = False,
    now_ms: int | None = None,
) -> slice:
    """Rows of ``ts_ms`` (sorted) selected by Binance's startTime/endTime/limit."""
    limit = min(int(query.get("limit", default_limit)), max_limit)
    start = int(query["startTime"]) if "startTime" in query else None
    end = int(query["endTime"]) if "endTime" in query else None
    if end is None and now_ms is not None:
        end = now_ms
    lo = 0 if start is None else int(np.searchsorted(ts_ms, start, "left"))
    hi = ts_ms.size if end is None else int(np.searchsorted(ts_ms, end, "right"))
    if hi <= lo:
        return slice(0, 0)
    if start is not None and not end_anchored:
        return slice(lo, min(hi, lo + limit))
    return slice(max(lo, hi - limit), hi)


class FakeBinanceUSDM:
    """The fake server. ``start()``/``stop()`` or use it as a context manager."""

    def __init__(
        self,
        now_ms: int,
        *,
        exchange_info: dict | None = None,
        api_key: str = "fake-api-key",
        api_secret: str = "fake-api-secret",
        wallet_usdt: str = "10000",
        spot_fee_asset: str = "quote",
    ) -> None:
        if spot_fee_asset not in ("quote", "base"):
            raise ValueError(f"spot_fee_asset {spot_fee_asset!r}: quote or base")
        self.spot_fee_asset = spot_fee_asset
        self.now_ms = now_ms
        self.exchange_info = (
            exchange_info if exchange_info is not None else recorded("exchange_info")
        )
        self.requests: list[LoggedRequest] = []
        self._faults: dict[str, deque[Fault]] = {}
        self._lock = threading.Lock()
        self._funding: dict[str, _Series] = {}
        self._klines: dict[tuple[str, str], _Series] = {}
        self._oi: dict[tuple[str, str], _Series] = {}
        self.spot_exchange_info = recorded_spot("market_exchange_info")
        self.routes: dict[str, Handler] = {
            "/api/v3/ping": lambda q: (200, {}),
            "/api/v3/time": lambda q: (200, {"serverTime": self.now_ms}),
            "/api/v3/exchangeInfo": lambda q: (200, self.spot_exchange_info),
            "/api/v3/ticker/price": self._spot_ticker("price"),
            "/api/v3/ticker/bookTicker": self._spot_ticker("book"),
            "/api/v3/ticker/24hr": self._spot_ticker("24hr"),
            "/fapi/v1/ping": lambda q: (200, {}),
            "/fapi/v1/time": lambda q: (200, {"serverTime": self.now_ms}),
            "/fapi/v1/exchangeInfo": lambda q: (200, self.exchange_info),
            "/fapi/v1/fundingRate": self._funding_rate,
            "/fapi/v1/klines": self._klines_route,
            "/futures/data/openInterestHist": self._open_interest_hist,
            "/fapi/v1/premiumIndex": self._per_symbol(recorded("premium_index")),
            "/fapi/v1/ticker/24hr": self._per_symbol(recorded("ticker_24hr")),
            "/fapi/v1/openInterest": self._per_symbol(recorded("open_interest")),
        }
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        self._init_private(api_key, api_secret, wallet_usdt)

    # -- lifecycle --------------------------------------------------------------------
    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` (the server must be started)."""
        if self.port is None:
            raise RuntimeError("fake exchange not started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        """``ws://127.0.0.1:<port>/ws`` — ccxt.pro's ``urls['api']['ws']['linear']``; it
        derives ``/public/ws``, ``/market/ws`` and ``/private/ws?listenKey=`` from it."""
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self) -> FakeBinanceUSDM:
        """Bind a free port on 127.0.0.1 and serve in a background thread."""
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake exchange did not start")
        return self

    def _run(self, ready: threading.Event) -> None:
        assert self._loop is not None
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(
            app, handle_signals=False, shutdown_timeout=0.2, access_log=None
        )
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = self._runner.addresses[0][1]
        ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        pending = asyncio.all_tasks(self._loop)  # handlers still sleeping in a delay fault
        for task in pending:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self._loop.close()

    def stop(self) -> None:
        """Stop serving and join the thread (idempotent)."""
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop = self._thread = None

    def __enter__(self) -> FakeBinanceUSDM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- configuration ----------------------------------------------------------------
    def inject(self, path: str, *faults: Fault, method: str | None = None) -> None:
        """Queue ``faults`` on ``path`` (only on requests with ``method`` when given, e.g.
        ``POST`` of ``/fapi/v1/order``): the next requests to it get them, in order."""
        key = path if method is None else f"{method} {path}"
        with self._lock:
            self._faults.setdefault(key, deque()).extend(faults)

    def add_route(self, path: str, handler: Handler) -> None:
        """Serve ``path`` with ``handler`` (replaces an existing route)."""
        self.routes[path] = handler

    def set_json(self, path: str, payload: Any) -> None:
        """Serve a fixed JSON payload on ``path``."""
        self.routes[path] = lambda q: (200, payload)

    def requests_to(self, path: str) -> list[LoggedRequest]:
        """Logged requests to ``path``, in arrival order."""
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def set_funding(
        self,
        symbol: str,
        funding_time_ms: Sequence[int],
        rates: Sequence[str],
        mark_prices: Sequence[str] | None = None,
    ) -> None:
        """Funding history of ``symbol`` (times ms ascending, rates as Binance strings)."""
        rows = []
        for i, (t, r) in enumerate(zip(funding_time_ms, rates, strict=True)):
            rec: dict[str, Any] = {"symbol": symbol, "fundingTime": int(t), "fundingRate": r}
            if mark_prices is not None:
                rec["markPrice"] = mark_prices[i]
            rows.append(rec)
        self._funding[symbol] = _Series(np.asarray(funding_time_ms, dtype=np.int64), rows)

    def set_klines(self, symbol: str, interval: str, rows: Sequence[Sequence[Any]]) -> None:
        """Klines of ``symbol`` at ``interval``: rows in Binance's 12-field layout."""
        self._klines[(symbol, interval)] = _Series(
            np.array([int(r[0]) for r in rows], dtype=np.int64), [list(r) for r in rows]
        )

    def set_open_interest(
        self,
        symbol: str,
        period: str,
        ts_ms: Sequence[int],
        oi_base: Sequence[str],
        oi_usd: Sequence[str],
    ) -> None:
        """Open-interest statistics of ``symbol`` at ``period`` (Binance string numbers)."""
        rows = [
            {
                "symbol": symbol,
                "sumOpenInterest": b,
                "sumOpenInterestValue": u,
                "timestamp": str(int(t)),  # Binance sends this one as a string
            }
            for t, b, u in zip(ts_ms, oi_base, oi_usd, strict=True)
        ]
        self._oi[(symbol, period)] = _Series(np.asarray(ts_ms, dtype=np.int64), rows)

    # -- routes -----------------------------------------------------------------------
    def _symbols(self) -> set[str]:
        return {s["symbol"] for s in self.exchange_info.get("symbols", [])}

    def _per_symbol(self, record: dict) -> Handler:
        """A recorded single-symbol response: ``?symbol=X`` → it relabelled for X; no
        symbol → a list with one copy per listed perpetual (as Binance lists all)."""

        def handler(q: dict[str, str]) -> tuple[int, Any]:
            sym = q.get("symbol")
            if sym is None:
                perps = [
                    s["symbol"]
                    for s in self.exchange_info.get("symbols", [])
                    if s.get("contractType") == "PERPETUAL"
                ]
                return 200, [{**record, "symbol": s} for s in perps]
            if sym not in self._symbols():
                return 400, INVALID_SYMBOL
            return 200, {**record, "symbol": sym}

        return handler

    def _funding_rate(self, q: dict[str, str]) -> tuple[int, Any]:
        sym = q.get("symbol")
        if sym is not None and sym not in self._symbols():
            return 400, INVALID_SYMBOL
        series = self._funding.get(sym or "")
        if series is None:
            return 200, []
        return 200, series.rows[_window(series.ts_ms, q, 100, 1000)]

    def _klines_route(self, q: dict[str, str]) -> tuple[int, Any]:
        sym, interval = q.get("symbol"), q.get("interval")
        if sym not in self._symbols():
            return 400, INVALID_SYMBOL
        if interval not in INTERVAL_MS:
            return 400, {"code": -1120, "msg": "Invalid interval."}
        series = self._klines.get((sym, interval))
        if series is None:
            return 200, []
        # bars that have not opened yet do not exist; the open one is served as it stands
        visible = int(np.searchsorted(series.ts_ms, self.now_ms, "right"))
        ts = series.ts_ms[:visible]
        return 200, series.rows[:visible][_window(ts, q, 500, 1500)]

    def _open_interest_hist(self, q: dict[str, str]) -> tuple[int, Any]:
        sym, period = q.get("symbol"), q.get("period")
        if sym not in self._symbols():
            return 400, INVALID_SYMBOL
        if period not in INTERVAL_MS or INTERVAL_MS[period] < 5 * MS_PER_MIN:
            return 400, {"code": -1130, "msg": "Data sent for parameter 'period' is not valid."}
        if "startTime" in q and int(q["startTime"]) < self.now_ms - OI_LOOKBACK_MS:
            return 400, {"code": -1130, "msg": "Data sent for parameter 'startTime' is not valid."}
        series = self._oi.get((sym, period))
        if series is None:
            return 200, []
        visible = int(np.searchsorted(series.ts_ms, self.now_ms, "right"))
        ts = series.ts_ms[:visible]
        window = _window(ts, q, 30, 500, end_anchored=True, now_ms=self.now_ms)
        return 200, series.rows[:visible][window]

    # -- private API: signed endpoints and a small matching engine ----------------------
    def _init_private(self, api_key: str, api_secret: str, wallet_usdt: str) -> None:
        self.api_key = api_key
        self.api_secret = api_secret
        self.wallet_usdt = Decimal(wallet_usdt)
        self.leverage: dict[str, int] = {}
        self.dual_side = False
        self.maker_rate = Decimal("0.0002")
        self.taker_rate = Decimal("0.0005")
        self.books: dict[str, dict[str, Decimal]] = {}
        self.orders: dict[int, dict[str, Any]] = {}
        self.user_trades: list[dict[str, Any]] = []
        self.income: list[dict[str, Any]] = []
        self.positions: dict[str, list[Decimal]] = {}  # symbol -> [qty signed, entry price]
        self.funding_info: list[dict[str, Any]] = []
        self.partial_next: dict[str, Decimal] = {}
        self.listen_keys: set[str] = set()
        self._ids = itertools.count(8_000_000_001)
        self._trade_ids = itertools.count(500_000_001)
        self._order_tpl = recorded_account("orders")[0]
        self._position_tpl = recorded_account("positions_one_way")[0]
        self._otu_tpl = recorded_ws("ws_futures_order_update_trade_reduce_only_qty")["data"]
        # websocket state (server loop only)
        self._market_conns: list[_WsConn] = []
        self._user_conns: list[_WsConn] = []
        self._send_lock: asyncio.Lock | None = None
        self.user_ws_refused = False
        self.user_ws_duplicate = False
        self._held: list[tuple[list[_WsConn], str]] | None = None
        self._hold_n = 0
        self.user_ws_connections = 0
        self.user_messages_sent: list[dict[str, Any]] = []
        self.private_routes: dict[tuple[str, str], Callable[[dict[str, str]], tuple[int, Any]]] = {
            ("POST", "/fapi/v1/order"): self._new_order,
            ("GET", "/fapi/v1/order"): self._get_order,
            ("DELETE", "/fapi/v1/order"): self._cancel_order,
            ("GET", "/fapi/v1/openOrders"): self._open_orders,
            ("GET", "/fapi/v1/userTrades"): self._user_trades,
            ("GET", "/fapi/v2/positionRisk"): self._position_risk,
            ("GET", "/fapi/v3/positionRisk"): self._position_risk,
            ("GET", "/fapi/v2/balance"): self._balance,
            ("GET", "/fapi/v3/balance"): self._balance,
            ("GET", "/fapi/v2/account"): self._account,
            ("GET", "/fapi/v3/account"): self._account,
            ("GET", "/fapi/v1/income"): self._income,
            ("POST", "/fapi/v1/leverage"): self._set_leverage,
            ("GET", "/fapi/v1/positionSide/dual"): lambda q: (
                200,
                {**recorded_account("position_side_dual"), "dualSidePosition": self.dual_side},
            ),
            ("POST", "/fapi/v1/positionSide/dual"): self._set_dual,
            ("POST", "/fapi/v1/listenKey"): self._new_listen_key,
            ("PUT", "/fapi/v1/listenKey"): lambda q: (200, {}),
            ("DELETE", "/fapi/v1/listenKey"): lambda q: (200, {}),
        }
        self.private_routes.update(
            {
                ("POST", "/fapi/v1/algoOrder"): self._new_algo_order,
                ("GET", "/fapi/v1/algoOrder"): self._get_algo_order,
                ("DELETE", "/fapi/v1/algoOrder"): self._cancel_algo_order,
                ("GET", "/fapi/v1/openAlgoOrders"): self._open_algo_orders,
                ("POST", "/api/v3/order"): self._spot_new_order,
                ("GET", "/api/v3/order"): self._spot_get_order,
                ("DELETE", "/api/v3/order"): self._spot_cancel_order,
                ("GET", "/api/v3/openOrders"): self._spot_open_orders,
                ("GET", "/api/v3/myTrades"): self._spot_my_trades,
                ("GET", "/api/v3/account"): self._spot_account,
                ("GET", "/sapi/v1/account/apiRestrictions"): lambda q: (
                    200,
                    dict(self.api_restrictions),
                ),
            }
        )
        # GET /sapi/v1/account/apiRestrictions: the fields of Binance's documented answer
        # (https://developers.binance.com/docs/wallet/account/api-key-permission); a trading
        # key bound to an IP, without withdrawals, until a test changes it
        self.api_restrictions: dict[str, Any] = {
            "ipRestrict": True,
            "createTime": 1698645219000,
            "enableInternalTransfer": False,
            "enableFutures": True,
            "enablePortfolioMarginTrading": False,
            "enableVanillaOptions": False,
            "permitsUniversalTransfer": False,
            "enableReading": True,
            "enableSpotAndMarginTrading": True,
            "enableWithdrawals": False,
            "enableMargin": False,
        }
        self.algo_orders: dict[int, dict[str, Any]] = {}
        self.trade_lists_dup_reversed = False
        # spot account: asset -> free units (locked = remainders of open orders, computed)
        self.spot_balances: dict[str, Decimal] = {"USDT": Decimal(wallet_usdt)}
        self.spot_books: dict[str, dict[str, Decimal]] = {}
        self.spot_orders: dict[int, dict[str, Any]] = {}
        self.spot_trades: list[dict[str, Any]] = []
        self.spot_partial_next: dict[str, Decimal] = {}
        self.spot_fee_rate = Decimal("0.001")
        self._spot_account_tpl = recorded_spot("wallet_account")
        self._spot_er_tpl = recorded_ws("ws_spot_execution_report_trade")["data"]
        self._spot_market_conns: list[_WsConn] = []
        self._spot_user_conns: list[_WsConn] = []
        self.spot_user_messages_sent: list[dict[str, Any]] = []
        self.routes["/fapi/v1/fundingInfo"] = lambda q: (200, self.funding_info)
        # signed on Binance; served unchecked so tests may replace it with set_json
        self.routes["/fapi/v1/leverageBracket"] = self._leverage_bracket

    def _check_auth(self, request: web.Request, signed: str) -> tuple[int, Any] | None:
        """Binance HMAC-SHA256 signing: ``signature`` = hex HMAC of the query/body before it,
        ``X-MBX-APIKEY`` header; ``timestamp + recvWindow`` must not be in the past (-1021)."""
        if request.headers.get("X-MBX-APIKEY") != self.api_key:
            return 401, {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."}
        if request.path.endswith("/listenKey"):  # USER_STREAM security: API key only
            return None
        payload, sep, sig = signed.rpartition("&signature=")
        want = hmac.new(self.api_secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if not sep or not hmac.compare_digest(sig, want):
            return 400, {"code": -1022, "msg": "Signature for this request is not valid."}
        params = dict(parse_qsl(payload))
        ts = int(params.get("timestamp", "0"))
        window = int(params.get("recvWindow", "5000"))
        if ts + window < int(time.time() * 1000):
            return 400, {
                "code": -1021,
                "msg": "Timestamp for this request is outside of the recvWindow.",
            }
        return None

    # market state (test thread) ---------------------------------------------------------
    def set_book(
        self,
        symbol: str,
        bid: str,
        bid_qty: str,
        ask: str,
        ask_qty: str,
        *,
        publish: bool = True,
        spot: bool = False,
    ) -> None:
        """Best bid/ask of ``symbol`` (Binance string numbers) on the futures book, or on the
        spot book with ``spot``; publishes a bookTicker on that market's streams."""
        with self._lock:
            (self.spot_books if spot else self.books)[symbol] = {
                "bid": Decimal(bid),
                "bid_qty": Decimal(bid_qty),
                "ask": Decimal(ask),
                "ask_qty": Decimal(ask_qty),
            }
        if publish:
            now = int(time.time() * 1000)
            self.publish(
                f"{symbol.lower()}@bookTicker",
                {
                    "e": "bookTicker",
                    "u": next(self._trade_ids),
                    "E": now,
                    "T": now,
                    "s": symbol,
                    "b": bid,
                    "B": bid_qty,
                    "a": ask,
                    "A": ask_qty,
                },
                spot=spot,
            )

    def set_mark(self, symbol: str, mark: str, index: str, rate: str, next_funding_ms: int) -> None:
        """Publish a ``markPriceUpdate`` of ``symbol``."""
        now = int(time.time() * 1000)
        self.publish(
            f"{symbol.lower()}@markPrice",
            {
                "e": "markPriceUpdate",
                "E": now,
                "s": symbol,
                "p": mark,
                "P": mark,
                "i": index,
                "r": rate,
                "T": next_funding_ms,
            },
        )

    def liquidation(self, symbol: str, side: str, price: str, qty: str) -> None:
        """Publish a ``forceOrder`` (a public liquidation order) of ``symbol``."""
        now = int(time.time() * 1000)
        self.publish(
            f"{symbol.lower()}@forceOrder",
            {
                "e": "forceOrder",
                "E": now,
                "o": {
                    "s": symbol,
                    "S": side,
                    "o": "LIMIT",
                    "f": "IOC",
                    "q": qty,
                    "p": price,
                    "ap": price,
                    "X": "FILLED",
                    "l": qty,
                    "z": qty,
                    "T": now,
                },
            },
        )

    def trade(
        self, symbol: str, price: str, qty: str, buyer_is_maker: bool, *, spot: bool = False
    ) -> None:
        """A public trade prints (on the spot market with ``spot``): resting limit orders
        at/through ``price`` fill (time priority, the trade's size shared), futures
        conditional orders whose trigger it reaches fire, then the trade is published."""
        px, avail = Decimal(price), Decimal(qty)
        with self._lock:
            orders = self.spot_orders if spot else self.orders
            execute = self._spot_execute if spot else self._execute
            for o, q, limit in self._match_resting(orders, symbol, px, avail, buyer_is_maker):
                execute(o, q, limit, maker=True)
            if not spot:
                self._trigger_algo(symbol, px)
        now = int(time.time() * 1000)
        self.publish(
            f"{symbol.lower()}@trade",
            {
                "e": "trade",
                "E": now,
                "T": now,
                "s": symbol,
                "t": next(self._trade_ids),
                "p": price,
                "q": qty,
                "X": "MARKET",
                "m": buyer_is_maker,
            },
            spot=spot,
        )

    # the matching engine shared by futures and spot (caller holds self._lock) -------------
    @staticmethod
    def _match_resting(
        orders: dict[int, dict[str, Any]],
        symbol: str,
        px: Decimal,
        qty: Decimal,
        buyer_is_maker: bool,
    ) -> list[tuple[dict[str, Any], Decimal, Decimal]]:
        """``(order, qty, limit price)`` fills of the resting limits of ``symbol`` that a
        public trade of ``qty`` at ``px`` reaches, in time priority: a bid at/above a trade
        at its price only when the taker sold (``buyer_is_maker``), strictly through it
        otherwise (and mirrored for asks)."""
        out = []
        avail = qty
        for o in sorted(orders.values(), key=lambda o: o["orderId"]):
            if o["symbol"] != symbol or o["status"] not in ("NEW", "PARTIALLY_FILLED"):
                continue
            if avail <= 0:
                break
            limit = Decimal(o["price"])
            if limit <= 0:  # a market order never rests
                continue
            if o["side"] == "BUY":
                hit = px < limit or (px == limit and buyer_is_maker)
            else:
                hit = px > limit or (px == limit and not buyer_is_maker)
            if hit:
                q = min(avail, Decimal(o["origQty"]) - Decimal(o["executedQty"]))
                avail -= q
                out.append((o, q, limit))
        return out

    @staticmethod
    def _match_new(
        book: dict[str, Decimal],
        side: str,
        otype: str,
        qty: Decimal,
        price: Decimal,
        cap: Decimal | None,
    ) -> tuple[bool, Decimal, Decimal]:
        """A new order against the top of ``book``: ``(crosses, qty taken, top price)``. A
        market order takes ``qty`` at the top; a crossing limit takes up to the top's size;
        ``cap`` (the ``partial_next`` fault) caps the immediate fill."""
        top_px, top_qty = (
            (book["ask"], book["ask_qty"]) if side == "BUY" else (book["bid"], book["bid_qty"])
        )
        crosses = otype == "MARKET" or (top_px <= price if side == "BUY" else top_px >= price)
        if not crosses:
            return False, Decimal(0), top_px
        take = qty if otype == "MARKET" else min(qty, top_qty)
        if cap is not None:
            take = min(take, cap)
        return True, take, top_px

    def settle_funding(self, symbol: str, rate: str, mark: str, ts_ms: int) -> Decimal:
        """Book funding on the position of ``symbol``: ``−qty × mark × rate`` rounded
        half-even to 1e-8 USDT (Binance USD-M), as a ``FUNDING_FEE`` income row."""
        with self._lock:
            qty = self.positions.get(symbol, [Decimal(0), Decimal(0)])[0]
            pay = (-qty * Decimal(mark) * Decimal(rate)).quantize(
                Decimal("1e-8"), rounding=ROUND_HALF_EVEN
            )
            self.wallet_usdt += pay
            self.income.append(
                {
                    "symbol": symbol,
                    "incomeType": "FUNDING_FEE",
                    "income": f"{pay:f}",
                    "asset": "USDT",
                    "info": "FUNDING_FEE",
                    "time": ts_ms,
                    "tranId": next(self._ids),
                    "tradeId": "",
                }
            )
            return pay

    def orders_with_client_id(self, client_order_id: str) -> list[dict[str, Any]]:
        """Every order the fake holds (any status, futures and spot) with
        ``client_order_id``."""
        with self._lock:
            return [
                dict(o)
                for o in [*self.orders.values(), *self.spot_orders.values()]
                if o["clientOrderId"] == client_order_id
            ]

    def all_orders(self) -> list[dict[str, Any]]:
        """Every futures and spot order the fake holds (copies), oldest first."""
        with self._lock:
            rows = [*self.orders.values(), *self.spot_orders.values()]
            return [dict(o) for o in sorted(rows, key=lambda o: o["orderId"])]

    # matching (caller holds self._lock) ----------------------------------------------------
    def _execute(self, o: dict[str, Any], qty: Decimal, price: Decimal, *, maker: bool) -> None:
        sym, side = o["symbol"], o["side"]
        sign = 1 if side == "BUY" else -1
        notional = qty * price
        fee = (notional * (self.maker_rate if maker else self.taker_rate)).quantize(
            Decimal("1e-8"), rounding=ROUND_HALF_EVEN
        )
        pos = self.positions.setdefault(sym, [Decimal(0), Decimal(0)])
        cur, entry = pos
        realised = Decimal(0)
        d = sign * qty
        if cur == 0 or (cur > 0) == (d > 0):
            pos[1] = (abs(cur) * entry + qty * price) / (abs(cur) + qty)
            pos[0] = cur + d
        else:
            closed = min(abs(cur), qty)
            realised = closed * (price - entry) * (1 if cur > 0 else -1)
            pos[0] = cur + d
            if pos[0] == 0:
                pos[1] = Decimal(0)
            elif (pos[0] > 0) != (cur > 0):
                pos[1] = price
        self.wallet_usdt += realised - fee
        done = Decimal(o["executedQty"]) + qty
        cum_quote = Decimal(o["cumQuote"]) + notional
        o["executedQty"] = f"{done:f}"
        o["cumQuote"] = f"{cum_quote:f}"
        o["avgPrice"] = f"{cum_quote / done:f}"
        o["status"] = "FILLED" if done >= Decimal(o["origQty"]) else "PARTIALLY_FILLED"
        now = int(time.time() * 1000)
        o["updateTime"] = now
        tid = next(self._trade_ids)
        self.user_trades.append(
            {
                "symbol": sym,
                "id": tid,
                "orderId": o["orderId"],
                "side": side,
                "price": f"{price:f}",
                "qty": f"{qty:f}",
                "realizedPnl": f"{realised:f}",
                "marginAsset": "USDT",
                "quoteQty": f"{notional:f}",
                "commission": f"{fee:f}",
                "commissionAsset": "USDT",
                "time": now,
                "positionSide": o["positionSide"],
                "buyer": side == "BUY",
                "maker": maker,
            }
        )
        self._user_update(
            o, "TRADE", last_qty=qty, last_px=price, fee=fee, trade_id=tid, maker=maker
        )

    def _user_update(
        self,
        o: dict[str, Any],
        exec_type: str,
        *,
        last_qty: Decimal = Decimal(0),
        last_px: Decimal = Decimal(0),
        fee: Decimal | None = None,
        trade_id: int = 0,
        maker: bool = False,
    ) -> None:
        """An ``ORDER_TRADE_UPDATE`` for ``o`` on the user-data stream (recorded layout)."""
        now = int(time.time() * 1000)
        body = {
            **self._otu_tpl["o"],
            "s": o["symbol"],
            "c": o["clientOrderId"],
            "S": o["side"],
            "o": o["type"],
            "f": o["timeInForce"],
            "q": o["origQty"],
            "p": o["price"],
            "ap": o["avgPrice"],
            "x": exec_type,
            "X": o["status"],
            "i": o["orderId"],
            "l": f"{last_qty:f}",
            "z": o["executedQty"],
            "L": f"{last_px:f}",
            "N": None if fee is None else "USDT",
            "n": None if fee is None else f"{fee:f}",
            "T": now,
            "t": trade_id,
            "m": maker,
            "R": o["reduceOnly"],
            "ot": o["origType"],
            "ps": o["positionSide"],
            "rp": "0",
        }
        self.push_user({**self._otu_tpl, "E": now, "T": now, "o": body})

    def _order_out(self, o: dict[str, Any]) -> dict[str, Any]:
        return {**o, "cumQty": o["executedQty"]}

    def _new_order(self, q: dict[str, str]) -> tuple[int, Any]:
        sym = q.get("symbol", "")
        if sym not in self._symbols():
            return 400, INVALID_SYMBOL
        cid = q.get("newClientOrderId") or f"fake-{next(self._ids)}"
        if any(o["clientOrderId"] == cid for o in self.orders.values()):
            return 400, {"code": -4116, "msg": "ClientOrderId is duplicated."}
        otype, side = q.get("type", ""), q.get("side", "")
        if otype not in ("LIMIT", "MARKET") or side not in ("BUY", "SELL"):
            return 400, {"code": -1116, "msg": "Invalid orderType."}
        qty = Decimal(q.get("quantity", "0"))
        if qty <= 0:
            return 400, {"code": -4003, "msg": "Quantity less than or equal to zero."}
        book = self.books.get(sym)
        if book is None:
            return 400, {"code": -4131, "msg": "The counterparty's best price does not meet."}
        tif = q.get("timeInForce", "GTC") if otype == "LIMIT" else "GTC"
        price = Decimal(q.get("price", "0")) if otype == "LIMIT" else Decimal(0)
        ref_px = price if otype == "LIMIT" else (book["ask"] if side == "BUY" else book["bid"])
        lev = Decimal(self.leverage.get(sym, 20))
        if q.get("reduceOnly", "false") != "true" and qty * ref_px / lev > self.wallet_usdt:
            return 400, {"code": -2019, "msg": "Margin is insufficient."}
        now = int(time.time() * 1000)
        o = {
            **self._order_tpl,
            "avgPrice": "0",
            "clientOrderId": cid,
            "cumQuote": "0",
            "executedQty": "0",
            "orderId": next(self._ids),
            "origQty": f"{qty:f}",
            "origType": otype,
            "price": f"{price:f}",
            "reduceOnly": q.get("reduceOnly", "false") == "true",
            "side": side,
            "positionSide": q.get("positionSide", "BOTH"),
            "status": "NEW",
            "stopPrice": "0",
            "symbol": sym,
            "time": now,
            "timeInForce": tif,
            "type": otype,
            "updateTime": now,
        }
        for k in ("activatePrice", "priceRate"):
            o.pop(k, None)
        crosses, _, _ = self._match_new(book, side, otype, qty, price, None)
        if crosses and tif == "GTX":
            return 400, {
                "code": -5022,
                "msg": "Due to the order could not be executed as maker, the Post Only order "
                "will be rejected.",
            }
        self.orders[o["orderId"]] = o
        self._user_update(o, "NEW")
        if crosses:
            cap = self.partial_next.pop(sym, None)
            _, take, top_px = self._match_new(book, side, otype, qty, price, cap)
            self._execute(o, take, top_px, maker=False)
            if o["status"] != "FILLED" and (otype == "MARKET" or tif == "IOC"):
                o["status"] = "EXPIRED"
                self._user_update(o, "EXPIRED")
        elif tif == "IOC":
            o["status"] = "EXPIRED"
            self._user_update(o, "EXPIRED")
        return 200, self._order_out(o)

    def _find(self, q: dict[str, str]) -> dict[str, Any] | None:
        sym = q.get("symbol")
        for o in self.orders.values():
            if o["symbol"] != sym:
                continue
            if "orderId" in q and str(o["orderId"]) == q["orderId"]:
                return o
            if "origClientOrderId" in q and o["clientOrderId"] == q["origClientOrderId"]:
                return o
        return None

    def _get_order(self, q: dict[str, str]) -> tuple[int, Any]:
        o = self._find(q)
        if o is None:
            return 400, {"code": -2013, "msg": "Order does not exist."}
        return 200, self._order_out(o)

    def _cancel_order(self, q: dict[str, str]) -> tuple[int, Any]:
        o = self._find(q)
        if o is None or o["status"] not in ("NEW", "PARTIALLY_FILLED"):
            return 400, {"code": -2011, "msg": "Unknown order sent."}
        o["status"] = "CANCELED"
        o["updateTime"] = int(time.time() * 1000)
        self._user_update(o, "CANCELED")
        return 200, self._order_out(o)

    def _open_orders(self, q: dict[str, str]) -> tuple[int, Any]:
        sym = q.get("symbol")
        return 200, [
            self._order_out(o)
            for o in self.orders.values()
            if o["status"] in ("NEW", "PARTIALLY_FILLED") and (sym is None or o["symbol"] == sym)
        ]

    def _user_trades(self, q: dict[str, str]) -> tuple[int, Any]:
        sym = q.get("symbol")
        if sym is None:
            return 400, {"code": -1102, "msg": "Mandatory parameter 'symbol' was not sent."}
        rows = [t for t in self.user_trades if t["symbol"] == sym]
        if "startTime" in q:
            rows = [t for t in rows if t["time"] >= int(q["startTime"])]
        if "fromId" in q:
            rows = [t for t in rows if t["id"] >= int(q["fromId"])]
        return 200, self._trade_list_fault(rows[: min(int(q.get("limit", 500)), 1000)])

    def _trade_list_fault(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``trade_lists_dup_reversed``: every row of a ``userTrades``/``myTrades`` answer
        twice, newest first (duplicate and out-of-order rows on the REST path)."""
        if not self.trade_lists_dup_reversed:
            return rows
        return [r for r in reversed(rows) for _ in range(2)]

    def _mark_of(self, sym: str) -> Decimal:
        b = self.books.get(sym)
        return (b["bid"] + b["ask"]) / 2 if b else Decimal(0)

    def _position_risk(self, q: dict[str, str]) -> tuple[int, Any]:
        out = []
        for sym, (qty, entry) in self.positions.items():
            if q.get("symbol") not in (None, sym):
                continue
            mark = self._mark_of(sym)
            out.append(
                {
                    **self._position_tpl,
                    "symbol": sym,
                    "positionSide": "BOTH",
                    "positionAmt": f"{qty:f}",
                    "entryPrice": f"{entry:f}",
                    "breakEvenPrice": f"{entry:f}",
                    "markPrice": f"{mark:f}",
                    "unRealizedProfit": f"{qty * (mark - entry):f}",
                    "notional": f"{qty * mark:f}",
                    "marginType": "cross",
                    "isolatedMargin": "0",
                    "leverage": str(self.leverage.get(sym, 20)),
                    "marginAsset": "USDT",
                    "updateTime": int(time.time() * 1000),
                }
            )
        return 200, out

    def _upnl(self) -> Decimal:
        return sum(
            (qty * (self._mark_of(s) - e) for s, (qty, e) in self.positions.items()), Decimal(0)
        )

    def _balance(self, q: dict[str, str]) -> tuple[int, Any]:
        w = self.wallet_usdt
        return 200, [
            {
                "accountAlias": "fake",
                "asset": "USDT",
                "balance": f"{w:f}",
                "crossWalletBalance": f"{w:f}",
                "crossUnPnl": f"{self._upnl():f}",
                "availableBalance": f"{w:f}",
                "maxWithdrawAmount": f"{w:f}",
                "marginAvailable": True,
                "updateTime": int(time.time() * 1000),
            }
        ]

    def _account(self, q: dict[str, str]) -> tuple[int, Any]:
        w, u = self.wallet_usdt, self._upnl()
        asset = {
            "asset": "USDT",
            "walletBalance": f"{w:f}",
            "unrealizedProfit": f"{u:f}",
            "marginBalance": f"{w + u:f}",
            "maintMargin": "0",
            "initialMargin": "0",
            "positionInitialMargin": "0",
            "openOrderInitialMargin": "0",
            "crossWalletBalance": f"{w:f}",
            "crossUnPnl": f"{u:f}",
            "availableBalance": f"{w:f}",
            "maxWithdrawAmount": f"{w:f}",
            "updateTime": int(time.time() * 1000),
        }
        return 200, {
            "totalInitialMargin": "0",
            "totalMaintMargin": "0",
            "totalWalletBalance": f"{w:f}",
            "totalUnrealizedProfit": f"{u:f}",
            "totalMarginBalance": f"{w + u:f}",
            "totalPositionInitialMargin": "0",
            "totalOpenOrderInitialMargin": "0",
            "totalCrossWalletBalance": f"{w:f}",
            "totalCrossUnPnl": f"{u:f}",
            "availableBalance": f"{w:f}",
            "maxWithdrawAmount": f"{w:f}",
            "assets": [asset],
            "positions": [],
        }

    def _income(self, q: dict[str, str]) -> tuple[int, Any]:
        rows = [r for r in self.income if q.get("symbol") in (None, r["symbol"])]
        if "incomeType" in q:
            rows = [r for r in rows if r["incomeType"] == q["incomeType"]]
        if "startTime" in q:
            rows = [r for r in rows if r["time"] >= int(q["startTime"])]
        return 200, rows[: min(int(q.get("limit", 100)), 1000)]

    def _leverage_bracket(self, q: dict[str, str]) -> tuple[int, Any]:
        bracket = {
            "bracket": 1,
            "initialLeverage": 125,
            "notionalCap": 50000,
            "notionalFloor": 0,
            "maintMarginRatio": 0.004,
            "cum": 0.0,
        }
        return 200, [{"symbol": s, "brackets": [bracket]} for s in sorted(self._symbols())]

    def _set_leverage(self, q: dict[str, str]) -> tuple[int, Any]:
        sym, lev = q.get("symbol", ""), int(q.get("leverage", "0"))
        if sym not in self._symbols():
            return 400, INVALID_SYMBOL
        if not 1 <= lev <= 125:
            return 400, {"code": -4028, "msg": f"Leverage {lev} is not valid"}
        self.leverage[sym] = lev
        return 200, {"leverage": lev, "maxNotionalValue": "50000", "symbol": sym}

    def _set_dual(self, q: dict[str, str]) -> tuple[int, Any]:
        self.dual_side = q.get("dualSidePosition") == "true"
        return 200, {"code": 200, "msg": "success"}

    def _new_listen_key(self, q: dict[str, str]) -> tuple[int, Any]:
        key = f"fakeListenKey{next(self._ids)}"
        self.listen_keys.add(key)
        return 200, {"listenKey": key}

    # -- USD-M conditional (algo) orders --------------------------------------------------
    def _algo_out(self, a: dict[str, Any]) -> dict[str, Any]:
        return dict(a)

    def _new_algo_order(self, q: dict[str, str]) -> tuple[int, Any]:
        sym = q.get("symbol", "")
        if sym not in self._symbols():
            return 400, INVALID_SYMBOL
        if q.get("algoType") != "CONDITIONAL":
            return 400, {"code": -1102, "msg": "Mandatory parameter 'algoType' was not sent."}
        otype, side = q.get("type", ""), q.get("side", "")
        if otype not in ("STOP_MARKET", "TAKE_PROFIT_MARKET") or side not in ("BUY", "SELL"):
            return 400, {"code": -1116, "msg": "Invalid orderType."}
        if "triggerPrice" not in q:
            return 400, {"code": -1102, "msg": "Mandatory parameter 'triggerPrice' was not sent."}
        cid = q.get("clientAlgoId") or f"fakealgo-{next(self._ids)}"
        if any(a["clientAlgoId"] == cid for a in self.algo_orders.values()):
            return 400, {"code": -4116, "msg": "ClientOrderId is duplicated."}
        qty = Decimal(q.get("quantity", "0"))
        if qty <= 0:
            return 400, {"code": -4003, "msg": "Quantity less than or equal to zero."}
        now = int(time.time() * 1000)
        a = {
            "algoId": next(self._ids),
            "clientAlgoId": cid,
            "algoType": "CONDITIONAL",
            "orderType": otype,
            "symbol": sym,
            "side": side,
            "positionSide": q.get("positionSide", "BOTH"),
            "timeInForce": "GTC",
            "quantity": f"{qty:f}",
            "algoStatus": "NEW",
            "triggerPrice": q["triggerPrice"],
            "price": "0",
            "icebergQuantity": None,
            "selfTradePreventionMode": "EXPIRE_MAKER",
            "workingType": q.get("workingType", "CONTRACT_PRICE"),
            "priceMatch": "NONE",
            "closePosition": False,
            "priceProtect": False,
            "reduceOnly": q.get("reduceOnly", "false") == "true",
            "createTime": now,
            "updateTime": now,
            "triggerTime": 0,
            "goodTillDate": 0,
        }
        self.algo_orders[a["algoId"]] = a
        return 200, self._algo_out(a)

    def _find_algo(self, q: dict[str, str]) -> dict[str, Any] | None:
        for a in self.algo_orders.values():
            if "algoId" in q and str(a["algoId"]) == q["algoId"]:
                return a
            if "clientAlgoId" in q and a["clientAlgoId"] == q["clientAlgoId"]:
                return a
        return None

    def _get_algo_order(self, q: dict[str, str]) -> tuple[int, Any]:
        a = self._find_algo(q)
        if a is None:
            return 400, {"code": -2013, "msg": "Order does not exist."}
        return 200, self._algo_out(a)

    def _cancel_algo_order(self, q: dict[str, str]) -> tuple[int, Any]:
        a = self._find_algo(q)
        if a is None or a["algoStatus"] != "NEW":
            return 400, {"code": -2011, "msg": "Unknown order sent."}
        a["algoStatus"] = "CANCELED"
        a["updateTime"] = int(time.time() * 1000)
        return 200, {
            "algoId": a["algoId"],
            "clientAlgoId": a["clientAlgoId"],
            "code": "200",
            "msg": "success",
        }

    def _open_algo_orders(self, q: dict[str, str]) -> tuple[int, Any]:
        sym = q.get("symbol")
        return 200, [
            self._algo_out(a)
            for a in self.algo_orders.values()
            if a["algoStatus"] == "NEW" and sym in (None, a["symbol"])
        ]

    def _trigger_algo(self, symbol: str, px: Decimal) -> None:
        """Fire the conditional orders of ``symbol`` a trade at ``px`` reaches: a STOP_MARKET
        buy at px ≥ trigger, sell at px ≤ trigger (TAKE_PROFIT_MARKET the reverse); the
        triggered MARKET order carries the algo's client id (caller holds the lock)."""
        for a in sorted(self.algo_orders.values(), key=lambda a: a["algoId"]):
            if a["symbol"] != symbol or a["algoStatus"] != "NEW":
                continue
            trig = Decimal(a["triggerPrice"])
            up = a["side"] == "BUY" if a["orderType"] == "STOP_MARKET" else a["side"] == "SELL"
            if not (px >= trig if up else px <= trig):
                continue
            params = {
                "symbol": symbol,
                "side": a["side"],
                "type": "MARKET",
                "quantity": a["quantity"],
                "newClientOrderId": a["clientAlgoId"],
                "reduceOnly": "true" if a["reduceOnly"] else "false",
                "positionSide": a["positionSide"],
            }
            status, body = self._new_order(params)
            now = int(time.time() * 1000)
            a["triggerTime"] = a["updateTime"] = now
            if status == 200:
                a["algoStatus"] = "FINISHED"
                a["actualOrderId"] = str(body["orderId"])
                a["actualPrice"] = body["avgPrice"]
            else:
                a["algoStatus"] = "REJECTED"

    # -- spot --------------------------------------------------------------------------
    def _spot_symbols(self) -> dict[str, dict[str, Any]]:
        return {s["symbol"]: s for s in self.spot_exchange_info.get("symbols", [])}

    def _spot_ticker(self, kind: str) -> Handler:
        """``ticker/price`` / ``ticker/bookTicker`` / ``ticker/24hr`` from the spot book."""

        def one(sym: str) -> dict[str, Any]:
            b = self.spot_books.get(sym)
            bid, ask = (b["bid"], b["ask"]) if b else (Decimal(0), Decimal(0))
            mid = (bid + ask) / 2
            if kind == "price":
                return {"symbol": sym, "price": f"{mid:.8f}"}
            book = {
                "symbol": sym,
                "bidPrice": f"{bid:.8f}",
                "bidQty": f"{b['bid_qty'] if b else 0:.8f}",
                "askPrice": f"{ask:.8f}",
                "askQty": f"{b['ask_qty'] if b else 0:.8f}",
            }
            if kind == "book":
                return book
            now = int(time.time() * 1000)
            return {
                **book,
                "priceChange": "0.00000000",
                "priceChangePercent": "0.000",
                "weightedAvgPrice": f"{mid:.8f}",
                "lastPrice": f"{mid:.8f}",
                "openPrice": f"{mid:.8f}",
                "highPrice": f"{mid:.8f}",
                "lowPrice": f"{mid:.8f}",
                "volume": "0.00000000",
                "quoteVolume": "0.00000000",
                "openTime": now - DAY_MS,
                "closeTime": now,
                "count": 0,
            }

        def handler(q: dict[str, str]) -> tuple[int, Any]:
            sym = q.get("symbol")
            if sym is None:
                return 200, [one(s) for s in sorted(self._spot_symbols())]
            if sym not in self._spot_symbols():
                return 400, INVALID_SYMBOL
            return 200, one(sym)

        return handler

    def _spot_locked(self, asset: str) -> Decimal:
        """Units of ``asset`` held by open spot orders (a buy locks its quote at its limit
        price, a sell its base)."""
        out = Decimal(0)
        info = self._spot_symbols()
        for o in self.spot_orders.values():
            if o["status"] not in ("NEW", "PARTIALLY_FILLED"):
                continue
            s = info[o["symbol"]]
            rem = Decimal(o["origQty"]) - Decimal(o["executedQty"])
            if o["side"] == "BUY" and s["quoteAsset"] == asset:
                out += rem * Decimal(o["price"]) * (1 + self._quote_fee_rate_on_buy)
            elif o["side"] == "SELL" and s["baseAsset"] == asset:
                out += rem
        return out

    @property
    def _quote_fee_rate_on_buy(self) -> Decimal:
        """The fee rate a spot buy pays in the quote asset (0 when it pays in the base)."""
        return Decimal(0) if self.spot_fee_asset == "base" else self.spot_fee_rate

    def spot_free(self, asset: str) -> Decimal:
        """Free units of ``asset`` on the spot account (balance − locked)."""
        return self.spot_balances.get(asset, Decimal(0)) - self._spot_locked(asset)

    _SPOT_ORDER_PARAMS = frozenset(
        {
            "symbol",
            "side",
            "type",
            "timeInForce",
            "quantity",
            "price",
            "newClientOrderId",
            "stopPrice",
            "icebergQty",
            "newOrderRespType",
            "selfTradePreventionMode",
            "recvWindow",
            "timestamp",
            "signature",
        }
    )

    def _spot_new_order(self, q: dict[str, str]) -> tuple[int, Any]:
        sym = q.get("symbol", "")
        info = self._spot_symbols().get(sym)
        if info is None:
            return 400, INVALID_SYMBOL
        extra = sorted(set(q) - self._SPOT_ORDER_PARAMS)
        if extra:  # Binance spot refuses parameters it does not read (e.g. reduceOnly)
            return 400, {
                "code": -1104,
                "msg": f"Not all sent parameters were read; unread: {','.join(extra)}.",
            }
        cid = q.get("newClientOrderId") or f"fakespot-{next(self._ids)}"
        if any(
            o["clientOrderId"] == cid and o["status"] in ("NEW", "PARTIALLY_FILLED")
            for o in self.spot_orders.values()
        ):
            return 400, {"code": -2010, "msg": "Duplicate order sent."}
        otype, side = q.get("type", ""), q.get("side", "")
        if otype not in ("LIMIT", "MARKET", "LIMIT_MAKER") or side not in ("BUY", "SELL"):
            return 400, {"code": -1116, "msg": "Invalid orderType."}
        if "quantity" not in q:
            return 400, {"code": -1102, "msg": "Mandatory parameter 'quantity' was not sent."}
        qty = Decimal(q["quantity"])
        if qty <= 0:
            return 400, {"code": -1013, "msg": "Filter failure: LOT_SIZE"}
        book = self.spot_books.get(sym)
        if book is None:
            return 400, {"code": -2010, "msg": "Order would immediately match and take."}
        price = Decimal(q.get("price", "0")) if otype != "MARKET" else Decimal(0)
        tif = q.get("timeInForce", "GTC") if otype == "LIMIT" else "GTC"
        ref_px = price if otype != "MARKET" else (book["ask"] if side == "BUY" else book["bid"])
        if side == "BUY":
            need = qty * ref_px * (1 + self._quote_fee_rate_on_buy)
            short = need > self.spot_free(info["quoteAsset"])
        else:
            short = qty > self.spot_free(info["baseAsset"])
        if short:
            return 400, {
                "code": -2010,
                "msg": "Account has insufficient balance for requested action.",
            }
        crosses, _, _ = self._match_new(book, side, otype, qty, price, None)
        if crosses and otype == "LIMIT_MAKER":
            return 400, {"code": -2010, "msg": "Order would immediately match and take."}
        now = int(time.time() * 1000)
        o: dict[str, Any] = {
            "symbol": sym,
            "orderId": next(self._ids),
            "orderListId": -1,
            "clientOrderId": cid,
            "price": f"{price:.8f}",
            "origQty": f"{qty:.8f}",
            "executedQty": "0.00000000",
            "cummulativeQuoteQty": "0.00000000",
            "status": "NEW",
            "timeInForce": tif,
            "type": otype,
            "side": side,
            "stopPrice": "0.00000000",
            "icebergQty": "0.00000000",
            "time": now,
            "updateTime": now,
            "isWorking": True,
            "workingTime": now,
            "origQuoteOrderQty": "0.00000000",
            "selfTradePreventionMode": "EXPIRE_MAKER",
        }
        self.spot_orders[o["orderId"]] = o
        self._spot_user_update(o, "NEW")
        n_trades = len(self.spot_trades)
        if crosses:
            cap = self.spot_partial_next.pop(sym, None)
            _, take, top_px = self._match_new(book, side, otype, qty, price, cap)
            self._spot_execute(o, take, top_px, maker=False)
            if o["status"] != "FILLED" and (otype == "MARKET" or tif == "IOC"):
                o["status"] = "EXPIRED"
                self._spot_user_update(o, "EXPIRED")
        elif tif == "IOC":
            o["status"] = "EXPIRED"
            self._spot_user_update(o, "EXPIRED")
        out = {k: o[k] for k in o if k not in ("stopPrice", "icebergQty", "time", "updateTime")}
        out.pop("isWorking", None)
        out.pop("origQuoteOrderQty", None)
        out["transactTime"] = now
        out["fills"] = [
            {
                "price": t["price"],
                "qty": t["qty"],
                "commission": t["commission"],
                "commissionAsset": t["commissionAsset"],
                "tradeId": t["id"],
            }
            for t in self.spot_trades[n_trades:]
        ]
        return 200, out

    def _spot_execute(
        self, o: dict[str, Any], qty: Decimal, price: Decimal, *, maker: bool
    ) -> None:
        """One spot execution: balances move (commission in the quote asset, or with
        ``spot_fee_asset="base"`` in the asset received; see the module docstring), the
        order's cumulative fields, ``myTrades`` and an executionReport."""
        info = self._spot_symbols()[o["symbol"]]
        base, quote = info["baseAsset"], info["quoteAsset"]
        notional = qty * price
        bal = self.spot_balances
        buy = o["side"] == "BUY"
        fee_asset = base if buy and self.spot_fee_asset == "base" else quote
        charged = qty if fee_asset == base else notional
        fee = (charged * self.spot_fee_rate).quantize(Decimal("1e-8"), rounding=ROUND_HALF_EVEN)
        bal[base] = bal.get(base, Decimal(0)) + (qty if buy else -qty)
        bal[quote] = bal.get(quote, Decimal(0)) + (-notional if buy else notional)
        bal[fee_asset] -= fee
        done = Decimal(o["executedQty"]) + qty
        cum_quote = Decimal(o["cummulativeQuoteQty"]) + notional
        o["executedQty"] = f"{done:.8f}"
        o["cummulativeQuoteQty"] = f"{cum_quote:.8f}"
        o["status"] = "FILLED" if done >= Decimal(o["origQty"]) else "PARTIALLY_FILLED"
        now = int(time.time() * 1000)
        o["updateTime"] = now
        tid = next(self._trade_ids)
        self.spot_trades.append(
            {
                "symbol": o["symbol"],
                "id": tid,
                "orderId": o["orderId"],
                "orderListId": -1,
                "price": f"{price:.8f}",
                "qty": f"{qty:.8f}",
                "quoteQty": f"{notional:.8f}",
                "commission": f"{fee:.8f}",
                "commissionAsset": fee_asset,
                "time": now,
                "isBuyer": buy,
                "isMaker": maker,
                "isBestMatch": True,
            }
        )
        self._spot_user_update(
            o,
            "TRADE",
            last_qty=qty,
            last_px=price,
            fee=fee,
            fee_asset=fee_asset,
            trade_id=tid,
            maker=maker,
        )

    def _spot_user_update(
        self,
        o: dict[str, Any],
        exec_type: str,
        *,
        last_qty: Decimal = Decimal(0),
        last_px: Decimal = Decimal(0),
        fee: Decimal = Decimal(0),
        fee_asset: str | None = None,
        trade_id: int = -1,
        maker: bool = False,
    ) -> None:
        """An ``executionReport`` for ``o`` on the spot user-data stream (recorded layout)."""
        now = int(time.time() * 1000)
        body = {
            **self._spot_er_tpl,
            "E": now,
            "s": o["symbol"],
            "c": o["clientOrderId"],
            "S": o["side"],
            "o": o["type"],
            "f": o["timeInForce"],
            "q": o["origQty"],
            "p": o["price"],
            "x": exec_type,
            "X": o["status"],
            "i": o["orderId"],
            "l": f"{last_qty:.8f}",
            "z": o["executedQty"],
            "L": f"{last_px:.8f}",
            "n": f"{fee:.8f}",
            "N": fee_asset,
            "T": now,
            "t": trade_id,
            "w": o["status"] in ("NEW", "PARTIALLY_FILLED"),
            "m": maker,
            "O": o["time"],
            "Z": o["cummulativeQuoteQty"],
            "Y": f"{last_qty * last_px:.8f}",
        }
        self.push_user({"subscriptionId": 0, "event": body}, spot=True)

    def _spot_find(self, q: dict[str, str]) -> dict[str, Any] | None:
        sym = q.get("symbol")
        found = None
        for o in sorted(self.spot_orders.values(), key=lambda o: o["orderId"]):
            if o["symbol"] != sym:
                continue
            if "orderId" in q and str(o["orderId"]) == q["orderId"]:
                return o
            if "origClientOrderId" in q and o["clientOrderId"] == q["origClientOrderId"]:
                found = o  # a client id may be reused once closed: the latest one
        return found

    def _spot_get_order(self, q: dict[str, str]) -> tuple[int, Any]:
        if q.get("symbol") not in self._spot_symbols():
            return 400, INVALID_SYMBOL
        o = self._spot_find(q)
        if o is None:
            return 400, {"code": -2013, "msg": "Order does not exist."}
        return 200, dict(o)

    def _spot_cancel_order(self, q: dict[str, str]) -> tuple[int, Any]:
        o = self._spot_find(q)
        if o is None or o["status"] not in ("NEW", "PARTIALLY_FILLED"):
            return 400, {"code": -2011, "msg": "Unknown order sent."}
        o["status"] = "CANCELED"
        now = o["updateTime"] = int(time.time() * 1000)
        self._spot_user_update(o, "CANCELED")
        out = {
            k: o[k]
            for k in (
                "symbol",
                "orderId",
                "orderListId",
                "price",
                "origQty",
                "executedQty",
                "cummulativeQuoteQty",
                "status",
                "timeInForce",
                "type",
                "side",
                "selfTradePreventionMode",
            )
        }
        # Binance names the cancel request's own id clientOrderId and the order's origClientOrderId
        out["origClientOrderId"] = o["clientOrderId"]
        out["clientOrderId"] = f"fakecancel{next(self._ids)}"
        out["transactTime"] = now
        return 200, out

    def _spot_open_orders(self, q: dict[str, str]) -> tuple[int, Any]:
        sym = q.get("symbol")
        return 200, [
            dict(o)
            for o in self.spot_orders.values()
            if o["status"] in ("NEW", "PARTIALLY_FILLED") and sym in (None, o["symbol"])
        ]

    def _spot_my_trades(self, q: dict[str, str]) -> tuple[int, Any]:
        sym = q.get("symbol")
        if sym is None:
            return 400, {"code": -1102, "msg": "Mandatory parameter 'symbol' was not sent."}
        rows = [t for t in self.spot_trades if t["symbol"] == sym]
        if "orderId" in q:
            rows = [t for t in rows if str(t["orderId"]) == q["orderId"]]
        if "startTime" in q:
            rows = [t for t in rows if t["time"] >= int(q["startTime"])]
        if "fromId" in q:
            rows = [t for t in rows if t["id"] >= int(q["fromId"])]
        return 200, self._trade_list_fault(rows[: min(int(q.get("limit", 500)), 1000)])

    def _spot_account(self, q: dict[str, str]) -> tuple[int, Any]:
        rows = []
        for asset in sorted(self.spot_balances):
            total, locked = self.spot_balances[asset], self._spot_locked(asset)
            if total != 0 or locked != 0:
                rows.append(
                    {"asset": asset, "free": f"{total - locked:.8f}", "locked": f"{locked:.8f}"}
                )
        return 200, {
            **self._spot_account_tpl,
            "canWithdraw": False,
            "updateTime": int(time.time() * 1000),
            "balances": rows,
        }

    # -- websockets --------------------------------------------------------------------
    def publish(self, stream: str, payload: dict[str, Any], *, spot: bool = False) -> None:
        """Send ``payload`` to every market connection (spot ones with ``spot``) subscribed
        to ``stream``."""
        text = json.dumps(payload)
        if self._loop is None:
            return
        conns = self._spot_market_conns if spot else self._market_conns
        asyncio.run_coroutine_threadsafe(self._send(conns, text, stream), self._loop)

    def push_user(self, payload: dict[str, Any], *, spot: bool = False) -> None:
        """Send ``payload`` on the (futures, or with ``spot`` the spot) user-data stream,
        applying the user-stream faults to both: ``user_ws_duplicate`` sends each message
        twice; :meth:`hold_user_messages` holds the next ``n`` and sends them in reverse
        order."""
        (self.spot_user_messages_sent if spot else self.user_messages_sent).append(payload)
        conns = self._spot_user_conns if spot else self._user_conns
        texts = [json.dumps(payload)]
        if self.user_ws_duplicate:
            texts = texts * 2
        if self._held is not None:
            self._held.extend((conns, t) for t in texts)
            if len(self._held) >= self._hold_n:
                held, self._held = list(reversed(self._held)), None
            else:
                return
        else:
            held = [(conns, t) for t in texts]
        if self._loop is None:
            return
        for cs, t in held:
            asyncio.run_coroutine_threadsafe(self._send(cs, t, None), self._loop)

    def hold_user_messages(self, n: int) -> None:
        """Hold the next ``n`` user-data messages and then send them newest first."""
        self._held, self._hold_n = [], n

    def drop_user_streams(self, *, refuse: bool = True) -> None:
        """Cut every user-data websocket (TCP close, no close frame) and, with ``refuse``,
        answer new user-data connections with 503 until :meth:`allow_user_streams`."""
        self.user_ws_refused = refuse
        if self._loop is None:
            return

        async def cut() -> None:
            for conns in (self._user_conns, self._spot_user_conns):
                for c in list(conns):
                    c.transport_close()
                conns.clear()

        asyncio.run_coroutine_threadsafe(cut(), self._loop).result(5)

    def drop_market_streams(self) -> int:
        """Cut every market-data websocket (TCP close, no close frame); returns how many."""
        if self._loop is None:
            return 0

        async def cut() -> int:
            conns = [*self._market_conns, *self._spot_market_conns]
            for c in conns:
                c.transport_close()
            self._market_conns.clear()
            self._spot_market_conns.clear()
            return len(conns)

        return asyncio.run_coroutine_threadsafe(cut(), self._loop).result(5)

    def allow_user_streams(self) -> None:
        """Accept user-data connections again."""
        self.user_ws_refused = False

    def wait_user_connections(self, n: int, timeout_s: float = 5.0) -> bool:
        """Block until ``n`` user-data connections have been accepted in total."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self.user_ws_connections >= n and self._user_conns:
                return True
            time.sleep(0.01)
        return False

    def wait_spot_user_connection(self, timeout_s: float = 5.0) -> bool:
        """Block until a spot user-data subscription is live."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self._spot_user_conns:
                return True
            time.sleep(0.01)
        return False

    def wait_subscribed(self, stream: str, timeout_s: float = 5.0, *, spot: bool = False) -> bool:
        """Block until a market connection (a spot one with ``spot``) subscribed to
        ``stream``."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            conns = self._spot_market_conns if spot else self._market_conns
            if any(c.wants(stream) for c in list(conns)):
                return True
            time.sleep(0.01)
        return False

    async def _send(self, conns: list[_WsConn], text: str, stream: str | None) -> None:
        if self._send_lock is None:
            self._send_lock = asyncio.Lock()
        async with self._send_lock:
            for c in list(conns):
                if stream is None or c.wants(stream):
                    with contextlib.suppress(ConnectionError, RuntimeError):
                        await c.ws.send_str(text)

    @property
    def spot_ws_url(self) -> str:
        """``ws://127.0.0.1:<port>/stream-spot/ws`` — ccxt.pro's ``urls['api']['ws']['spot']``
        (ccxt.pro 4.5 tells a spot connection by ``/stream`` in its url, as in Binance's
        ``stream.binance.com``: without it a spot trade of ``BTCUSDT`` is parsed as the
        perp's)."""
        return f"ws://127.0.0.1:{self.port}/stream-spot/ws"

    @property
    def spot_ws_api_url(self) -> str:
        """``ws://127.0.0.1:<port>/spot/ws-api/v3`` — ``urls['api']['ws']['ws-api']['spot']``."""
        return f"ws://127.0.0.1:{self.port}/spot/ws-api/v3"

    def _ws_api_auth(self, params: dict[str, Any]) -> str | None:
        """Check a websocket-API signature (HMAC-SHA256 of the key-sorted params without
        ``signature``, as REST); the refusal message or None."""
        if params.get("apiKey") != self.api_key:
            return "Invalid API-key, IP, or permissions for action."
        sig = str(params.get("signature", ""))
        rest = {k: v for k, v in params.items() if k != "signature"}
        payload = "&".join(f"{k}={rest[k]}" for k in sorted(rest))
        want = hmac.new(self.api_secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(sig, want):
            return "Signature for this request is not valid."
        return None

    async def _spot_ws_api(self, request: web.Request) -> web.StreamResponse:
        """The spot websocket API: ``userDataStream.subscribe.signature`` makes the
        connection a user-data stream (``executionReport`` events)."""
        with self._lock:
            self.requests.append(LoggedRequest("WS", request.path, {}, None))
        if self.user_ws_refused:
            return web.Response(status=503, text="user data stream unavailable")
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        conn = _WsConn(ws, request)
        try:
            async for msg in ws:
                if msg.type != web.WSMsgType.TEXT:
                    continue
                try:
                    m = json.loads(msg.data)
                except ValueError:
                    continue
                if m.get("method") != "userDataStream.subscribe.signature":
                    err = {"code": -1100, "msg": f"unknown method {m.get('method')!r}"}
                    await ws.send_str(json.dumps({"id": m.get("id"), "status": 400, "error": err}))
                    continue
                why = self._ws_api_auth(dict(m.get("params") or {}))
                if why is not None:
                    err = {"code": -1022, "msg": why}
                    await ws.send_str(json.dumps({"id": m.get("id"), "status": 401, "error": err}))
                    continue
                reply = {"id": m.get("id"), "status": 200, "result": {"subscriptionId": 0}}
                await ws.send_str(json.dumps(reply))
                if conn not in self._spot_user_conns:
                    self._spot_user_conns.append(conn)
                    self.user_ws_connections += 1
        finally:
            if conn in self._spot_user_conns:
                self._spot_user_conns.remove(conn)
        return ws

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path.startswith("/spot/ws-api"):
            return await self._spot_ws_api(request)
        spot = path.startswith("/stream-spot/")
        private = path.startswith("/private")
        if private:
            key = request.query.get("listenKey", path.rsplit("/", 1)[-1])
            with self._lock:
                self.requests.append(LoggedRequest("WS", path, {}, None))
            if self.user_ws_refused or key not in self.listen_keys:
                return web.Response(status=503, text="user data stream unavailable")
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        conn = _WsConn(ws, request)
        tail = path.split("/ws", 1)[-1].strip("/")
        if tail and not private:
            conn.streams.update(tail.split("/"))
        if private:
            self._user_conns.append(conn)
            self.user_ws_connections += 1
        elif spot:
            self._spot_market_conns.append(conn)
        else:
            self._market_conns.append(conn)
        try:
            async for msg in ws:
                if msg.type != web.WSMsgType.TEXT:
                    continue
                try:
                    m = json.loads(msg.data)
                except ValueError:
                    continue
                if m.get("method") == "SUBSCRIBE":
                    conn.streams.update(m.get("params", []))
                    await ws.send_str(json.dumps({"result": None, "id": m.get("id")}))
                elif m.get("method") == "UNSUBSCRIBE":
                    conn.streams.difference_update(m.get("params", []))
                    await ws.send_str(json.dumps({"result": None, "id": m.get("id")}))
        finally:
            for lst in (self._user_conns, self._market_conns, self._spot_market_conns):
                if conn in lst:
                    lst.remove(conn)
        return ws

    # -- dispatch ---------------------------------------------------------------------
    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._ws(request)
        path = request.path
        query = dict(request.query)
        body = ""
        if request.method in ("POST", "PUT", "DELETE") and request.can_read_body:
            body = await request.text()
        params = {**query, **dict(parse_qsl(body))}
        with self._lock:
            queue = self._faults.get(f"{request.method} {path}") or self._faults.get(path)
            fault = queue.popleft() if queue else None
            self.requests.append(
                LoggedRequest(request.method, path, params, None if fault is None else fault.kind)
            )
        if fault is not None and fault.kind == "status":
            return web.Response(
                status=fault.status,
                text=fault.body,
                headers=dict(fault.headers),
                content_type="application/json" if fault.body.startswith("{") else "text/html",
            )
        if fault is not None and fault.kind == "delay":
            await asyncio.sleep(fault.delay_s)
        private = self.private_routes.get((request.method, path))
        if private is not None:
            signed = request.query_string if request.method in ("GET", "DELETE") else body
            refused = self._check_auth(request, signed)
            if refused is not None:
                status, payload = refused
            else:
                with self._lock:
                    status, payload = private(params)
        else:
            handler = self.routes.get(path)
            if handler is None:
                return web.json_response(
                    {"code": -5000, "msg": f"Path {path}, Method {request.method} is invalid"},
                    status=404,
                )
            status, payload = handler(query)
        body_out = json.dumps(payload)
        if fault is not None and fault.kind == "lost_response":
            await asyncio.sleep(fault.delay_s)
        if fault is not None and fault.kind == "truncated":
            body_out = body_out[: max(1, len(body_out) // 2)]
        return web.Response(status=status, text=body_out, content_type="application/json")


class _WsConn:
    """One websocket client of the fake: its subscribed stream names."""

    def __init__(self, ws: web.WebSocketResponse, request: web.Request) -> None:
        self.ws = ws
        self.request = request
        self.streams: set[str] = set()

    def wants(self, stream: str) -> bool:
        """True when subscribed to ``stream`` (``btcusdt@markPrice`` also matches
        ``btcusdt@markPrice@1s``)."""
        return any(s == stream or s.startswith(stream + "@") for s in self.streams)

    def transport_close(self) -> None:
        """Close the TCP connection without a close frame (the client sees 1006)."""
        tr = self.request.transport
        if tr is not None:
            tr.close()


def recorded_account(name: str) -> Any:
    """A recorded Binance account response (``http_futures_account_<name>.json``)."""
    return json.loads(shared_file(f"{RESPONSES_REL}/http_futures_account_{name}.json").read_text())


def recorded_ws(name: str) -> Any:
    """A recorded Binance websocket message (``ws_messages/<name>.json``)."""
    return json.loads(shared_file(f"{WS_REL}/{name}.json").read_text())


def binance_kline_rows(
    ts_ms: np.ndarray,
    interval_ms: int,
    o: np.ndarray,
    h: np.ndarray,
    low: np.ndarray,
    c: np.ndarray,
    volume_base: np.ndarray,
) -> list[list[Any]]:
    """Binance's 12-field kline rows from OHLCV columns (freqtrade files have no quote or
    taker volumes: ``quote volume = volume × (o+h+l+c)/4`` and taker buy = half of each,
    the same stand-ins perpdesk's freqtrade importer documents). Numbers are sent as
    ``repr`` strings so the float values round-trip exactly."""
    vq = volume_base * (o + h + low + c) / 4
    rows = []
    for i in range(ts_ms.size):
        rows.append(
            [
                int(ts_ms[i]),
                repr(float(o[i])),
                repr(float(h[i])),
                repr(float(low[i])),
                repr(float(c[i])),
                repr(float(volume_base[i])),
                int(ts_ms[i]) + interval_ms - 1,
                repr(float(vq[i])),
                100,
                repr(float(volume_base[i] / 2)),
                repr(float(vq[i] / 2)),
                "0",
            ]
        )
    return rows


def path_of(name: str) -> Path:
    """Path of a recorded response file (for tests that read it independently)."""
    return shared_file(f"{RESPONSES_REL}/http_futures_market_{name}.json")
