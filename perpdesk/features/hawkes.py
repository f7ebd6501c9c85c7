"""Univariate Hawkes process with an exponential kernel: intensity, likelihood, fit, simulation.

Model (Hawkes 1971, "Spectra of some self-exciting and mutually exciting point processes"):

    λ(t) = μ + Σ_{t_i < t} α e^{−β (t − t_i)}

Units: event times in **seconds** (float64; use :func:`ns_to_seconds` for int64 ns
timestamps), μ in events/s, α in events/s per event (the jump of λ at each event), β in
1/s (decay rate). The branching ratio α/β (dimensionless) is the mean number of events
directly triggered by one event; the process is stationary iff α/β < 1, with mean rate
μ / (1 − α/β).

Equal event times (ties). Binance trades share millisecond timestamps (one taker order
filling several makers), so ties are **allowed**: events are ordered by their index (the
exchange's trade-id order) and an earlier-indexed event excites a later one even at the
same timestamp, with kernel weight e^{−β·0} = 1. Formally, the intensity just before
event i is μ + α Σ_{j<i} e^{−β (t_i − t_j)}, which is what the O(1) recursion

    A_1 = 0,   A_i = e^{−β (t_i − t_{i−1})} (1 + A_{i−1}),   λ(t_i−) = μ + α A_i

computes (Ozaki 1979). The grid evaluation :func:`hawkes_intensity_at` is point-in-time
in wall-clock terms: only events with t_j strictly before the grid time count (an event at
exactly the grid time does not). Times must be finite and non-decreasing; a violation
raises ``ValueError`` naming the first offending index.

Caveat on ties and the MLE: every tie contributes log(μ + α(1 + …)) with no decay, so on
data with many ties the likelihood increases without bound along α, β → ∞ with α/β fixed
(the kernel collapses onto the ties). :func:`fit_hawkes` therefore optimises inside box
bounds on the log-parameters and reports whether β ended at its bound. On the recorded
BTCUSDT trades (68 % of trades share a millisecond with the previous one) the fit pins β at
its bound with α/β ≈ the tie fraction; fitting one event per distinct timestamp
(``np.unique``) gives an interior fit (β ≈ 80/s, α/β ≈ 0.3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
from scipy.optimize import minimize

__all__ = [
    "CASCADE_RATIO",
    "HawkesFit",
    "HawkesStream",
    "HawkesUpdate",
    "fit_hawkes",
    "hawkes_intensity",
    "hawkes_intensity_at",
    "hawkes_intensity_ratio",
    "hawkes_loglik",
    "hawkes_loglik_grad",
    "ns_to_seconds",
    "simulate_hawkes",
]

CASCADE_RATIO = 3.0
"""λ/μ above which the flow is in cascade territory (self-excitation dominates 3:1)."""


# --------------------------------------------------------------------------- validation


def _check_params(mu: float, alpha: float, beta: float) -> tuple[float, float, float]:
    mu, alpha, beta = float(mu), float(alpha), float(beta)
    if not (math.isfinite(mu) and mu > 0.0):
        raise ValueError(f"mu must be finite and > 0, got {mu!r}")
    if not (math.isfinite(alpha) and alpha >= 0.0):
        raise ValueError(f"alpha must be finite and >= 0, got {alpha!r}")
    if not (math.isfinite(beta) and beta > 0.0):
        raise ValueError(f"beta must be finite and > 0, got {beta!r}")
    return mu, alpha, beta


@numba.njit(cache=True)
def _first_bad_time(t: np.ndarray, prev: float, has_prev: bool) -> tuple[int, int]:
    """(index, kind) of the first bad time: kind 1 = not finite, 2 = decreasing; (-1, 0) if ok."""
    last = prev
    have = has_prev
    for i in range(t.size):
        x = t[i]
        if not np.isfinite(x):
            return i, 1
        if have and x < last:
            return i, 2
        last = x
        have = True
    return -1, 0


def _as_times(times: object, name: str = "times") -> np.ndarray:
    t = np.ascontiguousarray(times, dtype=np.float64)
    if t.ndim != 1:
        raise ValueError(f"{name} must be 1-d, got shape {t.shape}")
    return t


def _validate_times(
    t: np.ndarray, name: str = "times", prev: float = 0.0, has_prev: bool = False
) -> None:
    idx, kind = _first_bad_time(t, prev, has_prev)
    if kind == 1:
        raise ValueError(f"{name}[{idx}] is not finite: {float(t[idx])!r}")
    if kind == 2:
        before = (
            f"{name}[{idx - 1}]={float(t[idx - 1])!r}" if idx > 0 else f"previous time {prev!r}"
        )
        raise ValueError(
            f"{name}[{idx}]={float(t[idx])!r} is earlier than {before} (times must be sorted)"
        )


def ns_to_seconds(ts_ns: np.ndarray, origin_ns: int | None = None) -> np.ndarray:
    """int64 nanosecond timestamps → float64 seconds since ``origin_ns`` (default: the first).

    The subtraction is done in int64 (exact) before scaling, so sub-microsecond resolution
    is kept for spans of days; absolute epoch seconds would lose it in float64.
    """
    a = np.asarray(ts_ns)
    if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"ts_ns must be a 1-d integer array, got dtype {a.dtype} shape {a.shape}")
    a = a.astype(np.int64, copy=False)
    if a.size == 0:
        return np.empty(0, dtype=np.float64)
    o = int(a[0]) if origin_ns is None else int(origin_ns)
    return (a - np.int64(o)).astype(np.float64) * 1e-9


# --------------------------------------------------------------------------- kernels


@numba.njit(cache=True)
def _intensity_kernel(t, mu, alpha, beta, t_prev, a_prev, has_prev, out):
    """Recursive intensity just before each event (Ozaki 1979). Returns the new (t, A) state.

    State: ``t_prev`` time of the last event seen, ``a_prev`` its A (excitation just before it,
    per unit α). Shared by the batch function and the streaming object so both are bit-equal.
    """
    tp = t_prev
    a = a_prev
    have = has_prev
    for i in range(t.size):
        x = t[i]
        if have:
            a = math.exp(-beta * (x - tp)) * (1.0 + a)
        else:
            a = 0.0
            have = True
        out[i] = mu + alpha * a
        tp = x
    return tp, a


@numba.njit(cache=True)
def _intensity_grid_kernel(t, grid, mu, alpha, beta, out):
    """λ(g) = μ + α Σ_{t_j < g} e^{−β (g − t_j)}, merge walk over sorted events and grid."""
    n = t.size
    k = 0
    s = 0.0  # Σ_{j<k} e^{−β (t_{k−1} − t_j)}: excitation right after event k−1 (incl. it)
    tk = 0.0
    for m in range(grid.size):
        g = grid[m]
        while k < n and t[k] < g:
            s = 1.0 if k == 0 else math.exp(-beta * (t[k] - tk)) * s + 1.0
            tk = t[k]
            k += 1
        if k == 0:
            out[m] = mu
        else:
            out[m] = mu + alpha * s * math.exp(-beta * (g - tk))


@numba.njit(cache=True)
def _loglik_kernel(t, mu, alpha, beta, start, end, want_grad, grad):
    """Ozaki (1979) O(n) log-likelihood on [start, end] and, optionally, its gradient.

    log L = Σ log(μ + α A_i) − μ (T − t0) − (α/β) Σ (1 − e^{−β (T − t_i)}),
    with A_i as in the intensity recursion and C_i = Σ_{j<i} (t_i − t_j) e^{−β (t_i − t_j)}
    = e^{−β Δ_i} (C_{i−1} + Δ_i (1 + A_{i−1})) so that ∂A_i/∂β = −C_i.
    """
    n = t.size
    a = 0.0
    c = 0.0
    s_log = 0.0
    s_inv = 0.0  # Σ 1/λ_i
    s_a = 0.0  # Σ A_i/λ_i
    s_c = 0.0  # Σ C_i/λ_i
    s_comp = 0.0  # Σ (1 − e^{−β (T − t_i)})
    s_tail = 0.0  # Σ (T − t_i) e^{−β (T − t_i)}
    for i in range(n):
        x = t[i]
        if i > 0:
            d = x - t[i - 1]
            e = math.exp(-beta * d)
            if want_grad:
                c = e * (c + d * (1.0 + a))
            a = e * (1.0 + a)
        lam = mu + alpha * a
        s_log += math.log(lam)
        r = end - x
        et = math.exp(-beta * r)
        s_comp += 1.0 - et
        if want_grad:
            inv = 1.0 / lam
            s_inv += inv
            s_a += a * inv
            s_c += c * inv
            s_tail += r * et
    span = end - start
    ll = s_log - mu * span - (alpha / beta) * s_comp
    if want_grad:
        grad[0] = s_inv - span
        grad[1] = s_a - s_comp / beta
        grad[2] = -alpha * s_c + alpha / (beta * beta) * s_comp - alpha / beta * s_tail
    return ll


@numba.njit(cache=True)
def _simulate_kernel(rng, mu, alpha, beta, start, end, max_events):
    """Ogata (1981) thinning. Between events λ decays, so λ(t+) bounds λ until the next event."""
    cap = 1024
    out = np.empty(cap, dtype=np.float64)
    n = 0
    t = start
    s = 0.0  # Σ_{t_j ≤ t} e^{−β (t − t_j)} at the current time t
    while True:
        lam_bar = mu + alpha * s
        w = rng.exponential(1.0 / lam_bar)
        tn = t + w
        if tn > end:
            break
        s = s * math.exp(-beta * w)
        t = tn
        lam = mu + alpha * s
        if rng.random() * lam_bar <= lam:
            if n == max_events:
                return out[:n].copy(), False
            if n == cap:
                cap *= 2
                nxt = np.empty(cap, dtype=np.float64)
                nxt[:n] = out[:n]
                out = nxt
            out[n] = t
            n += 1
            s += 1.0
    return out[:n].copy(), True


# --------------------------------------------------------------------------- batch API


def hawkes_intensity(times: np.ndarray, mu: float, alpha: float, beta: float) -> np.ndarray:
    """Intensity just before each event, λ(t_i−) = μ + α Σ_{j<i} e^{−β (t_i − t_j)} (events/s).

    O(1) per event via the recursion A_i = e^{−β (t_i − t_{i−1})} (1 + A_{i−1})
    (Hawkes 1971 model; recursion Ozaki 1979). Ties count in index order (see module doc).
    ``times`` in seconds, finite and non-decreasing.
    """
    mu, alpha, beta = _check_params(mu, alpha, beta)
    t = _as_times(times)
    _validate_times(t)
    out = np.empty(t.size, dtype=np.float64)
    _intensity_kernel(t, mu, alpha, beta, 0.0, 0.0, False, out)
    return out


def hawkes_intensity_ratio(times: np.ndarray, mu: float, alpha: float, beta: float) -> np.ndarray:
    """λ(t_i−)/μ just before each event (dimensionless; > :data:`CASCADE_RATIO` = cascade)."""
    return hawkes_intensity(times, mu, alpha, beta) / float(mu)


def hawkes_intensity_at(
    times: np.ndarray, grid: np.ndarray, mu: float, alpha: float, beta: float
) -> np.ndarray:
    """λ(g) = μ + α Σ_{t_j < g} e^{−β (g − t_j)} at each grid time g (events/s; Hawkes 1971).

    Point-in-time: only events strictly before g count. ``times`` and ``grid`` in seconds,
    each finite and non-decreasing. O(n + m).
    """
    mu, alpha, beta = _check_params(mu, alpha, beta)
    t = _as_times(times)
    g = _as_times(grid, "grid")
    _validate_times(t)
    _validate_times(g, "grid")
    out = np.empty(g.size, dtype=np.float64)
    _intensity_grid_kernel(t, g, mu, alpha, beta, out)
    return out


def _window(t: np.ndarray, start: float, end: float) -> tuple[float, float]:
    start, end = float(start), float(end)
    if not (math.isfinite(start) and math.isfinite(end)):
        raise ValueError(f"start and end must be finite, got start={start!r} end={end!r}")
    if end <= start:
        raise ValueError(f"end must be > start, got start={start!r} end={end!r}")
    if t.size:
        below = np.flatnonzero(t < start)
        if below.size:
            raise ValueError(f"times[{below[0]}]={float(t[below[0]])!r} is before start={start!r}")
        above = np.flatnonzero(t > end)
        if above.size:
            raise ValueError(f"times[{above[0]}]={float(t[above[0]])!r} is after end={end!r}")
    return start, end


def hawkes_loglik(
    times: np.ndarray, mu: float, alpha: float, beta: float, start: float, end: float
) -> float:
    """Exact log-likelihood of the events on the window [start, end] (seconds), O(n).

    log L = Σ log(μ + α A_i) − μ (end − start) − (α/β) Σ (1 − e^{−β (end − t_i)})
    (Ozaki 1979 recursion). No events before ``start`` are assumed (the process starts empty).
    """
    mu, alpha, beta = _check_params(mu, alpha, beta)
    t = _as_times(times)
    _validate_times(t)
    start, end = _window(t, start, end)
    g = np.empty(3, dtype=np.float64)
    return float(_loglik_kernel(t, mu, alpha, beta, start, end, False, g))


def hawkes_loglik_grad(
    times: np.ndarray, mu: float, alpha: float, beta: float, start: float, end: float
) -> tuple[float, np.ndarray]:
    """(log L, ∂log L/∂(μ, α, β)) on [start, end]; analytic gradient of the Ozaki (1979) form.

    ∂/∂μ = Σ 1/λ_i − (end − start);  ∂/∂α = Σ A_i/λ_i − (1/β) Σ (1 − E_i);
    ∂/∂β = −α Σ C_i/λ_i + (α/β²) Σ (1 − E_i) − (α/β) Σ (end − t_i) E_i,
    with E_i = e^{−β (end − t_i)} and C_i = −∂A_i/∂β computed by its own O(1) recursion.
    """
    mu, alpha, beta = _check_params(mu, alpha, beta)
    t = _as_times(times)
    _validate_times(t)
    start, end = _window(t, start, end)
    g = np.empty(3, dtype=np.float64)
    ll = float(_loglik_kernel(t, mu, alpha, beta, start, end, True, g))
    return ll, g


@dataclass(frozen=True)
class HawkesFit:
    """Maximum-likelihood fit. μ, α in events/s, β in 1/s; ``branching_ratio`` = α/β.

    ``converged`` is the optimiser's success flag; ``at_bound`` names parameters that ended on
    their search bound (typically β → upper bound on data with many tied timestamps).
    """

    mu: float
    alpha: float
    beta: float
    log_likelihood: float
    branching_ratio: float
    converged: bool
    n_iter: int
    message: str
    n_events: int
    start: float
    end: float
    at_bound: tuple[str, ...]


def fit_hawkes(
    times: np.ndarray,
    start: float,
    end: float,
    x0: tuple[float, float, float] | None = None,
    beta_bounds: tuple[float, float] = (1e-6, 1e6),
    maxiter: int = 500,
) -> HawkesFit:
    """Maximum-likelihood (μ, α, β) on [start, end] (seconds) by L-BFGS-B on log-parameters.

    Objective: the Ozaki (1979) O(n) log-likelihood with its analytic gradient (chain rule
    ∂/∂log p = p ∂/∂p), scaled by 1/n for the optimiser's tolerances. ``x0`` (μ, α, β)
    defaults to μ = r/2, β = 2r, α = β/2 with r = n/(end − start) the mean rate. Box bounds:
    μ ∈ [1e-9 r, 1e3 r], α ∈ [1e-9 β_lo, 1e3 β_hi], β ∈ ``beta_bounds`` (1/s). α/β is not
    constrained to < 1 (on a finite window an explosive fit is legal: check it). On
    ms-stamped trades with many ties β runs to its upper bound (see module doc); fit
    ``np.unique(times)`` (one event per timestamp) for an interior estimate.
    """
    t = _as_times(times)
    _validate_times(t)
    start, end = _window(t, start, end)
    n = t.size
    if n < 3:
        raise ValueError(f"need at least 3 events to fit, got {n}")
    span = end - start
    rate = n / span
    if x0 is None:
        b0 = 2.0 * rate
        x0 = (0.5 * rate, 0.5 * b0, b0)
    mu0, a0, b0 = _check_params(*x0)
    a0 = max(a0, 1e-3 * b0)
    lo_b, hi_b = float(beta_bounds[0]), float(beta_bounds[1])
    if not (0.0 < lo_b < hi_b and math.isfinite(hi_b)):
        raise ValueError(f"beta_bounds must satisfy 0 < lo < hi < inf, got {beta_bounds!r}")
    bounds = [
        (math.log(rate * 1e-9), math.log(rate * 1e3)),
        (math.log(lo_b * 1e-9), math.log(hi_b * 1e3)),
        (math.log(lo_b), math.log(hi_b)),
    ]
    b0 = min(max(b0, lo_b), hi_b)
    z0 = np.array([math.log(mu0), math.log(a0), math.log(b0)])
    z0 = np.clip(z0, [b[0] for b in bounds], [b[1] for b in bounds])
    g = np.empty(3, dtype=np.float64)
    scale = 1.0 / n

    def obj(z: np.ndarray) -> tuple[float, np.ndarray]:
        p = np.exp(z)
        ll = _loglik_kernel(t, p[0], p[1], p[2], start, end, True, g)
        if not math.isfinite(ll):
            return 1e300, np.zeros(3)
        return -ll * scale, -(g * p) * scale

    res = minimize(
        obj,
        z0,
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        options={"maxiter": maxiter, "ftol": 1e-13, "gtol": 1e-9},
    )
    mu, alpha, beta = (float(v) for v in np.exp(res.x))
    ll = float(_loglik_kernel(t, mu, alpha, beta, start, end, False, g))
    names = ("mu", "alpha", "beta")
    at_bound = tuple(
        names[k]
        for k in range(3)
        if min(abs(res.x[k] - bounds[k][0]), abs(res.x[k] - bounds[k][1])) < 1e-6
    )
    return HawkesFit(
        mu=mu,
        alpha=alpha,
        beta=beta,
        log_likelihood=ll,
        branching_ratio=alpha / beta,
        converged=bool(res.success),
        n_iter=int(res.nit),
        message=str(res.message),
        n_events=n,
        start=start,
        end=end,
        at_bound=at_bound,
    )


def simulate_hawkes(
    mu: float,
    alpha: float,
    beta: float,
    end: float,
    rng: np.random.Generator,
    start: float = 0.0,
    max_events: int = 50_000_000,
) -> np.ndarray:
    """Event times (seconds, sorted, in (start, end]) of a Hawkes process by Ogata (1981) thinning.

    The process starts empty at ``start``. Seeded through ``rng`` (a NumPy Generator, advanced
    in place). Raises ValueError if more than ``max_events`` would be produced (explosive
    parameters, α/β ≥ 1, or too long a window).
    """
    mu, alpha, beta = _check_params(mu, alpha, beta)
    start, end = float(start), float(end)
    if not (math.isfinite(start) and math.isfinite(end) and end > start):
        raise ValueError(f"need finite start < end, got start={start!r} end={end!r}")
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    out, ok = _simulate_kernel(rng, mu, alpha, beta, start, end, int(max_events))
    if not ok:
        raise ValueError(f"max_events={max_events} exceeded (branching ratio {alpha / beta:.3g})")
    return out


# --------------------------------------------------------------------------- streaming


@dataclass(frozen=True)
class HawkesUpdate:
    """Per-event output of :meth:`HawkesStream.update`: λ(t_i−) in events/s and λ/μ."""

    intensity: np.ndarray
    ratio: np.ndarray


class HawkesStream:
    """Streaming twin of :func:`hawkes_intensity`: O(1) state (last time, its A).

    ``update`` takes one event time or a micro-batch (seconds, finite, non-decreasing and not
    before the last event seen; ties allowed as in the batch kernel) and returns the intensity
    just before each event, bit-identical to the batch kernel on the concatenated data for any
    split. A rejected batch leaves the state unchanged.
    """

    def __init__(self, mu: float, alpha: float, beta: float) -> None:
        self.mu, self.alpha, self.beta = _check_params(mu, alpha, beta)
        self._t = 0.0
        self._a = 0.0
        self._n = 0

    @property
    def n_events(self) -> int:
        """Events consumed so far."""
        return self._n

    @property
    def last_time(self) -> float | None:
        """Time (s) of the last event seen, or None."""
        return self._t if self._n else None

    def update(self, t: float | np.ndarray) -> HawkesUpdate:
        """Consume event time(s); returns λ just before each (events/s) and λ/μ, as 1-d arrays."""
        x = np.atleast_1d(np.asarray(t, dtype=np.float64))
        x = _as_times(x)
        _validate_times(x, "t", self._t, self._n > 0)
        out = np.empty(x.size, dtype=np.float64)
        self._t, self._a = _intensity_kernel(
            x, self.mu, self.alpha, self.beta, self._t, self._a, self._n > 0, out
        )
        self._n += x.size
        return HawkesUpdate(intensity=out, ratio=out / self.mu)
