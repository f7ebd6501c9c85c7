"""Checkpoints of the paper venue's journal (:meth:`DurablePaperVenue.checkpoint`,
:meth:`PaperVenue.state` / :meth:`PaperVenue.restore`).

The reference everywhere is the slow obvious one: a venue that replays the whole journal of
the same inputs, written with checkpoints off (``checkpoint_every=0``). Every state compared
is the full export (Decimals as strings: exact digits) plus the public views (balances,
positions, orders, executions with trade ids, funding, recent trades, lots, PnL breakdown).

Market data: the real Binance captures of 2023-04-04/05 (USD-M BTCUSDT perp with its mark
price stream, spot BTCUSDT; ``shared/data/binance-ws``), as tests/test_crash.py feeds them.
The capture's marks announce the 08:00 settlement, outside its 9 minutes: here each mark
announces the next whole minute instead (so the mark-driven funding clock settles during the
run), and an explicit settlement of 0.0001 at the last perp trade price is added every 97 s.

The crash child is this file run as a script (``python tests/test_paper_journal.py child``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import pickle
import shutil
import sqlite3
import subprocess
import sys
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if __name__ == "__main__":  # child: make the repo importable when run as a script
    sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402

from perpdesk.domain import (  # noqa: E402
    BookTop,
    FundingSettlement,
    MarkPrice,
    Order,
    OrderType,
    Side,
    TimeInForce,
    Trade,
)
from perpdesk.execution.paper import (  # noqa: E402
    PAPER_STATE_READS,
    PAPER_STATE_VERSION,
    PaperVenue,
)
from perpdesk.execution.protocol import OrderStatus, VenueError  # noqa: E402
from perpdesk.live.runner import (  # noqa: E402
    CHECKPOINT_VERSION,
    DurablePaperVenue,
    PairSpec,
    RunnerError,
    capture_events,
    paper_instruments,
)
from perpdesk.sim.costs import Costs, FeeModel  # noqa: E402

PAIRS = (PairSpec("BTCUSDT", "BTCUSDT.SPOT"),)
SYMS = ["BTCUSDT", "BTCUSDT.SPOT"]
CASH = "100000"
LEV = {"BTCUSDT": 3}
S_NS = 1_000_000_000
EXPLICIT_EVERY_NS = 97 * S_NS


@lru_cache(maxsize=1)
def recorded_events() -> tuple[Any, ...]:
    from tests.realdata import shared_file

    perp0 = shared_file("binance-ws/usdm/btcusdt_20230404.dat.gz")
    perp1 = shared_file("binance-ws/usdm/btcusdt_20230405.dat.gz")
    spot = shared_file("binance-ws/spot/btcusdt_20230405.dat.gz")
    evs = capture_events([(perp0, None), (perp1, None), (spot, "BTCUSDT.SPOT")])
    out: list[Any] = []
    last_px = None
    nxt = None
    for ev in evs:
        if nxt is None:
            nxt = (ev.ts_ns // EXPLICIT_EVERY_NS + 1) * EXPLICIT_EVERY_NS
        if ev.ts_ns >= nxt and last_px is not None:
            out.append(FundingSettlement("paper", "BTCUSDT", nxt, 0.0001, 8, last_px))
            nxt += EXPLICIT_EVERY_NS
        if isinstance(ev, MarkPrice):
            ev = dataclasses.replace(
                ev, next_funding_ts_ns=(ev.ts_ns // (60 * S_NS) + 1) * 60 * S_NS
            )
        if isinstance(ev, Trade) and ev.symbol == "BTCUSDT":
            last_px = ev.price
        out.append(ev)
    return tuple(out)


def make(path: Path, **kw: Any) -> DurablePaperVenue:
    return DurablePaperVenue(path, paper_instruments("paper", PAIRS), CASH, leverage=LEV, **kw)


class Driver:
    """Feeds the recorded events and a fixed script of orders and cancels (decided from the
    events seen, never from the venue's state) to a venue; ``stops`` maps an event index to
    what happens to the venue after it: ``ckpt`` (checkpoint), ``reopen`` (close and open a
    new venue on the journal) or ``kill`` (drop the connection without committing pending
    events, open a new venue and re-feed from its ``source_seq`` as a restarted feed does)."""

    def __init__(self, path: Path, stops: dict[int, str] | None = None, **kw: Any) -> None:
        self.path, self.stops, self.kw = path, dict(stops or {}), kw
        self.top: dict[str, BookTop] = {}
        self.last: dict[str, float] = {}
        self.n_orders = 0
        self.placed: list[Order] = []
        self.restores: list[tuple[int, set[str]]] = []  # (clock, open client ids) at a reopen
        self.rejected = 0
        self.cancels = 0
        self.v: DurablePaperVenue

    async def run(self, events: tuple[Any, ...], until: int | None = None) -> DurablePaperVenue:
        self.v = make(self.path, **self.kw)
        await self.v.open()
        i = self.v.source_seq + 1
        end = len(events) if until is None else until
        while i < end:
            ev = events[i]
            self.v.on_market(ev, i)
            if isinstance(ev, BookTop):
                self.top[ev.symbol] = ev
            elif isinstance(ev, Trade):
                self.last[ev.symbol] = ev.price
            if i % 400 == 399 and len(self.top) == 2 and len(self.last) == 2:
                await self.order(i // 400)
            if i % 400 == 199 and self.n_orders >= 3:
                await self.cancel(i // 400)
            stop = self.stops.pop(i, None)  # once: a killed venue re-feeds past it
            if stop == "ckpt":
                self.v.checkpoint()
            elif stop in ("reopen", "kill"):
                if stop == "reopen":
                    await self.v.close()
                else:
                    self.v._db.close()  # SIGKILL: pending events were never committed
                self.v = make(self.path, **self.kw)
                await self.v.open()
                opened = {o.client_order_id for o in await self.v.open_orders()}
                self.restores.append((self.v.inner.now_ns, opened))
                if stop == "kill":
                    assert self.v.source_seq < i  # something was lost
                    i = self.v.source_seq  # re-feed what was lost
                else:
                    assert self.v.source_seq == i
            i += 1
        return self.v

    async def order(self, k: int) -> None:
        perp, spot = self.top["BTCUSDT"], self.top["BTCUSDT.SPOT"]
        px = self.last["BTCUSDT"]
        self.n_orders += 1
        cid = f"o{self.n_orders}"
        kind = k % 8
        o: Order
        if kind == 0:  # rests below the bid; fills when trades print through it
            o = Order(
                cid, "paper", "BTCUSDT", Side.BUY, 0.021, OrderType.LIMIT, round(perp.bid - 1, 1)
            )
        elif kind == 1:
            o = Order(
                cid, "paper", "BTCUSDT", Side.SELL, 0.021, OrderType.LIMIT, round(perp.ask + 1, 1)
            )
        elif kind == 2:  # takes the top
            o = Order(cid, "paper", "BTCUSDT", Side.BUY if k % 16 < 8 else Side.SELL, 0.013)
        elif kind == 3:  # a stop that triggers on a later trade
            o = Order(
                cid, "paper", "BTCUSDT", Side.SELL, 0.01, OrderType.STOP_MARKET,
                stop_price=round(px - 3, 1),
            )  # fmt: skip
        elif kind == 4:  # spot bid, resting
            o = Order(
                cid, "paper", "BTCUSDT.SPOT", Side.BUY, 0.01, OrderType.LIMIT,
                round(spot.bid - 1, 2),
            )  # fmt: skip
        elif kind == 5:  # spot sale: rejected while nothing is held
            o = Order(cid, "paper", "BTCUSDT.SPOT", Side.SELL, 0.004)
        elif kind == 6:  # post-only that would cross: rejected
            o = Order(
                cid, "paper", "BTCUSDT", Side.BUY, 0.01, OrderType.LIMIT, round(perp.ask + 1, 1),
                tif=TimeInForce.POST_ONLY,
            )  # fmt: skip
        else:  # reduce-only taker
            o = Order(cid, "paper", "BTCUSDT", Side.SELL, 0.02, reduce_only=True)
        st = await self.v.place(o)
        if st.status is OrderStatus.REJECTED:
            self.rejected += 1
        self.placed.append(o)
        if k % 5 == 0:  # the same order again: idempotent, no journal row
            assert (await self.v.place(o)) == await self.v.query(cid, o.symbol)

    async def cancel(self, k: int) -> None:
        if k % 7 == 3:  # an order that is no longer open: its final state, journaled all the same
            target = self.placed[0]
        else:
            open_ = await self.v.open_orders()
            if not open_ or k % 4:
                return
            target = next(o for o in self.placed if o.client_order_id == open_[0].client_order_id)
        await self.v.cancel(target.client_order_id, target.symbol)
        self.cancels += 1


async def snapshot(v: DurablePaperVenue) -> dict[str, Any]:
    st = v.inner.state()
    json.dumps(st, allow_nan=False)  # strict JSON
    acc = v.inner.account
    return {
        "state": st,
        "balances": await v.balances(),
        "positions": await v.positions(),
        "open_orders": await v.open_orders(),
        "orders": [await v.query(o[0][0], o[0][2]) for o in st["orders"]],
        "executions": await v.executions_since(0),
        "funding": await v.funding_payments(0),
        "recent": v.recent_trades(SYMS),
        "source_seq": v.source_seq,
        "lots": [acc.lots(s) for s in SYMS],
        "breakdown": acc.breakdown(),
        "equity": acc.equity_usd,
    }


async def reopened(path: Path, **kw: Any) -> dict[str, Any]:
    """The state of a venue opened on (a copy of) the journal at ``path``."""
    cp = path.with_name(path.stem + f"-copy{len(list(path.parent.iterdir()))}.sqlite")
    shutil.copyfile(path, cp)
    wal = Path(f"{path}-wal")  # what a killed process committed may still be in the WAL
    if wal.exists():
        shutil.copyfile(wal, f"{cp}-wal")
    v = make(cp, checkpoint_every=0, **kw)
    await v.open()
    try:
        return await snapshot(v)
    finally:
        await v.close()


def rows(path: Path) -> list[tuple[int, str]]:
    con = sqlite3.connect(path)
    try:
        return con.execute("SELECT seq, kind FROM journal ORDER BY seq").fetchall()
    finally:
        con.close()


@pytest.mark.parametrize("fees", ["default", "binanceusdm"])
def test_checkpointed_journal_restores_exactly_what_the_full_replay_gives(
    tmp_path: Path, fees: str
) -> None:
    """``default``: every fee in USD (the backtest fee model); ``binanceusdm``:
    ``FeeModel.for_venue`` (`run --paper` on live data), a spot buy's commission taken in BTC
    — the checkpoints carry which fills had one."""
    events = recorded_events()
    n = len(events)
    costs = {} if fees == "default" else {"costs": Costs(fees=FeeModel.for_venue(fees))}

    async def main() -> None:
        # the reference: one journal of inputs, replayed whole
        ref = Driver(tmp_path / "ref.sqlite", checkpoint_every=0, **costs)
        v = await ref.run(events)
        live = await snapshot(v)
        await v.close()
        assert len(rows(tmp_path / "ref.sqlite")) > 20_000  # no checkpoint was written
        replayed = await reopened(tmp_path / "ref.sqlite", **costs)
        assert replayed == live

        # the same inputs with automatic checkpoints (every 3,000 rows), explicit ones (two
        # in a row among them), clean restarts and kills between checkpoints
        stops = {
            7_001: "ckpt",
            15_000: "reopen",
            23_456: "kill",
            30_011: "ckpt",
            30_012: "ckpt",
            41_000: "kill",
            52_777: "reopen",
            n - 2_000: "ckpt",
        }
        ck = Driver(
            tmp_path / "ck.sqlite", stops, checkpoint_every=3_000, close_checkpoint_min=1, **costs
        )
        v = await ck.run(events)
        # a venue that restarted from its checkpoints went on trading exactly the same
        assert await snapshot(v) == live
        await v.close()
        assert rows(tmp_path / "ck.sqlite")[0][1] == "checkpoint"
        assert len(rows(tmp_path / "ck.sqlite")) == 1  # close checkpointed the tail
        assert await reopened(tmp_path / "ck.sqlite", **costs) == replayed

        # the script exercised what a checkpoint must carry
        execs = replayed["executions"]
        assert len(execs) > 40
        assert len({e.trade_id for e in execs}) == len(execs)
        assert any(e.trade_id.endswith(".1") for e in execs)  # partial fills
        marks_clock = [f for f in replayed["funding"] if f.ts_ns % (60 * S_NS) == 0]
        explicit = [f for f in replayed["funding"] if f.ts_ns % EXPLICIT_EVERY_NS == 0]
        assert len(marks_clock) >= 3 and len(explicit) >= 3
        assert ref.rejected >= 5 and ref.cancels >= 10
        assert replayed["open_orders"]
        # orders resting across a restart filled afterwards
        later = {
            e.client_order_id
            for at, opened in ck.restores
            for e in execs
            if e.client_order_id in opened and e.ts_ns > at
        }
        assert len(later) >= 2
        # the spot buys (resting bids: makers, Binance spot maker 0.1 %) paid in BTC with the
        # Binance fees, 0.1 % of each fill's quantity (0.01 × 0.001 = 0.00001 BTC for a whole
        # order), worth that × the fill price; nothing else did
        spot_buys = [e for e in execs if e.symbol == "BTCUSDT.SPOT" and e.side is Side.BUY]
        assert spot_buys
        for e in execs:
            if fees == "default" or e not in spot_buys:
                assert e.fee_qty_base == 0
            else:
                assert e.fee_qty_base == e.qty_base * Decimal("0.001")
                assert e.fee_usd == e.fee_qty_base * e.price
        # positions = Σ (signed fill quantity − commission in the coin), summed here
        qty: dict[str, Decimal] = {}
        for e in execs:
            qty[e.symbol] = qty.get(e.symbol, Decimal(0)) + (
                e.qty_base if e.side is Side.BUY else -e.qty_base
            ) - e.fee_qty_base
        assert {p.symbol: p.qty_base for p in replayed["positions"]} == {
            s: q for s, q in qty.items() if q != 0
        }

    asyncio.run(main())


CRASH_STEPS = {
    # step: (the SQL statement the child dies at the start of, committed?)
    "before-begin": ("BEGIN", False),
    "before-delete": ("DELETE", False),  # the checkpoint row is inserted
    "before-commit": ("COMMIT", False),  # the earlier rows are deleted
    "before-vacuum": ("VACUUM", True),
    "before-wal-truncate": ("PRAGMA wal_checkpoint", True),
    "returned": (None, True),
}
PENDING = 700  # events applied but not yet committed when the checkpoint starts


def child(journal: str, events_pkl: str, step: str) -> None:
    """Open the journal, apply ``PENDING`` events without committing them, checkpoint, and
    die (``os._exit``, no cleanup) at the start of the step's statement."""
    evs = pickle.loads(Path(events_pkl).read_bytes())

    async def main() -> None:
        v = make(Path(journal), checkpoint_every=0, flush_every=10**9)
        await v.open()
        start = v.source_seq + 1
        for j, ev in enumerate(evs):
            v.on_market(ev, start + j)
        sql, _ = CRASH_STEPS[step]
        if sql is not None:

            def trace(stmt: str) -> None:
                if stmt.startswith(sql):
                    os._exit(17)

            v._db.set_trace_callback(trace)
        v.checkpoint()
        os._exit(17 if sql is None else 3)  # 3: the statement never ran

    asyncio.run(main())


def test_a_crash_at_any_step_of_a_checkpoint_leaves_the_old_or_the_new_journal(
    tmp_path: Path,
) -> None:
    events = recorded_events()
    cut = 30_000

    async def prepare() -> tuple[dict[str, Any], dict[str, Any]]:
        # a journal with an earlier checkpoint and a tail of rows after it
        d = Driver(tmp_path / "base.sqlite", {4_000: "ckpt"}, checkpoint_every=0)
        v = await d.run(events, until=cut)
        await v.close()
        old = await reopened(tmp_path / "base.sqlite")
        shutil.copyfile(tmp_path / "base.sqlite", tmp_path / "new.sqlite")
        v = make(tmp_path / "new.sqlite", checkpoint_every=0)
        await v.open()
        assert v.source_seq == cut - 1
        for j in range(PENDING):
            v.on_market(events[cut + j], cut + j)
        v.flush()
        new = await snapshot(v)
        await v.close()
        return old, new

    old, new = asyncio.run(prepare())
    assert old["executions"] != new["executions"] or old["recent"] != new["recent"]
    base_rows = rows(tmp_path / "base.sqlite")
    assert base_rows[0][1] == "checkpoint" and len(base_rows) > 5_000
    pkl = tmp_path / "pending.pkl"
    pkl.write_bytes(pickle.dumps(list(events[cut : cut + PENDING])))
    for step, (_, committed) in CRASH_STEPS.items():
        j = tmp_path / f"crash-{step}.sqlite"
        shutil.copyfile(tmp_path / "base.sqlite", j)
        res = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "child", str(j), str(pkl), step],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=300,
        )
        assert res.returncode == 17, (step, res.returncode, res.stderr[-2000:])
        after = rows(j)
        if committed:
            assert [k for _, k in after] == ["checkpoint"], step
            assert asyncio.run(reopened(j)) == new, step
        else:
            assert after == base_rows, step
            assert asyncio.run(reopened(j)) == old, step


