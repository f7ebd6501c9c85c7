"""GridStrategyV4 on the event engine (issue 7): lookahead, timing, scenarios, funding, CLI.

Every market here is built in the test (15-minute bars written into a tmp catalog through
the catalog's own writer). Scenario tests assert comparisons (profit > 0, one drawdown below
another), never P&L figures; the funding test asserts amounts computed by hand.
"""

from __future__ import annotations

import math
import pickle
from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from perpdesk.data.catalog import Catalog
from perpdesk.domain import Instrument, InstrumentKind
from perpdesk.research.grid_backtest import (
    SYNTHETIC_FUNDING_RATE_8H,
    GridEvaluator,
    load_grid_features,
    run_grid_backtest,
)
from perpdesk.sim.engine import AccountConfig
from perpdesk.sim.replay import StreamSpec
from perpdesk.sim.testing import assert_no_lookahead
from perpdesk.strategies.grid import GridParams, TradeLabel
from perpdesk.strategies.grid.strategy import GridStrategyV4

V, SYM = "sim", "GRIDUSDT"
M15 = 900 * 1_000_000_000
H8 = 8 * 3_600 * 1_000_000_000
T0 = int(np.datetime64("2024-01-01T00:00", "ns").astype(np.int64))
INST = Instrument(V, SYM, InstrumentKind.PERP, "GRID", "USDT", 0.01, 0.001, 8)
LABELS = {str(x) for x in TradeLabel}


def write_bars(root: Path, o, h, lo, c) -> Path:
    """15-minute bars of GRIDUSDT from T0 (+ the instrument table)."""
    c = np.asarray(c, float)
    n = c.size
    ts = T0 + M15 * np.arange(n, dtype=np.int64)
    cat = Catalog(root)
    cat.write_instruments(V, [INST])
    v = np.full(n, 1e6)
    cat.write(
        V,
        "perp_bars_15m",
        SYM,
        pa.table(
            {
                "ts_ns": ts,
                "open": np.asarray(o, float),
                "high": np.asarray(h, float),
                "low": np.asarray(lo, float),
                "close": c,
                "volume_base": v / c,
                "volume_quote": v,
                "taker_buy_volume_quote": v / 2,
            }
        ),
    )
    return root


def write_path(root: Path, close: np.ndarray, spread_frac: float = 0.0005) -> Path:
    """Bars from a close path: open = previous close, high/low = max/min(open, close) ± a
    spread of ``spread_frac`` × close."""
    c = np.asarray(close, float)
    o = np.concatenate(([c[0]], c[:-1]))
    sp = spread_frac * c
    return write_bars(root, o, np.maximum(o, c) + sp, np.minimum(o, c) - sp, c)


def write_funding(root: Path, ts, rates, mark=None) -> None:
    n = len(ts)
    Catalog(root).write(
        V,
        "funding",
        SYM,
        pa.table(
            {
                "ts_ns": pa.array(ts, pa.int64()),
                "funding_rate": pa.array(rates, pa.float64()),
                "funding_interval_h": pa.array([8] * n, pa.int32()),
                "mark_price": pa.array(mark if mark is not None else [None] * n, pa.float64()),
            }
        ),
    )


def ou_path(n: int, phi: float, sigma: float, seed: int) -> np.ndarray:
    """100 × exp(x), x an AR(1) (Ornstein–Uhlenbeck in discrete time): a range-bound market."""
    rng = np.random.default_rng(seed)
    x = np.zeros(n)
    eps = rng.normal(0.0, sigma, n)
    for i in range(1, n):
        x[i] = phi * x[i - 1] + eps[i]
    return 100.0 * np.exp(x)


def run(root: Path, **kw):
    return run_grid_backtest(root, SYM, venue=V, **kw)


# --------------------------------------------------------------------------- point in time


