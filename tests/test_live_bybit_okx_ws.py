"""LiveVenue's websocket streams on Bybit (v5, linear + spot) and OKX (v5, USDT swaps + spot)
against the loopback fakes of tests/fake_venues.py: ccxt.pro connects to the fakes'
websocket endpoints (Bybit ``/v5/public/<category>`` and ``/v5/private``, OKX
``/ws/v5/public`` and ``/ws/v5/private``), logs in (Bybit ``auth``, OKX ``login``; the fakes
check the signatures as the venues document them) and receives frames shaped from the
recorded ones in ../shared/data/exchange-responses/other-venues/, with the executions of the
fakes' matching engine pushed as they happen. Marks with the predicted funding: Bybit's linear
``tickers.<symbol>`` (ws_ticker_linear.json, then single-field deltas), OKX's ``mark-price``
and ``funding-rate`` (http_get_mark_price.json, ws_funding_rate.json).

Expected numbers are worked out by hand in the comments. OKX swaps trade and quote in
contracts: BTC-USDT-SWAP ``ctVal`` = 0.01 BTC (the recorded instrument), so 7 contracts on
the wire are 0.07 BTC. Fees: Bybit maker 0.01 % (the recorded BTCUSDT rate), OKX maker
0.02 %; spot buys pay 0.1 % of the quantity in BTC on both."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from perpdesk.domain import BookTop, Fill, MarkPrice, Order, OrderType, Side, Trade
from perpdesk.execution.ccxt_live import LiveVenue, open_spot_perp_venue
from perpdesk.execution.orders import RetryPolicy
from perpdesk.execution.protocol import OrderStatus, VenueError
from tests.fake_venues import FakeBybit, FakeOKX

NOW_MS = 1_786_310_820_000  # the fakes' public-data clock
KEY, SECRET, PHRASE = "fake-key-ws-61c0", "fake-secret-ws-0b7d", "fake-phrase-ws-9e2a"
RETRY = RetryPolicy(base_delay_s=0.01, max_delay_s=0.05, settle_s=0.05)


@dataclass(frozen=True)
class V:
    """One venue: ccxt id, the fakes' perp and spot ids, its topic names and env."""

    venue: str
    market: str
    spot_market: str
    trade_topic: str
    book_topic: str
    private_topic: str
    contract: Decimal  # base units per order unit on the wire
    maker: Decimal
    env: dict[str, str]

    def make(self) -> FakeBybit | FakeOKX:
        if self.venue == "bybit":
            return FakeBybit(NOW_MS, api_key=KEY, api_secret=SECRET)
        return FakeOKX(NOW_MS, api_key=KEY, api_secret=SECRET, passphrase=PHRASE)

    def wire(self, qty_base: str) -> str:
        """A base-unit quantity in the venue's order units (OKX: contracts of 0.01 BTC)."""
        return str((Decimal(qty_base) / self.contract).normalize())


BYBIT = V(
    "bybit",
    "BTCUSDT",
    "BTCUSDT",
    "publicTrade.BTCUSDT",
    "orderbook.1.BTCUSDT",
    "execution",
    Decimal(1),
    Decimal("0.0001"),
    {"PERPDESK_BYBIT_API_KEY": KEY, "PERPDESK_BYBIT_API_SECRET": SECRET},
)
OKX = V(
    "okx",
    "BTC-USDT-SWAP",
    "BTC-USDT",
    "trades:BTC-USDT-SWAP",
    "bbo-tbt:BTC-USDT-SWAP",
    "orders",
    Decimal("0.01"),
    Decimal("0.0002"),
    {
        "PERPDESK_OKX_API_KEY": KEY,
        "PERPDESK_OKX_API_SECRET": SECRET,
        "PERPDESK_OKX_API_PASSPHRASE": PHRASE,
    },
)
VENUES = [pytest.param(BYBIT, id="bybit"), pytest.param(OKX, id="okx")]


@pytest.fixture(params=VENUES)
def vf(request: pytest.FixtureRequest) -> Any:  # (V, fake)
    v: V = request.param
    with v.make() as fake:
        fake.set_book(v.market, "50000.0", "50000.1")
        yield v, fake


