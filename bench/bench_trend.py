"""Single-core throughput of the trend kernels (KAMA, ATR, ATR z-score) on 10M synthetic bars.

Run: ``.venv/bin/python bench/bench_trend.py``. Prints one line per kernel in bars/s
(best of 3 after a warm-up call that also triggers numba compilation / cache load).
"""

from __future__ import annotations

import os

os.environ["NUMBA_NUM_THREADS"] = "1"  # before numba is imported

import time

import numpy as np

from perpdesk.features.trend import atr, kama, zscore_atr

N = 10_000_000


def bars(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    c = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    o = np.r_[c[0], c[:-1]]
    h = np.maximum(o, c) * (1.0 + rng.exponential(0.003, n))
    lo = np.minimum(o, c) * (1.0 - rng.exponential(0.003, n))
    return h, lo, c


def best(fn, reps: int = 3) -> float:
    t = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        t.append(time.perf_counter() - t0)
    return min(t)


def main() -> None:
    h, lo, c = bars(N)
    cases = {
        "kama(10, 2, 30)": lambda: kama(c),
        "atr(14)": lambda: atr(h, lo, c),
        "zscore_atr(20, 14)": lambda: zscore_atr(h, lo, c),
    }
    for f in cases.values():  # warm-up: compile / load cache
        f()
    for name, f in cases.items():
        dt = best(f)
        print(f"{name:<20} {N / dt:>14,.0f} bars/s  ({dt * 1e3:.0f} ms for {N:,} bars)")


if __name__ == "__main__":
    main()