def test_a_checkpoint_shrinks_the_journal_and_later_rows_follow_it(tmp_path: Path) -> None:
    events = recorded_events()
    path = tmp_path / "j.sqlite"

    def size() -> int:
        return sum(p.stat().st_size for p in tmp_path.glob("j.sqlite*"))

    async def main() -> None:
        v = await Driver(path, checkpoint_every=0).run(events, until=20_000)
        await v.close()
        before = rows(path)
        bytes_before = size()
        v = make(path, checkpoint_every=0)
        await v.open()
        v.checkpoint()
        assert [k for _, k in rows(path)] == ["checkpoint"]
        assert rows(path)[0][0] > before[-1][0]  # later than every row it replaced
        assert (tmp_path / "j.sqlite-wal").stat().st_size == 0
        assert size() < bytes_before / 2
        for i in range(20_000, 20_010):  # ten more rows: one flush after each event
            v.on_market(events[i], i)
            v.flush()
        assert len(rows(path)) == 1 + 10
        live = await snapshot(v)
        await v.close()  # a short tail: left as it is
        assert len(rows(path)) == 1 + 10
        assert await reopened(path) == live

        # automatic: the journal never holds much more than checkpoint_every rows, and an
        # open that replays that many ends with a checkpoint
        auto = tmp_path / "auto.sqlite"
        seen: list[int] = []
        v = await Driver(auto, checkpoint_every=2_000, flush_every=300).run(events, until=9_000)
        seen.append(len(rows(auto)))
        for i in range(9_000, 15_000):
            v.on_market(events[i], i)
            if i % 250 == 0:
                seen.append(len(rows(auto)))
        await v.close()
        assert v.checkpoints >= 2 and max(seen) <= 1 + 2_000 + 300
        plain = tmp_path / "plain.sqlite"
        v = await Driver(plain, checkpoint_every=0).run(events, until=9_000)
        await v.close()
        n_plain = len(rows(plain))
        assert n_plain > 2_000
        ref = await reopened(plain)
        v = make(plain, checkpoint_every=2_000)
        await v.open()
        assert [k for _, k in rows(plain)] == ["checkpoint"]
        assert await snapshot(v) == ref
        await v.close()

    asyncio.run(main())