def live(v: V, fake: FakeBybit | FakeOKX, **kw: Any) -> LiveVenue:
    kw.setdefault("retry", RETRY)
    kw.setdefault("poll_interval_s", 0.1)
    kw.setdefault("reconnect_delay_s", 0.05)
    kw.setdefault("scan_interval_s", 0.05)
    venue = LiveVenue.from_env(
        v.venue,
        environ=kw.pop("environ", v.env),
        dotenv_path=None,
        api_url=fake.url,
        ws_url=fake.ws_url,
        timeout_ms=1000,
        enable_rate_limit=False,  # ccxt's client throttle only slows a loopback test
        **kw,
    )
    venue.ex.timeout_on_exit = 0
    return venue


def run(
    v: V, fake: FakeBybit | FakeOKX, body: Callable[[LiveVenue], Awaitable[None]], **kw: Any
) -> None:
    async def main() -> None:
        venue = live(v, fake, **kw)
        try:
            await venue.connect()
            await body(venue)
        finally:
            await venue.close()

    asyncio.run(main())


async def until(cond: Callable[[], bool], timeout_s: float = 5.0) -> None:
    end = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.02)


async def subscribed(fake: FakeBybit | FakeOKX, topic: str, times: int = 1) -> None:
    assert await asyncio.to_thread(fake.wait_subscribed, topic, times), topic


async def collect(stream: Any, into: list[Any]) -> None:
    async for x in stream:
        into.append(x)


def buy_limit(v: V, cid: str, qty: float, px: float) -> Order:
    return Order(cid, v.venue, "BTCUSDT", Side.BUY, qty, OrderType.LIMIT, price=px)


def test_trades_and_book_tops_in_engine_symbols_and_base_units(vf: Any) -> None:
    v, fake = vf

    async def body(venue: LiveVenue) -> None:
        trades: list[Trade] = []
        tops: list[BookTop] = []
        tasks = [
            asyncio.create_task(collect(venue.trades(["BTCUSDT"]), trades)),
            asyncio.create_task(collect(venue.book_tops(["BTCUSDT"]), tops)),
        ]
        await subscribed(fake, v.trade_topic)
        await subscribed(fake, v.book_topic)
        # the snapshot sent on subscribing: the fixture's book, 1 BTC a side (OKX: 100
        # contracts × 0.01)
        await until(lambda: len(tops) >= 1)
        assert (tops[0].bid, tops[0].bid_qty_base, tops[0].ask, tops[0].ask_qty_base) == (
            50000.0,
            1.0,
            50000.1,
            1.0,
        )
        # 1.25 BTC bid, 0.75 BTC ask: Bybit sends BTC, OKX 125 and 75 contracts
        fake.set_book(
            v.market, "50010.0", "50010.5", bid_qty=v.wire("1.25"), ask_qty=v.wire("0.75")
        )
        fake.trade(v.market, "50010.5", v.wire("0.03"), side="buy")  # a buyer lifts 0.03
        fake.trade(v.market, "50010.0", v.wire("0.07"), side="sell")  # a seller hits 0.07
        await until(lambda: len(trades) == 2 and len(tops) >= 2)
        for t in tasks:
            t.cancel()
        assert [(t.venue, t.symbol, t.price, t.qty_base, t.buyer_is_maker) for t in trades] == [
            (v.venue, "BTCUSDT", 50010.5, 0.03, False),
            (v.venue, "BTCUSDT", 50010.0, 0.07, True),
        ]
        top = tops[-1]
        assert (top.venue, top.symbol, top.bid, top.bid_qty_base, top.ask, top.ask_qty_base) == (
            v.venue,
            "BTCUSDT",
            50010.0,
            1.25,
            50010.5,
            0.75,
        )
        assert all(t.ts_ns > 0 for t in [*trades, *tops])
        assert venue.stream_errors == 0

    run(v, fake, body)


