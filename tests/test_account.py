"""The simulated account (perpdesk.sim.account): hand-checked bookings and a conservation
property checked by an independent ledger written here."""

from __future__ import annotations

import itertools
from decimal import ROUND_HALF_EVEN, Decimal

import numpy as np
import pytest

from perpdesk.domain import (
    Fill,
    Instrument,
    InstrumentKind,
    Liquidity,
    PositionSide,
    Side,
    spot_symbol,
)
from perpdesk.risk.margin import maintenance_margin
from perpdesk.sim.account import Account, AccountError

BTC = "BTCUSDT"
ETH = "ETHUSDT"
BTC_SPOT = spot_symbol(BTC)

INSTRUMENTS = [
    Instrument("binance", BTC, InstrumentKind.PERP, "BTC", "USDT", 0.1, 0.001, 8),
    Instrument("binance", ETH, InstrumentKind.PERP, "ETH", "USDT", 0.01, 0.001, 8),
    Instrument("binance", BTC_SPOT, InstrumentKind.SPOT, "BTC", "USDT", 0.01, 0.00001),
]

LONG, SHORT, BOTH = PositionSide.LONG, PositionSide.SHORT, PositionSide.BOTH
_ids = itertools.count()


def fill(
    symbol: str,
    side: Side,
    qty: str,
    price: str,
    fee: str = "0",
    *,
    ps: PositionSide = BOTH,
    sid: str = "",
    liquidity: Liquidity = Liquidity.TAKER,
    slippage: str = "0",
) -> Fill:
    return Fill(
        client_order_id=f"o{next(_ids)}",
        venue="binance",
        symbol=symbol,
        side=side,
        qty_base=Decimal(qty),
        price=Decimal(price),
        fee_usd=Decimal(fee),
        liquidity=liquidity,
        ts_ns=1,
        position_side=ps,
        slippage_usd=Decimal(slippage),
        strategy_id=sid,
    )


BUY, SELL = Side.BUY, Side.SELL


# ----------------------------------------------------------------- funding


@pytest.mark.parametrize(
    ("side", "rate", "expected"),
    [
        # long 2 BTC, mark 50,000: payment = −(+2) × 50,000 × 0.0001 = −10 (long pays)
        (BUY, 0.0001, "-10"),
        # negative rate: −(+2) × 50,000 × (−0.0001) = +10 (long receives)
        (BUY, -0.0001, "10"),
        # short 2: −(−2) × 50,000 × 0.0001 = +10 (short receives)
        (SELL, 0.0001, "10"),
        # short, negative rate: −(−2) × 50,000 × (−0.0001) = −10 (short pays)
        (SELL, -0.0001, "-10"),
    ],
)
def test_funding_long_and_short_both_signs(side, rate, expected):
    acc = Account(INSTRUMENTS, "10000")
    acc.apply_fill(fill(BTC, side, "2", "49000", sid="carry"))
    got = acc.settle_funding(BTC, 8 * 3600 * 10**9, rate, 50000.0)
    assert got == Decimal(expected)
    assert acc.cash_usd == Decimal(10000) + Decimal(expected)
    assert acc.position(BTC).funding_usd == Decimal(expected)
    assert acc.funding_usd == Decimal(expected)
    (row,) = acc.breakdown()
    assert (row.strategy_id, row.symbol, row.funding_usd) == ("carry", BTC, Decimal(expected))


def test_funding_rounds_to_usdt_precision_and_ignores_flat_books():
    acc = Account(INSTRUMENTS, "1000")
    # long 0.003 BTC, mark 43,251.7, rate 0.00012345:
    # 0.003 × 43,251.7 = 129.7551; × 0.00012345 = 0.016018267095 → −0.01601827 (1e-8, half-even)
    acc.apply_fill(fill(BTC, BUY, "0.003", "43000"))
    assert acc.settle_funding(BTC, 1, 0.00012345, 43251.7) == Decimal("-0.01601827")
    assert acc.settle_funding(ETH, 1, 0.001, 2000.0) == 0  # no ETH position
    with pytest.raises(AccountError, match=r"BTCUSDT\.SPOT: funding settles on perps only"):
        acc.settle_funding(BTC_SPOT, 1, 0.0001, 43000.0)


