"""History downloader on ccxt: funding, OHLCV and open interest → the Parquet catalog.

Any ccxt exchange with the unified methods works; ``binanceusdm``, ``bybit`` and ``okx``
are the tested ones (against loopback fakes fed with recorded responses).

Symbols: the engine names a perpetual by the exchange's id where that id has no separator
(``BTCUSDT`` on Binance and Bybit) and by the id without ``-SWAP`` and dashes on OKX
(``BTC-USDT-SWAP`` → ``BTCUSDT``): :func:`engine_symbol`. Every method takes an engine name,
an exchange id or a ccxt unified symbol (``BTC/USDT:USDT``) and reports engine names; the
catalog stores rows under the engine name (``okx/funding/BTCUSDT``). Only perpetuals are
loaded on Bybit (``category=linear``) and OKX (``instType=SWAP``).

Datasets (``parse_datasets("funding,ohlcv:5m,open_interest:1h")``):

- ``funding`` → ``funding`` via ``fetch_funding_rate_history`` (rate as a fraction per
  settlement, as the exchange quotes it; on OKX ccxt's rate is ``realizedRate``, the rate
  actually settled). Binance pages forward (``startTime`` → the oldest ``limit`` rows);
  Bybit (``/v5/market/funding/history``: "passing only endTime returns 200 records up till
  endTime", newest first) and OKX (``/api/v5/public/funding-rate-history``: newest first,
  ``before``/``after`` cursors) answer the *newest* ``limit`` rows of a window, so there the
  window is paged backward from its end (:data:`END_ANCHORED_FUNDING`); rows per request
  200 on Bybit, 100 on OKX. Settlement times are rounded to the nearest
  whole second (Binance stamps them a few ms late, as in
  :mod:`perpdesk.data.sources.funding`). ``funding_interval_h`` is **inferred from the
  settlement spacing**: each settlement's interval is the gap to the previous settlement
  (the one stored in the catalog for the first row of a resumed download). The exchange's
  funding info (Binance ``/fapi/v1/fundingInfo``) only tells the *current* interval, which
  is wrong for history recorded before an interval change, so it is used only where the
  spacing cannot tell: a lone settlement with no neighbour, or a gap that is not a funding
  interval (a missing settlement), where the previous row's interval is carried forward
  and a note is returned. ``mark_price`` comes from Binance's ``markPrice`` field when the
  response has it, else null.
- ``ohlcv:<tf>`` → ``perp_bars_<tf>`` via ``fetch_ohlcv``. Quote and taker-buy quote volume
  come from the raw Binance kline fields 7 and 10 (ccxt's unified candle drops them).
  Exchanges whose candles lack them get ``volume_quote = volume_base × (o+h+l+c)/4`` and
  ``taker_buy_volume_quote = volume_quote / 2`` (the stand-ins of
  :mod:`perpdesk.data.sources.freqtrade`), with a note. A bar still open at ``now`` is
  never stored (its values would change: point-in-time).
- ``open_interest:<period>`` → ``open_interest`` via ``fetch_open_interest_history``
  (``open_interest_base`` = ccxt ``openInterestAmount``, ``open_interest_usd`` =
  ``openInterestValue``). Binance serves only the last 30 days of these statistics, so the
  start is clamped to ``now − 30 d`` there, with a note.

Resume: before fetching, the catalog is asked what it holds for (venue, dataset, symbol);
only ``[since, first stored)`` and ``(last stored, until)`` are fetched (gaps inside the
stored range are not refilled). Every page is written as it arrives, through
:meth:`Catalog.write` (atomic per partition file, merging and deduping on ``ts_ns``), so
an interrupted download keeps the pages it got and a failed page writes nothing.

Errors: transient ones (ccxt ``NetworkError`` — ``RequestTimeout``,
``ExchangeNotAvailable``, ``DDoSProtection``/``RateLimitExceeded`` — ``BadResponse``, and a
200 response whose body is not valid JSON, which ccxt would otherwise hand back as an empty
result) are retried with capped exponential backoff; HTTP 429/418 wait at least the
``Retry-After`` the server sent (Binance: "Retry-After header ... indicating how many
seconds to wait", developers.binance.com, *General Info → Limits*). ccxt's own throttle
(``enableRateLimit``) spaces the requests. Anything else (``BadSymbol``,
``AuthenticationError``, …) fails at once with a one-line :class:`DownloadError` naming the
exchange, symbol and dataset.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import ccxt
import numpy as np
import pyarrow as pa

from perpdesk.data.catalog import NS_PER_S, Catalog, dataset_spec, fmt_ts, validate_table
from perpdesk.data.sources.funding import ALLOWED_INTERVALS_H, funding_table
from perpdesk.errors import PerpdeskError

NS_PER_MS = 1_000_000
MS_PER_H = 3_600_000
DAY_MS = 86_400_000

DEFAULT_VENUE = {"binanceusdm": "binance", "binancecoinm": "binance", "binance": "binance"}
"""Catalog venue name per ccxt exchange id (others use the exchange id: ``bybit``, ``okx``)."""

VENUE_PAGE_LIMITS = {
    "bybit": {"funding": 200, "ohlcv": 1000, "open_interest": 200},
    "okx": {"funding": 100, "ohlcv": 100, "open_interest": 100},
}
"""Rows per request where they differ from Binance's: Bybit funding history ``limit``
[1, 200]; OKX funding-rate-history at most 100 (OKX v5 docs)."""

END_ANCHORED_FUNDING = frozenset({"bybit", "okx"})
"""Exchanges whose funding-history endpoint answers the newest ``limit`` rows of the asked
window (module doc): paged backward."""

PERP_MARKET_TYPES = {"bybit": ["linear"], "okx": ["swap"]}
"""ccxt ``options['fetchMarkets']['types']`` set here: only the perpetual markets are loaded
(Bybit: ``/v5/market/instruments-info?category=linear``; OKX:
``/api/v5/public/instruments?instType=SWAP``) instead of spot, inverse and options too."""

VOLUME_IN_CONTRACTS = frozenset({"okx"})
"""Exchanges whose ticker volume ccxt passes as ``baseVolume`` counts contracts (OKX v5
tickers: "vol24h: 24h trading volume, with a unit of contract"): base units = contracts ×
``contractSize`` (``ctVal``)."""

OI_LOOKBACK_MS = {"binanceusdm": 30 * DAY_MS, "binancecoinm": 30 * DAY_MS}
"""How far back an exchange serves open-interest statistics (Binance: "only the data of
the latest 1 month is available", *Open Interest Statistics* endpoint doc)."""

DEFAULT_PAGE_LIMITS = {"funding": 1000, "ohlcv": 1000, "open_interest": 500}
"""Rows per request: Binance's maxima for fundingRate (1000) and openInterestHist (500);
klines allow 1500 but ccxt caps ``fetch_ohlcv`` at 1000."""

APPROX_VOLUME_NOTE = (
    "volume_quote=volume_base*(o+h+l+c)/4; taker_buy_volume_quote=volume_quote/2 "
    "(the exchange's candles have neither)"
)

BINANCE_DEFAULT_INTERVAL_H = 8
"""Binance lists in ``fundingInfo`` only symbols whose funding parameters were adjusted;
the others settle every 8 h."""

_TF_RE = re.compile(r"^\d+[smhdw]$")
_HOURS_RE = re.compile(r"^(\d+)h$")


def engine_symbol(market: dict[str, Any]) -> str:
    """Our name of a ccxt market: the exchange id, except OKX-style swap ids with dashes,
    which lose ``-SWAP`` and the dashes (``BTC-USDT-SWAP`` → ``BTCUSDT``), so a perpetual has
    the same name on Binance, Bybit and OKX."""
    mid = str(market["id"])
    if market.get("swap") and "-" in mid:
        return mid.removesuffix("-SWAP").replace("-", "")
    return mid


def _interval_hours(text: Any) -> int | None:
    """``"8h"`` → 8 (ccxt's funding ``interval``); None for anything else (``"0h"``, a raw
    millisecond difference ccxt could not name)."""
    m = _HOURS_RE.match(str(text or ""))
    return int(m.group(1)) or None if m else None


class DownloadError(PerpdeskError):
    """A download failed: one line naming exchange, symbol, dataset and the cause."""


def _one_line(text: str, limit: int = 240) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


# -- dataset requests ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DatasetRequest:
    """One dataset to download: ``kind`` is ``funding``, ``ohlcv`` or ``open_interest``;
    ``timeframe`` is the bar length (``5m``) or OI period (``1h``), None for funding."""

    kind: str
    timeframe: str | None = None

    @property
    def catalog_dataset(self) -> str:
        """The catalog dataset the rows go to (``funding``, ``perp_bars_5m``, …)."""
        if self.kind == "ohlcv":
            return f"perp_bars_{self.timeframe}"
        return self.kind

    @property
    def label(self) -> str:
        """``kind[:timeframe]`` as the user wrote it."""
        return self.kind if self.timeframe is None else f"{self.kind}:{self.timeframe}"


def parse_datasets(text: str) -> list[DatasetRequest]:
    """``"funding,ohlcv:5m,open_interest:1h"`` → requests. ``ohlcv`` needs a timeframe;
    ``open_interest`` defaults to ``1h``."""
    out = []
    for item in (p.strip() for p in text.split(",")):
        if not item:
            continue
        kind, _, tf = item.partition(":")
        tf = tf or None
        if kind == "funding":
            if tf is not None:
                raise DownloadError(f"--datasets {item!r}: funding takes no timeframe")
        elif kind == "ohlcv":
            if tf is None:
                raise DownloadError(f"--datasets {item!r}: ohlcv needs a timeframe, e.g. ohlcv:5m")
        elif kind == "open_interest":
            tf = tf or "1h"
        else:
            raise DownloadError(
                f"--datasets {item!r}: unknown dataset (funding, ohlcv:<tf>, open_interest:<tf>)"
            )
        if tf is not None and not _TF_RE.match(tf):
            raise DownloadError(f"--datasets {item!r}: timeframe {tf!r} is not like 5m, 1h, 1d")
        req = DatasetRequest(kind, tf)
        dataset_spec(req.catalog_dataset)  # a bar name the catalog rejects fails here
        out.append(req)
    if not out:
        raise DownloadError("--datasets: nothing to download")
    return out


# -- retry policy --------------------------------------------------------------------------
@dataclass(frozen=True)
class RetryPolicy:
    """Capped exponential backoff: attempt ``k`` (0-based) waits
    ``min(max_delay_s, base_delay_s × 2**k)`` seconds, or the server's ``Retry-After`` if
    longer. ``sleep`` is injectable (tests record the waits instead of sleeping)."""

    max_attempts: int = 8
    base_delay_s: float = 1.0
    max_delay_s: float = 60.0
    sleep: Callable[[float], None] = time.sleep

    def delay_s(self, attempt: int, retry_after_s: float | None) -> float:
        """Seconds to wait after failed attempt ``attempt`` (0-based)."""
        backoff = min(self.max_delay_s, self.base_delay_s * 2**attempt)
        return backoff if retry_after_s is None else max(backoff, retry_after_s)


TRANSIENT_ERRORS = (ccxt.NetworkError, ccxt.BadResponse)
"""ccxt errors worth retrying (NetworkError covers RequestTimeout, ExchangeNotAvailable,
DDoSProtection and RateLimitExceeded)."""


def _retry_after_s(headers: Any) -> float | None:
    """``Retry-After`` in seconds (the delta-seconds form; an HTTP date is ignored)."""
    if not headers:
        return None
    for k, v in dict(headers).items():
        if str(k).lower() == "retry-after":
            try:
                s = float(v)
            except (TypeError, ValueError):
                return None
            return s if math.isfinite(s) and s >= 0 else None
    return None


# -- typed snapshots -----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Ticker24h:
    """Rolling 24 h statistics of one market (ccxt ``fetch_tickers``; Binance
    ``/fapi/v1/ticker/24hr``, Bybit ``/v5/market/tickers``, OKX ``/api/v5/market/tickers``).
    Prices in quote currency, ``volume_base`` in base units, ``volume_quote`` in quote
    currency, ``change_pct`` in percent. OKX gives no 24 h quote turnover for swaps: there
    ``volume_quote ≈ volume_base × last_px`` and ``quote_volume_approx`` is True."""

    symbol: str
    ts_ns: int
    last_px: float | None
    open_px: float | None
    high_px: float | None
    low_px: float | None
    vwap_px: float | None
    volume_base: float | None
    volume_quote: float | None
    change_pct: float | None
    quote_volume_approx: bool = False


@dataclass(frozen=True, slots=True)
class FundingSnapshot:
    """Current funding state of one perpetual (ccxt ``fetch_funding_rates``; Binance
    ``/fapi/v1/premiumIndex``). ``funding_rate`` is the exchange's current estimate for
    the next settlement as a fraction per settlement (Binance ``lastFundingRate``);
    ``funding_interval_h`` comes from the exchange's funding info (``interval_source``
    ``"exchange"``), the venue default (``"default"``) or is None when unknown."""

    symbol: str
    ts_ns: int | None
    mark_px: float | None
    index_px: float | None
    funding_rate: float | None
    next_funding_ts_ns: int | None
    interest_rate: float | None
    funding_interval_h: int | None
    interval_source: str | None
    unified: str | None = None
    """ccxt's unified symbol (``BTC/USDT:USDT``), the same on every venue."""


@dataclass(frozen=True, slots=True)
class LeverageTier:
    """One margin bracket (ccxt ``fetch_leverage_tiers``; Binance
    ``/fapi/v1/leverageBracket``): positions with notional in
    ``[min_notional_usd, max_notional_usd)`` may use up to ``max_leverage`` and need
    maintenance margin ``notional × maint_margin_rate − maint_amount_usd`` (Binance's
    ``cum``; None when the exchange does not give it)."""

    symbol: str
    tier: int
    min_notional_usd: float
    max_notional_usd: float
    maint_margin_rate: float
    max_leverage: float
    maint_amount_usd: float | None


# -- results ---------------------------------------------------------------------------------
@dataclass
class DownloadResult:
    """What one (dataset, symbol) download did. ``fetched_rows`` counts rows the exchange
    returned, ``new_rows`` those written (outside what the catalog held); the range is of
    the new rows (ns UTC), None when nothing was new."""

    dataset: str
    symbol: str
    fetched_rows: int = 0
    new_rows: int = 0
    first_ts_ns: int | None = None
    last_ts_ns: int | None = None
    requests: int = 0
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    def _add(self, ts_ns: np.ndarray) -> None:
        if ts_ns.size == 0:
            return
        self.new_rows += int(ts_ns.size)
        lo, hi = int(ts_ns.min()), int(ts_ns.max())
        self.first_ts_ns = lo if self.first_ts_ns is None else min(self.first_ts_ns, lo)
        self.last_ts_ns = hi if self.last_ts_ns is None else max(self.last_ts_ns, hi)

    @property
    def range_text(self) -> str:
        """``first → last`` of the new rows, ISO UTC, or ``-``."""
        if self.first_ts_ns is None or self.last_ts_ns is None:
            return "-"
        return f"{fmt_ts(self.first_ts_ns)} → {fmt_ts(self.last_ts_ns)}"


ProgressFn = Callable[[str, str, float], None]
"""``(dataset label, symbol, fraction done in [0, 1])``."""


def stored_range(catalog: Catalog, venue: str, dataset: str, symbol: str) -> tuple[int, int] | None:
    """First and last ``ts_ns`` the catalog holds for (venue, dataset, symbol), or None.

    Reads (and validates) only the first and the last partition file."""
    files = catalog.partitions(venue, dataset, symbol)
    if not files:
        return None
    bounds = []
    for path in (files[0], files[-1]):
        lo = int(np.datetime64(path.stem).astype("datetime64[ns]").astype(np.int64))
        t = catalog.read(venue, dataset, symbol, lo, _period_end_ns(path.stem), columns=[])
        ts = t.column("ts_ns").to_numpy()
        if ts.size:
            bounds.append((int(ts[0]), int(ts[-1])))
    if not bounds:
        return None
    return bounds[0][0], bounds[-1][1]


def _period_end_ns(stem: str) -> int:
    unit = "M" if len(stem) == 7 else "D"
    start = np.datetime64(stem, unit)
    return int((start + np.timedelta64(1, unit)).astype("datetime64[ns]").astype(np.int64))


def point_ccxt_at(exchange: ccxt.Exchange, base_url: str) -> None:
    """Send every REST API group of ``exchange`` to ``base_url`` (scheme://host[:port]),
    keeping each group's path (``https://fapi.binance.com/fapi/v1`` →
    ``<base_url>/fapi/v1``). For tests against a local fake exchange and for proxies."""
    base = base_url.rstrip("/")

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: rewrite(v) for k, v in node.items()}
        if isinstance(node, str) and "://" in node:
            parts = urlsplit(node)
            rest = parts.path + (f"?{parts.query}" if parts.query else "")
            return base + rest
        return node

    exchange.urls["api"] = rewrite(exchange.urls["api"])