def test_fills_on_the_private_stream_once_each_with_fees(vf: Any) -> None:
    """A 0.05 BTC bid at 49,990 filled 0.02 then 0.03 by public trades through it (maker):
    Bybit fees 0.02 × 49,990 × 0.0001 = 0.09998 and 0.03 × 49,990 × 0.0001 = 0.14997; OKX
    (0.0002) 0.19996 and 0.29994."""
    v, fake = vf

    async def body(venue: LiveVenue) -> None:
        fills: list[Fill] = []
        task = asyncio.create_task(collect(venue.fills(), fills))
        await subscribed(fake, v.private_topic)
        assert fake.ws_logins == 1  # logged in once, the signature checked
        await venue.place(buy_limit(v, "ws.f-1", 0.05, 49990.0))
        fake.trade(v.market, "49990.0", v.wire("0.02"))
        await until(lambda: len(fills) == 1)
        assert venue.orders is not None
        assert venue.orders.state("ws.f-1").status is OrderStatus.PARTIALLY_FILLED
        fake.trade(v.market, "49985.0", v.wire("1.0"))  # through the price: the other 0.03
        await until(lambda: len(fills) == 2)
        await asyncio.sleep(0.3)  # cache scans: nothing may be booked twice
        task.cancel()
        assert [
            (f.client_order_id, f.symbol, f.side, f.qty_base, f.price, f.liquidity.value)
            for f in fills
        ] == [
            ("ws.f-1", "BTCUSDT", Side.BUY, Decimal("0.02"), Decimal("49990"), "maker"),
            ("ws.f-1", "BTCUSDT", Side.BUY, Decimal("0.03"), Decimal("49990"), "maker"),
        ]
        fees = {"bybit": ["0.09998", "0.14997"], "okx": ["0.19996", "0.29994"]}[v.venue]
        assert [f.fee_usd for f in fills] == [Decimal(x) for x in fees]
        assert [f.fee_usd for f in fills] == [
            q * Decimal("49990") * v.maker for q in (Decimal("0.02"), Decimal("0.03"))
        ]
        st = venue.orders.state("ws.f-1")
        assert (st.status, st.filled_base) == (OrderStatus.FILLED, Decimal("0.05"))
        assert venue.rest_polls == 0 and venue.stream_errors == 0  # all over the websocket
        # OKX also pushed the order's "live" state (no tradeId): not a fill
        assert len(fake.ws_private_sent) == {"bybit": 2, "okx": 3}[v.venue]

    run(v, fake, body)


def test_duplicate_and_reordered_frames_do_not_double_a_fill(vf: Any) -> None:
    v, fake = vf

    async def body(venue: LiveVenue) -> None:
        fills: list[Fill] = []
        task = asyncio.create_task(collect(venue.fills(), fills))
        await subscribed(fake, v.private_topic)
        await venue.place(buy_limit(v, "ws.d-1", 0.05, 49990.0))
        fake.ws_duplicate = True
        fake.hold_ws_private(4)  # the two executions, each twice, sent newest first
        fake.trade(v.market, "49990.0", v.wire("0.02"))
        fake.trade(v.market, "49985.0", v.wire("1.0"))
        await until(lambda: len(fills) == 2)
        await asyncio.sleep(0.3)
        task.cancel()
        assert sorted(f.qty_base for f in fills) == [Decimal("0.02"), Decimal("0.03")]
        assert venue.orders is not None
        st = venue.orders.state("ws.d-1")
        # the fill completing the order came first: the state did not go back
        assert (st.status, st.filled_base) == (OrderStatus.FILLED, Decimal("0.05"))
        assert venue.rest_polls == 0

    run(v, fake, body)


