"""OFI kernels vs slow references from the CKS (2014) definitions, streaming == batch, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perpdesk.features.ofi import (
    OfiBuckets,
    OfiStream,
    ofi_buckets,
    ofi_events,
    ofi_trailing,
)
from tests.realdata import ws_book_ticker

RTOL = 1e-9

# --------------------------------------------------------------------------- references
# Straight from the definitions with plain loops; window / bucket sums with math.fsum
# (exactly rounded), so the kernels' compensated running sums are checked to a few ulp.


def ref_events(bp, bq, ap, aq) -> list[float]:
    out = [0.0]
    for n in range(1, len(bp)):
        e = 0.0
        if bp[n] >= bp[n - 1]:
            e += bq[n]
        if bp[n] <= bp[n - 1]:
            e -= bq[n - 1]
        if ap[n] <= ap[n - 1]:
            e -= aq[n]
        if ap[n] >= ap[n - 1]:
            e += aq[n - 1]
        out.append(e)
    return out


def ref_trailing(ts, bp, bq, ap, aq, window):
    e = ref_events(bp, bq, ap, aq)
    depth = [(bq[j] + aq[j]) / 2 for j in range(len(bp))]
    ofi, mean_d, norm, cnt = [], [], [], []
    for i in range(len(ts)):
        idx = [j for j in range(i + 1) if ts[i] - window < ts[j] <= ts[i]]
        s = math.fsum(e[j] for j in idx)
        md = math.fsum(depth[j] for j in idx) / len(idx)
        ofi.append(s)
        mean_d.append(md)
        norm.append(s / md if md > 0 else math.nan)
        cnt.append(len(idx))
    return e, ofi, mean_d, norm, cnt


def ref_buckets(ts, bp, bq, ap, aq, width):
    e = ref_events(bp, bq, ap, aq)
    first, last = int(ts[0]) // width, int(ts[-1]) // width
    rows = []
    for k in range(first, last + 1):
        idx = [j for j in range(len(ts)) if k * width <= ts[j] < (k + 1) * width]
        s = math.fsum(e[j] for j in idx)
        if idx:
            md = math.fsum((bq[j] + aq[j]) / 2 for j in idx) / len(idx)
            nm = s / md if md > 0 else math.nan
        else:
            md = nm = math.nan
        rows.append((k * width, s, md, nm, len(idx)))
    return [np.array(c) for c in zip(*rows, strict=True)]


def close(a, b, atol=0.0) -> None:
    np.testing.assert_allclose(np.asarray(a, dtype=float), b, rtol=RTOL, atol=atol, equal_nan=True)


def check_trailing(ts, bp, bq, ap, aq, window) -> None:
    got = ofi_trailing(ts, bp, bq, ap, aq, window)
    e, ofi, md, nm, cnt = ref_trailing(ts, bp, bq, ap, aq, window)
    scale = max(1.0, float(np.max(np.abs(bq))), float(np.max(np.abs(aq))))
    close(got.e, e)
    # a window sum can cancel to exactly 0; allow an absolute error of 1e-12 x the qty scale
    close(got.ofi, ofi, atol=1e-12 * scale)
    close(got.mean_depth, md)
    nz = np.abs(np.asarray(ofi)) > 1e-9 * scale
    close(got.ofi_norm[nz], np.asarray(nm)[nz])
    np.testing.assert_array_equal(got.count, cnt)


def check_buckets(ts, bp, bq, ap, aq, width) -> None:
    got = ofi_buckets(ts, bp, bq, ap, aq, width)
    start, s, md, nm, cnt = ref_buckets(ts, bp, bq, ap, aq, width)
    scale = max(1.0, float(np.max(bq)), float(np.max(aq)))
    np.testing.assert_array_equal(got.start_ns, start)
    close(got.ofi, s, atol=1e-12 * scale)
    close(got.mean_depth, md)
    nz = np.abs(s) > 1e-9 * scale
    close(got.ofi_norm[nz], nm[nz])
    np.testing.assert_array_equal(got.count, cnt)


def random_book(rng: np.random.Generator, n: int, tick: float = 0.5):
    """Random-walk top of book on a tick grid (many equal prices, so every branch is hit)."""
    ts = np.cumsum(rng.integers(0, 4, n)).astype(np.int64) + 1_700_000_000_000_000_000
    mid = 1000.0 + tick * np.cumsum(rng.integers(-1, 2, n))
    spread = tick * rng.integers(1, 3, n)
    bp = mid - tick * rng.integers(0, 2, n)
    ap = bp + spread
    bq = np.round(rng.exponential(2.0, n), 3)
    aq = np.round(rng.exponential(2.0, n), 3)
    return ts, bp, bq, ap, aq


# --------------------------------------------------------------------------- hand case


def test_hand_checked_case() -> None:
    ts = np.array([0, 5, 5, 12, 30], dtype=np.int64)
    bp = np.array([100.0, 100, 101, 101, 99])
    bq = np.array([1.0, 2, 3, 1, 4])
    ap = np.array([102.0, 102, 102, 101.5, 103])
    aq = np.array([2.0, 2, 1, 5, 1])
    # u1: bid same px, qty 1→2: +2−1; ask same px/qty: −2+2          → e = 1
    # u2: bid up: +3; ask same px, qty 2→1: −1+2                     → e = 4
    # u3: bid same px, qty 3→1: +1−3; ask down to 101.5: −5          → e = −7
    # u4: bid down: −1 (old qty); ask up: +5 (old qty)               → e = 4
    np.testing.assert_array_equal(ofi_events(bp, bq, ap, aq), [0.0, 1.0, 4.0, -7.0, 4.0])
    tr = ofi_trailing(ts, bp, bq, ap, aq, 10)
    # window (t−10, t]: t=5 → {0,5} then {0,5,5}; t=12 → {5,5,12}; t=30 → {30}
    np.testing.assert_array_equal(tr.ofi, [0.0, 1.0, 5.0, -2.0, 4.0])
    np.testing.assert_array_equal(tr.count, [1, 2, 3, 3, 1])
    np.testing.assert_allclose(tr.mean_depth, [1.5, 1.75, 5.5 / 3, 7 / 3, 2.5])
    np.testing.assert_allclose(tr.ofi_norm, [0.0, 1 / 1.75, 5 / (5.5 / 3), -2 / (7 / 3), 1.6])
    b = ofi_buckets(ts, bp, bq, ap, aq, 10)
    np.testing.assert_array_equal(b.start_ns, [0, 10, 20, 30])
    np.testing.assert_array_equal(b.ofi, [5.0, -7.0, 0.0, 4.0])
    np.testing.assert_array_equal(b.count, [3, 1, 0, 1])
    assert math.isnan(b.mean_depth[2]) and math.isnan(b.ofi_norm[2])
    np.testing.assert_allclose(b.ofi_norm[[0, 1, 3]], [5 / (5.5 / 3), -7 / 3, 1.6])


def test_zero_depth_gives_nan_norm() -> None:
    tr = ofi_trailing([0, 1], [1.0, 1.0], [0.0, 0.0], [2.0, 2.0], [0.0, 0.0], 10)
    assert np.all(tr.ofi == 0) and np.all(np.isnan(tr.ofi_norm))


def test_empty() -> None:
    e = np.empty(0)
    assert ofi_events(e, e, e, e).size == 0
    assert ofi_trailing(np.empty(0, np.int64), e, e, e, e, 5).ofi.size == 0
    assert ofi_buckets(np.empty(0, np.int64), e, e, e, e, 5).ofi.size == 0


# --------------------------------------------------------------------------- vs reference


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_vs_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ts, bp, bq, ap, aq = random_book(rng, 400)
    check_trailing(ts, bp, bq, ap, aq, int(rng.integers(1, 40)))
    check_buckets(ts, bp, bq, ap, aq, int(rng.integers(1, 40)))


def test_real_data_vs_reference() -> None:
    b = ws_book_ticker()
    ts, bp, bq, ap, aq = (b[k] for k in ("ts_ns", "bid_px", "bid_qty", "ask_px", "ask_qty"))
    n = 6000  # the O(n·window) reference is slow in pure Python; full-length checks below
    sl = slice(0, n)
    check_trailing(ts[sl], bp[sl], bq[sl], ap[sl], aq[sl], 1_000_000_000)  # 1 s
    check_buckets(ts[sl], bp[sl], bq[sl], ap[sl], aq[sl], 1_000_000_000)
    # full capture: e vs reference, 10 s buckets vs reference
    np.testing.assert_allclose(ofi_events(bp, bq, ap, aq), ref_events(bp, bq, ap, aq), rtol=RTOL)
    check_buckets(ts, bp, bq, ap, aq, 10_000_000_000)
    # full capture, trailing 1 s: compare at every 50th update (reference is O(window))
    tr = ofi_trailing(ts, bp, bq, ap, aq, 1_000_000_000)
    e = np.asarray(ref_events(bp, bq, ap, aq))
    lo = 0
    for i in range(0, ts.size, 50):
        while ts[lo] <= ts[i] - 1_000_000_000:
            lo += 1
        s = math.fsum(e[lo : i + 1])
        md = math.fsum((bq[lo : i + 1] + aq[lo : i + 1]) / 2) / (i + 1 - lo)
        np.testing.assert_allclose(tr.ofi[i], s, rtol=RTOL, atol=1e-12 * 100)
        np.testing.assert_allclose(tr.mean_depth[i], md, rtol=RTOL)
        assert tr.count[i] == i + 1 - lo
    assert np.count_nonzero(tr.ofi) > ts.size // 2  # non-trivial


# --------------------------------------------------------------------------- streaming


def _split_points(draw_list: list[int], n: int) -> list[int]:
    return sorted({min(max(p, 0), n) for p in draw_list})


@st.composite
def book_and_splits(draw):
    n = draw(st.integers(0, 120))
    seed = draw(st.integers(0, 2**32 - 1))
    ts, bp, bq, ap, aq = random_book(np.random.default_rng(seed), n)
    one_at_a_time = draw(st.booleans())
    cuts = list(range(1, n)) if one_at_a_time else draw(st.lists(st.integers(0, n), max_size=8))
    window = draw(st.integers(1, 30))
    width = draw(st.integers(1, 30))
    return (ts, bp, bq, ap, aq), _split_points(cuts, n), window, width


@settings(max_examples=60, deadline=None)
@given(book_and_splits())
def test_stream_equals_batch(case) -> None:
    arrs, cuts, window, width = case
    tr = ofi_trailing(*arrs, window)
    bk = ofi_buckets(*arrs, width)
    stream = OfiStream(window, width)
    parts, emitted = [], []
    for chunk in zip(*(np.split(a, cuts) for a in arrs), strict=True):
        if chunk[0].size == 1 and np.random.default_rng(chunk[0][0]).random() < 0.5:
            chunk = tuple(a[0].item() for a in chunk)  # scalar form
        u = stream.update(*chunk)
        parts.append(u)
        emitted.append(u.buckets)
    for f in ("e", "ofi", "mean_depth", "ofi_norm", "count"):
        got = np.concatenate([getattr(p, f) for p in parts])
        np.testing.assert_array_equal(got, getattr(tr, f))  # bit-identical
    allb = OfiBuckets.concat([*emitted, stream.pending()])
    for f in ("start_ns", "ofi", "mean_depth", "ofi_norm", "count"):
        np.testing.assert_array_equal(getattr(allb, f), getattr(bk, f))


def test_stream_real_data_microbatches() -> None:
    b = ws_book_ticker()
    arrs = tuple(b[k] for k in ("ts_ns", "bid_px", "bid_qty", "ask_px", "ask_qty"))
    tr = ofi_trailing(*arrs, 2_000_000_000)
    bk = ofi_buckets(*arrs, 1_000_000_000)
    rng = np.random.default_rng(5)
    cuts = np.sort(rng.choice(arrs[0].size, 300, replace=False))
    stream = OfiStream(2_000_000_000, 1_000_000_000)
    us = [stream.update(*c) for c in zip(*(np.split(a, cuts) for a in arrs), strict=True)]
    np.testing.assert_array_equal(np.concatenate([u.ofi for u in us]), tr.ofi)
    np.testing.assert_array_equal(np.concatenate([u.ofi_norm for u in us]), tr.ofi_norm)
    allb = OfiBuckets.concat([*(u.buckets for u in us), stream.pending()])
    np.testing.assert_array_equal(allb.ofi, bk.ofi)
    np.testing.assert_array_equal(allb.count, bk.count)


# --------------------------------------------------------------------------- bad input


def _good(n: int = 6):
    return random_book(np.random.default_rng(0), n)


@pytest.mark.parametrize(
    ("arg", "value", "msg"),
    [
        (1, math.nan, "bid_px is not finite"),
        (1, 0.0, "bid_px is not finite"),
        (1, -5.0, "bid_px is not finite"),
        (3, math.inf, "ask_px is not finite"),
        (2, -0.1, "bid_qty is not finite and >= 0"),
        (4, math.nan, "ask_qty is not finite"),
        (2, math.inf, "bid_qty is not finite"),
    ],
)
def test_bad_values_name_index(arg: int, value: float, msg: str) -> None:
    arrs = list(_good())
    arrs[arg] = arrs[arg].copy()
    arrs[arg][3] = value
    if arg in (1, 3):
        arrs[arg][4] = value  # the first bad one must be reported
    with pytest.raises(ValueError, match=rf"index 3: {msg}"):
        ofi_trailing(*arrs, 10)
    with pytest.raises(ValueError, match=rf"index 3: {msg}"):
        ofi_events(*arrs[1:])


def test_crossed_book_rejected() -> None:
    ts, bp, bq, ap, aq = _good()
    ap = ap.copy()
    ap[2] = bp[2]
    with pytest.raises(ValueError, match=r"index 2: book is crossed or locked"):
        ofi_buckets(ts, bp, bq, ap, aq, 10)


def test_unsorted_timestamps_rejected_equal_allowed() -> None:
    ts, bp, bq, ap, aq = _good()
    ts = ts.copy()
    ts[:] = 100
    ofi_trailing(ts, bp, bq, ap, aq, 10)  # all equal: allowed
    ts[4] = 99
    with pytest.raises(ValueError, match=r"index 4: timestamp is earlier"):
        ofi_trailing(ts, bp, bq, ap, aq, 10)
    with pytest.raises(ValueError, match=r"index 4: timestamp is earlier"):
        ofi_buckets(ts, bp, bq, ap, aq, 10)


def test_stream_bad_input_keeps_state() -> None:
    ts, bp, bq, ap, aq = _good(10)
    ref = ofi_trailing(ts, bp, bq, ap, aq, 7)
    s = OfiStream(7, 3)
    s.update(ts[:5], bp[:5], bq[:5], ap[:5], aq[:5])
    with pytest.raises(ValueError, match=r"index 0: timestamp is earlier"):
        s.update(ts[4] - 1, bp[5], bq[5], ap[5], aq[5])
    bad = bq[5:].copy()
    bad[2] = -1.0
    with pytest.raises(ValueError, match=r"index 2: bid_qty"):
        s.update(ts[5:], bp[5:], bad, ap[5:], aq[5:])
    u = s.update(ts[5:], bp[5:], bq[5:], ap[5:], aq[5:])
    np.testing.assert_array_equal(u.ofi, ref.ofi[5:])


def test_bad_arguments() -> None:
    ts, bp, bq, ap, aq = _good()
    with pytest.raises(ValueError, match="window_ns must be a positive integer"):
        ofi_trailing(ts, bp, bq, ap, aq, 0)
    with pytest.raises(ValueError, match="bucket_ns must be a positive integer"):
        ofi_buckets(ts, bp, bq, ap, aq, 1.5)
    with pytest.raises(ValueError, match="ts_ns must be a 1-d integer array"):
        ofi_trailing(ts.astype(float), bp, bq, ap, aq, 10)
    with pytest.raises(ValueError, match="ask_qty has length 5"):
        ofi_trailing(ts, bp, bq, ap, aq[:5], 10)
