"""Benchmark: Hawkes kernels (perpdesk.features.hawkes), single core.

Prints, one line each: batch intensity recursion on 10M event times (target ≥ 10M events/s),
the streaming twin fed micro-batches of 1,000, the log-likelihood (and log-likelihood +
gradient) evaluation rate, and the time to fit 50,000 simulated events.
Run: ``.venv/bin/python bench/bench_hawkes.py``.
"""

from __future__ import annotations

import os

os.environ["NUMBA_NUM_THREADS"] = "1"  # before numba is imported

import time

import numpy as np
from _timing import best_of  # bench/_timing.py (scripts run from bench/)

from perpdesk.features.hawkes import (
    HawkesStream,
    fit_hawkes,
    hawkes_intensity,
    hawkes_loglik,
    hawkes_loglik_grad,
    simulate_hawkes,
)

MU, ALPHA, BETA = 0.5, 0.8, 1.2
TARGET = 10_000_000


def main() -> None:
    rng = np.random.default_rng(7)
    n = 10_000_000
    t = np.cumsum(rng.exponential(1.0 / 1.5, n))

    s = best_of(lambda: hawkes_intensity(t, MU, ALPHA, BETA))
    rate = n / s
    ok = "MET" if rate >= TARGET else "NOT MET"
    print(
        f"batch intensity: {n:,} events, best of 3 {s:.3f} s = {rate:,.0f} events/s "
        f"(target >= {TARGET:,}/s: {ok}; incl. input validation pass)"
    )

    chunk = 1_000
    chunks = np.split(t, np.arange(chunk, n, chunk))

    def stream() -> None:
        st = HawkesStream(MU, ALPHA, BETA)
        for c in chunks:
            st.update(c)

    s = best_of(stream, repeat=2)
    print(
        f"streaming update, micro-batches of {chunk:,}: {n:,} events in {s:.3f} s = "
        f"{n / s:,.0f} events/s ({len(chunks) / s:,.0f} updates/s)"
    )

    m = 1_000_000
    tm = t[:m]
    end = float(tm[-1]) + 1.0
    s = best_of(lambda: hawkes_loglik(tm, MU, ALPHA, BETA, 0.0, end))
    s2 = best_of(lambda: hawkes_loglik_grad(tm, MU, ALPHA, BETA, 0.0, end))
    print(
        f"log-likelihood: {m:,} events, {m / s:,.0f} events/s; "
        f"with analytic gradient {m / s2:,.0f} events/s"
    )

    end_fit = 50_000 / (MU / (1 - ALPHA / BETA))
    sim = simulate_hawkes(MU, ALPHA, BETA, end_fit, np.random.default_rng(20240719))
    fit_hawkes(sim[:1000], 0.0, float(sim[999]))  # warm-up
    t0 = time.perf_counter()
    fit = fit_hawkes(sim, 0.0, end_fit)
    s = time.perf_counter() - t0
    print(
        f"fit: {sim.size:,} events in {s:.3f} s = {sim.size / s:,.0f} events/s "
        f"({fit.n_iter} L-BFGS-B iterations, converged={fit.converged}, "
        f"mu={fit.mu:.3f} alpha={fit.alpha:.3f} beta={fit.beta:.3f}, true {MU}/{ALPHA}/{BETA})"
    )


if __name__ == "__main__":
    main()
