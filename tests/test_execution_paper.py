"""PaperVenue: tick fills need a counterparty, Decimal booking in Account, funding from the
mark clock and from explicit settlements, and a Strategy running through PaperContext.

Every expected number is worked out by hand in the comments (Binance USD-M VIP0 fees: maker
0.0200 %, taker 0.0500 %)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal

import pytest

from perpdesk.domain import (
    BookTop,
    Fill,
    FundingSettlement,
    Instrument,
    InstrumentKind,
    Liquidity,
    MarkPrice,
    Order,
    OrderType,
    Side,
    TimeInForce,
    Timer,
    Trade,
)
from perpdesk.execution.paper import PaperVenue, merge_streams
from perpdesk.execution.protocol import Liquidation, OrderStatus, Venue
from perpdesk.sim.account import AccountError
from perpdesk.sim.costs import Costs, FeeModel, FixedBpsSlippage
from perpdesk.strategies.base import Context, Strategy

V = "paper"
BTC = Instrument(V, "BTCUSDT", InstrumentKind.PERP, "BTC", "USDT", 0.1, 0.001, 8)
S = 1_000_000_000
T0 = 1_700_000_000 * S


def venue(**kw) -> PaperVenue:
    return PaperVenue([BTC], "10000", venue=V, leverage={"BTCUSDT": 10}, **kw)


def top(ts: int, bid: float, ask: float, bq: float = 1.0, aq: float = 1.0) -> BookTop:
    return BookTop(V, "BTCUSDT", ts, bid, bq, ask, aq)


def trade(ts: int, px: float, qty: float, buyer_is_maker: bool) -> Trade:
    return Trade(V, "BTCUSDT", ts, px, qty, buyer_is_maker)


def limit(cid: str, side: Side, qty: float, px: float, **kw) -> Order:
    return Order(cid, V, "BTCUSDT", side, qty, OrderType.LIMIT, price=px, **kw)


def test_resting_limit_fills_only_against_a_counterparty_at_or_through_its_price() -> None:
    v = venue()
    assert isinstance(v, Venue)
    v.on_event(top(T0, 50000.0, 50000.1))
    st = v.submit(limit("a-1", Side.BUY, 0.010, 49990.0))
    assert st.status is OrderStatus.NEW and st.filled_base == 0
    # a trade above the limit, the ask touching the limit, and a buy-aggressor print at the
    # limit are not counterparties for a resting buy
    assert v.on_event(trade(T0 + 1, 49995.0, 5.0, True)) == []
    assert v.on_event(top(T0 + 2, 49989.9, 49990.0)) == []
    assert v.on_event(trade(T0 + 3, 49990.0, 5.0, False)) == []
    # a seller hits the bid at our price: 0.004 fills at 49990.0 (maker)
    (f1,) = v.on_event(trade(T0 + 4, 49990.0, 0.004, True))
    assert (f1.qty_base, f1.price, f1.liquidity) == (
        Decimal("0.004"),
        Decimal("49990.0"),
        Liquidity.MAKER,
    )
    # fee 0.004 × 49990 × 0.0002 = 0.039992
    assert f1.fee_usd == Decimal("0.039992")
    # a print through the price fills the remaining 0.006 at the limit, not at the print
    (f2,) = v.on_event(trade(T0 + 5, 49989.9, 1.0, True))
    assert (f2.qty_base, f2.price) == (Decimal("0.006"), Decimal("49990.0"))
    assert f2.fee_usd == Decimal("0.059988")  # 0.006 × 49990 × 0.0002
    st = asyncio.run(v.query("a-1", "BTCUSDT"))
    assert st is not None and st.status is OrderStatus.FILLED
    assert st.filled_base == Decimal("0.010") and st.avg_price == Decimal("49990.0")
    pos = v.account.position("BTCUSDT")
    assert pos.qty_base == Decimal("0.010") and pos.entry_price == Decimal("49990.0")
    # cash = 10000 − 0.039992 − 0.059988 = 9999.90002
    assert v.account.cash_usd == Decimal("9999.900020")
    bal = asyncio.run(v.balances())
    assert bal["USDT"].total == Decimal("9999.900020")


def test_market_order_takes_the_top_and_slips_the_rest() -> None:
    v = venue(costs=Costs(fees=FeeModel(), slippage=FixedBpsSlippage(10.0)))
    v.on_event(trade(T0, 50000.0, 0.1, False))
    v.on_event(top(T0 + 1, 50000.0, 50000.1, 1.0, 0.003))
    st = v.submit(Order("m-1", V, "BTCUSDT", Side.BUY, 0.005))
    assert st.status is OrderStatus.FILLED
    a, b = v.fill_log
    # 0.003 at the ask 50000.1; 0.002 at 50000.1 × (1 + 10e-4) = 50050.1001 → tick up 50050.2
    assert (a.qty_base, a.price) == (Decimal("0.003"), Decimal("50000.1"))
    assert (b.qty_base, b.price) == (Decimal("0.002"), Decimal("50050.2"))
    # taker fees 0.003 × 50000.1 × 0.0005 = 0.07500015 and 0.002 × 50050.2 × 0.0005 = 0.0500502
    assert (a.fee_usd, b.fee_usd) == (Decimal("0.07500015"), Decimal("0.0500502"))
    assert v.account.cash_usd == Decimal("10000") - Decimal("0.07500015") - Decimal("0.0500502")


def test_rejects_and_idempotent_resubmission() -> None:
    v = venue()
    v.on_event(top(T0, 50000.0, 50000.1))
    # post-only that would take, reduce-only with nothing to reduce, off-tick price
    po = v.submit(limit("r-1", Side.BUY, 0.01, 50000.1, tif=TimeInForce.POST_ONLY))
    ro = v.submit(limit("r-2", Side.SELL, 0.01, 50010.0, reduce_only=True))
    off = v.submit(limit("r-3", Side.BUY, 0.01, 49990.05))
    assert [s.status for s in (po, ro, off)] == [OrderStatus.REJECTED] * 3
    assert "post-only" in po.reason and "reduce" in ro.reason and "tick" in off.reason
    o = limit("k-1", Side.BUY, 0.01, 49000.0)
    assert v.submit(o).status is OrderStatus.NEW
    assert v.submit(o).status is OrderStatus.NEW  # same order again: same state, one order
    assert len(asyncio.run(v.open_orders())) == 1
    other = limit("k-1", Side.BUY, 0.02, 49000.0)
    assert v.submit(other).status is OrderStatus.REJECTED
    assert len(asyncio.run(v.open_orders())) == 1
    st = asyncio.run(v.cancel("k-1", "BTCUSDT"))
    assert st.status is OrderStatus.CANCELED
    assert v.on_event(trade(T0 + 9, 48000.0, 1.0, True)) == []  # a cancelled order never fills


def test_funding_from_the_mark_clock_and_explicit_settlements() -> None:
    v = venue()
    v.on_event(top(T0, 50000.0, 50000.1))
    v.submit(Order("f-1", V, "BTCUSDT", Side.SELL, 0.010))  # short 0.010 at the bid 50000.0
    fee_open = Decimal("0.25")  # 0.010 × 50000.0 × 0.0005
    settle = T0 + 3600 * S
    v.on_event(MarkPrice(V, "BTCUSDT", T0 + 10, 50100.0, 50090.0, 0.0001, settle))
    v.on_event(MarkPrice(V, "BTCUSDT", T0 + 20, 50200.0, 50190.0, 0.0003, settle))
    assert v.funding == []  # not due yet
    v.on_event(trade(settle, 50150.0, 0.1, True))  # first event at the settlement time
    # the rate and mark in force before settlement: 0.0003 at 50200.0; the short receives
    # −(−0.010) × 50200.0 × 0.0003 = +0.1506
    (p,) = asyncio.run(v.funding_payments(T0))
    assert (p.ts_ns, p.amount_usd) == (settle, Decimal("0.1506"))
    # an explicit settlement (a replayed funding event): rate −0.0002 at 50000 → the short
    # pays −(−0.010) × 50000 × −0.0002 = −0.1
    nxt = settle + 8 * 3600 * S
    v.on_event(FundingSettlement(V, "BTCUSDT", nxt, -0.0002, 8, 50000.0))
    assert [f.amount_usd for f in v.funding] == [Decimal("0.1506"), Decimal("-0.1")]
    assert v.account.cash_usd == Decimal("10000") - fee_open + Decimal("0.1506") - Decimal("0.1")
    (pos,) = asyncio.run(v.positions())
    assert pos.qty_base == Decimal("-0.010") and pos.entry_price == Decimal("50000.0")


class Dipper(Strategy):
    """Tiny test strategy: on the first book top bids 0.01 one dollar under the bid, sets a
    timer; on the fill sells it back at market; on the timer records the time."""

    def __init__(self) -> None:
        super().__init__("dip")
        self.fills: list[Fill] = []
        self.timers: list[Timer] = []
        self.rejects: list[str] = []
        self.started = self.ended = False

    def on_start(self, ctx: Context) -> None:
        self.started = True

    def on_book_top(self, ctx: Context, top: BookTop) -> None:
        if not ctx.open_orders() and not self.fills:
            ctx.limit("BTCUSDT", Side.BUY, 0.01, top.bid - 1.0)
            ctx.set_timer(ctx.now_ns + 5, "check")

    def on_fill(self, ctx: Context, fill: Fill) -> None:
        self.fills.append(fill)
        if fill.side is Side.BUY and ctx.position("BTCUSDT").qty_base == Decimal("0.01"):
            ctx.market("BTCUSDT", Side.SELL, 0.01, reduce_only=True)

    def on_timer(self, ctx: Context, timer: Timer) -> None:
        self.timers.append(timer)

    def on_reject(self, ctx: Context, order: Order, reason: str) -> None:
        self.rejects.append(reason)

    def on_end(self, ctx: Context) -> None:
        self.ended = True


async def replay(events: Sequence[object]) -> AsyncIterator[object]:
    for e in events:
        yield e


def test_a_strategy_runs_on_the_paper_venue_through_its_context() -> None:
    strat = Dipper()
    v = venue(strategy=strat)
    assert isinstance(v.ctx, Context)
    events = [
        top(T0, 50000.0, 50000.1),  # → limit buy 0.01 at 49999.0 (id dip-1), timer at T0+5
        trade(T0 + 1, 49999.5, 1.0, True),  # above the bid: no fill
        trade(T0 + 10, 49999.0, 1.0, True),  # timer fires first (T0+5), then the fill
        top(T0 + 11, 49998.0, 49998.1),
    ]

    async def main() -> None:
        await v.run(merge_streams(replay(events[:2]), replay([])))
        await v.run(replay(events[2:]))

    asyncio.run(main())
    assert strat.started and strat.ended and strat.rejects == []
    assert [t.ts_ns for t in strat.timers] == [T0 + 5]
    buy, sell = strat.fills
    assert (buy.client_order_id, buy.price, buy.strategy_id) == ("dip-1", Decimal("49999.0"), "dip")
    # the market sell at T0+10 takes the bid known then (50000.0, from the first book top)
    assert (sell.client_order_id, sell.side, sell.price) == ("dip-2", Side.SELL, Decimal("50000.0"))
    # PnL 0.01 × (50000.0 − 49999.0) = 0.01; fees 0.01 × 49999 × 0.0002 = 0.099998 (maker)
    # and 0.01 × 50000 × 0.0005 = 0.25 (taker)
    assert v.account.cash_usd == Decimal("10000") + Decimal("0.01") - Decimal("0.099998") - Decimal(
        "0.25"
    )
    assert v.account.position("BTCUSDT").qty_base == 0


def test_fills_stream_and_liquidation_tap() -> None:
    v = venue()
    got: list[Fill] = []
    liqs: list[Liquidation] = []
    liq = Liquidation(V, "BTCUSDT", T0 + 3, Side.SELL, 49000.0, 0.5)

    async def main() -> None:
        async def take_fills() -> None:
            async for f in v.fills():
                got.append(f)

        async def take_liqs() -> None:
            async for x in v.liquidations(["BTCUSDT"]):
                liqs.append(x)

        tasks = [asyncio.create_task(take_fills()), asyncio.create_task(take_liqs())]
        await asyncio.sleep(0)
        v.on_event(top(T0, 50000.0, 50000.1))
        await v.place(limit("s-1", Side.BUY, 0.002, 49999.0))
        await v.run(replay([trade(T0 + 1, 49998.0, 1.0, True), liq]))
        await asyncio.sleep(0)
        for t in tasks:
            t.cancel()

    asyncio.run(main())
    assert got == v.fill_log and len(got) == 1 and got[0].price == Decimal("49999.0")
    assert liqs == [liq]


SPOT = Instrument(V, "BTCUSDT.SPOT", InstrumentKind.SPOT, "BTC", "USDT", 0.1, 0.000001)
"""A spot leg with Bybit's BTCUSDT spot filters: tick 0.1, lot 0.000001 BTC."""


