"""KAMA regime FSM: hand-computed codes, precedence table, slow reference, stream == batch,
point in time."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perpdesk.errors import PerpdeskError
from perpdesk.regimes import (
    KamaRegimeStream,
    Regime,
    RegimeInputError,
    classify_regime,
    kama_regime,
    kama_slope,
    lag_regime,
    regime_code,
)
from tests.realdata import feather_bars

F = Fraction

# --------------------------------------------------------------------------- hand example
# kama_period n = 2, KAMA fast 2 / slow 30, ATR period 2, θ = 0.2, ER threshold 0.5.
# Bars: high = close + 0.5, low = close − 0.5.
HAND_C = [10, 11, 12, 13, 14, 13, 12, 11, 10, 10.5, 11]


def hand_expected():
    """Exact rational arithmetic, straight from the definitions (Kaufman 1995, Wilder 1978).

    ER_t = |c_t − c_{t−2}| / (|c_t − c_{t−1}| + |c_{t−1} − c_{t−2}|):
      t = 2,3,4: 2/2 = 1;  t = 5: |13−13|/2 = 0;  t = 6,7,8: 1;  t = 9: 0.5/1.5 = 1/3;  t = 10: 1.
    SC_t = (ER_t·(2/3 − 2/31) + 2/31)²: ER 1 → 4/9, ER 0 → 4/961.
    KAMA_2 = c_2 = 12; KAMA_3 = 12 + 4/9·(13 − 12) = 112/9; KAMA_4 = 112/9 + 4/9·(14 − 112/9)
      = 1064/81.
    TR_0 = 1; a unit close step gives TR = max(1, 1.5, 0.5) = 1.5 (t = 1..8); the half steps at
      t = 9, 10 give TR = max(1, 1, 0) = 1.
    ATR_1 = (1 + 1.5)/2 = 5/4; ATR_t = (ATR_{t−1} + TR_t)/2: 11/8, 23/16, 47/32, ...
    slope_3 = (4/9)/(23/16) = 64/207 ≈ 0.309 (θ < s ≤ 2θ, ER 1 → UPTREND);
    slope_4 = (56/81)/(47/32) = 1792/3807 ≈ 0.471 (> 2θ → BREAKOUT_UP);
    t = 5: ER 0 → NOISE (ER gate); t = 6: ≈ −0.338 → DOWNTREND; t = 7, 8: ≈ −0.484, −0.565 →
    BREAKOUT_DOWN; t = 9: ER 1/3 → NOISE (ER gate); t = 10: ≈ −0.0077, |s| ≤ θ → NOISE.
    """
    c = [F(x).limit_denominator() for x in HAND_C]
    n = 2
    fsc, ssc = F(2, 3), F(2, 31)
    er = [None] * len(c)
    for t in range(n, len(c)):
        er[t] = abs(c[t] - c[t - 2]) / (abs(c[t] - c[t - 1]) + abs(c[t - 1] - c[t - 2]))
    k = [None] * len(c)
    k[n] = c[n]
    for t in range(n + 1, len(c)):
        sc = (er[t] * (fsc - ssc) + ssc) ** 2
        k[t] = k[t - 1] + sc * (c[t] - k[t - 1])
    h = [x + F(1, 2) for x in c]
    lo = [x - F(1, 2) for x in c]
    tr = [h[0] - lo[0]] + [
        max(h[t] - lo[t], abs(h[t] - c[t - 1]), abs(lo[t] - c[t - 1])) for t in range(1, len(c))
    ]
    a = [None] * len(c)
    a[1] = (tr[0] + tr[1]) / 2
    for t in range(2, len(c)):
        a[t] = (a[t - 1] + tr[t]) / 2
    slope = [None] * len(c)
    for t in range(n + 1, len(c)):
        slope[t] = (k[t] - k[t - 1]) / a[t]
    return er, k, a, slope


def hand_bars():
    c = np.array(HAND_C, dtype=float)
    return c + 0.5, c - 0.5, c


def test_hand_example_slopes_and_codes():
    er, k, a, slope = hand_expected()
    # the values written out in hand_expected's docstring
    assert k[3] == F(112, 9) and k[4] == F(1064, 81)
    assert a[3] == F(23, 16) and a[4] == F(47, 32)
    assert slope[3] == F(64, 207) and slope[4] == F(1792, 3807)
    assert er[5] == 0 and er[9] == F(1, 3)

    h, lo, c = hand_bars()
    s = kama_slope(h, lo, c, kama_period=2, atr_period=2)
    assert np.isnan(s[:3]).all()
    np.testing.assert_allclose(s[3:], [float(x) for x in slope[3:]], rtol=1e-12)
    codes = kama_regime(h, lo, c, kama_period=2, slope_threshold=0.2, atr_period=2)
    assert codes.dtype == np.int8
    assert codes.tolist() == [0, 0, 0, 1, 2, 0, -1, -2, -2, 0, 0]


# --------------------------------------------------------------------------- precedence


@pytest.mark.parametrize(
    ("slope", "er", "code"),
    [
        (0.0, 0.9, 0),
        (0.15, 0.9, 0),  # |slope| = θ exactly: NOISE (trend needs slope > θ)
        (0.151, 0.9, 1),
        (0.3, 0.9, 1),  # slope = 2θ exactly: still UPTREND
        (0.301, 0.9, 2),
        (-0.151, 0.9, -1),
        (-0.3, 0.9, -1),
        (-0.301, 0.9, -2),
        (0.9, 0.5, 0),  # ER = threshold: NOISE, breakout included (ER gates every trend state)
        (0.9, 0.3, 0),
        (-0.9, 0.49, 0),
        (0.9, 0.51, 2),
        (math.nan, 0.9, 0),  # warm-up
        (0.9, math.nan, 0),
    ],
)
def test_precedence_table(slope, er, code):
    assert regime_code(slope, er, 0.15, 0.5) == code
    assert classify_regime(np.array([slope]), np.array([er]), 0.15, 0.5).tolist() == [code]


def test_regime_enum_values():
    assert [int(r) for r in Regime] == [-2, -1, 0, 1, 2]
    assert Regime.BREAKOUT_DOWN.name == "BREAKOUT_DOWN" and Regime.NOISE == 0


# --------------------------------------------------------------------------- slow reference


def ref_codes(h, lo, c, n=10, th=0.15, e=0.5, p=14, fast=2, slow=30):
    """Plain loops from the definitions in the module docstring."""
    m = len(c)
    er = [math.nan] * m
    for t in range(n, m):
        den = sum(abs(c[i] - c[i - 1]) for i in range(t - n + 1, t + 1))
        er[t] = abs(c[t] - c[t - n]) / den if den else 0.0
    fsc, ssc = 2 / (fast + 1), 2 / (slow + 1)
    k = [math.nan] * m
    if m > n:
        k[n] = c[n]
    for t in range(n + 1, m):
        k[t] = k[t - 1] + (er[t] * (fsc - ssc) + ssc) ** 2 * (c[t] - k[t - 1])
    tr = [h[0] - lo[0]] + [
        max(h[t] - lo[t], abs(h[t] - c[t - 1]), abs(lo[t] - c[t - 1])) for t in range(1, m)
    ]
    a = [math.nan] * m
    if m >= p:
        a[p - 1] = sum(tr[:p]) / p
    for t in range(p, m):
        a[t] = (a[t - 1] * (p - 1) + tr[t]) / p
    out, slopes = [], []
    for t in range(m):
        s = (k[t] - k[t - 1]) / a[t] if t >= 1 and a[t] > 0 else math.nan
        slopes.append(s)
        if math.isnan(s) or math.isnan(er[t]) or er[t] <= e:
            out.append(0)
        elif s > 2 * th:
            out.append(2)
        elif s < -2 * th:
            out.append(-2)
        elif s > th:
            out.append(1)
        elif s < -th:
            out.append(-1)
        else:
            out.append(0)
    return np.array(out), np.array(slopes)


def trending_bars(rng, n):
    """Random walk with drift switching sign every 60 bars, so every state shows up."""
    drift = np.repeat(rng.choice([-0.004, 0.0, 0.004], size=n // 60 + 1), 60)[:n]
    c = 100 * np.exp(np.cumsum(drift + rng.normal(0, 0.003, n)))
    o = np.r_[c[0], c[:-1]]
    h = np.maximum(o, c) * (1 + rng.exponential(0.001, n))
    lo = np.minimum(o, c) * (1 - rng.exponential(0.001, n))
    return h, lo, c


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vs_slow_reference(seed):
    h, lo, c = trending_bars(np.random.default_rng(seed), 1500)
    want, want_s = ref_codes(h.tolist(), lo.tolist(), c.tolist())
    got = kama_regime(h, lo, c)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(kama_slope(h, lo, c), want_s, rtol=1e-9, equal_nan=True)
    assert set(np.unique(got).tolist()) == {-2, -1, 0, 1, 2}
    want2, _ = ref_codes(h.tolist(), lo.tolist(), c.tolist(), 5, 0.3, 0.4, 7, 3, 20)
    got2 = kama_regime(h, lo, c, 5, 0.3, 0.4, atr_period=7, kama_fast=3, kama_slow=20)
    np.testing.assert_array_equal(got2, want2)


def test_warmup_is_noise():
    h, lo, c = trending_bars(np.random.default_rng(5), 40)
    s = kama_slope(h, lo, c)  # needs KAMA_{t−1} (t ≥ 11) and ATR_t (t ≥ 13)
    assert np.isnan(s[:13]).all() and not np.isnan(s[13:]).any()
    assert (kama_regime(h, lo, c)[:13] == 0).all()
    assert (kama_regime(h[:5], lo[:5], c[:5]) == 0).all()


def test_flat_market_is_noise():
    c = np.full(50, 7.0)
    assert (kama_regime(c, c, c) == 0).all()  # ATR 0 → slope NaN, ER 0
    assert np.isnan(kama_slope(c, c, c)).all()


# --------------------------------------------------------------------------- stream == batch


@st.composite
def splits(draw):
    n = draw(st.integers(1, 160))
    seed = draw(st.integers(0, 2**32 - 1))
    sizes = draw(st.lists(st.integers(1, 30), max_size=40))
    if draw(st.booleans()):
        sizes = [1] * n
    cuts, i = [], 0
    for s in sizes:
        i += s
        if i >= n:
            break
        cuts.append(i)
    return seed, n, cuts


@settings(max_examples=50, deadline=None)
@given(splits())
def test_stream_equals_batch_bitwise(case):
    seed, n, cuts = case
    h, lo, c = trending_bars(np.random.default_rng(seed), n)
    kw = {"kama_period": 6, "slope_threshold": 0.1, "er_threshold": 0.3, "atr_period": 5}
    want = kama_regime(h, lo, c, **kw)
    want_s = kama_slope(h, lo, c, 6, atr_period=5)
    st_ = KamaRegimeStream(**kw)
    codes, slopes = [], []
    for ph, pl, pc in zip(np.split(h, cuts), np.split(lo, cuts), np.split(c, cuts), strict=True):
        k, s, _ = st_.update_full(ph, pl, pc)
        codes.append(k)
        slopes.append(s)
    np.testing.assert_array_equal(np.concatenate(codes), want)
    np.testing.assert_array_equal(np.concatenate(slopes), want_s)  # NaN == NaN here, bit equal
    assert st_.n_bars == n
    assert st_.last_slope == want_s[-1] or (math.isnan(st_.last_slope) and math.isnan(want_s[-1]))


def test_stream_scalar_bars_and_rejected_update():
    h, lo, c = trending_bars(np.random.default_rng(9), 300)
    want = kama_regime(h, lo, c)
    s = KamaRegimeStream()
    got = [int(s.update(h[i], lo[i], c[i])[0]) for i in range(150)]
    with pytest.raises(ValueError, match="low"):
        s.update(h[150], h[150] * 1.01, c[150])  # low above high: rejected, state unchanged
    with pytest.raises(ValueError):
        s.update([h[150], h[151]], [lo[150], lo[151]], [c[150], -1.0])
    assert s.n_bars == 150
    got += s.update(h[150:], lo[150:], c[150:]).tolist()
    assert got == want.tolist()


def test_stream_on_real_bars():
    b = feather_bars("1000PEPE_USDT_USDT-15m-futures.feather")
    h, lo, c = b["high"][:5000], b["low"][:5000], b["close"][:5000]
    want = kama_regime(h, lo, c)
    s = KamaRegimeStream()
    got = np.concatenate(
        [s.update(h[i : i + 333], lo[i : i + 333], c[i : i + 333]) for i in range(0, 5000, 333)]
    )
    np.testing.assert_array_equal(got, want)
    want_ref, _ = ref_codes(h.tolist(), lo.tolist(), c.tolist())
    np.testing.assert_array_equal(want, want_ref)


# --------------------------------------------------------------------------- point in time


def test_appending_bars_leaves_earlier_codes_unchanged():
    h, lo, c = trending_bars(np.random.default_rng(11), 800)
    full = kama_regime(h, lo, c)
    full_s = kama_slope(h, lo, c)
    for k in (1, 12, 13, 14, 100, 437, 799):
        np.testing.assert_array_equal(kama_regime(h[:k], lo[:k], c[:k]), full[:k])
        np.testing.assert_array_equal(kama_slope(h[:k], lo[:k], c[:k]), full_s[:k])
    # a wild future bar changes nothing before it
    h2, lo2, c2 = h.copy(), lo.copy(), c.copy()
    h2[500:], lo2[500:], c2[500:] = h[500:] * 3, lo[500:] * 3, c[500:] * 3
    np.testing.assert_array_equal(kama_regime(h2, lo2, c2)[:500], full[:500])


def test_lag_regime_uses_previous_bar():
    codes = np.array([2, -1, 0, 1], dtype=np.int8)
    assert lag_regime(codes).tolist() == [0, 2, -1, 0]
    assert lag_regime(np.array([], dtype=np.int8)).size == 0


# --------------------------------------------------------------------------- bad input


def test_bad_parameters_one_line():
    h, lo, c = hand_bars()
    with pytest.raises(RegimeInputError, match=r"slope_threshold = -0\.1: must be finite and > 0"):
        kama_regime(h, lo, c, slope_threshold=-0.1)
    with pytest.raises(RegimeInputError, match=r"er_threshold = 1.0: must be in \[0, 1\)"):
        KamaRegimeStream(er_threshold=1.0)
    with pytest.raises(RegimeInputError, match="atr_period = 0"):
        kama_slope(h, lo, c, atr_period=0)
    with pytest.raises(RegimeInputError, match="equal length"):
        classify_regime(np.zeros(3), np.zeros(2))
    with pytest.raises(RegimeInputError, match="1-d"):
        lag_regime(np.zeros((2, 2)))
    assert issubclass(RegimeInputError, PerpdeskError)
    with pytest.raises(ValueError, match=r"close\[3\]"):
        kama_regime(h, lo, np.r_[c[:3], np.nan, c[4:]])