class CcxtDownloader:
    """Downloads exchange history into ``catalog`` under ``venue``.

    ``exchange`` is a ccxt id (``binanceusdm``) or a ready instance. ``api_url`` points the
    exchange's REST API at another host (:func:`point_ccxt_at`). ``timeout_ms`` is the
    per-request timeout; ``exchange_config`` is passed to the ccxt constructor (API keys,
    ``rateLimit`` …). ``clock_ms`` returns "now" in ms UTC (the default end of a download and
    the cut-off for bars still open).
    """

    def __init__(
        self,
        exchange: str | ccxt.Exchange,
        catalog: Catalog,
        *,
        venue: str | None = None,
        api_url: str | None = None,
        retry: RetryPolicy | None = None,
        timeout_ms: int = 10_000,
        exchange_config: dict[str, Any] | None = None,
        clock_ms: Callable[[], int] | None = None,
        page_limits: dict[str, int] | None = None,
    ) -> None:
        if isinstance(exchange, str):
            cls = getattr(ccxt, exchange, None)
            if cls is None or not isinstance(cls, type) or not issubclass(cls, ccxt.Exchange):
                raise DownloadError(f"--exchange {exchange!r}: not a ccxt exchange id")
            config = {"enableRateLimit": True, "timeout": timeout_ms, **(exchange_config or {})}
            self.exchange: ccxt.Exchange = cls(config)
        else:
            self.exchange = exchange
        ex = self.exchange
        ex.enableLastResponseHeaders = True  # Retry-After on 429/418
        ex.enableLastJsonResponse = True  # raw kline fields; detecting bodies that are not JSON
        ex.enableLastHttpResponse = True
        if ex.id.startswith("binance"):
            # fetchCurrencies is a private sapi call: with API keys load_markets would make it
            ex.options["fetchCurrencies"] = False
        fetch_markets = ex.options.get("fetchMarkets")
        if ex.id in PERP_MARKET_TYPES and isinstance(fetch_markets, dict):
            ex.options["fetchMarkets"] = {**fetch_markets, "types": PERP_MARKET_TYPES[ex.id]}
        if api_url:
            point_ccxt_at(ex, api_url)
        self.catalog = catalog
        self.venue = venue or DEFAULT_VENUE.get(ex.id, ex.id)
        self.retry = retry or RetryPolicy()
        self.clock_ms = clock_ms or (lambda: int(time.time() * 1000))
        self.page_limits = {
            **DEFAULT_PAGE_LIMITS,
            **VENUE_PAGE_LIMITS.get(ex.id, {}),
            **(page_limits or {}),
        }
        self._markets_loaded = False
        self._perps: dict[str, dict[str, Any]] = {}
        self._intervals: dict[str, int] | None = None

    # -- plumbing ---------------------------------------------------------------------
    def _call(self, fn: Callable[[], Any], where: str) -> Any:
        """Run one ccxt call with retries (see the module doc); ``where`` names it in
        errors (``"binanceusdm BTCUSDT funding"``)."""
        ex = self.exchange
        policy = self.retry
        for attempt in range(policy.max_attempts):
            ex.last_response_headers = None
            ex.last_json_response = None
            ex.last_http_response = None
            try:
                out = fn()
                body = ex.last_http_response
                if isinstance(body, str) and body.strip() and ex.last_json_response is None:
                    # ccxt swallows a JSON decode error and returns the raw text, which the
                    # parsers turn into an empty result: surface it as a bad response
                    raise ccxt.BadResponse(
                        f"{ex.id} response body is not valid JSON ({len(body)} bytes: "
                        f"{body[:40]!r}…)"
                    )
                return out
            except TRANSIENT_ERRORS as exc:
                if attempt == policy.max_attempts - 1:
                    raise DownloadError(
                        f"{where}: gave up after {policy.max_attempts} attempts: "
                        f"{type(exc).__name__}: {_one_line(str(exc))}"
                    ) from None
                retry_after = None
                if isinstance(exc, ccxt.DDoSProtection):
                    retry_after = _retry_after_s(ex.last_response_headers)
                policy.sleep(policy.delay_s(attempt, retry_after))
            except ccxt.BaseError as exc:
                raise DownloadError(
                    f"{where}: {type(exc).__name__}: {_one_line(str(exc))}"
                ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def load_markets(self) -> None:
        """Load the exchange's markets once (with retries)."""
        if not self._markets_loaded:
            ex = self.exchange
            self._call(lambda: ex.load_markets(reload=True), f"{ex.id} load_markets")
            if not ex.markets:
                raise DownloadError(f"{ex.id} load_markets: the exchange listed no markets")
            perps: dict[str, dict[str, Any]] = {}
            for m in ex.markets.values():
                if not m.get("swap"):
                    continue
                name = engine_symbol(m)
                if name not in perps or (m.get("linear") and not perps[name].get("linear")):
                    perps[name] = m
            self._perps = perps
            self._markets_loaded = True

    def market(self, symbol: str) -> dict[str, Any]:
        """The ccxt market of ``symbol``: a unified symbol (``BTC/USDT:USDT``), an engine
        name (``BTCUSDT``, :func:`engine_symbol`; the linear perpetual is preferred) or an
        exchange id (``BTC-USDT-SWAP``; the perpetual is preferred)."""
        self.load_markets()
        ex = self.exchange
        if symbol in ex.markets:
            return ex.markets[symbol]
        if symbol in self._perps:
            return self._perps[symbol]
        candidates = ex.markets_by_id.get(symbol) or []
        if not candidates:
            raise DownloadError(f"{ex.id} {symbol}: unknown symbol (not in the exchange's markets)")
        swaps = [m for m in candidates if m.get("swap")]
        return (swaps or candidates)[0]

    # -- history ----------------------------------------------------------------------
    def download(
        self,
        datasets: Sequence[DatasetRequest],
        symbols: Sequence[str],
        since_ns: int,
        until_ns: int | None = None,
        *,
        on_progress: ProgressFn | None = None,
        raise_errors: bool = True,
    ) -> list[DownloadResult]:
        """Download ``datasets`` × ``symbols`` over ``[since_ns, until_ns)`` (default until:
        now). With ``raise_errors`` the first failure raises :class:`DownloadError`;
        otherwise it is recorded in that result's ``error`` and the rest continue."""
        results = []
        for symbol in symbols:
            try:
                self.market(symbol)
            except DownloadError as exc:  # one error per symbol, not one per dataset
                if raise_errors:
                    raise
                label = ",".join(r.label for r in datasets)
                results.append(DownloadResult(label, symbol, error=str(exc)))
                continue
            for req in datasets:
                res = DownloadResult(req.label, symbol)
                try:
                    self._download_one(req, symbol, since_ns, until_ns, res, on_progress)
                except DownloadError as exc:
                    if raise_errors:
                        raise
                    res.error = str(exc)
                results.append(res)
        return results

    def _download_one(
        self,
        req: DatasetRequest,
        symbol: str,
        since_ns: int,
        until_ns: int | None,
        res: DownloadResult,
        on_progress: ProgressFn | None,
    ) -> None:
        ex = self.exchange
        where = f"{ex.id} {symbol} {req.label}"
        market = self.market(symbol)
        sym_id = engine_symbol(market)
        res.symbol = sym_id
        now_ms = int(self.clock_ms())
        start_ms = -(-since_ns // NS_PER_MS)
        end_ms = now_ms if until_ns is None else min(-(-until_ns // NS_PER_MS), now_ms)
        if req.kind == "open_interest" and ex.id in OI_LOOKBACK_MS:
            period_ms = ex.parse_timeframe(req.timeframe) * 1000
            floor_ms = now_ms - OI_LOOKBACK_MS[ex.id]
            floor_ms = -(-floor_ms // period_ms) * period_ms
            if start_ms < floor_ms:
                res.notes.append(
                    f"{ex.id} serves open interest for the last 30 days only: "
                    f"from {fmt_ts(floor_ms * NS_PER_MS)}"
                )
                start_ms = floor_ms
        if end_ms <= start_ms:
            return
        dataset = req.catalog_dataset
        held = stored_range(self.catalog, self.venue, dataset, sym_id)
        # segments [lo_ms, hi_ms) to fetch, with the settlement/row before each (ns) if known
        segments: list[tuple[int, int, int | None]] = []
        if held is None:
            segments.append((start_ms, end_ms, None))
        else:
            first_ns, last_ns = held
            # funding times were rounded to the second: raw times of other settlements
            # lie at least 500 ms away from a stored one
            slack_ms = 500 if req.kind == "funding" else 1
            head_end = min(end_ms, first_ns // NS_PER_MS - slack_ms + 1)
            if start_ms < head_end:
                segments.append((start_ms, head_end, None))
            tail_start = max(start_ms, last_ns // NS_PER_MS + slack_ms)
            if tail_start < end_ms:
                segments.append((tail_start, end_ms, last_ns))
        total_ms = sum(hi - lo for lo, hi, _ in segments) or 1
        done_ms = 0
        if on_progress:
            on_progress(req.label, sym_id, 0.0)
        backward = req.kind == "funding" and ex.id in END_ANCHORED_FUNDING
        for lo_ms, hi_ms, prev_ns in segments:
            if backward:

                def progress(covered_ms: int, base: int = done_ms) -> None:
                    if on_progress:
                        on_progress(req.label, sym_id, min(1.0, (base + covered_ms) / total_ms))

                done_ms += self._backward_segment(
                    req, market, (lo_ms, hi_ms), prev_ns, now_ms, where, res, progress
                )
                continue
            cursor = lo_ms
            while cursor < hi_ms:
                rows_ms, table, fetched = self._page(req, market, cursor, hi_ms, now_ms, where, res)
                res.requests += 1
                res.fetched_rows += fetched
                if not rows_ms:
                    break
                if req.kind == "funding":
                    table, prev_ns = self._funding_page(table, prev_ns, sym_id, res, where)
                if table.num_rows:
                    try:
                        self.catalog.write(self.venue, dataset, sym_id, table)
                    except PerpdeskError as exc:
                        raise DownloadError(f"{where}: {exc}") from None
                    res._add(table.column("ts_ns").to_numpy())
                new_cursor = max(rows_ms) + 1
                if new_cursor <= cursor:  # pragma: no cover - exchange ignored startTime
                    raise DownloadError(f"{where}: the exchange did not advance past {cursor} ms")
                done_ms += min(new_cursor, hi_ms) - cursor
                cursor = new_cursor
                if on_progress:
                    on_progress(req.label, sym_id, min(1.0, done_ms / total_ms))
        if on_progress:
            on_progress(req.label, sym_id, 1.0)

    def _backward_segment(
        self,
        req: DatasetRequest,
        market: dict[str, Any],
        window_ms: tuple[int, int],
        prev_ns: int | None,
        now_ms: int,
        where: str,
        res: DownloadResult,
        progress: Callable[[int], None],
    ) -> int:
        """Fetch the funding of ``[lo_ms, hi_ms)`` newest page first (exchanges that answer
        the newest rows of a window); returns the ms covered. Each page is written as it
        arrives, except its oldest settlement, whose interval needs the settlement before
        it: that row goes out with the next (older) page, or at the end with ``prev_ns``
        (the stored settlement before the segment) or, lacking that, the gap to the row
        after it. An interrupted run leaves a contiguous stored tail, so a resume fetches
        only the head.

        Guard: when the first answer is a full page, the part of the window after its
        newest row is asked once more; it must be empty (else the exchange answered the
        oldest rows, and paging backward would silently skip the rest)."""
        lo_ms, hi_ms = window_ms
        sym_id = engine_symbol(market)
        pending: pa.Table | None = None  # the oldest settlement seen, interval not yet known
        pending_next: int | None = None  # the settlement after it (ns)
        cur_hi = hi_ms
        while cur_hi > lo_ms:
            rows_ms, table, fetched = self._page(req, market, lo_ms, cur_hi, now_ms, where, res)
            res.requests += 1
            res.fetched_rows += fetched
            if not rows_ms:
                break
            if min(rows_ms) >= cur_hi:  # pragma: no cover - exchange ignored the window
                raise DownloadError(f"{where}: the exchange did not page back from {cur_hi} ms")
            if (
                cur_hi == hi_ms
                and fetched >= self.page_limits[req.kind]
                and max(rows_ms) + 1 < hi_ms
            ):
                later, _, _ = self._page(req, market, max(rows_ms) + 1, hi_ms, now_ms, where, res)
                res.requests += 1
                if later:
                    raise DownloadError(
                        f"{where}: the exchange answered the oldest rows of the window, not "
                        "the newest: cannot page backward"
                    )
            if pending is not None:
                table = pa.concat_tables([table, pending])
            ts = table.column("ts_ns").to_numpy()
            if ts.size > 1:
                out, _ = self._funding_page(table.slice(1), int(ts[0]), sym_id, res, where)
                self._write(out, req, sym_id, where, res)
                pending_next = int(ts[1])
            pending = table.slice(0, 1)
            cur_hi = min(rows_ms)
            progress(hi_ms - cur_hi)
        if pending is not None:
            out, _ = self._funding_page(pending, prev_ns, sym_id, res, where, pending_next)
            self._write(out, req, sym_id, where, res)
        return hi_ms - lo_ms

    def _write(
        self, table: pa.Table, req: DatasetRequest, sym_id: str, where: str, res: DownloadResult
    ) -> None:
        if table.num_rows:
            try:
                self.catalog.write(self.venue, req.catalog_dataset, sym_id, table)
            except PerpdeskError as exc:
                raise DownloadError(f"{where}: {exc}") from None
            res._add(table.column("ts_ns").to_numpy())

    def _page(
        self,
        req: DatasetRequest,
        market: dict[str, Any],
        cursor_ms: int,
        hi_ms: int,
        now_ms: int,
        where: str,
        res: DownloadResult,
    ) -> tuple[list[int], pa.Table, int]:
        """Fetch one page from ``cursor_ms``: (raw exchange times in ms of the rows kept,
        the rows as a catalog table, rows the exchange returned)."""
        ex = self.exchange
        sym = market["symbol"]
        limit = self.page_limits[req.kind]
        if req.kind == "funding":
            # the window's end: ccxt's unified ``until`` (Binance and Bybit ``endTime``,
            # inclusive); OKX's ``after`` ("records earlier than", exclusive)
            until = {"after": hi_ms} if ex.id == "okx" else {"until": hi_ms - 1}
            out = self._call(
                lambda: ex.fetch_funding_rate_history(
                    sym, since=cursor_ms, limit=limit, params=until
                ),
                where,
            )
            recs = sorted(
                (r for r in out if cursor_ms <= int(r["timestamp"]) < hi_ms),
                key=lambda r: int(r["timestamp"]),
            )
            raw_ms = [int(r["timestamp"]) for r in recs]
            ts_ns = (np.array(raw_ms, dtype=np.int64) * NS_PER_MS + NS_PER_S // 2) // NS_PER_S
            marks = [(r.get("info") or {}).get("markPrice") for r in recs]
            table = pa.table(
                {
                    "ts_ns": pa.array(ts_ns * NS_PER_S, pa.int64()),
                    "funding_rate": pa.array([r["fundingRate"] for r in recs], pa.float64()),
                    "mark_price": pa.array(
                        [float(m) if m not in (None, "") else None for m in marks], pa.float64()
                    ),
                }
            )
            return raw_ms, table, len(out)
        period_ms = ex.parse_timeframe(req.timeframe) * 1000
        if req.kind == "ohlcv":
            out = self._call(
                lambda: ex.fetch_ohlcv(
                    sym, req.timeframe, since=cursor_ms, limit=limit, params={"until": hi_ms - 1}
                ),
                where,
            )
            raw = ex.last_json_response
            # a bar is stored only once closed (open time + length <= now)
            rows = sorted(
                (c for c in out if cursor_ms <= c[0] < hi_ms and c[0] + period_ms <= now_ms),
                key=lambda c: c[0],
            )
            table, approximated = self._bars(rows, raw)
            if approximated and APPROX_VOLUME_NOTE not in res.notes:
                res.notes.append(APPROX_VOLUME_NOTE)
            return [c[0] for c in out if cursor_ms <= c[0] < hi_ms], table, len(out)
        # open interest: ask for at most `limit` periods so start- and end-anchored
        # endpoints (Binance's openInterestHist is the latter) give the same rows
        win_end = min(hi_ms - 1, cursor_ms + limit * period_ms - 1)
        out = self._call(
            lambda: ex.fetch_open_interest_history(
                sym, req.timeframe, since=cursor_ms, limit=limit, params={"until": win_end}
            ),
            where,
        )
        recs = sorted(
            (r for r in out if cursor_ms <= int(r["timestamp"]) <= win_end),
            key=lambda r: int(r["timestamp"]),
        )
        table = pa.table(
            {
                "ts_ns": pa.array([int(r["timestamp"]) * NS_PER_MS for r in recs], pa.int64()),
                "open_interest_base": pa.array(
                    [r.get("openInterestAmount") for r in recs], pa.float64()
                ),
                "open_interest_usd": pa.array(
                    [r.get("openInterestValue") for r in recs], pa.float64()
                ),
            }
        )
        table = self._validated(table, "open_interest", where)
        # an empty window is not the end when the range goes on: move past it
        kept = [int(r["timestamp"]) for r in recs] or [win_end]
        return kept, table, len(out)

    def _validated(self, table: pa.Table, dataset: str, where: str) -> pa.Table:
        try:
            return validate_table(table, dataset_spec(dataset), f"{where} (page)")
        except PerpdeskError as exc:
            raise DownloadError(str(exc)) from None

    def _bars(self, rows: list[list[Any]], raw: Any) -> tuple[pa.Table, bool]:
        """ccxt candles (+ Binance's raw kline rows when available) → a BAR table, and
        whether the quote/taker volumes had to be approximated."""
        by_ts: dict[int, list[Any]] = {}
        if isinstance(raw, list):
            for r in raw:
                if isinstance(r, list) and len(r) >= 11:
                    by_ts[int(r[0])] = r
        ts = np.array([c[0] for c in rows], dtype=np.int64)
        cols = {
            name: np.array([np.nan if c[i] is None else c[i] for c in rows], dtype=np.float64)
            for i, name in enumerate(("open", "high", "low", "close", "volume_base"), start=1)
        }
        approximated = False
        if all(int(c[0]) in by_ts for c in rows):
            vq = np.array([float(by_ts[int(c[0])][7]) for c in rows])
            taker = np.array([float(by_ts[int(c[0])][10]) for c in rows])
        else:
            approximated = True
            typical = (cols["open"] + cols["high"] + cols["low"] + cols["close"]) / 4
            vq = cols["volume_base"] * typical
            taker = vq / 2
        table = pa.table(
            {
                "ts_ns": pa.array(ts * NS_PER_MS, pa.int64()),
                **{k: pa.array(v, pa.float64()) for k, v in cols.items()},
                "volume_quote": pa.array(vq, pa.float64()),
                "taker_buy_volume_quote": pa.array(taker, pa.float64()),
            }
        )
        return table, approximated

    def _funding_page(
        self,
        table: pa.Table,
        prev_ns: int | None,
        sym_id: str,
        res: DownloadResult,
        where: str,
        next_ns: int | None = None,
    ) -> tuple[pa.Table, int | None]:
        """Add ``funding_interval_h`` (see the module doc) and validate; returns the table
        and the last settlement time for the next page. ``prev_ns`` is the settlement
        before the first row when known; without it the first row takes the gap to the
        row after it (the next row, or ``next_ns``)."""
        ts = table.column("ts_ns").to_numpy()
        if ts.size == 0:
            return table, prev_ns
        before = np.concatenate([[prev_ns], ts[:-1]]) if prev_ns is not None else None
        hours = np.full(ts.size, np.nan)
        if before is not None:
            hours = (ts - before) / (MS_PER_H * NS_PER_MS)
        else:
            # gap to the row after each one (exact int64 ns differences), NaN for the last
            # when nothing follows; the first row takes its own, the others the one before
            gaps = np.full(ts.size, np.nan)
            gaps[:-1] = np.diff(ts) / (MS_PER_H * NS_PER_MS)
            if next_ns is not None:
                gaps[-1] = (next_ns - int(ts[-1])) / (MS_PER_H * NS_PER_MS)
            hours = np.concatenate([gaps[:1], gaps[:-1]])
        interval = np.zeros(ts.size, dtype=np.int32)
        for i, h in enumerate(hours):
            if math.isfinite(h) and float(h).is_integer() and round(h) in ALLOWED_INTERVALS_H:
                interval[i] = round(float(h))
                continue
            carried = int(interval[i - 1]) if i > 0 else self._current_interval(sym_id, where)
            if math.isfinite(h):
                res.notes.append(
                    f"gap of {h:g} h before {fmt_ts(int(ts[i]))} is not a funding interval "
                    f"(missing settlement?): interval {carried} h carried forward"
                )
            interval[i] = carried
        try:
            out = funding_table(
                ts,
                table.column("funding_rate").to_numpy(zero_copy_only=False),
                interval,
                table.column("mark_price").to_numpy(zero_copy_only=False).astype(float),
                f"{where} (page)",
            )
        except PerpdeskError as exc:
            raise DownloadError(str(exc)) from None
        return out, int(ts[-1])

    def _current_interval(self, sym_id: str, where: str) -> int:
        if self._intervals is None:
            self._intervals = self.funding_intervals()
        h = self._intervals.get(sym_id)
        if h is None:
            h = self._stated_interval(sym_id, where)
        if h is None and self.exchange.id.startswith("binance"):
            h = BINANCE_DEFAULT_INTERVAL_H
        if h is None:
            raise DownloadError(
                f"{where}: cannot tell the funding interval (a lone settlement and no "
                "interval from the exchange)"
            )
        return h

    def _stated_interval(self, sym_id: str, where: str) -> int | None:
        """The current interval (h) as the exchange states it for one perpetual: Bybit's
        instrument ``fundingInterval`` (minutes, loaded with the markets), else ccxt
        ``fetch_funding_rate``'s ``interval`` (OKX: ``nextFundingTime − fundingTime``)."""
        m = self.market(sym_id)
        minutes = (m.get("info") or {}).get("fundingInterval")
        if self.exchange.id == "bybit" and minutes not in (None, ""):
            h, rest = divmod(int(minutes), 60)
            return h if h and not rest else None
        ex = self.exchange
        if not ex.id.startswith("binance") and ex.has.get("fetchFundingRate") is True:
            r = self._call(lambda: ex.fetch_funding_rate(m["symbol"]), f"{where} funding rate")
            return _interval_hours(r.get("interval"))
        return None

    # -- snapshots ----------------------------------------------------------------------
    def _ids(self, symbols: Sequence[str] | None) -> list[str] | None:
        return None if symbols is None else [self.market(s)["symbol"] for s in symbols]

    def tickers_24h(self, symbols: Sequence[str] | None = None) -> list[Ticker24h]:
        """24 h ticker statistics (all perpetual markets when ``symbols`` is None)."""
        self.load_markets()
        ex = self.exchange
        uni = self._ids(symbols)
        # without symbols ccxt picks the exchange's default market type (OKX: spot)
        params = {"type": "swap"} if uni is None else {}
        out = self._call(lambda: ex.fetch_tickers(uni, params), f"{ex.id} tickers")
        res = []
        for t in out.values():
            m = ex.markets.get(t["symbol"])
            ts = t.get("timestamp")
            base, quote, last = t.get("baseVolume"), t.get("quoteVolume"), t.get("last")
            if base is not None and m and m.get("contract") and ex.id in VOLUME_IN_CONTRACTS:
                base = float(base) * float(m.get("contractSize") or 1)
            approx = quote is None and base is not None and last is not None
            if approx:
                quote = float(base) * float(last)
            res.append(
                Ticker24h(
                    symbol=engine_symbol(m) if m else t["symbol"],
                    ts_ns=int(ts) * NS_PER_MS if ts is not None else 0,
                    last_px=last,
                    open_px=t.get("open"),
                    high_px=t.get("high"),
                    low_px=t.get("low"),
                    vwap_px=t.get("vwap"),
                    volume_base=base,
                    volume_quote=quote,
                    change_pct=t.get("percentage"),
                    quote_volume_approx=approx,
                )
            )
        return sorted(res, key=lambda x: x.symbol)

    def open_interest_usd(
        self, symbols: Sequence[str], marks: dict[str, float] | None = None
    ) -> dict[str, float]:
        """Current open interest in USD per symbol as passed (ccxt ``fetch_open_interest``,
        one call per symbol). Where the exchange gives only the amount (Binance
        ``/fapi/v1/openInterest`` in contracts, Bybit ``/v5/market/open-interest`` in base
        units) USD = amount × ``contractSize`` × mark price from ``marks``; OKX
        ``/api/v5/public/open-interest`` gives ``oiUsd``. Symbols the exchange can't answer
        for are left out."""
        self.load_markets()
        ex = self.exchange
        if not ex.has.get("fetchOpenInterest"):
            return {}
        res = {}
        for sym_id in symbols:
            m = self.market(sym_id)
            r = self._call(
                lambda m=m: ex.fetch_open_interest(m["symbol"]), f"{ex.id} {sym_id} open interest"
            )
            value = r.get("openInterestValue")
            if value is None and r.get("openInterestAmount") is not None and marks:
                mark = marks.get(sym_id)
                if mark is not None and mark == mark:
                    value = (
                        float(r["openInterestAmount"]) * mark * float(m.get("contractSize") or 1)
                    )
            if value is not None:
                res[sym_id] = float(value)
        return res

    def funding_intervals(self, symbols: Sequence[str] | None = None) -> dict[str, int]:
        """Funding interval in hours per engine symbol, as the exchange states it
        (ccxt ``fetch_funding_intervals``; Binance ``/fapi/v1/fundingInfo``, which lists
        only symbols with adjusted parameters). Empty when the exchange has no such call."""
        self.load_markets()
        ex = self.exchange
        if not ex.has.get("fetchFundingIntervals"):
            return {}
        uni = self._ids(symbols)
        out = self._call(lambda: ex.fetch_funding_intervals(uni), f"{ex.id} funding intervals")
        res = {}
        for item in out.values():
            iv = _interval_hours(item.get("interval"))
            m = ex.markets.get(item.get("symbol"))
            if iv and m:
                res[engine_symbol(m)] = iv
        return res

    def funding_snapshot(self, symbols: Sequence[str] | None = None) -> list[FundingSnapshot]:
        """Current funding / premium index per linear perpetual (USDT/USDC-margined: the
        ones a carry pair shorts against spot) with its funding interval.

        Rates: ccxt ``fetch_funding_rates`` (Binance ``/fapi/v1/premiumIndex``; Bybit
        ``/v5/market/tickers?category=linear``; OKX ``/api/v5/public/funding-rate?instId=ANY``).
        Interval: Binance ``fundingInfo`` (:meth:`funding_intervals`, else 8 h); Bybit the
        instrument's ``fundingInterval`` in minutes (ccxt's ``interval``); OKX
        ``nextFundingTime − fundingTime`` (ccxt's ``interval``). Mark and index where the
        funding call lacks them (OKX): ``fetch_mark_prices`` (``/api/v5/public/mark-price``)
        and the index tickers (``/api/v5/market/index-tickers``, ccxt's implicit API: no
        unified call serves them), the index of a swap being its ``uly`` (``BTC-USDT``)."""
        self.load_markets()
        ex = self.exchange
        uni = self._ids(symbols)
        rates = self._call(lambda: ex.fetch_funding_rates(uni), f"{ex.id} funding rates")
        intervals = self.funding_intervals()
        perps = [
            (r, m)
            for r in rates.values()
            if (m := ex.markets.get(r["symbol"])) is not None and m.get("swap") and m.get("linear")
        ]
        lacking = [m for r, m in perps if r.get("markPrice") is None or r.get("indexPrice") is None]
        marks, indexes = self._marks_and_indexes(lacking) if lacking else ({}, {})
        res = []
        for r, m in perps:
            sym_id = engine_symbol(m)
            if sym_id in intervals:
                iv, src = intervals[sym_id], "exchange"
            elif _interval_hours(r.get("interval")):
                iv, src = _interval_hours(r.get("interval")), "exchange"
            elif ex.id.startswith("binance"):
                iv, src = BINANCE_DEFAULT_INTERVAL_H, "default"
            else:
                iv, src = None, None
            ts, nxt = r.get("timestamp"), r.get("fundingTimestamp")
            mark = r.get("markPrice") if r.get("markPrice") is not None else marks.get(sym_id)
            index = r.get("indexPrice") if r.get("indexPrice") is not None else indexes.get(sym_id)
            res.append(
                FundingSnapshot(
                    symbol=sym_id,
                    ts_ns=None if ts is None else int(ts) * NS_PER_MS,
                    mark_px=mark,
                    index_px=index,
                    funding_rate=r.get("fundingRate"),
                    next_funding_ts_ns=None if nxt is None else int(nxt) * NS_PER_MS,
                    interest_rate=r.get("interestRate"),
                    funding_interval_h=iv,
                    interval_source=src,
                    unified=m["symbol"],
                )
            )
        return sorted(res, key=lambda x: x.symbol)

    def _marks_and_indexes(
        self, markets: Sequence[dict[str, Any]]
    ) -> tuple[dict[str, float], dict[str, float]]:
        """Mark and index prices per engine symbol for ``markets`` (see
        :meth:`funding_snapshot`); empty where the exchange offers no such call."""
        ex = self.exchange
        marks: dict[str, float] = {}
        if ex.has.get("fetchMarkPrices"):
            out = self._call(
                lambda: ex.fetch_mark_prices(None, {"type": "swap"}), f"{ex.id} mark prices"
            )
            for t in out.values():
                m = ex.markets.get(t.get("symbol"))
                if m and t.get("markPrice") is not None:
                    marks[engine_symbol(m)] = float(t["markPrice"])
        indexes: dict[str, float] = {}
        if ex.id == "okx":
            by_index: dict[str, list[str]] = {}
            for m in markets:
                uly = (m.get("info") or {}).get("uly") or f"{m['baseId']}-{m['quoteId']}"
                by_index.setdefault(uly, []).append(engine_symbol(m))
            for quote in sorted({m["quoteId"] for m in markets}):
                out = self._call(
                    lambda q=quote: ex.public_get_market_index_tickers({"quoteCcy": q}),
                    f"{ex.id} index tickers {quote}",
                )
                for item in out.get("data") or []:
                    px = item.get("idxPx")
                    if px not in (None, ""):
                        for sym in by_index.get(item.get("instId"), []):
                            indexes[sym] = float(px)
        return marks, indexes

    def leverage_tiers(self, symbols: Sequence[str]) -> dict[str, list[LeverageTier]]:
        """Margin brackets per engine symbol (ccxt ``fetch_leverage_tiers``, or
        ``fetch_market_leverage_tiers`` per symbol). Binance needs API keys for this
        (pass ``apiKey``/``secret`` in ``exchange_config``)."""
        self.load_markets()
        ex = self.exchange
        uni = self._ids(symbols) or []
        if ex.has.get("fetchLeverageTiers"):
            raw = self._call(lambda: ex.fetch_leverage_tiers(uni), f"{ex.id} leverage tiers")
        elif ex.has.get("fetchMarketLeverageTiers"):
            raw = {
                s: self._call(
                    lambda s=s: ex.fetch_market_leverage_tiers(s), f"{ex.id} {s} leverage tiers"
                )
                for s in uni
            }
        else:
            raise DownloadError(f"{ex.id}: the exchange has no leverage-tier call in ccxt")
        res: dict[str, list[LeverageTier]] = {}
        for s in uni:
            tiers = raw.get(s)
            if not tiers:
                raise DownloadError(f"{ex.id} {s}: no leverage tiers in the response")
            sym_id = engine_symbol(ex.markets[s])
            out = []
            for t in tiers:
                cum = (t.get("info") or {}).get("cum")
                out.append(
                    LeverageTier(
                        symbol=sym_id,
                        tier=int(t["tier"]),
                        min_notional_usd=float(t["minNotional"]),
                        max_notional_usd=float(t["maxNotional"]),
                        maint_margin_rate=float(t["maintenanceMarginRate"]),
                        max_leverage=float(t["maxLeverage"]),
                        maint_amount_usd=None if cum is None else float(cum),
                    )
                )
            res[sym_id] = out
        return res
