"""The engine end to end on hand-built catalogs: timing, fills, funding, rejections, hedge
mode, liquidation, determinism, and the generic lookahead test."""

from __future__ import annotations

import math
from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from perpdesk.data.catalog import Catalog
from perpdesk.domain import (
    Bar,
    Fill,
    FundingSettlement,
    Instrument,
    InstrumentKind,
    Order,
    PositionSide,
    Side,
    Timer,
    Trade,
)
from perpdesk.sim.costs import ConstantLatency, Costs, FixedBpsSlippage
from perpdesk.sim.engine import AccountConfig, run_backtest
from perpdesk.sim.fills import TickFillModel
from perpdesk.sim.replay import Replay, StreamSpec
from perpdesk.sim.testing import assert_no_lookahead
from perpdesk.strategies.base import Context, Strategy
from tests.helpers import T0, funding_table
from tests.test_replay import book_table, mark_table, trades_table

S = 1_000_000_000
MS = 1_000_000
M5 = 300 * S
V = "test"
SYM = "AAAUSDT"
PERP = Instrument(V, SYM, InstrumentKind.PERP, "AAA", "USDT", 0.01, 0.001, 8)
BARS = StreamSpec(V, "perp_bars_5m", SYM)
FUND = StreamSpec(V, "funding", SYM)


def write_bars(root: Path, ohlc: list[tuple[float, float, float, float]], sym: str = SYM) -> None:
    """5-minute perp bars opening at T0, T0 + 5 min, … with the given OHLC."""
    o, h, lo, c = (np.array(x, dtype=float) for x in zip(*ohlc, strict=True))
    n = len(ohlc)
    Catalog(root).write(
        V,
        "perp_bars_5m",
        sym,
        pa.table(
            {
                "ts_ns": pa.array(T0 + M5 * np.arange(n), pa.int64()),
                "open": o,
                "high": h,
                "low": lo,
                "close": c,
                "volume_base": np.ones(n),
                "volume_quote": c,
                "taker_buy_volume_quote": c / 2,
            }
        ),
    )


def flat(price: float) -> tuple[float, float, float, float]:
    return (price, price, price, price)


class Script(Strategy):
    """Runs ``actions[k](ctx, event)`` on the k-th bar and records what it saw."""

    def __init__(self, actions: dict, **kw) -> None:
        super().__init__(**kw)
        self.actions = actions
        self.k = 0
        self.seen: list[tuple] = []
        self.fills: list[Fill] = []
        self.rejects: list[tuple[str, str]] = []

    def on_bar(self, ctx: Context, bar: Bar) -> None:
        self.seen.append((ctx.now_ns, bar.ts_ns, bar.close))
        act = self.actions.get(self.k)
        self.k += 1
        if act is not None:
            act(ctx, bar)

    def on_fill(self, ctx: Context, fill: Fill) -> None:
        self.fills.append(fill)

    def on_reject(self, ctx: Context, order: Order, reason: str) -> None:
        self.rejects.append((order.client_order_id, reason))

    def on_end(self, ctx: Context) -> None:
        self.open_at_end = [o.client_order_id for o in ctx.open_orders()]


def run_bars(root: Path, strat: Strategy, streams=(BARS,), **kw):
    kw.setdefault("account", AccountConfig(10_000, leverage={SYM: 5}))
    return run_backtest(strat, root, [PERP], streams=list(streams), **kw)


def test_bars_arrive_at_close_and_a_market_order_fills_at_that_close(tmp_path: Path) -> None:
    write_bars(tmp_path, [flat(100.0), flat(101.0), flat(102.0)])
    s = Script({0: lambda ctx, bar: ctx.market(SYM, Side.BUY, 1.0)})
    res = run_bars(tmp_path, s)
    # each bar is seen at its close: now = open + 5 min
    assert s.seen == [
        (T0 + M5, T0, 100.0),
        (T0 + 2 * M5, T0 + M5, 101.0),
        (T0 + 3 * M5, T0 + 2 * M5, 102.0),
    ]
    (f,) = res.fills.to_pylist()
    # the decision at the first close (100.00) fills there, taker fee 100 × 0.0005 = 0.05
    assert (f["ts_ns"], f["client_order_id"], f["price"], f["fee_usd"]) == (
        T0 + M5,
        "Script-1",
        Decimal("100.00"),
        Decimal("0.05"),
    )
    assert s.fills[0].liquidity == "taker"
    assert res.events == 3 and res.dispatched == 3


def test_limit_order_the_conservative_bar_rule_must_not_fill(tmp_path: Path) -> None:
    write_bars(
        tmp_path,
        [
            flat(100.0),
            (100.0, 101.0, 98.5, 99.0),  # low 98.5 ≤ 99.00: the 99 bid fills, the 98 does not
            (99.0, 99.5, 98.01, 98.2),  # low 98.01 > 98.00: still no fill for the 98 bid
        ],
    )

    def place(ctx: Context, bar: Bar) -> None:
        ctx.limit(SYM, Side.BUY, 1.0, 98.0)
        ctx.limit(SYM, Side.BUY, 1.0, 99.0)

    s = Script({0: place})
    res = run_bars(tmp_path, s)
    (f,) = res.fills.to_pylist()
    # filled during the bar that closes at T0 + 10 min, at the limit, maker 99 × 0.0002
    assert (f["client_order_id"], f["ts_ns"], f["price"], f["liquidity"], f["fee_usd"]) == (
        "Script-2",
        T0 + 2 * M5,
        Decimal("99.00"),
        "maker",
        Decimal("0.0198"),
    )
    assert s.open_at_end == ["Script-1"]  # the 98 bid still works
    assert res.account.position(SYM).qty_base == Decimal("1.000")


