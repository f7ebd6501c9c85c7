"""Tests for perpdesk.features.book: plain-Python references, hand case, stream == batch."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perpdesk.features.book import (
    BookStateStream,
    OibRollingStream,
    book_state,
    half_life_lambda,
    oib_rolling,
    resample_last,
)
from tests.realdata import shared_file, ws_book_ticker

SEC = 1_000_000_000

# --------------------------------------------------------------------------- references


def ref_book(bp, bq, ap, aq, band_bps, half_life_bps):
    lam = math.log(2.0) / (half_life_bps * 1e-4)
    band = band_bps * 1e-4
    rows = []
    for i in range(len(bp)):
        b0, a0 = float(bp[i][0]), float(ap[i][0])
        m = (b0 + a0) / 2.0
        d = []
        for px, qty in ((bp[i], bq[i]), (ap[i], aq[i])):
            dw = du = 0.0
            for p, q in zip(px, qty, strict=True):
                p, q = float(p), float(q)
                if math.isnan(p):
                    continue
                r = abs(p / m - 1.0)
                if r <= band:
                    du += q * p
                    dw += math.exp(-lam * r) * q * p
            d.append((dw, du))
        (dwb, dub), (dwa, dua) = d
        s = dwb + dwa
        oib = (dwb - dwa) / s if s > 0 else math.nan
        rows.append((m, a0 - b0, 1e4 * (a0 - b0) / m, dwb, dwa, dub, dua, oib))
    return np.array(rows, dtype=float).reshape(-1, 8)


def ref_quantile(vals, q):
    v = sorted(vals)
    if not v:
        return math.nan
    pos = q * (len(v) - 1)
    i = math.floor(pos)
    if i >= len(v) - 1:
        return v[-1]
    return v[i] + (v[i + 1] - v[i]) * (pos - i)


def sgn(v):
    return int(v > 0) - int(v < 0)


def ref_rolling(x, mid, w, k, shock=0.7, ewma_s=30.0, qs=(0.1, 0.5, 0.9)):
    n = len(x)
    alpha = 1.0 - math.exp(-1.0 / ewma_s)
    fin = [not math.isnan(v) for v in x]
    out = []
    ew = math.nan
    for t in range(n):
        if fin[t]:
            ew = x[t] if math.isnan(ew) else ew + alpha * (x[t] - ew)
        lo = max(0, t - w + 1)
        win = [x[j] for j in range(lo, t + 1) if fin[j]]
        qv = [ref_quantile(win, q) for q in qs]
        pairs = [j for j in range(lo, t + 1) if j >= 1 and fin[j] and fin[j - 1]]
        same = sum(sgn(x[j]) == sgn(x[j - 1]) for j in pairs)
        pers = same / len(pairs) if pairs else math.nan
        shocks = sum(abs(v) > shock for v in win)
        ir = math.nan
        if k:
            ts_ = [s for s in range(lo, t - k + 1) if fin[s]]
            if len(ts_) >= 2:
                xs = [x[s] for s in ts_]
                ys = [math.log(mid[s + k] / mid[s]) for s in ts_]
                mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
                sxx = sum((a - mx) ** 2 for a in xs)
                syy = sum((b - my) ** 2 for b in ys)
                sxy = sum((a - mx) * (b - my) for a, b in zip(xs, ys, strict=True))
                if sxx > 0 and syy > 0:
                    ir = sxy / math.sqrt(sxx * syy)
        out.append((*qv, ew, pers, shocks, ir))
    return np.array(out, dtype=float).reshape(-1, len(qs) + 4)


def as_rows(r):
    return np.column_stack([r.quantiles, r.ewma, r.persistence, r.shocks, r.impulse])


def as_cols(s):
    return np.column_stack(
        [
            s.mid,
            s.spread,
            s.spread_bps,
            s.depth_bid,
            s.depth_ask,
            s.depth_bid_raw,
            s.depth_ask_raw,
            s.oib,
        ]
    )


def close(a, b, rtol=1e-9, atol=1e-12):
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, equal_nan=True)


def random_book(rng, n, levels, nan_frac=0.1):
    mid = 100.0 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    half = mid * rng.uniform(1e-5, 5e-4, n)
    steps = np.cumsum(rng.uniform(0, 8e-4, (n, levels)), axis=1)
    steps[:, 0] = 0.0
    bp = (mid - half)[:, None] * (1 - steps)
    ap = (mid + half)[:, None] * (1 + steps)
    bq = rng.exponential(1.0, (n, levels))
    aq = rng.exponential(1.0, (n, levels))
    bq[rng.random((n, levels)) < 0.05] = 0.0
    for p in (bp, ap):
        mask = rng.random((n, levels)) < nan_frac
        mask[:, 0] = False
        p[mask] = np.nan
    ts = np.arange(n, dtype=np.int64) * SEC + 1_700_000_000 * SEC
    return ts, bp, bq, ap, aq


# --------------------------------------------------------------------------- book state


def test_lambda_values():
    assert half_life_lambda(25) == pytest.approx(277.2588722, rel=1e-9)
    assert half_life_lambda(50) == pytest.approx(138.6294361, rel=1e-9)


def test_hand_case_two_levels():
    # bid 99.9 / 99.8, ask 100.1 / 100.3 → mid 100.0; δ = 25 bps, h = 10 bps.
    # rel distances: bid 0.001, 0.002; ask 0.001, 0.003 (outside 0.0025 band).
    # λ = ln2/1e-3 = 693.147; w(0.001) = 2^-1 = 0.5, w(0.002) = 0.25.
    # D_bid = 0.5·2·99.9 + 0.25·4·99.8 = 99.9 + 99.8 = 199.7
    # D_ask = 0.5·1·100.1 = 50.05 (level 2 out of band)
    # OIB = (199.7 − 50.05)/(199.7 + 50.05) = 149.65/249.75 = 0.5992…
    s = book_state([0], [[99.9, 99.8]], [[2.0, 4.0]], [[100.1, 100.3]], [[1.0, 3.0]], 25.0, 10.0)
    assert s.mid[0] == pytest.approx(100.0, rel=1e-12)
    assert s.spread[0] == pytest.approx(0.2, rel=1e-9)
    assert s.spread_bps[0] == pytest.approx(20.0, rel=1e-9)
    assert s.depth_bid[0] == pytest.approx(199.7, rel=1e-9)
    assert s.depth_ask[0] == pytest.approx(50.05, rel=1e-9)
    assert s.depth_bid_raw[0] == pytest.approx(2 * 99.9 + 4 * 99.8, rel=1e-12)
    assert s.depth_ask_raw[0] == pytest.approx(100.1, rel=1e-12)
    assert s.oib[0] == pytest.approx(149.65 / 249.75, rel=1e-9)


def test_oib_nan_when_no_depth():
    s = book_state([0], [[99.0]], [[0.0]], [[101.0]], [[0.0]])
    assert math.isnan(s.oib[0])


def test_random_book_vs_reference():
    rng = np.random.default_rng(1)
    ts, bp, bq, ap, aq = random_book(rng, 300, 6)
    for band, h in ((25.0, 25.0), (50.0, 50.0), (10.0, 3.0)):
        s = book_state(ts, bp, bq, ap, aq, band, h)
        close(as_cols(s), ref_book(bp, bq, ap, aq, band, h))


@pytest.mark.parametrize(
    ("field", "row", "col", "value", "match"),
    [
        ("bp", 3, 0, np.nan, r"index 3 \(level 0\): best bid"),
        ("bp", 4, 0, 0.0, r"index 4 \(level 0\): best bid"),
        ("ap", 5, 0, -1.0, r"index 5 \(level 0\): best ask"),
        ("ap", 6, 0, 90.0, r"index 6 \(level 0\): book is crossed"),
        ("bq", 7, 1, -0.5, r"index 7 \(level 1\): bid quantity"),
        ("aq", 8, 2, -0.5, r"index 8 \(level 2\): ask quantity"),
        ("bp", 2, 1, -5.0, r"index 2 \(level 1\): bid price"),
    ],
)
def test_bad_input(field, row, col, value, match):
    rng = np.random.default_rng(2)
    ts, bp, bq, ap, aq = random_book(rng, 10, 3, nan_frac=0.0)
    arrs = {"bp": bp, "bq": bq, "ap": ap, "aq": aq}
    arrs[field][row, col] = value
    with pytest.raises(ValueError, match=match):
        book_state(ts, bp, bq, ap, aq)


def test_locked_book_and_unsorted_ts():
    rng = np.random.default_rng(3)
    ts, bp, bq, ap, aq = random_book(rng, 10, 2, nan_frac=0.0)
    ap2 = ap.copy()
    ap2[1, 0] = bp[1, 0]
    with pytest.raises(ValueError, match=r"index 1 .*crossed or locked"):
        book_state(ts, bp, bq, ap2, aq)
    ts2 = ts.copy()
    ts2[6] = ts2[5]
    with pytest.raises(ValueError, match=r"index 6 .*strictly increasing"):
        book_state(ts2, bp, bq, ap, aq)
    st_ = BookStateStream()
    st_.update(ts[:5], bp[:5], bq[:5], ap[:5], aq[:5])
    with pytest.raises(ValueError, match=r"index 0 .*strictly increasing"):
        st_.update(ts[4:], bp[4:], bq[4:], ap[4:], aq[4:])


def test_book_stream_equals_batch():
    rng = np.random.default_rng(4)
    ts, bp, bq, ap, aq = random_book(rng, 50, 4)
    b = book_state(ts, bp, bq, ap, aq)
    st_ = BookStateStream()
    parts = [
        st_.update(ts[i:j], bp[i:j], bq[i:j], ap[i:j], aq[i:j])
        for i, j in ((0, 1), (1, 20), (20, 50))
    ]
    got = np.vstack([as_cols(p) for p in parts])
    np.testing.assert_array_equal(got, as_cols(b))


# --------------------------------------------------------------------------- resample


def test_resample_last():
    ts = np.array([500_000_000, 1_000_000_000, 1_000_000_000, 1_700_000_000, 3_200_000_000])
    grid, idx = resample_last(ts, SEC)
    np.testing.assert_array_equal(grid, [SEC, 2 * SEC, 3 * SEC])
    np.testing.assert_array_equal(idx, [2, 3, 3])
    assert np.all(ts[idx] <= grid)
    with pytest.raises(ValueError, match="index 2"):
        resample_last(np.array([1, 5, 3]), SEC)


# --------------------------------------------------------------------------- rolling


def random_oib(rng, n, nan_frac=0.05):
    x = np.tanh(np.cumsum(rng.normal(0, 0.4, n)) * 0.5 + rng.normal(0, 0.5, n))
    x[rng.random(n) < nan_frac] = np.nan
    x[rng.random(n) < 0.02] = 0.0
    mid = 100.0 * np.exp(np.cumsum(rng.normal(0, 1e-4, n) + 1e-5 * np.nan_to_num(x)))
    return x, mid


def test_rolling_vs_reference_random():
    rng = np.random.default_rng(5)
    x, mid = random_oib(rng, 400)
    for w, k in ((60, 5), (17, 1), (400, 30)):
        r = oib_rolling(x, mid, window=w, horizon=k)
        close(as_rows(r), ref_rolling(list(x), list(mid), w, k))
    # numpy agrees with the quantile definition
    r = oib_rolling(x, window=60)
    close(r.q(0.9)[100], np.nanquantile(x[41:101], 0.9))


def test_rolling_short_and_empty():
    r = oib_rolling([np.nan, np.nan, 0.5], window=2)
    assert np.isnan(r.q(0.5)[0]) and r.q(0.5)[2] == 0.5
    assert np.isnan(r.ewma[1]) and r.ewma[2] == 0.5
    assert oib_rolling(np.empty(0), window=3).quantiles.shape == (0, 3)
    with pytest.raises(ValueError, match="index 1"):
        oib_rolling([0.1, 1.5], window=3)
    with pytest.raises(ValueError, match="horizon"):
        oib_rolling([0.1], [1.0], window=3, horizon=3)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    cuts=st.lists(st.integers(0, 120), max_size=8),
    w=st.integers(1, 40),
    k=st.integers(0, 10),
)
def test_rolling_stream_equals_batch(seed, cuts, w, k):
    rng = np.random.default_rng(seed)
    x, mid = random_oib(rng, 120, nan_frac=0.2)
    horizon = k if 0 < k < w else None
    b = oib_rolling(x, mid, window=w, horizon=horizon)
    s = OibRollingStream(window=w, horizon=horizon)
    bounds = sorted({0, 120, *cuts})
    parts = [s.update(x[i:j], mid[i:j]) for i, j in itertools.pairwise(bounds)]
    got = np.vstack([as_rows(p) for p in parts])
    np.testing.assert_array_equal(got, as_rows(b))


# --------------------------------------------------------------------------- real data


def test_real_book_ticker_one_level():
    d = ws_book_ticker()
    grid, idx = resample_last(d["ts_ns"], SEC)
    assert grid.size > 100
    cols = [d[c][idx].reshape(-1, 1) for c in ("bid_px", "bid_qty", "ask_px", "ask_qty")]
    s = book_state(grid, *cols, 25.0, 25.0)
    close(as_cols(s), ref_book(*cols, 25.0, 25.0))
    n = min(grid.size, 900)
    r = oib_rolling(s.oib[:n], s.mid[:n], window=60, horizon=5)
    close(as_rows(r), ref_rolling(list(s.oib[:n]), list(s.mid[:n]), 60, 5))
    st_ = OibRollingStream(window=3600, horizon=10)
    b = oib_rolling(s.oib, s.mid, window=3600, horizon=10)
    half = grid.size // 2
    got = np.vstack(
        [
            as_rows(st_.update(s.oib[:half], s.mid[:half])),
            as_rows(st_.update(s.oib[half:], s.mid[half:])),
        ]
    )
    np.testing.assert_array_equal(got, as_rows(b))


def test_real_multilevel_depth_snapshot():
    p = shared_file(
        "exchange-responses/binance-nautilus/http_responses/http_spot_market_depth.json"
    )
    d = json.loads(p.read_text())
    bp = np.array([[float(b[0]) for b in d["bids"]]])
    bq = np.array([[float(b[1]) for b in d["bids"]]])
    ap = np.array([[float(a[0]) for a in d["asks"]]])
    aq = np.array([[float(a[1]) for a in d["asks"]]])
    for band, h in ((25.0, 25.0), (0.5, 0.5)):
        s = book_state([0], bp, bq, ap, aq, band, h)
        close(as_cols(s), ref_book(bp, bq, ap, aq, band, h))


def test_impulse_point_in_time():
    rng = np.random.default_rng(6)
    x, mid = random_oib(rng, 200)
    a = oib_rolling(x, mid, window=50, horizon=5)
    mid2 = mid.copy()
    mid2[121:] *= 1.01 + rng.random(79)
    x2 = x.copy()
    x2[121:] = 0.3
    b = oib_rolling(x2, mid2, window=50, horizon=5)
    np.testing.assert_array_equal(as_rows(a)[:121], as_rows(b)[:121])
    assert not np.array_equal(a.impulse[121:], b.impulse[121:])
