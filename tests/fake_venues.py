"""Loopback fakes of Bybit v5 and OKX v5 public REST, for offline tests of ccxt clients
(the scanner and the history downloader) beside the Binance fake of tests/fake_exchange.py.

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

Every request is logged (:attr:`requests`, :class:`tests.fake_exchange.LoggedRequest`).
"""

from __future__ import annotations

import asyncio
import copy
import json
import threading
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import pyarrow as pa
from aiohttp import web

from tests.fake_exchange import LoggedRequest
from tests.realdata import shared_file

OTHER_VENUES = "exchange-responses/other-venues"
CRYPTOFEED = "exchange-responses/cryptofeed"

Handler = Callable[[dict[str, str]], tuple[int, Any]]


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


class _Loopback:
    """An aiohttp server on 127.0.0.1 in a thread; subclasses fill :attr:`routes`."""

    def __init__(self) -> None:
        self.routes: dict[str, Handler] = {}
        self.requests: list[LoggedRequest] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

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

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        query = dict(request.query)
        with self._lock:
            self.requests.append(LoggedRequest(request.method, request.path, query))
        handler = self.routes.get(request.path)
        if handler is None or request.method != "GET":
            status, payload = self.not_found(request.path)
        else:
            status, payload = handler(query)
        return web.Response(
            status=status, text=json.dumps(payload), content_type="application/json"
        )


# ------------------------------------------------------------------------------------ Bybit
BYBIT_CAPTURE = "BYBIT.jsonl.zst"
BYBIT_MAX_LIMIT = 200


class FakeBybit(_Loopback):
    """Bybit v5 public REST (module docstring). ``now_ms`` is the server's clock."""

    def __init__(self, now_ms: int) -> None:
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


class FakeOKX(_Loopback):
    """OKX v5 public REST (module docstring). ``now_ms`` is the server's clock."""

    def __init__(self, now_ms: int) -> None:
        super().__init__()
        self.now_ms = now_ms
        swaps = cryptofeed_http(OKX_CAPTURE, "instType=SWAP")  # 166 real swaps, 2022-05-13
        eth = next(x for x in swaps["data"] if x["instId"] == "ETH-USDT-SWAP")
        swaps["data"].append(_okx_hype_instrument(eth))
        self.instruments: dict[str, dict[str, Any]] = {
            "SWAP": swaps,
            "SPOT": other_venue("okx", "http_get_instruments_spot"),
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