def test_stop_fills_at_the_worse_of_stop_and_open(tmp_path: Path) -> None:
    write_bars(tmp_path, [flat(100.0), (103.0, 104.0, 102.0, 103.0)])  # gaps over the stop
    s = Script({0: lambda ctx, bar: ctx.stop_market(SYM, Side.BUY, 1.0, 102.5)})
    res = run_bars(tmp_path, s)
    assert res.fills.column("price").to_pylist() == [Decimal("103.00")]  # max(102.5, open 103)


def ticks(root: Path) -> list[StreamSpec]:
    """Trades and book tops: the ask moves from 100.0 to 101.0 at t0 + 50 ms."""
    t0 = T0
    c = Catalog(root)
    c.write(
        V, "trades", SYM, trades_table([t0, t0 + 200 * MS, t0 + 400 * MS], [100.0, 101.0, 101.0])
    )
    b = book_table([t0, t0 + 50 * MS], [99.9, 100.9])  # ask = bid + 0.1, ask qty 2.0
    c.write(V, "book_ticker", SYM, b)
    return [StreamSpec(V, "trades", SYM), StreamSpec(V, "book_ticker", SYM)]


class BuyOnFirstTrade(Strategy):
    def __init__(self, qty: float) -> None:
        super().__init__()
        self.qty = qty
        self.done = False

    def on_trade(self, ctx: Context, trade: Trade) -> None:
        if not self.done:
            self.done = True
            ctx.market(SYM, Side.BUY, self.qty)


def test_latency_delays_a_fill_past_a_price_move(tmp_path: Path) -> None:
    streams = ticks(tmp_path)

    def run(latency_ns: int, qty: float):
        costs = Costs(slippage=FixedBpsSlippage(10.0), latency=ConstantLatency(latency_ns))
        return run_backtest(
            BuyOnFirstTrade(qty),
            tmp_path,
            [PERP],
            AccountConfig(10_000, leverage={SYM: 5}),
            TickFillModel(),
            costs,
            streams=streams,
        ).fills.to_pylist()

    (f,) = run(0, 1.0)
    # no latency: takes the 2.0 shown at the ask 100.0 at t0
    assert (f["ts_ns"], f["price"]) == (T0, Decimal("100.00"))
    (f,) = run(100 * MS, 1.0)
    # 100 ms later the ask is 101.0: the same decision fills there, at the arrival time
    assert (f["ts_ns"], f["price"]) == (T0 + 100 * MS, Decimal("101.00"))
    f1, f2 = run(100 * MS, 3.0)
    # 3.0 against 2.0 shown: 2.0 at 101.0, 1.0 slips 10 bps → 101.101, on the 0.01 grid
    # rounded against the buyer → 101.11; slippage 1.0 × (101.11 − 101.0) = 0.11
    assert (f1["qty_base"], f1["price"], f1["slippage_usd"]) == (
        Decimal("2"),
        Decimal("101"),
        Decimal("0"),
    )
    assert (f2["qty_base"], f2["price"], f2["slippage_usd"]) == (
        Decimal("1"),
        Decimal("101.11"),
        Decimal("0.11"),
    )
    # taker fee 1.0 × 101.11 × 0.0005 = 0.050555
    assert f2["fee_usd"] == Decimal("0.050555")


def _funding_run(tmp_path: Path, side: Side, exit_at_settlement: bool = False):
    write_bars(tmp_path, [flat(100.0)] * 11 + [flat(110.0)] + [flat(120.0)] * 12)
    # settlements at T0 + 1 h (mark missing → last close) and T0 + 2 h (mark 125 given)
    Catalog(tmp_path).write(
        V,
        "funding",
        SYM,
        funding_table([T0 + 12 * M5, T0 + 24 * M5], [0.001, -0.002], 8, [None, 125.0]),
    )
    acts = {0: lambda ctx, bar: ctx.market(SYM, side, 2.0)}
    if exit_at_settlement:  # the bar closing at the first settlement is bar 11
        acts[11] = lambda ctx, bar: ctx.market(
            SYM, Side.SELL if side is Side.BUY else Side.BUY, 2.0
        )
    return run_bars(tmp_path, Script(acts), streams=(BARS, FUND), costs=Costs.frictionless())


def test_funding_on_a_long_and_a_short_in_both_signs(tmp_path: Path) -> None:
    res = _funding_run(tmp_path / "long", Side.BUY)
    # long 2 × mark 110 (the close of the bar ending at the settlement) × 0.001 → pays 0.22
    # then long 2 × 125 × (−0.002) → receives 0.50
    assert res.funding.column("amount_usd").to_pylist() == [Decimal("-0.22"), Decimal("0.5")]
    assert res.funding.column("mark_price").to_pylist() == [110.0, 125.0]
    short = _funding_run(tmp_path / "short", Side.SELL)
    assert short.funding.column("amount_usd").to_pylist() == [Decimal("0.22"), Decimal("-0.5")]
    # cash: 10 000 − 0.22 + 0.50 for the long (no fees); price PnL 2 × (120 − 100) = 40
    assert res.account.cash_usd == Decimal("10000.28")
    assert res.account.equity_usd == Decimal("10040.28")


def test_exit_at_the_settlement_instant_does_not_earn_it(tmp_path: Path) -> None:
    res = _funding_run(tmp_path, Side.SELL, exit_at_settlement=True)
    assert res.funding.num_rows == 0  # closed by the bar that closes at T0 + 1 h


