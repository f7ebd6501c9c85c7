"""The carry backtest against hand-computed figures.

The 10-settlement example (one 8h symbol, bankroll 100,000 USD, carry 50 %, 10 slots,
perp leverage 3, 8 bps per leg) — every number below is worked out by hand:

slot capital C = 100,000 × 50 % / 10 = 5,000; leg notional X = C × 3/4 = 3,750.
Rates r1..r10 (per 8h): .0001 .001 .002 .0015 .00002 .001 .003 .0001 -.0005 .002
Signal at k = annualised r_{k-1} = r × 3 × 365 × 100:
 k1 none; k2 10.95 % (no entry); k3 109.5 % → enter at 100/100, earn r3;
 k4 hold, earn r4 at mark 101; k5 hold (bars after t4 are perp 102.5, spot 102), earn r5;
 k6 signal 2.19 % < 3 → exit at 102.5/102; k7 signal 109.5 → enter; k8 hold; k9 hold
 (10.95 % is inside the band), earn r9 < 0; k10 signal −54.75 % → exit.
Funding: 37.5×100×.002 = 7.5; 37.5×101×.0015 = 5.68125; 37.5×102.5×.00002 = 0.076875;
 then q = 3750/102.5: 3750×.003 = 11.25; 3750×.0001 = 0.375; 3750×(−.0005) = −1.875.
 Total 23.008125.
Costs: entry 8bp×2×3750 = 6; exit 1: 8bp×(37.5×102 + 37.5×102.5) = 6.135; entry 2: 6;
 exit 2: 8bp × (3750/102×102 + 3750) = 6. Total 24.135.
Price/basis: at k5, 37.5×(102−100) − 37.5×(102.5−100) = −18.75; nothing after.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from perpdesk.config import load_settings
from perpdesk.research.carry_backtest import run_carry_backtest
from tests.helpers import H_NS, T0, write_symbol

RATES = [0.0001, 0.001, 0.002, 0.0015, 0.00002, 0.001, 0.003, 0.0001, -0.0005, 0.002]
SETTLE = [T0 + 8 * H_NS * k for k in range(1, 11)]
T4 = SETTLE[3]


def _perp(t: int) -> float:
    return 100.0 if t < T4 else 102.5


def _spot(t: int) -> float:
    return 100.0 if t < T4 else 102.0


@pytest.fixture()
def hand_catalog(tmp_path: Path) -> Path:
    mark = [None, None, 100.0, 101.0, None, None, 102.5, None, None, None]
    write_symbol(tmp_path, "AAAUSDT", SETTLE, RATES, 8, _perp, _spot, mark=mark)
    return tmp_path


def settings(**carry):
    return load_settings(
        None, carry=carry, paths={"data_dir": "/nonexistent", "runs_dir": "/nonexistent"}
    )


def test_hand_computed_ten_settlements(hand_catalog: Path) -> None:
    bt = run_carry_backtest(settings(), hand_catalog)
    r = bt.rows[0]
    assert r["entries"] == 2 and r["exits"] == 2 and not r["closed_at_end"]
    assert r["funding_usd"] == pytest.approx(23.008125, abs=1e-9)
    assert r["costs_usd"] == pytest.approx(24.135, abs=1e-9)
    assert r["price_pnl_usd"] == pytest.approx(-18.75, abs=1e-9)
    assert r["pnl_usd"] == pytest.approx(23.008125 - 24.135 - 18.75, abs=1e-9)
    # bps of the leg notional X = 3750
    assert r["funding_bps"] == pytest.approx(23.008125 / 3750 * 1e4)
    assert r["costs_bps"] == pytest.approx(24.135 / 3750 * 1e4)
    # portfolio equity after each settlement (start point first)
    cum = [
        0,
        0,
        0,
        1.5,
        7.18125,
        -11.491875,
        -17.626875,
        -12.376875,
        -12.001875,
        -13.876875,
        -19.876875,
    ]
    np.testing.assert_allclose(
        bt.equity_usd, 100_000 + np.array(cum, dtype=float), rtol=0, atol=1e-9
    )
    p = bt.portfolio
    assert p["final_equity_usd"] == pytest.approx(99_980.123125, abs=1e-9)
    assert p["return_pct"] == pytest.approx(-19.876875 / 100_000 * 100)
    # max drawdown: peak 100,007.18125 → trough 99,980.123125
    assert p["max_dd_pct"] == pytest.approx((1 - 99_980.123125 / 100_007.18125) * 100)
    # Sharpe with 1095 periods a year (the 8h grid)
    eq = 100_000 + np.array(cum, dtype=float)
    rets = eq[1:] / eq[:-1] - 1
    assert p["sharpe"] == pytest.approx(rets.mean() / rets.std(ddof=1) * math.sqrt(1095))
    trades = bt.run.trades
    assert [(t["entry_ts_ns"], t["exit_ts_ns"]) for t in trades] == [
        (SETTLE[2], SETTLE[5]),
        (SETTLE[6], SETTLE[9]),
    ]
    assert [t["settlements"] for t in trades] == [3, 3]
    assert trades[0]["funding_usd"] == pytest.approx(7.5 + 5.68125 + 0.076875)
    assert trades[1]["q_perp"] == pytest.approx(3750 / 102.5)


def test_thresholds_from_config_change_the_result(hand_catalog: Path) -> None:
    # entry at 150 %: k3 (109.5 %) no; k4 (219 %) enter at 100; k6 exit; k7 (109.5) no;
    # k8 (328.5 %) enter at 102.5/102; k10 exit.
    bt = run_carry_backtest(settings(entry_ann_pct=150.0), hand_catalog)
    r = bt.rows[0]
    assert (r["entries"], r["exits"]) == (2, 2)
    assert r["funding_usd"] == pytest.approx(5.68125 + 0.076875 + 0.375 - 1.875)
    assert r["costs_usd"] == pytest.approx(24.135)
    assert r["pnl_usd"] == pytest.approx(4.258125 - 24.135 - 18.75)
    # exit threshold 0 %: k6 (2.19 %) now holds, so the pair stays from k3 to k10 (exit on −54.75 %)
    bt = run_carry_backtest(settings(exit_ann_pct=0.0), hand_catalog)
    r = bt.rows[0]
    assert (r["entries"], r["exits"]) == (1, 1)
    # funding k3..k9 with q = 37.5: marks 100, 101, 102.5×5
    f = 37.5 * (100 * 0.002 + 101 * 0.0015 + 102.5 * (0.00002 + 0.001 + 0.003 + 0.0001 - 0.0005))
    assert r["funding_usd"] == pytest.approx(f)
    assert r["costs_usd"] == pytest.approx(6 + 6.135)


def test_costs_and_volume_filter_from_config(hand_catalog: Path) -> None:
    bt = run_carry_backtest(settings(cost_bps_per_leg=0.0), hand_catalog)
    assert bt.rows[0]["costs_usd"] == 0.0
    assert bt.rows[0]["pnl_usd"] == pytest.approx(23.008125 - 18.75)
    bt = run_carry_backtest(settings(cost_bps_per_leg=20.0), hand_catalog)
    assert bt.rows[0]["costs_usd"] == pytest.approx(24.135 * 20 / 8)
    # 288 bars × 100,000 = 28.8M of 24h volume: a 30M filter blocks every entry
    bt = run_carry_backtest(settings(min_quote_volume_24h_usd=30e6), hand_catalog)
    assert bt.rows[0]["entries"] == 0 and bt.portfolio["final_equity_usd"] == 100_000
    bt = run_carry_backtest(settings(min_quote_volume_24h_usd=28.8e6), hand_catalog)
    assert bt.rows[0]["entries"] == 2


def test_bankroll_scales_every_amount(hand_catalog: Path) -> None:
    bt = run_carry_backtest(
        load_settings(
            None, account={"bankroll_usd": 1_000_000}, paths={"data_dir": "/x", "runs_dir": "/x"}
        ),
        hand_catalog,
    )
    assert bt.rows[0]["pnl_usd"] == pytest.approx(10 * (23.008125 - 24.135 - 18.75))
    bt = run_carry_backtest(settings(allocation_pct=25.0), hand_catalog)
    assert bt.rows[0]["pnl_usd"] == pytest.approx(0.5 * (23.008125 - 24.135 - 18.75))


def test_open_pair_closed_at_end_pays_exit(tmp_path: Path) -> None:
    rates = [0.001] * 5
    settle = SETTLE[:5]
    write_symbol(tmp_path, "BBBUSDT", settle, rates, 8, lambda t: 100.0, lambda t: 100.0)
    bt = run_carry_backtest(settings(), tmp_path)
    r = bt.rows[0]
    # enter at k2 (signal r1 = 109.5 %), earn k2..k5 = 4 × 3750 × .001, close at end
    assert (r["entries"], r["exits"], r["closed_at_end"]) == (1, 0, True)
    assert r["funding_usd"] == pytest.approx(4 * 3.75)
    assert r["costs_usd"] == pytest.approx(12.0)
    bt = run_carry_backtest(settings(close_at_end=False), tmp_path)
    assert bt.rows[0]["costs_usd"] == pytest.approx(6.0)
    assert bt.run.trades[0]["exit_reason"] == "open"


def test_max_positions_takes_best_signals_first(tmp_path: Path) -> None:
    # three symbols settle together; signals 32.85 %, 109.5 %, 54.75 %; two slots
    for sym, r in (("AAAUSDT", 0.0003), ("BBBUSDT", 0.001), ("CCCUSDT", 0.0005)):
        write_symbol(tmp_path, sym, SETTLE[:3], [r] * 3, 8, lambda t: 50.0, lambda t: 50.0)
    bt = run_carry_backtest(settings(max_positions=2), tmp_path)
    entries = {r["symbol"]: r["entries"] for r in bt.rows}
    assert entries == {"AAAUSDT": 0, "BBBUSDT": 1, "CCCUSDT": 1}
    # slot capital is bankroll × 50 % / 2 → X = 25,000 × 3/4
    assert bt.rows[1]["funding_usd"] == pytest.approx(2 * 18_750 * 0.001)


@pytest.mark.parametrize(
    ("interval_h", "rate", "enters"),
    [
        (8, 0.0002, True),  # 21.9 % annualised
        (8, 0.00018, False),  # 19.71 %
        (4, 0.0001, True),  # 21.9 %
        (4, 0.00009, False),  # 19.71 %
        (1, 0.000025, True),  # 21.9 %  (×3×365 would say 2.7 %)
        (1, 0.0000225, False),  # 19.71 %
    ],
)
def test_annualisation_uses_each_symbols_interval(
    tmp_path: Path, interval_h: int, rate: float, enters: bool
) -> None:
    settle = [T0 + interval_h * H_NS * k for k in range(1, 6)]
    write_symbol(
        tmp_path, "XYZUSDT", settle, [rate] * 5, interval_h, lambda t: 10.0, lambda t: 10.0
    )
    bt = run_carry_backtest(settings(), tmp_path)
    assert bt.rows[0]["entries"] == (1 if enters else 0)
    assert bt.rows[0]["interval_h"] == interval_h
    if enters:
        # enter at k2, earn k2..k5
        assert bt.rows[0]["funding_usd"] == pytest.approx(4 * 3750 * rate)
