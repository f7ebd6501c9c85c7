"""Order-book state from book snapshots on a 1 s grid: spread, banded depth, imbalance (OIB).

Input. Snapshots ``bid_px[n, L], bid_qty[n, L], ask_px[n, L], ask_qty[n, L]`` (level 0 is
the best level; a level whose price is NaN is **absent**, its quantity is ignored) with
``ts_ns[n]`` (int64 ns, strictly increasing). 1-d inputs are read as a 1-level book.
Prices are in quote currency (USD/USDT), quantities in base units. The snapshots are assumed
to be already resampled by the caller; :func:`resample_last` gives the point-in-time index
(last snapshot at or before each grid time).

Per snapshot (:func:`book_state`), with b0, a0 the best bid / ask:

* mid ``m = (b0 + a0)/2``; spread ``a0 − b0`` (quote units) and ``1e4·(a0 − b0)/m`` (bps);
* banded depth per side: a level at price p is inside the band when ``|p/m − 1| ≤ δ·1e-4``
  (δ = ``band_bps``); unweighted depth ``Σ qty·p`` and distance-weighted depth
  ``D = Σ w(p)·qty·p`` over in-band levels (quote units), ``w(p) = exp(−λ·|p/m − 1|)``,
  ``λ = ln 2 / (h·1e-4)`` per unit relative distance (h = ``half_life_bps``; a level h bps
  from mid weighs 1/2). h = 25 bps gives λ = 277.26 (tier 1 majors, δ = h = 25); h = 50 bps
  gives 138.63 (tier 2 alts);
* order-book imbalance ``OIB = (D_bid − D_ask)/(D_bid + D_ask)`` in [−1, 1] (weighted
  depths), NaN when both are 0.

Aggregates over the OIB series (:func:`oib_rolling`, streaming twin :class:`OibRollingStream`,
one shared numba kernel, so stream and batch are bit-identical). The series is one sample per
grid step (1 s). Window of ``window`` samples ending at t inclusive, ``[t − window + 1, t]``,
truncated at the start of the series (no warm-up NaNs: early values use what exists).

* ``ewma``: e_t = e_{t−1} + α·(OIB_t − e_{t−1}), α = 1 − exp(−step_s/ewma_s) (default
  step 1 s, ewma_s 30 s, i.e. a time constant of 30 s on the 1 s grid); initialised with the
  first finite OIB; a NaN OIB leaves e unchanged (NaN until the first finite value).
* ``q10, q50, q90`` (any ``quantiles``): quantiles of the finite OIB in the window, linear
  interpolation between order statistics (numpy's default ``method="linear"``: position
  q·(c − 1) in the sorted c values); NaN when the window has no finite value.
* ``persistence``: over snapshots j in the window with j ≥ 1 and both OIB_j and OIB_{j−1}
  finite, the share with sign(OIB_j) == sign(OIB_{j−1}) (sign 0 is its own sign; the
  previous snapshot of the oldest j may lie just before the window - it is in the past);
  NaN when there is no such j.
* ``shocks``: number of snapshots in the window with |OIB| > ``shock`` (default 0.7).
* ``impulse`` (when ``horizon`` k is given): Pearson correlation of x_t = OIB_t with
  y_t = log m_{t+k} − log m_t over pairs with both t and t + k inside the window ending at T,
  i.e. t in [T − window + 1, T − k] (**point in time**: no pair uses a mid after T) and
  OIB_t finite; two-pass (exact) per T, O(window) per output; NaN with fewer than 2 pairs
  or a zero variance.

Input rules (ValueError naming the first offending snapshot index and level): best prices
finite and > 0; book not crossed or locked (b0 < a0); other levels: price NaN (absent) or
finite > 0; quantities of present levels finite and ≥ 0; timestamps strictly increasing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

from perpdesk.features._arrays import as_ts_ns

__all__ = [
    "BookState",
    "BookStateStream",
    "OibRolling",
    "OibRollingStream",
    "book_state",
    "half_life_lambda",
    "oib_rolling",
    "resample_last",
]

_KINDS = {
    1: "best bid price is not finite and > 0",
    2: "best ask price is not finite and > 0",
    3: "book is crossed or locked (best bid >= best ask)",
    4: "bid price is not NaN (absent) or finite and > 0",
    5: "ask price is not NaN (absent) or finite and > 0",
    6: "bid quantity is not finite and >= 0",
    7: "ask quantity is not finite and >= 0",
    8: "timestamp is not after the previous one (timestamps must be strictly increasing)",
}


def half_life_lambda(half_life_bps: float) -> float:
    """Distance-decay rate λ = ln 2 / (h·1e-4) per unit relative distance (h in bps)."""
    h = float(half_life_bps)
    if not (math.isfinite(h) and h > 0.0):
        raise ValueError(f"half_life_bps must be finite and > 0, got {half_life_bps!r}")
    return math.log(2.0) / (h * 1e-4)


def resample_last(ts_ns: object, step_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """Point-in-time resampling index onto an epoch-aligned grid of ``step_ns``.

    Grid times are the multiples of ``step_ns`` from the first one ≥ ts[0] to the last one
    ≤ ts[-1]. Returns ``(grid_ts, idx)`` with ``idx[k]`` the index of the **last** snapshot
    with ``ts ≤ grid_ts[k]`` (ties: the last of equal timestamps). ``ts_ns`` must be
    non-decreasing (ValueError naming the first index that goes back).
    """
    ts = as_ts_ns(ts_ns)
    step = _pos_int(step_ns, "step_ns")
    if ts.size == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    bad = np.flatnonzero(np.diff(ts) < 0)
    if bad.size:
        raise ValueError(f"ts_ns at index {int(bad[0]) + 1} is earlier than the previous one")
    first = -((-int(ts[0])) // step) * step
    last = (int(ts[-1]) // step) * step
    if last < first:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    grid = np.arange(first, last + 1, step, dtype=np.int64)
    idx = np.searchsorted(ts, grid, side="right").astype(np.int64) - 1
    return grid, idx


# --------------------------------------------------------------------------- kernels


@numba.njit(cache=True)
def _side_depth(px, qty, m, band, lam):
    """(weighted, unweighted) in-band depth of one side of one snapshot; (−level, kind)."""
    dw = 0.0
    du = 0.0
    for lv in range(px.size):
        p = px[lv]
        if np.isnan(p):
            continue
        if not (np.isfinite(p) and p > 0.0):
            return dw, du, lv, 1
        q = qty[lv]
        if not (np.isfinite(q) and q >= 0.0):
            return dw, du, lv, 2
        r = abs(p / m - 1.0)
        if r <= band:
            v = q * p
            du += v
            dw += math.exp(-lam * r) * v
    return dw, du, -1, 0


@numba.njit(cache=True)
def _book_kernel(ts, bp, bq, ap, aq, band, lam, check_ts, last_ts, has_last, out):
    """Validate and compute per-snapshot state into ``out[:, 0:8]``
    (mid, spread, spread_bps, depth_bid, depth_ask, depth_bid_raw, depth_ask_raw, oib).
    Returns (bad index or −1, level, kind)."""
    lt = last_ts
    have = has_last
    for i in range(bp.shape[0]):
        b0 = bp[i, 0]
        a0 = ap[i, 0]
        if not (np.isfinite(b0) and b0 > 0.0):
            return i, 0, 1
        if not (np.isfinite(a0) and a0 > 0.0):
            return i, 0, 2
        if b0 >= a0:
            return i, 0, 3
        if check_ts:
            t = ts[i]
            if have and t <= lt:
                return i, 0, 8
            lt = t
            have = True
        m = (b0 + a0) / 2.0
        dwb, dub, lv, k = _side_depth(bp[i], bq[i], m, band, lam)
        if k:
            return i, lv, 4 if k == 1 else 6
        dwa, dua, lv, k = _side_depth(ap[i], aq[i], m, band, lam)
        if k:
            return i, lv, 5 if k == 1 else 7
        out[i, 0] = m
        out[i, 1] = a0 - b0
        out[i, 2] = 1e4 * (a0 - b0) / m
        out[i, 3] = dwb
        out[i, 4] = dwa
        out[i, 5] = dub
        out[i, 6] = dua
        s = dwb + dwa
        out[i, 7] = (dwb - dwa) / s if s > 0.0 else np.nan
    return -1, 0, 0


@numba.njit(cache=True)
def _sorted_insert(buf, c, v):
    lo = np.searchsorted(buf[:c], v)
    for j in range(c, lo, -1):
        buf[j] = buf[j - 1]
    buf[lo] = v
    return c + 1


@numba.njit(cache=True)
def _sorted_remove(buf, c, v):
    pos = np.searchsorted(buf[:c], v)
    for j in range(pos, c - 1):
        buf[j] = buf[j + 1]
    return c - 1


@numba.njit(cache=True)
def _sgn(v):
    if v > 0.0:
        return 1
    if v < 0.0:
        return -1
    return 0


@numba.njit(cache=True)
def _rolling_kernel(x, lm, start, w, horizon, shock, alpha, qs, ew0, out_q, out_misc):
    """Rolling aggregates for positions start..x.size−1 of ``x`` (OIB) and ``lm`` (log mid).

    Positions before ``start`` are history (at least ``w`` of them, or the whole series).
    ``out_q[k, :]`` quantiles; ``out_misc[k, :]`` = (ewma, persistence, shocks, impulse).
    ``ew0`` is the EWMA before ``start`` (NaN if none). Returns the last EWMA.
    """
    n = x.size
    buf = np.empty(w, dtype=np.float64)
    c = 0
    n_pairs = 0
    n_same = 0
    n_shock = 0
    lo0 = max(0, start - w)
    for j in range(lo0, start):
        v = x[j]
        if np.isfinite(v):
            c = _sorted_insert(buf, c, v)
            if abs(v) > shock:
                n_shock += 1
            if j >= 1 and np.isfinite(x[j - 1]):
                n_pairs += 1
                if _sgn(v) == _sgn(x[j - 1]):
                    n_same += 1
    ew = ew0
    nq = qs.size
    for t in range(start, n):
        v = x[t]
        if np.isfinite(v):
            c = _sorted_insert(buf, c, v)
            if abs(v) > shock:
                n_shock += 1
            if t >= 1 and np.isfinite(x[t - 1]):
                n_pairs += 1
                if _sgn(v) == _sgn(x[t - 1]):
                    n_same += 1
            ew = v if np.isnan(ew) else ew + alpha * (v - ew)
        j = t - w
        if j >= 0:
            u = x[j]
            if np.isfinite(u):
                c = _sorted_remove(buf, c, u)
                if abs(u) > shock:
                    n_shock -= 1
                if j >= 1 and np.isfinite(x[j - 1]):
                    n_pairs -= 1
                    if _sgn(u) == _sgn(x[j - 1]):
                        n_same -= 1
        k = t - start
        for qi in range(nq):
            if c == 0:
                out_q[k, qi] = np.nan
            else:
                pos = qs[qi] * (c - 1)
                f = math.floor(pos)
                i0 = int(f)
                fr = pos - f
                if i0 >= c - 1:
                    out_q[k, qi] = buf[c - 1]
                else:
                    a = buf[i0]
                    b = buf[i0 + 1]
                    out_q[k, qi] = a + (b - a) * fr
        out_misc[k, 0] = ew
        out_misc[k, 1] = n_same / n_pairs if n_pairs > 0 else np.nan
        out_misc[k, 2] = n_shock
        ir = np.nan
        if horizon > 0:
            lo = max(0, t - w + 1)
            hi = t - horizon
            sx = 0.0
            sy = 0.0
            cnt = 0
            for s in range(lo, hi + 1):
                if np.isfinite(x[s]):
                    sx += x[s]
                    sy += lm[s + horizon] - lm[s]
                    cnt += 1
            if cnt >= 2:
                mx = sx / cnt
                my = sy / cnt
                sxx = 0.0
                syy = 0.0
                sxy = 0.0
                for s in range(lo, hi + 1):
                    if np.isfinite(x[s]):
                        dx = x[s] - mx
                        dy = (lm[s + horizon] - lm[s]) - my
                        sxx += dx * dx
                        syy += dy * dy
                        sxy += dx * dy
                if sxx > 0.0 and syy > 0.0:
                    ir = sxy / math.sqrt(sxx * syy)
        out_misc[k, 3] = ir
    return ew


# --------------------------------------------------------------------------- helpers


def _pos_int(x: object, name: str) -> int:
    if isinstance(x, bool) or not isinstance(x, int | np.integer) or int(x) <= 0:
        raise ValueError(f"{name} must be a positive integer, got {x!r}")
    return int(x)


def _pos_float(x: object, name: str) -> float:
    v = float(x)  # type: ignore[arg-type]
    if not (math.isfinite(v) and v > 0.0):
        raise ValueError(f"{name} must be finite and > 0, got {x!r}")
    return v


def _levels(x: object, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a.reshape(-1, 1)
    if a.ndim != 2 or a.shape[1] < 1:
        raise ValueError(f"{name} must be 2-d (snapshots, levels), got shape {a.shape}")
    return np.ascontiguousarray(a)


def _book(ts_ns, bid_px, bid_qty, ask_px, ask_qty):
    ts = as_ts_ns(ts_ns)
    arrs = [
        _levels(bid_px, "bid_px"),
        _levels(bid_qty, "bid_qty"),
        _levels(ask_px, "ask_px"),
        _levels(ask_qty, "ask_qty"),
    ]
    n = ts.size
    for name, a in zip(("bid_px", "bid_qty", "ask_px", "ask_qty"), arrs, strict=True):
        if a.shape[0] != n:
            raise ValueError(f"{name} has {a.shape[0]} snapshots, expected {n} (as ts_ns)")
    if arrs[1].shape != arrs[0].shape or arrs[3].shape != arrs[2].shape:
        raise ValueError("quantity arrays must have the same shape as their price arrays")
    return ts, *arrs


@dataclass(frozen=True, slots=True)
class BookState:
    """Per-snapshot book state (see module docstring). Prices/spread/depths in quote units,
    ``spread_bps`` in bps of mid, ``oib`` dimensionless in [−1, 1] (NaN: no in-band depth)."""

    ts_ns: np.ndarray
    mid: np.ndarray
    spread: np.ndarray
    spread_bps: np.ndarray
    depth_bid: np.ndarray
    depth_ask: np.ndarray
    depth_bid_raw: np.ndarray
    depth_ask_raw: np.ndarray
    oib: np.ndarray


def _run_book(ts, bp, bq, ap, aq, band_bps, half_life_bps, last_ts, has_last):
    band = _pos_float(band_bps, "band_bps") * 1e-4
    lam = half_life_lambda(half_life_bps)
    out = np.empty((ts.size, 8), dtype=np.float64)
    idx, lv, kind = _book_kernel(ts, bp, bq, ap, aq, band, lam, True, last_ts, has_last, out)
    if kind:
        raise ValueError(f"bad book snapshot at index {idx} (level {lv}): {_KINDS[kind]}")
    cols = [np.ascontiguousarray(out[:, j]) for j in range(8)]
    return BookState(ts.copy(), *cols)


def book_state(
    ts_ns: object,
    bid_px: object,
    bid_qty: object,
    ask_px: object,
    ask_qty: object,
    band_bps: float = 25.0,
    half_life_bps: float = 25.0,
) -> BookState:
    """Spread, banded depth (weighted and unweighted) and OIB per snapshot.

    ``band_bps`` δ and ``half_life_bps`` h as in the module docstring (defaults: tier 1
    majors, 25/25 bps; tier 2 alts use 50/50).
    """
    ts, bp, bq, ap, aq = _book(ts_ns, bid_px, bid_qty, ask_px, ask_qty)
    return _run_book(ts, bp, bq, ap, aq, band_bps, half_life_bps, 0, False)


class BookStateStream:
    """Streaming :func:`book_state`: feed snapshots one at a time or in micro-batches;
    checks strict timestamp order across calls. A bad batch raises ValueError (index within
    that batch) and leaves the stream unchanged."""

    def __init__(self, band_bps: float = 25.0, half_life_bps: float = 25.0) -> None:
        self.band_bps = _pos_float(band_bps, "band_bps")
        self.half_life_bps = _pos_float(half_life_bps, "half_life_bps")
        half_life_lambda(self.half_life_bps)
        self._last_ts = 0
        self._has_last = False

    def update(self, ts_ns, bid_px, bid_qty, ask_px, ask_qty) -> BookState:
        ts, bp, bq, ap, aq = _book(ts_ns, bid_px, bid_qty, ask_px, ask_qty)
        st = _run_book(
            ts, bp, bq, ap, aq, self.band_bps, self.half_life_bps, self._last_ts, self._has_last
        )
        if ts.size:
            self._last_ts = int(ts[-1])
            self._has_last = True
        return st


# --------------------------------------------------------------------------- rolling


@dataclass(frozen=True, slots=True)
class OibRolling:
    """Rolling OIB aggregates per sample: ``quantiles[n, len(qs)]`` (columns in the order of
    ``qs``), ``ewma``, ``persistence`` (share in [0, 1]), ``shocks`` (count, float),
    ``impulse`` (Pearson correlation; all NaN when no horizon was given)."""

    qs: tuple[float, ...]
    quantiles: np.ndarray
    ewma: np.ndarray
    persistence: np.ndarray
    shocks: np.ndarray
    impulse: np.ndarray

    def q(self, level: float) -> np.ndarray:
        """Column of quantile ``level`` (must be one of ``qs``)."""
        return self.quantiles[:, self.qs.index(level)]


def _rolling_params(window, horizon, shock, ewma_s, step_s, qs):
    w = _pos_int(window, "window")
    if horizon is None:
        k = 0
    else:
        k = _pos_int(horizon, "horizon")
        if k >= w:
            raise ValueError(f"horizon ({k}) must be smaller than window ({w})")
    thr = float(shock)
    if not (math.isfinite(thr) and thr >= 0.0):
        raise ValueError(f"shock must be finite and >= 0, got {shock!r}")
    alpha = 1.0 - math.exp(-_pos_float(step_s, "step_s") / _pos_float(ewma_s, "ewma_s"))
    q = np.asarray(qs, dtype=np.float64).reshape(-1)
    if q.size == 0 or not np.all((q >= 0.0) & (q <= 1.0)):
        raise ValueError(f"quantiles must be a non-empty sequence in [0, 1], got {qs!r}")
    return w, k, thr, alpha, q


def _run_rolling(x, lm, start, w, k, thr, alpha, q, ew0):
    m = x.size - start
    out_q = np.empty((m, q.size), dtype=np.float64)
    misc = np.empty((m, 4), dtype=np.float64)
    ew = _rolling_kernel(x, lm, start, w, k, thr, alpha, q, ew0, out_q, misc)
    cols = [np.ascontiguousarray(misc[:, j]) for j in range(4)]
    return (out_q, *cols), float(ew)


def _series(oib, mid, need_mid):
    x = np.ascontiguousarray(oib, dtype=np.float64).reshape(-1)
    if mid is None:
        if need_mid:
            raise ValueError("mid is required when horizon is given")
        lm = np.zeros(x.size)
    else:
        mm = np.ascontiguousarray(mid, dtype=np.float64).reshape(-1)
        if mm.size != x.size:
            raise ValueError(f"mid has length {mm.size}, expected {x.size} (as oib)")
        bad = np.flatnonzero(~(np.isfinite(mm) & (mm > 0.0)))
        if bad.size:
            raise ValueError(f"mid at index {int(bad[0])} is not finite and > 0")
        lm = np.log(mm)
    bad = np.flatnonzero(np.isinf(x) | (np.abs(np.nan_to_num(x)) > 1.0))
    if bad.size:
        raise ValueError(f"oib at index {int(bad[0])} is not NaN or in [-1, 1]")
    return x, lm


def oib_rolling(
    oib: object,
    mid: object | None = None,
    window: int = 60,
    horizon: int | None = None,
    shock: float = 0.7,
    ewma_s: float = 30.0,
    step_s: float = 1.0,
    quantiles: tuple[float, ...] = (0.1, 0.5, 0.9),
) -> OibRolling:
    """Rolling aggregates of an OIB series on a fixed grid (module docstring).

    ``window`` in samples (60 = 1 min, 3600 = 1 h on the 1 s grid); ``horizon`` k in
    samples for the impulse response (needs ``mid``, k < window); ``shock`` |OIB|
    threshold; ``ewma_s`` EWMA time constant and ``step_s`` grid step, both in seconds.
    """
    w, k, thr, alpha, q = _rolling_params(window, horizon, shock, ewma_s, step_s, quantiles)
    x, lm = _series(oib, mid, k > 0)
    cols, _ = _run_rolling(x, lm, 0, w, k, thr, alpha, q, np.nan)
    return OibRolling(tuple(float(v) for v in q), *cols)


class OibRollingStream:
    """Streaming :func:`oib_rolling` (same parameters): ``update(oib, mid)`` with one sample
    or a micro-batch returns the :class:`OibRolling` rows of those samples, bit-identical
    to the batch function over the whole series. Keeps the last ``window`` samples. A bad
    batch raises ValueError (index within that batch) and leaves the stream unchanged."""

    def __init__(
        self,
        window: int = 60,
        horizon: int | None = None,
        shock: float = 0.7,
        ewma_s: float = 30.0,
        step_s: float = 1.0,
        quantiles: tuple[float, ...] = (0.1, 0.5, 0.9),
    ) -> None:
        self._p = _rolling_params(window, horizon, shock, ewma_s, step_s, quantiles)
        self._x = np.empty(0, dtype=np.float64)
        self._lm = np.empty(0, dtype=np.float64)
        self._ew = np.nan

    def update(self, oib: object, mid: object | None = None) -> OibRolling:
        w, k, thr, alpha, q = self._p
        x, lm = _series(oib, mid, k > 0)
        xs = np.concatenate((self._x, x))
        ls = np.concatenate((self._lm, lm))
        start = self._x.size
        cols, ew = _run_rolling(xs, ls, start, w, k, thr, alpha, q, self._ew)
        self._x = xs[-w:].copy()
        self._lm = ls[-w:].copy()
        self._ew = ew
        return OibRolling(tuple(float(v) for v in q), *cols)
