"""Kyle's lambda: rolling OLS price impact of signed order flow, with its t-statistic.

Model: Kyle (1985), "Continuous auctions and insider trading", Econometrica 53(6): the
price change is linear in net order flow, Δp = λ·x. Estimation as in Hasbrouck (2007),
"Empirical Market Microstructure", ch. 5 / §8: per interval k, regress

    Δmid_k = α + λ·x_k + ε_k        (OLS **with an intercept**)

over a rolling window of the last ``window`` intervals (k − window + 1 … k, the current one
included). With x̄, ȳ the window means, Sxx = Σ(x − x̄)², Sxy = Σ(x − x̄)(y − ȳ):
λ = Sxy/Sxx, α = ȳ − λx̄, residual variance s² = Σ(y − α − λx)² / (n − 2),
se(λ) = sqrt(s² / Sxx), t = λ / se(λ). Each window is computed from its own data (centred
two/three-pass sums, no running-sum drift), so the streaming twin is bit-identical.

Units: Δmid in quote currency (USDT) per interval, x = signed quote volume (USDT, buyer-
aggressor positive) per interval, so λ is USDT of mid move per USDT of net taker volume.

Missing intervals: a NaN in ``dmid`` or ``signed_volume`` marks the interval as missing; it
is **skipped and counted** (``n_obs`` counts the valid intervals in each window). ±inf
raises ValueError naming the first offending index. Output is NaN where n_obs < min_obs
(min_obs ≥ 3) or all valid x in the window are equal (zero variance of signed volume). If
the residuals are exactly zero, se = 0 and t = ±inf (NaN if λ = 0 too).

Interval builder (:func:`kyle_intervals`): interval k covers [edges_k, edges_{k+1}) and is
point-in-time: x_k = Σ sign_i·quote_volume_i over trades with edges_k ≤ ts_i < edges_{k+1};
Δmid_k = mid(edges_{k+1}) − mid(edges_k) with mid(t) the mid of the last book update with
ts < t (an update at exactly edges_k belongs to interval k). Δmid_k is NaN if there is no
book update before edges_k. Both are known at edges_{k+1}.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

from perpdesk.features._arrays import as_f64_1d

__all__ = [
    "KyleLambda",
    "KyleLambdaStream",
    "aggressor_sign",
    "kyle_intervals",
    "kyle_lambda",
    "tick_rule_sign",
]


# --------------------------------------------------------------------------- kernels


@numba.njit(cache=True)
def _first_inf(a):
    for i in range(a.size):
        if np.isinf(a[i]):
            return i
    return -1


@numba.njit(cache=True)
def _rolling_ols(y, x, start, window, min_obs, lam, se, tst, alpha, nobs):
    """OLS with intercept over positions (p − window, p] for p in start..len−1.

    Positions < start are carried history (output index p − start). NaN pairs skipped.
    """
    for p in range(start, y.size):
        lo = max(0, p - window + 1)
        n = 0
        sx = 0.0
        sy = 0.0
        xmin = np.inf
        xmax = -np.inf
        for j in range(lo, p + 1):
            xj = x[j]
            yj = y[j]
            if np.isnan(xj) or np.isnan(yj):
                continue
            n += 1
            sx += xj
            sy += yj
            xmin = min(xmin, xj)
            xmax = max(xmax, xj)
        k = p - start
        nobs[k] = n
        if n < min_obs or xmin == xmax:
            lam[k] = np.nan
            se[k] = np.nan
            tst[k] = np.nan
            alpha[k] = np.nan
            continue
        mx = sx / n
        my = sy / n
        sxx = 0.0
        sxy = 0.0
        for j in range(lo, p + 1):
            xj = x[j]
            yj = y[j]
            if np.isnan(xj) or np.isnan(yj):
                continue
            dx = xj - mx
            sxx += dx * dx
            sxy += dx * (yj - my)
        b = sxy / sxx
        rss = 0.0
        for j in range(lo, p + 1):
            xj = x[j]
            yj = y[j]
            if np.isnan(xj) or np.isnan(yj):
                continue
            r = (yj - my) - b * (xj - mx)
            rss += r * r
        s = math.sqrt(rss / (n - 2) / sxx)
        lam[k] = b
        se[k] = s
        alpha[k] = my - b * mx
        if s > 0.0:
            tst[k] = b / s
        elif b > 0.0:
            tst[k] = np.inf
        elif b < 0.0:
            tst[k] = -np.inf
        else:
            tst[k] = np.nan


@numba.njit(cache=True)
def _intervals_kernel(edges, tts, tqv, tsg, bts, bb, ba, dmid, sv):
    """Merge walk over grid edges, trades and book updates (see module docstring)."""
    K = edges.size - 1
    nt = tts.size
    nb = bts.size
    it = 0
    ib = 0
    while it < nt and tts[it] < edges[0]:
        it += 1
    while ib < nb and bts[ib] < edges[0]:
        ib += 1
    mid0 = (bb[ib - 1] + ba[ib - 1]) / 2.0 if ib > 0 else np.nan
    for k in range(K):
        hi = edges[k + 1]
        s = 0.0
        while it < nt and tts[it] < hi:
            s += tsg[it] * tqv[it]
            it += 1
        sv[k] = s
        while ib < nb and bts[ib] < hi:
            ib += 1
        mid1 = (bb[ib - 1] + ba[ib - 1]) / 2.0 if ib > 0 else np.nan
        dmid[k] = mid1 - mid0
        mid0 = mid1


# --------------------------------------------------------------------------- helpers


def _i64(x: object, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name} must be a 1-d integer array (ns), got dtype {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.int64)


def _first_where(mask: np.ndarray) -> int:
    idx = np.flatnonzero(mask)
    return int(idx[0]) if idx.size else -1


def _check_sorted(ts: np.ndarray, name: str, strict: bool = False) -> None:
    d = np.diff(ts)
    i = _first_where(d <= 0 if strict else d < 0)
    if i >= 0:
        rule = "strictly increasing" if strict else "non-decreasing"
        raise ValueError(
            f"{name}[{i + 1}]={int(ts[i + 1])} is not after {name}[{i}]={int(ts[i])} "
            f"({name} must be {rule})"
        )


def _check_params(window: int, min_obs: int) -> tuple[int, int]:
    for v, nm in ((window, "window"), (min_obs, "min_obs")):
        if isinstance(v, bool) or not isinstance(v, int | np.integer):
            raise ValueError(f"{nm} must be an integer, got {v!r}")
    window, min_obs = int(window), int(min_obs)
    if min_obs < 3:
        raise ValueError(f"min_obs must be >= 3 (slope + intercept + 1 dof), got {min_obs}")
    if window < min_obs:
        raise ValueError(f"window ({window}) must be >= min_obs ({min_obs})")
    return window, min_obs


def _series(dmid: object, signed_volume: object) -> tuple[np.ndarray, np.ndarray]:
    y = as_f64_1d(dmid, "dmid")
    x = as_f64_1d(signed_volume, "signed_volume")
    if y.size != x.size:
        raise ValueError(f"dmid has length {y.size} but signed_volume has length {x.size}")
    for a, nm in ((y, "dmid"), (x, "signed_volume")):
        i = _first_inf(a)
        if i >= 0:
            raise ValueError(
                f"{nm}[{i}] is infinite ({float(a[i])!r}); use NaN to mark a missing interval"
            )
    return y, x


# --------------------------------------------------------------------------- API


@dataclass(frozen=True, slots=True)
class KyleLambda:
    """Rolling Kyle's lambda per interval (NaN where undefined, see module docstring).

    ``lam``: slope λ (Δmid units per signed-volume unit); ``se``: its OLS standard error;
    ``tstat``: λ/se; ``intercept``: α (Δmid units); ``n_obs``: valid intervals in the window.
    """

    lam: np.ndarray
    se: np.ndarray
    tstat: np.ndarray
    intercept: np.ndarray
    n_obs: np.ndarray


def _run(y, x, start, window, min_obs) -> KyleLambda:
    m = y.size - start
    lam = np.empty(m)
    se = np.empty(m)
    t = np.empty(m)
    a = np.empty(m)
    n = np.empty(m, dtype=np.int64)
    _rolling_ols(y, x, start, window, min_obs, lam, se, t, a, n)
    return KyleLambda(lam=lam, se=se, tstat=t, intercept=a, n_obs=n)


def kyle_lambda(
    dmid: np.ndarray, signed_volume: np.ndarray, window: int = 60, min_obs: int = 20
) -> KyleLambda:
    """Rolling OLS (with intercept) slope of Δmid on signed volume over the last ``window``
    intervals, Kyle (1985) / Hasbrouck (2007). E.g. 1-minute intervals, window=60."""
    window, min_obs = _check_params(window, min_obs)
    y, x = _series(dmid, signed_volume)
    return _run(y, x, 0, window, min_obs)


class KyleLambdaStream:
    """Streaming twin of :func:`kyle_lambda`: ``update`` with one interval (scalars) or a
    micro-batch (arrays) returns exactly the batch values for those intervals. Keeps the last
    ``window − 1`` intervals. A bad micro-batch raises ValueError and leaves the state as is."""

    def __init__(self, window: int = 60, min_obs: int = 20) -> None:
        self.window, self.min_obs = _check_params(window, min_obs)
        self._y = np.empty(0)
        self._x = np.empty(0)

    def update(self, dmid: float | np.ndarray, signed_volume: float | np.ndarray) -> KyleLambda:
        """Feed interval(s) in time order; returns the rolling estimate at each of them."""
        y, x = _series(dmid, signed_volume)
        yy = np.concatenate([self._y, y])
        xx = np.concatenate([self._x, x])
        out = _run(yy, xx, self._y.size, self.window, self.min_obs)
        keep = self.window - 1
        self._y = yy[-keep:].copy() if keep else np.empty(0)
        self._x = xx[-keep:].copy() if keep else np.empty(0)
        return out


def aggressor_sign(is_buyer_maker: np.ndarray) -> np.ndarray:
    """Trade sign from Binance's ``m`` flag: +1 buyer aggressed (m false), −1 seller (m true)."""
    m = np.asarray(is_buyer_maker)
    if m.ndim != 1 or m.dtype != np.bool_:
        raise ValueError(f"is_buyer_maker must be a 1-d bool array, got dtype {m.dtype}")
    return np.where(m, -1.0, 1.0)