def spot_top(ts: int) -> BookTop:
    return BookTop(V, "BTCUSDT.SPOT", ts, 50000.0, 10.0, 50000.1, 10.0)


def test_spot_buy_pays_its_commission_in_the_coin_and_a_sell_in_usdt() -> None:
    """Bybit non-VIP spot taker 0.10 %, commission of a buy in BTC (``FeeModel.for_venue``)."""
    v = PaperVenue([SPOT], "10000", venue=V, costs=Costs(fees=FeeModel.for_venue("bybit")))
    v.on_event(spot_top(T0))
    assert v.submit(Order("b-1", V, "BTCUSDT.SPOT", Side.BUY, 0.075)).status is OrderStatus.FILLED
    (buy,) = v.fill_log
    # 0.075 at the ask 50,000.1: commission 0.075 × 0.001 = 0.000075 BTC, worth
    # 0.000075 × 50,000.1 = 3.7500075 USD; held 0.075 − 0.000075 = 0.074925 BTC; cash pays
    # the notional only: 0.075 × 50,000.1 = 3,750.0075 → 10,000 − 3,750.0075 = 6,249.9925
    assert (buy.qty_base, buy.price, buy.fee_usd) == (
        Decimal("0.075"),
        Decimal("50000.1"),
        Decimal("3.7500075"),
    )
    assert v.fill_fee_qty_base(0) == Decimal("0.000075")
    assert v.account.position("BTCUSDT.SPOT").qty_base == Decimal("0.074925")
    assert v.account.cash_usd == Decimal("6249.9925")
    assert v.account.fees_usd == Decimal("3.7500075")
    (lot,) = v.account.lots("BTCUSDT.SPOT")
    assert (lot.qty_base, lot.price) == (Decimal("0.074925"), Decimal("50000.1"))
    # equity at the fill price: 6,249.9925 + 0.074925 × 50,000.1 = 6,249.9925 + 3,746.2574925
    # = 9,996.2499925 = 10,000 − the fee 3.7500075
    assert v.account.equity_usd == Decimal("9996.2499925")
    (pos,) = asyncio.run(v.positions())
    assert (pos.symbol, pos.qty_base) == ("BTCUSDT.SPOT", Decimal("0.074925"))
    # selling what is held, at the bid 50,000.0: the commission in USDT,
    # 0.074925 × 50,000 × 0.001 = 3,746.25 × 0.001 = 3.74625; cash
    # 6,249.9925 + 3,746.25 − 3.74625 = 9,992.49625
    st = v.submit(Order("s-1", V, "BTCUSDT.SPOT", Side.SELL, 0.074925))
    assert st.status is OrderStatus.FILLED
    sell = v.fill_log[1]
    assert (sell.qty_base, sell.price, sell.fee_usd) == (
        Decimal("0.074925"),
        Decimal("50000.0"),
        Decimal("3.74625"),
    )
    assert v.fill_fee_qty_base(1) == 0
    assert v.account.position("BTCUSDT.SPOT").qty_base == 0
    assert v.account.cash_usd == Decimal("9992.49625")
    # = 10,000 − fees (3.7500075 + 3.74625 = 7.4962575) + price PnL 0.074925 × (50,000.0 −
    # 50,000.1) = −0.0074925
    assert v.account.fees_usd == Decimal("7.4962575")
    assert Decimal(10000) - Decimal("7.4962575") - Decimal("0.0074925") == Decimal("9992.49625")
    # the account books a commission in the coin on spot buys only, and less than the fill
    sell_again = Fill("x", V, "BTCUSDT.SPOT", Side.SELL, Decimal("0.001"), Decimal("50000"),
                      Decimal("0.05"), Liquidity.TAKER, T0)  # fmt: skip
    with pytest.raises(AccountError, match="spot buys only"):
        v.account.apply_fill(sell_again, Decimal("0.000001"))
    buy_all = Fill("y", V, "BTCUSDT.SPOT", Side.BUY, Decimal("0.001"), Decimal("50000"),
                   Decimal("50"), Liquidity.TAKER, T0)  # fmt: skip
    with pytest.raises(AccountError, match=r"fee_qty_base Decimal\('0.001'\) not in"):
        v.account.apply_fill(buy_all, Decimal("0.001"))
    assert v.account.cash_usd == Decimal("9992.49625")  # nothing booked


def test_spot_fees_stay_in_usd_without_the_flag() -> None:
    """The default fee model (backtests): the same buy pays 0.075 × 50,000.1 × 0.001 =
    3.7500075 USD in USDT and holds the gross 0.075 BTC; cash 10,000 − 3,750.0075 −
    3.7500075 = 6,246.2424925."""
    v = PaperVenue([SPOT], "10000", venue=V, costs=Costs(fees=FeeModel()))
    v.on_event(spot_top(T0))
    v.submit(Order("b-1", V, "BTCUSDT.SPOT", Side.BUY, 0.075))
    assert v.fill_log[0].fee_usd == Decimal("3.7500075") and v.fill_fee_qty_base(0) == 0
    assert v.account.position("BTCUSDT.SPOT").qty_base == Decimal("0.075")
    assert v.account.cash_usd == Decimal("6246.2424925")
