"""Loopback fakes of Bybit v5 and OKX v5 REST and websockets, public and private, for offline
tests of ccxt clients (the scanner, the history downloader and the live venue) beside the Binance fake of
tests/fake_exchange.py.

Each is a real HTTP server (``aiohttp.web``) on 127.0.0.1 at a free port, in a background
thread with its own event loop. They answer the endpoints ccxt 4.5.90 calls (read from
``ccxt/bybit.py`` and ``ccxt/okx.py``), with the venues' documented parameter semantics,
fed with the recorded real responses in ``../shared/data/exchange-responses/`` read at
test time:

**Bybit** (``FakeBybit``; envelope ``{"retCode", "retMsg", "result", "retExtInfo", "time"}``,
errors as HTTP 200 with ``retCode`` 10001):

- ``GET /v5/market/instruments-info`` (``load_markets``; ``category`` linear / spot /
  inverse / option, ``status=PreLaunch``, ``cursor``): the real linear and spot lists of
  the cryptofeed capture ``cryptofeed/BYBIT.jsonl.zst`` (800 linear instruments with their
  ``fundingInterval`` in minutes); inverse and option from ``other-venues/bybit/``. The
  PreLaunch list and a second cursor page are empty (synthesized: no recording).
- ``GET /v5/market/tickers`` (``fetch_tickers``, ``fetch_funding_rates``; ``category``,
  ``symbol``): the first ``tickers.<symbol>`` websocket snapshot of each of BTCUSDT,
  DOGEUSDT, ETHUSDT, SOLUSDT in the same capture — the websocket snapshot carries the REST
  ticker's fields under the same names (lastPrice, markPrice, indexPrice, fundingRate,
  nextFundingTime, turnover24h, volume24h, openInterest …); the REST envelope around them
  is synthesized.
- ``GET /v5/market/open-interest`` (``fetch_open_interest``): one row, the ticker
  snapshot's ``openInterest`` at its time (synthesized envelope, recorded number).
- ``GET /v5/market/funding/history`` (``fetch_funding_rate_history``): by default the
  recorded ``other-venues/bybit/http_get_funding_history.json`` for BTCUSDT;
  :meth:`FakeBybit.set_funding` replaces a symbol's history. Bybit's rules (docs, *Get
  Funding Rate History*): ``startTime`` alone is an error, ``endTime`` alone → the
  ``limit`` (≤ 200, default 200) records up to it, newest first; with both, the newest
  ``limit`` inside ``[startTime, endTime]``.
- ``GET /v5/market/time``.

**OKX** (``FakeOKX``; envelope ``{"code": "0", "msg": "", "data": [...]}``, errors
``{"code": "51001", …}``):

- ``GET /api/v5/public/instruments`` (``instType`` SPOT / SWAP / FUTURES / OPTION): SWAP =
  the real list of the cryptofeed capture ``cryptofeed/OKX.jsonl.zst`` (166 swaps,
  2022-05-13) plus one synthesized ``HYPE-USDT-SWAP`` (a relabelled copy of
  ETH-USDT-SWAP) so the real 4-hourly HYPE history can be served; the others
  ``other-venues/okx/http_get_instruments_*.json``.
- ``GET /api/v5/public/funding-rate`` (``fetch_funding_rates`` with ``instId=ANY``,
  ``fetch_funding_rate``): BTC-USDT-SWAP is the recorded ``ws_funding_rate.json`` item
  (the websocket item has the REST fields' names); ETH-USDT-SWAP and HYPE-USDT-SWAP are
  relabelled copies with other rates, HYPE with ``nextFundingTime − fundingTime`` = 4 h
  (synthesized, to give one symbol another interval).
- ``GET /api/v5/public/mark-price`` (``fetch_mark_prices``): recorded
  ``http_get_mark_price.json`` for BTC-USDT-SWAP; synthesized ETH and HYPE marks.
- ``GET /api/v5/market/index-tickers`` (implicit API, index for the basis): recorded
  ``http_get_index_price.json`` (BTC-USDT); synthesized ETH-USDT and HYPE-USDT. The
  recorded BTC mark (2025-04-14) and index (2025-05-11) are from different days.
- ``GET /api/v5/market/tickers`` (``fetch_tickers``; ``instType``): SWAP = the recorded
  ``ws_tickers.json`` item relabelled as BTC-USDT-SWAP (``volCcy24h`` set to
  ``vol24h × ctVal`` so contracts and base units agree — synthesized) and the real
  UNI-USD-SWAP ticker of the cryptofeed capture ``OKX.ws.1.0.c62f742``; SPOT = the
  recorded item as it is.
- ``GET /api/v5/public/open-interest`` (``fetch_open_interest``): ``oiUsd`` of the real
  OKX snapshot in ``multivenue/open_interest.parquet`` (BTC, ETH, HYPE), ``oiCcy`` and
  ``oi`` derived from it with the mark (synthesized).
- ``GET /api/v5/public/funding-rate-history`` (``fetch_funding_rate_history``): by default
  the recorded ``http_get_funding_rate_history.json`` (BTC-USDT-SWAP); :meth:`set_funding`
  replaces a symbol's history. OKX's rules (docs, *Get funding rate history*): newest
  first; ``before`` = newer than, ``after`` = older than (both exclusive); ``limit`` ≤ 100.
- ``GET /api/v5/public/time``.

**Private (signed) REST**, as ccxt 4.5.90 calls it for USDT linear perps, checked like the
venues check it and answered in the layout of the recorded files in ``other-venues/`` (each
answer starts from a recorded row, loaded at test time, with the fake's state written in):

- **Bybit** (``category=linear``): ``X-BAPI-API-KEY`` / ``X-BAPI-TIMESTAMP`` /
  ``X-BAPI-RECV-WINDOW`` / ``X-BAPI-SIGN`` (hex HMAC-SHA256 of timestamp + key + recv window
  + query or body; 10003 key, 10004 sign, 10002 a timestamp outside the recv window — such
  a request is refused unexecuted). ``GET /v5/user/query-api`` (recorded, with the requesting
  key as ``apiKey``; :meth:`FakeBybit.set_key_permissions` sets ``readOnly``, ``Withdraw``
  in ``Wallet``, ``ips``, expiry) and ``/v5/account/info``
  (recorded: a unified account, ccxt's ``is_unified_enabled``), ``/v5/asset/coin/query-info``
  (synthesized; ccxt's ``load_markets`` fetches currencies when keys are set); ``POST
  /v5/order/create`` (answer: ``ws_order_response`` ids; ``orderLinkId`` checked against
  Bybit's alphabet, unique for ever: 110072 "OrderLinkedID is duplicate"; ``qty`` on
  ``qtyStep``, price on ``tickSize``; ``positionIdx`` 0 in one-way, 1/2 in hedge mode; 110007
  when the margin at 10x exceeds the wallet), ``POST /v5/order/cancel`` (110001 when not
  open), ``GET /v5/order/realtime`` (open orders; ``openOnly=1`` the closed ones) and
  ``/v5/order/history`` (closed orders) in the ``http_get_orders_realtime`` layout, ``GET
  /v5/execution/list`` (``http_get_executions``; the 7-day window rule, newest first,
  ``limit`` ≤ 100, ``cursor``), ``/v5/position/list`` (``http_get_positions``; a closed
  position stays with size 0), ``/v5/account/wallet-balance`` (``http_get_wallet_balance``,
  UNIFIED), ``POST /v5/position/set-leverage``, ``GET /v5/account/transaction-log``
  (funding ``SETTLEMENT`` rows, synthesized from the documented fields). Fees: the recorded
  ``http_get_fee_rate`` of BTCUSDT (maker 0.01 %, taker 0.06 %).
- **OKX** (``instType=SWAP``, ``tdMode=cross``, ``posSide`` net or long/short):
  ``OK-ACCESS-KEY`` / ``-PASSPHRASE`` / ``-TIMESTAMP`` / ``-SIGN`` (base64 HMAC-SHA256 of
  timestamp + method + path + body; 50111 key, 50105 passphrase, 50113 sign, 50102 a stale
  timestamp; HTTP 401). ``GET /api/v5/asset/currencies`` (synthesized, as for Bybit); ``POST
  /api/v5/trade/batch-orders`` (ccxt's default) and ``/trade/order`` (``http_place_order_response``;
  ``sz`` in contracts on ``lotSz``, ``px`` on ``tickSz``; ``clOrdId`` letters and digits ≤ 32,
  unique: sCode 51016 "Duplicated clOrdId" — the fake refuses any reuse; 51008 margin), ``GET
  /api/v5/trade/order`` (51603 unknown), ``POST /trade/cancel-order`` (51400/51401/51402),
  ``GET /trade/orders-pending`` (``http_get_orders_pending``), ``/trade/fills-history``
  (``http_transaction_detail`` as a SWAP fill; newest first, ``begin``/``end``, ``after`` bill
  id, ``limit`` ≤ 100), ``/account/positions`` (``http_get_positions``; ``pos`` in contracts,
  signed in net mode), ``/account/balance`` (``http_get_account_balance``),
  ``/account/bills-archive`` (funding bills, type 8, synthesized from the documented fields),
  ``POST /account/set-leverage``, ``GET /account/config`` (synthesized from the documented
  fields: ``perm`` "read_only,trade" until :meth:`FakeOKX.set_key_permissions`, ``ip``,
  ``acctLv`` 2, ``posMode`` of the engine). Fees: OKX's Lv1 swap rates (maker 0.02 %, taker 0.05 %; no
  recording).

**Spot** (the carry's spot leg, one unified account with the perps): Bybit
``category=spot`` on the same order, query, cancel and execution routes (the captured spot
instruments: ``basePrecision``, ``minOrderQty``, ``minOrderAmt``, ``tickSize``; a market buy's
``qty`` is USDT unless ``marketUnit=baseCoin``, a sell's base unless ``quoteCoin``; errors
170131 balance, 170134/170137/170148 decimals, 170136 quantity and 170140 value below the
minimum, 170141 duplicate ``orderLinkId``, 170213 cancel of an order not open; the order row
echoes ``marketUnit``, an assumption taken from ccxt PR #29602's payloads; fees 0.1 % maker
and taker, Bybit's non-VIP spot rate, no recording); OKX ``instType=SPOT`` (the captured
spot list of ``OKX.jsonl.zst`` beside the recorded USD pairs: BTC-USDT ``lotSz``
0.00000001, ``minSz`` 0.00001, ``tickSz`` 0.1; ``tdMode=cash``, no ``posSide``; a market
buy's ``sz`` is USDT unless ``tgtCcy=base_ccy``; 51008 balance, 51020 below ``minSz``,
51121 lot; fees the recorded Lv1 SPOT rates of ``http_get_trade_fee_response``, maker
0.08 %, taker 0.1 %). Both charge the fee in the coin received (a buy's in the base), keep
coin balances in the wallet answers (Bybit ``coin`` rows with ``locked``; OKX ``details``
with ``frozenBal``), and hold an open order's funds (buys USDT, sells the base). Test
controls: ``set_book(…, spot=True)``, ``trade(…, spot=True)``, ``deposit(coin, amount)``.

**Websockets** on the same port, as ccxt.pro 4.5.90 speaks them (``ccxt/pro/bybit.py``,
``ccxt/pro/okx.py``), frames built from the recorded ``other-venues/*/ws_*.json`` at test
time (``ws_url``: what :func:`perpdesk.execution.ccxt_live.make_exchange` takes):

- **Bybit**: public ``/v5/public/linear`` and ``/v5/public/spot``, private ``/v5/private``.
  ``{"op": "ping"}`` → pong (public ``ret_msg`` pong, private ``op`` pong); ``auth`` with
  [key, expires ms, hex HMAC-SHA256(secret, ``GET/realtime`` + expires)] → the recorded
  ``ws_auth_success`` / ``ws_auth_failure`` (10003 key, 10004 sign, 10002 ``expires`` not
  in the future; ``ws_echo_auth_request`` quotes the request in the refusal, key included);
  ``subscribe`` → ``ws_subscription_ack`` / ``ws_subscription_failure`` (unknown topic or
  symbol; a private topic before ``auth``: "Request not authorized"). Topics:
  ``publicTrade.<symbol>`` (the recorded ``ws_public_trade`` fields; its recorded topic is the
  pre-v5 ``trade.linear.<symbol>``, which ccxt.pro cannot route, so the v5 name is served),
  ``orderbook.1.<symbol>`` (what ccxt.pro's ``watch_bids_asks`` subscribes: one level a
  side, a ``ws_orderbook_snapshot`` on subscribing, then a ``ws_orderbook_delta`` on every
  :meth:`FakeBybit.set_book` — the old price with size "0", the new one — as Bybit pushes
  level 1), ``tickers.<symbol>`` on the linear endpoint (ccxt.pro's ``watch_tickers``: the
  recorded ``ws_ticker_linear`` snapshot of BTCUSDT — markPrice, indexPrice, fundingRate,
  nextFundingTime … — on subscribing, then on every :meth:`FakeBybit.set_ticker` a ``delta``
  carrying only the fields it changed, as Bybit sends them), private ``execution``
  (``ws_account_execution`` with the fill's fields, as the REST execution list; ``category``
  linear or spot: one unified account).
- **OKX**: ``/ws/v5/public``, ``/ws/v5/private``, ``/ws/v5/business``. The text ``ping`` →
  ``pong``; ``login`` with {apiKey, passphrase, timestamp (s), sign = base64 HMAC-SHA256(secret,
  timestamp + ``GET/users/self/verify``)} → ``{"event": "login", "code": "0"}`` or an error
  event (60005 key, 60024 passphrase, 60007 sign, 60006 a timestamp over 30 s off, 60004);
  ``subscribe`` answers each argument (``event`` subscribe, or 60018 unknown, 60011 a private
  channel before ``login``). Channels: ``trades`` (``ws_trades``), ``bbo-tbt``
  (``ws_bbo_tbt``: [px, sz, "0", orders]) and ``tickers`` (``ws_tickers`` relabelled) with
  sizes in contracts on a swap; ``mark-price`` (the recorded ``http_get_mark_price`` item: the
  websocket item has its fields) and ``funding-rate`` (``ws_funding_rate``: ``fundingRate``
  settled at ``fundingTime``) of a swap, the current value on subscribing and a message on
  every :meth:`FakeOKX.set_mark` / :meth:`FakeOKX.set_funding_now` (also what REST serves); private ``orders`` by ``instType`` (ANY / SWAP / SPOT …,
  optionally ``instId``): the recorded ``ws_orders`` item with the order's state after each
  fill (``tradeId``, ``fillPx``, ``fillSz``, ``fillTime``, ``execType``, and ``fillFee`` /
  ``fillFeeCcy`` — documented by OKX, absent from the recording: synthesized, negative =
  charged), and one message per other state change (live, canceled) with an empty
  ``tradeId``.

Public frames go out on :meth:`set_book` (sizes ``bid_qty``/``ask_qty``) and :meth:`trade`
(``side`` = the taker's), private ones after every signed request and test control that
made the engine fill or change an order. Faults: :meth:`_Loopback.drop_ws` (TCP cut without
a close frame, optionally refusing new connections with 503 until :meth:`_Loopback.allow_ws`),
``ws_duplicate`` (every private frame twice), :meth:`_Loopback.hold_ws_private` (the next n
private frames sent newest first). Counters: ``ws_connections`` by endpoint,
``ws_subscriptions`` by topic, ``ws_logins``, ``ws_pings``, ``ws_private_sent``;
:meth:`_Loopback.wait_subscribed` blocks until a topic is (re)subscribed.

Both run on one small matching engine (:class:`Matching`: ``set_book`` moves the quotes and
fills resting orders they cross, ``trade`` prints a public trade that fills resting orders
at or through it, market orders take the top, ``partial_next`` caps the next immediate fill,
``settle_funding`` books funding on open positions; ``engine.hedge`` switches hedge mode).
Faults are queued per route (:meth:`_Loopback.inject`, :class:`tests.fake_exchange.Fault`):
a lost response (executed, answered after the client's timeout), a delay, a 5xx, a truncated
body, and the venues' rate limits (:func:`bybit_rate_limited`: retCode 10006 with
``X-Bapi-Limit-Reset-Timestamp``; :func:`okx_rate_limited`: HTTP 429, code 50011).

Every request is logged (:attr:`requests`, :class:`tests.fake_exchange.LoggedRequest`; for a
POST the JSON body's fields).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import copy
import hashlib
import hmac
import itertools
import json
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal
from functools import lru_cache
from typing import Any

import pyarrow as pa
from aiohttp import web

from tests.fake_exchange import Fault, LoggedRequest
from tests.realdata import shared_file

OTHER_VENUES = "exchange-responses/other-venues"
CRYPTOFEED = "exchange-responses/cryptofeed"

Handler = Callable[[dict[str, str]], tuple[int, Any]]
PrivateHandler = Callable[[Any], tuple[int, Any]]
"""A signed route: the query (GET) or the parsed JSON body (POST) → (status, payload)."""


def other_venue(venue: str, name: str) -> Any:
    """A recorded response of ``other-venues/<venue>/<name>.json``, parsed (a fresh copy)."""
    return json.loads(shared_file(f"{OTHER_VENUES}/{venue}/{name}.json").read_text())


@lru_cache(maxsize=4)
def _cryptofeed_lines(name: str) -> tuple[str, ...]:
    path = shared_file(f"{CRYPTOFEED}/{name}")
    with pa.CompressedInputStream(pa.OSFile(str(path)), "zstd") as fh:
        return tuple(fh.read().decode().splitlines())


def cryptofeed_http(name: str, url_part: str) -> Any:
    """The body of the first recorded HTTP response whose URL contains ``url_part`` in the
    cryptofeed capture ``name`` (``BYBIT.jsonl.zst``), parsed (a fresh copy)."""
    return json.loads(_cryptofeed_http_text(name, url_part))


@lru_cache(maxsize=16)
def _cryptofeed_http_text(name: str, url_part: str) -> str:
    for line in _cryptofeed_lines(name):
        rec = json.loads(line)
        if rec.get("t") == "http" and url_part in rec["url"]:
            return str(rec["data"])
    raise LookupError(f"{name}: no recorded HTTP response for {url_part!r}")


def cryptofeed_ws(name: str) -> list[dict[str, Any]]:
    """Every websocket message received in the cryptofeed capture ``name``, parsed."""
    out = []
    for line in _cryptofeed_lines(name):
        rec = json.loads(line)
        if rec.get("t") == "recv":
            out.append(json.loads(rec["data"]))
    return out


def bybit_ws_tickers() -> dict[str, dict[str, Any]]:
    """The first ``tickers.<symbol>`` snapshot per symbol in ``BYBIT.jsonl.zst``, with its
    message time ``ts`` (ms) added as ``_ts`` (a fresh copy)."""
    return copy.deepcopy(_bybit_ws_tickers())


@lru_cache(maxsize=1)
def _bybit_ws_tickers() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for m in cryptofeed_ws("BYBIT.jsonl.zst"):
        if str(m.get("topic", "")).startswith("tickers.") and m.get("type") == "snapshot":
            d = m["data"]
            out.setdefault(d["symbol"], {**d, "_ts": int(m["ts"])})
    return out


def okx_ws_ticker(inst_id: str, capture: str = "OKX.ws.1.0.c62f742") -> dict[str, Any]:
    """The first ``tickers`` item of ``inst_id`` in a plain-text OKX websocket capture
    (``<local ts>: <json>`` lines)."""
    for line in shared_file(f"{CRYPTOFEED}/{capture}").read_text().splitlines():
        _, _, payload = line.partition(": ")
        if '"channel":"tickers"' not in payload or '"data"' not in payload:
            continue
        m = json.loads(payload)
        if m["arg"].get("instId") == inst_id:
            return dict(m["data"][0])
    raise LookupError(f"{capture}: no ticker of {inst_id}")


def _int(q: dict[str, str], key: str) -> int | None:
    v = q.get(key)
    return None if v in (None, "") else int(v)


WsMatch = Callable[["_WsClient"], bool]
"""Which websocket clients a pushed frame goes to."""


class _WsClient:
    """One websocket client of a fake: its endpoint kind (Bybit ``linear`` / ``spot`` /
    ``private``; OKX ``public`` / ``private`` / ``business``), its subscribed topics and
    whether it has logged in."""

    def __init__(self, ws: web.WebSocketResponse, request: web.Request, kind: str, n: int):
        self.ws = ws
        self.request = request
        self.kind = kind
        self.conn_id = f"cejreaspqfm9se7usbrg-{n:03d}"
        self.topics: set[str] = set()
        self.authed = False

    def transport_close(self) -> None:
        """Close the TCP connection without a close frame (the client sees 1006)."""
        tr = self.request.transport
        if tr is not None:
            tr.close()


class _Loopback:
    """An aiohttp server on 127.0.0.1 in a thread; subclasses fill :attr:`routes`."""

    def __init__(self) -> None:
        self.routes: dict[str, Handler] = {}
        self.requests: list[LoggedRequest] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None
        # websockets (server loop; counters read by tests)
        self._ws_clients: list[_WsClient] = []
        self._ws_ids = itertools.count(1)
        self._ws_send_lock: asyncio.Lock | None = None
        self._ws_held: list[tuple[WsMatch, str]] | None = None
        self._ws_hold_n = 0
        self.ws_refused = False
        self.ws_duplicate = False
        self.ws_connections: collections.Counter[str] = collections.Counter()
        """Accepted websocket connections by endpoint kind."""
        self.ws_subscriptions: collections.Counter[str] = collections.Counter()
        """Accepted subscriptions by topic (every (re)subscription counts)."""
        self.ws_logins = 0
        self.ws_pings = 0
        self.ws_private_sent: list[Any] = []
        """Private frames pushed (each once, before the duplicate / reorder faults)."""

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` (the server must be started)."""
        if self.port is None:
            raise RuntimeError("fake venue not started")
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Any:
        """Bind a free port and serve in a background thread."""
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake venue did not start")
        return self

    def _run(self, ready: threading.Event) -> None:
        assert self._loop is not None
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.2, access_log=None)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = runner.addresses[0][1]
        ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())
        pending = asyncio.all_tasks(self._loop)  # handlers still sleeping in a fault
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

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def requests_to(self, path: str) -> list[LoggedRequest]:
        """Logged requests to ``path``, in arrival order."""
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def not_found(self, path: str) -> tuple[int, Any]:
        raise NotImplementedError

    # -- private API hooks (filled by the venues) ------------------------------------------
    private_routes: dict[tuple[str, str], PrivateHandler]
    _faults: dict[str, collections.deque[Fault]]

    def inject(self, path: str, *faults: Fault, method: str | None = None) -> None:
        """Queue ``faults`` on ``path`` (only on requests with ``method`` when given): the
        next requests to it get them, first in first out (see :class:`tests.fake_exchange.Fault`:
        ``status`` answers without handling, ``delay`` handles late, ``lost_response``
        handles at once and answers late)."""
        key = path if method is None else f"{method} {path}"
        with self._lock:
            self._faults.setdefault(key, collections.deque()).extend(faults)

    def check_auth(
        self, request: web.Request, raw_query: str, body: str
    ) -> tuple[int, Any, dict[str, str]] | None:
        """None when the request is signed right, else the venue's refusal."""
        raise NotImplementedError

    # -- websockets (the venue mixins fill ws_kind / ws_message / ws_private_frames) ------
    def ws_kind(self, path: str) -> str | None:
        """The endpoint kind of a websocket path; None: not a websocket endpoint."""
        return None

    def ws_message(self, c: _WsClient, text: str) -> list[Any]:
        """The replies to one client message (dicts are sent as JSON, strings as they are);
        runs under :attr:`_lock`."""
        return []

    def ws_private_frames(self) -> list[tuple[WsMatch, Any]]:
        """Private frames for what the engine did since the last call (under :attr:`_lock`)."""
        return []

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        kind = self.ws_kind(request.path)
        with self._lock:
            self.requests.append(LoggedRequest("WS", request.path, {}, None))
        if kind is None:
            return web.Response(status=404, text="not a websocket endpoint")
        if self.ws_refused:
            return web.Response(status=503, text="service unavailable")
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        c = _WsClient(ws, request, kind, next(self._ws_ids))
        self._ws_clients.append(c)
        with self._lock:
            self.ws_connections[kind] += 1
        try:
            async for msg in ws:
                if msg.type != web.WSMsgType.TEXT:
                    continue
                with self._lock:
                    replies = self.ws_message(c, msg.data)
                for r in replies:
                    await self._ws_send(
                        lambda x, c=c: x is c, r if isinstance(r, str) else json.dumps(r)
                    )
        finally:
            if c in self._ws_clients:
                self._ws_clients.remove(c)
        return ws

    async def _ws_send(self, match: WsMatch, text: str) -> None:
        if self._ws_send_lock is None:
            self._ws_send_lock = asyncio.Lock()
        async with self._ws_send_lock:
            for c in list(self._ws_clients):
                if match(c):
                    with contextlib.suppress(ConnectionError, RuntimeError):
                        await c.ws.send_str(text)

    def _ws_schedule(self, match: WsMatch, payload: Any) -> None:
        """Send ``payload`` to the matching clients (from any thread; in call order)."""
        if self._loop is None:
            return
        text = payload if isinstance(payload, str) else json.dumps(payload)
        asyncio.run_coroutine_threadsafe(self._ws_send(match, text), self._loop)

    def _ws_flush(self) -> None:
        """Push the private frames of what the engine did (under :attr:`_lock`), through the
        faults: :attr:`ws_duplicate` sends each frame twice; :meth:`hold_ws_private` holds
        the next frames and sends them newest first."""
        for match, payload in self.ws_private_frames():
            self.ws_private_sent.append(payload)
            text = json.dumps(payload)
            items = [(match, text)] * (2 if self.ws_duplicate else 1)
            if self._ws_held is not None:
                self._ws_held.extend(items)
                if len(self._ws_held) < self._ws_hold_n:
                    continue
                items, self._ws_held = list(reversed(self._ws_held)), None
            for m, t in items:
                self._ws_schedule(m, t)

    def hold_ws_private(self, n: int) -> None:
        """Hold the next ``n`` private frames (counting duplicates), then send them newest
        first."""
        with self._lock:
            self._ws_held, self._ws_hold_n = [], n

    def drop_ws(self, kind: str | None = None, *, refuse: bool = False) -> int:
        """Cut the websockets of endpoint ``kind`` (all when None) without a close frame;
        with ``refuse`` answer new connections 503 until :meth:`allow_ws`. Blocks (call it
        through ``asyncio.to_thread`` from a test's event loop); returns how many were cut."""
        self.ws_refused = refuse
        if self._loop is None:
            return 0

        async def cut() -> int:
            gone = [c for c in self._ws_clients if kind is None or c.kind == kind]
            for c in gone:
                c.transport_close()
                self._ws_clients.remove(c)
            return len(gone)

        return asyncio.run_coroutine_threadsafe(cut(), self._loop).result(5)

    def allow_ws(self) -> None:
        """Accept websocket connections again."""
        self.ws_refused = False

    def wait_subscribed(self, topic: str, times: int = 1, timeout_s: float = 5.0) -> bool:
        """Block until ``topic`` has been subscribed ``times`` times in all and a live client
        holds it (a topic ``orders`` also matches ``orders:ANY``)."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            with self._lock:
                n = sum(v for k, v in self.ws_subscriptions.items() if _topic_is(k, topic))
            live = any(_topic_is(t, topic) for c in list(self._ws_clients) for t in c.topics)
            if n >= times and live:
                return True
            time.sleep(0.01)
        return False

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._ws(request)
        query = dict(request.query)
        body = ""
        if request.method in ("POST", "PUT", "DELETE") and request.can_read_body:
            body = await request.text()
        parsed: Any = json.loads(body) if body else {}
        logged = parsed[0] if isinstance(parsed, list) and len(parsed) == 1 else parsed
        params = {**query, **logged} if isinstance(logged, dict) else dict(query)
        faults = getattr(self, "_faults", {})
        with self._lock:
            queue = faults.get(f"{request.method} {request.path}") or faults.get(request.path)
            fault = queue.popleft() if queue else None
            self.requests.append(
                LoggedRequest(request.method, request.path, params, fault and fault.kind)
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
        headers: dict[str, str] = {}
        private = getattr(self, "private_routes", {}).get((request.method, request.path))
        if private is not None:
            refused = self.check_auth(request, request.rel_url.raw_query_string, body)
            if refused is not None:
                status, payload, headers = refused
            else:
                with self._lock:
                    status, payload = private(query if request.method == "GET" else parsed)
                    self._ws_flush()
        else:
            handler = self.routes.get(request.path)
            if handler is None or request.method != "GET":
                status, payload = self.not_found(request.path)
            else:
                status, payload = handler(query)
        text = json.dumps(payload)
        if fault is not None and fault.kind == "lost_response":
            await asyncio.sleep(fault.delay_s)
        if fault is not None and fault.kind == "truncated":
            text = text[: max(1, len(text) // 2)]
        return web.Response(
            status=status, text=text, headers=headers, content_type="application/json"
        )


def _topic_is(have: str, want: str) -> bool:
    return have == want or have.startswith(want + ":")


# ------------------------------------------------------------------------- private: matching
MS_PER_DAY = 86_400_000


def _now_ms() -> int:
    return int(time.time() * 1000)


def _s(x: Decimal) -> str:
    """A Decimal as the venues print numbers (plain, no exponent)."""
    return f"{x.normalize():f}" if x == x.to_integral_value() else f"{x:f}"


@dataclass
class FakeOrder:
    """One order held by a fake venue; ``qty``/``filled`` are in the venue's order units
    (base units on Bybit, contracts on OKX); ``value`` = Σ fill qty × multiplier × price
    (USDT), ``fee`` Σ fees paid (USDT)."""

    oid: str
    cid: str
    symbol: str
    side: str  # "buy" / "sell"
    kind: str  # "limit" / "market"
    qty: Decimal
    price: Decimal | None
    tif: str  # "GTC", "IOC", "PostOnly"
    reduce_only: bool
    pos_side: str  # "net", "long", "short"
    created_ms: int
    updated_ms: int
    filled: Decimal = Decimal(0)
    value: Decimal = Decimal(0)
    fee: Decimal = Decimal(0)
    status: str = "new"  # new, partially_filled, filled, cancelled, rejected
    reject_reason: str = ""
    quote_qty: Decimal | None = None  # a spot market order sized in quote (as sent)
    market_unit: str = ""  # Bybit spot ``marketUnit`` / OKX ``tgtCcy``, echoed as sent
    fee_ccy: str = "USDT"  # the coin its fees are charged in (spot buys: the base)

    @property
    def is_open(self) -> bool:
        return self.status in ("new", "partially_filled")


@dataclass
class FakePosition:
    """A position in order units: ``qty`` signed in one-way mode (+ long), positive in hedge
    mode (the side is the key); ``entry`` the average entry price."""

    qty: Decimal = Decimal(0)
    entry: Decimal = Decimal(0)
    created_ms: int = 0
    updated_ms: int = 0


@dataclass
class Matching:
    """The small matching engine behind the private routes of both fakes.

    - :meth:`set_book` sets the best bid/ask of a symbol; resting limit orders the new
      quotes cross fill in full at their own price (maker).
    - A market order fills at the opposite top (buy at the ask, sell at the bid); a limit
      order crossing the top fills there (taker), the rest rests (IOC: expires). A market
      remainder is cancelled. ``partial_next[symbol] = qty`` caps the next immediate fill.
    - :meth:`trade` prints a public trade: resting limits at or through its price fill, in
      time priority, up to its quantity, at their own price (maker).
    - Fills move the position (average entry; realised PnL on a reduction), the wallet
      (realised PnL − fee) and the fill list; :meth:`settle_funding` books funding on every
      open position of a symbol: amount = −qty × multiplier × mark × rate (a long pays a
      positive rate).

    ``mult`` is the base units of one order unit (1 on Bybit, ``ctVal`` on OKX).

    **Spot** markets share the engine (one unified account): ``spot_of(symbol)`` names a spot
    market's (base, quote) (None for a perp). A spot fill moves coins, not positions:
    ``wallet`` is the USDT balance, :attr:`coins` the other coins'. A buy of q at p pays
    q × p USDT and receives q − fee, the fee q × rate charged in the base coin; a sell gives
    q base and receives q × p − fee, the fee q × p × rate in USDT (both venues charge the
    coin received)."""

    maker_rate: Decimal
    taker_rate: Decimal
    wallet: Decimal
    mult: Callable[[str], Decimal]
    hedge: bool = False
    spot_of: Callable[[str], tuple[str, str] | None] = lambda symbol: None
    spot_maker_rate: Decimal = Decimal(0)
    spot_taker_rate: Decimal = Decimal(0)
    coins: dict[str, Decimal] = field(default_factory=dict)
    books: dict[str, tuple[Decimal, Decimal]] = field(default_factory=dict)
    partial_next: dict[str, Decimal] = field(default_factory=dict)
    orders: dict[str, FakeOrder] = field(default_factory=dict)
    fills: list[dict[str, Any]] = field(default_factory=list)
    positions: dict[tuple[str, str], FakePosition] = field(default_factory=dict)
    funding: list[dict[str, Any]] = field(default_factory=list)
    leverage: dict[str, int] = field(default_factory=dict)
    _oids: Any = field(default_factory=lambda: itertools.count(1))
    _tids: Any = field(default_factory=lambda: itertools.count(1))

    def next_oid(self, fmt: Callable[[int], str]) -> str:
        return fmt(next(self._oids))

    def mark(self, symbol: str) -> Decimal:
        """Mid of the book (the fake's mark price)."""
        bid, ask = self.books[symbol]
        return (bid + ask) / 2

    def fee(self, notional: Decimal, maker: bool) -> Decimal:
        rate = self.maker_rate if maker else self.taker_rate
        return (notional * rate).quantize(Decimal("1e-8"), rounding=ROUND_HALF_EVEN)

    def pos_key(self, o: FakeOrder) -> tuple[str, str]:
        return (o.symbol, o.pos_side if self.hedge else "net")

    def spot_locked(self, coin: str) -> Decimal:
        """What open spot orders hold of ``coin``: buys their USDT (left × price), sells
        their base (left)."""
        out = Decimal(0)
        for o in self.orders.values():
            pair = self.spot_of(o.symbol)
            if pair is None or not o.is_open or o.price is None:
                continue
            left = o.qty - o.filled
            if o.side == "buy" and coin == pair[1]:
                out += left * o.price
            elif o.side == "sell" and coin == pair[0]:
                out += left
        return out

    def balance(self, coin: str) -> Decimal:
        """The wallet balance of ``coin`` (USDT: :attr:`wallet`)."""
        return self.wallet if coin == "USDT" else self.coins.get(coin, Decimal(0))

    def _execute_spot(
        self, o: FakeOrder, qty: Decimal, price: Decimal, pair: tuple[str, str], *, maker: bool
    ) -> None:
        base, quote = pair
        assert quote == "USDT", "the fake's spot wallet holds USDT as the quote"
        rate = self.spot_maker_rate if maker else self.spot_taker_rate
        notional = qty * price
        if o.side == "buy":
            fee = (qty * rate).quantize(Decimal("1e-12"), rounding=ROUND_HALF_EVEN).normalize()
            self.wallet -= notional
            self.coins[base] = self.coins.get(base, Decimal(0)) + qty - fee
            o.fee_ccy = base
        else:
            fee = (notional * rate).quantize(Decimal("1e-8"), rounding=ROUND_HALF_EVEN)
            self.coins[base] = self.coins.get(base, Decimal(0)) - qty
            self.wallet += notional - fee
            o.fee_ccy = quote
        now = _now_ms()
        o.filled += qty
        o.value += notional
        o.fee += fee
        o.status = "filled" if o.filled >= o.qty else "partially_filled"
        o.updated_ms = now
        self.fills.append(
            {
                "trade_id": str(next(self._tids)),
                "oid": o.oid,
                "cid": o.cid,
                "symbol": o.symbol,
                "side": o.side,
                "pos_side": "net",
                "qty": qty,
                "price": price,
                "fee": fee,
                "fee_ccy": o.fee_ccy,
                "rate": rate,
                "maker": maker,
                "pnl": Decimal(0),
                "ts": now,
                "order_qty": o.qty,
                "order_price": o.price,
                "order_kind": o.kind,
                "leaves": o.qty - o.filled,
                "spot": True,
            }
        )

    def execute(self, o: FakeOrder, qty: Decimal, price: Decimal, *, maker: bool) -> None:
        pair = self.spot_of(o.symbol)
        if pair is not None:
            self._execute_spot(o, qty, price, pair, maker=maker)
            return
        m = self.mult(o.symbol)
        notional = qty * m * price
        fee = self.fee(notional, maker)
        now = _now_ms()
        pos = self.positions.setdefault(self.pos_key(o), FakePosition(created_ms=now))
        sign = 1 if o.side == "buy" else -1
        if self.hedge:  # buy opens a long / closes a short
            opening = (o.pos_side == "long") == (o.side == "buy")
            d = qty if opening else -qty
            held_sign = 1 if o.pos_side == "long" else -1
        else:
            d = sign * qty
            held_sign = 1 if pos.qty > 0 else -1
        realised = Decimal(0)
        cur = pos.qty
        if cur == 0 or (cur > 0) == (d > 0):
            pos.entry = (abs(cur) * pos.entry + qty * price) / (abs(cur) + qty)
            pos.qty = cur + d
        else:
            closed = min(abs(cur), qty)
            realised = closed * m * (price - pos.entry) * held_sign
            pos.qty = cur + d
            if pos.qty == 0:
                pos.entry = Decimal(0)
            elif (pos.qty > 0) != (cur > 0):
                pos.entry = price
        pos.updated_ms = now
        self.wallet += realised - fee
        o.filled += qty
        o.value += notional
        o.fee += fee
        o.status = "filled" if o.filled >= o.qty else "partially_filled"
        o.updated_ms = now
        self.fills.append(
            {
                "trade_id": str(next(self._tids)),
                "oid": o.oid,
                "cid": o.cid,
                "symbol": o.symbol,
                "side": o.side,
                "pos_side": o.pos_side,
                "qty": qty,
                "price": price,
                "fee": fee,
                "fee_ccy": "USDT",
                "rate": self.maker_rate if maker else self.taker_rate,
                "maker": maker,
                "pnl": realised,
                "ts": now,
                "order_qty": o.qty,
                "order_price": o.price,
                "order_kind": o.kind,
                "leaves": o.qty - o.filled,
            }
        )

    def match_new(self, o: FakeOrder) -> None:
        """Match an incoming order against the top of the book."""
        bid, ask = self.books[o.symbol]
        top = ask if o.side == "buy" else bid
        crosses = o.kind == "market" or (
            o.price is not None and (o.price >= ask if o.side == "buy" else o.price <= bid)
        )
        if crosses and o.tif == "PostOnly":
            o.status, o.reject_reason = "cancelled", "EC_PostOnlyWillTakeLiquidity"
            return
        if crosses:
            cap = self.partial_next.pop(o.symbol, None)
            qty = o.qty if cap is None else min(o.qty, cap)
            self.execute(o, qty, top, maker=False)
        if o.is_open and (o.kind == "market" or o.tif == "IOC"):
            o.status = "cancelled"
            o.updated_ms = _now_ms()

    def resting(self, symbol: str) -> list[FakeOrder]:
        return [
            o
            for o in self.orders.values()
            if o.symbol == symbol and o.is_open and o.kind == "limit"
        ]

    def set_book(self, symbol: str, bid: str, ask: str) -> None:
        b, a = Decimal(bid), Decimal(ask)
        self.books[symbol] = (b, a)
        for o in self.resting(symbol):
            assert o.price is not None
            if (o.side == "buy" and o.price >= a) or (o.side == "sell" and o.price <= b):
                self.execute(o, o.qty - o.filled, o.price, maker=True)

    def trade(self, symbol: str, price: str, qty: str) -> None:
        px, left = Decimal(price), Decimal(qty)
        for o in self.resting(symbol):
            assert o.price is not None
            if left <= 0:
                break
            if (o.side == "buy" and o.price >= px) or (o.side == "sell" and o.price <= px):
                q = min(left, o.qty - o.filled)
                self.execute(o, q, o.price, maker=True)
                left -= q

    def upnl(self, symbol: str | None = None) -> Decimal:
        out = Decimal(0)
        for (sym, ps), p in self.positions.items():
            if p.qty == 0 or (symbol is not None and sym != symbol):
                continue
            sign = -1 if ps == "short" else 1
            out += sign * p.qty * self.mult(sym) * (self.mark(sym) - p.entry)
        return out

    def settle_funding(self, symbol: str, rate: str, mark: str, ts_ms: int) -> list[Decimal]:
        """Book funding on every open position of ``symbol``; the amounts (+ received)."""
        r, mk = Decimal(rate), Decimal(mark)
        out = []
        for (sym, ps), p in self.positions.items():
            if sym != symbol or p.qty == 0:
                continue
            signed = -p.qty if ps == "short" else p.qty
            amount = -(signed * self.mult(sym) * mk * r)
            self.wallet += amount
            out.append(amount)
            self.funding.append(
                {
                    "id": str(next(self._tids)),
                    "symbol": sym,
                    "pos_side": ps,
                    "qty": p.qty,
                    "signed": signed,
                    "mark": mk,
                    "rate": r,
                    "amount": amount,
                    "ts": ts_ms,
                    "wallet": self.wallet,
                }
            )
        return out


def _hmac(secret: str, payload: str) -> bytes:
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest()


BYBIT_LINK_ID = re.compile(r"^[A-Za-z0-9_-]{1,36}$")
"""Bybit ``orderLinkId``: at most 36 of letters, digits, ``-`` and ``_`` (v5 *Place Order*)."""
BYBIT_RECV_SLACK_MS = 1000
BYBIT_STATUS = {
    "new": "New",
    "partially_filled": "PartiallyFilled",
    "filled": "Filled",
    "cancelled": "Cancelled",
    "rejected": "Rejected",
}


BYBIT_SPOT_KEY = "spot:"
"""The engine's name of a Bybit spot market (``spot:BTCUSDT``): Bybit names its spot and
linear markets alike (``BTCUSDT``), the ``category`` tells them apart."""
BYBIT_SPOT_FEE = Decimal("0.001")
"""Bybit's spot fee for non-VIP accounts, maker and taker 0.1 % (no recording)."""


def bybit_rate_limited(reset_at_ms: int) -> Fault:
    """Bybit's per-UID rate limit: HTTP 200, ``retCode`` 10006 "Too many visits!", with the
    ``X-Bapi-Limit-*`` headers (``X-Bapi-Limit-Reset-Timestamp`` = ``reset_at_ms``, ms since
    the epoch)."""
    body = json.dumps(
        {
            "retCode": 10006,
            "retMsg": "Too many visits!",
            "result": {},
            "retExtInfo": {},
            "time": _now_ms(),
        }
    )
    headers = (
        ("X-Bapi-Limit", "10"),
        ("X-Bapi-Limit-Status", "0"),
        ("X-Bapi-Limit-Reset-Timestamp", str(reset_at_ms)),
    )
    return Fault("status", 200, body, headers)


class _AccountControls:
    """Test controls shared by the Bybit and OKX private fakes, on their :class:`Matching`
    engine under the server lock."""

    engine: Matching
    _lock: threading.Lock

    def deposit(self, coin: str, amount: str) -> None:
        """Credit ``amount`` of ``coin`` to the (unified / trading) account."""
        with self._lock:
            if coin == "USDT":
                self.engine.wallet += Decimal(amount)
            else:
                self.engine.coins[coin] = self.engine.coins.get(coin, Decimal(0)) + Decimal(amount)

    def settle_funding(self, symbol: str, rate: str, mark: str, ts_ms: int) -> list[Decimal]:
        """Funding settlement on the positions of ``symbol`` (the venue's id: Bybit
        ``BTCUSDT``, OKX ``BTC-USDT-SWAP``); the amounts booked (+ received)."""
        with self._lock:
            return self.engine.settle_funding(symbol, rate, mark, ts_ms)

    def orders_with_client_id(self, cid: str) -> list[FakeOrder]:
        """Orders with the venue client id ``cid`` (Bybit ``orderLinkId``, OKX ``clOrdId``;
        0 or 1: ids are unique)."""
        with self._lock:
            return [copy.copy(o) for o in self.engine.orders.values() if o.cid == cid]


class _BybitPrivate(_AccountControls):
    """Bybit v5 private REST (see :class:`FakeBybit`)."""

    routes: dict[str, Handler]
    requests: list[LoggedRequest]
    _lock: threading.Lock
    now_ms: int

    def _ok(self, result: Any) -> tuple[int, Any]:
        raise NotImplementedError

    def _err(self, msg: str, code: int = 10001) -> tuple[int, Any]:
        raise NotImplementedError

    def instrument(self, symbol: str) -> dict[str, Any]:
        raise NotImplementedError

    def _init_private(self, api_key: str, api_secret: str, wallet_usdt: str) -> None:
        self.api_key, self.api_secret = api_key, api_secret
        self._faults: dict[str, collections.deque[Fault]] = {}
        fees = {r["symbol"]: r for r in other_venue("bybit", "http_get_fee_rate")["result"]["list"]}
        # the recorded fee rates of BTCUSDT: maker 0.01 %, taker 0.06 %
        self.spot_markets = {x["symbol"]: x for x in self.instruments["spot"]["result"]["list"]}
        self.engine = Matching(
            maker_rate=Decimal(fees["BTCUSDT"]["makerFeeRate"]),
            taker_rate=Decimal(fees["BTCUSDT"]["takerFeeRate"]),
            wallet=Decimal(wallet_usdt),
            mult=lambda s: Decimal(1),
            spot_of=self._spot_of,
            spot_maker_rate=BYBIT_SPOT_FEE,
            spot_taker_rate=BYBIT_SPOT_FEE,
        )
        self._order_tpl = other_venue("bybit", "http_get_orders_realtime")["result"]["list"][0]
        self._exec_tpl = other_venue("bybit", "http_get_executions")["result"]["list"][0]
        self._pos_tpl = other_venue("bybit", "http_get_positions")["result"]["list"][0]
        self._wallet_tpl = other_venue("bybit", "http_get_wallet_balance")["result"]["list"][0]
        self._ack_tpl = other_venue("bybit", "ws_order_response")["data"]
        self.key_info: dict[str, Any] = other_venue("bybit", "http_get_user_query_api")["result"]
        """What ``GET /v5/user/query-api`` tells of the key: the recorded answer (readOnly 1,
        Wallet without Withdraw, 3 IPs bound) until :meth:`set_key_permissions`."""
        self.private_routes = {
            ("GET", "/v5/user/query-api"): self._query_api,
            ("GET", "/v5/asset/coin/query-info"): self._coin_info,
            ("GET", "/v5/account/info"): lambda q: (
                200,
                other_venue("bybit", "http_get_account_info"),
            ),
            ("POST", "/v5/order/create"): self._create,
            ("POST", "/v5/order/cancel"): self._cancel,
            ("GET", "/v5/order/realtime"): self._realtime,
            ("GET", "/v5/order/history"): self._history,
            ("GET", "/v5/execution/list"): self._executions,
            ("GET", "/v5/position/list"): self._positions,
            ("GET", "/v5/account/wallet-balance"): self._wallet,
            ("POST", "/v5/position/set-leverage"): self._set_leverage,
            ("GET", "/v5/account/transaction-log"): self._transaction_log,
        }

    def set_key_permissions(
        self,
        *,
        read_only: bool | None = None,
        withdraw: bool | None = None,
        ips: Sequence[str] | None = None,
        expired_at: str | None = None,
        deadline_day: int | None = None,
    ) -> None:
        """Change what ``GET /v5/user/query-api`` reports of the key (None keeps the recorded
        value): ``readOnly`` 1/0, ``Withdraw`` in the ``Wallet`` area or not (Bybit docs, *Get
        API Key Information*: Wallet holds AccountTransfer, SubMemberTransfer, Withdraw), the
        ``ips`` bound, ``expiredAt`` / ``deadlineDay``."""
        with self._lock:
            k = self.key_info
            if read_only is not None:
                k["readOnly"] = 1 if read_only else 0
            if withdraw is not None:
                wallet = [w for w in k["permissions"].get("Wallet", []) if w != "Withdraw"]
                k["permissions"]["Wallet"] = [*wallet, "Withdraw"] if withdraw else wallet
            if ips is not None:
                k["ips"] = list(ips)
            if expired_at is not None:
                k["expiredAt"] = expired_at
            if deadline_day is not None:
                k["deadlineDay"] = deadline_day

    def _query_api(self, q: dict[str, str]) -> tuple[int, Any]:
        """The recorded ``http_get_user_query_api`` answer with :attr:`key_info` as its result
        and the requesting key as ``apiKey`` (Bybit echoes it; the recording masks it)."""
        body = other_venue("bybit", "http_get_user_query_api")
        body["result"] = {**copy.deepcopy(self.key_info), "apiKey": self.api_key}
        return 200, body

    def _coin_info(self, q: dict[str, str]) -> tuple[int, Any]:
        """``fetch_currencies`` (ccxt calls it in ``load_markets`` when keys are set): one
        chain per coin of the served linear markets' quote and BTC/ETH (no recording:
        synthesized in the v5 *Get Coin Info* layout)."""
        rows = [
            {
                "name": c,
                "coin": c,
                "remainAmount": "1000000",
                "chains": [
                    {
                        "chainType": c,
                        "confirmation": "1",
                        "withdrawFee": "0",
                        "depositMin": "0",
                        "withdrawMin": "0",
                        "chain": c,
                        "chainDeposit": "1",
                        "chainWithdraw": "1",
                        "minAccuracy": "8",
                        "withdrawPercentageFee": "0",
                        "contractAddress": "",
                    }
                ],
            }
            for c in ("BTC", "ETH", "USDT")
        ]
        return self._ok({"rows": rows})

    instruments: dict[str, dict[str, Any]]

    # -- spot / linear names --------------------------------------------------------------
    @staticmethod
    def key(category: Any, symbol: Any) -> str:
        """The engine's name of ``symbol`` in ``category`` (spot: ``spot:BTCUSDT``)."""
        return f"{BYBIT_SPOT_KEY}{symbol}" if category == "spot" else str(symbol)

    @staticmethod
    def raw(key: str) -> str:
        """The venue's symbol of an engine name."""
        return key.removeprefix(BYBIT_SPOT_KEY)

    @staticmethod
    def category(key: str) -> str:
        """``spot`` or ``linear``."""
        return "spot" if key.startswith(BYBIT_SPOT_KEY) else "linear"

    def _spot_of(self, key: str) -> tuple[str, str] | None:
        if not key.startswith(BYBIT_SPOT_KEY):
            return None
        x = self.spot_markets[self.raw(key)]
        return str(x["baseCoin"]), str(x["quoteCoin"])

    # -- test controls ------------------------------------------------------------------
    def set_book(
        self,
        symbol: str,
        bid: str,
        ask: str,
        *,
        spot: bool = False,
        bid_qty: str = "1.000",
        ask_qty: str = "1.000",
    ) -> None:
        """Best bid/ask of ``symbol`` (the spot market with ``spot``; resting orders the
        quotes cross fill); ``bid_qty``/``ask_qty`` are the sizes on the websocket book."""
        key = self.key("spot" if spot else "linear", symbol)
        with self._lock:
            self.engine.set_book(key, bid, ask)
            self.ws_book_qty[key] = (bid_qty, ask_qty)
            self._ws_publish_book(key)
            self._ws_flush()

    def trade(
        self, symbol: str, price: str, qty: str, *, spot: bool = False, side: str = "sell"
    ) -> None:
        """A public trade at ``price`` of ``qty`` (taker ``side``; on the websocket):
        resting orders at or through it fill."""
        key = self.key("spot" if spot else "linear", symbol)
        with self._lock:
            self.engine.trade(key, price, qty)
            self._ws_publish_trade(key, price, qty, side)
            self._ws_flush()

    def check_auth(
        self, request: web.Request, raw_query: str, body: str
    ) -> tuple[int, Any, dict[str, str]] | None:
        """Bybit v5 HMAC: ``X-BAPI-SIGN`` = hex HMAC-SHA256(secret, timestamp + api key +
        recv window + (query string | JSON body)); a timestamp outside
        [server time − recv window, server time + 1 s) is refused with 10002, unexecuted."""
        h = request.headers
        key, ts, rw, sig = (
            h.get("X-BAPI-API-KEY"),
            h.get("X-BAPI-TIMESTAMP"),
            h.get("X-BAPI-RECV-WINDOW"),
            h.get("X-BAPI-SIGN"),
        )
        if not (key and ts and rw and sig):
            return (*self._err("Missing some parameters that must be filled in", 10001), {})
        if key != self.api_key:
            return (*self._err("API key is invalid.", 10003), {})
        signed = body if request.method == "POST" else raw_query
        if not hmac.compare_digest(_hmac(self.api_secret, ts + key + rw + signed).hex(), sig):
            return (
                *self._err("Error sign, please check your signature generation algorithm.", 10004),
                {},
            )
        now = _now_ms()
        if not (now - int(rw) <= int(ts) < now + BYBIT_RECV_SLACK_MS):
            msg = (
                "invalid request, please check your server timestamp or recv_window param. "
                f"req_timestamp[{ts}],server_timestamp[{now}],recv_window[{rw}]"
            )
            return (*self._err(msg, 10002), {})
        return None

    # -- shapes -------------------------------------------------------------------------

    def _order_row(self, o: FakeOrder) -> dict[str, Any]:
        row = copy.deepcopy(self._order_tpl)
        status = BYBIT_STATUS[o.status]
        if o.status == "cancelled" and o.filled > 0:
            status = "PartiallyFilledCanceled"
        leaves = o.qty - o.filled if o.is_open else Decimal(0)
        row.update(
            orderId=o.oid,
            orderLinkId=o.cid,
            symbol=self.raw(o.symbol),
            price=_s(o.price) if o.price is not None else "0",
            qty=_s(o.quote_qty if o.quote_qty is not None else o.qty),
            side="Buy" if o.side == "buy" else "Sell",
            positionIdx={"net": 0, "long": 1, "short": 2}[o.pos_side],
            orderStatus=status,
            cancelType="CancelByUser" if o.status == "cancelled" else "UNKNOWN",
            rejectReason=o.reject_reason or "EC_NoError",
            avgPrice=_s(o.value / o.filled) if o.filled else "",
            leavesQty=_s(leaves),
            leavesValue=_s(leaves * (o.price or 0)),
            cumExecQty=_s(o.filled),
            cumExecValue=_s(o.value),
            cumExecFee=_s(o.fee),
            timeInForce=o.tif if o.kind == "limit" else "IOC",
            orderType="Limit" if o.kind == "limit" else "Market",
            reduceOnly=o.reduce_only,
            createdTime=str(o.created_ms),
            updatedTime=str(o.updated_ms),
        )
        if self.category(o.symbol) == "spot":
            # spot rows: no position fields; ``marketUnit`` as sent ("" when not sent; ccxt
            # reads a market buy's qty as quote unless it is baseCoin — PR ccxt#29602)
            row.update(isLeverage="0", tpslMode="", marketUnit=o.market_unit, reduceOnly=False)
        return row

    def _page(self, rows: list[Any], q: dict[str, str], default: int, cap: int) -> dict[str, Any]:
        limit = min(int(q.get("limit", default)), cap)
        start = int(q.get("cursor") or 0)
        page = rows[start : start + limit]
        more = start + limit < len(rows)
        return {"list": page, "nextPageCursor": str(start + limit) if more else ""}

    # -- routes -------------------------------------------------------------------------
    def _create_spot(self, b: dict[str, Any]) -> tuple[int, Any]:
        """A spot order of the unified account (v5 *Place Order*, ``category=spot``): a
        limit's ``qty`` and a market sell's are base units; a market *buy*'s ``qty`` is quote
        (USDT to spend) unless ``marketUnit`` = ``baseCoin`` (and a sell's is quote with
        ``quoteCoin``): the base quantity is then qty / top price rounded down to
        ``basePrecision``. Spot error codes: 170137 quantity decimals, 170134 price decimals,
        170136 below ``minOrderQty``, 170140 below ``minOrderAmt``, 170131 insufficient
        balance (no borrowing: ``isLeverage`` 0), 170141 duplicate ``orderLinkId``."""
        sym = str(b.get("symbol"))
        inst = self.spot_markets.get(sym)
        if inst is None:
            return self._err("params error: symbol invalid", 10001)
        key = self.key("spot", sym)
        cid = str(b.get("orderLinkId") or "")
        if cid and not BYBIT_LINK_ID.match(cid):
            return self._err("params error: orderLinkId is invalid", 10001)
        if cid and any(o.cid == cid for o in self.engine.orders.values()):
            return self._err("Duplicate clientOrderId", 170141)
        if int(b.get("positionIdx", 0)) != 0:
            return self._err("params error: positionIdx is invalid for spot", 10001)
        lot = inst["lotSizeFilter"]
        step = Decimal(lot["basePrecision"])
        kind = str(b.get("orderType", "")).lower()
        side = str(b.get("side", "")).lower()
        qty = Decimal(str(b.get("qty", "0")))
        unit = str(b.get("marketUnit") or "")
        price = Decimal(str(b["price"])) if kind == "limit" else None
        if price is not None and price % Decimal(inst["priceFilter"]["tickSize"]) != 0:
            return self._err("Order price decimal too long.", 170134)
        bid, ask = self.engine.books[key]
        ref = price if price is not None else (ask if side == "buy" else bid)
        quote_qty = None
        if kind == "market" and (unit == "quoteCoin" or (unit == "" and side == "buy")):
            if qty % Decimal(lot["quotePrecision"]) != 0:
                return self._err("Market order amount decimal too long.", 170148)
            quote_qty = qty
            qty = (qty / ref / step).to_integral_value(ROUND_DOWN) * step
        elif qty % step != 0:
            return self._err("Order volume decimal too long.", 170137)
        if qty < Decimal(lot["minOrderQty"]):
            return self._err("Order quantity lower than the minimum.", 170136)
        if qty * ref < Decimal(lot["minOrderAmt"]):
            return self._err("Transaction amount lower than the minimum.", 170140)
        base, quote = str(inst["baseCoin"]), str(inst["quoteCoin"])
        coin, need = (quote, qty * ref) if side == "buy" else (base, qty)
        if need > self.engine.balance(coin) - self.engine.spot_locked(coin):
            return self._err("Insufficient balance.", 170131)
        now = _now_ms()
        o = FakeOrder(
            oid=self.engine.next_oid(lambda n: f"{n:019d}"),
            cid=cid,
            symbol=key,
            side=side,
            kind=kind,
            qty=qty,
            price=price,
            tif=str(b.get("timeInForce", "GTC")) if kind == "limit" else "IOC",
            reduce_only=False,
            pos_side="net",
            created_ms=now,
            updated_ms=now,
            quote_qty=quote_qty,
            market_unit=unit,
        )
        self.engine.orders[o.oid] = o
        self.engine.match_new(o)
        return self._ok({**self._ack_tpl, "orderId": o.oid, "orderLinkId": o.cid})

    def _create(self, b: dict[str, Any]) -> tuple[int, Any]:
        if b.get("category") == "spot":
            return self._create_spot(b)
        if b.get("category") != "linear":
            return self._err("params error: category is invalid")
        sym = b.get("symbol")
        try:
            inst = self.instrument(str(sym))
        except KeyError:
            return self._err("params error: symbol invalid", 10001)
        cid = str(b.get("orderLinkId") or "")
        if cid and not BYBIT_LINK_ID.match(cid):
            return self._err("params error: orderLinkId is invalid", 10001)
        if cid and any(o.cid == cid for o in self.engine.orders.values()):
            return self._err("OrderLinkedID is duplicate", 110072)
        lot = inst["lotSizeFilter"]
        qty = Decimal(str(b.get("qty", "0")))
        if qty < Decimal(lot["minOrderQty"]) or qty % Decimal(lot["qtyStep"]) != 0:
            return self._err("Qty invalid", 10001)
        kind = str(b.get("orderType", "")).lower()
        price = Decimal(str(b["price"])) if kind == "limit" else None
        if price is not None and price % Decimal(inst["priceFilter"]["tickSize"]) != 0:
            return self._err("Price invalid", 10001)
        idx = int(b.get("positionIdx", 0))
        if (idx != 0) != self.engine.hedge:
            return self._err("position idx not match position mode", 10001)
        side = str(b.get("side", "")).lower()
        px_ref = (
            price if price is not None else self.engine.books[str(sym)][1 if side == "buy" else 0]
        )
        lev = self.engine.leverage.get(str(sym), 10)
        if qty * px_ref / lev > self.engine.wallet:
            return self._err("ab not enough for new order", 110007)
        now = _now_ms()
        o = FakeOrder(
            oid=self.engine.next_oid(lambda n: f"{n:08x}-7b52-4ca9-ac2c-37e31ac55c94"),
            cid=cid,
            symbol=str(sym),
            side=side,
            kind=kind,
            qty=qty,
            price=price,
            tif=str(b.get("timeInForce", "GTC")) if kind == "limit" else "IOC",
            reduce_only=bool(b.get("reduceOnly", False)),
            pos_side={0: "net", 1: "long", 2: "short"}[idx],
            created_ms=now,
            updated_ms=now,
        )
        self.engine.orders[o.oid] = o
        self.engine.match_new(o)
        return self._ok({**self._ack_tpl, "orderId": o.oid, "orderLinkId": o.cid})

    def _find(self, q: dict[str, Any]) -> FakeOrder | None:
        key = self.key(q.get("category"), q.get("symbol"))
        for o in self.engine.orders.values():
            if o.symbol == key and (
                o.oid == q.get("orderId") or (o.cid and o.cid == q.get("orderLinkId"))
            ):
                return o
        return None

    def _cancel(self, b: dict[str, Any]) -> tuple[int, Any]:
        o = self._find(b)
        if o is None or not o.is_open:
            if b.get("category") == "spot":
                return self._err("Order does not exist.", 170213)
            return self._err("order not exists or too late to cancel", 110001)
        o.status, o.updated_ms = "cancelled", _now_ms()
        return self._ok({**self._ack_tpl, "orderId": o.oid, "orderLinkId": o.cid})

    def _select(self, q: dict[str, str], *, open_: bool) -> list[FakeOrder]:
        cat = q.get("category")
        rows = [
            o
            for o in self.engine.orders.values()
            if o.is_open == open_
            and self.category(o.symbol) == cat
            and (q.get("symbol") in (None, self.raw(o.symbol)))
            and (q.get("orderId") in (None, o.oid))
            and (q.get("orderLinkId") in (None, o.cid))
        ]
        return sorted(rows, key=lambda o: (o.created_ms, o.oid), reverse=True)

    def _realtime(self, q: dict[str, str]) -> tuple[int, Any]:
        """``openOnly`` 0 (default): open orders only; 1: the recent closed ones. Linear
        needs a symbol, settleCoin or baseCoin; spot lists every symbol without one."""
        cat = q.get("category")
        if cat not in ("linear", "spot"):
            return self._err("params error: category is invalid")
        if cat == "linear" and not (q.get("symbol") or q.get("settleCoin") or q.get("baseCoin")):
            return self._err("symbol or settleCoin or baseCoin is required", 10001)
        rows = self._select(q, open_=q.get("openOnly", "0") == "0")
        page = self._page([self._order_row(o) for o in rows], q, 20, 50)
        return self._ok({**page, "category": cat})

    def _history(self, q: dict[str, str]) -> tuple[int, Any]:
        """Closed orders (filled, cancelled, rejected), newest first."""
        cat = q.get("category")
        if cat not in ("linear", "spot"):
            return self._err("params error: category is invalid")
        rows = self._select(q, open_=False)
        page = self._page([self._order_row(o) for o in rows], q, 20, 50)
        return self._ok({**page, "category": cat})

    def _window(self, q: dict[str, str]) -> tuple[int, int] | str:
        """Bybit's 7-day rule: neither → the last 7 days; startTime alone → 7 days from it;
        endTime alone → 7 days up to it; both → at most 7 days apart."""
        start, end = _int(q, "startTime"), _int(q, "endTime")
        week = 7 * MS_PER_DAY
        if start is None and end is None:
            end = _now_ms()
            return end - week, end
        if end is None:
            assert start is not None
            return start, start + week
        if start is None:
            return end - week, end
        if end - start > week:
            return "The time range between startTime and endTime cannot exceed 7 days"
        return start, end

    def _executions(self, q: dict[str, str]) -> tuple[int, Any]:
        """Own trades of ``category`` (linear or spot). Spot rows: ``execFee`` in the coin
        received (``feeCurrency``: the base on a buy, USDT on a sell), no mark/index."""
        cat = q.get("category")
        if cat not in ("linear", "spot"):
            return self._err("params error: category is invalid")
        win = self._window(q)
        if isinstance(win, str):
            return self._err(win)
        lo, hi = win
        rows: list[dict[str, Any]] = []
        if q.get("execType", "Trade") == "Trade":
            for f in self.engine.fills:
                sym = self.raw(f["symbol"])
                if self.category(f["symbol"]) != cat:
                    continue
                if q.get("symbol") not in (None, sym) or not lo <= f["ts"] <= hi:
                    continue
                row = copy.deepcopy(self._exec_tpl)
                row.update(self._exec_fields(f))
                rows.append(row)
        rows.sort(key=lambda r: (int(r["execTime"]), r["seq"]), reverse=True)
        page = self._page(rows, q, 50, 100)
        return self._ok({**page, "category": "linear"})

    def _exec_fields(self, f: dict[str, Any]) -> dict[str, Any]:
        """The fields of an execution row (REST ``/v5/execution/list`` and the websocket
        ``execution`` topic name them alike) for the engine's fill ``f``."""
        sym = self.raw(f["symbol"])
        spot = self.category(f["symbol"]) == "spot"
        rate = f["rate"]
        mark = "" if spot else _s(self.engine.mark(f["symbol"]))
        return dict(
            symbol=sym,
            orderId=f["oid"],
            orderLinkId=f["cid"],
            side="Buy" if f["side"] == "buy" else "Sell",
            orderPrice=_s(f["order_price"]) if f["order_price"] is not None else "0",
            orderQty=_s(f["order_qty"]),
            leavesQty=_s(f["leaves"]),
            orderType="Limit" if f["order_kind"] == "limit" else "Market",
            execFee=_s(f["fee"]),
            execId=f"e0cbe81d-0f18-5866-9415-{int(f['trade_id']):012d}",
            execPrice=_s(f["price"]),
            execQty=_s(f["qty"]),
            execType="Trade",
            execValue=_s(f["qty"] * f["price"]),
            execTime=str(f["ts"]),
            isMaker=f["maker"],
            feeRate=_s(rate),
            feeCurrency=f["fee_ccy"],
            markPrice=mark,
            indexPrice=mark,
            closedSize="" if spot else (_s(f["qty"]) if f["pnl"] else "0"),
            seq=int(f["trade_id"]),
        )

    def _positions(self, q: dict[str, str]) -> tuple[int, Any]:
        """Every position the account has held (size 0 once closed, ``side`` "")."""
        if q.get("category") != "linear":
            return self._err("params error: category is invalid")
        if not (q.get("symbol") or q.get("settleCoin") or q.get("baseCoin")):
            return self._err("symbol or settleCoin or baseCoin is required", 10001)
        rows = []
        for (sym, ps), p in sorted(self.engine.positions.items()):
            if q.get("symbol") not in (None, sym):
                continue
            mark = self.engine.mark(sym)
            size = abs(p.qty)
            if ps == "net":
                side = "" if p.qty == 0 else ("Buy" if p.qty > 0 else "Sell")
            else:
                side = "" if p.qty == 0 else ("Buy" if ps == "long" else "Sell")
            sign = -1 if side == "Sell" else 1
            lev = self.engine.leverage.get(sym, 10)
            row = copy.deepcopy(self._pos_tpl)
            row.update(
                positionIdx={"net": 0, "long": 1, "short": 2}[ps],
                symbol=sym,
                side=side,
                size=_s(size),
                avgPrice=_s(p.entry),
                positionValue=_s(size * p.entry),
                leverage=str(lev),
                positionBalance=_s(size * p.entry / lev),
                markPrice=_s(mark),
                liqPrice="",
                bustPrice="",
                positionIM=_s(size * p.entry / lev),
                positionMM="0",
                takeProfit="0.00",
                stopLoss="0.00",
                unrealisedPnl=_s(sign * size * (mark - p.entry)),
                createdTime=str(p.created_ms),
                updatedTime=str(p.updated_ms),
            )
            rows.append(row)
        return self._ok({"list": rows, "nextPageCursor": "", "category": "linear"})

    def _wallet(self, q: dict[str, str]) -> tuple[int, Any]:
        """The UNIFIED account: USDT ``walletBalance``, ``equity`` = wallet + unrealised PnL,
        ``availableToWithdraw`` = equity − position IM − order IM (synthesized margin)."""
        if q.get("accountType") != "UNIFIED":
            return self._err("accountType only support UNIFIED.", 10001)
        e = self.engine
        upnl = e.upnl()
        pos_im = sum(
            (abs(p.qty) * p.entry / e.leverage.get(s, 10) for (s, _), p in e.positions.items()),
            Decimal(0),
        )
        ord_im = sum(
            (
                (o.qty - o.filled) * (o.price or 0) / e.leverage.get(o.symbol, 10)
                for o in e.orders.values()
                if o.is_open and e.spot_of(o.symbol) is None
            ),
            Decimal(0),
        )
        equity = e.wallet + upnl
        acct = copy.deepcopy(self._wallet_tpl)
        usdt = next(c for c in acct["coin"] if c["coin"] == "USDT")
        usdt.update(
            walletBalance=_s(e.wallet),
            equity=_s(equity),
            usdValue=_s(equity),
            unrealisedPnl=_s(upnl),
            availableToWithdraw=_s(equity - pos_im - ord_im),
            totalPositionIM=_s(pos_im),
            totalOrderIM=_s(ord_im),
            cumRealisedPnl="0",
        )
        coins = [usdt]
        usdt_locked = e.spot_locked("USDT")  # open spot buys hold their USDT
        usdt.update(
            locked=_s(usdt_locked),
            availableToWithdraw=_s(equity - pos_im - ord_im - usdt_locked),
        )
        for c, bal in sorted(e.coins.items()):
            if bal == 0:
                continue
            tpl = next((x for x in self._wallet_tpl["coin"] if x["coin"] == c), None)
            row = copy.deepcopy(tpl or self._wallet_tpl["coin"][0])
            locked = e.spot_locked(c)
            mark = next((e.mark(k) for k in e.books if self._spot_of(k) == (c, "USDT")), Decimal(0))
            row.update(
                coin=c,
                walletBalance=_s(bal),
                equity=_s(bal),
                usdValue=_s(bal * mark),
                locked=_s(locked),
                availableToWithdraw=_s(bal - locked),
                borrowAmount="0",
                accruedInterest="0",
                spotBorrow="0",
                unrealisedPnl="0",
                cumRealisedPnl="0",
            )
            coins.append(row)
        acct.update(
            coin=coins,
            totalEquity=_s(equity),
            totalWalletBalance=_s(e.wallet),
            totalMarginBalance=_s(equity),
            totalAvailableBalance=_s(equity - pos_im - ord_im),
            totalPerpUPL=_s(upnl),
            totalInitialMargin=_s(pos_im + ord_im),
        )
        return self._ok({"list": [acct]})

    def _set_leverage(self, b: dict[str, Any]) -> tuple[int, Any]:
        sym = str(b.get("symbol"))
        lev = int(Decimal(str(b.get("buyLeverage"))))
        if self.engine.leverage.get(sym, 10) == lev:
            return self._err("leverage not modified", 110043)
        self.engine.leverage[sym] = lev
        return self._ok({})

    def _transaction_log(self, q: dict[str, str]) -> tuple[int, Any]:
        """Funding settlements as ``SETTLEMENT`` rows (no recording: fields per the v5 docs,
        *Get Transaction Log*: ``funding`` > 0 received, < 0 paid; ``change`` = cashFlow +
        funding − fee); the 7-day window rule; newest first; ``limit`` ≤ 50."""
        win = self._window(q)
        if isinstance(win, str):
            return self._err(win)
        lo, hi = win
        rows = []
        for f in self.engine.funding:
            if q.get("type") not in (None, "SETTLEMENT") or not lo <= f["ts"] <= hi:
                continue
            if q.get("category") not in (None, "linear") or q.get("currency") not in (None, "USDT"):
                continue
            rows.append(
                {
                    "id": f"592324_{f['symbol']}_{f['id']}",
                    "symbol": f["symbol"],
                    "category": "linear",
                    "side": "Buy" if f["signed"] > 0 else "Sell",
                    "transactionTime": str(f["ts"]),
                    "type": "SETTLEMENT",
                    "qty": _s(abs(f["qty"])),
                    "size": _s(f["signed"]),
                    "currency": "USDT",
                    "tradePrice": _s(f["mark"]),
                    "funding": _s(f["amount"]),
                    "fee": "0",
                    "cashFlow": "0",
                    "change": _s(f["amount"]),
                    "cashBalance": _s(f["wallet"]),
                    "feeRate": _s(f["rate"]),
                    "bonusChange": "",
                    "tradeId": "",
                    "orderId": "",
                    "orderLinkId": "",
                }
            )
        rows.sort(key=lambda r: int(r["transactionTime"]), reverse=True)
        return self._ok(self._page(rows, q, 20, 50))


OKX_CL_ORD_ID = re.compile(r"^[A-Za-z0-9]{1,32}$")
"""OKX ``clOrdId``: letters and digits only, at most 32 (v5 *Place order*)."""
OKX_EXPIRE_MS = 30_000
OKX_STATE = {
    "new": "live",
    "partially_filled": "partially_filled",
    "filled": "filled",
    "cancelled": "canceled",
    "rejected": "canceled",
}


# -------------------------------------------------------------------------- Bybit websockets
BYBIT_WS_KINDS = {
    "/v5/public/linear": "linear",
    "/v5/public/spot": "spot",
    "/v5/private": "private",
}
"""ccxt.pro's Bybit endpoints below the host (``urls['api']['ws']``: public per category;
private ``contract`` / ``spot.unified`` are both ``/v5/private`` on a unified account)."""
BYBIT_PRIVATE_TOPICS = frozenset({"execution", "order", "position", "wallet"})
"""Private topics accepted (only ``execution`` is pushed: ccxt.pro's watch_my_trades)."""
BYBIT_WS_BOOK_TOPIC = "orderbook.1."  # ccxt.pro's watch_bids_asks: the level-1 book
BYBIT_WS_TRADE_TOPIC = "publicTrade."
BYBIT_WS_TICKER_TOPIC = "tickers."  # ccxt.pro's watch_tickers (LiveVenue.mark_prices)


class _BybitWs:
    """Bybit v5 websockets (see :class:`FakeBybit`); uses the private mixin's
    ``_exec_fields``/``category``, the fake's ``linear_symbols`` and ``_Loopback``'s
    ``_ws_schedule``."""

    _exec_fields: Callable[[dict[str, Any]], dict[str, Any]]
    category: Callable[[str], str]
    linear_symbols: Callable[[], set[str]]
    _ws_schedule: Callable[[WsMatch, Any], None]

    _lock: threading.Lock
    engine: Matching
    api_key: str
    api_secret: str
    spot_markets: dict[str, Any]
    ws_subscriptions: collections.Counter[str]
    ws_pings: int
    ws_logins: int

    def _init_ws(self) -> None:
        self.ws_book_qty: dict[str, tuple[str, str]] = {}
        self._ws_book_last: dict[str, tuple[str, str, str, str]] = {}
        self.ws_echo_auth_request = False
        """True: an auth refusal quotes the request (key, expires, signature), as ccxt's
        comments show Bybit doing; the recording does not."""
        self._ws_fill_n = 0
        self._ws_seq = itertools.count(1)
        self._ws_tpl = {
            n: other_venue("bybit", n)
            for n in (
                "ws_public_trade",
                "ws_orderbook_snapshot",
                "ws_orderbook_delta",
                "ws_account_execution",
                "ws_auth_success",
                "ws_auth_failure",
                "ws_subscription_ack",
                "ws_subscription_failure",
                "ws_ticker_linear",
            )
        }
        rec = self._ws_tpl["ws_ticker_linear"]
        self.ws_tickers: dict[str, dict[str, Any]] = {
            str(rec["data"]["symbol"]): {**rec["data"], "_ts": int(rec["ts"])}
        }
        """Linear ``tickers.<symbol>`` state by symbol (the fields of the last snapshot with
        every delta applied; ``_ts`` the message time, ms): BTCUSDT starts as the recorded
        ``ws_ticker_linear`` snapshot."""

    def set_ticker(self, symbol: str, ts_ms: int | None = None, **fields: str) -> None:
        """Change ``symbol``'s linear ticker fields (``markPrice``, ``indexPrice``,
        ``fundingRate``, ``nextFundingTime`` …) and push a ``delta`` carrying only them (as
        Bybit does) at ``ts_ms`` (default now). A symbol without a ticker yet starts as a
        relabelled copy of the recorded snapshot and is pushed as a ``snapshot``."""
        with self._lock:
            new = symbol not in self.ws_tickers
            if new:
                rec = self._ws_tpl["ws_ticker_linear"]["data"]
                self.ws_tickers[symbol] = {**rec, "symbol": symbol}
            state = self.ws_tickers[symbol]
            state.update(fields)
            state["_ts"] = _now_ms() if ts_ms is None else ts_ms
            topic = f"{BYBIT_WS_TICKER_TOPIC}{symbol}"
            if new:
                frame = self._ws_ticker_frame(symbol)
            else:
                tpl = self._ws_tpl["ws_ticker_linear"]
                frame = {
                    **tpl,
                    "topic": topic,
                    "type": "delta",
                    "data": {"symbol": symbol, **fields},
                    "cs": int(tpl["cs"]) + next(self._ws_seq),
                    "ts": state["_ts"],
                }
            self._ws_schedule(self._ws_public(symbol, topic), frame)

    def _ws_ticker_frame(self, symbol: str) -> dict[str, Any]:
        """``tickers.<symbol>`` snapshot (the recorded layout) of the symbol's state."""
        tpl = self._ws_tpl["ws_ticker_linear"]
        state = self.ws_tickers[symbol]
        data = {k: v for k, v in state.items() if k != "_ts"}
        return {
            **tpl,
            "topic": f"{BYBIT_WS_TICKER_TOPIC}{symbol}",
            "type": "snapshot",
            "data": data,
            "cs": int(tpl["cs"]) + next(self._ws_seq),
            "ts": state["_ts"],
        }

    @property
    def ws_url(self) -> str:
        """``ws://127.0.0.1:<port>``: the host part of ccxt.pro's Bybit urls (``make_exchange``
        puts ``/v5/public/<category>`` and ``/v5/private`` after it)."""
        port = getattr(self, "port", None)
        if port is None:
            raise RuntimeError("fake venue not started")
        return f"ws://127.0.0.1:{port}"

    def ws_kind(self, path: str) -> str | None:
        return BYBIT_WS_KINDS.get(path)

    def _ws_refusal(self, c: _WsClient, m: dict[str, Any], msg: str) -> dict[str, Any]:
        out = copy.deepcopy(self._ws_tpl["ws_subscription_failure"])
        out.update(ret_msg=msg, conn_id=c.conn_id, op=m.get("op"))
        if m.get("req_id") is not None:
            out["req_id"] = m["req_id"]
        return out

    def ws_message(self, c: _WsClient, text: str) -> list[Any]:
        """Bybit v5: ``ping`` (public: ``ret_msg`` pong; private: ``op`` pong), ``auth``
        (private endpoint), ``subscribe`` / ``unsubscribe`` (``args`` = topics; one bad topic
        refuses the request)."""
        try:
            m = json.loads(text)
        except ValueError:
            m = None
        if not isinstance(m, dict):
            return [self._ws_refusal(c, {}, "error:invalid op")]
        op, rid = m.get("op"), m.get("req_id")
        if op == "ping":
            self.ws_pings += 1
            if c.kind == "private":
                return [
                    {"req_id": rid, "op": "pong", "args": [str(_now_ms())], "conn_id": c.conn_id}
                ]
            pong = {"success": True, "ret_msg": "pong", "conn_id": c.conn_id, "op": "ping"}
            return [{**pong, "req_id": rid} if rid is not None else pong]
        if op == "auth":
            return [self._ws_auth(c, m)]
        if op in ("subscribe", "unsubscribe"):
            topics = [str(t) for t in m.get("args") or []]
            for t in topics:
                why = self._ws_topic_refusal(c, t) if op == "subscribe" else None
                if why is not None:
                    return [self._ws_refusal(c, m, why)]
            ack = copy.deepcopy(self._ws_tpl["ws_subscription_ack"])
            ack.update(conn_id=c.conn_id, op=op)
            ack.pop("req_id", None)
            if rid is not None:
                ack["req_id"] = rid
            if op == "unsubscribe":
                c.topics.difference_update(topics)
                return [ack]
            c.topics.update(topics)
            self.ws_subscriptions.update(topics)
            out: list[Any] = [ack]
            for t in topics:  # a level-1 book and a ticker start with a snapshot
                if t.startswith(BYBIT_WS_BOOK_TOPIC):
                    key = self._ws_key(c, t.removeprefix(BYBIT_WS_BOOK_TOPIC))
                    if key in self.engine.books:
                        out.append(self._ws_book_frame(key))
                sym = t.removeprefix(BYBIT_WS_TICKER_TOPIC)
                if (
                    t.startswith(BYBIT_WS_TICKER_TOPIC)
                    and sym in self.ws_tickers
                    and c.kind == "linear"
                ):
                    out.append(self._ws_ticker_frame(sym))
            return out
        return [self._ws_refusal(c, m, "error:invalid op")]

    def _ws_key(self, c: _WsClient, sym: str) -> str:
        return f"{BYBIT_SPOT_KEY}{sym}" if c.kind == "spot" else sym

    def _ws_auth(self, c: _WsClient, m: dict[str, Any]) -> dict[str, Any]:
        """Bybit v5 *Authentication*: ``args`` = [api key, expires (ms), signature], the
        signature hex HMAC-SHA256(secret, ``"GET/realtime" + expires``); ``expires`` must lie
        in the future. Refusals in the recorded ``ws_auth_failure`` layout: 10003 key, 10004
        sign, 10002 expired."""
        args = [str(a) for a in m.get("args") or []]
        why: tuple[int, str] | None = None
        if c.kind != "private":
            why = (10001, "error:auth on a public endpoint")
        elif len(args) != 3:
            why = (10001, "Params Error")
        elif args[0] != self.api_key:
            why = (10003, "Invalid apikey")
        elif not hmac.compare_digest(
            _hmac(self.api_secret, "GET/realtime" + args[1]).hex(), args[2]
        ):
            why = (10004, "Invalid sign")
        elif not args[1].isdigit() or int(args[1]) <= _now_ms():
            why = (10002, "request expired")
        if why is None:
            c.authed = True
            self.ws_logins += 1
            return {**self._ws_tpl["ws_auth_success"], "connId": c.conn_id}
        out = {**self._ws_tpl["ws_auth_failure"], "connId": c.conn_id}
        out.update(retCode=why[0], retMsg=why[1])
        if self.ws_echo_auth_request:
            out["request"] = {"op": "auth", "args": m.get("args")}
        return out

    def _ws_topic_refusal(self, c: _WsClient, topic: str) -> str | None:
        if c.kind == "private":
            if topic not in BYBIT_PRIVATE_TOPICS:
                return f"Invalid topic: {topic}"
            return None if c.authed else "Request not authorized"
        for prefix in (BYBIT_WS_TRADE_TOPIC, BYBIT_WS_BOOK_TOPIC, BYBIT_WS_TICKER_TOPIC):
            if topic.startswith(prefix):
                sym = topic.removeprefix(prefix)
                known = self.spot_markets if c.kind == "spot" else self.linear_symbols()
                return None if sym in known else f"Invalid symbol :[{topic}]"
        return f"Invalid topic: {topic}"

    def _ws_public(self, key: str, topic: str) -> WsMatch:
        kind = "spot" if key.startswith(BYBIT_SPOT_KEY) else "linear"
        return lambda c: c.kind == kind and topic in c.topics

    def _ws_book_frame(self, key: str) -> dict[str, Any]:
        """``orderbook.1.<symbol>`` snapshot (the recorded layout) of the engine's top."""
        bid, ask = self.engine.books[key]
        bq, aq = self.ws_book_qty.get(key, ("1.000", "1.000"))
        tpl = self._ws_tpl["ws_orderbook_snapshot"]
        seq = next(self._ws_seq)
        sym = key.removeprefix(BYBIT_SPOT_KEY)
        data = {**tpl["data"], "s": sym, "b": [[_s(bid), bq]], "a": [[_s(ask), aq]]}
        data.update(u=seq, seq=seq)
        return {**tpl, "topic": f"{BYBIT_WS_BOOK_TOPIC}{sym}", "ts": _now_ms(), "data": data}

    def _ws_publish_book(self, key: str) -> None:
        """A ``delta`` (the recorded ``ws_orderbook_delta`` layout: a level whose price left
        the top sent with size "0", the new level with its size) from the last published top;
        the first one a snapshot. Subscribers got a snapshot of the current top on
        subscribing, so every delta applies to what they hold."""
        sym = key.removeprefix(BYBIT_SPOT_KEY)
        match = self._ws_public(key, f"{BYBIT_WS_BOOK_TOPIC}{sym}")
        bid, ask = self.engine.books[key]
        bq, aq = self.ws_book_qty.get(key, ("1.000", "1.000"))
        now = (_s(bid), bq, _s(ask), aq)
        last = self._ws_book_last.get(key)
        self._ws_book_last[key] = now
        if last is None:
            self._ws_schedule(match, self._ws_book_frame(key))
            return
        sides = []
        for (old_px, old_q), (px, q) in (
            ((last[0], last[1]), now[:2]),
            ((last[2], last[3]), now[2:]),
        ):
            levels = [] if old_px == px else [[old_px, "0"]]
            if old_px != px or old_q != q:
                levels.append([px, q])
            sides.append(levels)
        tpl = self._ws_tpl["ws_orderbook_delta"]
        seq = next(self._ws_seq)
        data = {**tpl["data"], "s": sym, "b": sides[0], "a": sides[1], "u": seq, "seq": seq}
        frame = {**tpl, "topic": f"{BYBIT_WS_BOOK_TOPIC}{sym}", "ts": _now_ms(), "data": data}
        self._ws_schedule(match, frame)

    def _ws_publish_trade(self, key: str, price: str, qty: str, side: str) -> None:
        """``publicTrade.<symbol>`` (v5 topic name; the recorded frame's topic is the older
        ``trade.linear.<symbol>``, its fields are kept)."""
        tpl = self._ws_tpl["ws_public_trade"]
        sym = key.removeprefix(BYBIT_SPOT_KEY)
        now, n = _now_ms(), next(self._ws_seq)
        row = {**tpl["data"][0], "T": now, "s": sym, "v": qty, "p": price}
        row.update(S="Buy" if side.lower() == "buy" else "Sell", i=f"9dc75fca-4bdd-{n:012d}")
        topic = f"{BYBIT_WS_TRADE_TOPIC}{sym}"
        frame = {**tpl, "topic": topic, "ts": now, "data": [row]}
        self._ws_schedule(self._ws_public(key, topic), frame)

    def ws_private_frames(self) -> list[tuple[WsMatch, Any]]:
        """One ``execution`` message per new fill: the recorded ``ws_account_execution``
        with the fill's fields (as the REST execution list), ``category`` linear or spot."""
        out: list[tuple[WsMatch, Any]] = []
        new = self.engine.fills[self._ws_fill_n :]
        self._ws_fill_n = len(self.engine.fills)
        tpl = self._ws_tpl["ws_account_execution"]
        for f in new:
            row = {**tpl["data"][0], **self._exec_fields(f)}
            row["category"] = self.category(f["symbol"])
            frame = {
                **tpl,
                "id": f"386825804_{row['symbol']}_{row['seq']}",
                "creationTime": _now_ms(),
                "data": [row],
            }
            out.append((lambda c: c.kind == "private" and "execution" in c.topics, frame))
        return out


def okx_rate_limited() -> Fault:
    """OKX's rate limit: HTTP 429, ``{"code": "50011", "msg": "Too Many Requests"}`` (OKX
    sends no ``Retry-After``)."""
    return Fault(
        "status", 429, json.dumps({"code": "50011", "msg": "Too Many Requests", "data": []})
    )


class _OKXPrivate(_AccountControls):
    """OKX v5 private REST (see :class:`FakeOKX`)."""

    instruments: dict[str, dict[str, Any]]
    requests: list[LoggedRequest]
    _lock: threading.Lock

    @staticmethod
    def _ok(data: list[Any]) -> tuple[int, Any]:
        raise NotImplementedError

    @staticmethod
    def _err(code: str, msg: str, status: int = 200) -> tuple[int, Any]:
        raise NotImplementedError

    def _init_private(
        self, api_key: str, api_secret: str, passphrase: str, wallet_usdt: str
    ) -> None:
        self.api_key, self.api_secret, self.passphrase = api_key, api_secret, passphrase
        self._faults: dict[str, collections.deque[Fault]] = {}
        self.swaps = {x["instId"]: x for x in self.instruments["SWAP"]["data"]}
        self.spots = {x["instId"]: x for x in self.instruments["SPOT"]["data"]}
        # the recorded Lv1 SPOT fee rates (http_get_trade_fee_response: maker −0.0008, taker
        # −0.001; negative = charged)
        spot_fee = other_venue("okx", "http_get_trade_fee_response")["data"][0]
        assert spot_fee["instType"] == "SPOT"
        # OKX Lv1 USDT-margined swap fees (maker 0.02 %, taker 0.05 %): no recording here
        self.engine = Matching(
            maker_rate=Decimal("0.0002"),
            taker_rate=Decimal("0.0005"),
            wallet=Decimal(wallet_usdt),
            mult=lambda s: Decimal(self.swaps[s]["ctVal"]) if s in self.swaps else Decimal(1),
            spot_of=self._spot_of,
            spot_maker_rate=-Decimal(spot_fee["maker"]),
            spot_taker_rate=-Decimal(spot_fee["taker"]),
        )
        self._order_tpl = other_venue("okx", "http_get_orders_pending")["data"][0]
        self._ack_tpl = other_venue("okx", "http_place_order_response")
        self._fill_tpl = other_venue("okx", "http_transaction_detail")
        self._pos_tpl = other_venue("okx", "http_get_positions")["data"][0]
        self._bal_tpl = other_venue("okx", "http_get_account_balance")["data"][0]
        self.private_routes = {
            ("POST", "/api/v5/trade/order"): lambda b: self._place([b], batch=False),
            ("POST", "/api/v5/trade/batch-orders"): lambda b: self._place(b, batch=True),
            ("GET", "/api/v5/trade/order"): self._get_order,
            ("GET", "/api/v5/asset/currencies"): self._currencies,
            ("POST", "/api/v5/trade/cancel-order"): self._cancel,
            ("GET", "/api/v5/trade/orders-pending"): self._pending,
            ("GET", "/api/v5/trade/fills-history"): self._fills,
            ("GET", "/api/v5/account/positions"): self._positions,
            ("GET", "/api/v5/account/balance"): self._balance,
            ("GET", "/api/v5/account/bills-archive"): self._bills,
            ("POST", "/api/v5/account/set-leverage"): self._set_leverage,
            ("GET", "/api/v5/account/config"): self._account_config,
        }
        self.key_perm = "read_only,trade"
        """``perm`` of ``GET /api/v5/account/config``: a trading key without withdrawals until
        :meth:`set_key_permissions`."""
        self.key_ip = ""
        """``ip``: the IPs bound to the key, comma-separated; empty: none."""
        self.acct_lv = "2"
        """``acctLv``: 2 = spot and futures mode (1 spot, 3 multi-currency, 4 portfolio)."""

    def set_key_permissions(
        self,
        *,
        read_only: bool | None = None,
        withdraw: bool | None = None,
        ips: Sequence[str] | None = None,
    ) -> None:
        """Change what ``GET /api/v5/account/config`` reports of the key (None keeps the
        current value): ``read_only`` drops ``trade`` from ``perm`` (or puts it back),
        ``withdraw`` adds or drops ``withdraw``, ``ips`` the bound IPs."""
        with self._lock:
            perm = [p for p in self.key_perm.split(",") if p]
            if read_only is not None:
                perm = [p for p in perm if p != "trade"]
                perm = perm if read_only else [*perm, "trade"]
            if withdraw is not None:
                perm = [p for p in perm if p != "withdraw"]
                perm = [*perm, "withdraw"] if withdraw else perm
            order = ["read_only", "trade", "withdraw"]
            self.key_perm = ",".join(sorted(set(perm), key=order.index))
            if ips is not None:
                self.key_ip = ",".join(ips)

    def _account_config(self, q: dict[str, str]) -> tuple[int, Any]:
        """``GET /api/v5/account/config`` (ccxt ``private_get_account_config``; no recording:
        synthesized in the layout OKX documents, *Get account configuration*, as quoted in
        ccxt's ``fetch_accounts``): ``perm`` = :attr:`key_perm`, ``ip`` = :attr:`key_ip`,
        ``acctLv`` = :attr:`acct_lv`, ``posMode`` from the engine (:attr:`pos_mode`); the
        other fields are the documented example's."""
        return self._ok(
            [
                {
                    "acctLv": self.acct_lv,
                    "acctStpMode": "cancel_maker",
                    "autoLoan": False,
                    "ctIsoMode": "automatic",
                    "enableSpotBorrow": False,
                    "greeksType": "PA",
                    "feeType": "0",
                    "ip": self.key_ip,
                    "type": "0",
                    "kycLv": "3",
                    "label": "perpdesk test",
                    "level": "Lv1",
                    "levelTmp": "",
                    "liquidationGear": "-1",
                    "mainUid": "44705892343619584",
                    "mgnIsoMode": "automatic",
                    "opAuth": "1",
                    "perm": self.key_perm,
                    "posMode": self.pos_mode,
                    "roleType": "0",
                    "spotBorrowAutoRepay": False,
                    "spotOffsetType": "",
                    "spotRoleType": "0",
                    "spotTraderInsts": [],
                    "traderInsts": [],
                    "uid": "44705892343619584",
                    "settleCcy": "USDT",
                    "settleCcyList": ["USD", "USDC", "USDG"],
                }
            ]
        )

    def _currencies(self, q: dict[str, str]) -> tuple[int, Any]:
        """``fetch_currencies`` (ccxt calls it in ``load_markets`` when keys are set): one
        chain each for BTC, ETH, USDT (no recording: synthesized in the v5 *Get currencies*
        layout)."""
        return self._ok(
            [
                {
                    "ccy": c,
                    "name": c,
                    "chain": f"{c}-{c}",
                    "canDep": True,
                    "canWd": True,
                    "canInternal": True,
                    "minDep": "0.00000001",
                    "minWd": "0.001",
                    "maxWd": "1000000",
                    "wdTickSz": "8",
                    "minFee": "0.0001",
                    "maxFee": "0.001",
                    "mainNet": True,
                    "logoLink": "",
                }
                for c in ("BTC", "ETH", "USDT")
            ]
        )

    @property
    def pos_mode(self) -> str:
        """``net_mode`` (one-way) or ``long_short_mode`` (hedge: set ``engine.hedge``)."""
        return "long_short_mode" if self.engine.hedge else "net_mode"

    def _spot_of(self, inst_id: str) -> tuple[str, str] | None:
        x = self.spots.get(inst_id)
        return None if x is None else (str(x["baseCcy"]), str(x["quoteCcy"]))

    def inst_type(self, inst_id: str) -> str:
        """``SPOT`` or ``SWAP``."""
        return "SPOT" if inst_id in self.spots else "SWAP"

    # -- test controls ------------------------------------------------------------------
    def set_book(
        self,
        inst_id: str,
        bid: str,
        ask: str,
        *,
        spot: bool = False,
        bid_qty: str = "100",
        ask_qty: str = "100",
    ) -> None:
        """Best bid/ask of ``inst_id`` (resting orders the quotes cross fill; ``spot`` is
        only for symmetry with Bybit: OKX's spot ids differ from its swaps');
        ``bid_qty``/``ask_qty`` are the websocket book's sizes (contracts on a swap)."""
        with self._lock:
            self.engine.set_book(inst_id, bid, ask)
            self.ws_book_qty[inst_id] = (bid_qty, ask_qty)
            self._ws_publish_book(inst_id)
            self._ws_flush()

    def trade(
        self,
        inst_id: str,
        price: str,
        contracts: str,
        *,
        spot: bool = False,
        side: str = "sell",
    ) -> None:
        """A public trade of ``contracts`` (spot: base units) at ``price`` (taker ``side``;
        on the websocket): resting orders at or through it fill."""
        with self._lock:
            self.engine.trade(inst_id, price, contracts)
            self._ws_publish_trade(inst_id, price, contracts, side)
            self._ws_flush()

    def check_auth(
        self, request: web.Request, raw_query: str, body: str
    ) -> tuple[int, Any, dict[str, str]] | None:
        """OKX v5: ``OK-ACCESS-SIGN`` = base64 HMAC-SHA256(secret, timestamp + method +
        request path (with ``?query``) + body); key 50111, passphrase 50105, sign 50113
        (HTTP 401); a timestamp more than 30 s old → 50102, unexecuted."""
        h = request.headers
        key, ts = h.get("OK-ACCESS-KEY"), h.get("OK-ACCESS-TIMESTAMP")
        sig, phrase = h.get("OK-ACCESS-SIGN"), h.get("OK-ACCESS-PASSPHRASE")
        if not (key and ts and sig and phrase):
            return (*self._err("50103", "Request header OK-ACCESS-KEY can not be empty.", 401), {})
        if key != self.api_key:
            return (*self._err("50111", "Invalid OK-ACCESS-KEY.", 401), {})
        if phrase != self.passphrase:
            return (*self._err("50105", "Invalid OK-ACCESS-PASSPHRASE.", 401), {})
        path = request.path + (f"?{raw_query}" if raw_query else "")
        want = base64.b64encode(_hmac(self.api_secret, ts + request.method + path + body)).decode()
        if not hmac.compare_digest(want, sig):
            return (*self._err("50113", "Invalid Sign.", 401), {})
        sent = datetime.fromisoformat(ts.replace("Z", "+00:00"))
        if _now_ms() - int(sent.astimezone(UTC).timestamp() * 1000) > OKX_EXPIRE_MS:
            return (*self._err("50102", "Timestamp request expired.", 401), {})
        return None

    # -- shapes -------------------------------------------------------------------------

    def _order_row(self, o: FakeOrder) -> dict[str, Any]:
        row = copy.deepcopy(self._order_tpl)
        m = self.engine.mult(o.symbol)
        last = next((f for f in reversed(self.engine.fills) if f["oid"] == o.oid), None)
        row.update(
            accFillSz=_s(o.filled),
            avgPx=_s(o.value / (o.filled * m)) if o.filled else "",
            cTime=str(o.created_ms),
            clOrdId=o.cid,
            fee=_s(-o.fee),
            fillPx=_s(last["price"]) if last else "",
            fillSz=_s(last["qty"]) if last else "0",
            fillTime=str(last["ts"]) if last else "",
            tradeId=last["trade_id"] if last else "",
            instId=o.symbol,
            lever=str(self.engine.leverage.get(o.symbol, 10)),
            ordId=o.oid,
            ordType=o.kind if o.tif != "PostOnly" else "post_only",
            posSide=o.pos_side,
            px=_s(o.price) if o.price is not None else "",
            reduceOnly="true" if o.reduce_only else "false",
            side=o.side,
            state=OKX_STATE[o.status],
            cancelSource="1" if o.status == "cancelled" else "",
            sz=_s(o.quote_qty if o.quote_qty is not None else o.qty),
            tdMode="cross",
            uTime=str(o.updated_ms),
        )
        if o.kind == "limit" and o.tif == "IOC":
            row["ordType"] = "ioc"
        if o.symbol in self.spots:  # cash spot: no leverage or position side
            row.update(
                instType="SPOT",
                tdMode="cash",
                posSide="",
                lever="",
                ccy="",
                tgtCcy=o.market_unit,
                feeCcy=o.fee_ccy,
                rebateCcy=self.spots[o.symbol]["quoteCcy"],
            )
        return row

    def _ack(self, o_id: str, cid: str, code: str = "0", msg: str = "") -> dict[str, Any]:
        return {
            **self._ack_tpl,
            "ordId": o_id,
            "clOrdId": cid,
            "sCode": code,
            "sMsg": msg,
            "ts": str(_now_ms()),
        }

    # -- routes -------------------------------------------------------------------------
    def _check_spot(self, b: dict[str, Any]) -> tuple[str, str] | None:
        """A cash spot order (v5 *Place order*: ``tdMode`` cash, no ``posSide``; a market
        buy's ``sz`` is quote unless ``tgtCcy`` = base_ccy, a market sell's base unless
        quote_ccy; a base ``sz`` on ``lotSz`` and ≥ ``minSz``)."""
        inst = self.spots[str(b["instId"])]
        cid = str(b.get("clOrdId") or "")
        if cid and not OKX_CL_ORD_ID.match(cid):
            return "51000", "Parameter clOrdId error"
        if b.get("tdMode") != "cash":
            return "51000", "Parameter tdMode error"
        if b.get("posSide") not in (None, ""):
            return "51000", "Parameter posSide error"
        if cid and any(o.cid == cid for o in self.engine.orders.values()):
            return "51016", "Duplicated clOrdId"
        if not self._spot_quote_sized(b):
            sz = Decimal(str(b.get("sz", "0")))
            if sz < Decimal(inst["minSz"]):
                return "51020", "Order amount should be greater than the min available amount."
            if sz % Decimal(inst["lotSz"]) != 0:
                return "51121", "Order quantity must be a multiple of the lot size."
        if b.get("ordType") != "market":
            px = Decimal(str(b.get("px", "0")))
            if px <= 0 or px % Decimal(inst["tickSz"]) != 0:
                return "51000", "Parameter px error"
        return None

    @staticmethod
    def _spot_quote_sized(b: dict[str, Any]) -> bool:
        if b.get("ordType") != "market":
            return False
        tgt = b.get("tgtCcy") or ("quote_ccy" if b.get("side") == "buy" else "base_ccy")
        return bool(tgt == "quote_ccy")

    def _check(self, b: dict[str, Any]) -> tuple[str, str] | None:
        if str(b.get("instId")) in self.spots:
            return self._check_spot(b)
        inst = self.swaps.get(str(b.get("instId")))
        if inst is None:
            return "51001", "Instrument ID does not exist."
        cid = str(b.get("clOrdId") or "")
        if cid and not OKX_CL_ORD_ID.match(cid):
            return "51000", "Parameter clOrdId error"
        if b.get("tdMode") not in ("cross", "isolated"):
            return "51000", "Parameter tdMode error"
        pos_side = b.get("posSide")
        if self.engine.hedge and pos_side not in ("long", "short"):
            return "51000", "Parameter posSide error"
        if not self.engine.hedge and pos_side not in (None, "net"):
            return "51000", "Parameter posSide error"
        if cid and any(o.cid == cid for o in self.engine.orders.values()):
            return "51016", "Duplicated clOrdId"
        sz = Decimal(str(b.get("sz", "0")))
        if sz < Decimal(inst["minSz"]) or sz % Decimal(inst["lotSz"]) != 0:
            return "51121", "Order quantity must be a multiple of the lot size."
        if b.get("ordType") != "market":
            px = Decimal(str(b.get("px", "0")))
            if px <= 0 or px % Decimal(inst["tickSz"]) != 0:
                return "51000", "Parameter px error"
        return None

    def _place(self, items: Any, *, batch: bool) -> tuple[int, Any]:
        out, failed = [], 0
        for b in items if isinstance(items, list) else [items]:
            bad = self._check(b)
            if bad is None:
                inst_id = str(b["instId"])
                side = str(b["side"])
                kind = "market" if b["ordType"] == "market" else "limit"
                price = None if kind == "market" else Decimal(str(b["px"]))
                sz = Decimal(str(b["sz"]))
                px_ref = (
                    price
                    if price is not None
                    else self.engine.books[inst_id][1 if side == "buy" else 0]
                )
                quote_sz: Decimal | None = None
                pair = self._spot_of(inst_id)
                if pair is not None:
                    if self._spot_quote_sized(b):  # base = quote / top, down to lotSz
                        lot = Decimal(self.spots[inst_id]["lotSz"])
                        quote_sz, sz = sz, (sz / px_ref / lot).to_integral_value(ROUND_DOWN) * lot
                    coin, need = (pair[1], sz * px_ref) if side == "buy" else (pair[0], sz)
                    if need > self.engine.balance(coin) - self.engine.spot_locked(coin):
                        bad = ("51008", f"Order failed. Insufficient {coin} balance in account")
                else:
                    lev = self.engine.leverage.get(inst_id, 10)
                    if sz * self.engine.mult(inst_id) * px_ref / lev > self.engine.wallet:
                        bad = ("51008", "Order failed. Insufficient USDT margin in account")
            if bad is not None:
                failed += 1
                out.append(self._ack("", str(b.get("clOrdId") or ""), *bad))
                continue
            now = _now_ms()
            tif = {"post_only": "PostOnly", "ioc": "IOC", "fok": "IOC"}.get(b["ordType"], "GTC")
            o = FakeOrder(
                oid=self.engine.next_oid(lambda n: str(2497956918703120384 + n)),
                cid=str(b.get("clOrdId") or ""),
                symbol=inst_id,
                side=side,
                kind=kind,
                qty=sz,
                price=price,
                tif=tif,
                reduce_only=str(b.get("reduceOnly", "false")).lower() == "true",
                pos_side=str(b.get("posSide") or "net"),
                created_ms=now,
                updated_ms=now,
                quote_qty=quote_sz,
                market_unit=str(b.get("tgtCcy") or ""),
            )
            self.engine.orders[o.oid] = o
            self.engine.match_new(o)
            out.append(self._ack(o.oid, o.cid))
        if failed:
            msg = "All operations failed" if batch and failed == len(out) else "Operation failed."
            code = "1" if failed == len(out) else "2"
            return 200, {"code": code, "msg": msg, "data": out, "inTime": "", "outTime": ""}
        return self._ok(out)

    def _find(self, q: dict[str, Any]) -> FakeOrder | None:
        for o in self.engine.orders.values():
            if o.symbol == q.get("instId") and (
                o.oid == q.get("ordId") or (o.cid and o.cid == q.get("clOrdId"))
            ):
                return o
        return None

    def _get_order(self, q: dict[str, str]) -> tuple[int, Any]:
        if q.get("instId") not in self.swaps and q.get("instId") not in self.spots:
            return self._err("51001", "Instrument ID does not exist.")
        o = self._find(q)
        if o is None:
            return self._err("51603", "Order does not exist")
        return self._ok([self._order_row(o)])

    def _cancel(self, b: dict[str, Any]) -> tuple[int, Any]:
        o = self._find(b)
        cid = str(b.get("clOrdId") or "")
        if o is None:
            code, msg = "51400", "Order cancellation failed as the order does not exist."
        elif o.status == "filled":
            code, msg = "51402", "Order cancellation failed as the order has been completed."
        elif not o.is_open:
            code, msg = "51401", "Order cancellation failed as the order has been canceled."
        else:
            o.status, o.updated_ms = "cancelled", _now_ms()
            return self._ok([self._ack(o.oid, o.cid)])
        ack = self._ack(o.oid if o else "", cid, code, msg)
        return 200, {"code": "1", "msg": "Operation failed.", "data": [ack]}

    def _pending(self, q: dict[str, str]) -> tuple[int, Any]:
        rows = [
            o
            for o in self.engine.orders.values()
            if o.is_open
            and q.get("instId") in (None, o.symbol)
            and q.get("instType") in (None, self.inst_type(o.symbol))
        ]
        rows.sort(key=lambda o: (o.created_ms, o.oid), reverse=True)
        limit = min(int(q.get("limit", OKX_MAX_LIMIT)), OKX_MAX_LIMIT)
        return self._ok([self._order_row(o) for o in rows[:limit]])

    def _fills(self, q: dict[str, str]) -> tuple[int, Any]:
        """Newest first; ``begin``/``end`` on ``ts`` (inclusive); ``after``/``before`` =
        older/newer than that ``billId``; ``limit`` ≤ 100 (default 100)."""
        if not q.get("instType"):
            return self._err("51000", "Parameter instType error")
        begin, end = _int(q, "begin"), _int(q, "end")
        after, before = _int(q, "after"), _int(q, "before")
        rows = []
        for f in self.engine.fills:
            bill = int(f["trade_id"]) + 600_000_000
            kind = self.inst_type(f["symbol"])
            if q.get("instId") not in (None, f["symbol"]) or q["instType"] != kind:
                continue
            if (begin is not None and f["ts"] < begin) or (end is not None and f["ts"] > end):
                continue
            if (after is not None and bill >= after) or (before is not None and bill <= before):
                continue
            row = copy.deepcopy(self._fill_tpl)
            row.update(
                instType=kind,
                instId=f["symbol"],
                tradeId=f["trade_id"],
                ordId=f["oid"],
                clOrdId=f["cid"],
                billId=str(bill),
                tag="",
                fillPx=_s(f["price"]),
                fillSz=_s(f["qty"]),
                fillIdxPx=_s(self.engine.mark(f["symbol"])),
                fillPnl=_s(f["pnl"]),
                side=f["side"],
                posSide="" if kind == "SPOT" else f["pos_side"],
                execType="M" if f["maker"] else "T",
                feeCcy=f["fee_ccy"],  # spot: the coin received (the base on a buy)
                fee=_s(-f["fee"]),
                ts=str(f["ts"]),
                fillTime=str(f["ts"]),
            )
            rows.append(row)
        rows.sort(key=lambda r: int(r["billId"]), reverse=True)
        limit = min(int(q.get("limit", OKX_MAX_LIMIT)), OKX_MAX_LIMIT)
        return self._ok(rows[:limit])

    def _positions(self, q: dict[str, str]) -> tuple[int, Any]:
        """Open positions: ``pos`` in contracts, signed in net mode."""
        rows = []
        for (inst_id, ps), p in sorted(self.engine.positions.items()):
            if p.qty == 0 or q.get("instId") not in (None, inst_id):
                continue
            if q.get("instType") not in (None, "SWAP"):
                continue
            m = self.engine.mult(inst_id)
            mark = self.engine.mark(inst_id)
            sign = -1 if (ps == "short" or p.qty < 0) else 1
            size = abs(p.qty)
            lev = self.engine.leverage.get(inst_id, 10)
            notional = size * m * mark
            row = copy.deepcopy(self._pos_tpl)
            row.update(
                instId=inst_id,
                instType="SWAP",
                mgnMode="cross",
                posSide=ps,
                pos=_s(p.qty),
                baseBal="",
                ccy="USDT",
                posCcy="",
                lever=str(lev),
                last=_s(mark),
                markPx=_s(mark),
                idxPx=_s(mark),
                usdPx="1",
                liqPx="",
                avgPx=_s(p.entry),
                upl=_s(sign * size * m * (mark - p.entry)),
                notionalUsd=_s(notional),
                imr=_s(notional / lev),
                mmr=_s(notional * Decimal("0.004")),
                margin="",
                availPos="",
                quoteBal="",
                spotInUseCcy="",
                cTime=str(p.created_ms),
                uTime=str(p.updated_ms),
            )
            rows.append(row)
        return self._ok(rows)

    def _balance(self, q: dict[str, str]) -> tuple[int, Any]:
        """USDT: ``cashBal`` = wallet, ``eq`` = wallet + unrealised PnL, ``availEq`` = eq − IM
        of positions and open orders (synthesized margin)."""
        e = self.engine
        upnl = e.upnl()
        im = sum(
            (
                abs(p.qty) * e.mult(s) * e.mark(s) / e.leverage.get(s, 10)
                for (s, _), p in e.positions.items()
            ),
            Decimal(0),
        )
        frozen = sum(
            (
                (o.qty - o.filled)
                * e.mult(o.symbol)
                * (o.price or 0)
                / e.leverage.get(o.symbol, 10)
                for o in e.orders.values()
                if o.is_open and e.spot_of(o.symbol) is None
            ),
            Decimal(0),
        )
        eq = e.wallet + upnl
        acct = copy.deepcopy(self._bal_tpl)
        usdt = copy.deepcopy(acct["details"][0])
        now = str(_now_ms())
        usdt.update(
            ccy="USDT",
            cashBal=_s(e.wallet),
            eq=_s(eq),
            eqUsd=_s(eq),
            disEq=_s(eq),
            upl=_s(upnl),
            isoEq="0",
            isoUpl="0",
            frozenBal=_s(im + frozen),
            ordFrozen=_s(frozen),
            imr=_s(im),
            availBal=_s(e.wallet - im - frozen),
            availEq=_s(eq - im - frozen),
            uTime=now,
        )
        usdt_locked = e.spot_locked("USDT")
        usdt.update(
            frozenBal=_s(im + frozen + usdt_locked),
            ordFrozen=_s(frozen + usdt_locked),
            availBal=_s(e.wallet - im - frozen - usdt_locked),
            availEq=_s(eq - im - frozen - usdt_locked),
        )
        details = [usdt]
        for c, bal in sorted(e.coins.items()):  # spot coins: eq = cashBal, no margin
            if bal == 0:
                continue
            locked = e.spot_locked(c)
            mark = next((e.mark(k) for k in e.books if self._spot_of(k) == (c, "USDT")), Decimal(0))
            row = copy.deepcopy(acct["details"][0])
            row.update(
                ccy=c,
                cashBal=_s(bal),
                eq=_s(bal),
                eqUsd=_s(bal * mark),
                disEq=_s(bal * mark),
                upl="0",
                isoEq="0",
                isoUpl="0",
                frozenBal=_s(locked),
                ordFrozen=_s(locked),
                imr="0",
                availBal=_s(bal - locked),
                availEq=_s(bal - locked),
                uTime=now,
            )
            details.append(row)
        acct.update(details=details, totalEq=_s(eq), isoEq="0", uTime=now)
        return self._ok([acct])

    def _bills(self, q: dict[str, str]) -> tuple[int, Any]:
        """Funding bills (``type`` 8; no recording: fields per the v5 docs, *Get bills details
        (last 3 months)*: ``balChg`` > 0 received; subType 173 expense, 174 income), newest
        first; ``begin``/``end`` on ``ts``; ``after`` = older than that billId; ``limit`` ≤ 100."""
        begin, end, after = _int(q, "begin"), _int(q, "end"), _int(q, "after")
        rows = []
        for f in self.engine.funding:
            bill = int(f["id"]) + 700_000_000
            if q.get("type") not in (None, "8") or q.get("instType") not in (None, "SWAP"):
                continue
            if (begin is not None and f["ts"] < begin) or (end is not None and f["ts"] > end):
                continue
            if after is not None and bill >= after:
                continue
            rows.append(
                {
                    "bal": _s(f["wallet"]),
                    "balChg": _s(f["amount"]),
                    "billId": str(bill),
                    "ccy": "USDT",
                    "execType": "",
                    "fee": "0",
                    "from": "",
                    "instId": f["symbol"],
                    "instType": "SWAP",
                    "mgnMode": "cross",
                    "notes": "",
                    "ordId": "",
                    "pnl": _s(f["amount"]),
                    "posBal": "0",
                    "posBalChg": "0",
                    "px": _s(f["mark"]),
                    "subType": "174" if f["amount"] > 0 else "173",
                    "sz": _s(abs(f["qty"])),
                    "to": "",
                    "ts": str(f["ts"]),
                    "type": "8",
                }
            )
        rows.sort(key=lambda r: int(r["billId"]), reverse=True)
        limit = min(int(q.get("limit", OKX_MAX_LIMIT)), OKX_MAX_LIMIT)
        return self._ok(rows[:limit])

    def _set_leverage(self, b: dict[str, Any]) -> tuple[int, Any]:
        inst_id = str(b.get("instId"))
        if inst_id not in self.swaps:
            return self._err("51001", "Instrument ID does not exist.")
        self.engine.leverage[inst_id] = int(b["lever"])
        return self._ok(
            [
                {
                    "lever": str(b["lever"]),
                    "mgnMode": b.get("mgnMode"),
                    "instId": inst_id,
                    "posSide": "",
                }
            ]
        )


# ---------------------------------------------------------------------------- OKX websockets
OKX_WS_KINDS = {
    "/ws/v5/public": "public",
    "/ws/v5/private": "private",
    "/ws/v5/business": "business",
}
"""ccxt.pro's OKX endpoints below ``urls['api']['ws']`` (``.../ws/v5``)."""
OKX_WS_PUBLIC = frozenset({"trades", "bbo-tbt", "tickers", "mark-price", "funding-rate"})
OKX_INST_TYPES = frozenset({"ANY", "SPOT", "MARGIN", "SWAP", "FUTURES", "OPTION"})
OKX_LOGIN_PATH = "GET/users/self/verify"


class _OKXWs:
    """OKX v5 websockets (see :class:`FakeOKX`); uses the private mixin's ``_order_row``
    and ``inst_type`` and ``_Loopback``'s ``_ws_schedule``."""

    _order_row: Callable[[FakeOrder], dict[str, Any]]
    inst_type: Callable[[str], str]
    _ws_schedule: Callable[[WsMatch, Any], None]

    _lock: threading.Lock
    engine: Matching
    api_key: str
    api_secret: str
    passphrase: str
    swaps: dict[str, Any]
    spots: dict[str, Any]
    marks: dict[str, dict[str, Any]]
    funding_now: dict[str, dict[str, Any]]
    ws_subscriptions: collections.Counter[str]
    ws_pings: int
    ws_logins: int

    def _init_ws(self) -> None:
        self.ws_book_qty: dict[str, tuple[str, str]] = {}
        self._ws_fill_n = 0
        self._ws_order_seen: dict[str, tuple[str, Decimal]] = {}
        self._ws_seq = itertools.count(1)
        self._ws_tpl = {
            n: other_venue("okx", n) for n in ("ws_trades", "ws_bbo_tbt", "ws_tickers", "ws_orders")
        }

    @property
    def ws_url(self) -> str:
        """``ws://127.0.0.1:<port>/ws/v5``: ccxt.pro's ``urls['api']['ws']`` (it appends
        ``/public``, ``/private``, ``/business``)."""
        port = getattr(self, "port", None)
        if port is None:
            raise RuntimeError("fake venue not started")
        return f"ws://127.0.0.1:{port}/ws/v5"

    def ws_kind(self, path: str) -> str | None:
        return OKX_WS_KINDS.get(path)

    @staticmethod
    def _ws_error(c: _WsClient, code: str, msg: str) -> dict[str, Any]:
        return {"event": "error", "code": code, "msg": msg, "connId": c.conn_id}

    def ws_message(self, c: _WsClient, text: str) -> list[Any]:
        """OKX v5: the text ``ping`` → ``pong``; ``login``; ``subscribe`` / ``unsubscribe``
        (``args`` = [{channel, instId | instType}], one answer per argument)."""
        if text == "ping":
            self.ws_pings += 1
            return ["pong"]
        try:
            m = json.loads(text)
        except ValueError:
            m = None
        if not isinstance(m, dict):
            return [self._ws_error(c, "60012", "Invalid request")]
        op = m.get("op")
        if op == "login":
            args = m.get("args") or [{}]
            return [self._ws_login(c, args[0] if isinstance(args[0], dict) else {})]
        if op not in ("subscribe", "unsubscribe"):
            return [self._ws_error(c, "60012", f"Invalid request: op {op!r}")]
        out: list[Any] = []
        for arg in m.get("args") or []:
            topic, why = self._ws_topic(c, arg)
            if why is not None:
                out.append(why)
                continue
            assert topic is not None
            out.append({"event": op, "arg": arg, "connId": c.conn_id})
            if op == "unsubscribe":
                c.topics.discard(topic)
                continue
            c.topics.add(topic)
            self.ws_subscriptions[topic] += 1
            inst = str(arg.get("instId"))
            if arg.get("channel") in ("bbo-tbt", "tickers") and inst in self.engine.books:
                out.append(self._ws_book_frame(str(arg["channel"]), inst))
            if arg.get("channel") in ("mark-price", "funding-rate") and inst in self.swaps:
                frame = self._ws_mark_frame(str(arg["channel"]), inst)
                if frame is not None:  # OKX pushes the current value on subscribing
                    out.append(frame)
        return out

    def _ws_mark_frame(self, channel: str, inst: str) -> dict[str, Any] | None:
        """``mark-price`` (the recorded ``http_get_mark_price`` item: the websocket item has
        the same fields) or ``funding-rate`` (the recorded ``ws_funding_rate`` layout) of
        ``inst`` from :attr:`marks` / :attr:`funding_now`; None when the fake has none."""
        src = self.marks if channel == "mark-price" else self.funding_now
        row = src.get(inst)
        if row is None:
            return None
        return {"arg": {"channel": channel, "instId": inst}, "data": [dict(row)]}

    def set_mark(self, inst_id: str, mark_px: str, ts_ms: int | None = None) -> None:
        """``inst_id``'s mark price (also served by REST ``mark-price``), pushed on
        ``mark-price`` at ``ts_ms`` (default now)."""
        with self._lock:
            row = {"instType": "SWAP", "instId": inst_id, "markPx": mark_px}
            row["ts"] = str(_now_ms() if ts_ms is None else ts_ms)
            self.marks[inst_id] = row
            frame = self._ws_mark_frame("mark-price", inst_id)
            self._ws_schedule(self._ws_public(f"mark-price:{inst_id}"), frame)

    def set_funding_now(
        self, inst_id: str, rate: str, funding_time_ms: int, ts_ms: int | None = None
    ) -> None:
        """``inst_id``'s current funding (``fundingRate`` to be settled at ``fundingTime``;
        ``nextFundingTime`` one 8 h interval later; also served by REST ``funding-rate``),
        pushed on ``funding-rate`` at ``ts_ms`` (default now)."""
        with self._lock:
            funding = self.funding_now
            base = funding.get(inst_id) or other_venue("okx", "ws_funding_rate")["data"][0]
            row = {**base, "instId": inst_id, "fundingRate": rate}
            row.update(fundingTime=str(funding_time_ms))
            row["nextFundingTime"] = str(funding_time_ms + 8 * 3_600_000)
            row["ts"] = str(_now_ms() if ts_ms is None else ts_ms)
            funding[inst_id] = row
            frame = self._ws_mark_frame("funding-rate", inst_id)
            self._ws_schedule(self._ws_public(f"funding-rate:{inst_id}"), frame)

    def _ws_login(self, c: _WsClient, a: dict[str, Any]) -> dict[str, Any]:
        """OKX v5 *Login*: ``sign`` = base64 HMAC-SHA256(secret, timestamp + ``GET`` +
        ``/users/self/verify``), ``timestamp`` in Unix seconds, refused 30 s after it;
        60005 key, 60024 passphrase, 60007 sign, 60006 expired, 60004 bad timestamp."""
        ts = str(a.get("timestamp", ""))
        if c.kind == "public":
            return self._ws_error(c, "60012", "Invalid request: login on the public endpoint")
        if a.get("apiKey") != self.api_key:
            return self._ws_error(c, "60005", "Invalid apiKey")
        if a.get("passphrase") != self.passphrase:
            return self._ws_error(c, "60024", "Wrong passphrase")
        try:
            sent_ms = int(float(ts) * 1000)
        except ValueError:
            return self._ws_error(c, "60004", "Invalid timestamp")
        want = base64.b64encode(_hmac(self.api_secret, ts + OKX_LOGIN_PATH)).decode()
        if not hmac.compare_digest(want, str(a.get("sign", ""))):
            return self._ws_error(c, "60007", "Invalid sign")
        if abs(_now_ms() - sent_ms) > OKX_EXPIRE_MS:
            return self._ws_error(c, "60006", "Timestamp request expired")
        c.authed = True
        self.ws_logins += 1
        return {"event": "login", "code": "0", "msg": "", "connId": c.conn_id}

    def _ws_topic(self, c: _WsClient, arg: Any) -> tuple[str | None, dict[str, Any] | None]:
        """(topic, None) for a valid subscription argument, else (None, the refusal)."""
        if not isinstance(arg, dict):
            return None, self._ws_error(c, "60012", "Invalid request")
        ch, inst = str(arg.get("channel")), arg.get("instId")
        if c.kind == "public" and ch in OKX_WS_PUBLIC:
            if inst in self.swaps or inst in self.spots:
                return f"{ch}:{inst}", None
        elif c.kind == "private" and ch == "orders":
            if not c.authed:
                return None, self._ws_error(c, "60011", "Please log in")
            kind = str(arg.get("instType"))
            if kind in OKX_INST_TYPES:
                return ":".join(["orders", kind, *([str(inst)] if inst else [])]), None
        return None, self._ws_error(
            c, "60018", f"Wrong URL or channel:{ch},instId:{inst} doesn't exist."
        )

    @staticmethod
    def _ws_public(topic: str) -> WsMatch:
        return lambda c: c.kind == "public" and topic in c.topics

    def _ws_book_frame(self, channel: str, inst: str) -> dict[str, Any]:
        """``bbo-tbt`` (the recorded layout: [px, sz, "0", orders]) or ``tickers`` (the
        recorded item relabelled) of the engine's top; sizes in contracts on a swap."""
        bid, ask = self.engine.books[inst]
        bq, aq = self.ws_book_qty.get(inst, ("100", "100"))
        now, n = str(_now_ms()), next(self._ws_seq)
        if channel == "bbo-tbt":
            tpl = self._ws_tpl["ws_bbo_tbt"]
            row = {**tpl["data"][0], "asks": [[_s(ask), aq, "0", "1"]]}
            row.update(bids=[[_s(bid), bq, "0", "1"]], ts=now, seqId=n)
        else:
            tpl = self._ws_tpl["ws_tickers"]
            row = {**tpl["data"][0], "instType": self.inst_type(inst), "instId": inst}
            row.update(askPx=_s(ask), askSz=aq, bidPx=_s(bid), bidSz=bq, ts=now)
        return {"arg": {"channel": channel, "instId": inst}, "data": [row]}

    def _ws_publish_book(self, inst: str) -> None:
        for ch in ("bbo-tbt", "tickers"):
            self._ws_schedule(self._ws_public(f"{ch}:{inst}"), self._ws_book_frame(ch, inst))

    def _ws_publish_trade(self, inst: str, price: str, qty: str, side: str) -> None:
        """``trades`` (the recorded item relabelled; ``sz`` in contracts on a swap)."""
        tpl = self._ws_tpl["ws_trades"]
        n = next(self._ws_seq)
        row = {**tpl["data"][0], "instId": inst, "tradeId": str(130639474 + n), "px": price}
        row.update(sz=qty, side=side.lower(), ts=str(_now_ms()), count="1")
        frame = {"arg": {"channel": "trades", "instId": inst}, "data": [row]}
        self._ws_schedule(self._ws_public(f"trades:{inst}"), frame)

    def _ws_orders_match(self, inst: str) -> WsMatch:
        kind = self.inst_type(inst)
        wanted = {f"orders:{k}" for k in ("ANY", kind)} | {
            f"orders:{k}:{inst}" for k in ("ANY", kind)
        }
        return lambda c: c.kind == "private" and bool(wanted & c.topics)

    def ws_private_frames(self) -> list[tuple[WsMatch, Any]]:
        """``orders`` channel messages: one per new fill (the order as it stood after that
        fill, with ``tradeId``, ``fillPx``, ``fillSz`` in contracts, ``fillTime``,
        ``execType`` M/T and ``fillFee``/``fillFeeCcy`` — OKX documents both, negative =
        charged; the recording has neither), and one per other state change (live,
        canceled) with an empty ``tradeId``, as OKX pushes them."""
        out: list[tuple[WsMatch, Any]] = []
        fills = self.engine.fills
        new = list(range(self._ws_fill_n, len(fills)))
        self._ws_fill_n = len(fills)
        tpl = self._ws_tpl["ws_orders"]
        filled_now: set[str] = set()
        for i in new:
            f = fills[i]
            o = self.engine.orders[f["oid"]]
            filled_now.add(o.oid)
            upto = [x for x in fills[: i + 1] if x["oid"] == o.oid]
            acc = sum((x["qty"] for x in upto), Decimal(0))
            value = sum((x["qty"] * x["price"] for x in upto), Decimal(0))
            row = self._ws_order_fields(tpl, o)
            row.update(
                accFillSz=_s(acc),
                avgPx=_s(value / acc),
                state="filled" if acc >= o.qty else "partially_filled",
                fee=_s(-sum((x["fee"] for x in upto), Decimal(0))),
                fillPx=_s(f["price"]),
                fillSz=_s(f["qty"]),
                fillTime=str(f["ts"]),
                tradeId=f["trade_id"],
                execType="M" if f["maker"] else "T",
                fillFee=_s(-f["fee"]),
                fillFeeCcy=f["fee_ccy"],
                fillPnl=_s(f["pnl"]),
                uTime=str(f["ts"]),
            )
            frame = {"arg": {"channel": "orders", "instType": row["instType"]}, "data": [row]}
            out.append((self._ws_orders_match(o.symbol), frame))
        for o in self.engine.orders.values():
            snap = (o.status, o.filled)
            if self._ws_order_seen.get(o.oid) == snap:
                continue
            self._ws_order_seen[o.oid] = snap
            if o.oid in filled_now and o.status != "cancelled":
                continue
            row = self._ws_order_fields(tpl, o)
            row.update(fillPx="", fillSz="0", fillTime="", tradeId="", execType="")
            row.update(fillFee="0", fillFeeCcy="", fillPnl="0")
            frame = {"arg": {"channel": "orders", "instType": row["instType"]}, "data": [row]}
            out.append((self._ws_orders_match(o.symbol), frame))
        return out

    def _ws_order_fields(self, tpl: dict[str, Any], o: FakeOrder) -> dict[str, Any]:
        """The recorded ``ws_orders`` item with the order's fields of the REST order row."""
        row = copy.deepcopy(tpl["data"][0])
        rest = self._order_row(o)
        row.update({k: v for k, v in rest.items() if k in row})
        row["instType"] = self.inst_type(o.symbol)
        return row


# ------------------------------------------------------------------------------------ Bybit
BYBIT_CAPTURE = "BYBIT.jsonl.zst"
BYBIT_MAX_LIMIT = 200


class FakeBybit(_BybitWs, _BybitPrivate, _Loopback):
    """Bybit v5 public and private REST (module docstring). ``now_ms`` is the server's clock
    for the public data; signed requests are checked against the wall clock."""

    def __init__(
        self,
        now_ms: int,
        *,
        api_key: str = "fake-bybit-key",
        api_secret: str = "fake-bybit-secret",
        wallet_usdt: str = "10000",
    ) -> None:
        super().__init__()
        self.now_ms = now_ms
        self.instruments: dict[str, dict[str, Any]] = {
            "linear": cryptofeed_http(BYBIT_CAPTURE, "category=linear"),
            "spot": cryptofeed_http(BYBIT_CAPTURE, "category=spot"),
            "inverse": other_venue("bybit", "http_get_instruments_inverse"),
            "option": other_venue("bybit", "http_get_instruments_option"),
        }
        self.tickers: dict[str, dict[str, Any]] = bybit_ws_tickers()
        # True: answer the *oldest* ``limit`` rows of a funding window (not what Bybit does)
        self.oldest_rows_first = False
        rec = other_venue("bybit", "http_get_funding_history")["result"]["list"]
        self.funding: dict[str, list[dict[str, str]]] = {}
        self.set_funding(
            "BTCUSDT", [(int(r["fundingRateTimestamp"]), r["fundingRate"]) for r in rec]
        )
        self.routes = {
            "/v5/market/time": self._time,
            "/v5/market/instruments-info": self._instruments,
            "/v5/market/tickers": self._tickers,
            "/v5/market/open-interest": self._open_interest,
            "/v5/market/funding/history": self._funding_history,
        }
        self._init_private(api_key, api_secret, wallet_usdt)
        self._init_ws()

    # -- configuration ----------------------------------------------------------------
    def linear_symbols(self) -> set[str]:
        """Symbols of the served linear instruments."""
        return {x["symbol"] for x in self.instruments["linear"]["result"]["list"]}

    def instrument(self, symbol: str) -> dict[str, Any]:
        """The served linear instrument of ``symbol``."""
        for x in self.instruments["linear"]["result"]["list"]:
            if x["symbol"] == symbol:
                return x
        raise KeyError(symbol)

    def set_funding(self, symbol: str, rows: Sequence[tuple[int, str]]) -> None:
        """Funding history of ``symbol``: (settlement time ms, rate string) pairs."""
        self.funding[symbol] = sorted(
            (
                {"symbol": symbol, "fundingRate": r, "fundingRateTimestamp": str(int(t))}
                for t, r in rows
            ),
            key=lambda r: int(r["fundingRateTimestamp"]),
        )

    # -- routes -----------------------------------------------------------------------
    def _ok(self, result: Any) -> tuple[int, Any]:
        return 200, {
            "retCode": 0,
            "retMsg": "OK",
            "result": result,
            "retExtInfo": {},
            "time": self.now_ms,
        }

    def _err(self, msg: str, code: int = 10001) -> tuple[int, Any]:
        return 200, {
            "retCode": code,
            "retMsg": msg,
            "result": {},
            "retExtInfo": {},
            "time": self.now_ms,
        }

    def not_found(self, path: str) -> tuple[int, Any]:
        return 404, {"retCode": 10404, "retMsg": f"path {path} not found"}

    def _time(self, q: dict[str, str]) -> tuple[int, Any]:
        s = self.now_ms // 1000
        return self._ok({"timeSecond": str(s), "timeNano": str(self.now_ms * 1_000_000)})

    def _instruments(self, q: dict[str, str]) -> tuple[int, Any]:
        cat = q.get("category")
        if cat not in self.instruments:
            return self._err("params error: category is invalid")
        body = copy.deepcopy(self.instruments[cat])
        result = body["result"]
        items = result["list"]
        if q.get("status") == "PreLaunch" or q.get("cursor"):
            items = []  # nothing pre-launch, one page only (synthesized)
        if q.get("symbol"):
            items = [x for x in items if x["symbol"] == q["symbol"]]
        if q.get("baseCoin") and cat == "option":
            items = [x for x in items if x.get("baseCoin") == q["baseCoin"]]
        result.update(category=cat, list=items, nextPageCursor="")
        return self._ok(result)

    def _ticker_rows(self, symbol: str | None) -> list[dict[str, Any]]:
        rows = [
            {k: v for k, v in t.items() if k != "_ts"}
            for s, t in sorted(self.tickers.items())
            if symbol is None or s == symbol
        ]
        return rows

    def _tickers(self, q: dict[str, str]) -> tuple[int, Any]:
        cat = q.get("category")
        if cat not in ("linear", "inverse", "spot", "option"):
            return self._err("params error: category is invalid")
        sym = q.get("symbol")
        if sym is not None and cat == "linear" and sym not in self.linear_symbols():
            return self._err("params error: symbol invalid")
        rows = self._ticker_rows(sym) if cat == "linear" else []
        return self._ok({"category": cat, "list": rows})

    def _open_interest(self, q: dict[str, str]) -> tuple[int, Any]:
        sym, cat = q.get("symbol"), q.get("category")
        if cat != "linear" or sym not in self.tickers:
            return self._err("params error: symbol invalid")
        t = self.tickers[sym]
        hour = 3_600_000
        row = {"openInterest": t["openInterest"], "timestamp": str(t["_ts"] // hour * hour)}
        return self._ok({"symbol": sym, "category": cat, "list": [row], "nextPageCursor": ""})

    def _funding_history(self, q: dict[str, str]) -> tuple[int, Any]:
        sym, cat = q.get("symbol"), q.get("category")
        if cat not in ("linear", "inverse"):
            return self._err("params error: category is invalid")
        if sym not in self.linear_symbols():
            return self._err("params error: Symbol Is Invalid")
        start, end = _int(q, "startTime"), _int(q, "endTime")
        if start is not None and end is None:
            return self._err("params error: endTime is required when startTime is passed")
        limit = min(int(q.get("limit", BYBIT_MAX_LIMIT)), BYBIT_MAX_LIMIT)
        end = self.now_ms if end is None else end
        rows = [
            r
            for r in self.funding.get(sym, [])
            if (start is None or int(r["fundingRateTimestamp"]) >= start)
            and int(r["fundingRateTimestamp"]) <= end
        ]
        if self.oldest_rows_first:  # a deliberately wrong server, for the downloader's guard
            rows = rows[:limit]
        newest_first = list(reversed(rows))[:limit]
        return self._ok({"category": cat, "list": newest_first})


# -------------------------------------------------------------------------------------- OKX
OKX_MAX_LIMIT = 100
OKX_CAPTURE = "OKX.jsonl.zst"


def _okx_hype_instrument(eth: dict[str, Any]) -> dict[str, Any]:
    """HYPE-USDT-SWAP as a relabelled copy of the recorded ETH-USDT-SWAP (synthesized)."""
    return {
        **eth,
        "instId": "HYPE-USDT-SWAP",
        "instFamily": "HYPE-USDT",
        "uly": "HYPE-USDT",
        "ctValCcy": "HYPE",
        "ctVal": "0.1",
        "tickSz": "0.001",
        "instIdCode": 99999,
    }


class FakeOKX(_OKXWs, _OKXPrivate, _Loopback):
    """OKX v5 public and private REST (module docstring). ``now_ms`` is the server's clock
    for the public data; signed requests are checked against the wall clock."""

    def __init__(
        self,
        now_ms: int,
        *,
        api_key: str = "fake-okx-key",
        api_secret: str = "fake-okx-secret",
        passphrase: str = "fake-okx-passphrase",
        wallet_usdt: str = "10000",
    ) -> None:
        super().__init__()
        self.now_ms = now_ms
        swaps = cryptofeed_http(OKX_CAPTURE, "instType=SWAP")  # 166 real swaps, 2022-05-13
        eth = next(x for x in swaps["data"] if x["instId"] == "ETH-USDT-SWAP")
        swaps["data"].append(_okx_hype_instrument(eth))
        self.instruments: dict[str, dict[str, Any]] = {
            "SWAP": swaps,
            "SPOT": self._spot_instruments(),
            "FUTURES": other_venue("okx", "http_get_instruments_futures"),
            "OPTION": other_venue("okx", "http_get_instruments_option"),
        }
        # current funding: the recorded item for BTC; relabelled copies (synthesized)
        btc = other_venue("okx", "ws_funding_rate")["data"][0]
        four_h = int(btc["fundingTime"]) + 4 * 3_600_000
        self.funding_now: dict[str, dict[str, Any]] = {
            "BTC-USDT-SWAP": btc,
            "ETH-USDT-SWAP": {**btc, "instId": "ETH-USDT-SWAP", "fundingRate": "0.00025"},
            "HYPE-USDT-SWAP": {
                **btc,
                "instId": "HYPE-USDT-SWAP",
                "fundingRate": "0.0002",
                "nextFundingTime": str(four_h),
            },
        }
        mark = other_venue("okx", "http_get_mark_price")["data"][0]
        self.marks: dict[str, dict[str, Any]] = {
            "BTC-USDT-SWAP": mark,
            "ETH-USDT-SWAP": {**mark, "instId": "ETH-USDT-SWAP", "markPx": "1587.2"},
            "HYPE-USDT-SWAP": {**mark, "instId": "HYPE-USDT-SWAP", "markPx": "12.5"},
        }
        idx = other_venue("okx", "http_get_index_price")["data"][0]
        self.indexes: dict[str, dict[str, Any]] = {
            "BTC-USDT": idx,
            "ETH-USDT": {"instId": "ETH-USDT", "idxPx": "1586.4", "ts": idx["ts"]},
            "HYPE-USDT": {"instId": "HYPE-USDT", "idxPx": "12.55", "ts": idx["ts"]},
        }
        spot = other_venue("okx", "ws_tickers")["data"][0]
        btc_swap = {**spot, "instType": "SWAP", "instId": "BTC-USDT-SWAP"}
        btc_swap["volCcy24h"] = str(float(spot["vol24h"]) * 0.01)  # vol24h × ctVal
        self.tickers: dict[str, list[dict[str, Any]]] = {
            "SWAP": [btc_swap, okx_ws_ticker("UNI-USD-SWAP")],
            "SPOT": [spot],
        }
        self.open_interest: dict[str, dict[str, Any]] = self._recorded_oi()
        rec = other_venue("okx", "http_get_funding_rate_history")["data"]
        self.funding: dict[str, list[dict[str, Any]]] = {"BTC-USDT-SWAP": rec}
        self.routes = {
            "/api/v5/public/time": lambda q: self._ok([{"ts": str(self.now_ms)}]),
            "/api/v5/public/instruments": self._instruments,
            "/api/v5/public/funding-rate": self._funding_rate,
            "/api/v5/public/mark-price": self._mark_price,
            "/api/v5/market/index-tickers": self._index_tickers,
            "/api/v5/market/tickers": self._tickers,
            "/api/v5/public/open-interest": self._open_interest,
            "/api/v5/public/funding-rate-history": self._funding_history,
        }
        self._init_private(api_key, api_secret, passphrase, wallet_usdt)
        self._init_ws()

    @staticmethod
    def _spot_instruments() -> dict[str, Any]:
        """The recorded ``http_get_instruments_spot.json`` (5 USD pairs) and the real SPOT
        list of the cryptofeed capture (513 pairs, BTC-USDT among them), by instId."""
        rec = other_venue("okx", "http_get_instruments_spot")
        known = {x["instId"] for x in rec["data"]}
        cap = cryptofeed_http(OKX_CAPTURE, "instType=SPOT")["data"]
        rec["data"] += [x for x in cap if x["instId"] not in known]
        return dict(rec)

    def _recorded_oi(self) -> dict[str, dict[str, Any]]:
        """oiUsd of the real OKX snapshot in multivenue/open_interest.parquet; oiCcy = oiUsd /
        mark and oi = oiCcy / ctVal are derived (synthesized)."""
        import pyarrow.parquet as pq

        t = pq.read_table(shared_file("multivenue/open_interest.parquet")).to_pylist()
        ct = {x["instId"]: float(x["ctVal"]) for x in self.instruments["SWAP"]["data"]}
        out = {}
        for r in t:
            inst = f"{r['coin']}-USDT-SWAP"
            if r["venue"] != "okx" or inst not in self.marks:
                continue
            usd = float(r["oi_usd"])
            ccy = usd / float(self.marks[inst]["markPx"])
            ts = int(r["timestamp"].timestamp() * 1000)
            out[inst] = {
                "instType": "SWAP",
                "instId": inst,
                "oi": repr(ccy / ct[inst]),
                "oiCcy": repr(ccy),
                "oiUsd": repr(usd),
                "ts": str(ts),
            }
        return out

    # -- configuration ----------------------------------------------------------------
    def swap_ids(self) -> set[str]:
        """instIds of the served swaps."""
        return {x["instId"] for x in self.instruments["SWAP"]["data"]}

    def set_funding(self, inst_id: str, rows: Sequence[tuple[int, str]]) -> None:
        """Funding history of ``inst_id``: (fundingTime ms, rate string) pairs; the rate is
        served as both ``fundingRate`` and ``realizedRate``."""
        self.funding[inst_id] = [
            {
                "instType": "SWAP",
                "instId": inst_id,
                "fundingRate": r,
                "realizedRate": r,
                "fundingTime": str(int(t)),
                "method": "current_period",
                "formulaType": "noRate",
            }
            for t, r in sorted(rows, reverse=True)
        ]

    # -- routes -----------------------------------------------------------------------
    @staticmethod
    def _ok(data: list[Any]) -> tuple[int, Any]:
        return 200, {"code": "0", "msg": "", "data": data}

    @staticmethod
    def _err(code: str, msg: str, status: int = 200) -> tuple[int, Any]:
        return status, {"code": code, "msg": msg, "data": []}

    def not_found(self, path: str) -> tuple[int, Any]:
        return self._err("50000", f"path {path} not found", 404)

    def _instruments(self, q: dict[str, str]) -> tuple[int, Any]:
        kind = q.get("instType")
        if kind not in self.instruments:
            return self._err("51000", "Parameter instType error")
        data = self.instruments[kind]["data"]
        if kind == "OPTION":
            uly = q.get("uly") or q.get("instFamily")
            if not uly:
                return self._err("51000", "Parameter uly error")
            data = [x for x in data if x.get("uly") == uly]
        return self._ok(copy.deepcopy(data))

    def _funding_rate(self, q: dict[str, str]) -> tuple[int, Any]:
        inst = q.get("instId")
        if inst == "ANY":
            return self._ok([self.funding_now[k] for k in sorted(self.funding_now)])
        if inst not in self.funding_now:
            return self._err("51001", "Instrument ID does not exist")
        return self._ok([self.funding_now[inst]])

    def _mark_price(self, q: dict[str, str]) -> tuple[int, Any]:
        if q.get("instType") != "SWAP":
            return self._ok([])
        inst = q.get("instId")
        return self._ok([v for k, v in sorted(self.marks.items()) if inst in (None, k)])

    def _index_tickers(self, q: dict[str, str]) -> tuple[int, Any]:
        inst, quote = q.get("instId"), q.get("quoteCcy")
        if inst is None and quote is None:
            return self._err("51000", "Parameter quoteCcy error")
        return self._ok(
            [
                v
                for k, v in sorted(self.indexes.items())
                if (inst is None or k == inst) and (quote is None or k.endswith("-" + quote))
            ]
        )

    def _tickers(self, q: dict[str, str]) -> tuple[int, Any]:
        kind = q.get("instType")
        if kind not in ("SPOT", "SWAP", "FUTURES", "OPTION"):
            return self._err("51000", "Parameter instType error")
        return self._ok(copy.deepcopy(self.tickers.get(kind, [])))

    def _open_interest(self, q: dict[str, str]) -> tuple[int, Any]:
        inst = q.get("instId")
        if q.get("instType") != "SWAP":
            return self._ok([])
        if inst is not None and inst not in self.swap_ids():
            return self._err("51001", "Instrument ID does not exist")
        return self._ok([v for k, v in sorted(self.open_interest.items()) if inst in (None, k)])

    def _funding_history(self, q: dict[str, str]) -> tuple[int, Any]:
        inst = q.get("instId")
        if inst not in self.swap_ids():
            return self._err("51001", "Instrument ID does not exist")
        before, after = _int(q, "before"), _int(q, "after")
        limit = min(int(q.get("limit", OKX_MAX_LIMIT)), OKX_MAX_LIMIT)
        rows = [
            r
            for r in self.funding.get(inst, [])  # newest first
            if (before is None or int(r["fundingTime"]) > before)
            and (after is None or int(r["fundingTime"]) < after)
        ]
        return self._ok(copy.deepcopy(rows[:limit]))
