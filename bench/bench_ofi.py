"""Benchmark: OFI and Kyle's lambda kernels (perpdesk.features.ofi / .kyle), single core.

Prints, one line each (rows/s): batch OFI e_t + trailing window sum on 10M synthetic book
updates (target ≥ 10M updates/s), the streaming OFI twin fed micro-batches of 1,000 updates,
the fixed-grid bucket sums, and the rolling Kyle regression (60-interval window) in
intervals/s, batch and streaming. Run: ``.venv/bin/python bench/bench_ofi.py``.
"""

from __future__ import annotations

import os

os.environ["NUMBA_NUM_THREADS"] = "1"  # before numba is imported


import numpy as np
from _timing import best_of  # bench/_timing.py (scripts run from bench/)

from perpdesk.features.kyle import KyleLambdaStream, kyle_lambda
from perpdesk.features.ofi import OfiStream, ofi_buckets, ofi_trailing

TARGET = 10_000_000
WINDOW_NS = 1_000_000_000  # 1 s trailing window
BUCKET_NS = 1_000_000_000


def synthetic_book(n: int, seed: int = 7):
    """Random-walk top of book, ~1 update/ms with same-ms ties (like Binance bookTicker)."""
    rng = np.random.default_rng(seed)
    ts = 1_700_000_000_000_000_000 + np.cumsum(rng.integers(0, 3, n)) * 1_000_000
    mid = 60_000.0 + 0.1 * np.cumsum(rng.integers(-1, 2, n))
    bp = mid - 0.1 * rng.integers(0, 2, n)
    ap = bp + 0.1 * rng.integers(1, 3, n)
    bq = np.round(rng.exponential(2.0, n), 3)
    aq = np.round(rng.exponential(2.0, n), 3)
    return ts.astype(np.int64), bp, bq, ap, aq


def main() -> None:
    n = 10_000_000
    book = synthetic_book(n)

    s = best_of(lambda: ofi_trailing(*book, WINDOW_NS))
    rate = n / s
    ok = "MET" if rate >= TARGET else "NOT MET"
    print(
        f"batch OFI e_t + trailing 1 s sum (+ mean depth, normalised): {n:,} updates, best of 3 "
        f"{s:.3f} s = {rate:,.0f} updates/s (target >= {TARGET:,}/s: {ok}; incl. validation)"
    )

    s = best_of(lambda: ofi_buckets(*book, BUCKET_NS))
    print(f"batch OFI 1 s buckets: {n / s:,.0f} updates/s")

    chunk = 1_000
    m = 2_000_000
    cuts = np.arange(chunk, m, chunk)
    pieces = list(zip(*(np.split(a[:m], cuts) for a in book), strict=True))

    def stream() -> None:
        st = OfiStream(WINDOW_NS, BUCKET_NS)
        for p in pieces:
            st.update(*p)

    s = best_of(stream)
    print(f"streaming OFI, micro-batches of {chunk:,}: {m / s:,.0f} updates/s ({m:,} updates)")

    m1 = 50_000
    one = [tuple(a[i].item() for a in book) for i in range(m1)]

    def stream1() -> None:
        st = OfiStream(WINDOW_NS, BUCKET_NS)
        for p in one:
            st.update(*p)

    s = best_of(stream1, repeat=1)
    print(f"streaming OFI, one update per call: {m1 / s:,.0f} updates/s")

    rng = np.random.default_rng(3)
    k = 1_000_000
    sv = rng.normal(0, 1e6, k)
    dmid = 3e-6 * sv + rng.normal(0, 1.0, k)
    s = best_of(lambda: kyle_lambda(dmid, sv, window=60, min_obs=20))
    print(f"batch Kyle lambda, window 60: {k / s:,.0f} intervals/s ({k:,} intervals)")

    k2 = 200_000
    cuts = np.arange(60, k2, 60)
    yp, xp = np.split(dmid[:k2], cuts), np.split(sv[:k2], cuts)

    def kstream() -> None:
        st = KyleLambdaStream(60, 20)
        for y, x in zip(yp, xp, strict=True):
            st.update(y, x)

    s = best_of(kstream)
    print(f"streaming Kyle lambda, micro-batches of 60: {k2 / s:,.0f} intervals/s")


if __name__ == "__main__":
    main()
