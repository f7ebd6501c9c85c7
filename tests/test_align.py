"""perpdesk.data.align: state as-of joins, flow window sums, rollover masks.

Expected values are worked out by hand in the comments; one test compares against a slow
per-element reference written here.
"""

from __future__ import annotations

import numpy as np
import pytest

from perpdesk.data.align import (
    AlignError,
    asof_index,
    asof_join,
    funding_schedule_ns,
    own_schedule_ns,
    rollover_mask,
    window_sum,
)
from perpdesk.errors import PerpdeskError

H = 3_600_000_000_000
T0 = int(np.datetime64("2024-01-01T00:00", "ns").astype(np.int64))


def test_asof_strict_and_inclusive_by_hand():
    # funding settled at 00:00, 08:00, 16:00 with rates 1, 2, 3 (bps)
    state = np.array([T0, T0 + 8 * H, T0 + 16 * H])
    rate = np.array([1.0, 2.0, 3.0])
    # decisions at 23:00 (day before), 00:00, 04:00, 08:00, 08:00+1ns, 20:00
    t = np.array([T0 - H, T0, T0 + 4 * H, T0 + 8 * H, T0 + 8 * H + 1, T0 + 20 * H])
    # strict: at 00:00 the 00:00 settlement is not yet known → nothing; at 08:00 only 00:00's
    assert asof_index(state, t).tolist() == [-1, -1, 0, 0, 1, 2]
    np.testing.assert_array_equal(asof_join(state, rate, t), [np.nan, np.nan, 1, 1, 2, 3])
    # inclusive: a value stamped at t is visible at t
    assert asof_index(state, t, inclusive=True).tolist() == [-1, 0, 0, 1, 1, 2]
    np.testing.assert_array_equal(
        asof_join(state, rate, t, inclusive=True), [np.nan, 1, 1, 2, 2, 3]
    )


def test_asof_max_age_fill_and_dtype():
    state = np.array([10, 20, 40])
    oi = np.array([100, 200, 400], dtype=np.int64)
    t = np.array([15, 25, 30, 31, 45, 5])
    # visible rows (strict): 0, 1, 1, 1, 2, none; ages 5, 5, 10, 11, 5, -
    # max_age 10: 31 is stale (age 11), 30 is fresh (age exactly 10)
    got = asof_join(state, oi, t, max_age_ns=10)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, [100, 200, 200, np.nan, 400, np.nan])
    got = asof_join(state, oi, t, max_age_ns=10, fill=-1)
    assert got.dtype == np.int64 and got.tolist() == [100, 200, 200, -1, 400, -1]
    # a NaN state value is returned, not skipped back to an older one
    np.testing.assert_array_equal(
        asof_join(state, np.array([1.0, np.nan, 3.0]), np.array([25])), [np.nan]
    )


def test_asof_against_slow_reference():
    rng = np.random.default_rng(3)
    state = np.unique(rng.integers(0, 1_000, 200))
    vals = rng.normal(size=state.size)
    t = rng.integers(-10, 1_010, 500)  # unsorted decision times
    for inclusive in (False, True):
        expected = []
        for x in t:
            seen = [i for i in range(state.size) if (state[i] <= x if inclusive else state[i] < x)]
            expected.append(vals[seen[-1]] if seen else np.nan)
        np.testing.assert_array_equal(asof_join(state, vals, t, inclusive=inclusive), expected)


def test_window_sum_by_hand():
    # 5m bars [0,5) [5,10) [10,15) [15,20); trades at 0, 4, 5, 5, 9, 15, 20
    ev = np.array([0, 4, 5, 5, 9, 15, 20])
    qty = np.array([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0])
    lo = np.array([0, 5, 10, 15])
    hi = lo + 5
    # [0,5): 1+2=3; [5,10): 4+8+16=28; [10,15): nothing; [15,20): 32 (20 is the next bar's)
    np.testing.assert_array_equal(window_sum(ev, qty, lo, hi), [3.0, 28.0, 0.0, 32.0])
    assert window_sum(ev, None, lo, hi).tolist() == [2, 3, 0, 1]
    # boolean flow (e.g. buyer-initiated flags) counts: trades at even times 0, 4 | 20 → 2, 0, 0, 0
    is_even = ev % 2 == 0
    assert window_sum(ev, is_even, lo, hi).tolist() == [2, 0, 0, 0]
    # overlapping, unordered, empty and out-of-range windows
    lo2, hi2 = np.array([4, 0, 7, 25, -5]), np.array([16, 21, 7, 30, 0])
    # [4,16): 2+4+8+16+32=62; [0,21): all 127; [7,7): 0; [25,30): 0; [-5,0): 0
    np.testing.assert_array_equal(window_sum(ev, qty, lo2, hi2), [62.0, 127.0, 0, 0, 0])