def test_no_lookahead_with_the_engines_generic_helper(tmp_path: Path) -> None:
    """Decisions before the K-th event are identical with and without the later rows (the
    features are recomputed from whatever catalog the strategy is given)."""
    root = write_path(tmp_path / "cat", ou_path(480, 0.7, 0.003, seed=11))
    write_funding(tmp_path / "cat", [T0 + H8 * k for k in range(1, 15)], [1e-4, -2e-4] * 7)
    p = GridParams(vol_window=16)
    streams = [StreamSpec(V, "perp_bars_15m", SYM), StreamSpec(V, "funding", SYM)]

    def factory(r: Path) -> GridStrategyV4:
        feats = load_grid_features(r, V, SYM, "perp_bars_15m", p)
        return GridStrategyV4(SYM, p, feats, 100_000.0, INST.tick_size, INST.lot_size)

    account = AccountConfig(100_000.0, hedge_mode=True, leverage={SYM: 3})
    assert_no_lookahead(
        factory, root, streams, [INST], account, k_events=[200, 400], workdir=tmp_path / "w"
    )
    # the run is not trivial: it traded both grids
    bt = run(root, params=p)
    labels = bt.label_counts
    assert labels.get("BUY_OPEN_LONG", 0) > 5 and labels.get("SELL_OPEN_SHORT", 0) > 5


def test_streaming_features_give_the_same_decisions(tmp_path: Path) -> None:
    """Without precomputed features (a live run) the strategy computes them bar by bar with
    the streaming twins: every order and fill is the same as with the batch features."""
    from perpdesk.sim.engine import run_backtest

    root = write_path(tmp_path, ou_path(400, 0.7, 0.003, seed=9))
    write_funding(root, [T0 + H8 * k for k in range(1, 12)], [1e-4] * 11)
    p = GridParams(vol_window=16)
    streams = [StreamSpec(V, "perp_bars_15m", SYM), StreamSpec(V, "funding", SYM)]
    account = AccountConfig(100_000.0, hedge_mode=True, leverage={SYM: 3})

    def go(feats):
        strat = GridStrategyV4(SYM, p, feats, 100_000.0, INST.tick_size, INST.lot_size)
        return run_backtest(strat, root, [INST], account, streams=streams)

    batch = go(load_grid_features(root, V, SYM, "perp_bars_15m", p))
    live = go(None)
    assert batch.orders.num_rows > 50 and batch.fills.num_rows > 10
    assert live.orders.equals(batch.orders) and live.fills.equals(batch.fills)


def test_orders_decided_at_a_close_fill_only_on_later_bars(tmp_path: Path) -> None:
    """Every limit/stop fill happens on a bar that opened at or after the order was decided,
    and at a price inside that bar's range (the conservative bar rule), labelled."""
    close = ou_path(400, 0.7, 0.003, seed=5)
    root = write_path(tmp_path, close)
    bt = run(root, params=GridParams(vol_window=16))
    orders = {r["client_order_id"]: r for r in bt.engine.orders.to_pylist()}
    bars = Catalog(root).read(V, "perp_bars_15m", SYM).to_pydict()
    by_close = {t + M15: i for i, t in enumerate(bars["ts_ns"])}
    checked = 0
    for f in bt.fills.to_pylist():
        assert f["label"] in LABELS
        o = orders[f["client_order_id"]]
        assert o["label"] == f["label"]
        if o["type"] == "market":  # prunes / immediate stops: at the close they were decided
            assert f["ts_ns"] == o["ts_ns"]
            continue
        if f["ts_ns"] == o["ts_ns"]:  # marketable on arrival: taker at that close
            assert f["liquidity"] == "taker"
            continue
        i = by_close[f["ts_ns"]]  # the bar whose close stamps the fill
        assert bars["ts_ns"][i] >= o["ts_ns"]  # it opened when (or after) the order was sent
        px = float(f["price"])
        assert bars["low"][i] - 1e-9 <= px <= bars["high"][i] + 1e-9
        if o["type"] == "limit":
            # and it is the first bar after the decision that reached the price: the order
            # sent at the close of bar i−1 was tested against bar i, i+1, … in turn
            first = by_close[o["ts_ns"]] + 1 if o["ts_ns"] in by_close else 0
            buy = o["side"] == "buy"
            for j in range(first, i):
                assert (bars["low"][j] > o["price"]) if buy else (bars["high"][j] < o["price"])
        checked += 1
    assert checked > 20


# --------------------------------------------------------------------------- scenarios


def test_sideways_market_the_grid_profits(tmp_path: Path) -> None:
    """A range-bound market (fast mean reversion, per-bar σ 0.25 %): the grid's round trips
    outearn its fees, prunes and stops."""
    root = write_path(tmp_path, ou_path(15 * 96, 0.5, 0.0025, seed=3))
    bt = run(root)
    assert bt.metrics["total_return_pct"] > 0.0
    assert bt.label_counts["SELL_CLOSE_LONG"] > 20 and bt.label_counts["BUY_CLOSE_SHORT"] > 20


