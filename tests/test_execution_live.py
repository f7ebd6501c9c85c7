"""LiveVenue (ccxt async + ccxt.pro) against the loopback fake Binance USD-M exchange.

The fake is a real HTTP + websocket server on 127.0.0.1 (tests/fake_exchange.py) that checks
the HMAC signature and recvWindow of every private request, matches orders against its book
and public trades, and pushes ORDER_TRADE_UPDATE messages on the user-data stream. Expected
numbers are worked out by hand (fake fees: maker 0.02 %, taker 0.05 %)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from perpdesk.domain import Fill, Order, OrderType, Side, TimeInForce
from perpdesk.execution.ccxt_live import LiveVenue, SpotPerpVenue
from perpdesk.execution.orders import ClientIdFactory, OutcomeUnknownError, RetryPolicy
from perpdesk.execution.paper import PaperVenue, merge_streams
from perpdesk.execution.protocol import OrderStatus, Venue, VenueError
from perpdesk.secrets import SecretError
from tests.fake_exchange import FakeBinanceUSDM, Fault

KEY, SECRET = "fake-api-key-7f3a9c", "fake-api-secret-b81d22e5"
ENV = {"PERPDESK_BINANCE_API_KEY": KEY, "PERPDESK_BINANCE_API_SECRET": SECRET}
ORDER = "/fapi/v1/order"


@pytest.fixture
def fake():
    with FakeBinanceUSDM(int(time.time() * 1000), api_key=KEY, api_secret=SECRET) as f:
        f.funding_info = [
            {
                "symbol": "ETHUSDT",
                "adjustedFundingRateCap": "0.02",
                "adjustedFundingRateFloor": "-0.02",
                "fundingIntervalHours": 4,
                "disclaimer": False,
            }
        ]
        f.set_book("BTCUSDT", "50000.0", "2.0", "50000.1", "2.0", publish=False)
        yield f


def live(fake: FakeBinanceUSDM, **kw: Any) -> LiveVenue:
    kw.setdefault("retry", RetryPolicy(base_delay_s=0.01, max_delay_s=0.05, settle_s=0.35))
    kw.setdefault("poll_interval_s", 0.1)
    kw.setdefault("reconnect_delay_s", 0.05)
    kw.setdefault("scan_interval_s", 0.05)
    v = LiveVenue.from_env(
        environ=ENV,
        dotenv_path=None,
        api_url=fake.url,
        ws_url=fake.ws_url,
        timeout_ms=kw.pop("timeout_ms", 200),
        recv_window_ms=300,
        enable_rate_limit=False,  # ccxt's client throttle only slows a loopback test
        **kw,
    )
    v.ex.timeout_on_exit = 0  # ccxt waits 250 ms on close for TLS shutdown; no TLS here
    return v


def run(fake: FakeBinanceUSDM, body: Callable[[LiveVenue], Awaitable[None]], **kw: Any) -> None:
    async def main() -> None:
        v = live(fake, **kw)
        try:
            await v.connect()
            await body(v)
        finally:
            await v.close()

    asyncio.run(main())


def limit(cid: str, side: Side, qty: float, px: float, **kw: Any) -> Order:
    return Order(cid, "binanceusdm", "BTCUSDT", side, qty, OrderType.LIMIT, price=px, **kw)


async def collect(v: LiveVenue, into: list[Fill]) -> None:
    async for f in v.fills():
        into.append(f)


async def until(cond: Callable[[], bool], timeout_s: float = 5.0) -> None:
    end = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.02)


def test_instruments_balances_place_query_cancel_and_market_fill(fake: FakeBinanceUSDM) -> None:
    async def body(v: LiveVenue) -> None:
        assert isinstance(v, Venue)
        inst = await v.instruments()
        assert (inst["BTCUSDT"].tick_size, inst["BTCUSDT"].lot_size) == (0.1, 0.001)
        # fundingInfo lists ETHUSDT at 4 h; unlisted symbols settle every 8 h
        assert (inst["BTCUSDT"].funding_interval_h, inst["ETHUSDT"].funding_interval_h) == (8, 4)
        assert v.symbols is not None and v.symbols.unified("BTCUSDT") == "BTC/USDT:USDT"
        assert (await v.balances())["USDT"].total == Decimal("10000")
        st = await v.place(limit("c-1", Side.BUY, 0.01, 49000.0))
        assert st.status is OrderStatus.NEW and st.venue_order_id
        q = await v.query("c-1", "BTCUSDT")
        assert q is not None and q.status is OrderStatus.NEW and q.qty_base == Decimal("0.01")
        assert [o.client_order_id for o in await v.open_orders()] == ["c-1"]
        assert (await v.cancel("c-1", "BTCUSDT")).status is OrderStatus.CANCELED
        assert await v.open_orders("BTCUSDT") == []
        assert await v.query("nope-1", "BTCUSDT") is None
        # market buy 0.02 at the ask 50000.1; taker fee 0.02 × 50000.1 × 0.0005 = 0.500001
        m = await v.place(Order("c-2", "binanceusdm", "BTCUSDT", Side.BUY, 0.02))
        assert m.status is OrderStatus.FILLED and m.avg_price == Decimal("50000.1")
        (pos,) = await v.positions()
        assert (pos.symbol, pos.qty_base, pos.entry_price) == (
            "BTCUSDT",
            Decimal("0.02"),
            Decimal("50000.1"),
        )
        # wallet 10000 − 0.500001 = 9999.499999; margin balance adds the unrealised PnL at
        # the fake's mid 50000.05: 0.02 × (50000.05 − 50000.1) = −0.001 → 9999.498999
        assert fake.wallet_usdt == Decimal("9999.499999")
        assert (await v.balances())["USDT"].total == Decimal("9999.498999")
        # funding: the long pays 0.02 × 50000 × 0.0001 = 0.1
        t_ms = int(time.time() * 1000)
        fake.settle_funding("BTCUSDT", "0.0001", "50000", t_ms)
        (fp,) = await v.funding_payments((t_ms - 1) * 1_000_000)
        assert (fp.symbol, fp.amount_usd, fp.ts_ns) == ("BTCUSDT", Decimal("-0.1"), t_ms * 10**6)

    run(fake, body)


def test_partial_fill_then_completion_arrive_on_the_user_stream(fake: FakeBinanceUSDM) -> None:
    async def body(v: LiveVenue) -> None:
        fills: list[Fill] = []
        task = asyncio.create_task(collect(v, fills))
        assert await asyncio.to_thread(fake.wait_user_connections, 1)
        await v.place(limit("p-1", Side.BUY, 0.01, 49990.0))
        fake.trade("BTCUSDT", "49990.0", "0.004", True)  # seller hits our bid: 0.004
        await until(lambda: len(fills) == 1)
        assert v.orders is not None
        assert v.orders.state("p-1").status is OrderStatus.PARTIALLY_FILLED
        fake.trade("BTCUSDT", "49980.0", "1.0", True)  # through the price: the other 0.006
        await until(lambda: len(fills) == 2)
        task.cancel()
        assert [(f.qty_base, f.price, f.liquidity.value) for f in fills] == [
            (Decimal("0.004"), Decimal("49990.0"), "maker"),
            (Decimal("0.006"), Decimal("49990.0"), "maker"),
        ]
        # maker fees 0.004 × 49990 × 0.0002 = 0.039992 and 0.006 × 49990 × 0.0002 = 0.059988
        assert [f.fee_usd for f in fills] == [Decimal("0.039992"), Decimal("0.059988")]
        st = v.orders.state("p-1")
        assert st.status is OrderStatus.FILLED and st.filled_base == Decimal("0.010")
        assert v.rest_polls == 0  # all came over the websocket

    run(fake, body)


def test_rejects_surface_as_rejects_and_the_venue_keeps_working(fake: FakeBinanceUSDM) -> None:
    async def body(v: LiveVenue) -> None:
        fake.inject(
            ORDER, Fault.binance_error(400, -2019, "Margin is insufficient."), method="POST"
        )
        st = await v.place(limit("r-1", Side.BUY, 0.01, 49000.0))
        assert st.status is OrderStatus.REJECTED and "Margin is insufficient" in st.reason
        # post-only that would take liquidity: Binance -5022
        po = await v.place(limit("r-2", Side.BUY, 0.01, 50000.1, tif=TimeInForce.POST_ONLY))
        assert po.status is OrderStatus.REJECTED and "-5022" in po.reason
        # too big for the 10 000 USDT wallet at 20x: 5 × 50000 / 20 = 12 500 > 10 000
        big = await v.place(limit("r-3", Side.BUY, 5.0, 50000.0))
        assert big.status is OrderStatus.REJECTED and "-2019" in big.reason
        # off the lot grid (0.001) or the tick grid (0.1): refused before anything is sent
        posts = len(fake.requests_to(ORDER))
        lot = await v.place(limit("r-5", Side.BUY, 0.0105, 49000.0))
        tick = await v.place(limit("r-6", Side.BUY, 0.01, 49000.05))
        assert "lot_size" in lot.reason and "tick_size" in tick.reason
        assert lot.status is tick.status is OrderStatus.REJECTED
        assert len(fake.requests_to(ORDER)) == posts
        ok = await v.place(limit("r-4", Side.BUY, 0.01, 49000.0))
        assert ok.status is OrderStatus.NEW
        assert [len(fake.orders_with_client_id(c)) for c in ("r-1", "r-2", "r-3", "r-4")] == [
            0,
            0,
            0,
            1,
        ]

    run(fake, body)


def test_timeout_with_the_order_placed_is_not_resent(fake: FakeBinanceUSDM) -> None:
    """The exchange executes the order but the answer comes after the client's timeout:
    the manager queries by client id, finds it, and sends nothing more."""

    async def body(v: LiveVenue) -> None:
        fake.inject(ORDER, Fault.lost_response(0.35), method="POST")
        st = await v.place(limit("t-1", Side.BUY, 0.01, 49000.0))
        assert st.status is OrderStatus.NEW
        assert len(fake.orders_with_client_id("t-1")) == 1
        posts = [r for r in fake.requests_to(ORDER) if r.method == "POST"]
        gets = [r for r in fake.requests_to(ORDER) if r.method == "GET"]
        assert len(posts) == 1 and len(gets) == 1
        assert gets[0].query["origClientOrderId"] == "t-1"

    run(fake, body)


def test_timeout_before_execution_is_resent_once_with_the_same_id(fake: FakeBinanceUSDM) -> None:
    """The request is held in the network past its recvWindow: the exchange refuses it
    (-1021) when it arrives, the query finds nothing, the order is sent again — exactly one
    order with that client id exists afterwards."""

    async def body(v: LiveVenue) -> None:
        fake.inject(ORDER, Fault.delay(0.4), method="POST")
        st = await v.place(limit("t-2", Side.BUY, 0.01, 49000.0))
        assert st.status is OrderStatus.NEW
        await asyncio.sleep(0.1)  # the held request was refused (-1021) meanwhile
        assert len(fake.orders_with_client_id("t-2")) == 1
        posts = [r for r in fake.requests_to(ORDER) if r.method == "POST"]
        assert len(posts) == 2
        assert {p.query["newClientOrderId"] for p in posts} == {"t-2"}

    run(fake, body)


def test_429_and_418_retry_after_are_honoured(fake: FakeBinanceUSDM) -> None:
    waits: list[float] = []

    async def sleep(s: float) -> None:
        waits.append(s)

    async def body(v: LiveVenue) -> None:
        fake.inject(ORDER, Fault.rate_limited(7), Fault.banned(30), method="POST")
        st = await v.place(limit("w-1", Side.BUY, 0.01, 49000.0))
        assert st.status is OrderStatus.NEW
        # backoff 0.01 × 2**k is below Retry-After, so the waits are exactly 7 and 30 s
        assert waits == [7.0, 30.0]
        assert len([r for r in fake.requests_to(ORDER) if r.method == "POST"]) == 3
        assert len(fake.orders_with_client_id("w-1")) == 1

    run(fake, body, sleep=sleep)


def test_fills_fall_back_to_rest_polling_when_the_user_stream_drops(
    fake: FakeBinanceUSDM,
) -> None:
    async def body(v: LiveVenue) -> None:
        fills: list[Fill] = []
        task = asyncio.create_task(collect(v, fills))
        assert await asyncio.to_thread(fake.wait_user_connections, 1)
        await v.place(limit("d-1", Side.BUY, 0.01, 49990.0))
        await asyncio.to_thread(fake.drop_user_streams, refuse=True)
        fake.trade("BTCUSDT", "49990.0", "0.004", True)  # nobody listening on the stream
        await until(lambda: len(fills) == 1)
        assert v.stream_errors >= 1 and v.rest_polls >= 1
        fake.allow_user_streams()
        assert await asyncio.to_thread(fake.wait_user_connections, 2)
        fake.trade("BTCUSDT", "49990.0", "0.006", True)
        await until(lambda: len(fills) == 2)
        await asyncio.sleep(0.25)  # more polls and cache scans: nothing may be booked twice
        task.cancel()
        ids = sorted(str(t["id"]) for t in fake.user_trades)
        assert len(fills) == 2 and sum(f.qty_base for f in fills) == Decimal("0.010")
        assert len(ids) == 2
        assert v.orders is not None and v.orders.state("d-1").status is OrderStatus.FILLED

    run(fake, body)


def test_duplicate_and_reordered_user_messages_do_not_double_book(fake: FakeBinanceUSDM) -> None:
    async def body(v: LiveVenue) -> None:
        fills: list[Fill] = []
        task = asyncio.create_task(collect(v, fills))
        assert await asyncio.to_thread(fake.wait_user_connections, 1)
        await v.place(limit("u-1", Side.BUY, 0.01, 49990.0))
        fake.user_ws_duplicate = True
        fake.hold_user_messages(4)  # the two TRADE updates, each twice, sent newest first
        fake.trade("BTCUSDT", "49990.0", "0.004", True)
        fake.trade("BTCUSDT", "49985.0", "0.5", True)
        await until(lambda: len(fills) == 2)
        await asyncio.sleep(0.3)
        task.cancel()
        assert sorted(f.qty_base for f in fills) == [Decimal("0.004"), Decimal("0.006")]
        assert v.orders is not None
        st = v.orders.state("u-1")
        # the FILLED update arrived before the PARTIALLY_FILLED one: the state did not go back
        assert st.status is OrderStatus.FILLED and st.filled_base == Decimal("0.010")

    run(fake, body)


def test_market_streams_feed_a_paper_venue(fake: FakeBinanceUSDM) -> None:
    """Live market data in (the fake's websocket), fills from the tick model: the paper
    order fills only when a public trade prints through it."""

    async def body(v: LiveVenue) -> None:
        inst = await v.instruments()
        paper = PaperVenue([inst["BTCUSDT"]], "1000", venue="paper")
        stream = merge_streams(v.trades(["BTCUSDT"]), v.book_tops(["BTCUSDT"]))
        feeder = asyncio.create_task(paper.run(stream))
        for s in ("btcusdt@trade", "btcusdt@bookTicker"):
            assert await asyncio.to_thread(fake.wait_subscribed, s)
        fake.set_book("BTCUSDT", "50000.0", "1.5", "50000.1", "2.5")
        await until(lambda: paper._quotes["BTCUSDT"].ask == 50000.1)
        paper.submit(
            Order("pp-1", "paper", "BTCUSDT", Side.SELL, 0.01, OrderType.LIMIT, price=50005.0)
        )
        fake.trade("BTCUSDT", "50004.0", "3.0", False)  # below our ask: no fill
        fake.trade("BTCUSDT", "50006.0", "3.0", False)  # a buyer lifts through 50005.0
        await until(lambda: len(paper.fill_log) == 1)
        feeder.cancel()
        (f,) = paper.fill_log
        assert (f.side, f.qty_base, f.price) == (Side.SELL, Decimal("0.01"), Decimal("50005.0"))
        assert paper.ctx.last_price("BTCUSDT") == 50006.0

    run(fake, body)


def test_keys_only_from_env_and_never_in_errors_or_logs(
    fake: FakeBinanceUSDM, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(SecretError, match="PERPDESK_BINANCE_API_KEY"):
        LiveVenue.from_env(environ={}, dotenv_path=None)
    wrong = {**ENV, "PERPDESK_BINANCE_API_SECRET": "wrong-secret-9d8c7b"}

    async def main() -> str:
        v = LiveVenue.from_env(
            environ=wrong,
            dotenv_path=None,
            api_url=fake.url,
            ws_url=fake.ws_url,
            retry=RetryPolicy(base_delay_s=0.01, settle_s=0.01),
        )
        try:
            await v.connect()
            with pytest.raises(VenueError) as ei:
                await v.balances()
            return str(ei.value) + repr(v.ex.secret is not None)
        finally:
            await v.close()

    caplog.set_level(logging.DEBUG)
    text = asyncio.run(main()) + caplog.text
    assert "-1022" in text
    for secret in (KEY, "wrong-secret-9d8c7b"):
        assert secret not in text


def test_unconfirmed_outcome_is_never_resent(fake: FakeBinanceUSDM) -> None:
    """The answer to the POST is lost and every query fails: the manager gives up with
    OutcomeUnknownError instead of sending again; a later submit asks first and finds it."""
    waits: list[float] = []

    async def sleep(s: float) -> None:
        waits.append(s)

    async def body(v: LiveVenue) -> None:
        fake.inject(ORDER, Fault.lost_response(0.35), method="POST")
        fake.inject(ORDER, *[Fault.server_error(503)] * 5, method="GET")
        o = limit("x-1", Side.BUY, 0.01, 49000.0)
        with pytest.raises(OutcomeUnknownError):
            await v.place(o)
        st = await v.place(o)  # the GETs work again: found, not resent
        assert st.status is OrderStatus.NEW and st.venue_order_id
        assert len([r for r in fake.requests_to(ORDER) if r.method == "POST"]) == 1
        assert len(fake.orders_with_client_id("x-1")) == 1

    run(fake, body, sleep=sleep)


def test_a_restarted_manager_queries_before_sending_a_restored_order(
    fake: FakeBinanceUSDM,
) -> None:
    o = limit("z-1", Side.SELL, 0.01, 51000.0)

    async def first(v: LiveVenue) -> None:
        assert (await v.place(o)).status is OrderStatus.NEW

    async def after_restart(v: LiveVenue) -> None:
        assert v.orders is not None
        v.orders.restore(o)  # in the ledger as sent, never confirmed
        st = await v.place(o)
        assert st.status is OrderStatus.NEW and st.client_order_id == "z-1"

    run(fake, first)
    run(fake, after_restart)
    methods = [r.method for r in fake.requests_to(ORDER)]
    assert methods == ["POST", "GET"]
    assert len(fake.orders_with_client_id("z-1")) == 1


def test_client_ids_are_deterministic_and_valid_for_binance() -> None:
    f = ClientIdFactory("carry.r7", start=41)
    assert [f.next() for _ in range(3)] == ["carry.r7-41", "carry.r7-42", "carry.r7-43"]
    assert f.next_n == 44
    assert ClientIdFactory("carry.r7", start=41).next() == "carry.r7-41"
    for bad in ("has space", "x" * 25, "é"):
        with pytest.raises(VenueError, match="client id prefix"):
            ClientIdFactory(bad)


def test_market_stream_reconnects_after_a_drop(fake: FakeBinanceUSDM) -> None:
    async def body(v: LiveVenue) -> None:
        got: list[Any] = []

        async def consume() -> None:
            async for t in v.trades(["BTCUSDT"]):
                got.append(t)

        task = asyncio.create_task(consume())
        assert await asyncio.to_thread(fake.wait_subscribed, "btcusdt@trade")
        fake.trade("BTCUSDT", "50001.0", "0.5", False)
        await until(lambda: len(got) == 1)
        assert await asyncio.to_thread(fake.drop_market_streams) == 1
        await until(lambda: v.stream_errors >= 1)
        assert await asyncio.to_thread(fake.wait_subscribed, "btcusdt@trade")  # resubscribed
        fake.trade("BTCUSDT", "50002.0", "0.25", True)
        await until(lambda: len(got) == 2)
        task.cancel()
        assert [(t.price, t.qty_base, t.buyer_is_maker) for t in got] == [
            (50001.0, 0.5, False),
            (50002.0, 0.25, True),
        ]

    run(fake, body)


def test_market_order_partly_filled_then_expired(fake: FakeBinanceUSDM) -> None:
    async def body(v: LiveVenue) -> None:
        fake.partial_next["BTCUSDT"] = Decimal("0.004")  # thin book: only 0.004 fills
        st = await v.place(Order("e-1", "binanceusdm", "BTCUSDT", Side.SELL, 0.01))
        assert st.status is OrderStatus.EXPIRED and st.filled_base == Decimal("0.004")
        assert st.avg_price == Decimal("50000.0")  # the bid
        (pos,) = await v.positions()
        assert pos.qty_base == Decimal("-0.004")

    run(fake, body)


FAST_FAULTS = {
    "429": lambda: Fault.rate_limited(1),
    "418": lambda: Fault.banned(2),
    "503": lambda: Fault.server_error(503),
    "truncated": Fault.truncated,
    "lost": lambda: Fault.lost_response(0.15),
}


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    derandomize=True,
)
@given(
    posts=st.lists(st.sampled_from(sorted(FAST_FAULTS)), max_size=4),
    gets=st.lists(st.sampled_from(sorted(FAST_FAULTS)), max_size=3),
)
def test_no_fault_sequence_places_a_duplicate(
    fake: FakeBinanceUSDM, posts: list[str], gets: list[str]
) -> None:
    """Property: whatever faults hit the order POSTs and the follow-up queries, the fake
    never holds two orders with one client id; a returned state is that one order."""
    cid = f"h-{len(fake.orders)}"
    with fake._lock:
        fake._faults.clear()
    fake.inject(ORDER, *[FAST_FAULTS[k]() for k in posts], method="POST")
    fake.inject(ORDER, *[FAST_FAULTS[k]() for k in gets], method="GET")

    async def nap(s: float) -> None:
        await asyncio.sleep(0)

    async def body(v: LiveVenue) -> None:
        try:
            st_ = await v.place(limit(cid, Side.BUY, 0.01, 49000.0))
        except VenueError:  # gave up (not placed) or OutcomeUnknownError (never resent)
            assert len(fake.orders_with_client_id(cid)) <= 1
            return
        (held,) = fake.orders_with_client_id(cid)
        assert st_.venue_order_id == str(held["orderId"]) and st_.status is OrderStatus.NEW

    run(fake, body, sleep=nap, timeout_ms=100)


# --------------------------------------------------------------------------- spot leg, stops


def spot_live(fake: FakeBinanceUSDM, **kw: Any) -> LiveVenue:
    kw.setdefault("retry", RetryPolicy(base_delay_s=0.01, max_delay_s=0.05, settle_s=0.35))
    v = LiveVenue.from_env(
        "binance",
        environ=ENV,
        dotenv_path=None,
        api_url=fake.url,
        ws_url=fake.spot_ws_url,
        ws_api_url=fake.spot_ws_api_url,
        timeout_ms=200,
        recv_window_ms=300,
        enable_rate_limit=False,
        poll_interval_s=0.1,
        reconnect_delay_s=0.05,
        scan_interval_s=0.05,
        **kw,
    )
    v.ex.timeout_on_exit = 0
    return v


def run_pair(fake: FakeBinanceUSDM, body: Callable[[SpotPerpVenue], Awaitable[None]]) -> None:
    async def main() -> None:
        v = SpotPerpVenue(spot_live(fake), live(fake))
        try:
            await v.connect()
            await body(v)
        finally:
            await v.close()

    asyncio.run(main())


SPOT = "BTCUSDT.SPOT"


def test_spot_leg_routes_by_symbol_and_reports_base_balances_as_positions(
    fake: FakeBinanceUSDM,
) -> None:
    fake.set_book("BTCUSDT", "50000.00", "1.0", "50000.01", "1.0", publish=False, spot=True)

    async def body(v: SpotPerpVenue) -> None:
        assert isinstance(v, Venue)
        inst = await v.instruments()
        # recorded spot exchangeInfo: PRICE_FILTER tickSize 0.01, LOT_SIZE stepSize 0.00001
        assert (inst[SPOT].tick_size, inst[SPOT].lot_size, inst[SPOT].kind.value) == (
            0.01,
            0.00001,
            "spot",
        )
        assert inst["BTCUSDT"].kind.value == "perp"
        st = await v.place(Order("sp-1", "binance", SPOT, Side.BUY, 0.02))
        assert st.status is OrderStatus.FILLED and st.avg_price == Decimal("50000.01")
        # a reduce-only close: Binance spot refuses parameters it does not read (-1104), so
        # the flag must not be sent; the fake holds 0.02 BTC, the sell of 0.005 fills
        st = await v.place(Order("sp-2", "binance", SPOT, Side.SELL, 0.005, reduce_only=True))
        assert st.status is OrderStatus.FILLED
        assert "reduceOnly" not in fake.requests_to("/api/v3/order")[-1].query
        # perp order on the same composite goes to USD-M
        assert (await v.place(limit("pp-1", Side.BUY, 0.01, 49000.0))).status is OrderStatus.NEW
        assert len(fake.orders) == 1 and len(fake.spot_orders) == 2
        # BTC 0.02 − 0.005 = 0.015; USDT 10000 − 1000.0002 − 1.0000002 (0.1 %) + 250 − 0.25
        # = 9248.7497998
        pos = {p.symbol: p.qty_base for p in await v.positions()}
        assert pos == {SPOT: Decimal("0.015")}
        bal = await v.balances()
        assert bal["USDT.SPOT"].total == Decimal("9248.7497998")
        assert bal["USDT"].total == Decimal("10000")  # the futures wallet is separate
        # a resting limit and its cancel: the cancel answer's clientOrderId is the cancel's
        # own id (Binance); the state keeps ours
        st = await v.place(
            Order("sp-3", "binance", SPOT, Side.BUY, 0.001, OrderType.LIMIT, 49000.0)
        )
        assert st.status is OrderStatus.NEW
        assert [o.client_order_id for o in await v.open_orders(SPOT)] == ["sp-3"]
        c = await v.cancel("sp-3", SPOT)
        assert (c.client_order_id, c.status) == ("sp-3", OrderStatus.CANCELED)
        # placing a filled id again returns its state; Binance spot would accept a reused
        # id once the first order is closed, so nothing may be sent
        posts = len(fake.requests_to("/api/v3/order"))
        again = await v.place(Order("sp-1", "binance", SPOT, Side.BUY, 0.02))
        assert again.status is OrderStatus.FILLED
        assert len(fake.requests_to("/api/v3/order")) == posts
        assert await v.funding_payments(0) == []

    run_pair(fake, body)


def test_spot_fills_arrive_on_the_websocket_api_user_stream(fake: FakeBinanceUSDM) -> None:
    fake.set_book("BTCUSDT", "50000.00", "1.0", "50000.01", "1.0", publish=False, spot=True)

    async def body(v: SpotPerpVenue) -> None:
        fills: list[Fill] = []

        async def consume() -> None:
            async for f in v.fills():
                fills.append(f)

        task = asyncio.create_task(consume())
        assert await asyncio.to_thread(fake.wait_spot_user_connection)
        await v.place(Order("sw-1", "binance", SPOT, Side.BUY, 0.004, OrderType.LIMIT, 49990.0))
        fake.trade("BTCUSDT", "49990.00", "0.001", True, spot=True)  # 0.001 of 0.004
        fake.trade("BTCUSDT", "49980.00", "1.0", True, spot=True)  # through: the rest
        await until(lambda: len(fills) == 2)
        task.cancel()
        # maker 0.1 %: 0.001 × 49990 × 0.001 = 0.04999, 0.003 × 49990 × 0.001 = 0.14997
        assert [(f.symbol, f.qty_base, f.fee_usd) for f in fills] == [
            (SPOT, Decimal("0.001"), Decimal("0.04999")),
            (SPOT, Decimal("0.003"), Decimal("0.14997")),
        ]
        assert v.spot.rest_polls == 0 and v.spot.stream_errors == 0

    run_pair(fake, body)


def test_stop_market_uses_the_conditional_order_endpoint(fake: FakeBinanceUSDM) -> None:
    async def body(v: LiveVenue) -> None:
        stop = Order(
            "st-1",
            "binanceusdm",
            "BTCUSDT",
            Side.SELL,
            0.01,
            OrderType.STOP_MARKET,
            stop_price=49000.0,
        )
        st = await v.place(stop)
        assert st.status is OrderStatus.NEW and st.venue_order_id
        (post,) = fake.requests_to("/fapi/v1/algoOrder")
        q = post.query
        assert (q["algoType"], q["type"], q["clientAlgoId"], q["side"]) == (
            "CONDITIONAL",
            "STOP_MARKET",
            "st-1",
            "SELL",
        )
        assert Decimal(q["triggerPrice"]) == Decimal("49000")
        assert Decimal(q["quantity"]) == Decimal("0.01")
        assert fake.requests_to("/fapi/v1/order") == []  # nothing on the plain order route
        assert (await v.query("st-1", "BTCUSDT")).status is OrderStatus.NEW
        # a print at 48,999 reaches the trigger: a market sell of 0.01 at the bid 50,000.0
        fake.trade("BTCUSDT", "48999.0", "0.5", True)
        got = await v.query("st-1", "BTCUSDT")
        assert got is not None and got.status is OrderStatus.FILLED
        assert (got.filled_base, got.avg_price) == (Decimal("0.01"), Decimal("50000.0"))
        # a second stop, cancelled before it triggers
        st2 = Order(
            "st-2",
            "binanceusdm",
            "BTCUSDT",
            Side.BUY,
            0.01,
            OrderType.STOP_MARKET,
            stop_price=52000.0,
            reduce_only=True,
        )
        assert (await v.place(st2)).status is OrderStatus.NEW
        assert (await v.cancel("st-2", "BTCUSDT")).status is OrderStatus.CANCELED
        assert len(fake.orders_with_client_id("st-1")) == 1  # the triggered market order
        assert fake.orders_with_client_id("st-2") == []

    run(fake, body)


def test_executions_since_pages_and_learns_client_ids_of_earlier_orders(
    fake: FakeBinanceUSDM,
) -> None:
    async def first(v: LiveVenue) -> None:
        for i in range(3):
            await v.place(Order(f"ex-{i}", "binanceusdm", "BTCUSDT", Side.BUY, 0.001))

    async def restarted(v: LiveVenue) -> None:
        n_get = len(fake.requests_to("/fapi/v1/order"))
        got = await v.executions_since(0, ["BTCUSDT"], page=2)
        assert [e.client_order_id for e in got] == ["ex-0", "ex-1", "ex-2"]
        assert [e.trade_id for e in got] == [str(t["id"]) for t in fake.user_trades]
        assert all(e.price == Decimal("50000.1") for e in got)
        pages = fake.requests_to("/fapi/v1/userTrades")
        assert len(pages) >= 2 and {p.query["limit"] for p in pages} == {"2"}
        gets = fake.requests_to("/fapi/v1/order")[n_get:]  # one order lookup per order
        assert sorted(g.query["orderId"] for g in gets) == sorted(str(o) for o in fake.orders)
        assert await v.executions_since(0, ["BTCUSDT"]) == got  # learnt: no more lookups
        assert len(fake.requests_to("/fapi/v1/order")) == n_get + 3

    run(fake, first)
    run(fake, restarted)
