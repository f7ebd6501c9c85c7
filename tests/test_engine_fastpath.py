"""The engine's fast paths against the general path, with hand-computed expectations.

Covered: the resting book keyed by arrival ``seq`` (time priority after removals), the
matching band kept when an order strictly inside it leaves and rebuilt when an edge order
leaves, the inline ``ConstantLatency`` delay against a latency model the engine must ask,
submit's memoised lot snapping, and the account's memoised mark conversion.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from perpdesk.domain import Bar, Side
from perpdesk.sim.account import Account
from perpdesk.sim.costs import ConstantLatency, Costs
from perpdesk.strategies.base import Context
from tests.helpers import T0
from tests.test_engine import M5, PERP, SYM, Script, flat, run_bars, write_bars

S = 1_000_000_000


def test_time_priority_survives_removals_from_the_book(tmp_path: Path) -> None:
    # three bids at 99 in the order A, B, C; B is cancelled; a bar through 99 fills A then C
    write_bars(tmp_path, [flat(100.0), flat(100.0), (100.0, 100.0, 98.0, 98.5)])

    def place(ctx: Context, bar: Bar) -> None:
        for _ in range(3):
            ctx.limit(SYM, Side.BUY, 1.0, 99.0)

    s = Script({0: place, 1: lambda ctx, bar: ctx.cancel("Script-2")})
    res = run_bars(tmp_path, s)
    assert res.fills.column("client_order_id").to_pylist() == ["Script-1", "Script-3"]
    assert [f.price for f in s.fills] == [Decimal("99.00"), Decimal("99.00")]


def test_band_equals_the_hand_computed_envelope_after_every_removal(tmp_path: Path) -> None:
    # bids 99 (edge), 98 (inside), 97; ask 102 (edge). Bars stay at 100: nothing fills.
    write_bars(tmp_path, [flat(100.0)] * 6)
    seen: list[tuple[float, float] | None] = []

    def place(ctx: Context, bar: Bar) -> None:
        for px in (99.0, 98.0, 97.0):
            ctx.limit(SYM, Side.BUY, 1.0, px)
        ctx.limit(SYM, Side.SELL, 1.0, 102.0)

    def look(ctx: Context, bar: Bar) -> None:
        seen.append(ctx._e._bands.get(SYM))  # type: ignore[attr-defined]

    def cancel_inside(ctx: Context, bar: Bar) -> None:
        look(ctx, bar)
        ctx.cancel("Script-2")  # 98: strictly inside (97 ≤ 98 < 99)

    def cancel_edge(ctx: Context, bar: Bar) -> None:
        look(ctx, bar)
        ctx.cancel("Script-1")  # 99: the highest bid, the band's low edge

    s = Script({0: place, 1: cancel_inside, 2: cancel_edge, 3: look, 4: look})
    res = run_bars(tmp_path, s)
    # every bar at 100 is matched against the band (a bid at or above the low, or an ask at
    # or below the high, would be reached): (highest bid, lowest ask)
    assert seen == [(99.0, 102.0), (99.0, 102.0), (97.0, 102.0), (97.0, 102.0)]
    assert res.fills.num_rows == 0
    assert sorted(s.open_at_end) == ["Script-3", "Script-4"]


def test_a_removed_edge_order_cannot_make_a_bar_fill(tmp_path: Path) -> None:
    # the 99 bid leaves; the next bar's low 98.5 reaches only where it was; the one after
    # (low 96.9) reaches the 97 bid, which fills at its limit
    write_bars(
        tmp_path,
        [flat(100.0), flat(100.0), (100.0, 100.0, 98.5, 99.0), (99.0, 99.0, 96.9, 97.5)],
    )

    def place(ctx: Context, bar: Bar) -> None:
        ctx.limit(SYM, Side.BUY, 1.0, 99.0)
        ctx.limit(SYM, Side.BUY, 1.0, 97.0)

    s = Script({0: place, 1: lambda ctx, bar: ctx.cancel("Script-1")})
    res = run_bars(tmp_path, s)
    (f,) = res.fills.to_pylist()
    assert (f["client_order_id"], f["ts_ns"], f["price"]) == (
        "Script-2",
        T0 + 4 * M5,
        Decimal("97.00"),
    )


class _AskedLatency:
    """A latency model that is not a ConstantLatency: the engine must call it."""

    def __init__(self, delay_ns: int) -> None:
        self.delay_ns = delay_ns
        self.asked: list[int] = []

    def arrival_ns(self, ts_ns: int) -> int:
        self.asked.append(ts_ns)
        return ts_ns + self.delay_ns


def _latency_run(root: Path, latency) -> tuple[list, list, list]:  # type: ignore[no-untyped-def]
    def place(ctx: Context, bar: Bar) -> None:
        ctx.limit(SYM, Side.BUY, 1.0, 99.0)
        ctx.limit(SYM, Side.BUY, 1.0, 98.0)
        ctx.cancel("Script-2")

    s = Script({0: place, 2: lambda ctx, bar: ctx.market(SYM, Side.SELL, 1.0)})
    res = run_bars(root, s, costs=Costs(latency=latency))
    return res.fills.to_pylist(), res.orders.to_pylist(), res.rejections.to_pylist()


def test_constant_latency_inline_equals_an_asked_model(tmp_path: Path) -> None:
    dip = (100.0, 100.0, 98.5, 99.0)
    write_bars(tmp_path, [flat(100.0), dip, dip, flat(100.0)])
    for delay in (0, 60 * S):
        asked = _AskedLatency(delay)
        assert _latency_run(tmp_path, ConstantLatency(delay)) == _latency_run(tmp_path, asked)
        # asked once per order and per cancel, at the decision times (bar closes)
        assert asked.asked == [T0 + M5, T0 + M5, T0 + M5, T0 + 3 * M5]
    fills, _, _ = _latency_run(tmp_path, ConstantLatency(0))
    # zero latency: the 99 bid works from the first close, the next bar (low 98.5) fills it;
    # the market sell at the third close fills at that close, 99
    assert [(f["client_order_id"], f["ts_ns"], f["price"]) for f in fills] == [
        ("Script-1", T0 + 2 * M5, Decimal("99.00")),
        ("Script-3", T0 + 3 * M5, Decimal("99.00")),
    ]
    fills, _, _ = _latency_run(tmp_path, ConstantLatency(60 * S))
    # 60 s: the bid arrives after the second bar opened, so only the third bar fills it; the
    # market sell arrives 60 s after the third close and fills at the last price, 99
    assert [(f["client_order_id"], f["ts_ns"], f["price"]) for f in fills] == [
        ("Script-1", T0 + 3 * M5, Decimal("99.00")),
        ("Script-3", T0 + 3 * M5 + 60 * S, Decimal("99.00")),
    ]


def test_memoised_lot_snapping_books_exact_quantities(tmp_path: Path) -> None:
    write_bars(tmp_path, [flat(100.0), flat(100.0)])

    def trade(ctx: Context, bar: Bar) -> None:
        ctx.market(SYM, Side.BUY, 0.1 + 0.2)  # 0.30000000000000004: float noise, 300 lots
        ctx.market(SYM, Side.BUY, 0.3)  # the same 300 lots (memo hit)
        ctx.market(SYM, Side.BUY, 0.0015)  # 1.5 lots: refused

    s = Script({0: trade})
    res = run_bars(tmp_path, s)
    assert [f.qty_base for f in s.fills] == [Decimal("0.300"), Decimal("0.300")]
    assert res.orders.column("qty_base").to_pylist() == [0.3, 0.3, 0.0015]
    assert s.rejects == [("Script-3", "qty 0.0015 is not a multiple of lot_size 0.001")]
    assert res.account.position(SYM).qty_base == Decimal("0.600")


def test_memoised_marks_are_the_float_reprs() -> None:
    a = Account([PERP], "1000", leverage={SYM: 5})
    from perpdesk.domain import Fill, Liquidity

    a.apply_fill(
        Fill(
            "o1",
            "test",
            SYM,
            Side.BUY,
            Decimal("2"),
            Decimal("100"),
            Decimal("0"),
            Liquidity.TAKER,
            T0,
        )
    )
    for _ in range(2):  # the second conversion comes from the memo
        assert a.update_mark(SYM, T0 + 1, 100.1) == []
        assert a.mark(SYM) == Decimal("100.1")
        # equity = cash 1000 + 2 × (100.1 − 100) = 1000.2
        assert a.equity_usd == Decimal("1000.2")
    a.update_mark(SYM, T0 + 2, 99.95)
    assert a.mark(SYM) == Decimal("99.95")
    assert a.equity_usd == Decimal("999.90")