def crash_path(noisy: bool) -> np.ndarray:
    rng = np.random.default_rng(0)
    pre = rng.normal(0.0, 0.0025, 3 * 96)
    # noisy: drift −0.4 %/bar under 1 %/bar noise (ER < 0.5, the regime stays NOISE);
    # else every close lower than the last
    crash = rng.normal(-0.004, 0.01, 96) if noisy else np.full(96, -0.004)
    post = rng.normal(0.0, 0.0025, 96)
    return 100.0 * np.exp(np.cumsum(np.concatenate([pre, crash, post])))


def test_monotonic_crash_the_breaker_halts(tmp_path: Path) -> None:
    """Strictly falling closes (−0.4 % a bar for a day): Z = (close − SMA20)/ATR goes below −3
    and the breaker halts; no long is opened while it is halted. (With every close lower, ER
    is 1 and the regime FSM says BREAKOUT_DOWN — no new longs — within a few bars anyway, so
    here the breaker only acts first; the drawdown comparison is the next test's, on a crash
    the FSM reads as NOISE.)"""
    root = write_path(tmp_path, crash_path(noisy=False))
    on, off = run(root), run(root, switches={"breaker": False})
    assert on.counts["circuit-breaker triggers"] >= 1
    assert on.strategy.counters.halted_bars >= 10
    crash = (T0 + 3 * 96 * M15, T0 + 4 * 96 * M15)

    def longs_in_crash(bt) -> int:
        return sum(
            1
            for f in bt.fills.to_pylist()
            if f["label"] == "BUY_OPEN_LONG" and crash[0] < f["ts_ns"] <= crash[1]
        )

    assert longs_in_crash(on) <= longs_in_crash(off)
    assert off.counts["circuit-breaker triggers"] == 0


def test_noisy_crash_the_breaker_halts_and_keeps_drawdown_below(tmp_path: Path) -> None:
    """A crash the regime FSM reads as NOISE (both grids on): without the breaker the long grid
    keeps buying all the way down; with it, opening orders stop while Z < −3."""
    root = write_path(tmp_path, crash_path(noisy=True))
    on, off = run(root), run(root, switches={"breaker": False})
    assert on.counts["circuit-breaker triggers"] >= 1
    assert on.label_counts["BUY_OPEN_LONG"] < off.label_counts["BUY_OPEN_LONG"]
    assert on.metrics["max_dd_pct"] < off.metrics["max_dd_pct"]


def uptrend_path() -> np.ndarray:
    """+0.2 %/bar drift under 0.15 %/bar noise for five days: ER ≈ 0.9, BREAKOUT_UP most bars."""
    rng = np.random.default_rng(0)
    return 100.0 * np.exp(np.cumsum(rng.normal(0.002, 0.0015, 5 * 96)))


def test_uptrend_trailing_lifts_the_grid(tmp_path: Path) -> None:
    """Trailing moves the anchor up in the uptrend; the static grid (no trailing) stays
    where it was built, far below the price."""
    root = write_path(tmp_path, uptrend_path())
    on, off = run(root), run(root, switches={"trailing": False})
    last = float(on.strategy.last_close)
    assert on.counts["trailing shifts"] > 50 and off.counts["trailing shifts"] == 0
    assert on.strategy.anchor > 1.5 * off.strategy.anchor
    assert abs(last - on.strategy.anchor) < abs(last - off.strategy.anchor)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_uptrend_trailing_captures_a_larger_share_than_a_static_grid(
    tmp_path: Path, seed: int
) -> None:
    """In a strong uptrend the static grid is left below the price and earns nothing (or
    loses on the odd short); the trailing grid buys a level at each shift and sells it a
    spacing higher, so it keeps a positive share of the buy-and-hold move."""
    rng = np.random.default_rng(seed)
    root = write_path(tmp_path, 100.0 * np.exp(np.cumsum(rng.normal(0.002, 0.0015, 5 * 96))))
    on, off = run(root), run(root, switches={"trailing": False})
    move = on.metrics["bh_return_pct"]
    assert move > 100.0  # the path is the strong uptrend the claim is about
    assert on.counts["trailing entries"] > 0 and off.counts["trailing entries"] == 0
    assert on.metrics["total_return_pct"] / move > off.metrics["total_return_pct"] / move
    assert on.metrics["total_return_pct"] > 0.0