# ----------------------------------------------------------------- fees


def test_fees_taker_maker_and_rebate():
    acc = Account(INSTRUMENTS, "100000")
    # taker buy 1 BTC @ 50,000 at 4 bps: fee 50,000 × 0.0004 = 20 → cash 99,980
    acc.apply_fill(fill(BTC, BUY, "1", "50000", "20", sid="a"))
    assert acc.cash_usd == Decimal("99980")
    # maker sell 0.5 @ 50,000 at 2 bps: fee 25,000 × 0.0002 = 5 → cash 99,975 (no pnl)
    acc.apply_fill(fill(BTC, SELL, "0.5", "50000", "5", sid="a", liquidity=Liquidity.MAKER))
    assert acc.cash_usd == Decimal("99975")
    # maker rebate −0.5 bps on 0.5 @ 50,000: fee −25,000 × 0.00005 = −1.25 → cash 99,976.25
    acc.apply_fill(fill(BTC, SELL, "0.5", "50000", "-1.25", sid="b", liquidity=Liquidity.MAKER))
    assert acc.cash_usd == Decimal("99976.25")
    assert acc.position(BTC).fees_usd == Decimal("23.75")  # 20 + 5 − 1.25
    assert acc.fees_usd == Decimal("23.75")
    rows = {r.strategy_id: r for r in acc.breakdown()}
    assert rows["a"].fees_usd == Decimal(25) and rows["b"].fees_usd == Decimal("-1.25")
    assert acc.position(BTC).qty_base == 0
    assert acc.positions() == []


# ----------------------------------------------------------------- hedge mode, netting


def test_hedge_mode_long_and_short_at_once():
    acc = Account(INSTRUMENTS, "100000", hedge_mode=True)
    acc.apply_fill(fill(BTC, BUY, "1", "50000", ps=LONG))
    acc.apply_fill(fill(BTC, SELL, "2", "50100", ps=SHORT))
    long_, short = acc.position(BTC, LONG), acc.position(BTC, SHORT)
    assert (long_.qty_base, long_.entry_price) == (Decimal(1), Decimal(50000))
    assert (short.qty_base, short.entry_price) == (Decimal(-2), Decimal(50100))
    assert [(p.position_side, p.qty_base) for p in acc.positions()] == [
        (LONG, Decimal(1)),
        (SHORT, Decimal(-2)),
    ]
    # close the long at 51,000: realised 1 × (51,000 − 50,000) = 1,000; the short stays
    acc.apply_fill(fill(BTC, SELL, "1", "51000", ps=LONG))
    assert acc.position(BTC, LONG).qty_base == 0
    assert acc.position(BTC, LONG).realised_pnl_usd == Decimal(1000)
    assert acc.position(BTC, SHORT).qty_base == Decimal(-2)
    assert acc.cash_usd == Decimal(101000)
    acc.update_mark(BTC, 2, 51000.0)
    # short upnl −2 × (51,000 − 50,100) = −1,800; equity 101,000 − 1,800 = 99,200
    assert acc.unrealised_pnl_usd(BTC) == Decimal(-1800)
    assert acc.equity_usd == Decimal(99200)
    with pytest.raises(AccountError, match="hedge mode needs position_side LONG or SHORT"):
        acc.apply_fill(fill(BTC, BUY, "1", "50000"))
    with pytest.raises(AccountError, match=r"BTCUSDT: buy 3 exceeds the short position 2"):
        acc.apply_fill(fill(BTC, BUY, "3", "50000", ps=SHORT))
    assert acc.position(BTC, SHORT).qty_base == Decimal(-2)  # nothing booked


