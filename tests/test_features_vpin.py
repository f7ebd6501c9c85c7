"""Tests of perpdesk.features.vpin against slow references written from the definitions."""

from __future__ import annotations

import itertools
import math
import statistics
from functools import lru_cache

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perpdesk.features.vpin import (
    VPINStream,
    aggressor_buy_share,
    bvc_buy_share,
    tick_rule_buy_share,
    vpin_bars,
    vpin_from_shares,
    vpin_trades,
)
from tests.realdata import feather_bars, ws_trades

RTOL = 1e-9
ATOL = 1e-12

# --------------------------------------------------------------------------- references


def ref_bvc(price, sigma_window=20):
    """Φ(r_i/σ_i), σ_i = pstdev of the last sigma_window returns (0.01 while fewer), ≥ 1e-8."""
    out = [math.nan]
    rets = []
    for i in range(1, len(price)):
        r = math.log(price[i] / price[i - 1])
        rets.append(r)
        if len(rets) < sigma_window:
            sig = 0.01
        else:
            sig = max(statistics.pstdev(rets[-sigma_window:]), 1e-8)
        out.append(0.5 * (1.0 + math.erf(r / sig / math.sqrt(2.0))))
    return out[: len(price)]


def ref_tick(price):
    out = []
    last = math.nan
    for i in range(len(price)):
        if i == 0:
            out.append(math.nan)
            continue
        if price[i] > price[i - 1]:
            last = 1.0
        elif price[i] < price[i - 1]:
            last = 0.0
        out.append(last)
    return out


def ref_aggressor(flags):
    return [0.0 if f else 1.0 for f in flags]


def ref_buckets(shares, vols, bucket, nb):
    """Returns (VPIN per observation, list of completed (V_buy, V_sell))."""
    rem, buy, sell = bucket, 0.0, 0.0
    done = []
    vp = math.nan
    out = []
    for s, v in zip(shares, vols, strict=True):
        if not math.isnan(s):
            left = v
            completed = False
            while left > 0:
                piece = min(rem, left)
                buy += s * piece
                sell += (1.0 - s) * piece
                rem -= piece
                left -= piece
                if rem == 0:
                    done.append((buy, sell))
                    rem, buy, sell = bucket, 0.0, 0.0
                    completed = True
            if completed and len(done) >= nb:
                vp = sum(abs(b - s_) for b, s_ in done[-nb:]) / nb / bucket
        out.append(vp)
    return out, done


def ref_vpin(price, vols, flags, method, sigma_window, bucket, nb):
    if method == "bvc":
        sh = ref_bvc(list(price), sigma_window)
    elif method == "tick":
        sh = ref_tick(list(price))
    else:
        sh = ref_aggressor(list(flags))
    return ref_buckets(sh, list(vols), bucket, nb)[0]


def close(a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b, dtype=float), rtol=RTOL, atol=ATOL)


def rand_data(seed, n, tick=None):
    rng = np.random.default_rng(seed)
    p = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.003, n)))
    if tick:
        p = np.maximum(np.round(p / tick) * tick, tick)
    v = rng.exponential(1_000.0, n) * (rng.random(n) > 0.1)  # ~10 % zero volume
    f = rng.random(n) < 0.5
    return p, v, f


# --------------------------------------------------------------------------- vs reference


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("w", [1, 3, 20])
def test_bvc_share_matches_reference(seed, w):
    p, _, _ = rand_data(seed, 300, tick=0.05 if seed else None)
    close(bvc_buy_share(p, w), ref_bvc(list(p), w))


def test_tick_and_aggressor_share_match_reference():
    p, _, f = rand_data(3, 500, tick=0.1)
    close(tick_rule_buy_share(p), ref_tick(list(p)))
    close(aggressor_buy_share(f), ref_aggressor(list(f)))


