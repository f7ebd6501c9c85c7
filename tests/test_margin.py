"""Tiered maintenance margin and the liquidation price (perpdesk.risk.margin).

Worked examples use Binance's published USDⓈ-M formula ("How to Calculate Liquidation
Price of USDⓈ-M Futures Contracts", Binance support FAQ b3c689c1f50a44cabb3a84e663b81d93):

    LP = (WB − TMM1 + UPNL1 + cumB + cumL + cumS − Side1BOTH×Position1BOTH×EP1BOTH
          − Position1LONG×EP1LONG + Position1SHORT×EP1SHORT)
         / (Position1BOTH×MMR_B + Position1LONG×MMR_L + Position1SHORT×MMR_S
            − Side1BOTH×Position1BOTH − Position1LONG + Position1SHORT)

with the BTCUSDT brackets of GET /fapi/v1/leverageBracket (recorded response in the public
repository boolean404/heikin-ashi-trading-bot, json/fapiPrivate_get_leverage_bracket.py),
re-typed below as TABLE. The arithmetic is done by hand in the comments.
"""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest

from perpdesk.errors import PerpdeskError
from perpdesk.risk.margin import (
    BINANCE_BTCUSDT_BRACKETS,
    Bracket,
    MarginError,
    bracket_for,
    brackets_from_binance,
    brackets_from_ccxt,
    brackets_from_records,
    liquidation_price,
    maintenance_margin,
    validate_brackets,
)

B = BINANCE_BTCUSDT_BRACKETS

# (floor, cap, max leverage, maintMarginRatio, cum) — the recorded leverageBracket response
TABLE = [
    (0, 50_000, 125, 0.004, 0),
    (50_000, 250_000, 100, 0.005, 50),
    (250_000, 3_000_000, 50, 0.01, 1_300),
    (3_000_000, 20_000_000, 20, 0.025, 46_300),
    (20_000_000, 40_000_000, 10, 0.05, 546_300),
    (40_000_000, 100_000_000, 5, 0.1, 2_546_300),
    (100_000_000, 120_000_000, 4, 0.125, 5_046_300),
    (120_000_000, 200_000_000, 3, 0.15, 8_046_300),
    (200_000_000, 300_000_000, 2, 0.25, 28_046_300),
    (300_000_000, 500_000_000, 1, 0.5, 103_046_300),
]

RECORDED_RESPONSE = [
    {
        "symbol": "BTCUSDT",
        "brackets": [
            {
                "bracket": str(i),
                "initialLeverage": str(lev),
                "notionalCap": str(cap),
                "notionalFloor": str(floor),
                "maintMarginRatio": str(mmr),
                "cum": f"{cum}.0",
            }
            for i, (floor, cap, lev, mmr, cum) in enumerate(TABLE, start=1)
        ],
    }
]


def test_default_table_is_the_recorded_response():
    assert len(B) == 10
    for b, (floor, cap, lev, mmr, cum) in zip(B, TABLE, strict=True):
        assert b == Bracket(Decimal(floor), Decimal(cap), lev, Decimal(str(mmr)), Decimal(cum))
    assert brackets_from_binance(RECORDED_RESPONSE) == {"BTCUSDT": B}
    # a single object (symbol sent) and numeric values, as in Binance's API doc example
    one = {
        "symbol": "ETHUSDT",
        "notionalCoef": 1.5,
        "brackets": [
            {
                "bracket": 1,
                "initialLeverage": 75,
                "notionalCap": 10000,
                "notionalFloor": 0,
                "maintMarginRatio": 0.0065,
                "cum": 0.0,
            },
            {  # cum = 0 + 10,000 × (0.01 − 0.0065) = 35
                "bracket": 2,
                "initialLeverage": 50,
                "notionalCap": 100000,
                "notionalFloor": 10000,
                "maintMarginRatio": 0.01,
                "cum": 35.0,
            },
        ],
    }
    eth = brackets_from_binance(one)["ETHUSDT"]
    assert eth[1] == Bracket(Decimal(10000), Decimal(100000), 50, Decimal("0.01"), Decimal(35))