def test_a_dropped_private_socket_loses_and_doubles_nothing(vf: Any) -> None:
    v, fake = vf

    async def body(venue: LiveVenue) -> None:
        fills: list[Fill] = []
        task = asyncio.create_task(collect(venue.fills(), fills))
        await subscribed(fake, v.private_topic)
        await venue.place(buy_limit(v, "ws.x-1", 0.05, 49990.0))
        assert await asyncio.to_thread(fake.drop_ws, "private", refuse=True) == 1
        fake.trade(v.market, "49990.0", v.wire("0.02"))  # nobody on the stream: REST polls
        await until(lambda: len(fills) == 1)
        assert venue.stream_errors >= 1 and venue.rest_polls >= 1
        fake.allow_ws()
        await subscribed(fake, v.private_topic, times=2)  # reconnected, logged in again
        fake.trade(v.market, "49985.0", v.wire("1.0"))
        await until(lambda: len(fills) == 2)
        await asyncio.sleep(0.3)  # more polls and cache scans: nothing may be booked twice
        task.cancel()
        assert [f.qty_base for f in fills] == [Decimal("0.02"), Decimal("0.03")]
        assert fake.ws_logins >= 2
        assert venue.orders is not None
        assert venue.orders.state("ws.x-1").status is OrderStatus.FILLED

    run(v, fake, body)


def test_a_dropped_public_socket_resubscribes(vf: Any) -> None:
    v, fake = vf
    public = "linear" if v.venue == "bybit" else "public"

    async def body(venue: LiveVenue) -> None:
        trades: list[Trade] = []
        task = asyncio.create_task(collect(venue.trades(["BTCUSDT"]), trades))
        await subscribed(fake, v.trade_topic)
        fake.trade(v.market, "50001.0", v.wire("0.5"), side="buy")
        await until(lambda: len(trades) == 1)
        assert await asyncio.to_thread(fake.drop_ws, public) == 1
        await until(lambda: venue.stream_errors >= 1)
        await subscribed(fake, v.trade_topic, times=2)
        fake.trade(v.market, "50002.0", v.wire("0.25"), side="sell")
        await until(lambda: len(trades) == 2)
        task.cancel()
        assert [(t.price, t.qty_base, t.buyer_is_maker) for t in trades] == [
            (50001.0, 0.5, False),
            (50002.0, 0.25, True),
        ]

    run(v, fake, body)


def test_keepalive_pings_are_answered(vf: Any) -> None:
    """ccxt.pro pings every ``keepAlive`` ms (Bybit ``{"op": "ping"}``, OKX the text
    ``ping``) and drops a connection that has had no pong for 2 × ``keepAlive``: with 250 ms
    the streams live through many pings and still deliver."""
    v, fake = vf

    async def body(venue: LiveVenue) -> None:
        venue.ex.streaming["keepAlive"] = 250
        fills: list[Fill] = []
        trades: list[Trade] = []
        tasks = [
            asyncio.create_task(collect(venue.fills(), fills)),
            asyncio.create_task(collect(venue.trades(["BTCUSDT"]), trades)),
        ]
        await subscribed(fake, v.private_topic)
        await subscribed(fake, v.trade_topic)
        await until(lambda: fake.ws_pings >= 8)  # about 1 s on the two connections
        await venue.place(buy_limit(v, "ws.p-1", 0.02, 49990.0))
        fake.trade(v.market, "49990.0", v.wire("0.02"))
        await until(lambda: len(fills) == 1 and len(trades) == 1)
        for t in tasks:
            t.cancel()
        assert venue.stream_errors == 0 and venue.rest_polls == 0
        assert (fake.ws_connections["private"], fills[0].qty_base) == (1, Decimal("0.02"))

    run(v, fake, body)


