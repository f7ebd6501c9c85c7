"""Replay throughput and peak memory of the backtest engine over 20 million trades.

Run: ``.venv/bin/python bench/bench_replay.py`` (first run writes the catalog to
``~/.cache/perpdesk-bench/replay`` — 4 symbols × 5 million trades over 10 days, merged
4-way — in a child process, so its memory does not count; ``--events N`` for a smaller run).

Rows printed (single thread, wall time of one pass):

- ``engine, no-op strategy``: a strategy that overrides nothing — the engine merges and
  walks every event but builds no Python object (nothing is subscribed);
- ``engine, on_trade subscribed``: a strategy with an empty ``on_trade`` — one ``Trade``
  object and one callback per event (the per-tick Python cost);
- ``engine, resting orders``: ``on_trade`` subscribed and a far limit order working on
  every symbol, so each trade also goes through the tick fill model's matching.

Peak memory is ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` after all passes.

What bounds each row: the no-op pass is Parquet decode + batch validation + the NumPy merge
(no per-event Python). With a subscribed handler the floor is one frozen-dataclass event
(~0.5-1 µs to construct here) plus ~0.5 µs of loop and state update per event. Past 1 M
events/s with per-tick Python: make the event types plain (non-frozen) slots classes (half
the construction cost), and move the walk over cold/pre-filtered events and quote updates
into a numba kernel that hands Python only the events that need a decision — or keep tick
work in kernels (features) and let strategies subscribe to bars, signals and timers.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np
import pyarrow as pa

from perpdesk.data.catalog import Catalog
from perpdesk.domain import Instrument, InstrumentKind, Side, Trade
from perpdesk.sim.engine import AccountConfig, run_backtest
from perpdesk.sim.fills import TickFillModel
from perpdesk.sim.replay import StreamSpec
from perpdesk.strategies.base import Context, Strategy

ROOT = Path("~/.cache/perpdesk-bench/replay").expanduser()
VENUE = "bench"
SYMBOLS = ["AAAUSDT", "BBBUSDT", "CCCUSDT", "DDDUSDT"]
T0 = int(np.datetime64("2024-01-01T00:00", "ns").astype(np.int64))
DAYS = 10
TARGET = 500_000.0


def generate(root: Path, n_total: int) -> None:
    """Random-walk trades, ``n_total`` split over the symbols, written day by day."""
    cat = Catalog(root)
    per_sym = n_total // len(SYMBOLS)
    per_day = per_sym // DAYS
    day_ns = 86_400 * 10**9
    for k, sym in enumerate(SYMBOLS):
        rng = np.random.default_rng(k)
        price = 100.0 * (k + 1)
        tid = 1
        for d in range(DAYS):
            ts = T0 + d * day_ns + np.sort(rng.integers(0, day_ns, per_day))
            px = np.round(price * np.exp(np.cumsum(rng.normal(0, 2e-5, per_day))), 2)
            price = float(px[-1])
            qty = np.round(rng.exponential(0.05, per_day) + 0.001, 3)
            cat.write(
                VENUE,
                "trades",
                sym,
                pa.table(
                    {
                        "ts_ns": pa.array(ts, pa.int64()),
                        "trade_id": pa.array(np.arange(tid, tid + per_day), pa.int64()),
                        "price": px,
                        "qty_base": qty,
                        "quote_qty": px * qty,
                        "is_buyer_maker": rng.random(per_day) < 0.5,
                        "ts_recv_ns": pa.nulls(per_day, pa.int64()),
                    }
                ),
            )
            tid += per_day
    (root / "DONE").write_text(str(n_total))


class NoOp(Strategy):
    """Overrides nothing."""


class OnTrade(Strategy):
    """An empty trade handler: every trade becomes an object and a call."""

    def on_trade(self, ctx: Context, trade: Trade) -> None:
        pass


class Resting(OnTrade):
    """Keeps one far-away bid working on every symbol."""

    def on_start(self, ctx: Context) -> None:
        for s in SYMBOLS:
            ctx.limit(s, Side.BUY, 0.001, 1.0)


def instruments() -> list[Instrument]:
    return [
        Instrument(VENUE, s, InstrumentKind.PERP, s[:3], "USDT", 0.01, 0.001, 8) for s in SYMBOLS
    ]


def run(strategy: Strategy, fill_model=None) -> tuple[int, int, float]:
    streams = [StreamSpec(VENUE, "trades", s) for s in SYMBOLS]
    t0 = time.perf_counter()
    res = run_backtest(
        strategy,
        ROOT,
        instruments(),
        AccountConfig(1_000_000, leverage={s: 5 for s in SYMBOLS}),
        fill_model,
        streams=streams,
    )
    return res.events, res.dispatched, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=20_000_000)
    ap.add_argument("--generate-only", action="store_true")
    args = ap.parse_args()
    done = ROOT / "DONE"
    if args.generate_only:
        generate(ROOT, args.events)
        return
    if not done.is_file() or done.read_text() != str(args.events):
        if ROOT.exists():
            import shutil

            shutil.rmtree(ROOT)
        print(f"writing {args.events:,} trades to {ROOT} (once) …", flush=True)
        subprocess.run(
            [sys.executable, __file__, "--generate-only", "--events", str(args.events)],
            check=True,
        )
    for name, strat, fm in [
        ("engine, no-op strategy", NoOp(), None),
        ("engine, on_trade subscribed", OnTrade(), None),
        ("engine, resting orders (tick fill model)", Resting(), TickFillModel()),
    ]:
        n, dispatched, secs = run(strat, fm)
        if dispatched == 0:  # cheap: best of three (page cache, imports)
            secs = min(secs, run(NoOp())[2], run(NoOp())[2])
        rate = n / secs
        ok = "MET" if rate >= TARGET else "NOT MET"
        print(
            f"{name:<42s} {n:>11,} events {dispatched:>11,} objects {secs:7.2f} s "
            f"{rate / 1e6:6.2f} M events/s (target {TARGET / 1e6:g} M: {ok})",
            flush=True,
        )
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory (ru_maxrss) {peak_mb:,.0f} MB (target < 2048 MB)")


if __name__ == "__main__":
    main()