@pytest.mark.parametrize("method", ["bvc", "tick", "aggressor"])
@pytest.mark.parametrize(("bucket", "nb"), [(2_500.0, 5), (700.0, 50), (1_000.0, 1)])
def test_vpin_trades_matches_reference_random(method, bucket, nb):
    p, v, f = rand_data(7, 1_500, tick=0.02)
    got = vpin_trades(p, v, f, method=method, sigma_window=10, bucket_usd=bucket, n_buckets=nb)
    want = ref_vpin(p, v, f, method, 10, bucket, nb)
    close(got, want)
    assert np.isfinite(got).sum() > 100


def test_vpin_from_shares_matches_reference_random():
    rng = np.random.default_rng(11)
    s = rng.random(2_000)
    s[rng.random(2_000) < 0.05] = np.nan
    v = rng.exponential(300.0, 2_000)
    v[::7] = 5_000.0  # observations spanning several buckets
    close(vpin_from_shares(s, v, 1_000.0, 20), ref_buckets(list(s), list(v), 1_000.0, 20)[0])


@lru_cache(maxsize=1)
def _trades():
    t = ws_trades()
    sh = {
        "bvc": ref_bvc(list(t["price"]), 20),
        "tick": ref_tick(list(t["price"])),
        "aggressor": ref_aggressor(list(t["is_buyer_maker"])),
    }
    return t, sh


@pytest.mark.parametrize("method", ["bvc", "tick", "aggressor"])
@pytest.mark.parametrize(("bucket", "nb"), [(1e6, 20), (2e5, 50)])
def test_vpin_trades_matches_reference_real(method, bucket, nb):
    t, sh = _trades()
    got = vpin_trades(
        t["price"], t["quote_volume"], t["is_buyer_maker"], method=method,
        bucket_usd=bucket, n_buckets=nb,
    )  # fmt: skip
    want, done = ref_buckets(sh[method], list(t["quote_volume"]), bucket, nb)
    assert len(done) >= nb + 10
    close(got, want)
    assert np.nanmin(got) >= 0.0 and np.nanmax(got) <= 1.0


def test_vpin_bars_matches_reference_real():
    b = feather_bars("BTC_USDT_USDT-1h-futures.feather")
    qv = b["close"] * b["volume"]
    close(bvc_buy_share(b["close"]), ref_bvc(list(b["close"])))
    got = vpin_bars(b["close"], qv, bucket_usd=2e9, n_buckets=50)
    want, done = ref_buckets(ref_bvc(list(b["close"])), list(qv), 2e9, 50)
    assert len(done) > 1_000
    close(got, want)
    assert np.nanmin(got) >= 0.0 and np.nanmax(got) <= 1.0


def test_bucket_composition_is_exact():
    p, v, _ = rand_data(5, 3_000)
    s = VPINStream("bvc", bucket_usd=1_234.5, n_buckets=3)
    s.update(p, v)
    _, done = ref_buckets(ref_bvc(list(p)), list(v), 1_234.5, 3)
    for b, s_ in done:
        assert b + s_ == pytest.approx(1_234.5, rel=1e-12)
    imb = [abs(b - s_) for b, s_ in done[-3:]]
    close(s.recent_imbalances, imb)
    assert s.n_buckets_completed == len(done)


# --------------------------------------------------------------------------- by hand


def test_hand_aggressor_split_across_boundary():
    # bucket 100: buy 60 | sell 70 → bucket 1 = (60 buy, 40 sell), 30 sell carried
    # buy 90 → bucket 2 = (70 buy, 30 sell), 20 buy carried
    args = ([100.0, 100.0, 100.0], [60.0, 70.0, 90.0], [False, True, False])
    v1 = vpin_trades(*args, method="aggressor", bucket_usd=100.0, n_buckets=1)
    assert np.isnan(v1[0]) and v1[1:].tolist() == [0.2, 0.4]
    v2 = vpin_trades(*args, method="aggressor", bucket_usd=100.0, n_buckets=2)
    assert np.isnan(v2[:2]).all() and v2[2] == 0.3
    s = VPINStream("aggressor", bucket_usd=100.0, n_buckets=2)
    assert math.isnan(s.update(100.0, 60.0, False))
    assert s.open_bucket == (60.0, 0.0)
    assert math.isnan(s.update(100.0, 70.0, True))
    assert s.open_bucket == (0.0, 30.0) and s.recent_imbalances.tolist() == [20.0]
    assert s.update(100.0, 90.0, False) == 0.3
    assert s.open_bucket == (20.0, 0.0) and s.recent_imbalances.tolist() == [20.0, 40.0]


