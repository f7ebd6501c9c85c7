"""Throughput of perpdesk.features.vpin: batch kline VPIN and the streaming twin.

Run: ``.venv/bin/python bench/bench_vpin.py`` (single numba thread; compile is warmed up
before timing; best of a few repeats, since the machine may be shared).
"""

from __future__ import annotations

import os

os.environ["NUMBA_NUM_THREADS"] = "1"

import time

import numpy as np

from perpdesk.features.vpin import VPINStream, vpin_bars

N_BARS = 10_000_000
N_TRADES = 2_000_000
N_SINGLE = 300_000
BATCH = 1_000


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    price = 60_000.0 * np.exp(np.cumsum(rng.normal(0.0, 1e-3, n)))
    qv = rng.exponential(2e5, n)
    return price, qv, rng.random(n) < 0.5


def _best(fn, repeats: int) -> float:
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _report(name: str, rows: int, secs: float, target: float) -> None:
    rate = rows / secs
    ok = "MET" if rate >= target else "NOT MET"
    print(f"{name:<44s} {rate / 1e6:8.2f} M rows/s  (target {target / 1e6:g} M: {ok})")


def main() -> None:
    p, v, f = _data(N_BARS, 1)
    kw = {"bucket_usd": 2e6, "n_buckets": 50}

    # warm-up: compile / load every kernel used below
    vpin_bars(p[:1000], v[:1000], **kw)
    w = VPINStream("aggressor", **kw)
    w.update(p[:1000], v[:1000], f[:1000])
    w.update(float(p[0]), float(v[0]), bool(f[0]))

    secs = _best(lambda: vpin_bars(p, v, **kw), 3)
    _report(f"batch kline VPIN ({N_BARS:,} bars)", N_BARS, secs, 10e6)

    tp, tv, tf = p[:N_TRADES], v[:N_TRADES], f[:N_TRADES]

    def micro() -> None:
        s = VPINStream("bvc", **kw)
        for a in range(0, N_TRADES, BATCH):
            s.update(tp[a : a + BATCH], tv[a : a + BATCH])

    secs = _best(micro, 3)
    _report(f"stream, micro-batches of {BATCH:,} trades", N_TRADES, secs, 5e6)

    sp, sv, sf = tp[:N_SINGLE].tolist(), tv[:N_SINGLE].tolist(), tf[:N_SINGLE].tolist()

    def single() -> None:
        s = VPINStream("bvc", **kw)
        up = s.update
        for i in range(N_SINGLE):
            up(sp[i], sv[i], sf[i])

    secs = _best(single, 3)
    _report("stream, one trade per call (bvc)", N_SINGLE, secs, 0.3e6)


if __name__ == "__main__":
    main()
