"""Fill models and cost models, checked against hand-computed prices and sizes."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest

from perpdesk.domain import (
    Bar,
    InstrumentKind,
    Liquidity,
    Order,
    OrderType,
    Side,
    TimeInForce,
    Trade,
)
from perpdesk.errors import ConfigError
from perpdesk.sim.costs import (
    BookDepthSlippage,
    ConstantLatency,
    FeeModel,
    FeeSchedule,
    FixedBpsSlippage,
)
from perpdesk.sim.fills import BarFillModel, Execution, Quote, TickFillModel, WorkingOrder

T = 1_700_000_000_000_000_000
S = 1_000_000_000
NO_SLIP = FixedBpsSlippage(0.0)


def _order(side: Side, qty: float, type_: OrderType, price=None, stop=None, tif=TimeInForce.GTC):
    return Order("c-1", "v", "X", side, qty, type_, price, stop, tif)


def _w(order: Order, arrival: int = T) -> WorkingOrder:
    return WorkingOrder(order, arrival, order.qty_base)


def _bar(ts: int, o: float, h: float, lo: float, c: float) -> Bar:
    return Bar("v", "X", ts, 300, o, h, lo, c, 1.0, c, c / 2)


# ------------------------------------------------------------------ bars


def test_bar_limit_conservative_rule() -> None:
    fm = BarFillModel()
    buy = _w(_order(Side.BUY, 2.0, OrderType.LIMIT, 99.0))
    sell = _w(_order(Side.SELL, 2.0, OrderType.LIMIT, 101.0))
    # closes below the buy's price? irrelevant: the low 99.01 never reached 99.00 → no fill;
    # the high 100.99 never reached 101.00 → no fill
    near = _bar(T, 100.0, 100.99, 99.01, 99.02)
    assert fm.on_bar([buy, sell], near, Quote(), NO_SLIP) == []
    # low touches 99.00 exactly (low ≤ price): the buy fills at its price, whole size, maker
    touch = _bar(T + 300 * S, 100.0, 100.5, 99.0, 99.5)
    assert fm.on_bar([buy, sell], touch, Quote(), NO_SLIP) == [
        (buy, Execution(2.0, 99.0, Liquidity.MAKER, 99.0))
    ]
    # high 101.0 ≥ 101.0: the sell fills at 101.0 even though the bar opened far above it
    gap = _bar(T + 600 * S, 103.0, 104.0, 100.5, 103.5)
    assert fm.on_bar([sell], gap, Quote(), NO_SLIP) == [
        (sell, Execution(2.0, 101.0, Liquidity.MAKER, 101.0))
    ]


def test_bar_before_arrival_never_fills() -> None:
    # the order arrives at T + 60 s, inside the bar [T, T + 300 s): that bar may not fill it
    w = _w(_order(Side.BUY, 1.0, OrderType.LIMIT, 99.0), arrival=T + 60 * S)
    assert BarFillModel().on_bar([w], _bar(T, 100.0, 100.0, 90.0, 95.0), Quote(), NO_SLIP) == []
    got = BarFillModel().on_bar([w], _bar(T + 300 * S, 95.0, 96.0, 94.0, 95.0), Quote(), NO_SLIP)
    assert [ex.price for _, ex in got] == [99.0]


def test_bar_stop_fills_at_worse_of_stop_and_open() -> None:
    fm = BarFillModel()
    buy_stop = _w(_order(Side.BUY, 1.0, OrderType.STOP_MARKET, stop=105.0))
    sell_stop = _w(_order(Side.SELL, 1.0, OrderType.STOP_MARKET, stop=95.0))
    # trades through the stop from below: max(105, open 104) = 105
    assert fm.on_bar([buy_stop], _bar(T, 104.0, 106.0, 103.0, 105.5), Quote(), NO_SLIP)[0][
        1
    ].price == pytest.approx(105.0)
    # gaps over it: max(105, open 107) = 107
    assert fm.on_bar([buy_stop], _bar(T, 107.0, 108.0, 106.0, 107.0), Quote(), NO_SLIP)[0][
        1
    ].price == pytest.approx(107.0)
    # sell stop: min(95, open 96) = 95; gap down min(95, 93) = 93
    assert fm.on_bar([sell_stop], _bar(T, 96.0, 97.0, 94.0, 95.0), Quote(), NO_SLIP)[0][
        1
    ].price == pytest.approx(95.0)
    assert fm.on_bar([sell_stop], _bar(T, 93.0, 94.0, 92.0, 93.0), Quote(), NO_SLIP)[0][
        1
    ].price == pytest.approx(93.0)
    # not reached: high 104.9 < 105
    assert fm.on_bar([buy_stop], _bar(T, 104.0, 104.9, 103.0, 104.0), Quote(), NO_SLIP) == []
    # 10 bps slippage on top of the worse price: 105 × 1.001 = 105.105, taker
    ((_, ex),) = fm.on_bar(
        [buy_stop], _bar(T, 104.0, 106.0, 103.0, 105.5), Quote(), FixedBpsSlippage(10.0)
    )
    assert ex.price == pytest.approx(105.105)
    assert ex.ref_price == 105.0 and ex.liquidity is Liquidity.TAKER


def test_bar_stop_that_would_trigger_at_once_is_rejected() -> None:
    res = BarFillModel().on_arrival(
        _w(_order(Side.BUY, 1.0, OrderType.STOP_MARKET, stop=99.0)),
        Quote(last_price=100.0),
        NO_SLIP,
    )
    assert res.reject_reason == "stop would trigger immediately"


def test_bar_market_at_close_or_next_open() -> None:
    w = _w(_order(Side.SELL, 3.0, OrderType.MARKET))
    res = BarFillModel().on_arrival(w, Quote(last_price=200.0), FixedBpsSlippage(5.0))
    # sell at the last close less 5 bps: 200 × (1 − 0.0005) = 199.9
    assert res.executions == (Execution(3.0, pytest.approx(199.9), Liquidity.TAKER, 200.0),)
    nxt = BarFillModel(market_fill="next_open")
    res = nxt.on_arrival(w, Quote(last_price=200.0), NO_SLIP)
    assert res.executions == () and res.rests
    ((_, ex),) = nxt.on_bar([w], _bar(T, 190.0, 195.0, 185.0, 192.0), Quote(), NO_SLIP)
    assert ex.price == 190.0
    assert BarFillModel().on_arrival(w, Quote(), NO_SLIP).reject_reason is not None


def test_bar_marketable_limit_takes_and_post_only_is_rejected() -> None:
    fm = BarFillModel()
    q = Quote(last_price=100.0)
    res = fm.on_arrival(_w(_order(Side.BUY, 1.0, OrderType.LIMIT, 101.0)), q, FixedBpsSlippage(50))
    # taker at the close plus 50 bps = 100.5, under the 101 limit
    assert res.executions == (Execution(1.0, pytest.approx(100.5), Liquidity.TAKER, 100.0),)
    res = fm.on_arrival(
        _w(_order(Side.BUY, 1.0, OrderType.LIMIT, 101.0, tif=TimeInForce.POST_ONLY)), q, NO_SLIP
    )
    assert res.reject_reason == "post-only order would take liquidity"
    res = fm.on_arrival(
        _w(_order(Side.BUY, 1.0, OrderType.LIMIT, 99.0, tif=TimeInForce.POST_ONLY)), q, NO_SLIP
    )
    assert res.rests and res.reject_reason is None


# ------------------------------------------------------------------ ticks


def _trade(price: float, qty: float, buyer_is_maker: bool) -> Trade:
    return Trade("v", "X", T, price, qty, buyer_is_maker)


def test_tick_limit_fills_only_on_a_trade_at_or_through() -> None:
    fm = TickFillModel()
    w = _w(_order(Side.BUY, 1.0, OrderType.LIMIT, 100.0))
    q = Quote(bid=100.0, bid_qty_base=5.0, ask=100.1, ask_qty_base=5.0)
    assert fm.on_trade([w], _trade(100.1, 9.0, False), q, NO_SLIP) == []  # above the bid
    assert fm.on_trade([w], _trade(100.0, 9.0, False), q, NO_SLIP) == []  # a buyer lifted
    # a seller hit 0.3 at 100.0: front of the queue → 0.3 fills at 100.0, maker
    assert fm.on_trade([w], _trade(100.0, 0.3, True), q, NO_SLIP) == [
        (w, Execution(0.3, 100.0, Liquidity.MAKER, 100.0))
    ]
    # back of the queue: a trade at the price is not enough, one through it is
    back = TickFillModel(queue="back")
    assert back.on_trade([w], _trade(100.0, 0.3, True), q, NO_SLIP) == []
    assert back.on_trade([w], _trade(99.9, 5.0, True), q, NO_SLIP) == [
        (w, Execution(1.0, 100.0, Liquidity.MAKER, 100.0))
    ]


def test_tick_trade_size_is_shared_in_time_priority() -> None:
    w1 = _w(_order(Side.SELL, 0.5, OrderType.LIMIT, 101.0))
    w2 = _w(_order(Side.SELL, 0.5, OrderType.LIMIT, 100.5))
    # a buy of 0.7 through both: w1 (older) takes 0.5, w2 the remaining 0.2
    got = TickFillModel().on_trade([w1, w2], _trade(101.5, 0.7, False), Quote(), NO_SLIP)
    assert [(w is w1, ex.qty_base, ex.price) for w, ex in got] == [
        (True, 0.5, 101.0),
        (False, pytest.approx(0.2), 100.5),
    ]


def test_tick_market_walks_the_top_and_the_rest_slips() -> None:
    q = Quote(last_price=100.0, bid=99.9, bid_qty_base=2.0, ask=100.0, ask_qty_base=0.4)
    w = _w(_order(Side.BUY, 1.0, OrderType.MARKET))
    res = TickFillModel().on_arrival(w, q, FixedBpsSlippage(10.0))
    # 0.4 at the ask 100.0; the other 0.6 at 100.0 × (1 + 10 bps) = 100.1
    assert res.executions == (
        Execution(0.4, 100.0, Liquidity.TAKER, 100.0),
        Execution(pytest.approx(0.6), pytest.approx(100.1), Liquidity.TAKER, 100.0),
    )
    # depth model: 5 bps per top's worth, 0.6 / 0.4 = 1.5 tops → 7.5 bps → 100.075
    res = TickFillModel().on_arrival(w, q, BookDepthSlippage(0.0, 5.0, 50.0))
    assert res.executions[1].price == pytest.approx(100.075)
    # a sell of 1.5 fits in the 2.0 at the bid: one execution at 99.9
    s = _w(_order(Side.SELL, 1.5, OrderType.MARKET))
    res = TickFillModel().on_arrival(s, q, FixedBpsSlippage(10.0))
    assert res.executions == (Execution(1.5, 99.9, Liquidity.TAKER, 99.9),)


def test_tick_post_only_that_would_cross_is_rejected() -> None:
    q = Quote(bid=99.9, bid_qty_base=1.0, ask=100.0, ask_qty_base=1.0)
    cross = _w(_order(Side.BUY, 1.0, OrderType.LIMIT, 100.0, tif=TimeInForce.POST_ONLY))
    assert TickFillModel().on_arrival(cross, q, NO_SLIP).reject_reason is not None
    passive = _w(_order(Side.BUY, 1.0, OrderType.LIMIT, 99.95, tif=TimeInForce.POST_ONLY))
    res = TickFillModel().on_arrival(passive, q, NO_SLIP)
    assert res.rests and res.executions == ()
    # a plain GTC limit through the ask takes the 1.0 shown at 100.0, the rest rests
    gtc = _w(_order(Side.BUY, 3.0, OrderType.LIMIT, 100.2))
    res = TickFillModel().on_arrival(gtc, q, NO_SLIP)
    assert res.executions == (Execution(1.0, 100.0, Liquidity.TAKER, 100.0),) and res.rests


def test_tick_stop_triggers_on_a_trade_then_takes_the_book() -> None:
    w = _w(_order(Side.SELL, 1.0, OrderType.STOP_MARKET, stop=95.0))
    q = Quote(bid=94.5, bid_qty_base=10.0, ask=94.6, ask_qty_base=10.0)
    assert TickFillModel().on_trade([w], _trade(95.1, 1.0, True), q, NO_SLIP) == []
    got = TickFillModel().on_trade([w], _trade(95.0, 1.0, True), q, NO_SLIP)
    assert got == [(w, Execution(1.0, 94.5, Liquidity.TAKER, 94.5))]


# ------------------------------------------------------------------ costs


def test_fees_maker_taker_spot_and_rebate() -> None:
    fees = FeeModel()  # Binance VIP0: perp 0.02 % / 0.05 %, spot 0.1 %
    notional = Decimal("0.5") * Decimal("40000.10")  # 20000.05 USD
    # 20000.05 × 0.0002 = 4.00001; × 0.0005 = 10.000025; × 0.001 = 20.00005
    assert fees.fee_usd("X", InstrumentKind.PERP, notional, Liquidity.MAKER) == Decimal("4.00001")
    assert fees.fee_usd("X", InstrumentKind.PERP, notional, Liquidity.TAKER) == Decimal("10.000025")
    assert fees.fee_usd("X.SPOT", InstrumentKind.SPOT, notional, Liquidity.TAKER) == Decimal(
        "20.00005"
    )
    rebate = FeeModel(overrides={"X": FeeSchedule(Decimal("-0.0001"), Decimal("0.0004"))})
    # −0.0001 × 20000.05 = −2.000005 (a rebate is a negative fee)
    assert rebate.fee_usd("X", InstrumentKind.PERP, notional, Liquidity.MAKER) == Decimal(
        "-2.000005"
    )
    # rounding to 1e-8 USD, half-up: 0.001 × 123.45 × 0.0005 = 0.000061725 → 0.00006173
    tiny = Decimal("0.001") * Decimal("123.45")
    assert fees.fee_usd("X", InstrumentKind.PERP, tiny, Liquidity.TAKER) == Decimal("0.00006173")
    assert FeeModel.binance("VIP3").perp == FeeSchedule(Decimal("0.00012"), Decimal("0.00032"))
    with pytest.raises(ValueError, match="unknown Binance"):
        FeeModel.binance("VIP99")


def test_fee_model_from_config() -> None:
    m = FeeModel.from_dict(
        {
            "usdm_tier": "VIP1",
            "spot": {"maker_rate": "0.00075", "taker_rate": "0.00075"},
            "overrides": {"X": {"maker_rate": "-0.00005", "taker_rate": "0.0003"}},
        }
    )
    assert m.perp == FeeSchedule(Decimal("0.00016"), Decimal("0.0004"))  # Binance VIP1
    assert m.schedule("X", InstrumentKind.PERP).maker_rate == Decimal("-0.00005")
    assert m.schedule("Y.SPOT", InstrumentKind.SPOT).taker_rate == Decimal("0.00075")
    with pytest.raises(ConfigError, match=r"fees.overrides.X: needs exactly maker_rate"):
        FeeModel.from_dict({"overrides": {"X": {"maker": 0.1}}})
    with pytest.raises(ConfigError, match="unknown key"):
        FeeModel.from_dict({"perps": {}})
    with pytest.raises(ConfigError, match=r"fees\.perp: taker_rate"):
        FeeModel.from_dict({"perp": {"maker_rate": "0.1", "taker_rate": "-1"}})


def test_slippage_and_latency_models() -> None:
    assert FixedBpsSlippage(20).price(Side.SELL, 50.0, 1.0, math.nan) == pytest.approx(49.9)
    # unknown depth → the cap
    assert BookDepthSlippage(1.0, 5.0, 30.0).price(Side.BUY, 100.0, 1.0, math.nan) == pytest.approx(
        100.3
    )
    assert ConstantLatency(250).arrival_ns(1_000) == 1_250
    with pytest.raises(ValueError):
        ConstantLatency(-1)