def test_rejections_carry_reasons(tmp_path: Path) -> None:
    write_bars(tmp_path, [flat(100.0), flat(100.0)])

    def go(ctx: Context, bar: Bar) -> None:
        ctx.market(SYM, Side.BUY, 0.0015)
        ctx.limit(SYM, Side.BUY, 1.0, 99.999)
        ctx.market(SYM, Side.SELL, 1.0, reduce_only=True)
        ctx.market(SYM, Side.BUY, 60.0)  # 6000 USD of margin at 1×, 1000 available
        ctx.market(SYM, Side.BUY, 1.0, client_order_id="mine")
        ctx.market(SYM, Side.BUY, 1.0, client_order_id="mine")
        ctx.market("ZZZUSDT", Side.BUY, 1.0)
        ctx.post_only(SYM, Side.BUY, 1.0, 100.0)  # at the last price: would take
        ctx.market(SYM, Side.BUY, 1.0, position_side=PositionSide.LONG)

    s = Script({0: go})
    res = run_bars(tmp_path, s, account=AccountConfig(1_000))
    reasons = dict(
        zip(*res.rejections.select(["client_order_id", "reason"]).to_pydict().values(), strict=True)
    )
    assert reasons["Script-1"] == "qty 0.0015 is not a multiple of lot_size 0.001"
    assert reasons["Script-2"] == "price 99.999 is not a multiple of tick_size 0.01"
    assert reasons["Script-3"] == "reduce-only order would not reduce the position"
    assert reasons["Script-4"].startswith(f"{SYM}: insufficient margin: opening 60")
    assert reasons["mine"] == "duplicate client_order_id mine"
    assert reasons["Script-5"] == "unknown symbol ZZZUSDT"
    assert reasons["Script-6"] == "post-only order would take liquidity"
    assert reasons["Script-7"] == "one-way mode takes position_side BOTH only"
    assert len(s.rejects) == 8
    assert res.fills.column("client_order_id").to_pylist() == ["mine"]


def test_hedge_mode_holds_a_long_and_a_short_at_once(tmp_path: Path) -> None:
    write_bars(tmp_path, [flat(100.0), flat(104.0), flat(104.0)])

    def open_both(ctx: Context, bar: Bar) -> None:
        ctx.market(SYM, Side.BUY, 1.0, position_side=PositionSide.LONG)
        ctx.market(SYM, Side.SELL, 1.0, position_side=PositionSide.SHORT)

    def close_some(ctx: Context, bar: Bar) -> None:
        ctx.market(SYM, Side.SELL, 0.4, position_side=PositionSide.LONG)
        ctx.market(SYM, Side.BUY, 2.0, position_side=PositionSide.SHORT)  # more than held

    acc = AccountConfig(10_000, hedge_mode=True, leverage={SYM: 5})
    res = run_bars(
        tmp_path, Script({0: open_both, 1: close_some}), account=acc, costs=Costs.frictionless()
    )
    a = res.account
    assert a.position(SYM, PositionSide.LONG).qty_base == Decimal("0.600")
    assert a.position(SYM, PositionSide.SHORT).qty_base == Decimal("-1.000")
    assert res.rejections.column("reason").to_pylist() == [
        "closing 2.0 exceeds the short position 1.000"
    ]
    # long: 0.4 closed at +4 = 1.6 realised + 0.6 × 4 = 2.4 open; short: −1 × 4 = −4 open
    assert a.cash_usd == Decimal("10001.6")
    assert a.equity_usd == Decimal("10000")


def test_liquidation_when_the_mark_crosses(tmp_path: Path) -> None:
    write_bars(tmp_path, [flat(100.0)] * 6)
    # marks after the entry: 95, 91 (safe), 90 (breach), 89
    marks = [T0 + M5 + k * 60 * S for k in range(1, 5)]
    Catalog(tmp_path).write(V, "mark_price", SYM, mark_table(marks, [95.0, 91.0, 90.0, 89.0]))
    s = Script({0: lambda ctx, bar: ctx.market(SYM, Side.BUY, 1.0)})
    res = run_bars(
        tmp_path,
        s,
        streams=(BARS, StreamSpec(V, "mark_price", SYM)),
        account=AccountConfig(10, leverage={SYM: 10}),
        costs=Costs.frictionless(),
    )
    # cross margin: liquidated when cash + (m − 100) < 0.004 m (first BTCUSDT bracket),
    # i.e. m < 90 / 0.996 = 90.36: not at 91 (1.0 > 0.364), yes at 90 (0 < 0.36)
    liq = [f for f in s.fills if f.label == "LIQUIDATION"]
    assert len(liq) == 1 and liq[0].ts_ns == marks[2] and liq[0].price == Decimal("90")
    # clearance fee 1.25 % × 90 = 1.125; cash 10 − 10 − 1.125
    assert liq[0].fee_usd == Decimal("1.125")
    assert res.account.cash_usd == Decimal("-1.125")
    assert res.fills.num_rows == 2


class Timers(Strategy):
    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[str, int]] = []

    def on_start(self, ctx: Context) -> None:
        ctx.set_timer(T0 + 2 * M5, "once")
        ctx.set_interval(3 * M5, "every", start_ns=T0 + M5)

    def on_bar(self, ctx: Context, bar: Bar) -> None:
        self.log.append(("bar", ctx.now_ns))

    def on_timer(self, ctx: Context, timer: Timer) -> None:
        assert ctx.now_ns == timer.ts_ns
        self.log.append((timer.name, timer.ts_ns))