@pytest.mark.parametrize("v", [BYBIT, OKX], ids=["bybit", "okx"])
def test_keys_never_in_logs_or_errors(v: V, caplog: pytest.LogCaptureFixture) -> None:
    """A key whose secret no longer matches: the websocket login is refused (Bybit's refusal
    here quotes the request, key included, as ccxt documents Bybit doing), the REST fallback
    is refused too; the key appears in no log record and no error."""
    caplog.set_level(logging.DEBUG)
    with v.make() as fake:
        fake.set_book(v.market, "50000.0", "50000.1")
        if isinstance(fake, FakeBybit):
            fake.ws_echo_auth_request = True

        async def body(venue: LiveVenue) -> None:
            venue.track(["BTCUSDT"])
            if v.venue == "bybit":  # the account mode ccxt.pro reads (REST) before connecting
                await venue.ex.is_unified_enabled()
            venue.ex.secret = "wrong-secret-9d8c7b"  # the key was rotated under us
            with pytest.raises(VenueError) as ei:
                await collect(venue.fills(), [])
            text.append(str(ei.value))

        text: list[str] = []
        run(v, fake, body)
        assert fake.ws_logins == 0
    logged = caplog.text
    # the stream's refusal was logged (Bybit 10004 / OKX 60007 "Invalid sign"), then the
    # REST poll's refusal raised (Bybit 10004, OKX 50113)
    assert "Invalid sign" in logged
    if v.venue == "bybit":  # the refusal quoting the key was logged, the key masked
        assert '"request":{"op":"auth","args":["***"' in logged
    assert ("10004" if v.venue == "bybit" else "50113") in text[0]
    for secret in (KEY, SECRET, PHRASE, "wrong-secret-9d8c7b"):
        assert secret not in text[0] + logged


def test_a_stream_ccxt_pro_lacks_on_bybit_is_a_one_line_error() -> None:
    method = "watch_liquidations_for_symbols"
    with BYBIT.make() as fake:
        fake.set_book(BYBIT.market, "50000.0", "50000.1")

        async def body(venue: LiveVenue) -> None:
            with pytest.raises(VenueError) as ei:
                await collect(venue.liquidations(["BTCUSDT"]), [])
            msg = str(ei.value)
            assert msg.startswith("bybit: ccxt.pro ") and msg.endswith(
                f"has no {method} for this venue"
            )
            assert "\n" not in msg and venue.stream_errors == 0
            # the check a caller (a market-data feed) can make before opening a stream;
            # Bybit's marks come from watch_tickers
            streams = ("trades", "book_tops", "fills", "mark_prices")
            assert [venue.has_stream(s) for s in streams] == [True] * 4
            assert not venue.has_stream("liquidations")

        run(BYBIT, fake, body)
        assert sum(fake.ws_connections.values()) == 0  # nothing was tried


def _mark_row(m: MarkPrice) -> tuple[Any, ...]:
    """A mark as comparable numbers (NaN as the string "nan")."""
    idx = "nan" if math.isnan(m.index_price) else m.index_price
    rate = "nan" if math.isnan(m.predicted_funding_rate) else m.predicted_funding_rate
    return (m.venue, m.symbol, m.ts_ns, m.mark_price, idx, rate, m.next_funding_ts_ns)


def test_bybit_marks_from_the_ticker_topic_with_deltas_merged() -> None:
    """Bybit ``tickers.BTCUSDT``: the recorded snapshot (ws_ticker_linear.json: mark
    17,217.33, index 17,227.36, fundingRate −0.000212 for the settlement at nextFundingTime
    1,673,280,000,000 ms = 2023-01-09 16:00 UTC, message ts 1,673,272,861,686 ms), then deltas
    carrying only what changed: each event keeps the last value of every other field."""
    with BYBIT.make() as fake:

        async def body(venue: LiveVenue) -> None:
            marks: list[MarkPrice] = []
            task = asyncio.create_task(collect(venue.mark_prices(["BTCUSDT"]), marks))
            await subscribed(fake, "tickers.BTCUSDT")
            await until(lambda: len(marks) == 1)
            fake.set_ticker("BTCUSDT", ts_ms=1_673_272_862_000, markPrice="17218.50")
            await until(lambda: len(marks) == 2)
            fake.set_ticker(
                "BTCUSDT", ts_ms=1_673_272_863_000, indexPrice="17229.10", fundingRate="-0.00015"
            )
            await until(lambda: len(marks) == 3)
            # after the 16:00 settlement: the next one 8 h later, 1,673,308,800,000 ms
            fake.set_ticker(
                "BTCUSDT",
                ts_ms=1_673_280_001_000,
                fundingRate="0.0001",
                nextFundingTime="1673308800000",
            )
            fake.set_ticker("BTCUSDT", ts_ms=1_673_280_002_000, lastPrice="17300.00")
            await until(lambda: len(marks) == 5)
            task.cancel()
            ms = 1_000_000
            assert [_mark_row(m) for m in marks] == [
                ("bybit", "BTCUSDT", 1_673_272_861_686 * ms, 17217.33, 17227.36, -0.000212,
                 1_673_280_000_000 * ms),
                ("bybit", "BTCUSDT", 1_673_272_862_000 * ms, 17218.5, 17227.36, -0.000212,
                 1_673_280_000_000 * ms),
                ("bybit", "BTCUSDT", 1_673_272_863_000 * ms, 17218.5, 17229.1, -0.00015,
                 1_673_280_000_000 * ms),
                ("bybit", "BTCUSDT", 1_673_280_001_000 * ms, 17218.5, 17229.1, 0.0001,
                 1_673_308_800_000 * ms),
                # a delta of another field: the same mark and funding, the newer stamp
                ("bybit", "BTCUSDT", 1_673_280_002_000 * ms, 17218.5, 17229.1, 0.0001,
                 1_673_308_800_000 * ms),
            ]  # fmt: skip
            assert venue.stream_errors == 0

        run(BYBIT, fake, body)
        assert fake.ws_subscriptions["tickers.BTCUSDT"] == 1


