"""Crash test: the paper runner is SIGKILLed at random moments over more than 50 cycles and
restarted each time; afterwards no fill is lost or doubled, no order was sent twice, and the
ledger's equity equals the equity recomputed from its fills and funding.

Market data: the real Binance captures of 2023-04-05 (USD-M BTCUSDT perp + spot BTCUSDT,
``shared/data/binance-ws``) replayed at 2,000 events/s, with a synthetic funding settlement of
0.0001 every 5 s of replay time (so funding is booked during the run; the capture spans
7 minutes and holds none). Signals: a fixed schedule, 30 % annualised for three cycles then
0 % for three (enter, hold, exit, repeat), so pairs open and close all through the run.

The runner child is this file run as a script (``python tests/test_crash.py child DIR N``).
"""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if __name__ == "__main__":  # child: make the repo importable when run as a script
    sys.path.insert(0, str(ROOT))

from perpdesk.domain import FundingSettlement, Side, Trade  # noqa: E402
from perpdesk.live.runner import (  # noqa: E402
    CarrySignal,
    DurablePaperVenue,
    PairSpec,
    Runner,
    RunnerConfig,
    paper_instruments,
    replay_feed,
)
from perpdesk.risk.safeguards import Limits  # noqa: E402
from perpdesk.store import Ledger, init_db  # noqa: E402
from perpdesk.strategies.carry import CarryRules  # noqa: E402

PAIRS = (PairSpec("BTCUSDT", "BTCUSDT.SPOT"),)
CYCLE_S = 0.06
TARGET_CYCLES = 55
BANKROLL = Decimal(100_000)
FUNDING_EVERY_NS = 5 * 1_000_000_000
FUNDING_RATE = 0.0001