def test_timers_fire_before_data_at_the_same_instant(tmp_path: Path) -> None:
    write_bars(tmp_path, [flat(100.0)] * 3)
    s = Timers()
    run_backtest(
        s, tmp_path, [PERP], AccountConfig(1), streams=[BARS], start_ns=T0, end_ns=T0 + 8 * M5
    )
    m = M5
    assert s.log == [
        ("every", T0 + m),
        ("bar", T0 + m),
        ("once", T0 + 2 * m),
        ("bar", T0 + 2 * m),
        ("bar", T0 + 3 * m),
        ("every", T0 + 4 * m),  # after the last event, before end_ns: still fires
        ("every", T0 + 7 * m),
    ]


def test_cancel_and_latency(tmp_path: Path) -> None:
    write_bars(tmp_path, [flat(100.0), (100.0, 100.0, 98.0, 99.0), (99.0, 99.0, 97.0, 98.0)])

    def place(ctx: Context, bar: Bar) -> None:
        ctx.limit(SYM, Side.BUY, 1.0, 99.0, client_order_id="a")
        ctx.limit(SYM, Side.BUY, 1.0, 98.0, client_order_id="b")
        assert [o.client_order_id for o in ctx.open_orders()] == ["a", "b"]
        assert ctx.cancel("b") and not ctx.cancel("nope")

    # no latency: "a" rests from the first close and fills in the next bar (low 98 ≤ 99);
    # "b" is cancelled before the third bar could fill it (low 97 ≤ 98)
    res = run_bars(tmp_path, Script({0: place}))
    assert res.fills.select(["client_order_id", "ts_ns"]).to_pylist() == [
        {"client_order_id": "a", "ts_ns": T0 + 2 * M5}
    ]
    # 1 ns latency: "a" arrives after the second bar opened, so only the third may fill it
    res = run_bars(tmp_path, Script({0: place}), costs=Costs(latency=ConstantLatency(1)))
    assert res.fills.select(["client_order_id", "ts_ns"]).to_pylist() == [
        {"client_order_id": "a", "ts_ns": T0 + 3 * M5}
    ]


def test_cold_streams_build_no_objects(tmp_path: Path) -> None:
    streams = ticks(tmp_path)
    res = run_backtest(Strategy(), tmp_path, [PERP], AccountConfig(1), streams=streams)
    assert res.events == 5 and res.dispatched == 0
    assert res.equity.to_pylist() == [{"ts_ns": T0 + 400 * MS, "equity_usd": 1.0, "cash_usd": 1.0}]


# ------------------------------------------------------------------ lookahead


class Busy(Strategy):
    """Decides from everything it can see: bars, trades, funding, timers, fills, the
    portfolio and last prices read on a timer (lazily caught up from cold streams)."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.closes: list[float] = []

    def on_start(self, ctx: Context) -> None:
        ctx.set_interval(7 * 60 * S, "t", start_ns=T0 + 60 * S)

    def on_bar(self, ctx: Context, bar: Bar) -> None:
        self.closes.append(bar.close)
        if len(self.closes) >= 3:
            ma = sum(self.closes[-3:]) / 3
            pos = ctx.position(SYM).qty_base
            if bar.close > ma and pos <= 0:
                ctx.market(SYM, Side.BUY, 0.5)
            elif bar.close < ma and pos > 0:
                ctx.limit(SYM, Side.SELL, float(pos), round(bar.close + 0.3, 2), reduce_only=True)

    def on_funding(self, ctx: Context, s: FundingSettlement) -> None:
        if s.funding_rate > 0 and ctx.portfolio.cash_usd > 0:
            ctx.cancel_all(SYM)

    def on_timer(self, ctx: Context, timer: Timer) -> None:
        px = ctx.last_price(SYM)
        if not math.isnan(px) and int(px * 100) % 3 == 0:
            ctx.limit(SYM, Side.BUY, 0.1, round(px - 0.5, 2), label=f"t{px}")

    def on_fill(self, ctx: Context, fill: Fill) -> None:
        if fill.side is Side.BUY and fill.qty_base > Decimal("0.2"):
            ctx.stop_market(
                SYM, Side.SELL, 0.2, round(float(fill.price) - 2.0, 2), reduce_only=True
            )


class PeeksAtNextBar(Busy):
    """Cheats: reads the next bar from the catalog files."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.table = Catalog(root).read(V, "perp_bars_5m", SYM).to_pydict()

    def on_bar(self, ctx: Context, bar: Bar) -> None:
        i = self.table["ts_ns"].index(bar.ts_ns)
        if i + 1 < len(self.table["ts_ns"]) and self.table["close"][i + 1] > bar.close:
            ctx.market(SYM, Side.BUY, 0.001)