def test_one_way_netting_through_zero():
    acc = Account(INSTRUMENTS, "1000")
    acc.apply_fill(fill(ETH, BUY, "1", "100"))
    # sell 3 @ 110: closes 1 (realised 1 × (110 − 100) = 10) and opens short 2 @ 110
    acc.apply_fill(fill(ETH, SELL, "3", "110"))
    p = acc.position(ETH)
    assert (p.qty_base, p.entry_price, p.realised_pnl_usd) == (Decimal(-2), Decimal(110), 10)
    assert acc.cash_usd == Decimal(1010)
    # buy 2 @ 105 closes the short: realised 2 × (110 − 105) = 10 → total 20
    acc.apply_fill(fill(ETH, BUY, "2", "105"))
    p = acc.position(ETH)
    assert (p.qty_base, p.realised_pnl_usd) == (0, Decimal(20))
    assert acc.cash_usd == Decimal(1020)
    with pytest.raises(AccountError, match="one-way mode takes position_side BOTH only"):
        acc.apply_fill(fill(ETH, BUY, "1", "100", ps=LONG))


def test_average_entry_and_strategy_lots():
    acc = Account(INSTRUMENTS, "1000")
    acc.apply_fill(fill(ETH, BUY, "1", "100", sid="a"))
    acc.apply_fill(fill(ETH, BUY, "1", "110", sid="b"))
    assert acc.position(ETH).entry_price == Decimal(105)  # (100 + 110) / 2
    # b sells 1 @ 120: account realised by average entry 1 × (120 − 105) = 15;
    # b's own lot closes (1 × (120 − 110) = 10 to b), a keeps the lot at 100
    acc.apply_fill(fill(ETH, SELL, "1", "120", sid="b"))
    assert acc.position(ETH).realised_pnl_usd == Decimal(15)
    assert [(lot.strategy_id, lot.qty_base, lot.price) for lot in acc.lots(ETH)] == [
        ("a", Decimal(1), Decimal(100))
    ]
    acc.update_mark(ETH, 2, 120.0)
    rows = {r.strategy_id: r.price_pnl_usd for r in acc.breakdown()}
    # a: unrealised 120 − 100 = 20; b: realised 10; together 30 = 15 realised + 15 unrealised
    assert rows == {"a": Decimal(20), "b": Decimal(10)}
    assert acc.unrealised_pnl_usd() == Decimal(15)


# ----------------------------------------------------------------- liquidation


def test_cross_long_liquidated_when_mark_crosses_not_a_tick_before():
    acc = Account(INSTRUMENTS, "5000", leverage={BTC: 10})
    acc.apply_fill(fill(BTC, BUY, "1", "50000"))
    # Binance formula, bracket 1 (0.004, 0): LP = (5,000 + 0 − 50,000) / (0.004 − 1)
    #   = 45,000 / 0.996 = 45,180.722891566…
    lp = acc.position(BTC).liquidation_price
    assert lp is not None and lp.quantize(Decimal("1e-8")) == Decimal("45180.72289157")
    # 45,180.8 (tick above): balance 5,000 − 4,819.2 = 180.8 ≥ MM 45,180.8 × 0.004 = 180.7232
    assert acc.update_mark(BTC, 10, 45180.8) == []
    assert acc.position(BTC).qty_base == 1
    # 45,180.7 (tick below LP): balance 180.7 < MM 180.7228 → liquidated at the mark
    fills = acc.update_mark(BTC, 11, 45180.7)
    (f,) = fills
    assert (f.side, f.qty_base, f.price, f.label, f.liquidity) == (
        SELL,
        Decimal(1),
        Decimal("45180.7"),
        "LIQUIDATION",
        Liquidity.TAKER,
    )
    # fee 45,180.7 × 0.0125 = 564.75875; cash 5,000 − 4,819.3 − 564.75875 = −384.05875
    assert f.fee_usd == Decimal("564.75875")
    assert acc.position(BTC).qty_base == 0
    assert acc.cash_usd == Decimal("-384.05875")