def test_trailing_entries_buy_one_level_at_the_close_and_keep_the_reserve(
    tmp_path: Path,
) -> None:
    """Each trailing entry is a market BUY_OPEN_LONG decided at a bar's close, sized
    floor(capital × order_frac / close / lot) lots, filled at that instant; the long
    inventory's entry notional never exceeds capital × (1 − reserve) = 75,000 USD."""
    root = write_path(tmp_path, uptrend_path())
    bt = run(root)
    p, lot = bt.params, bt.strategy.lot
    closes = dict(
        zip(
            [t + M15 for t in Catalog(root).read(V, "perp_bars_15m", SYM)["ts_ns"].to_pylist()],
            Catalog(root).read(V, "perp_bars_15m", SYM)["close"].to_pylist(),
            strict=True,
        )
    )
    orders = {r["client_order_id"]: r for r in bt.engine.orders.to_pylist()}
    entries = 0
    held: list[list[float]] = []  # [qty, entry price] of open long lots, FIFO
    for f in bt.fills.to_pylist():
        o = orders[f["client_order_id"]]
        qty, px = float(f["qty_base"]), float(f["price"])
        if f["label"] == "BUY_OPEN_LONG":
            if o["type"] == "market":
                entries += 1
                close = closes[o["ts_ns"]]
                assert f["ts_ns"] == o["ts_ns"]
                want = math.floor(100_000.0 * p.order_frac / close / lot + 1e-9) * lot
                assert qty == pytest.approx(want, abs=lot / 10)
            held.append([qty, px])
        elif f["position_side"] == "long":  # any close of the long side, oldest first
            left = qty
            while left > lot / 2 and held:
                take = min(held[0][0], left)
                held[0][0] -= take
                left -= take
                if held[0][0] <= lot / 2:
                    held.pop(0)
        assert sum(q * x for q, x in held) <= 100_000.0 * (1 - p.reserve_frac) * (1 + 1e-6)
    assert entries == bt.counts["trailing entries"] > 50


# --------------------------------------------------------------------------- funding


def step_bars(n: int, at: int, bar: tuple[float, float, float, float], after: float):
    """Flat bars at 100 (± 0.05), one shaped ``bar`` (o, h, l, c) at index ``at``, then flat
    at ``after`` (± 0.05)."""
    o, h, lo, c = [], [], [], []
    for i in range(n):
        if i < at:
            px = 100.0
            o.append(px), h.append(px + 0.05), lo.append(px - 0.05), c.append(px)
        elif i == at:
            o.append(bar[0]), h.append(bar[1]), lo.append(bar[2]), c.append(bar[3])
        else:
            o.append(after), h.append(after + 0.05), lo.append(after - 0.05), c.append(after)
    return o, h, lo, c


# spacing = max(ATR ≈ 0.1–0.2, 1 % × 100) = 1.00: buys at 99, 98 …, sells at 101, 102 …;
# one level = 100,000 × 5 % = 5,000 USD. Pruning is off (flat closes make σ = 0, so the
# deviance rule would fire at once); stops stay on (3.5 ATR ≈ 0.6 away: not reached).
FUND_PARAMS = GridParams(vol_window=4, spacing_floor_frac=0.01)
RATES = [1e-4, -2e-4, 3e-4, 1e-4, -1e-4, 2e-4, 1e-4, 1e-4, -3e-4]
SETTLE = [T0 + H8 * k for k in range(9)]  # 00:00, 08:00, 16:00 for three days