def test_window_sum_exact_after_large_total():
    # a tiny flow after a huge one: a running-total difference would lose it
    ev = np.array([0, 10, 11])
    v = np.array([1e17, 1.0, 2.0])
    np.testing.assert_array_equal(window_sum(ev, v, np.array([10]), np.array([12])), [3.0])


def test_funding_schedule_and_rollover_mask():
    s = funding_schedule_ns(T0 - 1, T0 + 24 * H)
    # from 23:59:59.999… on Dec 31: 00:00, 08:00, 16:00 of Jan 1
    assert s.tolist() == [T0, T0 + 8 * H, T0 + 16 * H]
    assert funding_schedule_ns(T0 + 1, T0 + 9 * H, interval_h=4).tolist() == [
        T0 + 4 * H,
        T0 + 8 * H,
    ]
    assert funding_schedule_ns(T0 + 1, T0 + 2, interval_h=1).size == 0
    m = 60_000_000_000  # one minute
    t = np.array([T0 - 6 * m, T0 - 5 * m, T0, T0 + 5 * m, T0 + 6 * m, T0 + 4 * H, T0 + 8 * H])
    # ± 5 min around 00:00 and 08:00: -6m no, -5m yes, 0 yes, +5m yes, +6m no, 04:00 no, 08:00 yes
    got = rollover_mask(t, s, 5 * m)
    assert got.tolist() == [False, True, True, True, False, False, True]
    # asymmetric: 5 min before, 1 min after
    got = rollover_mask(t, s, 5 * m, after_ns=m)
    assert got.tolist() == [False, True, True, False, False, False, True]
    # a symbol's own schedule (its settlement times)
    own = np.array([T0 + 4 * H])
    assert rollover_mask(t, own, 0).tolist() == [False] * 5 + [True, False]
    assert rollover_mask(t, np.array([], dtype=np.int64), m).tolist() == [False] * 7
    # own schedule: settled at 00:00 and 04:00 (4 h symbol), projected to 08:00 and 12:00
    own = own_schedule_ns(np.array([T0, T0 + 4 * H]), T0 + 13 * H, interval_h=4)
    assert own.tolist() == [T0, T0 + 4 * H, T0 + 8 * H, T0 + 12 * H]
    assert rollover_mask(np.array([T0 + 12 * H - m, T0 + 10 * H]), own, m).tolist() == [
        True,
        False,
    ]


def test_point_in_time_appending_future_rows():
    rng = np.random.default_rng(11)
    state = np.cumsum(rng.integers(1, 50, 300))
    vals = rng.normal(size=state.size)
    ev = np.sort(rng.integers(0, int(state[-1]), 2_000))
    qty = rng.exponential(size=ev.size)
    grid = np.arange(0, int(state[-1]), 37)
    cut = int(state[150])
    past = grid < cut
    s_past = state < cut
    e_past = ev < cut
    a_full = asof_join(state, vals, grid)
    a_past = asof_join(state[s_past], vals[s_past], grid[past])
    np.testing.assert_array_equal(a_full[past], a_past)
    # windows that close by the cut
    lo, hi = grid[:-1], grid[1:]
    w = hi <= cut
    np.testing.assert_array_equal(
        window_sum(ev, qty, lo, hi)[w], window_sum(ev[e_past], qty[e_past], lo[w], hi[w])
    )


@pytest.mark.parametrize(
    ("call", "msg"),
    [
        (lambda: asof_index([1, 3, 2], [5]), r"state_ts_ns: index 2 \(2\) is below index 1"),
        (lambda: asof_index([1, 3, 3], [5]), r"state_ts_ns: index 2 \(3\) equals index 1"),
        (
            lambda: window_sum([1, 2, 1], None, [0], [5]),
            r"event_ts_ns: index 2 \(1\) is below index 1 \(2\); must be sorted",
        ),
        (lambda: window_sum([1], None, [5], [4]), r"bar_close_ns: index 0 \(4\) is before"),
        (lambda: asof_index([1.0, 2.0], [1]), r"state_ts_ns: must be a 1-d integer array"),
        (lambda: asof_join([1, 2], [1.0], [1]), r"values: shape \(1,\) does not match 2"),
        (lambda: rollover_mask([1], [5, 4], 1), r"rollover_ns: index 1 \(4\) is below"),
        (lambda: funding_schedule_ns(0, 1, interval_h=5), "does not divide a day"),
    ],
)
def test_bad_input_names_array_and_index(call, msg):
    with pytest.raises(AlignError, match=msg) as ei:
        call()
    assert isinstance(ei.value, PerpdeskError) and "\n" not in str(ei.value)
