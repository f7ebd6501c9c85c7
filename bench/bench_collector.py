"""Throughput of the tick collector (perpdesk.live.collector) on replayed real frames.

Run: ``.venv/bin/python bench/bench_collector.py [--messages 3000000] [--e2e-seconds 5]``;
``--quick --repeat 3``: the processing path only, three times (best and range).

Target (issue 6): 100 × the CLRS load of 800 trades/s + 15,000 bookTicker updates/s over
20 symbols, i.e. ≥ 1.58 M messages/s through the processing path on one core.

1. **Processing path, no sockets**: the recorded USD-M frames of
   ``shared/data/binance-ws/usdm/btcusdt_20240719.gz`` (``@trade`` and
   ``@bookTicker``) are repeated and rewritten across 20 symbols (symbol names replaced;
   trade frames rewritten as ``@aggTrade`` frames with ``a = f = l = t``; ids shifted per
   repetition so each symbol's ids stay contiguous / increasing), mixed 800 : 15,000
   trades : book updates and interleaved across symbols. The timed loop is what the socket
   loop does per frame (``feed``: append bytes + receive stamp) plus ``process`` (numba
   scan, sequence checks, per-symbol tables) every ``--chunk`` frames and ``flush``
   (``Catalog.append``: one new part file per partition, atomic) every ``--flush-rows``
   rows and at the end. The compaction of the parts into the daily files (at UTC
   midnight and at stop, not on the hot path) is timed separately.
2. **Flush cost as the day fills**: the rows of (1) written into an empty catalog in
   ``--flushes`` successive flushes (every symbol's slice each time), once with
   ``Catalog.append`` (parts: the collector) and once with ``Catalog.write`` (merge and
   rewrite the whole daily file: the collector before parts); rows/s per flush, early
   vs late in the day. Appends stay flat; rewrites fall as 1/k.
3. **End to end over loopback websockets**: ``tests/fake_ws.py`` serves the same kind of
   frames on 127.0.0.1 and ``TickCollector.run`` receives them (server and client in one
   process, on the same pinned core: the figure is a lower bound of the client alone).

The process is pinned to one CPU (``os.sched_setaffinity``) and pyarrow's pool has one
thread.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _timing import best_of  # bench/_timing.py (scripts run from bench/)

from perpdesk.data.catalog import Catalog
from perpdesk.live.collector import TickCollector
from tests.realdata import SHARED_DATA

TARGET = 1_580_000
TRADES_PER_S, BOOK_PER_S, N_SYMBOLS = 800, 15_000, 20
SOURCES = ("binance-ws/usdm/btcusdt_20240719.gz",)


def _recorded() -> tuple[list[dict], list[dict]]:
    trades, books = [], []
    for rel in SOURCES:
        with gzip.open(SHARED_DATA / rel, "rt") as fh:
            for line in fh:
                msg = json.loads(line.partition(" ")[2])
                s = msg.get("stream", "")
                if s.endswith("@trade"):
                    trades.append(msg["data"])
                elif s.endswith("@bookTicker"):
                    books.append(msg["data"])
    return trades, books


def build_frames(n_messages: int) -> tuple[list[bytes], list[bytes], list[str]]:
    """(aggTrade frames, bookTicker frames, symbols): real recorded frames rewritten
    across ``N_SYMBOLS`` symbols in the CLRS trade : book ratio (setup, not timed)."""
    trades, books = _recorded()
    symbols = [f"SYM{k:02d}USDT" for k in range(N_SYMBOLS)]
    n_trade = n_messages * TRADES_PER_S // (TRADES_PER_S + BOOK_PER_S)
    n_book = n_messages - n_trade
    t_out: list[bytes] = []
    b_out: list[bytes] = []
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    for j in range(n_trade):
        k, r = j % N_SYMBOLS, j // N_SYMBOLS
        d = trades[r % len(trades)]
        rep = r // len(trades)
        tid = 1_000_000 + r  # contiguous per symbol
        data = {
            "e": "aggTrade", "E": d["E"] + rep * 600_000, "a": tid, "s": symbols[k],
            "p": d["p"], "q": d["q"], "f": tid, "l": tid, "T": d["T"] + rep * 600_000,
            "m": d["m"],
        }  # fmt: skip
        t_out.append(dumps({"stream": f"{symbols[k].lower()}@aggTrade", "data": data}).encode())
    for j in range(n_book):
        k, r = j % N_SYMBOLS, j // N_SYMBOLS
        d = books[r % len(books)]
        rep = r // len(books)
        data = dict(d, s=symbols[k], u=d["u"] + rep * 10**9, E=d["E"] + rep * 600_000,
                    T=d["T"] + rep * 600_000)  # fmt: skip
        b_out.append(dumps({"stream": f"{symbols[k].lower()}@bookTicker", "data": data}).encode())
    return t_out, b_out, symbols


def _run(t_frames, b_frames, symbols, chunk: int, flush_rows: int, root: Path) -> dict:
    """Feed, process and flush the frames through a collector writing to ``root``."""
    col = TickCollector(symbols, root, kinds=("aggTrade", "bookTicker"), flush_rows=flush_rows)
    tconn, bconn = col.conns
    t_keep, t_stamp = tconn.raw.append, tconn.recv.append
    b_keep, b_stamp = bconn.raw.append, bconn.recv.append
    clock = time.time_ns
    per_chunk_t = max(1, chunk * len(t_frames) // len(b_frames))
    t0c, t0 = time.process_time(), time.perf_counter()
    t_parse = t_flush = 0.0
    ti = 0
    for s in range(0, len(b_frames), chunk):
        # what each connection's receive loop does per frame: keep the bytes, stamp them
        for raw in b_frames[s : s + chunk]:
            b_keep(raw)
            b_stamp(clock())
        te = len(t_frames) if s + chunk >= len(b_frames) else ti + per_chunk_t
        for raw in t_frames[ti:te]:
            t_keep(raw)
            t_stamp(clock())
        ti = te
        a = time.perf_counter()
        col.process()
        b = time.perf_counter()
        t_parse += b - a
        if col.pending_rows >= flush_rows:
            col.flush()
            t_flush += time.perf_counter() - b
    a = time.perf_counter()
    col.flush()
    t_flush += time.perf_counter() - a
    wall, cpu = time.perf_counter() - t0, time.process_time() - t0c
    return {"col": col, "wall": wall, "cpu": cpu, "parse": t_parse, "flush": t_flush}


def bench_processing(
    n: int, chunk: int, flush_rows: int, repeat: int = 1, quick: bool = False
) -> None:
    """Section 1 ``repeat`` times (fresh catalog each time; the best run is summarised);
    ``quick``: without the compaction and Parquet encode lines."""
    t_frames, b_frames, symbols = build_frames(n)
    total = len(t_frames) + len(b_frames)
    mb = (sum(map(len, t_frames)) + sum(map(len, b_frames))) / 1e6
    print(f"frames: {total:,} ({len(t_frames):,} aggTrade + {len(b_frames):,} bookTicker, "
          f"{N_SYMBOLS} symbols, {mb:.0f} MB JSON)")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        # warm-up (numba compile or cache load), not timed
        _run(t_frames[:2000], b_frames[:40000], symbols, chunk, flush_rows, Path(tmp) / "w")
        walls = []
        for k in range(repeat):
            root = Path(tmp) / f"c{k}"
            r = _run(t_frames, b_frames, symbols, chunk, flush_rows, root)
            col, wall = r["col"], r["wall"]
            walls.append(wall)
            st = col.stats
            rows = sum(st.rows_written.values())
            cat = Catalog(root)
            stored = sum(
                cat.read("binance", ds, s).num_rows
                for ds in ("agg_trades", "book_ticker")
                for s in symbols
            )
            assert rows == total == stored, (rows, total, stored)
            assert st.gaps == st.duplicates == st.out_of_order == st.malformed == 0
            rate = total / wall
            ok = "met" if rate >= TARGET else "NOT met"
            no_write = total / (wall - r["flush"])
            print(
                f"processing path: {wall:.2f} s wall ({r['cpu']:.2f} CPU s) for {total:,} frames "
                f"= {rate / 1e6:.2f} M messages/s (target {TARGET / 1e6:.2f} M/s: {ok}; "
                f"{total / r['cpu'] / 1e6:.2f} M per CPU second)\n"
                f"  feed loop {wall - r['parse'] - r['flush']:.2f} s, decode + sequence check + "
                f"buffer {r['parse']:.2f} s, flush (append part files) {r['flush']:.2f} s "
                f"({st.flushes} flushes); without the flush: {no_write / 1e6:.2f} M messages/s"
            )
            if k < repeat - 1:
                del col, r, cat
                shutil.rmtree(root)
        if repeat > 1:
            print(f"  best of {repeat}: {min(walls):.2f} s = {total / min(walls) / 1e6:.2f} M "
                  f"messages/s (range {total / max(walls) / 1e6:.2f}-"
                  f"{total / min(walls) / 1e6:.2f})")  # fmt: skip
        if quick:
            return
        a = time.perf_counter()
        col.compact()
        t_compact = time.perf_counter() - a
        print(f"  compaction of the parts into daily files (at midnight / stop, off the hot "
              f"path): {t_compact:.2f} s, {rows / t_compact / 1e6:.2f} M rows/s")  # fmt: skip
        assert sum(cat.read("binance", "book_ticker", s).num_rows for s in symbols) == len(b_frames)
        # what dictionary pages cost: one symbol's book_ticker partition re-encoded with
        # pyarrow's default (dictionary on every column) and with the catalog's choice
        table = cat.read("binance", "book_ticker", symbols[0])
        out = Path(tmp) / "x.parquet"
        for label, kw in (
            ("zstd, dictionary on all columns (pyarrow default)", {}),
            (
                "zstd, dictionary on prices only (the catalog)",
                {"use_dictionary": ["bid_px", "ask_px"]},
            ),
        ):
            t = best_of(lambda kw=kw: pq.write_table(table, out, compression="zstd", **kw))
            print(f"  Parquet encode, {label}: {t / table.num_rows * 1e9:.0f} ns/row, "
                  f"{out.stat().st_size / table.num_rows:.1f} B/row")  # fmt: skip


def bench_flush_growth(n: int, flushes: int) -> None:
    """Flush cost against the number of flushes already in the day (module docstring, 2)."""
    t_frames, b_frames, symbols = build_frames(n)
    with tempfile.TemporaryDirectory() as tmp:
        r = _run(t_frames, b_frames, symbols, 300_000, 10**9, Path(tmp) / "src")
        src = Catalog(Path(tmp) / "src")
        data = {
            (ds, s): src.read("binance", ds, s) for ds in ("agg_trades", "book_ticker")
            for s in symbols
        }  # fmt: skip
        del r
        results = {}
        for how in ("append", "write"):
            cat = Catalog(Path(tmp) / how)
            per: list[tuple[int, float]] = []
            for k in range(flushes):
                rows = 0
                a = time.perf_counter()
                for (ds, s), t in data.items():
                    lo, hi = t.num_rows * k // flushes, t.num_rows * (k + 1) // flushes
                    getattr(cat, how)("binance", ds, s, t.slice(lo, hi - lo))
                    rows += hi - lo
                per.append((rows, time.perf_counter() - a))
            results[how] = per
        q = max(1, flushes // 4)
        print(f"flush cost as the day fills ({sum(t.num_rows for t in data.values()):,} rows, "
              f"{len(data)} partitions, {flushes} flushes): rows/s of flushes")  # fmt: skip
        for how, label in (("append", "append parts (collector)"),
                           ("write", "merge + rewrite the daily file (before)")):  # fmt: skip
            per = results[how]
            spans = [(0, q), (flushes - q, flushes)]
            rates = [sum(x for x, _ in per[a:b]) / sum(y for _, y in per[a:b]) for a, b in spans]
            print(f"  {label}: flushes 1-{q} {rates[0] / 1e6:.2f} M rows/s, flushes "
                  f"{flushes - q + 1}-{flushes} {rates[1] / 1e6:.2f} M rows/s "
                  f"(late/early {rates[1] / rates[0]:.2f})")  # fmt: skip


_SERVER = """
import sys
sys.path[:0] = [{root!r}, {bench!r}]
from bench_collector import build_frames
from tests.fake_ws import FakeBinanceWS
t, b, syms = build_frames({n})
srv = FakeBinanceWS([(0, x.decode()) for x in b + t]).start()
print(srv.port, flush=True)
sys.stdin.read()
"""


def bench_e2e(seconds: float, n_frames: int = 600_000) -> None:
    """The collector (this process, pinned core) against tests/fake_ws.py in a child
    process on the other core(s); frames/s received, parsed and written."""
    root = Path(__file__).resolve().parents[1]
    code = _SERVER.format(root=str(root), bench=str(root / "bench"), n=n_frames)
    env = dict(os.environ)
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
        text=True,
    )  # fmt: skip
    try:
        if hasattr(os, "sched_setaffinity"):
            others = set(range(os.cpu_count() or 1)) - os.sched_getaffinity(0)
            if others:
                os.sched_setaffinity(child.pid, others)
        port = int(child.stdout.readline())
        symbols = [f"SYM{k:02d}USDT" for k in range(N_SYMBOLS)]
        with tempfile.TemporaryDirectory() as tmp:
            col = TickCollector(
                symbols, Path(tmp), ws_url=f"ws://127.0.0.1:{port}",
                kinds=("aggTrade", "bookTicker"), parse_interval_s=0.5,
            )  # fmt: skip

            done = [0.0]

            async def main() -> None:
                task = asyncio.create_task(col.run())
                t_start = time.perf_counter()
                while time.perf_counter() - t_start < seconds:
                    await asyncio.sleep(0.05)
                    col.refresh_counts()
                    if col.stats.messages >= n_frames:
                        break
                done[0] = time.perf_counter() - t_start
                col.stop()
                await task

            c0 = time.process_time()
            asyncio.run(main())
            cpu = time.process_time() - c0
            wall = done[0]
            n = col.stats.messages
            print(
                f"end to end (loopback websocket, fake server in a child process): {n:,} frames "
                f"received in {wall:.2f} s = {n / wall / 1e3:.0f} k messages/s "
                f"(collector CPU {cpu:.1f} s = {n / max(cpu, 1e-9) / 1e3:.0f} k frames per CPU s), "
                f"{sum(col.stats.rows_written.values()):,} rows written"
            )
    finally:
        child.kill()
        child.wait()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=3_000_000)
    ap.add_argument("--chunk", type=int, default=300_000, help="frames per process() call")
    ap.add_argument("--flush-rows", type=int, default=1_500_000)
    ap.add_argument("--e2e-seconds", type=float, default=20.0, help="time limit of the e2e run")
    ap.add_argument("--flushes", type=int, default=24, help="flushes of the flush-cost run")
    ap.add_argument("--flush-messages", type=int, default=1_500_000,
                    help="frames of the flush-cost run (0: skip it)")  # fmt: skip
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs of the processing path (best and range printed)")  # fmt: skip
    ap.add_argument(
        "--quick",
        action="store_true",
        help="processing path only (no compaction/encode lines, flush-cost or e2e)",
    )
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        print(f"pinned to CPU {cpu}")
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    bench_processing(args.messages, args.chunk, args.flush_rows, args.repeat, args.quick)
    if args.quick:
        return
    if args.flush_messages > 0:
        bench_flush_growth(args.flush_messages, args.flushes)
    if args.e2e_seconds > 0:
        bench_e2e(args.e2e_seconds)


if __name__ == "__main__":
    main()