def tick_rule_sign(price: np.ndarray) -> np.ndarray:
    """Tick-rule trade sign (Lee & Ready 1991): +1 uptick, −1 downtick, zero tick repeats the
    previous sign; 0 until the first non-zero tick (unknown; such trades add nothing).

    Prices must be finite and > 0 (ValueError naming the first bad index).
    """
    p = as_f64_1d(price, "price")
    i = _first_where(~(np.isfinite(p) & (p > 0)))
    if i >= 0:
        raise ValueError(f"price[{i}]={float(p[i])!r} is not finite and > 0")
    d = np.sign(np.diff(p))
    out = np.zeros(p.size)
    if p.size > 1:
        # forward-fill the last non-zero tick sign
        idx = np.maximum.accumulate(np.where(d != 0, np.arange(d.size), -1))
        out[1:] = np.where(idx >= 0, d[np.maximum(idx, 0)], 0.0)
    return out


def kyle_intervals(
    edges_ns: np.ndarray,
    trade_ts_ns: np.ndarray,
    trade_quote_volume: np.ndarray,
    trade_sign: np.ndarray,
    book_ts_ns: np.ndarray,
    bid_px: np.ndarray,
    ask_px: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Interval series (Δmid, signed quote volume) on the grid ``edges_ns`` (len K+1 → K
    intervals [edges_k, edges_{k+1})), point-in-time as in the module docstring.

    ``edges_ns`` strictly increasing int64 ns (e.g. ``np.arange(t0, t1 + 1, 60 * 10**9)``);
    trade / book timestamps non-decreasing (ties allowed); quote volume finite ≥ 0 (USDT);
    sign in {−1, 0, +1} (see :func:`aggressor_sign`, :func:`tick_rule_sign`); bid/ask finite
    > 0 (USDT). Trades and book updates outside the grid are ignored (the book before
    edges_0 sets the starting mid). Returns (dmid, signed_volume), each of length K.
    """
    edges = _i64(edges_ns, "edges_ns")
    if edges.size < 2:
        raise ValueError(f"edges_ns needs at least 2 edges, got {edges.size}")
    _check_sorted(edges, "edges_ns", strict=True)
    tts = _i64(trade_ts_ns, "trade_ts_ns")
    tqv = as_f64_1d(trade_quote_volume, "trade_quote_volume")
    tsg = as_f64_1d(trade_sign, "trade_sign")
    bts = _i64(book_ts_ns, "book_ts_ns")
    bb = as_f64_1d(bid_px, "bid_px")
    ba = as_f64_1d(ask_px, "ask_px")
    for a, nm, ref in ((tqv, "trade_quote_volume", tts), (tsg, "trade_sign", tts)):
        if a.size != ref.size:
            raise ValueError(f"{nm} has length {a.size}, expected {ref.size}")
    for a, nm in ((bb, "bid_px"), (ba, "ask_px")):
        if a.size != bts.size:
            raise ValueError(f"{nm} has length {a.size}, expected {bts.size}")
    _check_sorted(tts, "trade_ts_ns")
    _check_sorted(bts, "book_ts_ns")
    i = _first_where(~(np.isfinite(tqv) & (tqv >= 0)))
    if i >= 0:
        raise ValueError(f"trade_quote_volume[{i}]={float(tqv[i])!r} is not finite and >= 0")
    i = _first_where(~np.isin(tsg, (-1.0, 0.0, 1.0)))
    if i >= 0:
        raise ValueError(f"trade_sign[{i}]={float(tsg[i])!r} is not -1, 0 or +1")
    for a, nm in ((bb, "bid_px"), (ba, "ask_px")):
        i = _first_where(~(np.isfinite(a) & (a > 0)))
        if i >= 0:
            raise ValueError(f"{nm}[{i}]={float(a[i])!r} is not finite and > 0")
    K = edges.size - 1
    dmid = np.empty(K)
    sv = np.empty(K)
    _intervals_kernel(edges, tts, tqv, tsg, bts, bb, ba, dmid, sv)
    return dmid, sv