def test_ccxt_tiers_loader_with_and_without_cum():
    ccxt = pytest.importorskip("ccxt")
    tiers = ccxt.binance().parse_market_leverage_tiers(RECORDED_RESPONSE[0])
    assert brackets_from_ccxt(tiers) == {"BTCUSDT": B}
    # without the exchange's info, cum is derived: bracket 4 = 1,300 + 3,000,000 × 0.015 = 46,300
    bare = [{k: v for k, v in t.items() if k != "info"} for t in tiers]
    assert brackets_from_ccxt({"BTC/USDT:USDT": bare}) == {"BTC/USDT:USDT": B}


def test_records_loader_and_validation_errors():
    rows = [
        {
            "notional_floor_usd": f,
            "notional_cap_usd": c,
            "max_leverage": lev,
            "maint_margin_rate": str(m),
            "maint_amount_usd": cum,
        }
        for f, c, lev, m, cum in TABLE
    ]
    assert brackets_from_records(rows) == B
    gap = list(B)
    gap[2] = Bracket(Decimal(260_000), Decimal(3_000_000), 50, Decimal("0.01"), Decimal(1_300))
    with pytest.raises(MarginError, match="bracket 3: floor 260000 != previous cap 250000"):
        validate_brackets(gap)
    bad_cum = list(B)
    bad_cum[3] = Bracket(
        Decimal(3_000_000), Decimal(20_000_000), 20, Decimal("0.025"), Decimal(46_000)
    )
    with pytest.raises(MarginError, match="bracket 4: maintenance amount 46000"):
        validate_brackets(bad_cum)
    flat = list(B)
    flat[1] = Bracket(Decimal(50_000), Decimal(250_000), 100, Decimal("0.004"), Decimal(0))
    with pytest.raises(MarginError, match="does not increase"):
        validate_brackets(flat)
    with pytest.raises(PerpdeskError, match="row 2: missing key 'maint_amount_usd'"):
        brackets_from_records([rows[0], {k: v for k, v in rows[1].items() if "amount" not in k}])
    with pytest.raises(MarginError, match="empty"):
        validate_brackets([])


def test_maintenance_margin_by_hand():
    # 40,000 USD: bracket 1 → 40,000 × 0.004 − 0 = 160
    assert maintenance_margin(Decimal(40_000), B) == Decimal(160)
    # 500,000 USD: bracket 3 → 500,000 × 0.01 − 1,300 = 3,700
    assert maintenance_margin(Decimal(-500_000), B) == Decimal(3_700)
    # boundary 250,000 belongs to bracket 2 (floor < N ≤ cap): 250,000 × 0.005 − 50 = 1,200;
    # bracket 3's line gives the same, 250,000 × 0.01 − 1,300 = 1,200 (continuity through cum)
    assert bracket_for(Decimal(250_000), B) is B[1]
    assert maintenance_margin(Decimal(250_000), B) == Decimal(1_200)
    # 25,000,000 USD: bracket 5 → 25,000,000 × 0.05 − 546,300 = 703,700
    assert maintenance_margin(Decimal(25_000_000), B) == Decimal(703_700)
    assert maintenance_margin(Decimal(0), B) == Decimal(0)


def q8(x: Decimal | None) -> Decimal:
    assert x is not None
    return x.quantize(Decimal("1e-8"))


def test_liquidation_bracket1_one_way_long_cross():
    # WB 1,000; long 0.5 BTC @ 40,000 (notional 20,000 → bracket 1: MMR 0.004, cum 0)
    # LP = (1,000 + 0 − 1×0.5×40,000) / (0.5×0.004 − 1×0.5) = −19,000 / −0.498
    #    = 38,152.610441767068…; notional at LP 19,076.3 ≤ 50,000 → still bracket 1
    lp = liquidation_price(
        B,
        wallet_balance_usd=Decimal(1000),
        both_qty_base=Decimal("0.5"),
        both_entry_price=Decimal(40000),
    )
    assert q8(lp) == Decimal("38152.61044177")


def test_liquidation_tier_change_is_recomputed_bracket2():
    # WB 60,000; long 10 BTC @ 30,000: notional 300,000 is bracket 3 (0.01, 1,300).
    # Bracket 3: LP = (60,000 + 1,300 − 300,000) / (10×0.01 − 10) = −238,700 / −9.9
    #   = 24,111.11; notional there 241,111 ≤ 250,000 is bracket 2, so recompute (FAQ note):
    # Bracket 2: LP = (60,000 + 50 − 300,000) / (10×0.005 − 10) = −239,950 / −9.95
    #   = 24,115.577889447236…; notional 241,155.78 is bracket 2: stable.
    lp = liquidation_price(
        B,
        wallet_balance_usd=Decimal(60000),
        both_qty_base=Decimal(10),
        both_entry_price=Decimal(30000),
        start_price=Decimal(30000),
    )
    assert q8(lp) == Decimal("24115.57788945")