def test_cross_short_liquidation_and_other_symbols_closed_too():
    acc = Account(INSTRUMENTS, "5000", liquidation_fee_rate="0")
    acc.apply_fill(fill(BTC, SELL, "1", "50000"))
    acc.apply_fill(fill(ETH, BUY, "1", "2000"))  # mark 2,000 = entry: no pnl, MM 8
    # Bracket 1 (0.004, 0): LP = (WB − TMM1 + UPNL1 + cum + EP) / (MMR + 1)
    #   = (5,000 − 8 + 0 + 0 + 50,000) / 1.004 = 54,772.9: notional 54,772.9 > 50,000 is
    #   bracket 2, so recompute with (0.005, 50):
    # LP = (5,000 − 8 + 0 + 50 + 50,000) / 1.005 = 55,042 / 1.005 = 54,768.159203980…
    lp = acc.position(BTC).liquidation_price
    assert lp is not None and lp.quantize(Decimal("1e-6")) == Decimal("54768.159204")
    # at 54,768.1: balance 5,000 − 4,768.1 = 231.9 ≥ MM 223.8405 + 8 = 231.8405 → safe
    assert acc.update_mark(BTC, 1, 54768.1) == []
    # at 54,768.2: balance 231.8 < 223.841 + 8 = 231.841 → both positions liquidated
    fills = acc.update_mark(BTC, 2, 54768.2)
    assert sorted((f.symbol, f.side, f.price) for f in fills) == [
        (BTC, BUY, Decimal("54768.2")),
        (ETH, SELL, Decimal("2000")),
    ]
    assert acc.positions() == []
    assert acc.cash_usd == Decimal("231.8")  # 5,000 − 4,768.2 (no fee)


def test_isolated_position_liquidated_despite_rich_wallet():
    acc = Account(INSTRUMENTS, "100000", margin_mode="isolated", leverage={BTC: 10})
    acc.apply_fill(fill(BTC, BUY, "1", "50000"))
    p = acc.position(BTC)
    assert p.isolated_margin_usd == Decimal(5000)  # 50,000 / 10
    # isolated: WB = 5,000, TMM1 = UPNL1 = 0 → LP = 45,000 / 0.996 = 45,180.72…
    assert p.liquidation_price is not None
    assert p.liquidation_price.quantize(Decimal("0.01")) == Decimal("45180.72")
    assert acc.update_mark(BTC, 1, 45180.8) == []
    (f,) = acc.update_mark(BTC, 2, 45180.7)
    assert f.label == "LIQUIDATION"
    # loss 4,819.3 + fee 564.75875 out of 100,000
    assert acc.cash_usd == Decimal("94615.94125")
    assert acc.position(BTC).isolated_margin_usd == 0


def test_isolated_funding_moves_isolated_margin():
    acc = Account(INSTRUMENTS, "100000", margin_mode="isolated", leverage={BTC: 20})
    acc.apply_fill(fill(BTC, BUY, "2", "50000"))  # margin 100,000 / 20 = 5,000
    acc.settle_funding(BTC, 1, 0.001, 50000.0)  # −2 × 50,000 × 0.001 = −100
    assert acc.position(BTC).isolated_margin_usd == Decimal(4900)
    acc.apply_fill(fill(BTC, SELL, "0.5", "50000"))  # releases a quarter: 4,900 − 1,225
    assert acc.position(BTC).isolated_margin_usd == Decimal(3675)


def test_hedge_mode_cross_liquidation_closes_both_legs():
    acc = Account(INSTRUMENTS, "1000", hedge_mode=True, liquidation_fee_rate="0")
    acc.apply_fill(fill(BTC, BUY, "2", "50000", ps=LONG, sid="x"))
    acc.apply_fill(fill(BTC, SELL, "1", "50000", ps=SHORT, sid="y"))
    # one LP for both legs; at the LP the long's notional (≈ 99,290) is bracket 2 (0.005, 50)
    # and the short's (≈ 49,645) bracket 1 (0.004, 0):
    # LP = (1,000 + 50 + 0 − 2×50,000 + 1×50,000) / (2×0.005 + 1×0.004 − 2 + 1)
    #    = −48,950 / −0.986 = 49,645.030425963…
    lp_long = acc.position(BTC, LONG).liquidation_price
    lp_short = acc.position(BTC, SHORT).liquidation_price
    assert lp_long == lp_short
    assert lp_long is not None and lp_long.quantize(Decimal("0.001")) == Decimal("49645.030")
    # 49,645.1: balance 1,000 − 709.8 + 354.9 = 645.1 ≥ MM 446.451 + 198.5804 = 645.0314
    assert acc.update_mark(BTC, 1, 49645.1) == []
    # 49,645.0: balance 645.0 < MM 446.45 + 198.58 = 645.03
    fills = acc.update_mark(BTC, 2, 49645.0)
    assert sorted((f.position_side, f.side, f.qty_base, f.strategy_id) for f in fills) == [
        (LONG, SELL, Decimal(2), "x"),
        (SHORT, BUY, Decimal(1), "y"),
    ]