def test_okx_marks_join_the_mark_price_and_funding_rate_channels() -> None:
    """OKX ``mark-price`` (the recorded item: markPx 84,660.1 at ts 1,744,590,349,506 ms) and
    ``funding-rate`` (ws_funding_rate.json: fundingRate 0.0001 settled at fundingTime
    1,744,590,349,506 ms) joined per symbol; no index on these channels (NaN). Then a new
    mark keeps the rate, and a new funding message (0.00012 for 2025-04-14 08:00 UTC =
    1,744,617,600,000 ms) keeps the mark."""
    with OKX.make() as fake:

        async def body(venue: LiveVenue) -> None:
            marks: list[MarkPrice] = []
            task = asyncio.create_task(collect(venue.mark_prices(["BTCUSDT"]), marks))
            await subscribed(fake, "mark-price:BTC-USDT-SWAP")
            await subscribed(fake, "funding-rate:BTC-USDT-SWAP")
            await until(lambda: any(m.next_funding_ts_ns for m in marks))
            n = len(marks)  # 2, or 1 when the funding message came before any mark
            fake.set_mark("BTC-USDT-SWAP", "84700.5", ts_ms=1_744_590_350_000)
            await until(lambda: len(marks) == n + 1)
            fake.set_funding_now(
                "BTC-USDT-SWAP", "0.00012", 1_744_617_600_000, ts_ms=1_744_590_351_000
            )
            await until(lambda: len(marks) == n + 2)
            task.cancel()
            ms = 1_000_000
            first = ("okx", "BTCUSDT", 1_744_590_349_506 * ms, 84660.1, "nan")
            joined = [*first, 0.0001, 1_744_590_349_506 * ms]
            assert [_mark_row(m) for m in marks[n - 1 :]] == [
                tuple(joined),
                ("okx", "BTCUSDT", 1_744_590_350_000 * ms, 84700.5, "nan", 0.0001,
                 1_744_590_349_506 * ms),
                ("okx", "BTCUSDT", 1_744_590_351_000 * ms, 84700.5, "nan", 0.00012,
                 1_744_617_600_000 * ms),
            ]  # fmt: skip
            if n == 2:  # the mark before any funding message: rate NaN, no settlement time
                assert _mark_row(marks[0]) == (*first, "nan", 0)
            assert venue.stream_errors == 0 and venue.has_stream("mark_prices")

        run(OKX, fake, body)