def test_liquidation_bracket3_one_way_short_cross():
    # WB 20,000; short 10 BTC @ 40,000 (400,000 → bracket 3: 0.01, 1,300)
    # LP = (20,000 + 1,300 − (−1)×10×40,000) / (10×0.01 − (−1)×10) = 421,300 / 10.1
    #    = 41,712.871287128712…; notional 417,128.7 ∈ (250,000, 3,000,000] → bracket 3
    lp = liquidation_price(
        B,
        wallet_balance_usd=Decimal(20000),
        both_qty_base=Decimal(-10),
        both_entry_price=Decimal(40000),
    )
    assert q8(lp) == Decimal("41712.87128713")


def test_liquidation_hedge_mode_brackets_3_and_4_cross():
    # Hedge mode, cross, WB 500,000: LONG 100 @ 40,000 (4,000,000 → bracket 4: 0.025, 46,300),
    # SHORT 20 @ 41,000 (820,000 → bracket 3: 0.01, 1,300).
    # num = 500,000 + 46,300 + 1,300 − 100×40,000 + 20×41,000 = −2,632,400
    # den = 100×0.025 + 20×0.01 − 100 + 20 = 2.5 + 0.2 − 80 = −77.3
    # LP = 34,054.333764553686…; long notional 3,405,433 → bracket 4, short 681,087 → bracket 3
    lp = liquidation_price(
        B,
        wallet_balance_usd=Decimal(500000),
        long_qty_base=Decimal(100),
        long_entry_price=Decimal(40000),
        short_qty_base=Decimal(20),
        short_entry_price=Decimal(41000),
        start_price=Decimal(40000),
    )
    assert q8(lp) == Decimal("34054.33376455")


def test_liquidation_bracket5_short_and_isolated_bracket2():
    # Short 600 @ 40,000 (24,000,000 → bracket 5: 0.05, 546,300), WB 3,000,000:
    # LP = (3,000,000 + 546,300 + 600×40,000) / (600×0.05 + 600) = 27,546,300 / 630
    #    = 43,724.285714285714…; notional 26,234,571 ∈ (20M, 40M] → bracket 5
    lp = liquidation_price(
        B,
        wallet_balance_usd=Decimal(3000000),
        both_qty_base=Decimal(-600),
        both_entry_price=Decimal(40000),
    )
    assert q8(lp) == Decimal("43724.28571429")
    # Isolated (WB = isolated wallet, TMM1 = UPNL1 = 0): long 2 @ 50,000 at 20x → margin
    # 100,000 / 20 = 5,000; bracket 2 (0.005, 50):
    # LP = (5,000 + 50 − 100,000) / (2×0.005 − 2) = −94,950 / −1.99 = 47,713.567839195979…
    # notional 95,427 → bracket 2
    lp = liquidation_price(
        B,
        wallet_balance_usd=Decimal(5000),
        both_qty_base=Decimal(2),
        both_entry_price=Decimal(50000),
    )
    assert q8(lp) == Decimal("47713.56783920")


def test_liquidation_other_contracts_and_no_liquidation():
    # Cross with another contract: TMM1 = 500, UPNL1 = −2,000, WB 10,000; long 1 @ 40,000
    # (bracket 1): LP = (10,000 − 500 − 2,000 − 40,000) / (0.004 − 1) = −32,500 / −0.996
    #    = 32,630.522088353413…
    lp = liquidation_price(
        B,
        wallet_balance_usd=Decimal(10000),
        other_maint_margin_usd=Decimal(500),
        other_upnl_usd=Decimal(-2000),
        both_qty_base=Decimal(1),
        both_entry_price=Decimal(40000),
    )
    assert q8(lp) == Decimal("32630.52208835")
    # a 1x long (wallet = notional) cannot be liquidated: LP = (40,000 − 40,000)/(…) = 0 → None
    assert (
        liquidation_price(
            B,
            wallet_balance_usd=Decimal(40000),
            both_qty_base=Decimal(1),
            both_entry_price=Decimal(40000),
        )
        is None
    )
    assert liquidation_price(B, wallet_balance_usd=Decimal(1)) is None


# ----------------------------------------------------------------- brute-force reference


