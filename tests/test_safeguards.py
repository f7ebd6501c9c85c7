"""Pre-trade safeguards: exact boundaries by hand, and hypothesis sequences checked against a
slow reference written here from the rules (Fractions, not the module's Decimals)."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, event, given, settings, target
from hypothesis import strategies as st

from perpdesk.config import Settings, load_settings
from perpdesk.domain import Side
from perpdesk.errors import ConfigError
from perpdesk.risk.safeguards import (
    Limits,
    OrderRequest,
    PortfolioState,
    apply_order,
    check_order,
    flatten_orders,
)

D = Decimal
BANK = D(100_000)
# Caps with bankroll 100,000: position 25 % = 25,000; deployed 50 % = 50,000; min 1 % = 1,000;
# daily loss 5 % = 5,000; carry 50 % = 50,000; cascade 10 % = 10,000; grid 0 % = 0.
LIMITS = Limits(
    enable_live_orders=False,
    live_layers=frozenset({"carry"}),
    max_position_pct=D(25),
    max_deployed_pct=D(50),
    min_position_pct=D(1),
    max_daily_loss_pct=D(5),
    layer_allocation_pct={"carry": D(50), "cascade": D(10), "grid": D(0)},
)


def order(
    notional: str | Decimal,
    side: Side = Side.BUY,
    *,
    layer: str = "carry",
    symbol: str = "BTCUSDT",
    cid: str = "o1",
    reduce_only: bool = False,
    live: bool = False,
) -> OrderRequest:
    return OrderRequest(layer, symbol, side, D(notional), cid, reduce_only, live)


def state(positions: dict | None = None, **kw) -> PortfolioState:
    return PortfolioState(bankroll_usd=BANK, positions_usd=positions or {}, **kw)


def rule(o: OrderRequest, s: PortfolioState, lim: Limits = LIMITS) -> str:
    d = check_order(o, s, lim)
    assert d.ok == (d.rule == "")
    assert "\n" not in d.reason
    return "ok" if d.ok else d.rule


# ---------------------------------------------------------------- hand-written boundaries


def test_single_position_cap_is_inclusive() -> None:
    assert rule(order("25000"), state()) == "ok"  # exactly 25 % of 100,000 passes
    assert rule(order("25000.01"), state()) == "max_position"
    held = state({("carry", "BTCUSDT"): D(20_000)})
    assert rule(order("5000"), held) == "ok"  # 20,000 + 5,000 = 25,000
    assert rule(order("5000.01"), held) == "max_position"
    # a short counts by its size: -20,000 then sell 5,000.01 -> |-25,000.01| > 25,000
    short = state({("carry", "BTCUSDT"): D(-20_000)})
    assert rule(order("5000.01", Side.SELL), short) == "max_position"
    # the cap is per symbol over all layers: cascade 5,000 + carry 20,000 = 25,000
    two = state({("carry", "BTCUSDT"): D(20_000), ("cascade", "BTCUSDT"): D(-4_000)})
    assert rule(order("1000", Side.SELL, layer="cascade"), two) == "ok"  # 20,000 + 5,000
    assert rule(order("1000.01", Side.SELL, layer="cascade"), two) == "max_position"


def test_flip_counts_only_the_new_size() -> None:
    # long 10,000, sell 35,000 -> short 25,000: gross of the symbol is 25,000, allowed
    s = state({("carry", "BTCUSDT"): D(10_000)})
    assert rule(order("35000", Side.SELL), s) == "ok"
    assert rule(order("35000.01", Side.SELL), s) == "max_position"


def test_total_deployed_cap_is_inclusive() -> None:
    s = state({("carry", "AUSDT"): D(25_000), ("carry", "BUSDT"): D(-24_000)})
    # deployed 49,000 + 1,000 = 50,000 = 50 % of 100,000: passes
    assert rule(order("1000", symbol="CUSDT"), s) == "ok"
    assert rule(order("1000.01", symbol="CUSDT"), s) == "max_deployed"


def test_layer_allocation_cap() -> None:
    assert rule(order("10000", layer="cascade"), state()) == "ok"  # 10 % of 100,000
    assert rule(order("10000.01", layer="cascade"), state()) == "layer_allocation"
    s = state({("cascade", "AUSDT"): D(-6_000)})
    assert rule(order("4000", layer="cascade", symbol="BUSDT"), s) == "ok"  # 6,000 + 4,000
    assert rule(order("4000.01", layer="cascade", symbol="BUSDT"), s) == "layer_allocation"
    assert rule(order("1000", layer="grid"), state()) == "layer_allocation"  # 0 % allocation
    assert rule(order("1000", layer="nosuch"), state()) == "unknown_layer"


def test_minimum_position() -> None:
    assert rule(order("1000"), state()) == "ok"  # exactly 1 % passes
    assert rule(order("999.99"), state()) == "min_position"
    s = state({("carry", "BTCUSDT"): D(5_000)})
    assert rule(order("4000"), s) == "ok"  # 5,000 + 4,000 = 9,000
    assert rule(order("4000.01", Side.SELL), s) == "min_position"  # leaves 999.99
    assert rule(order("4000", Side.SELL), s) == "ok"  # leaves exactly 1,000
    assert rule(order("5000", Side.SELL), s) == "ok"  # closes to 0
    assert rule(order("4500", Side.SELL, reduce_only=True), s) == "ok"  # reduce-only exempt
    assert rule(order("10", Side.BUY), s) == "ok"  # growing a position above the minimum


def test_duplicate_client_order_id() -> None:
    s = state(seen_client_order_ids=frozenset({"o1"}))
    assert rule(order("2000", cid="o1"), s) == "duplicate_id"
    assert rule(order("2000", cid="o2"), s) == "ok"
    after = apply_order(state(), order("2000", cid="o9"))
    assert after.seen_client_order_ids == frozenset({"o9"})
    assert rule(order("2000", cid="o9"), after) == "duplicate_id"


def test_daily_loss_halts_at_the_limit() -> None:
    s = {("carry", "BTCUSDT"): D(10_000)}
    # limit 5 % of 100,000 = 5,000: -4,999.99 still trades, -5,000 halts
    assert rule(order("2000"), state(s, daily_pnl_usd=D("-4999.99"))) == "ok"
    halted = state(s, daily_pnl_usd=D(-5_000))
    assert rule(order("2000"), halted) == "reduce_only"
    assert rule(order("2000", Side.SELL), halted) == "reduce_only"  # reducing, but not flagged
    assert rule(order("2000", Side.SELL, reduce_only=True), halted) == "ok"


def test_kill_switch_allows_only_real_reductions() -> None:
    s = state(
        {("carry", "BTCUSDT"): D(10_000), ("cascade", "ETHUSDT"): D(-3_000)}, kill_switch=True
    )
    assert rule(order("2000"), s) == "reduce_only"
    assert rule(order("2000", Side.SELL, reduce_only=True), s) == "ok"
    assert rule(order("10000", Side.SELL, reduce_only=True), s) == "ok"  # exactly flat
    assert rule(order("10000.01", Side.SELL, reduce_only=True), s) == "reduce_only"  # would flip
    assert rule(order("2000", Side.BUY, reduce_only=True), s) == "reduce_only"  # same side
    assert rule(order("100", Side.BUY, reduce_only=True, symbol="XUSDT"), s) == "reduce_only"
    # reduce-only applies to the order's own layer: carry cannot reduce cascade's ETH short
    assert rule(order("100", Side.BUY, reduce_only=True, symbol="ETHUSDT"), s) == "reduce_only"
    flat = flatten_orders(s, "kill")
    assert [(o.layer, o.symbol, o.side, o.notional_usd) for o in flat] == [
        ("carry", "BTCUSDT", Side.SELL, D(10_000)),
        ("cascade", "ETHUSDT", Side.BUY, D(3_000)),
    ]
    for o in flat:
        assert check_order(o, s, LIMITS).ok
        s = apply_order(s, o)
    assert dict(s.positions_usd) == {}


def test_a_disabled_layer_may_only_reduce() -> None:
    s = state({("carry", "BTCUSDT"): D(10_000)}, disabled_layers={"carry"})
    assert rule(order("2000"), s) == "layer_disabled"
    assert rule(order("2000", Side.SELL), s) == "layer_disabled"  # a plain sell is not an exit
    assert rule(order("2000", Side.SELL, reduce_only=True), s) == "ok"
    # other layers are unaffected, and the flag survives apply_order
    assert rule(order("2000", layer="cascade", symbol="ETHUSDT"), s) == "ok"
    after = apply_order(s, order("2000", layer="cascade", symbol="ETHUSDT"))
    assert after.disabled_layers == frozenset({"carry"})
    assert rule(order("2000", cid="o2"), after) == "layer_disabled"


def test_live_orders_need_the_flag_and_the_layer() -> None:
    assert rule(order("2000", live=True), state()) == "live_disabled"
    assert rule(order("2000", live=False), state()) == "ok"
    on = Limits(**{**_limits_kwargs(LIMITS), "enable_live_orders": True})
    assert rule(order("2000", live=True), state(), on) == "ok"  # carry is a live layer
    assert rule(order("2000", live=True, layer="cascade"), state(), on) == "layer_not_live"
    # reduce-only live orders need the flag too
    s = state({("carry", "BTCUSDT"): D(5_000)}, kill_switch=True)
    assert rule(order("5000", Side.SELL, reduce_only=True, live=True), s) == "live_disabled"
    assert rule(order("5000", Side.SELL, reduce_only=True, live=True), s, on) == "ok"


def test_invalid_orders() -> None:
    assert rule(order("0"), state()) == "invalid"
    assert rule(order("-5"), state()) == "invalid"
    assert rule(order("2000", cid=" "), state()) == "invalid"
    with pytest.raises(ValueError, match="must be finite"):
        OrderRequest("carry", "X", Side.BUY, float("nan"), "o1")  # type: ignore[arg-type]
    assert OrderRequest("carry", "X", Side.BUY, 0.1, "o1").notional_usd == D("0.1")  # type: ignore[arg-type]
    bankrupt = PortfolioState(bankroll_usd=D(0))
    assert rule(order("2000"), bankrupt) == "invalid"


def test_limits_from_config_defaults_and_overrides(tmp_path, monkeypatch) -> None:
    for k in list(__import__("os").environ):
        if k.startswith("PERPDESK_"):
            monkeypatch.delenv(k)
    lim = Limits.from_config(Settings().risk)
    assert lim.enable_live_orders is False
    assert lim.live_layers == frozenset()
    assert (lim.max_position_pct, lim.max_deployed_pct, lim.min_position_pct) == (25, 50, 1)
    assert lim.max_daily_loss_pct == 5
    assert dict(lim.layer_allocation_pct) == {
        "carry": 50,
        "cascade": 0,
        "tail_hedge": 0,
        "grid": 0,
        "rl": 0,
    }
    p = tmp_path / "c.toml"
    p.write_text('[risk]\nenable_live_orders = true\nlive_layers = ["carry"]\n')
    lim = Limits.from_config(load_settings(p).risk)
    assert lim.enable_live_orders and lim.live_layers == frozenset({"carry"})
    p.write_text("[risk]\nmin_position_pct = 30\n")
    with pytest.raises(ConfigError, match=r"risk.min_position_pct = 30.0: must be at most"):
        load_settings(p)
    p.write_text('[risk]\nlive_layers = ["cary"]\n')
    with pytest.raises(ConfigError, match=r"unknown layer 'cary'"):
        load_settings(p)
    p.write_text("[risk.layer_allocation_pct]\ncarry = 60\ngrid = 41\n")
    with pytest.raises(ConfigError, match=r"sum = 101.0: must be at most 100"):
        load_settings(p)


def _limits_kwargs(lim: Limits) -> dict:
    return {f: getattr(lim, f) for f in lim.__slots__}


# ---------------------------------------------------------------- property tests

LAYERS = ["carry", "cascade", "grid", "ghost"]
SYMBOLS = ["AUSDT", "BUSDT", "CUSDT"]
F = Fraction


def ref_decision(o: OrderRequest, pos: dict, seen: set, pnl: F, kill: bool, lim: dict) -> bool:
    """The rules read straight from the issue, on Fractions."""
    bank = lim["bank"]
    n = F(o.notional_usd)
    if n <= 0 or not o.client_order_id.strip() or o.client_order_id in seen:
        return False
    if o.layer not in lim["alloc"]:
        return False
    if o.live and not (lim["live"] and o.layer in lim["live_layers"]):
        return False
    cur = pos.get((o.layer, o.symbol), F(0))
    d = n if o.side is Side.BUY else -n
    if o.reduce_only:
        return cur != 0 and (cur > 0) != (d > 0) and n <= abs(cur)
    if kill or pnl <= -bank * lim["loss"] / 100:
        return False
    new = dict(pos)
    new[(o.layer, o.symbol)] = cur + d
    grew = abs(cur + d) > abs(cur)
    sym = sum(abs(v) for (_, s), v in new.items() if s == o.symbol)
    dep = sum(abs(v) for v in new.values())
    lay = sum(abs(v) for (la, _), v in new.items() if la == o.layer)
    if grew and sym > bank * lim["pos"] / 100:
        return False
    if grew and dep > bank * lim["dep"] / 100:
        return False
    if grew and lay > bank * lim["alloc"][o.layer] / 100:
        return False
    return not (cur + d != 0 and abs(cur + d) < bank * lim["min"] / 100)


notionals = st.one_of(
    st.sampled_from(
        [D(x) for x in ("1000", "999.99", "5000", "10000", "10000.01", "25000", "25000.01")]
    ),
    st.decimals(min_value=D("0.01"), max_value=D("30000"), places=2),
)
order_steps = st.builds(
    OrderRequest,
    layer=st.sampled_from(["carry", "carry", "carry", "cascade", "cascade", "grid", "ghost"]),
    symbol=st.sampled_from(SYMBOLS),
    side=st.sampled_from([Side.BUY, Side.SELL]),
    notional_usd=notionals,
    client_order_id=st.sampled_from([f"c{i}" for i in range(40)]),
    reduce_only=st.sampled_from([False, False, True]),
    live=st.sampled_from([False, False, True]),
)
steps = st.lists(
    st.one_of(
        *[order_steps] * 8,
        st.tuples(st.just("kill"), st.booleans()),
        st.tuples(st.just("pnl"), st.decimals(min_value=-6000, max_value=6000, places=2)),
    ),
    min_size=10,
    max_size=50,
)
limit_sets = st.builds(
    dict,
    live=st.booleans(),
    live_layers=st.sets(st.sampled_from(LAYERS[:3])),
    pos=st.sampled_from([D(10), D(25), D("33.3")]),
    dep=st.sampled_from([D(20), D(40), D(50), D(100)]),
    min=st.sampled_from([D(0), D(1), D("2.5")]),
    loss=st.sampled_from([D(2), D(5)]),
    alloc=st.sampled_from(
        [{"carry": D(50), "cascade": D(10), "grid": D(0)}, {"carry": D(30), "cascade": D(30)}]
    ),
)


# Busy books: valid paper orders of modest size with fresh ids, so the caps (not the
# switches) are what stops them — every cap, including total deployed, gets hit.
busy_steps = st.lists(
    st.builds(
        lambda i, layer, sym, side, n: OrderRequest(layer, sym, side, n, f"b{i}"),
        st.integers(0, 10**9),
        st.sampled_from(["carry", "carry", "cascade"]),
        st.sampled_from(SYMBOLS),
        st.sampled_from([Side.BUY, Side.BUY, Side.SELL]),
        st.decimals(min_value=D("500"), max_value=D("15000"), places=2),
    ),
    min_size=5,
    max_size=30,
    unique_by=lambda o: o.client_order_id,
)


@settings(
    max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(lim=limit_sets, seq=steps)
def test_no_sequence_breaches_a_cap(lim: dict, seq: list) -> None:
    run_sequence(lim, seq)


@settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(lim=limit_sets, seq=busy_steps)
def test_busy_books_never_breach_a_cap(lim: dict, seq: list) -> None:
    run_sequence(lim, seq)


def run_sequence(lim: dict, seq: list) -> None:
    """Drive check_order with ``seq`` from an empty book, applying accepted orders to the
    test's own Fraction state, and check every rule and cap after every step."""
    limits = Limits(
        enable_live_orders=lim["live"],
        live_layers=frozenset(lim["live_layers"]),
        max_position_pct=lim["pos"],
        max_deployed_pct=lim["dep"],
        min_position_pct=lim["min"],
        max_daily_loss_pct=lim["loss"],
        layer_allocation_pct=lim["alloc"],
    )
    ref = {
        "bank": F(BANK),
        "live": lim["live"],
        "live_layers": lim["live_layers"],
        "pos": F(lim["pos"]),
        "dep": F(lim["dep"]),
        "min": F(lim["min"]),
        "loss": F(lim["loss"]),
        "alloc": {k: F(v) for k, v in lim["alloc"].items()},
    }
    pos: dict[tuple[str, str], F] = {}
    seen: set[str] = set()
    pnl, kill = F(0), False
    accepted = 0
    for step in seq:
        if isinstance(step, tuple):
            if step[0] == "kill":
                kill = step[1]
            else:
                pnl = F(step[1])
            continue
        o = step
        s = PortfolioState(
            bankroll_usd=BANK,
            positions_usd={k: D(v.numerator) / D(v.denominator) for k, v in pos.items()},
            daily_pnl_usd=D(pnl.numerator) / D(pnl.denominator),
            kill_switch=kill,
            seen_client_order_ids=frozenset(seen),
        )
        halted = kill or pnl <= -ref["bank"] * ref["loss"] / 100
        decision = check_order(o, s, limits)
        assert decision.ok == ref_decision(o, pos, seen, pnl, kill, ref), (o, decision)
        event(decision.rule or "ok")
        if not decision.ok:
            continue
        # what got through: never live without both switches, never a reused id,
        # only real reductions while halted
        assert not o.live or (lim["live"] and o.layer in lim["live_layers"])
        assert o.client_order_id not in seen
        key = (o.layer, o.symbol)
        before = pos.get(key, F(0))
        d = F(o.notional_usd) if o.side is Side.BUY else -F(o.notional_usd)
        after = before + d
        if halted or o.reduce_only:
            assert o.reduce_only and abs(after) < abs(before) and after * before >= 0
        elif after != 0:
            assert abs(after) >= ref["bank"] * ref["min"] / 100
        pos[key] = after
        if after == 0:
            del pos[key]
        seen.add(o.client_order_id)
        accepted += 1
        assert dict(apply_order(s, o).positions_usd) == {
            k: D(v.numerator) / D(v.denominator) for k, v in pos.items()
        }
        # every cap holds after every accepted order
        for sym in SYMBOLS:
            gross = sum(abs(v) for (_, s_), v in pos.items() if s_ == sym)
            assert gross <= ref["bank"] * ref["pos"] / 100
        assert sum(abs(v) for v in pos.values()) <= ref["bank"] * ref["dep"] / 100
        for layer in LAYERS:
            gross = sum(abs(v) for (la, _), v in pos.items() if la == layer)
            assert gross <= ref["bank"] * ref["alloc"].get(layer, F(0)) / 100
    target(float(accepted), label="accepted orders")


@settings(max_examples=200, deadline=None)
@given(
    seq=st.lists(order_steps, min_size=1, max_size=30), live_layers=st.sets(st.sampled_from(LAYERS))
)
def test_nothing_goes_live_while_live_orders_are_disabled(seq: list, live_layers: set) -> None:
    limits = Limits(
        enable_live_orders=False,
        live_layers=frozenset(live_layers),
        layer_allocation_pct={"carry": D(50), "cascade": D(50), "grid": D(50), "ghost": D(50)},
    )
    s = PortfolioState(bankroll_usd=BANK)
    for o in seq:
        d = check_order(o, s, limits)
        if o.live:
            assert not d.ok and d.rule in {"live_disabled", "duplicate_id", "invalid"}
        if d.ok:
            s = apply_order(s, o)
