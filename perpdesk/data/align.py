"""Point-in-time alignment: the state-vs-flow rules, as vectorised NumPy primitives.

Two kinds of series meet a decision grid (bar closes, settlements, timer ticks):

* **State** variables — funding rate, open interest, mark / index price, a bar's close —
  have one value *at a time*. A decision at ``t`` sees the **last value stamped before
  ``t``** (a backward as-of join, :func:`asof_index` / :func:`asof_join`). A value stamped
  exactly at ``t`` is visible at ``t`` only with ``inclusive=True``, which states that the
  decision is taken *after* the event at ``t`` is known (e.g. a bar stamped with its close
  time ``t``: all its trades happened before ``t``). The default ``inclusive=False``
  follows the project rule "nothing decides at t with data stamped at or after t"
  (ARCHITECTURE.md, *Point-in-time by construction*): a funding rate settled at 08:00
  is not known to a decision taken at 08:00.
* **Flows** — settled funding cash, traded volume, trade counts — accumulate *over* an
  interval. A bar ``[bar_open, bar_close)`` gets the sum of the events with
  ``bar_open <= ts < bar_close`` (:func:`window_sum`); an event stamped exactly at
  ``bar_close`` belongs to the next bar, so adjacent bars never count an event twice.
* **Funding rollovers** — settlement instants (Binance USD-M: 00:00, 08:00, 16:00 UTC for
  8 h symbols, or each symbol's own interval) move prices, basis and OI mechanically.
  :func:`rollover_mask` marks grid times within ``± window`` of a rollover (closed
  interval ``[r - before, r + after]``) so derivative features can skip them;
  :func:`funding_schedule_ns` builds the fixed UTC grid; :func:`own_schedule_ns` a
  symbol's own schedule from its settlement times (the ``ts_ns`` of its ``funding``
  table), projected forward at its current interval. Settlement times
  are a published schedule (Binance's ``nextFundingTime``), so masking a future
  settlement does not leak data.

Every time array is int64 ns UTC. Event/state time arrays must be sorted (state times
strictly increasing: one value per instant; flow event times non-decreasing); an
unsorted array is an :class:`AlignError` naming the array and the first offending index.
Decision times may come in any order. Everything is ``np.searchsorted`` over whole
arrays — no Python loop per row.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from perpdesk.errors import PerpdeskError

NS_PER_H = 3_600_000_000_000
BINANCE_FUNDING_HOURS_UTC = (0, 8, 16)
"""Binance USD-M settlement hours (UTC) of 8 h symbols (Binance "Introduction to
Binance Futures Funding Rates"); 4 h / 1 h symbols settle on every 4th / 1st hour."""


class AlignError(PerpdeskError):
    """Bad input to an alignment primitive (names the array, the index and the problem)."""


def _ts(x: object, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim == 0:
        a = a.reshape(1)
    if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
        raise AlignError(
            f"{name}: must be a 1-d integer array of ns timestamps, got dtype {a.dtype} "
            f"shape {a.shape}"
        )
    return np.ascontiguousarray(a, dtype=np.int64)


def _check_sorted(a: np.ndarray, name: str, *, strict: bool) -> None:
    if a.size < 2:
        return
    d = np.diff(a)
    bad = d <= 0 if strict else d < 0
    if bad.any():
        i = int(np.argmax(bad)) + 1
        what = "equals" if a[i] == a[i - 1] else "is below"
        rule = "strictly increasing" if strict else "sorted (non-decreasing)"
        raise AlignError(
            f"{name}: index {i} ({int(a[i])}) {what} index {i - 1} ({int(a[i - 1])}); "
            f"must be {rule}"
        )


def _values(values: object, n: int, name: str) -> np.ndarray:
    v = np.asarray(values)
    if v.ndim != 1 or v.shape[0] != n:
        raise AlignError(f"{name}: shape {v.shape} does not match {n} timestamps")
    return v


def asof_index(
    state_ts_ns: np.ndarray, decision_ts_ns: np.ndarray, *, inclusive: bool = False
) -> np.ndarray:
    """Row of the state value visible at each decision time; ``-1`` where none is.

    ``state_ts_ns`` must strictly increase. With ``inclusive=False`` (default) the row is
    the last one stamped **strictly before** ``t``; with ``inclusive=True`` the last one
    stamped **at or before** ``t`` (see the module docstring for when that is right).
    Returns an int64 array shaped like ``decision_ts_ns``.
    """
    s = _ts(state_ts_ns, "state_ts_ns")
    t = _ts(decision_ts_ns, "decision_ts_ns")
    _check_sorted(s, "state_ts_ns", strict=True)
    side = "right" if inclusive else "left"
    return np.searchsorted(s, t, side=side).astype(np.int64) - 1


def asof_join(
    state_ts_ns: np.ndarray,
    values: np.ndarray,
    decision_ts_ns: np.ndarray,
    *,
    inclusive: bool = False,
    max_age_ns: int | None = None,
    fill: float | int = np.nan,
) -> np.ndarray:
    """Backward as-of join of a state series onto decision times.

    ``out[k] = values[i]`` for the last state row ``i`` visible at ``decision_ts_ns[k]``
    (:func:`asof_index` rule); ``fill`` where no row is visible, or where the visible one
    is older than ``max_age_ns`` (age = ``t - state_ts_ns[i]``; ``age == max_age_ns`` is
    still fresh). A NaN value is returned as NaN, never skipped for an older one. The
    result dtype is the common type of ``values`` and ``fill`` (ints with NaN fill →
    float64).
    """
    s = _ts(state_ts_ns, "state_ts_ns")
    v = _values(values, s.size, "values")
    t = _ts(decision_ts_ns, "decision_ts_ns")
    idx = asof_index(s, t, inclusive=inclusive)
    ok = idx >= 0
    if max_age_ns is not None:
        if max_age_ns < 0:
            raise AlignError(f"max_age_ns: {max_age_ns} is negative")
        ok[ok] = (t[ok] - s[idx[ok]]) <= max_age_ns
    out = np.full(t.shape, fill, dtype=np.result_type(v.dtype, np.min_scalar_type(fill)))
    out[ok] = v[idx[ok]]
    return out


def window_sum(
    event_ts_ns: np.ndarray,
    values: np.ndarray | None,
    bar_open_ns: np.ndarray,
    bar_close_ns: np.ndarray,
) -> np.ndarray:
    """Sum of a flow over each window ``[bar_open_ns[k], bar_close_ns[k])``.

    ``event_ts_ns`` must be sorted (non-decreasing; many trades share a millisecond).
    ``values=None`` counts the events. Windows may overlap, be empty or come in any order;
    each must have ``bar_open <= bar_close``. Sums are exact per window
    (:func:`numpy.add.reduceat` over the window's own slice, not a difference of running
    totals, so a small window after a large total loses no precision). Returns float64,
    or int64 for integer/boolean values and for counts.
    """
    e = _ts(event_ts_ns, "event_ts_ns")
    lo_t = _ts(bar_open_ns, "bar_open_ns")
    hi_t = _ts(bar_close_ns, "bar_close_ns")
    if lo_t.size != hi_t.size:
        raise AlignError(f"bar_open_ns ({lo_t.size}) and bar_close_ns ({hi_t.size}) differ")
    inverted = hi_t < lo_t
    if inverted.any():
        k = int(np.argmax(inverted))
        raise AlignError(
            f"bar_close_ns: index {k} ({int(hi_t[k])}) is before bar_open_ns ({int(lo_t[k])})"
        )
    _check_sorted(e, "event_ts_ns", strict=False)
    if values is None:
        v = np.ones(e.size, dtype=np.int64)
    else:
        v = _values(values, e.size, "values")
        if v.dtype == np.bool_:
            v = v.astype(np.int64)
        elif not np.issubdtype(v.dtype, np.integer):
            v = v.astype(np.float64, copy=False)
    lo = np.searchsorted(e, lo_t, side="left")
    hi = np.searchsorted(e, hi_t, side="left")
    out = np.zeros(lo.size, dtype=v.dtype)
    if lo.size == 0 or e.size == 0:
        return out
    padded = np.concatenate([v, np.zeros(1, dtype=v.dtype)])  # index e.size is valid
    idx = np.empty(2 * lo.size, dtype=np.int64)
    idx[0::2], idx[1::2] = lo, hi
    sums = np.add.reduceat(padded, idx)[0::2]
    nonempty = hi > lo
    out[nonempty] = sums[nonempty]
    return out


def funding_schedule_ns(
    start_ns: int,
    end_ns: int,
    interval_h: int = 8,
    offset_h: int = 0,
) -> np.ndarray:
    """Settlement instants in ``[start_ns, end_ns)``: every ``interval_h`` hours from
    00:00 UTC shifted by ``offset_h`` (default 8 h → 00:00, 08:00, 16:00 UTC, Binance
    USD-M; ``interval_h=4`` → every 4 h; ``1`` → hourly)."""
    if interval_h <= 0 or 24 % interval_h:
        raise AlignError(f"interval_h: {interval_h} does not divide a day")
    step = interval_h * NS_PER_H
    off = (offset_h % interval_h) * NS_PER_H
    first = -((-(int(start_ns) - off)) // step) * step + off  # ceil to the grid
    if first >= end_ns:
        return np.empty(0, dtype=np.int64)
    return np.arange(first, int(end_ns), step, dtype=np.int64)


def own_schedule_ns(settle_ts_ns: np.ndarray, end_ns: int, interval_h: int) -> np.ndarray:
    """A symbol's own rollover instants: its past settlement times (the ``ts_ns`` of its
    ``funding`` table, strictly increasing) followed by the instants its current
    ``interval_h`` schedules after the last one, up to ``end_ns`` (exclusive). Binance
    publishes the next settlement time ahead (``nextFundingTime``), so projecting the
    current interval forward uses no future data."""
    s = _ts(settle_ts_ns, "settle_ts_ns")
    _check_sorted(s, "settle_ts_ns", strict=True)
    if interval_h <= 0:
        raise AlignError(f"interval_h: {interval_h} is not positive")
    if s.size == 0:
        raise AlignError("settle_ts_ns: empty (no settlement to start the schedule from)")
    step = interval_h * NS_PER_H
    ahead = np.arange(int(s[-1]) + step, int(end_ns), step, dtype=np.int64)
    return np.concatenate([s, ahead])


def rollover_mask(
    ts_ns: np.ndarray,
    rollover_ns: np.ndarray | Sequence[int],
    window_ns: int,
    *,
    after_ns: int | None = None,
) -> np.ndarray:
    """True where ``ts_ns`` lies within a rollover window: ``r - window_ns <= t <= r +
    after_ns`` for some rollover ``r`` (``after_ns`` defaults to ``window_ns``: a symmetric
    ``± window``). ``rollover_ns`` (strictly increasing) is :func:`funding_schedule_ns`'s
    fixed grid or a symbol's own settlement times; ``ts_ns`` may be in any order."""
    t = _ts(ts_ns, "ts_ns")
    r = _ts(np.asarray(rollover_ns, dtype=np.int64), "rollover_ns")
    _check_sorted(r, "rollover_ns", strict=True)
    before = int(window_ns)
    after = before if after_ns is None else int(after_ns)
    if before < 0 or after < 0:
        raise AlignError(f"window_ns/after_ns: must be >= 0, got {before}/{after}")
    if r.size == 0:
        return np.zeros(t.shape, dtype=bool)
    j = np.searchsorted(r, t, side="right")  # r[j-1] <= t < r[j]
    prev_ok = j > 0
    near_prev = np.zeros(t.shape, dtype=bool)
    near_prev[prev_ok] = (t[prev_ok] - r[j[prev_ok] - 1]) <= after
    next_ok = j < r.size
    near_next = np.zeros(t.shape, dtype=bool)
    near_next[next_ok] = (r[j[next_ok]] - t[next_ok]) <= before
    return near_prev | near_next


__all__ = [
    "BINANCE_FUNDING_HOURS_UTC",
    "AlignError",
    "asof_index",
    "asof_join",
    "funding_schedule_ns",
    "own_schedule_ns",
    "rollover_mask",
    "window_sum",
]
