"""A loopback fake of Binance's USDⓈ-M futures REST API, for offline tests of ccxt clients.

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

Faults are queued per route and consumed one per request, first in first out
(:meth:`FakeBinanceUSDM.inject`): a 429 or 418 with ``Retry-After``, a 5xx, a delay longer
than the client's timeout, a truncated JSON body, or any Binance error code. Every request
is logged (:attr:`FakeBinanceUSDM.requests`) with its path, query and the fault served.

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
import json
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import web

from tests.realdata import SHARED_DATA, shared_file

RESPONSES_REL = "exchange-responses/binance-nautilus/http_responses"
RESPONSES_DIR = SHARED_DATA / RESPONSES_REL

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


@dataclass(frozen=True)
class Fault:
    """One injected failure. Build with the class methods."""

    kind: str  # "status", "delay", "truncated"
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

    def __init__(self, now_ms: int, *, exchange_info: dict | None = None) -> None:
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
        self.routes: dict[str, Handler] = {
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

    # -- lifecycle --------------------------------------------------------------------
    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` (the server must be started)."""
        if self.port is None:
            raise RuntimeError("fake exchange not started")
        return f"http://127.0.0.1:{self.port}"

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
    def inject(self, path: str, *faults: Fault) -> None:
        """Queue ``faults`` on ``path``: the next requests to it get them, in order."""
        with self._lock:
            self._faults.setdefault(path, deque()).extend(faults)

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

    # -- dispatch ---------------------------------------------------------------------
    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        query = dict(request.query)
        with self._lock:
            queue = self._faults.get(path)
            fault = queue.popleft() if queue else None
            self.requests.append(
                LoggedRequest(request.method, path, query, None if fault is None else fault.kind)
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
        handler = self.routes.get(path)
        if handler is None:
            return web.json_response(
                {"code": -5000, "msg": f"Path {path}, Method GET is invalid"}, status=404
            )
        status, payload = handler(query)
        body = json.dumps(payload)
        if fault is not None and fault.kind == "truncated":
            body = body[: max(1, len(body) // 2)]
        return web.Response(status=status, text=body, content_type="application/json")


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