@pytest.mark.parametrize(
    ("shape", "after", "side", "qty", "mark"),
    [
        # the bar at 07:30 dips to 98.95: the buy at 99.00 fills (qty 5,000/99 = 50.505 after
        # lot rounding); the price then sits at 99.50, below the take-profit at 100.00
        ((100.0, 100.05, 98.95, 99.5), 99.5, "long", Decimal("50.505"), 99.5),
        # the bar at 07:30 spikes to 101.05: the sell at 101.00 fills (5,000/101 = 49.504);
        # the price then sits at 100.50, above the take-profit at 100.00
        ((100.0, 101.05, 99.95, 100.5), 100.5, "short", Decimal("49.504"), 100.5),
    ],
)
def test_funding_is_settled_every_8h_on_the_right_side(
    tmp_path: Path, shape, after, side, qty, mark
) -> None:
    root = write_bars(tmp_path, *step_bars(3 * 96, 30, shape, after))
    write_funding(root, SETTLE, RATES, mark=[mark] * len(SETTLE))
    bt = run(root, params=FUND_PARAMS, switches={"pruning": False})
    (fill,) = bt.fills.to_pylist()  # the one opening fill, held to the end
    assert fill["ts_ns"] == T0 + 31 * M15  # bar 30 (07:30–07:45) is seen at 07:45
    assert (fill["position_side"], fill["qty_base"]) == (side, qty)
    rows = bt.engine.funding.to_pylist()
    # the 00:00 settlement came before the fill: nothing to pay; then all eight
    assert [r["ts_ns"] for r in rows] == SETTLE[1:]
    sign = -1 if side == "long" else 1  # longs pay a positive rate, shorts receive it
    for r, rate in zip(rows, RATES[1:], strict=True):
        want = (sign * qty * Decimal(str(mark)) * Decimal(str(rate))).quantize(Decimal("1e-8"))
        assert r["amount_usd"] == want
    # e.g. the long at 08:00: −50.505 × 99.5 × 0.0002·(−1) = +1.0050495 USD received
    if side == "long":
        assert rows[0]["amount_usd"] == Decimal("1.0050495")
    total = sum(r["amount_usd"] for r in rows)
    assert bt.engine.account.funding_usd == total
    # the strategy's own record of the fill's funding (positive = paid) agrees
    (lot,) = bt.strategy.lots
    assert lot.funding_usd == pytest.approx(-float(total), abs=1e-9)


def test_without_funding_data_a_constant_rate_is_synthesised_and_said(tmp_path: Path) -> None:
    root = write_bars(tmp_path, *step_bars(2 * 96, 30, (100.0, 100.05, 98.95, 99.5), 99.5))
    bt = run(root, params=FUND_PARAMS, switches={"pruning": False})
    assert bt.funding_source.startswith("SYNTHETIC funding")
    rows = bt.engine.funding.to_pylist()
    # 2 days of bars: the last closes at 48:00; settlements from 08:00 (after the fill) to 48:00
    assert [r["ts_ns"] for r in rows] == [T0 + H8 * k for k in range(1, 7)]
    assert all(r["funding_rate"] == SYNTHETIC_FUNDING_RATE_8H for r in rows)
    # no mark in the synthetic rows: the engine settles at the last mark, the close 99.50
    want = (-Decimal("50.505") * Decimal("99.5") * Decimal("0.0001")).quantize(Decimal("1e-8"))
    assert {r["amount_usd"] for r in rows} == {want}
    assert not (tmp_path / V / "funding").exists()  # the user's catalog is untouched


def test_liquidation_clears_the_side_and_is_labelled(tmp_path: Path) -> None:
    """One short of 50,000 USD (half the capital, one level, no reserve) opened at 101.00,
    then a rally of 1 %/bar with stops and pruning off: the account liquidates the short at a
    mark (label LIQUIDATION); the strategy counts it and its record of the short side is
    empty, like the account's book."""
    from perpdesk.domain import PositionSide

    o, h, lo, c = step_bars(60, 30, (100.0, 101.05, 99.95, 100.5), 100.5)
    prev = c[-1]
    for x in 100.5 * np.exp(0.01 * np.arange(1, 131)):
        o.append(prev), h.append(x * 1.001), lo.append(prev * 0.999), c.append(x)
        prev = x
    root = write_bars(tmp_path, o, h, lo, c)
    p = GridParams(
        vol_window=4, spacing_floor_frac=0.01, levels_per_side=1, order_frac=0.5, reserve_frac=0.0
    )
    bt = run(root, params=p, switches={"pruning": False, "stops": False})
    fills = bt.fills.to_pylist()
    assert [(f["label"], f["position_side"]) for f in fills] == [
        ("SELL_OPEN_SHORT", "short"),
        ("LIQUIDATION", "short"),
    ]
    assert fills[0]["qty_base"] == fills[1]["qty_base"] == Decimal("495.049")  # 50,000/101
    assert fills[1]["price"] > 2 * fills[0]["price"]  # the rally had to double the price
    assert bt.counts["liquidation fills"] == 1
    assert bt.strategy.lots == []
    assert bt.engine.account.position(SYM, PositionSide.SHORT).qty_base == 0