class ScheduleSignals:
    """30 % annualised for cycles 0–2, 0 % for 3–5, and so on (24 h volume 1e9 USD)."""

    async def signals(self, cycle: int) -> dict[str, CarrySignal]:
        return {"BTCUSDT": CarrySignal(30.0 if (cycle // 3) % 2 == 0 else 0.0, 1e9)}


def runner_config(d: Path) -> RunnerConfig:
    return RunnerConfig(
        mode="paper",
        run_id="crash",
        pairs=PAIRS,
        bankroll_usd=BANKROLL,
        cycle_s=CYCLE_S,
        cycle_timeout_s=2.0,
        leg_fill_timeout_s=0.5,
        unwind_timeout_s=1.0,
        poll_s=0.01,
        vpin_bucket_usd=200_000.0,
        vpin_n_buckets=5,
        # crash safety is under test here, not the toxicity gate (tests/test_runner.py): on
        # a loaded machine the killed children replay too little of the capture to warm VPIN
        require_warm_vpin=False,
        snapshot_path=d / "state.json",
    )


def open_venue(d: Path) -> DurablePaperVenue:
    return DurablePaperVenue(d / "paper.sqlite", paper_instruments("paper", PAIRS), BANKROLL)


async def child(d: Path, until_cycle: int) -> None:
    events = pickle.loads((d / "events.pkl").read_bytes())
    venue = open_venue(d)
    await venue.open()
    stop = asyncio.Event()
    with Ledger(f"sqlite:///{d / 'ledger.sqlite'}") as ledger:
        runner = Runner(runner_config(d), venue, ledger, Limits(), CarryRules(), ScheduleSignals())
        feed = asyncio.ensure_future(replay_feed(venue, events, 2000.0))

        def on_cycle(k: int, status: str) -> None:
            print(f"E {k} {status}", flush=True)
            if k >= until_cycle:
                stop.set()

        await runner.run(stop=stop, on_cycle=on_cycle)
        feed.cancel()
        await venue.close()


def build_events(d: Path) -> int:
    from perpdesk.live.runner import capture_events
    from tests.realdata import shared_file

    perp = shared_file("binance-ws/usdm/btcusdt_20230405.dat.gz")
    spot = shared_file("binance-ws/spot/btcusdt_20230405.dat.gz")
    events = capture_events([(perp, None), (spot, "BTCUSDT.SPOT")])
    out, last_px, next_fund = [], None, None
    for ev in events:
        if next_fund is None:
            next_fund = (ev.ts_ns // FUNDING_EVERY_NS + 1) * FUNDING_EVERY_NS
        if ev.ts_ns >= next_fund and last_px is not None:
            out.append(FundingSettlement("paper", "BTCUSDT", next_fund, FUNDING_RATE, 8, last_px))
            next_fund += FUNDING_EVERY_NS
        if isinstance(ev, Trade) and ev.symbol == "BTCUSDT":
            last_px = ev.price
        out.append(ev)
    (d / "events.pkl").write_bytes(pickle.dumps(out))
    return len(out)


def _spawn(d: Path, until: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "child", str(d), str(until)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def _last_cycle(d: Path) -> int:
    import sqlite3

    con = sqlite3.connect(d / "ledger.sqlite")
    try:
        row = con.execute(
            "SELECT max(CAST(json_extract(data, '$.cycle') AS INTEGER)) FROM events "
            "WHERE kind = 'cycle_end'"
        ).fetchone()
        return int(row[0] or 0)
    finally:
        con.close()


def test_sigkill_at_random_moments_loses_and_doubles_nothing(tmp_path: Path) -> None:
    d = tmp_path
    build_events(d)
    init_db(f"sqlite:///{d / 'ledger.sqlite'}")
    rng = random.Random(20240719)
    kills = cycling_kills = 0
    t_start = time.monotonic()
    while _last_cycle(d) < TARGET_CYCLES:
        assert time.monotonic() - t_start < 240, "crash loop is not making progress"
        p = _spawn(d, 10**9)
        if rng.random() < 0.2:  # kill during start-up / reconciliation
            time.sleep(rng.uniform(0.3, 1.2))
        else:  # kill inside the cycles, at a random phase
            assert p.stdout is not None
            line = p.stdout.readline()
            assert line.startswith("E "), p.stderr.read() if p.stderr else line
            time.sleep(rng.uniform(0.0, 6 * CYCLE_S))
            cycling_kills += 1
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        assert p.returncode == -signal.SIGKILL
        kills += 1
    # a last clean run: reconciles after the final kill and trades a few more cycles
    final = _last_cycle(d) + 4
    p = _spawn(d, final)
    _out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err[-2000:]

    assert kills >= 10
    print(f"{kills} kills ({cycling_kills} inside cycles), {final} cycles")
    ledger = Ledger(f"sqlite:///{d / 'ledger.sqlite'}")
    import sqlite3

    con = sqlite3.connect(d / "ledger.sqlite")
    kinds = Counter(k for (k,) in con.execute("SELECT kind FROM events"))
    ends = {
        int(c)
        for (c,) in con.execute(
            "SELECT json_extract(data, '$.cycle') FROM events WHERE kind = 'cycle_end'"
        )
    }
    assert ends == set(range(1, final + 1)), "every cycle ran to its end (once re-run)"
    assert final > 50
    assert kills + 1 >= kinds["reconciled"] >= cycling_kills + 1
    assert kinds["reconcile_mismatch"] == 0
    assert kinds["cycle_error"] == 0
    assert kinds["safeguard_reject"] == 0  # every close is checked at the position's own mark

    # the venue's own record, rebuilt from its journal in a fresh process state
    venue = open_venue(d)
    asyncio.run(venue.open())
    execs = asyncio.run(venue.executions_since(0))
    ledger_fills = con.execute(
        "SELECT trade_id, client_order_id, side, qty_base, price, fee_usd, symbol FROM fills"
    ).fetchall()
    assert len(execs) >= 8, "the run traded"
    # no fill lost, none doubled: the same trade ids, once each, with the same numbers
    assert len({r[0] for r in ledger_fills}) == len(ledger_fills)
    assert {
        r[0]: (r[1], r[2], Decimal(r[3]), Decimal(r[4]), Decimal(r[5])) for r in ledger_fills
    } == {
        e.trade_id: (e.client_order_id, e.side.value, e.qty_base, e.price, e.fee_usd) for e in execs
    }
    # no order sent twice: one venue order per client id, each recorded in the ledger
    jcon = sqlite3.connect(d / "paper.sqlite")
    venue_ids = [
        json.loads(o)["client_order_id"]
        for (o,) in jcon.execute("SELECT payload FROM journal WHERE kind = 'place'")
    ]
    jcon.close()
    assert len(venue_ids) == len(set(venue_ids))
    ledger_orders = dict(con.execute("SELECT client_order_id, status FROM orders"))
    assert set(venue_ids) <= set(ledger_orders)
    for cid, status in ledger_orders.items():
        if cid not in venue_ids:
            assert status == "rejected", (cid, status)
    # positions: Σ signed fill quantities (computed here) = venue = ledger, and hedged
    qty: dict[str, Decimal] = {}
    for _tid, _cid, side, q, _p, _f, sym in ledger_fills:
        signed = Decimal(q) if side == Side.BUY.value else -Decimal(q)
        qty[sym] = qty.get(sym, Decimal(0)) + signed
    venue_pos = {p.symbol: p.qty_base for p in asyncio.run(venue.positions())}
    for sym in ("BTCUSDT", "BTCUSDT.SPOT"):
        assert qty.get(sym, Decimal(0)) == venue_pos.get(sym, Decimal(0)), sym
    assert qty.get("BTCUSDT", Decimal(0)) == -qty.get("BTCUSDT.SPOT", Decimal(0))
    # funding: every settlement the venue booked is in the ledger once
    fund = con.execute("SELECT ts_ns, amount_usd FROM funding_payments").fetchall()
    assert sorted((t, Decimal(a)) for t, a in fund) == sorted(
        (f.ts_ns, f.amount_usd) for f in venue.inner.funding
    )
    assert len(fund) >= 1
    print(f"{len(execs)} fills, {len(fund)} funding payments, events {dict(kinds)}")
    # equity: positions table = Σ transfers + Σ fills (−q·p − fee) + Σ funding + Σ qty × mark
    rep = ledger.audit()
    assert rep.ok, rep.mismatches
    marks = dict(con.execute("SELECT symbol, mark_price FROM positions"))
    cash = BANKROLL + sum(Decimal(a) for _t, a in fund)
    for _t, _c, side, q, p, f, _s in ledger_fills:
        signed = Decimal(q) if side == "buy" else -Decimal(q)
        cash += -signed * Decimal(p) - Decimal(f)
    by_sym = {
        "BTCUSDT": qty.get("BTCUSDT", Decimal(0)),
        "BTCUSDT.SPOT": qty.get("BTCUSDT.SPOT", Decimal(0)),
    }
    expect = cash + sum(by_sym[s] * Decimal(m) for s, m in marks.items() if m is not None)
    assert ledger.status().equity_usd == expect == rep.recomputed_equity_usd
    con.close()
    ledger.close()
    asyncio.run(venue.close())


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "child":
    asyncio.run(child(Path(sys.argv[2]), int(sys.argv[3])))
