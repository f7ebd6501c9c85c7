"""Trend kernels vs plain-loop references, streaming == batch, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perpdesk.features.trend import (
    AtrStream,
    EfficiencyRatioStream,
    KamaStream,
    RealisedVolStream,
    ZScoreStream,
    atr,
    efficiency_ratio,
    kama,
    realised_vol,
    true_range,
    zscore_atr,
)
from tests.realdata import feather_bars

RTOL = 1e-9

# --------------------------------------------------------------------------- references
# Straight from the definitions in the module docstrings, plain Python floats and loops.


def ref_er(c, n):
    out = [math.nan] * len(c)
    for t in range(n, len(c)):
        den = sum(abs(c[i] - c[i - 1]) for i in range(t - n + 1, t + 1))
        out[t] = abs(c[t] - c[t - n]) / den if den != 0 else 0.0
    return np.array(out)


def ref_kama(c, n=10, fast=2, slow=30):
    er = ref_er(c, n)
    fsc, ssc = 2 / (fast + 1), 2 / (slow + 1)
    out = [math.nan] * len(c)
    if len(c) > n:
        out[n] = c[n]
    for t in range(n + 1, len(c)):
        sc = (er[t] * (fsc - ssc) + ssc) ** 2
        out[t] = out[t - 1] + sc * (c[t] - out[t - 1])
    return np.array(out)


def ref_tr(h, lo, c):
    out = []
    for t in range(len(h)):
        if t == 0:
            out.append(h[0] - lo[0])
        else:
            out.append(max(h[t] - lo[t], abs(h[t] - c[t - 1]), abs(lo[t] - c[t - 1])))
    return out


def ref_atr(h, lo, c, p=14):
    tr = ref_tr(h, lo, c)
    out = [math.nan] * len(h)
    if len(h) >= p:
        out[p - 1] = sum(tr[:p]) / p
    for t in range(p, len(h)):
        out[t] = (out[t - 1] * (p - 1) + tr[t]) / p
    return np.array(out)


def ref_z(h, lo, c, m=20, p=14):
    a = ref_atr(h, lo, c, p)
    out = [math.nan] * len(c)
    for t in range(max(m, p) - 1, len(c)):
        sma = sum(c[t - m + 1 : t + 1]) / m
        out[t] = (c[t] - sma) / a[t] if a[t] != 0 else math.nan
    return np.array(out)


def ref_rv(c, w=20, ddof=1):
    r = [math.nan] + [math.log(c[i] / c[i - 1]) for i in range(1, len(c))]
    out = [math.nan] * len(c)
    for t in range(w, len(c)):
        win = r[t - w + 1 : t + 1]
        mu = sum(win) / w
        out[t] = math.sqrt(sum((x - mu) ** 2 for x in win) / (w - ddof))
    return np.array(out)


def close_(a, b):
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_allclose(a, b, rtol=RTOL, atol=0, equal_nan=True)


def rand_bars(rng, n):
    c = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    o = np.r_[c[0], c[:-1]]
    h = np.maximum(o, c) * (1 + rng.exponential(0.003, n))
    lo = np.minimum(o, c) * (1 - rng.exponential(0.003, n))
    return h, lo, c


# --------------------------------------------------------------------------- vs reference


@pytest.mark.parametrize("seed", [0, 1])
def test_kernels_vs_reference_random(seed):
    rng = np.random.default_rng(seed)
    h, lo, c = rand_bars(rng, 700)
    c[100:115] = c[100]  # flat run: ER denominator 0 → ER 0
    hl, ll, cl = h.tolist(), lo.tolist(), c.tolist()
    close_(efficiency_ratio(c), ref_er(cl, 10))
    close_(efficiency_ratio(c, 3), ref_er(cl, 3))
    assert (efficiency_ratio(c)[111:115] == 0).all()
    close_(kama(c), ref_kama(cl))
    close_(kama(c, 5, 3, 20), ref_kama(cl, 5, 3, 20))
    close_(true_range(h, lo, c), np.array(ref_tr(hl, ll, cl)))
    close_(atr(h, lo, c), ref_atr(hl, ll, cl))
    close_(atr(h, lo, c, 1), ref_atr(hl, ll, cl, 1))
    close_(zscore_atr(h, lo, c), ref_z(hl, ll, cl))
    close_(zscore_atr(h, lo, c, 5, 30), ref_z(hl, ll, cl, 5, 30))
    close_(realised_vol(c), ref_rv(cl))
    close_(realised_vol(c, 7, ddof=0), ref_rv(cl, 7, 0))
    close_(realised_vol(c, 20, periods_per_year=8760), ref_rv(cl) * math.sqrt(8760))


@pytest.mark.parametrize(
    "name",
    ["BTC_USDT_USDT-1h-futures.feather", "1000PEPE_USDT_USDT-15m-futures.feather"],
)
def test_kernels_vs_reference_real(name):
    b = feather_bars(name)
    h, lo, c = b["high"][:6000], b["low"][:6000], b["close"][:6000]
    hl, ll, cl = h.tolist(), lo.tolist(), c.tolist()
    close_(efficiency_ratio(c), ref_er(cl, 10))
    close_(kama(c), ref_kama(cl))
    close_(atr(h, lo, c), ref_atr(hl, ll, cl))
    close_(zscore_atr(h, lo, c), ref_z(hl, ll, cl))
    close_(realised_vol(c, 24, periods_per_year=8760), ref_rv(cl, 24) * math.sqrt(8760))


def test_warmup_counts():
    h, lo, c = rand_bars(np.random.default_rng(3), 60)
    assert np.isnan(efficiency_ratio(c, 10)).sum() == 10
    assert np.isnan(kama(c, 10)).sum() == 10 and kama(c, 10)[10] == c[10]
    assert np.isnan(atr(h, lo, c, 14)).sum() == 13
    assert np.isnan(zscore_atr(h, lo, c, 20, 14)).sum() == 19
    assert np.isnan(zscore_atr(h, lo, c, 5, 14)).sum() == 13
    assert np.isnan(realised_vol(c, 20)).sum() == 20
    assert true_range(h, lo, c)[0] == h[0] - lo[0]
    # shorter than the warm-up: all NaN, no error
    assert np.isnan(kama(c[:5], 10)).all() and np.isnan(atr(h[:3], lo[:3], c[:3])).all()


def test_flat_prices_zscore_nan():
    c = np.full(40, 5.0)
    assert np.isnan(zscore_atr(c, c, c)).all()
    assert (efficiency_ratio(c)[10:] == 0).all()
    np.testing.assert_array_equal(kama(c)[10:], 5.0)


# --------------------------------------------------------------------------- streaming


def split_points(draw_sizes, n):
    cuts, i = [], 0
    for s in draw_sizes:
        i += s
        if i >= n:
            break
        cuts.append(i)
    return cuts


@st.composite
def bars_and_splits(draw):
    n = draw(st.integers(1, 90))
    seed = draw(st.integers(0, 2**32 - 1))
    sizes = draw(st.lists(st.integers(1, 25), min_size=0, max_size=40))
    if draw(st.booleans()):
        sizes = [1] * n
    return seed, n, split_points(sizes, n)


def run_stream(stream, arrays, cuts):
    parts = [np.split(a, cuts) for a in arrays]
    outs = [stream.update(*chunk) for chunk in zip(*parts, strict=True)]
    return np.concatenate(outs)


@settings(max_examples=60, deadline=None)
@given(bars_and_splits())
def test_streaming_equals_batch(case):
    seed, n, cuts = case
    rng = np.random.default_rng(seed)
    h, lo, c = rand_bars(rng, n)
    if n > 20 and rng.random() < 0.3:
        c[5:18] = c[5]
        h[5:18] = lo[5:18] = c[5]
    p = int(rng.integers(1, 15))
    eq = np.testing.assert_array_equal
    eq(run_stream(EfficiencyRatioStream(p), [c], cuts), efficiency_ratio(c, p))
    eq(run_stream(KamaStream(p, 2, 30), [c], cuts), kama(c, p, 2, 30))
    eq(run_stream(AtrStream(p), [h, lo, c], cuts), atr(h, lo, c, p))
    m = int(rng.integers(1, 25))
    eq(run_stream(ZScoreStream(m, p), [h, lo, c], cuts), zscore_atr(h, lo, c, m, p))
    w = int(rng.integers(2, 25))
    eq(
        run_stream(RealisedVolStream(w, 1, 365.0), [c], cuts),
        realised_vol(c, w, 1, periods_per_year=365.0),
    )


def test_streaming_scalar_bars():
    h, lo, c = rand_bars(np.random.default_rng(5), 50)
    s = AtrStream(14)
    out = np.concatenate(
        [s.update(float(a), float(b), float(d)) for a, b, d in zip(h, lo, c, strict=True)]
    )
    np.testing.assert_array_equal(out, atr(h, lo, c))
    assert s.n_bars == 50


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 0.0, -1.0])
def test_bad_price_names_index(bad):
    h, lo, c = rand_bars(np.random.default_rng(7), 30)
    c2 = c.copy()
    c2[17] = bad
    c2[20] = bad
    for f in (efficiency_ratio, kama, realised_vol):
        with pytest.raises(ValueError, match=r"close\[17\]"):
            f(c2)
    for f in (atr, zscore_atr, true_range):
        with pytest.raises(ValueError, match=r"close\[17\]"):
            f(h, lo, c2)
    h2 = h.copy()
    h2[4] = bad
    with pytest.raises(ValueError, match=r"high\[4\]"):
        atr(h2, lo, c)


def test_high_below_low_and_lengths():
    h, lo, c = rand_bars(np.random.default_rng(8), 30)
    h2 = h.copy()
    h2[9] = lo[9] * 0.99
    with pytest.raises(ValueError, match=r"high\[9\]"):
        atr(h2, lo, c)
    with pytest.raises(ValueError, match="lengths"):
        zscore_atr(h, lo, c[:-1])
    with pytest.raises(ValueError):
        kama(c, 0)
    with pytest.raises(ValueError):
        realised_vol(c, 1, ddof=1)
    with pytest.raises(ValueError):
        realised_vol(c, 5, periods_per_year=0)


def test_stream_bad_input_names_overall_index_and_keeps_state():
    h, lo, c = rand_bars(np.random.default_rng(9), 40)
    s = ZScoreStream()
    out1 = s.update(h[:25], lo[:25], c[:25])
    bad = c[25:].copy()
    bad[3] = np.nan
    with pytest.raises(ValueError, match=r"close\[28 \(index 3 of this update\)\]"):
        s.update(h[25:], lo[25:], bad)
    out2 = s.update(h[25:], lo[25:], c[25:])
    np.testing.assert_array_equal(np.r_[out1, out2], zscore_atr(h, lo, c))