def test_an_unknown_checkpoint_version_is_one_line_naming_the_journal(tmp_path: Path) -> None:
    events = recorded_events()
    path = tmp_path / "j.sqlite"

    async def main() -> None:
        v = await Driver(path, checkpoint_every=0).run(events, until=3_000)
        v.checkpoint()
        await v.close()

    asyncio.run(main())
    con = sqlite3.connect(path)
    ((seq, payload),) = con.execute("SELECT seq, payload FROM journal").fetchall()
    good = json.loads(payload)
    assert good["version"] == CHECKPOINT_VERSION and good["paper"]["version"] == PAPER_STATE_VERSION

    def open_with(d: dict[str, Any]) -> str:
        con.execute("UPDATE journal SET payload = ? WHERE seq = ?", (json.dumps(d), seq))
        con.commit()
        with pytest.raises(RunnerError) as e:
            asyncio.run(make(path).open())
        return str(e.value)

    msg = open_with({**good, "version": 999})
    assert msg == (
        f"paper journal {path}: checkpoint row {seq} has format version 999; "
        f"this code reads version {CHECKPOINT_VERSION}"
    )
    msg = open_with({**good, "paper": {**good["paper"], "version": 999}})
    assert PAPER_STATE_READS == (1, 2) and PAPER_STATE_VERSION == 2
    assert msg == (
        f"paper journal {path}: checkpoint row {seq}: paper state: unknown format version 999 "
        "(this code reads versions 1, 2; writes 2)"
    )
    assert "\n" not in msg
    con.close()