def test_hand_fractional_shares_and_hold():
    # bucket 100: 40 @ 0.25 → (10, 30); 60 of 100 @ 1 → (70, 30): |Δ| = 40
    # next bucket: 40 @ 1 → (40, 0); 60 of 70 @ 0 → (40, 60): |Δ| = 20; open (0, 10)
    # then 5 @ 0.5 completes nothing → VPIN holds; NaN share → not bucketed
    s = [0.25, 1.0, 0.0, 0.5, np.nan]
    v = [40.0, 100.0, 70.0, 5.0, 1e6]
    assert vpin_from_shares(s, v, 100.0, 1).tolist()[1:] == [0.4, 0.2, 0.2, 0.2]
    out = vpin_from_shares(s, v, 100.0, 2)
    assert np.isnan(out[:2]).all() and out[2:].tolist() == [0.3, 0.3, 0.3]


def test_hand_bvc_first_bar_not_bucketed():
    # first bar's huge volume is ignored; flat prices → share 1/2 → zero imbalance
    assert np.isnan(vpin_bars([100.0, 100.0], [1e9, 50.0], bucket_usd=100.0, n_buckets=1)).all()
    out = vpin_bars([100.0, 100.0, 100.0], [1e9, 50.0, 50.0], bucket_usd=100.0, n_buckets=1)
    assert np.isnan(out[:2]).all() and out[2] == 0.0


def test_hand_bvc_sigma():
    p = [100.0, 101.0, 100.0, 102.0]
    r1, r2, r3 = math.log(1.01), math.log(100 / 101), math.log(1.02)

    def phi(x):
        return 0.5 * (1 + math.erf(x / math.sqrt(2)))

    want = [phi(r1 / 0.01), phi(r2 / (abs(r1 - r2) / 2)), phi(r3 / (abs(r2 - r3) / 2))]
    close(bvc_buy_share(p, 2)[1:], want)
    assert math.isnan(bvc_buy_share(p, 2)[0])
    # flat prices: σ = 0 → floored at 1e-8, r = 0 → 1/2
    assert bvc_buy_share([5.0] * 30, 3)[1:].tolist() == [0.5] * 29


def test_hand_tick_rule_first_trade_and_zero_ticks():
    out = tick_rule_buy_share([100.0, 100.0, 101.0, 101.0, 100.0, 100.0, 100.5])
    assert np.isnan(out[:2]).all() and out[2:].tolist() == [1.0, 1.0, 0.0, 0.0, 1.0]
    assert aggressor_buy_share([True, False, 1, 0]).tolist() == [0.0, 1.0, 0.0, 1.0]


def test_nan_before_completion_holds_between_and_bounded():
    p, v, _ = rand_data(9, 3_000, tick=0.01)
    out = vpin_trades(p, v, bucket_usd=2_000.0, n_buckets=10)
    s = VPINStream(bucket_usd=2_000.0, n_buckets=10)
    counts = []
    for pi, vi in zip(p, v, strict=True):
        s.update(float(pi), float(vi))
        counts.append(s.n_buckets_completed)
    counts = np.array(counts)
    assert np.isnan(out[counts < 10]).all() and np.isfinite(out[counts >= 10]).all()
    same = np.diff(counts) == 0
    assert (out[1:][same & (counts[1:] >= 10)] == out[:-1][same & (counts[1:] >= 10)]).all()
    fin = out[np.isfinite(out)]
    assert fin.min() >= 0.0 and fin.max() <= 1.0
    # extreme shares: all buys → VPIN exactly 1
    assert vpin_from_shares(np.ones(50), np.full(50, 30.0), 100.0, 3)[-1] == 1.0