def test_a_spot_perp_pair_books_each_leg_once_from_the_shared_stream(vf: Any) -> None:
    """One unified account: both legs' clients get every execution (Bybit ``execution``
    carries both categories, OKX ``orders`` instType ANY); each venue books its own. A
    0.02 BTC perp short at the bid 50,000.0 (taker) and a 0.02 BTC spot buy at the spot ask
    50,010.1 paying 0.1 % of 0.02 = 0.00002 BTC, 0.00002 × 50,010.1 = 1.000202 USD."""
    v, fake = vf
    fake.set_book(v.spot_market, "50010.0", "50010.1", spot=True)

    async def main() -> None:
        venue = await open_spot_perp_venue(
            v.venue,
            environ=v.env,
            dotenv_path=None,
            api_url=fake.url,
            ws_url=fake.ws_url,
            spot_ws_url=fake.ws_url,
            timeout_ms=1000,
            enable_rate_limit=False,
            retry=RETRY,
            poll_interval_s=0.1,
            scan_interval_s=0.05,
        )
        try:
            venue.perp.ex.timeout_on_exit = venue.spot.ex.timeout_on_exit = 0
            fills: list[Fill] = []
            task = asyncio.create_task(collect(venue.fills(), fills))
            await subscribed(fake, v.private_topic, times=2)  # one client per leg
            perp = Order("pp-1", v.venue, "BTCUSDT", Side.SELL, 0.02)
            spot = Order("sp-1", v.venue, "BTCUSDT.SPOT", Side.BUY, 0.02)
            assert (await venue.place(perp)).status is OrderStatus.FILLED
            assert (await venue.place(spot)).status is OrderStatus.FILLED
            await until(lambda: len(fills) == 2)
            await asyncio.sleep(0.3)
            task.cancel()
            got = sorted(
                (f.symbol, f.client_order_id, f.side, f.qty_base, f.price, f.fee_usd) for f in fills
            )
            assert got[0][:5] == ("BTCUSDT", "pp-1", Side.SELL, Decimal("0.02"), Decimal("50000"))
            assert got[1] == (
                "BTCUSDT.SPOT",
                "sp-1",
                Side.BUY,
                Decimal("0.02"),
                Decimal("50010.1"),
                Decimal("1.000202"),
            )
            assert venue.perp.stream_errors == venue.spot.stream_errors == 0
            assert venue.perp.rest_polls == venue.spot.rest_polls == 0
        finally:
            await venue.close()

    asyncio.run(main())


def _sign(payload: str, *, b64: bool) -> str:
    digest = hmac.new(SECRET.encode(), payload.encode(), hashlib.sha256)
    return base64.b64encode(digest.digest()).decode() if b64 else digest.hexdigest()


def test_the_fakes_check_logins_as_the_venues_document() -> None:
    """The private endpoints spoken to directly: a private subscription before the login is
    refused; a login signed right but stale is refused (Bybit: ``expires`` in the past →
    10002; OKX: a timestamp 60 s old → 60006); a fresh one is accepted, then the
    subscription; pings are answered (Bybit ``op`` pong, OKX the text ``pong``)."""

    async def bybit(url: str) -> list[Any]:
        async with aiohttp.ClientSession() as s, s.ws_connect(url + "/v5/private") as ws:
            out = []
            now = int(time.time() * 1000)
            for m in (
                {"op": "subscribe", "req_id": "1", "args": ["execution"]},
                {
                    "op": "auth",
                    "args": [KEY, str(now - 1), _sign(f"GET/realtime{now - 1}", b64=False)],
                },
                {
                    "op": "auth",
                    "args": [KEY, str(now + 9000), _sign(f"GET/realtime{now + 9000}", b64=False)],
                },
                {"op": "subscribe", "req_id": "2", "args": ["execution"]},
                {"op": "ping", "req_id": "3"},
            ):
                await ws.send_str(json.dumps(m))
                out.append(json.loads(await ws.receive_str()))
            return out

    async def okx(url: str) -> list[Any]:
        async with aiohttp.ClientSession() as s, s.ws_connect(url + "/private") as ws:
            out: list[Any] = []
            now = int(time.time())
            sub = {"op": "subscribe", "args": [{"channel": "orders", "instType": "SWAP"}]}
            for ts in (None, now - 60, now):  # None: subscribe before any login
                if ts is None:
                    await ws.send_str(json.dumps(sub))
                else:
                    arg = {"apiKey": KEY, "passphrase": PHRASE, "timestamp": str(ts)}
                    arg["sign"] = _sign(f"{ts}GET/users/self/verify", b64=True)
                    await ws.send_str(json.dumps({"op": "login", "args": [arg]}))
                out.append(json.loads(await ws.receive_str()))
            await ws.send_str(json.dumps(sub))
            out.append(json.loads(await ws.receive_str()))
            await ws.send_str("ping")
            out.append(await ws.receive_str())
            return out

    with BYBIT.make() as fb:
        got = asyncio.run(bybit(fb.ws_url))
        assert fb.ws_logins == 1
    assert (got[0]["success"], got[0]["ret_msg"], got[0]["req_id"]) == (
        False,
        "Request not authorized",
        "1",
    )
    assert [(g["retCode"], g["success"]) for g in got[1:3]] == [(10002, False), (0, True)]
    assert (got[3]["success"], got[3]["op"], got[3]["req_id"]) == (True, "subscribe", "2")
    assert (got[4]["op"], got[4]["req_id"]) == ("pong", "3")
    with OKX.make() as fo:
        got = asyncio.run(okx(fo.ws_url))
        assert fo.ws_logins == 1
    assert [(g.get("event"), g.get("code")) for g in got[:3]] == [
        ("error", "60011"),
        ("error", "60006"),
        ("login", "0"),
    ]
    assert got[3] == {
        "event": "subscribe",
        "arg": {"channel": "orders", "instType": "SWAP"},
        "connId": got[3]["connId"],
    }
    assert got[4] == "pong"


