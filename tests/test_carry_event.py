"""The carry strategy on the event engine: the vectorised result reproduced, realistic costs
checked by hand, no lookahead, the CLI.

The hand catalog (one 8h symbol, the rates of tests/test_carry_backtest.py) has prices chosen
so that every leg quantity X / price lands on the lot grid, so the engine must book exactly
the vectorised numbers. Defaults: bankroll 100,000 USD, carry 50 %, 10 slots, perp
leverage 3 → slot C = 5,000, leg notional X = 3,750; 8 bps per leg.

Rates r1..r10 (per 8h): .0001 .001 .002 .0015 .00002 .001 .003 .0001 -.0005 .002; signal at
k = r_{k-1} annualised: enter at k3 (109.5 %), exit at k6 (2.19 % < 3), enter at k7 (109.5 %),
hold at k9 (10.95 %, inside the band), exit at k10 (−54.75 %).
Prices: perp 100 and spot 100 for bars opened before t4 (so as of t4 still 100), then perp
125 and spot 120.

Matching costs (taker 8 bp both legs, no slippage, no latency):
 trade 1: q = 3750/100 = 37.5 both legs at k3; funding k3 37.5×100×.002 = 7.5,
  k4 37.5×100×.0015 = 5.625, k5 37.5×125×.00002 = 0.09375; exit k6 at 125/120.
 trade 2: at k7 q_perp = 3750/125 = 30, q_spot = 3750/120 = 31.25; funding k7 30×125×.003
  = 11.25, k8 30×125×.0001 = 0.375, k9 30×125×(−.0005) = −1.875; exit k10.
 funding 22.96875; costs 6 + 8bp×(37.5×120 + 37.5×125) = 7.35, + 6 + 6 = 25.35;
 price 37.5×(120−100) − 37.5×(125−100) = −187.5; equity 100,000 + 22.96875 − 25.35 − 187.5
 = 99,810.11875.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from perpdesk.config import load_settings
from perpdesk.data.catalog import Catalog
from perpdesk.data.synthetic import SyntheticSpec, build_cached
from perpdesk.errors import CatalogError
from perpdesk.research.carry_backtest import run_carry_backtest
from perpdesk.research.carry_engine import (
    compare_with_vector,
    engine_instruments,
    engine_streams,
    funding_by_symbol,
    matching_costs,
    realistic_costs,
    run_engine_carry,
    trades_match,
)
from perpdesk.sim.engine import AccountConfig
from perpdesk.sim.replay import Replay
from perpdesk.sim.testing import assert_no_lookahead
from perpdesk.strategies.carry import CarryRules
from perpdesk.strategies.carry_event import CarryEventStrategy
from tests.helpers import H_NS, T0, bar_table, write_symbol

RATES = [0.0001, 0.001, 0.002, 0.0015, 0.00002, 0.001, 0.003, 0.0001, -0.0005, 0.002]
SETTLE = [T0 + 8 * H_NS * k for k in range(1, 11)]
T4 = SETTLE[3]


def _perp(t: int) -> float:
    return 100.0 if t < T4 else 125.0


def _spot(t: int) -> float:
    return 100.0 if t < T4 else 120.0


def settings(**carry):
    return load_settings(
        None, carry=carry, paths={"data_dir": "/nonexistent", "runs_dir": "/nonexistent"}
    )


@pytest.fixture()
def hand(tmp_path: Path) -> Path:
    root = tmp_path / "hand"
    write_symbol(root, "AAAUSDT", SETTLE, RATES, 8, _perp, _spot)
    return root


@pytest.mark.parametrize("lots", ["fractional", "exchange"])
def test_matching_costs_reproduce_the_vectorised_run_exactly(hand: Path, lots: str) -> None:
    st = settings()
    vec = run_carry_backtest(st, hand)
    eng = run_engine_carry(st, hand, lots=lots)
    # the same round trips, decided at the same settlements
    a, b = trades_match(vec, eng)
    expected = [
        ("AAAUSDT", SETTLE[2], SETTLE[5], "signal"),
        ("AAAUSDT", SETTLE[6], SETTLE[9], "signal"),
    ]
    assert a == expected and b == expected
    # fills at the decision instants at the as-of closes, booked exactly (hand numbers)
    f = eng.result.fills.to_pydict()
    legs = list(zip(f["ts_ns"], f["symbol"], f["side"], f["qty_base"], f["price"], strict=True))
    D = Decimal
    assert legs == [
        (SETTLE[2], "AAAUSDT", "sell", D("37.5"), D(100)),
        (SETTLE[2], "AAAUSDT.SPOT", "buy", D("37.5"), D(100)),
        (SETTLE[5], "AAAUSDT", "buy", D("37.5"), D(125)),
        (SETTLE[5], "AAAUSDT.SPOT", "sell", D("37.5"), D(120)),
        (SETTLE[6], "AAAUSDT", "sell", D(30), D(125)),
        (SETTLE[6], "AAAUSDT.SPOT", "buy", D("31.25"), D(120)),
        (SETTLE[9], "AAAUSDT", "buy", D(30), D(125)),
        (SETTLE[9], "AAAUSDT.SPOT", "sell", D("31.25"), D(120)),
    ]
    fu = eng.result.funding.to_pydict()
    assert fu["ts_ns"] == [SETTLE[k] for k in (2, 3, 4, 6, 7, 8)]
    assert fu["amount_usd"] == [
        D(x) for x in ("7.5", "5.625", "0.09375", "11.25", "0.375", "-1.875")
    ]
    acct = eng.result.account
    assert acct.funding_usd == D("22.96875")
    assert acct.fees_usd == D("25.35")
    assert eng.final_equity_usd == D("99810.11875")
    # the vectorised run (float) agrees to float round-off
    p = vec.portfolio
    assert p["funding_usd"] == pytest.approx(22.96875, abs=1e-9)
    assert p["costs_usd"] == pytest.approx(25.35, abs=1e-9)
    assert p["final_equity_usd"] == pytest.approx(99_810.11875, abs=1e-9)
    rows = {r["item"]: r for r in compare_with_vector(vec, eng)}
    assert abs(rows["final equity USD"]["diff"]) <= 1e-9
    assert rows["settlements earned"]["vector"] == rows["settlements earned"]["engine"] == 6
    # the per-symbol decomposition adds up: price + funding − fees = PnL
    pair = eng.pair_rows[0]
    assert pair["symbol"] == "AAAUSDT"
    assert pair["price_pnl_usd"] == pytest.approx(-187.5, abs=1e-12)
    assert pair["funding_usd"] == pytest.approx(22.96875, abs=1e-12)
    assert pair["fees_usd"] == pytest.approx(25.35, abs=1e-12)
    assert pair["total_usd"] == pytest.approx(-189.88125, abs=1e-12)
    assert eng.counts["late_decisions"] == 0 and eng.counts["rejections"] == 0


def test_realistic_costs_by_hand(hand: Path) -> None:
    """2 bp slippage, 200 ms latency, Binance VIP0 (perp taker 5 bp, spot 10 bp).

    Orders decided at a bar close arrive 200 ms later and fill at that close ± 2 bp, on the
    0.01 tick against the taker: 100 → sell 99.98 / buy 100.02; 125 → buy 125.025 → 125.03,
    sell 124.975 → 124.97; 120 → sell 119.976 → 119.97, buy 120.024 → 120.03. Quantities
    are sized at the decision prices (37.5; 30 and 31.25).
    Settlements: an entry arrives after the settlement of its instant (k3, k7 not earned),
    an exit after the one of its instant (k6, k10 earned):
     37.5×100×.0015 = 5.625, 37.5×125×.00002 = 0.09375, 37.5×125×.001 = 4.6875,
     30×125×.0001 = 0.375, 30×125×(−.0005) = −1.875, 30×125×.002 = 7.5 → 16.40625.
    Fees: 5bp×37.5×99.98 = 1.874625, 10bp×37.5×100.02 = 3.75075, 5bp×37.5×125.03 =
     2.3443125, 10bp×37.5×119.97 = 4.498875, 5bp×30×124.97 = 1.87455, 10bp×31.25×120.03 =
     3.7509375, 5bp×30×125.03 = 1.87545, 10bp×31.25×119.97 = 3.7490625 → 23.7185625.
    Slippage: 37.5×.02 ×2, 37.5×.03 ×2, 30×.03, 31.25×.03, 30×.03, 31.25×.03 → 7.425.
    Price (slippage inside): 37.5×(99.98−125.03) + 37.5×(119.97−100.02) + 30×(124.97−125.03)
     + 31.25×(119.97−120.03) = −939.375 + 748.125 − 1.8 − 1.875 = −194.925.
    Equity 100,000 − 194.925 + 16.40625 − 23.7185625 = 99,797.7626875.
    """
    st = settings()
    vec = run_carry_backtest(st, hand)
    eng = run_engine_carry(st, hand, costs=realistic_costs(2.0, 200.0, "VIP0"))
    D = Decimal
    acct = eng.result.account
    assert acct.funding_usd == D("16.40625")
    assert acct.fees_usd == D("23.7185625")
    slip = sum(r.slippage_usd for r in eng.result.pnl)
    assert slip == D("7.425")
    assert sum(r.price_pnl_usd for r in eng.result.pnl) == D("-194.925")
    assert eng.final_equity_usd == D("99797.7626875")
    f = eng.result.fills.to_pydict()
    assert f["ts_ns"][:2] == [SETTLE[2] + 200_000_000] * 2
    assert f["price"] == [
        D(x)
        for x in ("99.98", "100.02", "125.03", "119.97", "124.97", "120.03", "125.03", "119.97")
    ]
    rows = {r["item"]: r for r in compare_with_vector(vec, eng)}
    tc = rows["trading costs USD"]
    assert tc["vector"] == pytest.approx(25.35, abs=1e-9)
    assert tc["engine"] == pytest.approx(23.7185625 + 7.425, abs=1e-9)
    assert tc["change_pct"] == pytest.approx((31.1435625 / 25.35 - 1) * 100, abs=1e-9)
    assert rows["funding USD"]["diff"] == pytest.approx(16.40625 - 22.96875, abs=1e-9)
    # the same number of settlements, shifted by one at each end of both trades
    assert rows["settlements earned"]["diff"] == 0
    # without slippage the price PnL is the vectorised one
    assert rows["price/basis PnL ex slippage USD"]["engine"] == pytest.approx(-187.5, abs=1e-9)


def test_synthetic_market_reproduced_up_to_the_lot_floor(tmp_path: Path) -> None:
    """45 round trips on 8 synthetic symbols × 30 days (entry 20 %, exit 18 %, 3 slots, no
    volume filter). Exactly equal: every (symbol, entry, exit, reason), every fill price
    (the as-of close on both sides), the settlements earned per symbol. Not exactly: the
    engine floors each leg to its lot (10^7..10^8 lots per leg, see carry_engine), so
    q_engine ∈ (q − 3 lots, q] with q = X / price; every money difference is then bounded by
    the relative shortfall ρ = 3 × lot × price / X of each leg times that leg's flows, plus
    the booking quanta (1e-8 USD per fee and per settlement)."""
    root = build_cached(SyntheticSpec(seed=7, n_symbols=8, days=30), tmp_path)
    st = settings(
        entry_ann_pct=20.0, exit_ann_pct=18.0, max_positions=3, min_quote_volume_24h_usd=0.0
    )
    vec = run_carry_backtest(st, root)
    eng = run_engine_carry(st, root)
    a, b = trades_match(vec, eng)
    assert len(a) == 45 and a == b
    X = 100_000 * 0.5 / 3 * 3 / 4  # C = bankroll × 50 % / 3 slots; X = C × L/(L+1)
    p = vec.run.panel
    lots = {
        i.symbol: i.lot_size
        for i in engine_instruments(
            Catalog(root), "synth", list(p.symbols), "perp_bars_5m", "spot_bars_5m", X
        )
    }
    f = eng.result.fills.to_pydict()
    by_ts = {}
    for k in range(len(f["ts_ns"])):
        by_ts.setdefault((f["ts_ns"][k], f["symbol"][k]), []).append(k)
    bound_price = bound_funding = bound_fees = 0.0
    n_fills = n_settl = 0
    for t in vec.run.trades:
        s = t["symbol"]
        exit_ts = t["exit_ts_ns"] if t["exit_reason"] != "end" else t["exit_ts_ns"] + 1
        for ts, leg, px_key, q_key in (
            (t["entry_ts_ns"], s, "entry_perp_px", "q_perp"),
            (t["entry_ts_ns"], s + ".SPOT", "entry_spot_px", "q_spot"),
            (exit_ts, s, "exit_perp_px", "q_perp"),
            (exit_ts, s + ".SPOT", "exit_spot_px", "q_spot"),
        ):
            (k,) = by_ts[(ts, leg)]
            # the same as-of close (the engine books it on the tick grid: float noise only)
            assert float(f["price"][k]) == pytest.approx(t[px_key], rel=1e-14)
            q = float(f["qty_base"][k])
            assert t[q_key] - 3 * lots[leg] < q <= t[q_key] * (1 + 1e-12)
            n_fills += 1
        rho_p = 3 * lots[s] * t["entry_perp_px"] / X
        rho_s = 3 * lots[s + ".SPOT"] * t["entry_spot_px"] / X
        rho = max(rho_p, rho_s)
        bound_price += rho_p * t["q_perp"] * abs(t["exit_perp_px"] - t["entry_perp_px"])
        bound_price += rho_s * t["q_spot"] * abs(t["exit_spot_px"] - t["entry_spot_px"])
        bound_funding += rho * abs(t["funding_usd"]) + 5e-9 * t["settlements"]
        bound_fees += rho * t["cost_usd"]
        n_settl += t["settlements"]
    # settlements earned per symbol: exactly
    f_eng = eng.result.funding.to_pydict()
    for i, s in enumerate(p.symbols):
        assert f_eng["symbol"].count(s) == int((vec.run.held[i] & p.settles[i]).sum())
    rows = {r["item"]: r for r in compare_with_vector(vec, eng)}
    assert rows["settlements earned"]["diff"] == 0 and rows["entries"]["diff"] == 0
    fund_vec = vec.run.funding_usd.sum(axis=1)
    fund_eng = funding_by_symbol(eng)
    for i, s in enumerate(p.symbols):
        assert abs(fund_eng.get(s, 0.0) - fund_vec[i]) <= bound_funding + 1e-9
    assert abs(rows["funding USD"]["diff"]) <= bound_funding + 1e-9
    assert abs(rows["  fees USD"]["diff"]) <= bound_fees + 5e-9 * n_fills + 1e-9
    total_bound = bound_price + bound_funding + bound_fees + 5e-9 * (n_fills + n_settl) + 1e-8
    assert abs(rows["final equity USD"]["diff"]) <= total_bound
    # and the bound is small: well under a cent over 45 round trips
    assert total_bound < 1e-2
    # the equity curve: engine samples at each settlement instant + 1 ns (hourly grid) are the
    # vectorised points (all but the last, whose closing costs the engine books after it) —
    # except at instants where a pair was (re)opened: the account then still marks the
    # symbol at the mark of its previous holding until the next bar (the engine updates
    # marks only while a position exists and the fill does not refresh a stored mark)
    eq = eng.result.equity
    eng_ts, eng_eq = eq["ts_ns"].to_numpy(), eq["equity_usd"].to_numpy()
    pos = np.searchsorted(eng_ts, p.grid_ts_ns[:-1] + 1)
    assert (eng_ts[pos] == p.grid_ts_ns[:-1] + 1).all()
    no_entry = ~vec.run.entries[:, :-1].any(axis=0)
    assert no_entry.sum() > 600
    diff = eng_eq[pos] - vec.equity_usd[1:-1]
    assert np.abs(diff[no_entry]).max() <= total_bound


def test_no_lookahead(tmp_path: Path) -> None:
    root = tmp_path / "cat"
    write_symbol(root, "AAAUSDT", SETTLE, RATES, 8, _perp, _spot)
    rates_b = [0.003, 0.0001, 0.002, 0.002, -0.001, 0.004, 0.004, 0.0, 0.003, 0.0001]
    write_symbol(root, "BBBUSDT", SETTLE, rates_b, 8, lambda t: 50.0, lambda t: 49.5)
    syms = ["AAAUSDT", "BBBUSDT"]
    streams = engine_streams("test", syms, "perp_bars_5m", "spot_bars_5m")
    instruments = engine_instruments(
        Catalog(root), "test", syms, "perp_bars_5m", "spot_bars_5m", 3750.0
    )
    n = sum(len(ch) for ch in Replay(root, streams).chunks())
    # K: inside the warm-up, just around decision instants (bars then funding), the end
    ts = np.concatenate([ch.ts_ns for ch in Replay(root, streams).chunks()])
    ks = [n // 7]
    for t in (SETTLE[2], SETTLE[5], SETTLE[9]):
        first = int(np.searchsorted(ts, t, "left"))
        ks += [first, first + 2, int(np.searchsorted(ts, t, "right")) - 1]
    ks.append(n - 1)

    def factory(_root: Path) -> CarryEventStrategy:
        return CarryEventStrategy(syms, CarryRules(), 3750.0, 300, close_at_ns=SETTLE[-1])

    assert_no_lookahead(
        factory,
        root,
        streams,
        instruments,
        AccountConfig(100_000, leverage={s: 3 for s in syms}),
        k_events=ks,
        workdir=tmp_path / "cuts",
        costs=matching_costs(settings()),
    )


def test_a_missing_bar_makes_the_decision_late(tmp_path: Path) -> None:
    """The spot bar closing at k3 is missing: the instant never completes, so the k3
    decision runs at the k3 settlement (after it was booked) at the last spot close (the
    bar closing 5 minutes earlier, still fresh). The entry then misses r3: funding is the
    hand figure 22.96875 less 37.5×100×.002 = 7.5 → 15.46875; everything else is equal."""
    root = tmp_path / "gap"
    write_symbol(root, "AAAUSDT", SETTLE, RATES, 8, _perp, None)
    cat = Catalog(root)
    ts = np.arange(T0 - 24 * H_NS, SETTLE[-1] + H_NS, 300 * 10**9, dtype=np.int64)
    ts = ts[ts != SETTLE[2] - 300 * 10**9]
    cat.write(
        "test", "spot_bars_5m", "AAAUSDT", bar_table(ts, np.array([_spot(t) for t in ts]), 1e5)
    )
    eng = run_engine_carry(settings(), root)
    assert eng.counts["late_decisions"] == 1
    assert eng.result.account.funding_usd == Decimal("15.46875")
    assert eng.result.account.fees_usd == Decimal("25.35")
    assert eng.final_equity_usd == Decimal("99810.11875") - Decimal("7.5")


def test_freshness_and_volume_window_are_the_panels() -> None:
    from perpdesk.data import panel
    from perpdesk.strategies import carry_event

    assert carry_event.MAX_PRICE_AGE_NS == panel.MAX_PRICE_AGE_NS == 3_600 * 10**9
    assert carry_event.DAY_NS == panel.DAY_NS == 86_400 * 10**9


def test_missing_spot_bars_is_a_one_line_error(tmp_path: Path) -> None:
    root = tmp_path / "nospot"
    write_symbol(root, "AAAUSDT", SETTLE, RATES, 8, _perp, None)
    with pytest.raises(CatalogError, match=r"spot_bars_5m/AAAUSDT: missing"):
        run_engine_carry(settings(), root)


def test_cli_event_engine_prints_the_cost_impact(tmp_path: Path, hand: Path) -> None:
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERPDESK_")}
    env.update({"COLUMNS": "200", "PERPDESK_PATHS__RUNS_DIR": str(tmp_path / "runs")})
    args = ["backtest", "carry", "--data", str(hand), "--out", str(out), "--engine", "event"]
    args += ["--slippage-bps", "2", "--latency-ms", "200", "--fees", "VIP0"]
    r = subprocess.run(
        [sys.executable, "-m", "perpdesk.app.cli", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    text = " ".join(r.stdout.split())
    assert "cost impact (fees perp 5/spot 10 bp taker, slippage 2 bp, latency 200 ms)" in text
    assert "trading costs 25.35 → 31.14 USD" in text
    cmp = {x["item"]: x for x in pq.read_table(out / "comparison.parquet").to_pylist()}
    assert cmp["final equity USD"]["engine"] == pytest.approx(99_797.7626875, abs=1e-9)
    for name in ("fills", "orders", "equity", "funding", "pnl", "trades"):
        assert (out / f"{name}.parquet").is_file()
    html = (out / "report.html").read_text()
    assert "cost impact" in html and "AAAUSDT" in html
    bad = subprocess.run(
        [sys.executable, "-m", "perpdesk.app.cli", *args[:4], "--slippage-bps", "2"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode != 0 and "--engine event only" in bad.stderr + bad.stdout
    assert not math.isnan(cmp["trading costs USD"]["change_pct"])