# --------------------------------------------------------------------------- streaming


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(0, 400),
    method=st.sampled_from(["bvc", "tick", "aggressor"]),
    w=st.integers(1, 25),
    bucket=st.sampled_from([50.0, 777.7, 3_000.0]),
    nb=st.integers(1, 12),
    cuts=st.lists(st.integers(0, 400), max_size=12),
    tick=st.sampled_from([None, 0.01, 0.5]),
)
def test_stream_equals_batch_any_split(seed, n, method, w, bucket, nb, cuts, tick):
    p, v, f = rand_data(seed, n, tick)
    kw = {"sigma_window": w, "bucket_usd": bucket, "n_buckets": nb}
    want = vpin_trades(p, v, f, method=method, **kw)
    s = VPINStream(method, **kw)
    edges = [0, *sorted(c for c in cuts if c <= n), n]
    got = [s.update(p[a:b], v[a:b], f[a:b]) for a, b in itertools.pairwise(edges)]
    np.testing.assert_array_equal(np.concatenate(got) if got else np.empty(0), want)
    one = VPINStream(method, **kw)
    got1 = [one.update(float(p[i]), float(v[i]), bool(f[i])) for i in range(n)]
    np.testing.assert_array_equal(np.array(got1, dtype=float), want)
    assert s.n_events == one.n_events == n


def test_stream_equals_batch_real_trades():
    t = ws_trades()
    kw = {"bucket_usd": 2e5, "n_buckets": 30}
    for method in ("bvc", "tick", "aggressor"):
        want = vpin_trades(t["price"], t["quote_volume"], t["is_buyer_maker"], method=method, **kw)
        s = VPINStream(method, **kw)
        got = [
            s.update(t["price"][a : a + 1000], t["quote_volume"][a : a + 1000],
                     t["is_buyer_maker"][a : a + 1000])
            for a in range(0, len(want), 1000)
        ]  # fmt: skip
        np.testing.assert_array_equal(np.concatenate(got), want)
    b = feather_bars("BTC_USDT_USDT-1h-futures.feather")
    qv = b["close"] * b["volume"]
    want = vpin_bars(b["close"], qv, bucket_usd=2e9, n_buckets=50)
    s = VPINStream("bvc", bucket_usd=2e9, n_buckets=50)
    got = [s.update(float(c), float(q)) for c, q in zip(b["close"], qv, strict=True)]
    np.testing.assert_array_equal(np.array(got), want)


def test_stream_scalar_types():
    s = VPINStream("aggressor", bucket_usd=10.0, n_buckets=1)
    assert math.isnan(s.update(np.float64(1.0), np.float64(5.0), np.bool_(True)))
    assert s.update(np.array(1.0), np.array(5.0), np.array(False)) == 0.0  # 0-d → float
    out = s.update([1.0, 1.0], [10.0, 10.0], [True, True])
    assert isinstance(out, np.ndarray) and out.tolist() == [1.0, 1.0]


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 0.0, -1.0])
def test_bad_price_names_index(bad):
    p = np.array([100.0, 101.0, 100.0, bad, 100.0, bad])
    v = np.ones(6)
    for fn in (
        lambda: vpin_bars(p, v),
        lambda: vpin_trades(p, v, method="tick"),
        lambda: bvc_buy_share(p),
        lambda: tick_rule_buy_share(p),
    ):
        with pytest.raises(ValueError, match=r"price\[3\]"):
            fn()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -1.0, 1e30])