# --------------------------------------------------------------------------- evaluator, CLI


def test_grid_evaluator_is_picklable_and_keyed(tmp_path: Path) -> None:
    root = write_path(tmp_path, ou_path(600, 0.5, 0.0025, seed=2))
    ev = GridEvaluator(str(root), V, GridParams(vol_window=16))
    ev2 = pickle.loads(pickle.dumps(ev))
    start, end = T0 + 100 * M15, T0 + 600 * M15
    m = ev2({"levels_per_side": 4.0, "spacing_atr_mult": 1.2}, "GRID", start, end)
    for k in ("calmar", "trades", "total_return_pct", "max_dd_pct", "bh_return_pct"):
        assert k in m and isinstance(m[k], float)
    assert m["trades"] > 0
    assert ev.cache_key() == ev2.cache_key()
    assert GridEvaluator(str(root), V, GridParams(vol_window=17)).cache_key() != ev.cache_key()


def test_walk_forward_optimiser_runs_the_grid_end_to_end(tmp_path: Path) -> None:
    from perpdesk.research.walkforward import optimize, parse_space

    root = write_path(tmp_path, ou_path(6 * 96, 0.5, 0.0025, seed=1))
    ev = GridEvaluator(str(root), V, GridParams(vol_window=16))
    space = parse_space(
        {"spacing_atr_mult": {"low": 0.8, "high": 1.5}, "levels_per_side": {"low": 3, "high": 6}}
    )
    res = optimize(ev, space, ["GRID"], T0, T0 + 6 * 96 * M15, n_trials=3, n_windows=2, seed=1)
    assert set(res.best_params) == {"spacing_atr_mult", "levels_per_side"}
    assert len(res.trials) == 3 and len(res.oos) == 2 and len(res.holdout) == 1
    assert all(r["fills"] > 0 for r in res.oos)


def test_cli_backtest_grid_writes_the_report(tmp_path: Path) -> None:
    from perpdesk.app.cli import app

    root = write_path(tmp_path / "cat", ou_path(400, 0.5, 0.0025, seed=4))
    res = CliRunner().invoke(
        app,
        [
            "backtest",
            "grid",
            "--data",
            str(root),
            "--symbol",
            SYM,
            "--capital",
            "50000",
            "--out",
            str(tmp_path / "out"),
        ],
        env={"COLUMNS": "200"},
    )
    assert res.exit_code == 0, res.output
    assert "SYNTHETIC funding" in res.output and "GRIDUSDT" in res.output
    page = (tmp_path / "out" / "report.html").read_text()
    assert "SYNTHETIC funding" in page and "circuit-breaker triggers" in page
    assert "buy and hold" in page
    assert math.isfinite(float((tmp_path / "out" / "summary.json").stat().st_size))


def test_bad_input_is_one_line_naming_the_problem(tmp_path: Path) -> None:
    from perpdesk.app.cli_grid import load_grid_params_file
    from perpdesk.errors import PerpdeskError
    from perpdesk.research.grid_backtest import params_with

    root = write_path(tmp_path / "cat", ou_path(50, 0.5, 0.0025, seed=1))
    with pytest.raises(PerpdeskError, match=r"no venue with perp_bars_15m for 'NOPEUSDT'"):
        run_grid_backtest(root, "NOPEUSDT")
    with pytest.raises(PerpdeskError, match=r"bars 'spot_bars_15m': must name a perp bar"):
        run(root, bars="spot_bars_15m")
    bad = tmp_path / "p.toml"
    bad.write_text("[grid]\nlevels_per_side = 4\nspacing_mult = 2.0\n")
    with pytest.raises(PerpdeskError, match="GridParams has no field 'spacing_mult'"):
        params_with(GridParams(), load_grid_params_file(bad))
    bad.write_text("[grid]\nlevels_per_side = 0\n")
    with pytest.raises(PerpdeskError, match=r"GridParams.levels_per_side = 0: must be >= 1"):
        params_with(GridParams(), load_grid_params_file(bad))