def busy_catalog(root: Path) -> list[StreamSpec]:
    rng = np.random.default_rng(7)
    n = 120
    close = 100.0 + np.cumsum(rng.normal(0, 0.4, n)).round(2)
    ohlc = [(float(c), float(c) + 0.3, float(c) - 0.4, float(c)) for c in np.roll(close, 1)]
    ohlc = [
        (o, max(h, c), min(lo, c), c) for (o, h, lo, _), c in zip(ohlc, close.tolist(), strict=True)
    ]
    write_bars(root, ohlc)
    settle = [T0 + 3_600 * S * k for k in range(1, 10)]
    Catalog(root).write(
        V, "funding", SYM, funding_table(settle, [0.0002 * (-1) ** k for k in range(9)], 8)
    )
    tt = [T0 + k * 97 * S for k in range(n * 3)]
    Catalog(root).write(
        V, "trades", SYM, trades_table(tt, [float(close[k // 3]) for k in range(n * 3)])
    )
    return [BARS, FUND, StreamSpec(V, "trades", SYM)]


def test_engine_is_deterministic(tmp_path: Path) -> None:
    streams = busy_catalog(tmp_path)

    def run():
        return run_backtest(
            Busy(tmp_path),
            tmp_path,
            [PERP],
            AccountConfig(10_000, leverage={SYM: 5}),
            streams=streams,
            equity_every_ns=3_600 * S,
        )

    a, b = run(), run()
    assert a.orders.num_rows > 10 and a.fills.num_rows > 5 and a.funding.num_rows > 0
    for name in ("orders", "fills", "equity", "funding", "rejections"):
        assert getattr(a, name).equals(getattr(b, name))


def test_no_lookahead_generic_helper(tmp_path: Path) -> None:
    streams = busy_catalog(tmp_path / "cat")
    kw = dict(
        account=AccountConfig(10_000, leverage={SYM: 5}),
        k_events=[5, 77, 200, 333],
        workdir=tmp_path / "work",
    )
    assert_no_lookahead(Busy, tmp_path / "cat", streams, [PERP], **kw)
    assert_no_lookahead(
        Busy, tmp_path / "cat", streams, [PERP], fill_model_factory=TickFillModel, **kw
    )
    with pytest.raises(AssertionError, match="lookahead at K="):
        kw["workdir"] = tmp_path / "work2"
        assert_no_lookahead(PeeksAtNextBar, tmp_path / "cat", streams, [PERP], **kw)


def test_results_do_not_depend_on_chunking(tmp_path: Path, monkeypatch) -> None:
    # tiny chunks: the lazy catch-up of cold streams crosses chunk boundaries; a tiny scan
    # window: the hot-stream scan restarts mid-chunk
    streams = busy_catalog(tmp_path)
    acc = AccountConfig(10_000, leverage={SYM: 5})
    big = run_backtest(Busy(tmp_path), Replay(tmp_path, streams), [PERP], acc)
    monkeypatch.setattr("perpdesk.sim.engine._WINDOW", 5)
    for rows in (3, 17, 1_000_000):
        small = run_backtest(
            Busy(tmp_path), Replay(tmp_path, streams, chunk_rows=rows), [PERP], acc
        )
        for name in ("orders", "fills", "funding", "rejections"):
            assert getattr(small, name).equals(getattr(big, name)), (rows, name)


def test_spot_leg_is_addressed_with_the_spot_suffix(tmp_path: Path) -> None:
    write_bars(tmp_path, [flat(100.0), flat(100.0)])
    c = Catalog(tmp_path)
    c.write(V, "spot_bars_5m", SYM, c.read(V, "perp_bars_5m", SYM))
    # the catalog names the spot instrument like its perp; the engine calls it AAAUSDT.SPOT
    spot = Instrument(V, SYM, InstrumentKind.SPOT, "AAA", "USDT", 0.01, 0.001)
    s = Script({1: lambda ctx, bar: ctx.market(bar.symbol, Side.BUY, 2.0)})
    res = run_backtest(
        s,
        tmp_path,
        [PERP, spot],
        AccountConfig(1_000),
        streams=[BARS, StreamSpec(V, "spot_bars_5m", SYM)],
    )
    # bar 0 is the perp bar, bar 1 the spot bar (same close time; dataset order perp < spot)
    assert [b[2] for b in s.seen[:2]] == [100.0, 100.0]
    (f,) = res.fills.to_pylist()
    # spot taker 0.1 %: 2 × 100 × 0.001 = 0.2; cash 1000 − 200 − 0.2
    assert (f["symbol"], f["price"], f["fee_usd"]) == (
        "AAAUSDT.SPOT",
        Decimal("100"),
        Decimal("0.2"),
    )
    assert res.account.cash_usd == Decimal("799.8")


def test_tick_resting_limit_fills_by_trade_size(tmp_path: Path) -> None:
    t = trades_table([T0, T0 + S, T0 + 2 * S, T0 + 3 * S], [100.5, 100.2, 100.0, 99.9])
    # sizes 1, 1, 0.3, 5; aggressor flags: is_buyer_maker True = a seller hit the bid
    t = t.set_column(3, "qty_base", pa.array([1.0, 1.0, 0.3, 5.0]))
    t = t.set_column(5, "is_buyer_maker", pa.array([True, True, True, True]))
    Catalog(tmp_path).write(V, "trades", SYM, t)

    class Bid(Strategy):
        def on_start(self, ctx: Context) -> None:
            ctx.limit(SYM, Side.BUY, 1.0, 100.0)

    res = run_backtest(
        Bid(),
        tmp_path,
        [PERP],
        AccountConfig(10_000, leverage={SYM: 5}),
        TickFillModel(),
        streams=[StreamSpec(V, "trades", SYM)],
    )
    got = res.fills.select(["ts_ns", "qty_base", "price", "liquidity", "fee_usd"]).to_pylist()
    # 100.2 is above the bid: nothing; 0.3 prints at 100.0: 0.3 fills (front of the queue);
    # 99.9 trades through: the remaining 0.7. Maker fees 0.3 × 100 × 0.0002 = 0.006 and
    # 0.7 × 100 × 0.0002 = 0.014
    assert got == [
        {"ts_ns": T0 + 2 * S, "qty_base": Decimal("0.3"), "price": Decimal("100"),
         "liquidity": "maker", "fee_usd": Decimal("0.006")},
        {"ts_ns": T0 + 3 * S, "qty_base": Decimal("0.7"), "price": Decimal("100"),
         "liquidity": "maker", "fee_usd": Decimal("0.014")},
    ]  # fmt: skip


class PriceOnTimer(Strategy):
    """Subscribes to nothing: every price it reads is caught up lazily from cold rows."""

    def __init__(self, times: list[int]) -> None:
        super().__init__()
        self.times = times
        self.seen: list[float] = []

    def on_start(self, ctx: Context) -> None:
        for t in self.times:
            ctx.set_timer(t, "t")

    def on_timer(self, ctx: Context, timer: Timer) -> None:
        self.seen.append(ctx.last_price(SYM))


def test_a_timer_sees_only_prices_stamped_before_it(tmp_path: Path) -> None:
    Catalog(tmp_path).write(
        V,
        "trades",
        SYM,
        trades_table([T0 + k * S for k in range(10)], [100.0 + k for k in range(10)]),
    )
    times = [T0 + S // 2, T0 + 3 * S, T0 + 15 * S // 2, T0 + 9 * S, T0 + 20 * S]
    for rows in (2, 3, 1_000):
        s = PriceOnTimer(times)
        rp = Replay(tmp_path, [StreamSpec(V, "trades", SYM)], T0, T0 + 30 * S, chunk_rows=rows)
        run_backtest(s, rp, [PERP], AccountConfig(1))
        # the last trade strictly before each timer: a trade at the timer's own instant
        # (3 s, 9 s) is not yet known (engine events run before market data at one time)
        assert s.seen == [100.0, 102.0, 107.0, 108.0, 109.0], rows


def test_random_resting_limits_match_a_slow_reference(tmp_path: Path, monkeypatch) -> None:
    rng = np.random.default_rng(11)
    n = 150
    close = np.round(100.0 + np.cumsum(rng.normal(0, 0.5, n)), 2)
    opens = np.concatenate([[100.0], close[:-1]])
    high = np.round(np.maximum(opens, close) + rng.exponential(0.3, n), 2)
    low = np.round(np.minimum(opens, close) - rng.exponential(0.3, n), 2)
    write_bars(tmp_path, list(zip(opens, high, low, close, strict=True)))
    offsets = np.round(rng.uniform(0.05, 2.0, (n, 2)), 2)

    class Ladder(Strategy):
        def on_bar(self, ctx: Context, bar: Bar) -> None:
            k = (bar.ts_ns - T0) // M5
            ctx.limit(SYM, Side.BUY, 0.001, round(bar.close - offsets[k, 0], 2))
            ctx.limit(SYM, Side.SELL, 0.001, round(bar.close + offsets[k, 1], 2))

    # the obvious rule, bar by bar: an order placed at the close of bar k fills at the first
    # later bar j whose low (buy) / high (sell) reaches it, at the close time of bar j
    want = []
    for k in range(n):
        for side, sign in ((0, -1), (1, 1)):
            px = round(close[k] + sign * offsets[k, side], 2)
            for j in range(k + 1, n):
                if (side == 0 and low[j] <= px) or (side == 1 and high[j] >= px):
                    want.append((f"Ladder-{2 * k + side + 1}", T0 + (j + 1) * M5, px))
                    break
    want.sort(key=lambda w: (w[1], int(w[0].split("-")[1])))
    acc = AccountConfig(1_000_000, leverage={SYM: 5})
    for rows, window in ((7, 65_536), (1_000_000, 65_536), (1_000_000, 4)):
        monkeypatch.setattr("perpdesk.sim.engine._WINDOW", window)
        res = run_backtest(Ladder(), Replay(tmp_path, [BARS], chunk_rows=rows), [PERP], acc)
        got = [
            (r["client_order_id"], r["ts_ns"], float(r["price"]))
            for r in res.fills.select(["client_order_id", "ts_ns", "price"]).to_pylist()
        ]
        assert len(want) > 100 and got == want


# ------------------------------------------------------------ quantities, marks, the end


class OnEnd(Script):
    """``actions`` on bars, and ``ctx.market`` of ``end_qty`` (plus a timer) in on_end."""

    def __init__(self, actions: dict, end_qty: object, **kw) -> None:
        super().__init__(actions, **kw)
        self.end_qty = end_qty
        self.timers: list[str] = []

    def on_end(self, ctx: Context) -> None:
        ctx.market(SYM, Side.SELL, self.end_qty, client_order_id="end")
        ctx.set_timer(ctx.now_ns + 1, "after-end")

    def on_timer(self, ctx: Context, timer) -> None:
        self.timers.append(timer.name)


def test_orders_sent_in_on_end_with_latency_still_arrive(tmp_path: Path) -> None:
    write_bars(tmp_path, [flat(100.0), flat(101.0), flat(102.0)])
    buy = {0: lambda ctx, bar: ctx.market(SYM, Side.BUY, 2.0, client_order_id="in")}
    strat = OnEnd(buy, 2.0)
    res = run_bars(tmp_path, strat, costs=Costs(latency=ConstantLatency(5 * MS)))
    # the buy sent at the first close (T0 + 5 min) arrives 5 ms later and fills at the last
    # price, 100; the sell sent in on_end (at the last close, T0 + 15 min) arrives 5 ms
    # after it and fills at the last price known, 102; the timer after the end never runs
    rows = res.fills.select(["client_order_id", "ts_ns", "qty_base", "price"]).to_pylist()
    assert [(r["client_order_id"], r["ts_ns"], r["qty_base"], r["price"]) for r in rows] == [
        ("in", T0 + M5 + 5 * MS, Decimal(2), Decimal(100)),
        ("end", T0 + 3 * M5 + 5 * MS, Decimal(2), Decimal(102)),
    ]
    assert res.account.position(SYM).qty_base == 0
    assert strat.timers == []
    assert res.equity.column("ts_ns").to_pylist()[-1] == T0 + 3 * M5 + 5 * MS


def test_decimal_quantities_are_exact_and_off_grid_ones_are_refused(tmp_path: Path) -> None:
    write_bars(tmp_path, [flat(100.0), flat(101.0), flat(102.0), flat(103.0)])
    q = Decimal("0.007")
    acts = {
        # 0.1 + 0.2 = 0.30000000000000004 in float: snapped to the 0.300 lot multiple
        0: lambda ctx, bar: ctx.market(SYM, Side.BUY, 0.1 + 0.2, client_order_id="f"),
        1: lambda ctx, bar: ctx.market(SYM, Side.BUY, q, client_order_id="d"),
        2: lambda ctx, bar: (
            ctx.market(SYM, Side.SELL, Decimal("0.0071"), client_order_id="off"),
            ctx.market(SYM, Side.SELL, ctx.position(SYM).qty_base, client_order_id="all"),
        ),
    }
    strat = Script(acts)
    res = run_bars(tmp_path, strat)
    assert res.fills.select(["client_order_id", "qty_base"]).to_pylist() == [
        {"client_order_id": "f", "qty_base": Decimal("0.3")},
        {"client_order_id": "d", "qty_base": Decimal("0.007")},
        {"client_order_id": "all", "qty_base": Decimal("0.307")},  # 0.300 + 0.007
    ]
    assert res.account.position(SYM).qty_base == 0  # no dust
    assert strat.rejects == [("off", "qty 0.0071 is not a multiple of lot_size 0.001")]


def test_a_fine_lot_closes_to_exactly_zero_with_decimal_quantities(tmp_path: Path) -> None:
    # lot 1e-8 and a 17-digit quantity: k = 12,345,678,912,345,678 lots is past 2^53, so
    # no float can hold it (a float order would be floored to a neighbouring multiple)
    pepe = Instrument(V, SYM, InstrumentKind.PERP, "AAA", "USDT", 1e-8, 1e-8, 8)
    write_bars(tmp_path, [flat(0.0001), flat(0.0001), flat(0.0001)])
    q = Decimal("123456789.12345678")
    acts = {
        0: lambda ctx, bar: ctx.market(SYM, Side.BUY, q),
        1: lambda ctx, bar: ctx.market(SYM, Side.SELL, ctx.position(SYM).qty_base),
    }
    res = run_backtest(
        Script(acts),
        tmp_path,
        [pepe],
        AccountConfig(100_000, leverage={SYM: 5}),
        streams=[BARS],
    )
    assert res.fills.column("qty_base").to_pylist() == [q, q]
    assert res.account.position(SYM).qty_base == 0


def test_result_tables_hold_quantities_past_1e10_base_units(tmp_path: Path) -> None:
    # 20 billion units at 1e-6 USD (a PEPE-like leg): 20,000 USD notional; decimal128(38, 18)
    # needs 11 + 18 = 29 significant digits, one more than Python's default context of 28
    pepe = Instrument(V, SYM, InstrumentKind.PERP, "AAA", "USDT", 1e-8, 1.0, 8)
    write_bars(tmp_path, [flat(0.000001), flat(0.000001)])
    big = Decimal(20_000_000_000)
    res = run_backtest(
        Script({0: lambda ctx, bar: ctx.market(SYM, Side.BUY, big)}),
        tmp_path,
        [pepe],
        AccountConfig(100_000, leverage={SYM: 5}),
        streams=[BARS],
    )
    assert res.fills.column("qty_base").to_pylist() == [big]
    assert res.fills.column("price").to_pylist() == [Decimal("0.000001")]


# ----------------------------------------------------------------- speed-path APIs (issue 7 bench)


def test_position_qty_and_the_cached_available_margin_follow_fills_marks_and_funding() -> None:
    from perpdesk.domain import Liquidity
    from perpdesk.sim.account import Account, AccountError

    long_, short = PositionSide.LONG, PositionSide.SHORT
    a = Account([PERP], "10000", hedge_mode=True, leverage={SYM: 5})

    def fill(side: Side, qty: str, price: str, ps: PositionSide) -> Fill:
        return Fill("c", V, SYM, side, Decimal(qty), Decimal(price), Decimal(0),
                    Liquidity.TAKER, 1, ps)  # fmt: skip

    assert a.available_usd == Decimal(10000)
    assert a.position_qty(SYM, long_) == 0 and a.position_qty(SYM, short) == 0
    a.apply_fill(fill(Side.BUY, "2", "100", long_))
    # margin used 2 × 100 / 5 = 40 at the fill price (the first mark)
    assert a.position_qty(SYM, long_) == Decimal(2) == a.position(SYM, long_).qty_base
    assert a.available_usd == Decimal(9960)
    a.update_mark(SYM, 2, 110.0)
    # upnl 2 × 110 − 200 = 20; used 2 × 110 / 5 = 44: 10,000 + 20 − 44
    assert a.available_usd == Decimal(9976)
    a.settle_funding(SYM, 3, 0.001, 110.0)
    # the long pays 2 × 110 × 0.001 = 0.22
    assert a.available_usd == Decimal("9975.78")
    a.apply_fill(fill(Side.SELL, "0.5", "110", long_))
    # realised 0.5 × (110 − 100) = 5; upnl 1.5 × 10 = 15; used 1.5 × 110 / 5 = 33
    assert a.position_qty(SYM, long_) == Decimal("1.5")
    assert a.available_usd == Decimal("10004.78") + 15 - 33
    a.apply_fill(fill(Side.SELL, "1", "110", short))
    assert a.position_qty(SYM, short) == Decimal(-1) == a.position(SYM, short).qty_base
    # short: upnl 0, used 1 × 110 / 5 = 22
    assert a.available_usd == Decimal("9986.78") - 22
    # opening 400 at 100 at 5x needs 8,000 (fits); 500 needs 10,000 (does not)
    assert a.can_open(SYM, Side.BUY, Decimal(400), 100.0, long_) is None
    assert "insufficient margin" in a.can_open(SYM, Side.BUY, Decimal(500), 100.0, long_)
    with pytest.raises(AccountError, match="hedge mode needs position_side LONG or SHORT"):
        a.position_qty(SYM)
    with pytest.raises(AccountError, match="unknown symbol"):
        a.position_qty("NOPEUSDT", long_)


def test_the_orders_table_is_built_on_first_access(tmp_path: Path) -> None:
    write_bars(tmp_path, [flat(100.0), flat(104.0), flat(104.0)])

    def act(ctx: Context, bar: Bar) -> None:
        ctx.limit(SYM, Side.BUY, 0.5, 90.0, label="L")
        ctx.market(SYM, Side.SELL, 0.25, label="M")

    res = run_bars(tmp_path, Script({0: act}), costs=Costs.frictionless())
    assert [o.client_order_id for o in res.order_list] == ["Script-1", "Script-2"]
    t = res.orders
    assert t is res.orders  # built once
    assert t.to_pylist() == [
        {"ts_ns": T0 + M5, "client_order_id": "Script-1", "strategy_id": "Script",
         "symbol": SYM, "side": "buy", "type": "limit", "qty_base": 0.5, "price": 90.0,
         "stop_price": None, "tif": "gtc", "reduce_only": False, "position_side": "both",
         "label": "L"},
        {"ts_ns": T0 + M5, "client_order_id": "Script-2", "strategy_id": "Script",
         "symbol": SYM, "side": "sell", "type": "market", "qty_base": 0.25, "price": None,
         "stop_price": None, "tif": "gtc", "reduce_only": False, "position_side": "both",
         "label": "M"},
    ]  # fmt: skip


def test_fast_constructor_builds_the_same_frozen_objects() -> None:
    import dataclasses

    from perpdesk.domain import Liquidity, OrderType, TimeInForce
    from perpdesk.sim.replay import fast_constructor

    bar = ("v", SYM, T0, 300, 1.0, 2.0, 0.5, 1.5, 10.0, 15.0, 7.0)
    assert fast_constructor(Bar)(*bar) == Bar(*bar)
    assert fast_constructor(Bar)(*bar).close_ts_ns == T0 + 300 * S
    od = ("c", "v", SYM, Side.BUY, 1.0, OrderType.LIMIT, 10.0, None, TimeInForce.GTC, False,
          PositionSide.LONG, 5, "s", "l")  # fmt: skip
    made = fast_constructor(Order)(*od)
    assert made == Order(*od) and type(made) is Order
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.price = 11.0  # type: ignore[misc]
    # __post_init__ still runs: the same error as the class's own constructor
    bad = (*od[:4], 0.0, *od[5:])
    with pytest.raises(ValueError, match=r"qty_base 0\.0 must be > 0"):
        fast_constructor(Order)(*bad)
    fd = ("c", "v", SYM, Side.SELL, Decimal("0.5"), Decimal(100), Decimal("0.01"),
          Liquidity.MAKER, 7, PositionSide.BOTH, Decimal(0), "s", "")  # fmt: skip
    assert fast_constructor(Fill)(*fd) == Fill(*fd)

    @dataclasses.dataclass
    class Plain:
        x: int

    assert fast_constructor(Plain) is Plain  # not frozen and slotted: the class itself
    assert fast_constructor(int) is int


def test_submit_fast_check_agrees_with_check_order_rules() -> None:
    """The submit hot path's check (``_passes_check``) passes exactly the orders the
    exchange rules of ``check_order`` let through; expectations written by hand."""
    from perpdesk.domain import OrderType
    from perpdesk.sim.engine import _passes_check, check_order

    spot = Instrument(V, SYM, InstrumentKind.SPOT, "AAA", "USDT", 0.01, 0.001)
    L, S, B = PositionSide.LONG, PositionSide.SHORT, PositionSide.BOTH

    def order(qty=0.003, price=100.01, stop=None, typ=OrderType.LIMIT, ps=L, ro=False, cid="c1"):
        return Order(cid, V, SYM, Side.BUY, qty, typ, price, stop, reduce_only=ro, position_side=ps)

    stop = dict(typ=OrderType.STOP_MARKET, price=None, stop=99.5)
    cases = [  # (order, instrument, hedge mode, allowed)
        (order(), PERP, True, True),
        (order(**stop, ps=S), PERP, True, True),
        (order(qty=0.0035), PERP, True, False),  # qty off the 0.001 lot
        (order(price=100.005), PERP, True, False),  # price off the 0.01 tick
        (order(**{**stop, "stop": 99.505}), PERP, True, False),  # stop price off the tick
        (order(cid="dup"), PERP, True, False),  # duplicate client id
        (order(ps=B), PERP, True, False),  # hedge mode needs LONG/SHORT
        (order(ro=True), PERP, True, False),  # no reduce_only in hedge mode
        (order(ps=B), PERP, False, True),
        (order(ps=B, ro=True), PERP, False, True),
        (order(ps=L), PERP, False, False),  # one-way takes BOTH only
        (order(ps=B), spot, False, True),
        (order(**stop, ps=B), spot, False, False),  # no stops on spot legs
        (order(ps=L), spot, True, False),  # spot takes BOTH only
    ]
    for o, inst, hedge, allowed in cases:
        ids = {"dup"}
        assert _passes_check(o, inst, hedge, ids) is allowed, o
        assert (check_order(o, inst, hedge_mode=hedge, known_ids=ids) is None) is allowed, o
