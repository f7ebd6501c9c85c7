"""Restart time of the paper venue's journal (``DurablePaperVenue``), with and without
checkpoints.

Run: ``.venv/bin/python bench/bench_paper_journal.py [--events 1000000] [--every 200000]``.

Events: the recorded Binance captures of 2023-04-04/05 under ``shared/data/binance-ws``
(USD-M BTCUSDT trades, book tops and marks, plus BTCUSDT spot), repeated with a time shift
to reach ``--events``; every 5,000 events a market order, the cancel of the previous limit and
a new limit 20 USD from the last trade (so the state carries orders, fills and funding). The
same inputs are journaled twice: without checkpoints (every row since the start is replayed
on open) and with a checkpoint every ``--every`` committed rows. Prints rows, bytes, the
restart time of each (best of 3) and the cost of one ``checkpoint()``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from perpdesk.domain import Order, OrderType, Side, Trade
from perpdesk.live.runner import (
    DurablePaperVenue,
    PairSpec,
    capture_events,
    paper_instruments,
)
from tests.realdata import SHARED_DATA

D = SHARED_DATA / "binance-ws"
INST = paper_instruments("paper", (PairSpec("BTCUSDT", "BTCUSDT.SPOT"),))


def events(base: list, n: int) -> Iterator:
    span = base[-1].ts_ns - base[0].ts_ns + 1_000_000_000
    k = i = 0
    while True:
        for ev in base:
            if i >= n:
                return
            yield ev if k == 0 else dataclasses.replace(ev, ts_ns=ev.ts_ns + k * span)
            i += 1
        k += 1


async def feed(path: Path, base: list, n: int, every: int) -> None:
    v = DurablePaperVenue(
        path, INST, "1000000", checkpoint_every=every, close_checkpoint_min=10**12
    )
    await v.open()
    last: dict[str, float] = {}
    placed: set[str] = set()
    for i, ev in enumerate(events(base, n)):
        v.on_market(ev, i)
        if isinstance(ev, Trade):
            last[ev.symbol] = ev.price
        if i % 5000 == 100 and "BTCUSDT" in last:
            side = Side.BUY if (i // 5000) % 2 == 0 else Side.SELL
            await v.place(Order(f"m{i}", "paper", "BTCUSDT", side, 0.01))
            if f"l{i - 5000}" in placed:
                await v.cancel(f"l{i - 5000}", "BTCUSDT")
            placed.add(f"l{i}")
            px = round(last["BTCUSDT"] + (-20 if side is Side.BUY else 20), 1)
            await v.place(Order(f"l{i}", "paper", "BTCUSDT", side, 0.01, OrderType.LIMIT, price=px))
    await v.close()


async def reopen(path: Path) -> float:
    v = DurablePaperVenue(path, INST, "1000000", checkpoint_every=0)
    t = time.perf_counter()
    await v.open()
    dt = time.perf_counter() - t
    await v.close()
    return dt


def size(p: Path) -> int:
    return sum(os.path.getsize(x) for x in (p, Path(f"{p}-wal")) if os.path.exists(x))


def rows(p: Path) -> int:
    c = sqlite3.connect(p)
    try:
        return int(c.execute("SELECT count(*) FROM journal").fetchone()[0])
    finally:
        c.close()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--every", type=int, default=200_000)
    a = ap.parse_args()
    base = capture_events(
        [
            (D / "usdm/btcusdt_20230404.dat.gz", None),
            (D / "usdm/btcusdt_20230405.dat.gz", None),
            (D / "spot/btcusdt_20230405.dat.gz", "BTCUSDT.SPOT"),
        ]
    )
    with tempfile.TemporaryDirectory() as tmp:
        plain, ck = Path(tmp) / "plain.sqlite", Path(tmp) / "ckpt.sqlite"
        await feed(plain, base, a.events, 0)
        await feed(ck, base, a.events, a.every)
        print(f"{a.events:,} events (checkpoint every {a.every:,} rows)")
        for name, p in (("no checkpoints", plain), ("checkpoints", ck)):
            best = min([await reopen(p) for _ in range(3)])
            print(
                f"  {name:15s}: {rows(p):>9,} rows, {size(p) / 1e6:6.1f} MB, "
                f"restart best of 3 {best:.2f} s"
            )
        v = DurablePaperVenue(ck, INST, "1000000", checkpoint_every=0)
        await v.open()
        t0 = time.perf_counter()
        v.checkpoint()
        dt = time.perf_counter() - t0
        await v.close()
        best = min([await reopen(ck) for _ in range(3)])
        print(
            f"  one checkpoint(): {dt * 1000:.0f} ms; then {rows(ck)} row, "
            f"{size(ck) / 1e6:.1f} MB, restart {best:.2f} s"
        )


if __name__ == "__main__":
    asyncio.run(main())