def test_bad_volume_names_index(bad):
    v = np.array([1.0, 0.0, bad, 1.0])
    with pytest.raises(ValueError, match=r"quote_volume\[2\]"):
        vpin_bars(np.full(4, 100.0), v)
    with pytest.raises(ValueError, match=r"quote_volume\[2\]"):
        vpin_from_shares(np.full(4, 0.5), v)


def test_first_offending_index_across_arrays():
    p = np.array([1.0, 1.0, 1.0, np.nan])
    v = np.array([1.0, -1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match=r"quote_volume\[1\]"):
        vpin_bars(p, v)


def test_bad_flags_shares_and_params():
    with pytest.raises(ValueError, match=r"is_buyer_maker\[1\]"):
        vpin_trades([1.0, 1.0], [1.0, 1.0], [0, 2], method="aggressor")
    with pytest.raises(ValueError, match=r"is_buyer_maker\[0\]"):
        aggressor_buy_share([np.nan])
    with pytest.raises(ValueError, match=r"buy_share\[2\]"):
        vpin_from_shares([0.5, np.nan, 1.5], [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match=r"buy_share\[0\]"):
        vpin_from_shares([np.inf], [1.0])
    with pytest.raises(ValueError, match="needs is_buyer_maker"):
        vpin_trades([1.0], [1.0], method="aggressor")
    with pytest.raises(ValueError, match="length"):
        vpin_trades([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="method"):
        VPINStream("lee-ready")
    for kw in ({"bucket_usd": 0.0}, {"bucket_usd": np.nan}, {"n_buckets": 0}, {"n_buckets": 2.5}):
        with pytest.raises(ValueError):
            vpin_bars([1.0], [1.0], **kw)
    with pytest.raises(ValueError, match="sigma_window"):
        bvc_buy_share([1.0], 0)
    with pytest.raises(ValueError, match="1-d"):
        vpin_bars(np.ones((2, 2)), np.ones((2, 2)))


def test_stream_rejects_bad_batch_without_changing_state():
    p, v, _ = rand_data(4, 100)
    s = VPINStream(bucket_usd=500.0, n_buckets=3)
    s.update(p[:50], v[:50])
    before = (s.vpin, s.n_events, s.open_bucket, s.recent_imbalances.tolist())
    bad = p[50:].copy()
    bad[7] = -1.0
    with pytest.raises(ValueError, match=r"price\[7\].*event 57"):
        s.update(bad, v[50:])
    with pytest.raises(ValueError, match="event 50"):
        s.update(float("nan"), 1.0)
    with pytest.raises(ValueError, match="event 50"):
        s.update(100.0, -1.0)
    assert before == (s.vpin, s.n_events, s.open_bucket, s.recent_imbalances.tolist())
    rest = s.update(p[50:], v[50:])
    np.testing.assert_array_equal(rest, vpin_bars(p, v, bucket_usd=500.0, n_buckets=3)[50:])
    a = VPINStream("aggressor")
    with pytest.raises(ValueError, match="needs is_buyer_maker"):
        a.update(1.0, 1.0)
    with pytest.raises(ValueError, match="is_buyer_maker"):
        a.update(1.0, 1.0, 3)


@pytest.mark.parametrize("w", [2, 7, 20])
def test_bvc_rolling_sigma_survives_regime_changes(w):
    # huge returns leaving the window next to tiny or zero ones: cancellation-prone for a
    # rolling variance; must still match the exact pstdev reference
    rng = np.random.default_rng(w)
    scales = np.repeat(rng.choice([0.2, 1e-3, 1e-7, 0.0], 60), rng.integers(1, 40, 60))
    r = rng.normal(0.0, 1.0, scales.size) * scales
    r[rng.random(scales.size) < 0.02] = 0.3  # isolated jumps
    p = 100.0 * np.exp(np.cumsum(r))
    got = bvc_buy_share(p, w)
    want = np.array(ref_bvc(list(p), w))
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=0.0)
