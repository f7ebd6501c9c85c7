"""Benchmark: order-book state kernels (perpdesk.features.book), single core.

Prints, one line each (snapshots/s): per-snapshot spread / banded depth / OIB on 1M
synthetic 20-level snapshots, and the rolling OIB aggregates over the 1 h window (3600
samples: q10/q50/q90, EWMA, persistence, shocks; no impulse response), batch and streaming
(micro-batches of 1,000). Run: ``.venv/bin/python bench/bench_book.py``.
"""

from __future__ import annotations

import os

os.environ["NUMBA_NUM_THREADS"] = "1"  # before numba is imported


import numpy as np
from _timing import best_of  # bench/_timing.py (scripts run from bench/)

from perpdesk.features.book import OibRollingStream, book_state, oib_rolling

N = 1_000_000
LEVELS = 20


def synthetic_books(n: int, levels: int, seed: int = 7):
    """Random-walk mid, 1 s grid, levels 0.5-2 bps apart, exponential sizes."""
    rng = np.random.default_rng(seed)
    mid = 60_000.0 * np.exp(np.cumsum(rng.normal(0, 1e-4, n)))
    half = mid * 0.5e-5
    steps = np.cumsum(rng.uniform(0.5e-4, 2e-4, (n, levels)), axis=1)
    steps[:, 0] = 0.0
    bp = (mid - half)[:, None] * (1 - steps)
    ap = (mid + half)[:, None] * (1 + steps)
    bq = rng.exponential(1.0, (n, levels))
    aq = rng.exponential(1.0, (n, levels))
    ts = np.arange(n, dtype=np.int64) * 1_000_000_000
    return ts, bp, bq, ap, aq


def main() -> None:
    ts, bp, bq, ap, aq = synthetic_books(N, LEVELS)
    t = best_of(lambda: book_state(ts, bp, bq, ap, aq, 25.0, 25.0))
    print(f"book_state (OIB, {LEVELS} levels, 1M snapshots): {N / t:,.0f} snapshots/s")
    oib = book_state(ts, bp, bq, ap, aq, 25.0, 25.0).oib
    t = best_of(lambda: oib_rolling(oib, window=3600), repeat=1)
    print(
        f"oib_rolling (1 h window, q10/q50/q90 + ewma/persistence/shocks): {N / t:,.0f} snapshots/s"
    )

    def stream() -> None:
        s = OibRollingStream(window=3600)
        for i in range(0, N, 1000):
            s.update(oib[i : i + 1000])

    t = best_of(stream, repeat=1)
    print(f"OibRollingStream (1 h window, micro-batches of 1,000): {N / t:,.0f} snapshots/s")


if __name__ == "__main__":
    main()