def test_paper_state_refuses_what_it_cannot_carry() -> None:
    inst = paper_instruments("paper", PAIRS)
    v = PaperVenue(inst, CASH)
    v.on_event(BookTop("paper", "BTCUSDT", 1, 100.0, 1.0, 100.1, 1.0))
    v.submit(Order("a", "paper", "BTCUSDT", Side.BUY, 0.01))
    st = v.state()
    with pytest.raises(VenueError, match=r"^paper state: restore needs a fresh venue$"):
        v.restore(st)
    with pytest.raises(VenueError, match=r"^paper state: hedge/margin mode False/cross, "):
        PaperVenue(inst, CASH, hedge_mode=True).restore(st)
    with pytest.raises(VenueError, match=r"^paper state: symbols \['BTCUSDT.SPOT'\] are not"):
        PaperVenue(inst[:1], CASH).restore(st)
    # a field the layout does not know (an attribute the account gained) fails loudly
    v.account._new_field = 1  # type: ignore[attr-defined]
    with pytest.raises(VenueError, match=r"Account fields changed \(new \['_new_field'\]"):
        v.state()


def test_paper_state_carries_the_commissions_taken_in_the_coin_and_reads_version_1() -> None:
    """A spot buy of 0.01 at the ask 25,000.01 with the Binance fees (spot taker 0.1 %, in
    BTC): 0.01 × 0.001 = 0.00001 BTC, worth 0.00001 × 25,000.01 = 0.2500001 USD; held
    0.00999. Its state restores with that commission; a version-1 state (before
    ``fee_base``: every fee was paid in USD) restores with none."""
    inst = paper_instruments("paper", PAIRS)
    costs = Costs(fees=FeeModel.for_venue("binanceusdm"))
    v = PaperVenue(inst, CASH, costs=costs)
    v.on_event(BookTop("paper", "BTCUSDT.SPOT", 1, 25000.0, 1.0, 25000.01, 1.0))
    v.submit(Order("b", "paper", "BTCUSDT.SPOT", Side.BUY, 0.01))
    (f,) = v.fill_log
    assert (f.fee_usd, v.fill_fee_qty_base(0)) == (Decimal("0.2500001"), Decimal("0.00001"))
    assert v.account.position("BTCUSDT.SPOT").qty_base == Decimal("0.00999")
    st = json.loads(json.dumps(v.state()))
    assert st["version"] == 2
    assert [(i, Decimal(b)) for i, b in st["fee_base"]] == [(0, Decimal("0.00001"))]
    w = PaperVenue(inst, CASH, costs=costs)
    w.restore(st)
    assert w.state() == st and w.fill_fee_qty_base(0) == Decimal("0.00001")
    assert w.account.position("BTCUSDT.SPOT").qty_base == Decimal("0.00999")
    # version 1: the same layout without fee_base
    old = PaperVenue(inst, CASH)
    old.on_event(BookTop("paper", "BTCUSDT.SPOT", 1, 25000.0, 1.0, 25000.01, 1.0))
    old.submit(Order("b", "paper", "BTCUSDT.SPOT", Side.BUY, 0.01))
    v1 = {k: x for k, x in old.state().items() if k != "fee_base"} | {"version": 1}
    w1 = PaperVenue(inst, CASH, costs=costs)
    w1.restore(v1)
    assert w1.fill_fee_qty_base(0) == 0
    assert w1.account.position("BTCUSDT.SPOT").qty_base == Decimal("0.01")
    assert w1.state() == {**v1, "version": 2, "fee_base": []}
    bad = {**st, "fee_base": [[1, "0.00001"]]}
    with pytest.raises(VenueError, match=r"^paper state: fee_base names a fill that is not"):
        PaperVenue(inst, CASH, costs=costs).restore(bad)


if __name__ == "__main__" and sys.argv[1:2] == ["child"]:
    child(*sys.argv[2:5])
