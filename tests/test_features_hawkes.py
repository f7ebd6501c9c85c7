"""Hawkes kernels vs slow O(n²) references, MLE recovery, streaming == batch, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perpdesk.features.hawkes import (
    CASCADE_RATIO,
    HawkesStream,
    fit_hawkes,
    hawkes_intensity,
    hawkes_intensity_at,
    hawkes_intensity_ratio,
    hawkes_loglik,
    hawkes_loglik_grad,
    ns_to_seconds,
    simulate_hawkes,
)
from tests.realdata import ws_trades

RTOL = 1e-9

# --------------------------------------------------------------------------- references
# Direct O(n²) sums. Ties: an earlier-indexed event counts for a later one (j < i), kernel
# weight e^{-β·0} = 1; the grid reference counts only events strictly before the grid time.


def ref_intensity(t: np.ndarray, mu: float, alpha: float, beta: float) -> np.ndarray:
    out = np.empty(t.size)
    for i in range(t.size):
        out[i] = mu + alpha * np.sum(np.exp(-beta * (t[i] - t[:i])))
    return out


def ref_intensity_at(t, grid, mu, alpha, beta) -> np.ndarray:
    out = np.empty(len(grid))
    for m, g in enumerate(grid):
        past = t[t < g]
        out[m] = mu + alpha * np.sum(np.exp(-beta * (g - past)))
    return out


def ref_loglik(t, mu, alpha, beta, start, end) -> float:
    lam = ref_intensity(t, mu, alpha, beta)
    compensator = mu * (end - start) + np.sum(alpha / beta * (1.0 - np.exp(-beta * (end - t))))
    return float(np.sum(np.log(lam)) - compensator)


def ref_grad(t, mu, alpha, beta, start, end) -> np.ndarray:
    """Analytic gradient written out with O(n²) sums (independent of the recursions)."""
    lam = ref_intensity(t, mu, alpha, beta)
    dmu = np.sum(1.0 / lam) - (end - start)
    a = np.array([np.sum(np.exp(-beta * (t[i] - t[:i]))) for i in range(t.size)])
    da_dbeta = np.array(
        [-np.sum((t[i] - t[:i]) * np.exp(-beta * (t[i] - t[:i]))) for i in range(t.size)]
    )
    r = end - t
    dalpha = np.sum(a / lam) - np.sum((1.0 - np.exp(-beta * r)) / beta)
    dcomp_dbeta = np.sum(
        -alpha / beta**2 * (1.0 - np.exp(-beta * r)) + alpha / beta * r * np.exp(-beta * r)
    )
    dbeta = np.sum(alpha * da_dbeta / lam) - dcomp_dbeta
    return np.array([dmu, dalpha, dbeta])


def random_times(seed: int, n: int, ties: bool) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(0.3, n))
    if ties:
        t = np.round(t, 1)  # many exactly-equal times
    return t


CASES = [(1, 1, False), (2, 300, False), (3, 400, True)]
PARAMS = [(0.7, 1.1, 2.3), (2.0, 0.0, 0.5), (0.05, 4.0, 9.0)]


@pytest.fixture(scope="module")
def real_times() -> np.ndarray:
    return ns_to_seconds(ws_trades()["ts_ns"])


# --------------------------------------------------------------------------- vs references


@pytest.mark.parametrize("seed,n,ties", CASES)
@pytest.mark.parametrize("mu,alpha,beta", PARAMS)
def test_intensity_loglik_grad_vs_reference(seed, n, ties, mu, alpha, beta):
    t = random_times(seed, n, ties)
    start, end = -0.5, float(t[-1]) + 2.0
    lam = hawkes_intensity(t, mu, alpha, beta)
    np.testing.assert_allclose(lam, ref_intensity(t, mu, alpha, beta), rtol=RTOL, atol=0)
    np.testing.assert_allclose(hawkes_intensity_ratio(t, mu, alpha, beta), lam / mu, rtol=0)
    ll = hawkes_loglik(t, mu, alpha, beta, start, end)
    assert ll == pytest.approx(ref_loglik(t, mu, alpha, beta, start, end), rel=RTOL)
    ll2, g = hawkes_loglik_grad(t, mu, alpha, beta, start, end)
    assert ll2 == pytest.approx(ll, rel=1e-14)
    ref = ref_grad(t, mu, alpha, beta, start, end)
    np.testing.assert_allclose(g, ref, rtol=RTOL, atol=RTOL * np.abs(ref).max())


@pytest.mark.parametrize("seed,ties", [(5, False), (6, True)])
def test_grad_vs_finite_differences(seed, ties):
    t = random_times(seed, 500, ties)
    p = np.array([0.9, 1.3, 2.1])
    start, end = 0.0, float(t[-1]) + 1.0
    _, g = hawkes_loglik_grad(t, *p, start, end)
    for k in range(3):
        h = 1e-5 * p[k]
        up, dn = p.copy(), p.copy()
        up[k] += h
        dn[k] -= h
        fd = (hawkes_loglik(t, *up, start, end) - hawkes_loglik(t, *dn, start, end)) / (2 * h)
        assert g[k] == pytest.approx(fd, rel=1e-6, abs=1e-6)


def test_intensity_on_grid_vs_reference():
    t = random_times(8, 300, True)
    rng = np.random.default_rng(9)
    grid = np.sort(np.concatenate([rng.uniform(-1, t[-1] + 3, 200), t[::7]]))  # incl. event times
    for mu, alpha, beta in PARAMS:
        got = hawkes_intensity_at(t, grid, mu, alpha, beta)
        np.testing.assert_allclose(got, ref_intensity_at(t, grid, mu, alpha, beta), rtol=RTOL)
    # point in time: at an event time, that event (and its ties) do not count yet
    assert hawkes_intensity_at(np.array([1.0, 1.0]), np.array([1.0]), 1.0, 5.0, 1.0)[0] == 1.0
    assert hawkes_intensity_at(np.array([]), np.array([0.0, 2.0]), 1.5, 5.0, 1.0).tolist() == [
        1.5,
        1.5,
    ]


def test_ties_count_in_index_order():
    lam = hawkes_intensity(np.array([2.0, 2.0, 2.0]), 1.0, 0.5, 3.0)
    assert lam.tolist() == [1.0, 1.5, 2.0]


# --------------------------------------------------------------------------- real data


def test_real_trades_intensity_and_loglik_vs_reference(real_times):
    t = real_times
    assert t.size > 1000 and np.any(np.diff(t) == 0)  # ms ties present
    mu, alpha, beta = 5.0, 40.0, 60.0
    lam = hawkes_intensity(t, mu, alpha, beta)
    np.testing.assert_allclose(lam, ref_intensity(t, mu, alpha, beta), rtol=RTOL)
    end = float(t[-1])
    ll = hawkes_loglik(t, mu, alpha, beta, 0.0, end)
    assert ll == pytest.approx(ref_loglik(t, mu, alpha, beta, 0.0, end), rel=RTOL)
    assert np.mean(lam / mu > CASCADE_RATIO) > 0  # bursts reach cascade territory


def test_real_trades_fit(real_times):
    t = real_times
    end = float(t[-1])
    fit = fit_hawkes(t, 0.0, end)
    assert fit.converged and math.isfinite(fit.log_likelihood)
    assert fit.branching_ratio < 1.0
    # With ties counted at weight e^0 = 1 the likelihood grows without bound as β → ∞:
    # the fit pins β at its upper bound (documented degeneracy of ms-stamped trades).
    assert "beta" in fit.at_bound
    # Collapsing each millisecond to one event gives an interior, sub-critical fit.
    u = np.unique(t)
    fit_u = fit_hawkes(u, 0.0, end)
    assert fit_u.converged and fit_u.at_bound == ()
    assert 0.0 < fit_u.branching_ratio < 1.0
    _, g = hawkes_loglik_grad(u, fit_u.mu, fit_u.alpha, fit_u.beta, 0.0, end)
    assert np.all(np.abs(g * [fit_u.mu, fit_u.alpha, fit_u.beta]) < 1e-3 * u.size)


# --------------------------------------------------------------------------- simulation + MLE


def test_mle_recovers_simulated_parameters():
    mu, alpha, beta = 0.5, 0.8, 1.2
    end = 50_000 / (mu / (1 - alpha / beta))  # stationary rate 1.5/s → ~50k events
    t = simulate_hawkes(mu, alpha, beta, end, np.random.default_rng(20240719))
    assert 45_000 < t.size < 55_000
    assert np.all(np.diff(t) > 0) and t[0] > 0 and t[-1] <= end
    fit = fit_hawkes(t, 0.0, end)
    assert fit.converged and fit.at_bound == ()
    assert fit.mu == pytest.approx(mu, rel=0.10)
    assert fit.alpha == pytest.approx(alpha, rel=0.10)
    assert fit.beta == pytest.approx(beta, rel=0.10)
    assert fit.branching_ratio == pytest.approx(alpha / beta, rel=0.05)


def test_simulation_seeded_and_poisson_limit():
    a = simulate_hawkes(1.0, 0.5, 2.0, 100.0, np.random.default_rng(3))
    b = simulate_hawkes(1.0, 0.5, 2.0, 100.0, np.random.default_rng(3))
    assert np.array_equal(a, b)
    p = simulate_hawkes(2.0, 0.0, 1.0, 5000.0, np.random.default_rng(4))
    assert p.size == pytest.approx(10_000, abs=5 * 100)  # Poisson(10k): 5 sd
    with pytest.raises(ValueError, match="max_events"):
        simulate_hawkes(1.0, 2.0, 1.0, 1e6, np.random.default_rng(0), max_events=1000)


# --------------------------------------------------------------------------- streaming


@st.composite
def times_and_splits(draw):
    n = draw(st.integers(0, 60))
    gaps = draw(
        st.lists(
            st.one_of(st.just(0.0), st.floats(0.0, 5.0, allow_nan=False)), min_size=n, max_size=n
        )
    )
    t = draw(st.floats(-100.0, 100.0, allow_nan=False)) + np.cumsum(np.asarray(gaps, float))
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=8)))
    params = (
        draw(st.floats(1e-3, 10.0)),
        draw(st.floats(0.0, 10.0)),
        draw(st.floats(1e-3, 20.0)),
    )
    return t, cuts, params


@settings(max_examples=60, deadline=None)
@given(times_and_splits())
def test_stream_equals_batch_any_split(data):
    t, cuts, (mu, alpha, beta) = data
    batch = hawkes_intensity(t, mu, alpha, beta)
    s = HawkesStream(mu, alpha, beta)
    parts = [s.update(chunk) for chunk in np.split(t, cuts)]
    got = np.concatenate([p.intensity for p in parts])
    assert np.array_equal(got, batch)
    assert np.array_equal(np.concatenate([p.ratio for p in parts]), batch / mu)
    one = HawkesStream(mu, alpha, beta)
    single = np.concatenate([one.update(float(x)).intensity for x in t]) if t.size else batch
    assert np.array_equal(single, batch)
    assert one.n_events == t.size


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "bad,msg",
    [
        ([0.0, 1.0, np.nan, 3.0], r"times\[2\] is not finite"),
        ([0.0, np.inf], r"times\[1\] is not finite"),
        ([0.0, 1.0, 0.5, 0.2], r"times\[2\]=0.5 is earlier than times\[1\]"),
    ],
)
def test_bad_times_name_first_index(bad, msg):
    with pytest.raises(ValueError, match=msg):
        hawkes_intensity(np.array(bad), 1.0, 1.0, 2.0)
    with pytest.raises(ValueError, match=msg):
        hawkes_loglik(np.array(bad), 1.0, 1.0, 2.0, -1.0, 10.0)
    with pytest.raises(ValueError, match=msg):
        fit_hawkes(np.array(bad), -1.0, 10.0)
    with pytest.raises(ValueError, match=msg):
        hawkes_intensity_at(np.array(bad), np.array([1.0]), 1.0, 1.0, 2.0)
    with pytest.raises(ValueError, match=msg.replace("times", "t")):
        HawkesStream(1.0, 1.0, 2.0).update(np.array(bad))
    with pytest.raises(ValueError, match=r"grid\[1\]"):
        hawkes_intensity_at(np.array([0.0]), np.array([2.0, 1.0]), 1.0, 1.0, 2.0)


@pytest.mark.parametrize(
    "mu,alpha,beta,name",
    [
        (0.0, 1.0, 1.0, "mu"),
        (-1.0, 1.0, 1.0, "mu"),
        (1.0, -0.1, 1.0, "alpha"),
        (1.0, 1.0, 0.0, "beta"),
        (1.0, 1.0, np.nan, "beta"),
        (np.inf, 1.0, 1.0, "mu"),
    ],
)
def test_bad_params_name_parameter(mu, alpha, beta, name):
    t = np.array([0.0, 1.0])
    for call in (
        lambda: hawkes_intensity(t, mu, alpha, beta),
        lambda: hawkes_loglik(t, mu, alpha, beta, 0.0, 2.0),
        lambda: HawkesStream(mu, alpha, beta),
        lambda: simulate_hawkes(mu, alpha, beta, 1.0, np.random.default_rng(0)),
    ):
        with pytest.raises(ValueError, match=name):
            call()


def test_bad_window_and_stream_state_kept():
    t = np.array([0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match=r"times\[0\]=0.0 is before start"):
        hawkes_loglik(t, 1.0, 1.0, 2.0, 0.5, 3.0)
    with pytest.raises(ValueError, match=r"times\[2\]=2.0 is after end"):
        fit_hawkes(t, 0.0, 1.5)
    with pytest.raises(ValueError, match="end must be > start"):
        hawkes_loglik(t, 1.0, 1.0, 2.0, 3.0, 3.0)
    s = HawkesStream(1.0, 1.0, 2.0)
    s.update(t)
    with pytest.raises(ValueError, match=r"t\[0\]=1.5 is earlier than previous time 2.0"):
        s.update(np.array([1.5, 3.0]))
    assert s.n_events == 3 and s.last_time == 2.0
    ref = hawkes_intensity(np.array([0.0, 1.0, 2.0, 2.0, 3.0]), 1.0, 1.0, 2.0)
    assert np.array_equal(s.update(np.array([2.0, 3.0])).intensity, ref[3:])


def test_ns_to_seconds():
    ns = np.array([1_721_347_200_000_000_000, 1_721_347_200_000_000_001, 1_721_347_201_5 * 10**8])
    s = ns_to_seconds(ns)
    assert s[0] == 0.0 and s[1] == pytest.approx(1e-9, rel=1e-6) and s[2] == 1.5
    assert ns_to_seconds(ns, origin_ns=1_721_347_199_000_000_000)[0] == 1.0
    assert ns_to_seconds(np.array([], dtype=np.int64)).size == 0
    with pytest.raises(ValueError, match="integer"):
        ns_to_seconds(np.array([1.5]))