def test_both_legs_market_data_through_the_spot_perp_venue(vf: Any) -> None:
    """Trades and book tops of the perp and the spot market of one coin through
    :func:`open_spot_perp_venue` (Bybit: ``/v5/public/linear`` and ``/v5/public/spot``, the
    same topic names; OKX: BTC-USDT-SWAP in contracts, BTC-USDT in BTC). Spot sizes are base
    units on both venues: 0.4 BTC bid, 0.6 BTC ask, a 0.015 BTC trade."""
    v, fake = vf
    spot_topic = v.trade_topic if v.venue == "bybit" else "trades:BTC-USDT"

    async def main() -> None:
        venue = await open_spot_perp_venue(
            v.venue,
            environ=v.env,
            dotenv_path=None,
            api_url=fake.url,
            ws_url=fake.ws_url,
            spot_ws_url=fake.ws_url,
            timeout_ms=1000,
            enable_rate_limit=False,
            retry=RETRY,
        )
        try:
            venue.perp.ex.timeout_on_exit = venue.spot.ex.timeout_on_exit = 0
            trades: list[Trade] = []
            tops: list[BookTop] = []
            syms = ["BTCUSDT", "BTCUSDT.SPOT"]
            tasks = [
                asyncio.create_task(collect(venue.trades(syms), trades)),
                asyncio.create_task(collect(venue.book_tops(syms), tops)),
            ]
            await subscribed(fake, v.trade_topic)
            await subscribed(fake, spot_topic, times=2 if v.venue == "bybit" else 1)
            fake.set_book(
                v.spot_market, "50010.0", "50010.1", spot=True, bid_qty="0.4", ask_qty="0.6"
            )
            fake.trade(v.spot_market, "50010.1", "0.015", spot=True, side="buy")
            fake.trade(v.market, "50000.0", v.wire("0.05"), side="sell")
            await until(lambda: len(trades) == 2 and any(t.symbol == "BTCUSDT.SPOT" for t in tops))
            for t in tasks:
                t.cancel()
            assert sorted((t.symbol, t.price, t.qty_base, t.buyer_is_maker) for t in trades) == [
                ("BTCUSDT", 50000.0, 0.05, True),
                ("BTCUSDT.SPOT", 50010.1, 0.015, False),
            ]
            spot_top = [t for t in tops if t.symbol == "BTCUSDT.SPOT"][-1]
            assert (spot_top.bid, spot_top.bid_qty_base, spot_top.ask, spot_top.ask_qty_base) == (
                50010.0,
                0.4,
                50010.1,
                0.6,
            )
        finally:
            await venue.close()

    asyncio.run(main())
