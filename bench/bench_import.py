"""Throughput of perpdesk.data.sources.binance_archive on a futures aggTrades file.

Run: ``.venv/bin/python bench/bench_import.py``. Writes a synthetic 5-million-row
aggTrades CSV (and the same as a zip) to a temp dir, times ``read_archive_file`` (parse +
validate + normalise) best of 3, and the catalog write of the result.

"One core" is enforced, not assumed: the process is pinned to a single CPU
(``os.sched_setaffinity``, where the OS has it) and pyarrow's CPU pool is 1 thread, so
the zip's inflate (Arrow's read-ahead thread) and the CSV parse share that core. The
figures printed are rows / wall second under that pinning; the CPU seconds are printed
beside them.
"""

from __future__ import annotations

import os
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa

from perpdesk.data.catalog import Catalog
from perpdesk.data.sources.binance_archive import read_archive_file

N = 5_000_000
TARGET = 2_000_000


def _write_csv(path: Path, n: int) -> None:
    rng = np.random.default_rng(7)
    ids = np.arange(1_000_000_000, 1_000_000_000 + n, dtype=np.int64)
    px = np.round(60_000.0 * np.exp(np.cumsum(rng.normal(0.0, 2e-5, n))), 1)
    qty = np.round(rng.exponential(0.05, n), 3) + 0.001
    first = 3_000_000_000 + np.cumsum(rng.integers(1, 4, n))
    last = first + rng.integers(0, 3, n)
    t0 = 1_704_067_200_000  # 2024-01-01 ms
    ts = t0 + np.sort(rng.integers(0, 86_400_000, n))
    maker = np.where(rng.random(n) < 0.5, "true", "false")
    with path.open("w") as fh:
        fh.write(
            "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,"
            "is_buyer_maker\n"
        )
        step = 500_000
        for s in range(0, n, step):
            e = min(n, s + step)
            lines = [
                f"{a},{b:.1f},{c:.3f},{d},{f},{g},{h}"
                for a, b, c, d, f, g, h in zip(
                    ids[s:e].tolist(),
                    px[s:e].tolist(),
                    qty[s:e].tolist(),
                    first[s:e].tolist(),
                    last[s:e].tolist(),
                    ts[s:e].tolist(),
                    maker[s:e].tolist(),
                    strict=True,
                )
            ]
            fh.write("\n".join(lines) + "\n")


def _timed(fn) -> tuple[float, float]:
    """Best wall seconds and the CPU seconds of that run, of 3 after a warm-up."""
    fn()
    best = (float("inf"), 0.0)
    for _ in range(3):
        c0, w0 = time.process_time(), time.perf_counter()
        fn()
        w, c = time.perf_counter() - w0, time.process_time() - c0
        best = min(best, (w, c))
    return best


def main() -> None:
    if hasattr(os, "sched_setaffinity"):
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        print(f"pinned to CPU {cpu}")
    pa.set_cpu_count(1)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        csv_path = d / "BTCUSDT-aggTrades-2024-01-01.csv"
        zip_dir = d / "zip"
        zip_dir.mkdir()
        zip_path = zip_dir / "BTCUSDT-aggTrades-2024-01-01.zip"
        t0 = time.perf_counter()
        _write_csv(csv_path, N)
        with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
            zf.write(csv_path, csv_path.name)
        print(
            f"fixture: {N:,} rows, {csv_path.stat().st_size / 1e6:.0f} MB csv, "
            f"{zip_path.stat().st_size / 1e6:.0f} MB zip ({time.perf_counter() - t0:.1f} s)"
        )
        for label, path in (("csv", csv_path), ("zip", zip_path)):
            t, cpu_s = _timed(lambda p=path: read_archive_file(p))
            rate = N / t
            ok = "met" if rate >= TARGET else "NOT met"
            print(
                f"read_archive_file {label}: {t:.2f} s ({cpu_s:.2f} CPU s), "
                f"{rate / 1e6:.2f} M rows/s (target {TARGET / 1e6:.0f} M rows/s: {ok})"
            )
        _, sym, table = read_archive_file(csv_path)
        t0 = time.perf_counter()
        Catalog(d / "cat").write("binance", "agg_trades", sym, table)
        t = time.perf_counter() - t0
        print(f"catalog write: {t:.2f} s ({N / t / 1e6:.2f} M rows/s)")


if __name__ == "__main__":
    main()