def _mm_ref(notional: np.ndarray) -> np.ndarray:
    """Slow obvious maintenance margin: the TABLE row with floor < N ≤ cap (last row above)."""
    n = np.abs(notional)
    out = np.zeros_like(n)
    done = np.zeros(n.shape, dtype=bool)
    for _floor, cap, _lev, mmr, cum in TABLE:
        sel = (~done) & (n <= cap)
        out[sel] = n[sel] * mmr - cum
        done |= sel
    _floor, _cap, _lev, mmr, cum = TABLE[-1]
    out[~done] = n[~done] * mmr - cum
    return out


def _f_ref(p: np.ndarray, wb: float, legs: list[tuple[int, float, float]]) -> np.ndarray:
    """Margin balance − maintenance margin at mark p; legs are (side, size, entry)."""
    out = np.full(p.shape, wb, dtype=float)
    for side, q, ep in legs:
        out += side * q * (p - ep) - _mm_ref(q * p)
    return out


def _brute_lp(wb: float, legs, start: float) -> float | None:
    """Scan prices from ``start`` in the direction in which the margin falls and return the
    first price where margin balance = maintenance margin (to 1e-5 USD)."""
    f0 = _f_ref(np.array([start - 0.01, start + 0.01]), wb, legs)
    down = f0[1] > f0[0]  # margin falls with the price → liquidation below
    step = start * 1e-3
    grid = np.arange(start, 0, -step) if down else np.arange(start, 20 * start, step)
    f = _f_ref(grid, wb, legs)
    idx = np.nonzero(f < 0)[0]
    if len(idx) == 0:
        return None
    a, b = grid[idx[0] - 1], grid[idx[0]]  # f(a) ≥ 0 > f(b)
    for _ in range(3):  # refine the bracketing interval 1000× each round
        fine = np.linspace(a, b, 1001)
        j = np.nonzero(_f_ref(fine, wb, legs) < 0)[0][0]
        a, b = fine[j - 1], fine[j]
    return float((a + b) / 2)


def test_solver_agrees_with_brute_force_scan():
    rng = np.random.default_rng(5)
    checked = 0
    tiers_seen = set()
    for _ in range(400):
        ep = float(rng.uniform(20_000, 60_000))
        notional = float(10 ** rng.uniform(3.5, 7.9))  # 3 k … 80 M USD: brackets 1–6
        q = round(notional / ep, 3)
        if q <= 0:
            continue
        hedge = rng.random() < 0.3
        wb = float(round(notional * rng.uniform(0.02, 0.6), 2))
        if hedge:
            q2 = round(q * float(rng.uniform(0.05, 0.6)), 3)
            ep2 = float(round(ep * rng.uniform(0.97, 1.03), 1))
            legs = [(1, q, round(ep, 1)), (-1, q2, ep2)]
            kw = dict(
                long_qty_base=Decimal(str(q)),
                long_entry_price=Decimal(str(round(ep, 1))),
                short_qty_base=Decimal(str(q2)),
                short_entry_price=Decimal(str(ep2)),
            )
            if rng.random() < 0.5:  # make it net short
                legs = [(1, q2, ep2), (-1, q, round(ep, 1))]
                kw = dict(
                    long_qty_base=Decimal(str(q2)),
                    long_entry_price=Decimal(str(ep2)),
                    short_qty_base=Decimal(str(q)),
                    short_entry_price=Decimal(str(round(ep, 1))),
                )
        else:
            side = 1 if rng.random() < 0.5 else -1
            legs = [(side, q, round(ep, 1))]
            kw = dict(
                both_qty_base=Decimal(str(side * q)), both_entry_price=Decimal(str(round(ep, 1)))
            )
        start = round(ep, 1)
        if _f_ref(np.array([start]), wb, legs)[0] <= 0:
            continue  # already in liquidation at the start price
        lp = liquidation_price(
            B, wallet_balance_usd=Decimal(str(wb)), start_price=Decimal(str(start)), **kw
        )
        ref = _brute_lp(wb, legs, start)
        if ref is None:
            assert lp is None
        else:
            assert lp is not None
            assert abs(float(lp) - ref) < 1e-3, (legs, wb, lp, ref)
            tiers_seen.add(B.index(bracket_for(Decimal(str(q)) * lp, B)))
        checked += 1
    assert checked > 250
    assert len(tiers_seen) >= 4  # the liquidation prices really fall in several tiers