# ----------------------------------------------------------------- spot


def test_spot_leg_cash_and_no_short_selling():
    acc = Account(INSTRUMENTS, "100000")
    # buy 0.5 @ 60,000, fee 30: cash 100,000 − 30,000 − 30 = 69,970
    acc.apply_fill(fill(BTC_SPOT, BUY, "0.5", "60000", "30"))
    assert acc.cash_usd == Decimal(69970)
    # sell 0.2 @ 61,000, fee 12.2: cash 69,970 + 12,200 − 12.2 = 82,157.8; 0.3 left
    acc.apply_fill(fill(BTC_SPOT, SELL, "0.2", "61000", "12.2"))
    assert acc.cash_usd == Decimal("82157.8")
    p = acc.position(BTC_SPOT)
    assert (p.qty_base, p.entry_price, p.realised_pnl_usd) == (Decimal("0.3"), 60000, 200)
    # equity at mark 62,000: 82,157.8 + 0.3 × 62,000 = 100,757.8
    assert acc.update_mark(BTC_SPOT, 1, 62000.0) == []
    assert acc.equity_usd == Decimal("100757.8")
    with pytest.raises(AccountError, match=r"BTCUSDT\.SPOT: selling 0.4 but only 0.3 held"):
        acc.apply_fill(fill(BTC_SPOT, SELL, "0.4", "62000"))
    assert acc.cash_usd == Decimal("82157.8") and acc.position(BTC_SPOT).qty_base == Decimal("0.3")


# ----------------------------------------------------------------- read side


def test_view_snapshot_and_slippage_in_breakdown():
    acc = Account(INSTRUMENTS, "10000", leverage={BTC: 5})
    acc.apply_fill(fill(BTC, BUY, "0.1", "50000", "2", sid="s1", slippage="1.5"))
    acc.update_mark(BTC, 1, 51000.0)
    v = acc.view()
    # cash 10,000 − 2 = 9,998; upnl 0.1 × (51,000 − 50,000) = 100; equity 10,098
    assert (v.cash_usd, v.unrealised_pnl_usd, v.equity_usd) == (9998, 100, 10098)
    # MM 5,100 × 0.004 = 20.4; available 10,098 − 5,100 / 5 = 9,078
    assert (v.maint_margin_usd, v.available_usd) == (Decimal("20.4"), Decimal(9078))
    p = v.position(BTC)
    assert p is not None and p.qty_base == Decimal("0.1") and v.position(ETH) is None
    with pytest.raises(TypeError):
        v.marks[BTC] = Decimal(1)  # type: ignore[index]
    acc.apply_fill(fill(BTC, SELL, "0.1", "51000", sid="s1"))
    assert v.position(BTC) is p and v.cash_usd == 9998  # the snapshot did not move
    (row,) = acc.breakdown()
    assert (row.price_pnl_usd, row.fees_usd, row.slippage_usd) == (100, 2, Decimal("1.5"))
    assert row.total_usd == 98


# ----------------------------------------------------------------- checks and errors


def test_can_open_margin_and_bracket_leverage():
    acc = Account(INSTRUMENTS, "1000", leverage={BTC: 125})
    # 0.4 BTC @ 50,000 = 20,000 notional (bracket 1, 125x): margin 160 ≤ 1,000
    assert acc.can_open(BTC, BUY, "0.4", "50000") is None
    # 2 BTC = 100,000 notional is bracket 2, whose max leverage is 100x
    reason = acc.can_open(BTC, BUY, "2", "50000")
    assert reason is not None and "max leverage 100x" in reason
    acc2 = Account(INSTRUMENTS, "1000", leverage={BTC: 20})
    # 0.5 BTC @ 50,000 at 20x needs 1,250 > 1,000 available
    reason = acc2.can_open(BTC, BUY, "0.5", "50000")
    assert reason is not None and "insufficient margin" in reason and "1250" in reason
    acc2.apply_fill(fill(BTC, BUY, "0.3", "50000"))
    assert acc2.can_open(BTC, SELL, "0.3", "50000") is None  # reducing is always allowed
    assert acc2.can_open(BTC_SPOT, SELL, "1", "50000") == "BTCUSDT.SPOT: selling 1 but only 0 held"
    assert "unknown symbol" in (acc2.can_open("XRPUSDT", BUY, "1", "1") or "")


