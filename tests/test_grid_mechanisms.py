"""GridStrategyV4 mechanisms: hand-computed values for every rule (issue 7)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from perpdesk.errors import ConfigError, PerpdeskError
from perpdesk.regimes import Regime
from perpdesk.strategies.grid import (
    CircuitBreakerStream,
    FillSide,
    GridInputError,
    GridParams,
    OpenFill,
    PruneChoice,
    StopExit,
    TradeLabel,
    affordable_levels,
    as_reservation_price,
    as_spread,
    breaker_triggers,
    cb_step,
    choose_prune,
    circuit_breaker,
    grid_levels,
    grid_spacing,
    inventory_q,
    lag1,
    needs_regen,
    opening_sides,
    order_qty_base,
    side_position,
    stop_exits,
    stop_prices,
    trail_shift,
    var95_usd,
    var_blocks,
)

H_NS = 3_600 * 1_000_000_000
NOW = 1_700_000_000 * 1_000_000_000
LONG, SHORT = FillSide.LONG, FillSide.SHORT

# --------------------------------------------------------------------------- params


def test_params_defaults_from_issue():
    p = GridParams()
    assert (p.kama_period, p.slope_threshold, p.er_threshold) == (10, 0.15, 0.5)
    assert (p.as_gamma, p.as_kappa, p.as_horizon_bars) == (0.5, 1.5, 96)
    assert (p.trail_er_activation, p.reserve_frac) == (0.65, 0.25)
    assert (p.cb_sma_period, p.cb_halt_z, p.cb_resume_z) == (20, -3.0, -1.0)
    assert (p.stop_atr_mult, p.stop_stage1_frac, p.stop_stage2_mult) == (3.5, 0.5, 1.5)
    assert p.prune_deviance_sigma == 3.0 and p.prune_max_age_ns == 24 * H_NS
    assert (p.prune_gap_spacings, p.prune_funding_frac, p.var_z) == (3.0, 0.5, 1.65)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.kama_period = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kw", "msg"),
    [
        ({"slope_threshold": -0.1}, "GridParams.slope_threshold = -0.1: must be > 0"),
        ({"levels_per_side": 2.5}, "GridParams.levels_per_side = 2.5: must be an integer"),
        ({"levels_per_side": 0}, "GridParams.levels_per_side = 0: must be >= 1"),
        ({"er_threshold": 1.2}, "GridParams.er_threshold = 1.2: must be in [0, 1)"),
        ({"order_frac": 0.0}, "GridParams.order_frac = 0.0: must be in (0, 1]"),
        ({"as_kappa": math.nan}, "GridParams.as_kappa = nan: must be a finite number"),
        ({"cb_halt_z": 0.0}, "GridParams.cb_halt_z = 0.0: must be < cb_resume_z (-1.0)"),
        ({"stop_stage2_mult": 1.0}, "GridParams.stop_stage2_mult = 1.0: must be > 1"),
        ({"kama_fast": 40}, "GridParams.kama_fast = 40: must be < kama_slow (30)"),
        ({"var_z": True}, "GridParams.var_z = True: must be a finite number"),
    ],
)
def test_params_errors_name_the_field(kw, msg):
    with pytest.raises(ConfigError) as e:
        GridParams(**kw)
    assert str(e.value).startswith(msg) and "\n" not in str(e.value)


def test_params_replace_revalidates_and_hash():
    p = GridParams()
    q = dataclasses.replace(p, levels_per_side=7)
    assert q.levels_per_side == 7 and q.content_hash() != p.content_hash()
    assert GridParams().content_hash() == p.content_hash()
    with pytest.raises(ConfigError, match="reserve_frac"):
        dataclasses.replace(p, reserve_frac=1.0)


# --------------------------------------------------------------------------- labels, records


def test_trade_labels():
    assert [x.value for x in TradeLabel] == [
        "BUY_OPEN_LONG",
        "SELL_CLOSE_LONG",
        "SELL_OPEN_SHORT",
        "BUY_CLOSE_SHORT",
        "STOP_LONG",
        "STOP_SHORT",
        "PRUNE_DEVIANCE",
        "PRUNE_OLDEST",
        "PRUNE_GAP",
        "PRUNE_FUNDING",
        "PRUNE_OFFSET",
        "LIQUIDATION",
    ]
    assert TradeLabel.PRUNE_GAP == "PRUNE_GAP"  # a str: goes straight onto Order.label


def test_open_fill_upnl():
    assert OpenFill(LONG, 2.0, 100.0, 0).upnl_usd(97.0) == -6.0  # 2 × (97 − 100)
    assert OpenFill(SHORT, 2.0, 100.0, 0).upnl_usd(97.0) == 6.0  # −2 × (97 − 100)


# --------------------------------------------------------------------------- grid geometry


def test_spacing_atr_or_floor():
    # k × ATR = 1 × 120 = 120 beats the floor 0.002 × 50,000 = 100
    assert grid_spacing(120.0, 50_000.0, 1.0, 0.002) == 120.0
    # k × ATR = 0.5 × 120 = 60 < floor 100
    assert grid_spacing(120.0, 50_000.0, 0.5, 0.002) == 100.0
    with pytest.raises(GridInputError, match="atr = nan"):
        grid_spacing(math.nan, 100.0, 1.0, 0.002)
    with pytest.raises(GridInputError, match=r"price = 0\.0"):
        grid_spacing(1.0, 0.0, 1.0, 0.002)


def test_grid_levels():
    buys, sells = grid_levels(100.0, 2.0, 3)
    assert buys == [98.0, 96.0, 94.0] and sells == [102.0, 104.0, 106.0]
    buys, sells = grid_levels(5.0, 2.0, 3)  # 5 − 6 = −1 is not a price
    assert buys == [3.0, 1.0] and sells == [7.0, 9.0, 11.0]
    with pytest.raises(GridInputError, match="levels = 0"):
        grid_levels(100.0, 2.0, 0)


def test_needs_regen():
    assert not needs_regen(100.0, 102.0, 2.0, False)  # drift = one spacing: keep
    assert needs_regen(100.0, 102.5, 2.0, False)
    assert needs_regen(100.0, 97.9, 2.0, False)
    assert needs_regen(100.0, 100.0, 2.0, True)  # regime change


def test_opening_sides_by_regime():
    assert opening_sides(Regime.NOISE) == (True, True)
    assert opening_sides(Regime.UPTREND) == (True, False)
    assert opening_sides(Regime.BREAKOUT_UP) == (True, False)
    assert opening_sides(Regime.DOWNTREND) == (False, True)
    assert opening_sides(np.int8(-2)) == (False, True)
    assert opening_sides(Regime.NOISE, halted=True) == (False, False)
    assert opening_sides(Regime.UPTREND, var_blocked=True) == (False, False)
    with pytest.raises(GridInputError, match="regime = 3"):
        opening_sides(3)


# --------------------------------------------------------------------------- Avellaneda–Stoikov


def test_inventory_q():
    # 0.05 BTC × 50,000 = 2,500 USD / (5 levels × 0.05 × 10,000 USD = 2,500) = 1
    assert inventory_q(0.05, 50_000.0, 10_000.0, 0.05, 5) == 1.0
    assert inventory_q(-0.025, 50_000.0, 10_000.0, 0.05, 5) == -0.5


def test_as_reservation_price():
    # percent units: q·γ·σ²·T = 0.5 × 0.5 × 0.25² × 96 = 0.5 × 0.5 × 0.0625 × 96 = 1.5 (%)
    # r = 50,000 × (1 − 1.5/100) = 49,250
    assert as_reservation_price(50_000.0, 0.5, 0.25, 0.5, 96) == pytest.approx(49_250.0, 1e-12)
    # short inventory q = −1, σ = 1 %, T = 10: 1 × 0.5 × 1 × 10 = 5 % above: 105
    assert as_reservation_price(100.0, -1.0, 1.0, 0.5, 10) == pytest.approx(105.0, 1e-12)
    assert as_reservation_price(100.0, 0.0, 1.0, 0.5, 10) == 100.0
    with pytest.raises(GridInputError, match=r"gamma = 0\.0"):
        as_reservation_price(100.0, 1.0, 1.0, 0.0, 10)


def test_as_spread():
    # δ = γσ²T + (2/γ)·ln(1 + γ/κ) = 0.5 × 0.0625 × 96 + 4 × ln(4/3)
    #   = 3 + 4 × 0.28768207245178090 = 4.1507282898071236 (% of mid) → × 50,000 / 100
    assert as_spread(50_000.0, 0.25, 0.5, 1.5, 96) == pytest.approx(2075.3641449035618, 1e-12)
    # the paper's simulation: s = 100, σ = 2, T = 1, γ = 0.1, κ = 1.5:
    # 0.1 × 4 + 20 × ln(1 + 1/15) = 0.4 + 20 × 0.06453852113757118 = 1.6907704227514236
    assert as_spread(100.0, 2.0, 0.1, 1.5, 1) == pytest.approx(1.6907704227514236, 1e-12)
    with pytest.raises(GridInputError, match="kappa = -1"):
        as_spread(100.0, 2.0, 0.1, -1, 1)


# --------------------------------------------------------------------------- trailing up


def test_trail_shift():
    # grid: anchor 100, spacing 2, 5 levels → top = 100 + 5 × 2 = 110
    top = 100.0 + 5 * 2.0
    # price 114 in UPTREND with ER 0.7 > 0.65: gap 4, shift 2 → anchor 102, top 112
    assert trail_shift(top, 114.0, Regime.UPTREND, 0.7, 0.65) == 2.0
    # next bar, still 114: gap 2, shift 1 → anchor 103
    assert trail_shift(top + 2.0, 114.0, Regime.UPTREND, 0.7, 0.65) == 1.0
    assert trail_shift(top, 114.0, Regime.BREAKOUT_UP, 0.9, 0.65) == 2.0
    assert trail_shift(top, 114.0, Regime.UPTREND, 0.65, 0.65) == 0.0  # ER not above
    assert trail_shift(top, 114.0, Regime.UPTREND, math.nan, 0.65) == 0.0
    assert trail_shift(top, 114.0, Regime.NOISE, 0.9, 0.65) == 0.0
    assert trail_shift(top, 114.0, Regime.DOWNTREND, 0.9, 0.65) == 0.0
    assert trail_shift(top, 110.0, Regime.UPTREND, 0.9, 0.65) == 0.0  # not above the top


def test_affordable_levels_keeps_reserve():
    # capital 10,000, reserve 25 % → 7,500 deployable; one level = 0.05 × 10,000 = 500
    assert affordable_levels(10_000.0, 0.0, 0.05, 0.25, 5) == 5  # 15 fit, L = 5
    assert affordable_levels(10_000.0, 5_600.0, 0.05, 0.25, 5) == 3  # 1,900 / 500 = 3.8
    assert affordable_levels(10_000.0, 7_500.0, 0.05, 0.25, 5) == 0
    assert affordable_levels(10_000.0, 8_000.0, 0.05, 0.25, 5) == 0
    # 1 × (1 − 0.3) / 0.1 is 6.999999999999999 in floats: still 7 levels
    assert affordable_levels(1.0, 0.0, 0.1, 0.3, 10) == 7


# --------------------------------------------------------------------------- circuit breaker

Z = [math.nan, 0.0, -2.0, -3.0, -3.01, -2.0, -1.0, -0.99, -3.5, math.nan, -0.5, -3.2]
# halt needs Z < −3 (−3.0 is not), resume needs Z > −1 (−1.0 is not), NaN holds the state
HALTED = [False, False, False, False, True, True, True, False, True, True, False, True]


def test_circuit_breaker_halt_resume_sequence():
    assert circuit_breaker(np.array(Z)).tolist() == HALTED
    assert breaker_triggers(np.array(HALTED)) == 3
    state, seq = False, []
    for z in Z:
        state = cb_step(state, z)
        seq.append(state)
    assert seq == HALTED
    # a decision in bar i uses the state after bar i−1
    assert lag1(np.array(HALTED), False).tolist() == [False, *HALTED[:-1]]


@pytest.mark.parametrize("cuts", [[], [1], [4, 5], list(range(1, 12)), [3, 9]])
def test_circuit_breaker_stream_equals_batch(cuts):
    s = CircuitBreakerStream()
    got = np.concatenate([s.update(part) for part in np.split(np.array(Z), cuts)])
    assert got.tolist() == HALTED
    assert s.halted is True and s.n_triggers == 3


def test_circuit_breaker_bad_thresholds():
    with pytest.raises(GridInputError, match="halt_z = -1, resume_z = -3"):
        circuit_breaker(np.zeros(3), -1, -3)
    with pytest.raises(GridInputError, match="1-d"):
        CircuitBreakerStream().update(np.zeros((2, 2)))


# --------------------------------------------------------------------------- two-stage stop


def test_side_position_and_order_size():
    fills = [
        OpenFill(LONG, 1.0, 101.0, 0),
        OpenFill(SHORT, 5.0, 99.0, 0),
        OpenFill(LONG, 2.0, 104.0, 0),
    ]
    # longs: 3 units, (1 × 101 + 2 × 104) / 3 = 309 / 3 = 103
    assert side_position(fills, LONG) == (3.0, 103.0, 2)
    assert side_position(fills, SHORT) == (5.0, 99.0, 1)
    qty, entry, n = side_position(fills[:1], SHORT)
    assert (qty, n) == (0.0, 0) and math.isnan(entry)
    # 10,000 USD × 5 % = 500 USD at 50,000 USD/BTC = 0.01 BTC
    assert order_qty_base(10_000.0, 0.05, 50_000.0) == pytest.approx(0.01, 1e-12)


def test_stop_prices():
    # d = 3.5 × ATR 2 = 7; stage two at 1.5 × 7 = 10.5
    assert stop_prices(LONG, 100.0, 2.0) == (93.0, 89.5)
    assert stop_prices(SHORT, 100.0, 2.0) == (107.0, 110.5)


def test_two_stage_long():
    # 3 fills, 4 units, entry 100, ATR 2: the bar dips to 92.9 ≤ 93 → half (2) at 93
    assert stop_exits(LONG, 4.0, 100.0, 2.0, 3, False, 95.0, 96.0, 92.9) == [
        StopExit(2.0, 93.0, 1, TradeLabel.STOP_LONG)
    ]
    # later bar with stage one done: low 89.5 reaches 89.5 → the other 2 at 89.5
    assert stop_exits(LONG, 2.0, 100.0, 2.0, 2, True, 92.0, 92.5, 89.5) == [
        StopExit(2.0, 89.5, 2, TradeLabel.STOP_LONG)
    ]
    # stage one done, low 90 above 89.5: nothing
    assert stop_exits(LONG, 2.0, 100.0, 2.0, 2, True, 92.0, 92.5, 90.0) == []
    # untouched
    assert stop_exits(LONG, 4.0, 100.0, 2.0, 3, False, 95.0, 96.0, 93.01) == []


def test_two_stage_same_bar_and_gap():
    # the bar goes through both stages: 2 at 93, 2 at 89.5
    assert stop_exits(LONG, 4.0, 100.0, 2.0, 3, False, 95.0, 96.0, 89.0) == [
        StopExit(2.0, 93.0, 1, TradeLabel.STOP_LONG),
        StopExit(2.0, 89.5, 2, TradeLabel.STOP_LONG),
    ]
    # opens at 88, below both stops: both fill at the open (conservative)
    assert stop_exits(LONG, 4.0, 100.0, 2.0, 3, False, 88.0, 88.5, 87.0) == [
        StopExit(2.0, 88.0, 1, TradeLabel.STOP_LONG),
        StopExit(2.0, 88.0, 2, TradeLabel.STOP_LONG),
    ]


def test_single_fill_closes_whole_at_stage_one():
    # one fill: all 4 units at 93, even though the bar also reaches stage two
    assert stop_exits(LONG, 4.0, 100.0, 2.0, 1, False, 95.0, 96.0, 89.0) == [
        StopExit(4.0, 93.0, 1, TradeLabel.STOP_LONG)
    ]


def test_two_stage_short():
    # short entry 100, ATR 2: stage one 107, stage two 110.5; high 108 → 1.5 of 3 at 107
    assert stop_exits(SHORT, 3.0, 100.0, 2.0, 2, False, 104.0, 108.0, 103.0) == [
        StopExit(1.5, 107.0, 1, TradeLabel.STOP_SHORT)
    ]
    # gap up to 112: stage two fills at the open
    assert stop_exits(SHORT, 1.5, 100.0, 2.0, 2, True, 112.0, 113.0, 111.0) == [
        StopExit(1.5, 112.0, 2, TradeLabel.STOP_SHORT)
    ]
    assert stop_exits(SHORT, 0.0, 100.0, 2.0, 0, False, 200.0, 200.0, 200.0) == []


# --------------------------------------------------------------------------- VaR gate


def test_var_block_and_pass():
    # VaR95 = 10,000 × 1.65 × 0.004 = 66 USD
    assert var95_usd(10_000.0, 0.004) == pytest.approx(66.0, 1e-12)
    assert var95_usd(-10_000.0, 0.004) == pytest.approx(66.0, 1e-12)  # a short risks as much
    assert var_blocks(10_000.0, 0.004, 1_000.0, 0.05)  # 66 > 0.05 × 1,000 = 50: block
    assert not var_blocks(10_000.0, 0.004, 1_000.0, 0.10)  # 66 ≤ 100: pass
    assert var_blocks(10.0, 0.004, 0.0, 0.10)  # no equity: block
    assert var_blocks(10.0, math.nan, 1_000.0, 0.10)  # no σ yet: block
    assert not var_blocks(0.0, 0.004, 1_000.0, 0.10)


# --------------------------------------------------------------------------- pruning

P = GridParams()


def base_fills():
    # at price 100:
    return [
        OpenFill(LONG, 1.0, 101.0, NOW - 1 * H_NS, 0.10),  # 0: upnl −1, distance 1
        OpenFill(LONG, 2.0, 102.0, NOW - 2 * H_NS, 0.30),  # 1: upnl −4, distance 2
        OpenFill(SHORT, 1.0, 99.0, NOW - 3 * H_NS, -0.05),  # 2: upnl −1, distance 1
        OpenFill(SHORT, 1.0, 101.5, NOW - H_NS // 2, 0.20),  # 3: upnl +1.5, distance 1.5
    ]


def prune(fills, **kw):
    m = {
        "price": 100.0,
        "kama": 100.5,  # |100 − 100.5| = 0.5 < 3 × σ 1
        "sigma_price": 1.0,
        "now_ns": NOW,
        "spacing": 1.0,  # gap limit 3 × 1 = 3 > every distance
        "grid_profit_usd": 2.0,  # funding Σ = 0.55 < 0.5 × 2 = 1
        "profit_buffer_usd": 3.0,  # worst loss 4 > 3
        "params": P,
    }
    m.update(kw)
    return choose_prune(fills, **m)


def test_prune_nothing_in_base_state():
    assert prune(base_fills()) is None
    assert prune([]) is None


def test_prune_deviance_picks_worst_fill():
    # |100 − 104| = 4 > 3 × 1: the worst fill is #1 (upnl −4)
    assert prune(base_fills(), kama=104.0) == PruneChoice(1, TradeLabel.PRUNE_DEVIANCE)
    assert prune(base_fills(), kama=96.0) == PruneChoice(1, TradeLabel.PRUNE_DEVIANCE)
    assert prune(base_fills(), kama=103.0) is None  # |dev| = 3, not beyond 3σ
    assert prune(base_fills(), kama=math.nan) is None  # warm-up: no deviance test
    # deviance but nothing under water → falls through to the other methods (none fire)
    assert prune([base_fills()[3]], kama=110.0) is None


def test_prune_oldest():
    old = OpenFill(LONG, 0.5, 100.2, NOW - 25 * H_NS, 0.0)
    older = OpenFill(SHORT, 0.5, 99.9, NOW - 30 * H_NS, 0.0)
    assert prune([*base_fills(), old]) == PruneChoice(4, TradeLabel.PRUNE_OLDEST)
    assert prune([*base_fills(), old, older]) == PruneChoice(5, TradeLabel.PRUNE_OLDEST)
    exactly_24h = OpenFill(LONG, 0.5, 100.2, NOW - 24 * H_NS, 0.0)
    assert prune([*base_fills(), exactly_24h]) is None


def test_prune_gap_most_distant():
    # price 98.9: distances 2.1, 3.1, 0.1, 2.6 → #1 beyond 3 spacings (kama 100.5: dev 1.6 < 3)
    assert prune(base_fills(), price=98.9) == PruneChoice(1, TradeLabel.PRUNE_GAP)
    # spacing 0.5 → limit 1.5: #0 (2.1), #1 (3.1), #3 (2.6) qualify; #1 is the most distant
    assert prune(base_fills(), price=98.9, spacing=0.5) == PruneChoice(1, TradeLabel.PRUNE_GAP)
    # at price 100 the farthest is 2 (fill #1): 2 > 3 × 0.6 = 1.8 → gap
    assert prune(base_fills(), spacing=0.6) == PruneChoice(1, TradeLabel.PRUNE_GAP)


def test_prune_funding_costliest():
    # Σ funding = 0.10 + 0.30 − 0.05 + 0.20 = 0.55 > 0.5 × grid profit 1.0 = 0.5 → #1 (0.30)
    assert prune(base_fills(), grid_profit_usd=1.0) == PruneChoice(1, TradeLabel.PRUNE_FUNDING)
    # no grid profit yet: any positive funding paid qualifies
    assert prune(base_fills(), grid_profit_usd=-5.0) == PruneChoice(1, TradeLabel.PRUNE_FUNDING)
    received = [dataclasses.replace(f, funding_usd=-0.1) for f in base_fills()]
    assert prune(received, grid_profit_usd=0.0) is None  # funding received: nothing to prune


def test_prune_profit_offset():
    # worst under-water fill #1 loses 2 × (102 − 100) = 4; buffer 4 pays for it
    assert prune(base_fills(), profit_buffer_usd=4.0) == PruneChoice(1, TradeLabel.PRUNE_OFFSET)
    assert prune(base_fills(), profit_buffer_usd=3.99) is None
    assert prune([base_fills()[3]], profit_buffer_usd=100.0) is None  # nothing under water


def test_prune_priority_order():
    fills = [
        *base_fills(),
        OpenFill(LONG, 0.5, 100.2, NOW - 25 * H_NS, 0.0),  # #4: old
    ]
    every = {
        "kama": 104.0,  # deviance → #1
        "price": 98.9,  # gap → #1 (3.1); still deviance: |98.9 − 104| = 5.1
        "grid_profit_usd": 0.0,  # funding → #1
        "profit_buffer_usd": 100.0,  # offset → worst
    }
    assert prune(fills, **every).label is TradeLabel.PRUNE_DEVIANCE
    assert prune(fills, **{**every, "kama": 99.0}) == PruneChoice(4, TradeLabel.PRUNE_OLDEST)
    no_old = fills[:4]
    assert prune(no_old, **{**every, "kama": 99.0}) == PruneChoice(1, TradeLabel.PRUNE_GAP)
    assert prune(no_old, **{**every, "kama": 99.0, "price": 100.0}) == PruneChoice(
        1, TradeLabel.PRUNE_FUNDING
    )
    assert prune(
        no_old, **{**every, "kama": 99.0, "price": 100.0, "grid_profit_usd": 10.0}
    ) == PruneChoice(1, TradeLabel.PRUNE_OFFSET)


def test_prune_ties_go_to_first():
    twins = [OpenFill(LONG, 1.0, 105.0, NOW, 0.0), OpenFill(LONG, 1.0, 105.0, NOW, 0.0)]
    assert prune(twins, kama=104.0) == PruneChoice(0, TradeLabel.PRUNE_DEVIANCE)
    assert prune(twins, price=100.0, kama=100.0, spacing=1.0).label is TradeLabel.PRUNE_GAP
    assert prune(twins, price=100.0, kama=100.0, spacing=1.0).index == 0


# --------------------------------------------------------------------------- misc


def test_lag1_and_errors():
    assert lag1(np.array([1.0, 2.0, 3.0]), math.nan)[1:].tolist() == [1.0, 2.0]
    assert math.isnan(lag1(np.array([1.0]), math.nan)[0])
    assert issubclass(GridInputError, PerpdeskError) and issubclass(GridInputError, ValueError)
