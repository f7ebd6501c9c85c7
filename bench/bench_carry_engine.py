"""The carry strategy on the event engine: 200 symbols × 3 years of 8h funding.

Run: ``.venv/bin/python bench/bench_carry_engine.py`` (the first run writes the catalog to
``~/.cache/perpdesk-bench/carry-engine``, once; ``--symbols`` / ``--years`` for smaller
runs, ``--profile`` to print where the time goes).

The data (venue ``bench``, seeded, written through the catalog's own writer; monthly
partitions): per symbol ``perp_bars_8h`` and ``spot_bars_8h`` (one bar per 8h from
2021-01-01 00:00 UTC for 3 × 365 days; spot a geometric random walk with 2 % sd per 8h,
perp = spot × (1 + basis) with the basis an AR(1) around 0 (sd 0.05 %); every bar's quote
volume 20 M USD, so the 24h volume filter always passes) and ``funding`` (a settlement at
every bar close, 8h interval, rate = 0.01 % + an AR(1) (φ 0.98, sd 0.004 %) + bursts of
0.02–0.15 % per 8h lasting days, so pairs open and close; mark price = the perp close), and
the venue's instrument table (tick: the power of ten at or below 1e-4 × the first price;
lot: the power of ten worth at most 10 USD at it). 3,285 settlements per symbol: 657,000
funding events and 1,314,000 bars = 1,971,000 events in 21,800 partition files.

Printed: events replayed, seconds of one run (catalog → finished result: instruments,
engine run, PnL decomposition, trades, metrics), events/s, the target (< 10 s), then the
replay alone over the same streams read in this thread (read + validate + merge of every
partition file, no engine). The run itself reads the files in ``--reader-processes``
background processes (default 1; 0 reads them in the run's thread), overlapped with the
engine, so the run is not "replay + the rest".
Settings: the defaults (bankroll 100,000 USD, 50 % carry, 10 slots, 3× perp leverage,
8 bps per leg), matching costs (taker fee 8 bps on both legs, no slippage, no latency).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from perpdesk.config import load_settings
from perpdesk.data.catalog import Catalog
from perpdesk.domain import Instrument, InstrumentKind
from perpdesk.research.carry_engine import engine_streams, run_engine_carry
from perpdesk.sim.replay import Replay

ROOT = Path("~/.cache/perpdesk-bench/carry-engine").expanduser()
VENUE = "bench"
T0 = int(np.datetime64("2021-01-01T00:00", "ns").astype(np.int64))
H8_NS = 8 * 3_600 * 1_000_000_000
TARGET_S = 10.0


def _symbols(n: int) -> list[str]:
    return [f"S{k:03d}USDT" for k in range(n)]


def generate(root: Path, n_symbols: int, years: int) -> None:
    """Write the bench catalog (see the module docstring)."""
    cat = Catalog(root)
    n = years * 365 * 3
    ts = T0 + H8_NS * np.arange(n, dtype=np.int64)
    insts = []
    for k, sym in enumerate(_symbols(n_symbols)):
        rng = np.random.default_rng(1000 + k)
        p0 = float(10.0 ** rng.uniform(-3, 4))
        tick = float(10.0 ** np.floor(np.log10(p0 * 1e-4)))
        lot = float(10.0 ** np.floor(np.log10(10.0 / p0)))
        spot = p0 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
        basis = np.zeros(n)
        e = rng.normal(0, 0.0005 * np.sqrt(1 - 0.9**2), n)
        for j in range(1, n):
            basis[j] = 0.9 * basis[j - 1] + e[j]
        perp = spot * (1 + basis)
        spot = np.maximum(np.round(spot / tick), 1) * tick
        perp = np.maximum(np.round(perp / tick), 1) * tick
        x = np.zeros(n)
        e = rng.normal(0, 0.00004 * np.sqrt(1 - 0.98**2), n)
        for j in range(1, n):
            x[j] = 0.98 * x[j - 1] + e[j]
        burst = np.zeros(n)
        for start in rng.integers(0, n, size=max(1, years * 3)):
            length = int(rng.integers(6, 60))
            burst[start : start + length] += rng.uniform(0.0002, 0.0015)
        rate = np.round(0.0001 + x + burst, 8)
        vol = np.full(n, 20_000_000.0)
        for name, close in (("perp_bars_8h", perp), ("spot_bars_8h", spot)):
            cat.write(
                VENUE,
                name,
                sym,
                pa.table(
                    {
                        "ts_ns": pa.array(ts, pa.int64()),
                        "open": np.concatenate([[close[0]], close[:-1]]),
                        "high": close,
                        "low": close,
                        "close": close,
                        "volume_base": vol / close,
                        "volume_quote": vol,
                        "taker_buy_volume_quote": vol / 2,
                    }
                ),
            )
        # a settlement at each bar close (the first bar closes 8h after T0)
        cat.write(
            VENUE,
            "funding",
            sym,
            pa.table(
                {
                    "ts_ns": pa.array(ts + H8_NS, pa.int64()),
                    "funding_rate": rate,
                    "funding_interval_h": pa.array(np.full(n, 8, dtype=np.int32)),
                    "mark_price": perp,
                }
            ),
        )
        for kind in (InstrumentKind.PERP, InstrumentKind.SPOT):
            iv = 8 if kind is InstrumentKind.PERP else 0
            insts.append(Instrument(VENUE, sym, kind, sym[:-4], "USDT", tick, lot, iv))
    cat.write_instruments(VENUE, insts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--symbols", type=int, default=200)
    ap.add_argument("--years", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument(
        "--reader-processes",
        type=int,
        default=1,
        help="processes reading partition files in the background (0: in the run's thread)",
    )
    args = ap.parse_args()
    root = ROOT / f"{args.symbols}x{args.years}y"
    done = root / "DONE"
    if not done.is_file():
        if root.exists():
            shutil.rmtree(root)
        print(f"writing the bench catalog to {root} (once) …", flush=True)
        t0 = time.perf_counter()
        generate(root, args.symbols, args.years)
        done.write_text("ok")
        print(f"  written in {time.perf_counter() - t0:.0f} s", flush=True)
    settings = load_settings(None, paths={"data_dir": str(root), "runs_dir": str(root)})
    prof = cProfile.Profile() if args.profile else None
    t0 = time.perf_counter()
    if prof is not None:
        prof.enable()
    run = run_engine_carry(
        settings, root, bars="perp_bars_8h", reader_processes=args.reader_processes
    )
    if prof is not None:
        prof.disable()
    secs = time.perf_counter() - t0
    n = run.result.events
    ok = "MET" if secs < TARGET_S else "NOT MET"
    c = run.counts
    print(
        f"carry on the engine: {args.symbols} symbols x {args.years} years (8h funding, 8h bars): "
        f"{n:,} events, {c['settlements_booked']:,} settlements booked, {c['entries']} entries, "
        f"{c['fills']} fills: {secs:.2f} s, {n / secs:,.0f} events/s "
        f"(target < {TARGET_S:g} s: {ok})"
    )
    # where the time goes: the replay alone (merge of the same streams, no engine, no strategy)
    t0 = time.perf_counter()
    streams = engine_streams(VENUE, _symbols(args.symbols), "perp_bars_8h", "spot_bars_8h")
    files = sum(len(Catalog(root).partitions(s.venue, s.dataset, s.symbol)) for s in streams)
    n_replay = sum(len(ch) for ch in Replay(root, streams).chunks())
    t_replay = time.perf_counter() - t0
    print(
        f"  the replay alone, in this thread (read + validate + merge {files:,} partition "
        f"files, {n_replay:,} events): {t_replay:.2f} s"
    )
    if prof is not None:
        pstats.Stats(prof).sort_stats("cumulative").print_stats(30)
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