def test_constructor_and_event_errors():
    with pytest.raises(AccountError, match=r"leverage\[BTCUSDT\]: 200 not in 1..125"):
        Account(INSTRUMENTS, "1", leverage={BTC: 200})
    with pytest.raises(AccountError, match="margin_mode: 'portfolio'"):
        Account(INSTRUMENTS, "1", margin_mode="portfolio")
    with pytest.raises(AccountError, match=r"brackets: 'BTCUSDT\.SPOT' is not a perp"):
        Account(INSTRUMENTS, "1", brackets={BTC_SPOT: []})
    acc = Account(INSTRUMENTS, "1")
    with pytest.raises(AccountError, match="XRPUSDT: unknown symbol"):
        acc.apply_fill(fill("XRPUSDT", BUY, "1", "1"))
    with pytest.raises(AccountError, match=r"BTCUSDT: mark price 0\.0 at 5 is not > 0"):
        acc.update_mark(BTC, 5, 0.0)


# ----------------------------------------------------------------- conservation property

Q8 = Decimal("1e-8")


class Ledger:
    """Independent, simple ledger: cash flows of every fill, fees, funding recomputed from
    its own net sizes, and marks. Equity = initial + Σ flows + Σ size × mark − fees + funding."""

    def __init__(self, cash: Decimal) -> None:
        self.initial = cash
        self.flows = Decimal(0)  # Σ −signed qty × price over all fills (perp and spot)
        self.fees = Decimal(0)
        self.funding = Decimal(0)
        self.size: dict[tuple[str, PositionSide], Decimal] = {}
        self.mark: dict[str, Decimal] = {}

    def on_fill(self, f: Fill) -> None:
        signed = f.qty_base if f.side is BUY else -f.qty_base
        self.flows -= signed * f.price
        self.fees += f.fee_usd
        key = (f.symbol, f.position_side)
        self.size[key] = self.size.get(key, Decimal(0)) + signed
        self.mark.setdefault(f.symbol, f.price)

    def on_funding(self, symbol: str, rate: Decimal, mark: Decimal) -> Decimal:
        total = Decimal(0)
        for (sym, _ps), q in self.size.items():
            if sym == symbol and q:
                total += (-q * mark * rate).quantize(Q8, rounding=ROUND_HALF_EVEN)
        self.funding += total
        return total

    def price_pnl(self) -> Decimal:
        return self.flows + sum(
            (q * self.mark[sym] for (sym, _), q in self.size.items()), Decimal(0)
        )

    def equity(self) -> Decimal:
        return self.initial + self.price_pnl() - self.fees + self.funding


