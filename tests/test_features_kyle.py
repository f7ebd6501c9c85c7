"""Kyle's lambda vs an exact rational-arithmetic OLS reference, planted slope, streaming ==
batch, interval builder vs a brute-force reference, bad input."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perpdesk.features.kyle import (
    KyleLambdaStream,
    aggressor_sign,
    kyle_intervals,
    kyle_lambda,
    tick_rule_sign,
)
from tests.realdata import ws_book_ticker, ws_trades

RTOL = 1e-9
NS = 1_000_000_000

# --------------------------------------------------------------------------- references


def ref_ols(ys, xs):
    """OLS y = a + b x with exact Fractions; returns (b, se, t, a) as floats."""
    n = len(xs)
    X = [Fraction(v) for v in xs]
    Y = [Fraction(v) for v in ys]
    mx = sum(X) / n
    my = sum(Y) / n
    sxx = sum((x - mx) ** 2 for x in X)
    sxy = sum((x - mx) * (y - my) for x, y in zip(X, Y, strict=True))
    b = sxy / sxx
    a = my - b * mx
    rss = sum((y - a - b * x) ** 2 for x, y in zip(X, Y, strict=True))
    se2 = rss / (n - 2) / sxx
    se = math.sqrt(se2)
    if se2 == 0:
        t = math.copysign(math.inf, b) if b != 0 else math.nan
    else:
        t = math.copysign(math.sqrt(b * b / se2), b)
    return float(b), se, t, float(a)


def ref_kyle(dmid, sv, window, min_obs):
    rows = []
    for k in range(len(dmid)):
        pairs = [
            (dmid[j], sv[j])
            for j in range(max(0, k - window + 1), k + 1)
            if not (math.isnan(dmid[j]) or math.isnan(sv[j]))
        ]
        if len(pairs) < min_obs or len({x for _, x in pairs}) == 1:
            rows.append((math.nan,) * 4 + (len(pairs),))
        else:
            rows.append((*ref_ols([y for y, _ in pairs], [x for _, x in pairs]), len(pairs)))
    return [np.array(c) for c in zip(*rows, strict=True)]


def check_kyle(dmid, sv, window, min_obs) -> None:
    got = kyle_lambda(dmid, sv, window, min_obs)
    lam, se, t, a, n = ref_kyle(list(dmid), list(sv), window, min_obs)
    np.testing.assert_array_equal(got.n_obs, n)
    for g, r in ((got.lam, lam), (got.se, se), (got.tstat, t)):
        np.testing.assert_allclose(g, r, rtol=RTOL, equal_nan=True)
    # the intercept can be ~0 (cancellation in ȳ − λx̄): compare on the scale of ȳ, λx̄
    np.testing.assert_allclose(
        got.intercept, a, rtol=RTOL, atol=1e-12 * np.nanmax(np.abs(dmid)), equal_nan=True
    )


def ref_intervals(edges, tts, tqv, tsg, bts, bb, ba):
    def mid_before(t):
        idx = [j for j in range(len(bts)) if bts[j] < t]
        return (bb[idx[-1]] + ba[idx[-1]]) / 2 if idx else math.nan

    dmid, sv = [], []
    for k in range(len(edges) - 1):
        sv.append(
            math.fsum(tsg[i] * tqv[i] for i in range(len(tts)) if edges[k] <= tts[i] < edges[k + 1])
        )
        dmid.append(mid_before(edges[k + 1]) - mid_before(edges[k]))
    return np.array(dmid), np.array(sv)


# --------------------------------------------------------------------------- estimator


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_vs_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 150
    sv = rng.normal(0, 5e5, n).round(2)
    dmid = (2e-6 * sv + rng.normal(0, 2.0, n)).round(1)
    dmid[rng.random(n) < 0.1] = np.nan
    sv[rng.random(n) < 0.05] = np.nan
    sv[40:52] = 7.0  # a stretch of constant signed volume → zero-variance windows
    check_kyle(dmid, sv, window=12, min_obs=5)
    check_kyle(dmid, sv, window=30, min_obs=3)


def test_real_data_vs_reference() -> None:
    tr = ws_trades()
    bk = ws_book_ticker()
    t0 = (int(min(tr["ts_ns"][0], bk["ts_ns"][0])) // (5 * NS) + 1) * 5 * NS
    edges = np.arange(t0, int(tr["ts_ns"][-1]), 5 * NS)
    sign = aggressor_sign(tr["is_buyer_maker"])
    args = (edges, tr["ts_ns"], tr["quote_volume"], sign, bk["ts_ns"], bk["bid_px"], bk["ask_px"])
    dmid, sv = kyle_intervals(*args)
    rd, rs = ref_intervals(*args)
    np.testing.assert_allclose(dmid, rd, rtol=RTOL, equal_nan=True)
    np.testing.assert_allclose(sv, rs, rtol=RTOL, atol=1e-6)  # USDT; fsum vs running sum
    assert dmid.size > 50 and not np.isnan(dmid).any()
    check_kyle(dmid, sv, window=24, min_obs=10)  # 5-s intervals, 2-minute window
    res = kyle_lambda(dmid, sv, 24, 10)
    assert np.isfinite(res.lam[10:]).all()
    assert np.nanmedian(res.lam) > 0  # buying pressure moves the mid up
    # tick-rule signs agree with the aggressor flag on most volume
    tick = tick_rule_sign(tr["price"])
    assert np.mean(tick[tick != 0] == sign[tick != 0]) > 0.6


def test_planted_slope_recovered() -> None:
    rng = np.random.default_rng(42)
    lam_true = 3e-6
    n = 5000
    sv = rng.normal(0, 1e6, n)
    dmid = 0.4 + lam_true * sv + rng.normal(0, 1.0, n)
    res = kyle_lambda(dmid, sv, window=n, min_obs=30)
    assert abs(res.lam[-1] - lam_true) < 0.05 * lam_true  # se ≈ 1/(1e6·√5000) ≈ 1.4e-8
    assert abs(res.lam[-1] - lam_true) < 4 * res.se[-1]
    assert res.tstat[-1] > 100
    assert abs(res.intercept[-1] - 0.4) < 0.1
    # 60-interval windows: every estimate is informative
    r60 = kyle_lambda(dmid, sv, window=60, min_obs=30)
    assert np.nanmedian(r60.tstat) > 15
    assert abs(np.nanmedian(r60.lam) - lam_true) < 0.05 * lam_true


def test_pure_noise_small_tstat() -> None:
    rng = np.random.default_rng(7)
    n = 5000
    sv = rng.normal(0, 1e6, n)
    dmid = rng.normal(0, 1.0, n)
    res = kyle_lambda(dmid, sv, window=n, min_obs=30)
    assert abs(res.tstat[-1]) < 3.5
    r60 = kyle_lambda(dmid, sv, window=60, min_obs=30)
    t = r60.tstat[~np.isnan(r60.tstat)]
    assert abs(np.median(t)) < 0.2
    assert np.mean(np.abs(t) > 2.0) < 0.1  # ~5 % at the 5 % level (t with 58 dof)


def test_nan_rules() -> None:
    # NaN in either series = missing interval: skipped and counted out of n_obs
    sv = np.array([1.0, 2.0, np.nan, 4.0, 5.0, 5.0, 5.0, 5.0, 7.0])
    dmid = np.array([0.1, 0.3, 0.2, np.nan, 0.9, 1.0, 1.1, 0.8, 0.5])
    r = kyle_lambda(dmid, sv, window=4, min_obs=3)
    np.testing.assert_array_equal(r.n_obs, [1, 2, 2, 2, 2, 2, 3, 4, 4])
    assert np.isnan(r.lam[:6]).all()  # fewer than min_obs valid intervals
    assert np.isnan(r.lam[6:8]).all() and np.isnan(r.tstat[6:8]).all()  # x constant (5s)
    assert np.isfinite(r.lam[8]) and np.isfinite(r.tstat[8])  # x = 5, 5, 5, 7


def test_exact_fit_infinite_tstat() -> None:
    sv = np.array([1.0, 2.0, 4.0, 8.0])
    r = kyle_lambda(sv * 0.5, sv, window=4, min_obs=3)
    assert r.lam[-1] == 0.5 and r.se[-1] == 0.0 and r.tstat[-1] == math.inf


# --------------------------------------------------------------------------- streaming


@st.composite
def series_and_splits(draw):
    n = draw(st.integers(0, 80))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    sv = rng.normal(0, 100, n).round(draw(st.integers(-2, 2)))
    dmid = 0.01 * sv + rng.normal(0, 1, n)
    dmid[rng.random(n) < 0.1] = np.nan
    sv[rng.random(n) < 0.1] = np.nan
    window = draw(st.integers(3, 20))
    min_obs = draw(st.integers(3, window))
    if draw(st.booleans()):
        cuts = list(range(1, n))
    else:
        cuts = sorted({min(c, n) for c in draw(st.lists(st.integers(0, n), max_size=8))})
    return dmid, sv, window, min_obs, cuts


@settings(max_examples=60, deadline=None)
@given(series_and_splits())
def test_stream_equals_batch(case) -> None:
    dmid, sv, window, min_obs, cuts = case
    b = kyle_lambda(dmid, sv, window, min_obs)
    s = KyleLambdaStream(window, min_obs)
    outs = []
    for y, x in zip(np.split(dmid, cuts), np.split(sv, cuts), strict=True):
        outs.append(s.update(y[0].item(), x[0].item()) if y.size == 1 else s.update(y, x))
    for f in ("lam", "se", "tstat", "intercept", "n_obs"):
        got = np.concatenate([getattr(o, f) for o in outs]) if outs else np.empty(0)
        np.testing.assert_array_equal(got, getattr(b, f))


# --------------------------------------------------------------------------- bad input


def test_bad_inputs() -> None:
    y = np.zeros(10)
    x = np.arange(10.0)
    x[6] = np.inf
    x[8] = -np.inf
    with pytest.raises(ValueError, match=r"signed_volume\[6\] is infinite"):
        kyle_lambda(y, x, 5, 3)
    s = KyleLambdaStream(5, 3)
    s.update(np.zeros(3), np.arange(3.0))
    with pytest.raises(ValueError, match=r"dmid\[1\] is infinite"):
        s.update([0.0, -np.inf], [1.0, 2.0])
    with pytest.raises(ValueError, match="min_obs must be >= 3"):
        kyle_lambda(y, y, 5, 2)
    with pytest.raises(ValueError, match="window"):
        kyle_lambda(y, y, 3, 4)
    with pytest.raises(ValueError, match="length"):
        kyle_lambda(y, y[:5], 5, 3)


def test_interval_builder_bad_inputs_and_hand_case() -> None:
    edges = np.array([0, 10, 20, 30], dtype=np.int64)
    tts = np.array([-1, 0, 9, 10, 10, 29, 30], dtype=np.int64)
    tqv = np.array([100.0, 1.0, 2.0, 4.0, 8.0, 16.0, 1000.0])
    sg = np.array([1.0, 1.0, -1.0, 1.0, 1.0, -1.0, 1.0])
    bts = np.array([-5, 10, 25], dtype=np.int64)
    bb = np.array([99.0, 100.0, 103.0])
    ba = np.array([101.0, 102.0, 105.0])
    dmid, sv = kyle_intervals(edges, tts, tqv, sg, bts, bb, ba)
    np.testing.assert_array_equal(sv, [-1.0, 12.0, -16.0])
    # mid before 0: 100; before 10: 100; before 20: 101 (update at 10); before 30: 104
    np.testing.assert_array_equal(dmid, [0.0, 1.0, 3.0])
    d2, _ = kyle_intervals(edges, tts, tqv, sg, bts[1:], bb[1:], ba[1:])
    assert np.isnan(d2[:2]).all() and d2[2] == 3.0  # no book before edges_1 (update at 10)
    bad = tts.copy()
    bad[4] = 5
    with pytest.raises(ValueError, match=r"trade_ts_ns\[4\]=5 is not after"):
        kyle_intervals(edges, bad, tqv, sg, bts, bb, ba)
    with pytest.raises(ValueError, match=r"edges_ns\[2\]"):
        kyle_intervals(np.array([0, 10, 10]), tts, tqv, sg, bts, bb, ba)
    q = tqv.copy()
    q[2] = -1.0
    with pytest.raises(ValueError, match=r"trade_quote_volume\[2\]"):
        kyle_intervals(edges, tts, q, sg, bts, bb, ba)
    with pytest.raises(ValueError, match=r"trade_sign\[0\]=0.5 is not"):
        kyle_intervals(edges, tts, tqv, sg * 0.5, bts, bb, ba)
    p = ba.copy()
    p[1] = np.nan
    with pytest.raises(ValueError, match=r"ask_px\[1\]"):
        kyle_intervals(edges, tts, tqv, sg, bts, bb, p)
    np.testing.assert_array_equal(
        tick_rule_sign([5.0, 5.0, 6.0, 6.0, 4.0, 4.0]), [0, 0, 1, 1, -1, -1]
    )
    with pytest.raises(ValueError, match=r"price\[2\]"):
        tick_rule_sign([1.0, 2.0, 0.0])