def run_random_simulation(
    n_events: int, *, seed: int, hedge_mode: bool, margin_mode: str, record: list | None = None
) -> tuple[Account, Ledger, int]:
    """Random fills, funding settlements and marks on two perps and a spot leg, pre-generated
    with NumPy; prices on the tick grid, sizes on the lot grid. Returns the account, the
    ledger and the number of liquidation fills. ``record`` (if given) receives every account
    call as ``(method name, args)`` so a benchmark can replay them."""
    rng = np.random.default_rng(seed)
    cash = Decimal("1000000")
    acc = Account(
        INSTRUMENTS,
        cash,
        hedge_mode=hedge_mode,
        margin_mode=margin_mode,
        leverage={BTC: 20, ETH: 10},
    )
    led = Ledger(cash)
    kind = rng.choice(3, size=n_events, p=[0.5, 0.1, 0.4])  # 0 fill, 1 funding, 2 mark
    sym_i = rng.integers(0, 3, size=n_events)  # 0 BTC, 1 ETH, 2 BTC spot
    buy = rng.random(n_events) < 0.5
    lots = rng.integers(1, 1000, size=n_events)  # × 0.001
    cap = (Decimal(20), Decimal(300))  # max book size, base units (BTC, ETH)
    ps_long = rng.random(n_events) < 0.5
    fee_bps = rng.choice([-1, 2, 4, 5], size=n_events)  # maker rebate … taker
    strat = rng.integers(0, 3, size=n_events)
    rate_e8 = rng.integers(-30_000, 30_000, size=n_events)  # rate in 1e-8 units (±0.03 %)
    # random walks of the price in ticks around 50,000 (BTC, tick 0.1) and 3,000 (ETH, 0.01)
    walk = np.cumsum(rng.integers(-40, 41, size=(n_events, 2)), axis=0)
    base = np.array([500_000, 300_000])
    ticks = np.maximum(base + walk * np.array([10, 1]), base // 4)
    jump = rng.random(n_events) < 0.002  # occasional crash / squeeze marks → liquidations
    jump_f = rng.choice([0.7, 1.4], size=n_events)
    symbols = (BTC, ETH, BTC_SPOT)
    tick = (Decimal("0.1"), Decimal("0.01"), Decimal("0.1"))
    sids = ("carry", "grid", "")
    n_liq = 0
    for i in range(n_events):
        s = int(sym_i[i])
        sym = symbols[s]
        px_t = int(ticks[i, 0 if s != 1 else 1])
        if kind[i] == 2 and jump[i]:
            px_t = int(px_t * jump_f[i])
        price = px_t * tick[s]
        k = int(kind[i])
        if k == 0:
            qty = int(lots[i]) * Decimal("0.001")
            side = BUY if buy[i] else SELL
            ps = BOTH
            if s == 2:  # spot: never sell more than held
                held = led.size.get((sym, BOTH), Decimal(0))
                if side is SELL and qty > held:
                    if held == 0:
                        side = BUY
                    else:
                        qty = held
            else:
                if hedge_mode:
                    ps = LONG if ps_long[i] else SHORT
                opening_side = SELL if ps is SHORT else BUY
                cur = led.size.get((sym, ps), Decimal(0))
                if hedge_mode and side is not opening_side and qty > abs(cur):
                    if cur == 0:
                        side = opening_side
                    else:
                        qty = abs(cur)
                signed = qty if side is BUY else -qty
                if abs(cur + signed) > cap[s]:  # keep sizes bounded: trade the other way
                    if hedge_mode:
                        if cur == 0:
                            continue
                        side, qty = (SELL if side is BUY else BUY), min(qty, abs(cur))
                    else:
                        side = SELL if side is BUY else BUY
            if acc.can_open(sym, side, qty, price, ps) is not None:
                continue  # the engine would not send it (margin / leverage / cash)
            fee = (qty * price * int(fee_bps[i]) / 10_000).quantize(Q8)
            f = Fill(
                client_order_id=f"r{i}",
                venue="binance",
                symbol=sym,
                side=side,
                qty_base=qty,
                price=price,
                fee_usd=fee,
                liquidity=Liquidity.MAKER if fee_bps[i] <= 2 else Liquidity.TAKER,
                ts_ns=i,
                position_side=ps,
                strategy_id=sids[int(strat[i])],
            )
            acc.apply_fill(f)
            led.on_fill(f)
            if record is not None:
                record.append(("apply_fill", (f,)))
        elif k == 1 and s != 2:
            rate = int(rate_e8[i]) * Decimal("1e-8")
            got = acc.settle_funding(sym, i, float(rate), float(price))
            if record is not None:
                record.append(("settle_funding", (sym, i, float(rate), float(price))))
            assert got == led.on_funding(sym, rate, price)
        else:
            liq = acc.update_mark(sym, i, float(price))
            if record is not None:
                record.append(("update_mark", (sym, i, float(price))))
            led.mark[sym] = price
            for f in liq:
                led.on_fill(f)
            n_liq += len(liq)
    return acc, led, n_liq


@pytest.mark.parametrize(
    ("hedge_mode", "margin_mode", "seed"),
    [(False, "cross", 1), (True, "isolated", 2), (True, "cross", 3), (False, "isolated", 4)],
)
def test_conservation_random_100k_events(hedge_mode, margin_mode, seed):
    acc, led, n_liq = run_random_simulation(
        25_000, seed=seed, hedge_mode=hedge_mode, margin_mode=margin_mode
    )
    # exact Decimal equality (everything booked is exact on the tick/lot grid, funding to 1e-8)
    assert acc.equity_usd == led.equity()
    assert acc.fees_usd == led.fees
    assert acc.funding_usd == led.funding
    rows = acc.breakdown()
    assert sum((r.price_pnl_usd for r in rows), Decimal(0)) == led.price_pnl()
    assert sum((r.fees_usd for r in rows), Decimal(0)) == led.fees
    assert sum((r.funding_usd for r in rows), Decimal(0)) == led.funding
    for p in acc.positions():
        assert p.qty_base == led.size[(p.symbol, p.position_side)]
    assert n_liq > 0  # the crash marks did liquidate something


# ----------------------------------------------------------------- re-entry marks, open books


def test_reopening_a_symbol_values_it_at_the_new_fill_not_the_old_mark() -> None:
    a = Account(INSTRUMENTS, "100000", leverage={BTC: 10})
    a.apply_fill(fill(BTC, BUY, "1", "50000"))
    a.update_mark(BTC, 2, 51_000.0)
    a.apply_fill(fill(BTC, SELL, "1", "51000"))  # flat: the engine stops sending marks
    a.apply_fill(fill(BTC, BUY, "2", "60000"))  # reopened at 60,000
    # valued at the new fill price: 2 × 60,000 − 120,000 = 0 (with the stale mark of
    # 51,000 it would have shown 2 × 51,000 − 120,000 = −18,000)
    assert a.mark(BTC) == Decimal("60000")
    assert a.unrealised_pnl_usd() == 0
    # cash = 100,000 + realised 1 × (51,000 − 50,000) = 101,000; equity = cash + 0
    assert a.equity_usd == Decimal("101000")
    # a spot leg bought again after being sold out is valued at its new price too
    a.apply_fill(fill(BTC_SPOT, BUY, "1", "50000"))
    a.update_mark(BTC_SPOT, 3, 40_000.0)
    a.apply_fill(fill(BTC_SPOT, SELL, "1", "40000"))
    a.apply_fill(fill(BTC_SPOT, BUY, "0.5", "45000"))
    assert a.spot_value_usd == Decimal("22500")  # 0.5 × 45,000


def test_margin_totals_over_open_books_equal_the_sums_over_every_book() -> None:
    rng = np.random.default_rng(7)
    a = Account(INSTRUMENTS, "1000000", leverage={BTC: 5, ETH: 5})
    px = {BTC: 50_000.0, ETH: 3_000.0}
    for step in range(300):
        sym = BTC if rng.random() < 0.5 else ETH
        px[sym] = round(px[sym] * (1 + rng.normal(0, 0.01)), 1)
        q = a.position(sym).qty_base
        if q != 0 and rng.random() < 0.3:  # close fully, so books go flat and reopen
            a.apply_fill(fill(sym, SELL if q > 0 else BUY, str(abs(q)), str(px[sym])))
        else:
            side = BUY if rng.random() < 0.5 else SELL
            a.apply_fill(fill(sym, side, f"{rng.integers(1, 50) / 1000:.3f}", str(px[sym])))
        a.update_mark(sym, step, px[sym])
        # the obvious definitions, over every perp book (flat ones contribute 0)
        books = [a.position(s) for s in (BTC, ETH)]
        upnl = sum((p.qty_base * p.mark_price - p.qty_base * p.entry_price for p in books
                    if p.qty_base != 0), Decimal(0))  # fmt: skip
        assert abs(a.unrealised_pnl_usd() - upnl) < Decimal("1e-6")
        mm = sum(
            (
                maintenance_margin(p.qty_base * p.mark_price, a.brackets(p.symbol))
                for p in books
                if p.qty_base != 0
            ),
            Decimal(0),
        )
        assert a.maint_margin_usd == mm
        used = sum(
            (abs(p.qty_base) * p.mark_price / 5 for p in books if p.qty_base != 0), Decimal(0)
        )
        assert a.available_usd == a.cash_usd + a.unrealised_pnl_usd() - used
