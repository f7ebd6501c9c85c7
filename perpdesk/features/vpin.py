"""VPIN — volume-synchronised probability of informed trading, batch kernels and streaming twin.

Source: Easley, López de Prado & O'Hara (2012), "Flow Toxicity and Liquidity in a
High-Frequency World", Review of Financial Studies 25(5), 1457–1493 (bulk volume
classification, equal-volume buckets, VPIN as the mean absolute order imbalance).

Units: prices in quote currency per unit of base (any positive scale; only log-ratios are
used), volumes in **quote currency** (USD(T) notional, e.g. price × qty), ``bucket_usd`` in
the same quote currency; buy shares and VPIN are dimensionless in [0, 1].

Pipeline, for observations i = 0, 1, … (5m bars: close price + quote volume; or trades):

1. **Classification** — a buy share s_i ∈ [0, 1] of observation i's volume:

   * bulk volume classification (BVC, EL&O'H 2012 §2.2): r_i = ln(p_i / p_{i−1}); σ_i = the
     population standard deviation of the ``sigma_window`` most recent returns up to and
     including r_i (0.01 while fewer than ``sigma_window`` returns exist), floored at 1e-8;
     s_i = Φ(r_i / σ_i), Φ the standard normal CDF, Φ(x) = ½(1 + erf(x / √2)).
   * tick rule (Lee & Ready 1991, "Inferring Trade Direction from Intraday Data", J. Finance
     46(2)): s_i = 1 on an uptick (p_i > p_{i−1}), 0 on a downtick, the previous
     classification on a zero tick.
   * aggressor flag (exchange-reported; Binance ``is_buyer_maker`` / ``m``): True means the
     buyer was the resting maker, i.e. the seller aggressed → s_i = 0; False → s_i = 1.

   **Unclassified observations.** The first observation has no previous price, so under BVC
   and the tick rule it is *unclassified*: its buy share is NaN and its volume is not
   bucketed (it contributes nothing). Under the tick rule a zero tick before the first
   non-zero tick has no previous classification and is unclassified likewise. The aggressor
   flag classifies every trade, the first included.

2. **Equal-volume buckets** of ``bucket_usd``: observation volumes are poured, in order,
   into buckets by the remaining-capacity rule — piece = min(remaining capacity, volume
   left of the observation) — so an observation is split exactly across the buckets it
   fills and its buy share is kept on every piece (V_buy += s·piece, V_sell += (1 − s)·piece).
   Each completed bucket holds exactly ``bucket_usd`` (up to the rounding of its pieces).

3. **VPIN** after observation i = mean of |V_buy − V_sell| over the last ``n_buckets``
   completed buckets, divided by ``bucket_usd`` (so 0 ≤ VPIN ≤ 1). NaN until ``n_buckets``
   buckets have completed; between completions the last value holds. One value per
   observation (the value after processing it).

σ is kept by a rolling (Welford-type) replace-oldest update of the window mean and sum of
squared deviations, recomputed exactly (two passes over a ring buffer, fixed summation
order) every ``sigma_window`` returns and whenever the sum of squares has fallen below 1e-3
of its largest value since the last exact pass — so rounding cannot accumulate past about
1e-11 relative (cancellation after a large return leaves the window triggers an exact
pass). Cost is amortised O(1) per observation, plus O(n_buckets) per observation that
completes a bucket, plus O(1) per bucket filled. To keep that bounded, one observation
may fill at most ``MAX_BUCKETS_PER_OBSERVATION`` buckets (quote_volume ≤ 1e8 × bucket_usd).

Bad input — a non-finite, zero or negative price; a NaN, infinite or negative volume (zero
volume is allowed and changes nothing but the BVC/tick state); an aggressor flag other than
0/1; a buy share outside [0, 1] (NaN is allowed in :func:`vpin_from_shares` and means
"unclassified"); mismatched lengths — raises ``ValueError`` naming the first offending index.

All kernels share one numba step over a flat float64 state vector, so :class:`VPINStream`
(carried state) is bit-identical to the batch functions on the concatenated data for any
split into micro-batches or single events.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "MAX_BUCKETS_PER_OBSERVATION",
    "METHODS",
    "SIGMA_FLOOR",
    "SIGMA_INIT",
    "VPINStream",
    "aggressor_buy_share",
    "bvc_buy_share",
    "tick_rule_buy_share",
    "vpin_bars",
    "vpin_from_shares",
    "vpin_trades",
]

METHODS = ("bvc", "tick", "aggressor")
"""Trade classification methods accepted by :func:`vpin_trades` and :class:`VPINStream`."""

SIGMA_INIT = 0.01
"""σ used by BVC while fewer than ``sigma_window`` returns exist (log-return units)."""

SIGMA_FLOOR = 1e-8
"""Lower bound on the BVC σ (log-return units); avoids 0/0 on flat prices."""

MAX_BUCKETS_PER_OBSERVATION = 1e8
"""Largest quote_volume / bucket_usd accepted for a single observation."""

_SQRT2 = math.sqrt(2.0)
_M2_SHRINK = 1e-3  # recompute σ exactly when Σ(r − mean)² fell below this × its recent max

# classification codes
_M_BVC = 0
_M_TICK = 1
_M_AGGR = 2
_M_SHARE = 3  # the flag argument is the buy share itself
_METHOD_CODE = {"bvc": _M_BVC, "tick": _M_TICK, "aggressor": _M_AGGR}

# layout of the flat float64 state vector (counts stored as floats: exact below 2**53)
_PREV = 0  # previous price, NaN before the first observation
_NRET = 1  # number of returns seen, capped at sigma_window
_RPOS = 2  # next write position in the return ring
_REM = 3  # remaining capacity of the open bucket (quote units), always > 0
_BUY = 4  # buy volume in the open bucket
_SELL = 5  # sell volume in the open bucket
_NDONE = 6  # completed buckets
_IPOS = 7  # next write position in the imbalance ring
_VPIN = 8  # last VPIN value (NaN until n_buckets completed)
_TICK = 9  # last tick-rule classification (NaN if none yet)
_W = 10  # sigma_window
_BUCKET = 11  # bucket_usd
_NB = 12  # n_buckets
_METHOD = 13  # classification code
_NEVENTS = 14  # observations consumed
_MEAN = 15  # mean of the return window (BVC, once full)
_M2 = 16  # sum of squared deviations of the return window about _MEAN
_M2MAX = 17  # largest _M2 since its last exact recomputation
_HDR = 20  # return ring at [_HDR, _HDR + W), imbalance ring at [_HDR + W, _HDR + W + NB)


# --------------------------------------------------------------------------- parameters


def _check_window(sigma_window: int) -> int:
    if isinstance(sigma_window, bool) or int(sigma_window) != sigma_window or sigma_window < 1:
        raise ValueError(f"sigma_window must be an integer >= 1, got {sigma_window!r}")
    return int(sigma_window)


def _check_bucket(bucket_usd: float, n_buckets: int) -> tuple[float, int]:
    b = float(bucket_usd)
    if not (math.isfinite(b) and b > 0.0):
        raise ValueError(f"bucket_usd must be finite and > 0, got {bucket_usd!r}")
    if isinstance(n_buckets, bool) or int(n_buckets) != n_buckets or n_buckets < 1:
        raise ValueError(f"n_buckets must be an integer >= 1, got {n_buckets!r}")
    return b, int(n_buckets)


def _new_state(method: int, sigma_window: int, bucket_usd: float, n_buckets: int) -> np.ndarray:
    st = np.zeros(_HDR + sigma_window + n_buckets, dtype=np.float64)
    st[_PREV] = np.nan
    st[_REM] = bucket_usd
    st[_VPIN] = np.nan
    st[_TICK] = np.nan
    st[_W] = sigma_window
    st[_BUCKET] = bucket_usd
    st[_NB] = n_buckets
    st[_METHOD] = method
    return st


# --------------------------------------------------------------------------- numba kernels


@numba.njit(cache=True)
def _ring_sum(st: np.ndarray, off: int, n: int) -> float:
    """Σ st[off:off+n] with four accumulators (fixed order: deterministic, short chains)."""
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    j = 0
    while j + 4 <= n:
        s0 += st[off + j]
        s1 += st[off + j + 1]
        s2 += st[off + j + 2]
        s3 += st[off + j + 3]
        j += 4
    while j < n:
        s0 += st[off + j]
        j += 1
    return (s0 + s1) + (s2 + s3)


@numba.njit(cache=True)
def _ring_exact(st: np.ndarray, w: int) -> float:
    """Two-pass mean and Σ(r − mean)² of the return ring; stores both, resets _M2MAX."""
    off = _HDR
    n = w
    m = _ring_sum(st, off, n) / n
    q0 = 0.0
    q1 = 0.0
    q2 = 0.0
    q3 = 0.0
    j = 0
    while j + 4 <= n:
        d0 = st[off + j] - m
        d1 = st[off + j + 1] - m
        d2 = st[off + j + 2] - m
        d3 = st[off + j + 3] - m
        q0 += d0 * d0
        q1 += d1 * d1
        q2 += d2 * d2
        q3 += d3 * d3
        j += 4
    while j < n:
        d0 = st[off + j] - m
        q0 += d0 * d0
        j += 1
    m2 = (q0 + q1) + (q2 + q3)
    st[_MEAN] = m
    st[_M2] = m2
    st[_M2MAX] = m2
    return m2


@numba.njit(cache=True)
def _classify(st: np.ndarray, p: float, f: float) -> float:
    """Buy share of an observation at price p (NaN = unclassified); updates the state."""
    m = int(st[_METHOD])
    prev = st[_PREV]
    st[_PREV] = p
    if m == _M_BVC:
        if math.isnan(prev):
            return math.nan
        r = math.log(p / prev)
        w = int(st[_W])
        pos = int(st[_RPOS])
        x_old = st[_HDR + pos]
        st[_HDR + pos] = r
        pos += 1
        if pos == w:
            pos = 0
        st[_RPOS] = pos
        n_before = st[_NRET]
        if n_before < w - 1:
            st[_NRET] = n_before + 1.0
            sig = SIGMA_INIT
        else:
            if n_before < w or pos == 0:  # window just filled, or wrapped: exact
                st[_NRET] = w
                m2 = _ring_exact(st, w)
            else:  # rolling replace x_old → r (Welford-type), guarded against cancellation
                mean_old = st[_MEAN]
                mean = mean_old + (r - x_old) / w
                m2 = st[_M2] + (r - x_old) * ((r - mean) + (x_old - mean_old))
                st[_MEAN] = mean
                st[_M2] = m2
                if m2 < st[_M2MAX] * _M2_SHRINK:
                    m2 = _ring_exact(st, w)
                elif m2 > st[_M2MAX]:
                    st[_M2MAX] = m2
            sig = math.sqrt(m2 / w)
            if sig < SIGMA_FLOOR:
                sig = SIGMA_FLOOR
        return 0.5 * (1.0 + math.erf((r / sig) / _SQRT2))
    if m == _M_TICK:
        if math.isnan(prev):
            return math.nan
        if p > prev:
            s = 1.0
        elif p < prev:
            s = 0.0
        else:
            s = st[_TICK]
        st[_TICK] = s
        return s
    if m == _M_AGGR:
        return 0.0 if f != 0.0 else 1.0
    return f


@numba.njit(cache=True)
def _bucket(st: np.ndarray, s: float, v: float) -> float:
    """Pour volume v with buy share s into the buckets; returns VPIN after it."""
    if math.isnan(s) or not v > 0.0:
        return st[_VPIN]
    rem = st[_REM]
    buy = st[_BUY]
    sell = st[_SELL]
    left = v
    if left >= rem:
        bucket = st[_BUCKET]
        nb = int(st[_NB])
        ioff = _HDR + int(st[_W])
        ipos = int(st[_IPOS])
        ndone = st[_NDONE]
        while left >= rem:
            buy += s * rem
            sell += (1.0 - s) * rem
            st[ioff + ipos] = abs(buy - sell)
            ipos += 1
            if ipos == nb:
                ipos = 0
            ndone += 1.0
            left -= rem
            rem = bucket
            buy = 0.0
            sell = 0.0
        st[_IPOS] = ipos
        st[_NDONE] = ndone
        if ndone >= nb:
            st[_VPIN] = _ring_sum(st, ioff, nb) / nb / bucket
    if left > 0.0:
        buy += s * left
        sell += (1.0 - s) * left
        rem -= left
    st[_REM] = rem
    st[_BUY] = buy
    st[_SELL] = sell
    return st[_VPIN]


@numba.njit(cache=True)
def _step(st: np.ndarray, p: float, v: float, f: float) -> float:
    """One observation (the per-event streaming path)."""
    out = _bucket(st, _classify(st, p, f), v)
    st[_NEVENTS] += 1.0
    return out


@numba.njit(cache=True)
def _run(st: np.ndarray, price: np.ndarray, qv: np.ndarray, flag: np.ndarray, out: np.ndarray):
    """Batch loop; ``flag`` is empty when the method needs no per-event flag."""
    n = price.shape[0]
    has_flag = flag.shape[0] > 0
    for i in range(n):
        f = flag[i] if has_flag else 0.0
        out[i] = _bucket(st, _classify(st, price[i], f), qv[i])
    st[_NEVENTS] += n


@numba.njit(cache=True)
def _run_classify(st: np.ndarray, price: np.ndarray, out: np.ndarray):
    for i in range(price.shape[0]):
        out[i] = _classify(st, price[i], 0.0)


@numba.njit(cache=True)
def _first_bad_price(a: np.ndarray) -> int:
    for i in range(a.shape[0]):
        x = a[i]
        if not (x > 0.0 and x < np.inf):
            return i
    return -1


@numba.njit(cache=True)
def _first_bad_volume(a: np.ndarray, cap: float) -> int:
    for i in range(a.shape[0]):
        x = a[i]
        if not (x >= 0.0 and x <= cap):
            return i
    return -1


@numba.njit(cache=True)
def _first_bad_unit(a: np.ndarray, allow_nan: bool, binary: bool) -> int:
    """First index not in [0, 1] (or not in {0, 1} when ``binary``); NaN ok if allow_nan."""
    for i in range(a.shape[0]):
        x = a[i]
        if math.isnan(x):
            if allow_nan:
                continue
            return i
        if binary:
            if not (x == 0.0 or x == 1.0):
                return i
        elif not (x >= 0.0 and x <= 1.0):
            return i
    return -1


# --------------------------------------------------------------------------- validation


def _as_1d(x: ArrayLike, name: str) -> np.ndarray:
    a = np.ascontiguousarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-d, got shape {a.shape}")
    return a


def _check_arrays(
    price: np.ndarray | None,
    qv: np.ndarray,
    flag: np.ndarray | None,
    flag_name: str,
    bucket_usd: float,
    base: int = 0,
) -> None:
    """Raise ValueError naming the smallest offending index (``base`` offsets the message)."""
    n = qv.shape[0]
    for a, nm in ((price, "price"), (flag, flag_name)):
        if a is not None and a.shape[0] != n:
            raise ValueError(f"{nm} has length {a.shape[0]}, quote_volume has length {n}")
    errs: list[tuple[int, str]] = []
    if price is not None:
        i = _first_bad_price(price)
        if i >= 0:
            errs.append((i, f"price[{i}] = {float(price[i])!r} is not a finite price > 0"))
    i = _first_bad_volume(qv, bucket_usd * MAX_BUCKETS_PER_OBSERVATION)
    if i >= 0:
        x = float(qv[i])
        why = (
            f"exceeds {MAX_BUCKETS_PER_OBSERVATION:g} buckets of {bucket_usd!r}"
            if x > 0.0 and math.isfinite(x)
            else "is not a finite volume >= 0"
        )
        errs.append((i, f"quote_volume[{i}] = {x!r} {why}"))
    if flag is not None:
        share = flag_name == "buy_share"
        i = _first_bad_unit(flag, share, not share)
        if i >= 0:
            want = "in [0, 1] or NaN" if share else "a boolean (0/1)"
            errs.append((i, f"{flag_name}[{i}] = {float(flag[i])!r} is not {want}"))
    if errs:
        i, msg = min(errs)
        if base:
            msg += f" (event {base + i} of the stream)"
        raise ValueError(msg)


# --------------------------------------------------------------------------- batch API


def bvc_buy_share(price: ArrayLike, sigma_window: int = 20) -> NDArray[np.float64]:
    """Bulk-volume-classification buy share Φ(r_i / σ_i) per observation (EL&O'H 2012 §2.2).

    r_i = ln(p_i / p_{i−1}); σ_i = population std of the ``sigma_window`` most recent returns
    up to and including r_i, :data:`SIGMA_INIT` (0.01) while fewer exist, floored at
    :data:`SIGMA_FLOOR`. Element 0 is NaN (no return: unclassified). Prices > 0, finite.
    """
    w = _check_window(sigma_window)
    p = _as_1d(price, "price")
    i = _first_bad_price(p)
    if i >= 0:
        raise ValueError(f"price[{i}] = {float(p[i])!r} is not a finite price > 0")
    out = np.empty(p.shape[0], dtype=np.float64)
    _run_classify(_new_state(_M_BVC, w, 1.0, 1), p, out)
    return out


def tick_rule_buy_share(price: ArrayLike) -> NDArray[np.float64]:
    """Tick-rule buy share (Lee & Ready 1991): 1 on an uptick, 0 on a downtick, the previous
    classification on a zero tick. Element 0, and zero ticks before the first non-zero tick,
    are NaN (unclassified). Prices > 0, finite."""
    p = _as_1d(price, "price")
    i = _first_bad_price(p)
    if i >= 0:
        raise ValueError(f"price[{i}] = {float(p[i])!r} is not a finite price > 0")
    out = np.empty(p.shape[0], dtype=np.float64)
    _run_classify(_new_state(_M_TICK, 1, 1.0, 1), p, out)
    return out


def aggressor_buy_share(is_buyer_maker: ArrayLike) -> NDArray[np.float64]:
    """Buy share from the exchange's aggressor flag (Binance ``is_buyer_maker``): True (the
    seller aggressed) → 0, False → 1. Values must be booleans or 0/1."""
    f = _as_1d(is_buyer_maker, "is_buyer_maker")
    i = _first_bad_unit(f, False, True)
    if i >= 0:
        raise ValueError(f"is_buyer_maker[{i}] = {float(f[i])!r} is not a boolean (0/1)")
    return 1.0 - f


def vpin_from_shares(
    buy_share: ArrayLike,
    quote_volume: ArrayLike,
    bucket_usd: float = 50_000.0,
    n_buckets: int = 50,
) -> NDArray[np.float64]:
    """VPIN per observation from given buy shares (EL&O'H 2012 §2.3, equal-volume buckets).

    ``buy_share`` in [0, 1]; NaN means unclassified — that observation's volume is not
    bucketed (as the first element of :func:`bvc_buy_share`). ``quote_volume`` ≥ 0 in quote
    currency, ``bucket_usd`` in the same units. Returns the VPIN after each observation: NaN
    until ``n_buckets`` buckets complete, then the mean |V_buy − V_sell| / bucket_usd over the
    last ``n_buckets`` completed buckets, held between completions.
    """
    b, nb = _check_bucket(bucket_usd, n_buckets)
    s = _as_1d(buy_share, "buy_share")
    v = _as_1d(quote_volume, "quote_volume")
    _check_arrays(None, v, s, "buy_share", b)
    out = np.empty(v.shape[0], dtype=np.float64)
    _run(_new_state(_M_SHARE, 1, b, nb), v, v, s, out)  # price unused by _M_SHARE
    return out


def vpin_trades(
    price: ArrayLike,
    quote_volume: ArrayLike,
    is_buyer_maker: ArrayLike | None = None,
    *,
    method: str = "bvc",
    sigma_window: int = 20,
    bucket_usd: float = 50_000.0,
    n_buckets: int = 50,
) -> NDArray[np.float64]:
    """VPIN per trade (EL&O'H 2012) with classification ``method``:

    * ``"bvc"`` — bulk volume classification per trade (see :func:`bvc_buy_share`);
    * ``"tick"`` — tick rule (see :func:`tick_rule_buy_share`);
    * ``"aggressor"`` — exchange flag ``is_buyer_maker`` (required; ignored otherwise).

    ``price`` > 0 (quote per base), ``quote_volume`` ≥ 0 (quote currency, price × qty),
    ``bucket_usd`` in quote currency. Equal to ``vpin_from_shares(<share>(…), quote_volume,
    bucket_usd, n_buckets)`` and, bit for bit, to :class:`VPINStream` over any split.
    """
    code, w, b, nb = _stream_params(method, sigma_window, bucket_usd, n_buckets)
    p = _as_1d(price, "price")
    v = _as_1d(quote_volume, "quote_volume")
    f = _flags(code, is_buyer_maker)
    _check_arrays(p, v, f, "is_buyer_maker", b)
    out = np.empty(v.shape[0], dtype=np.float64)
    _run(_new_state(code, w, b, nb), p, v, _EMPTY if f is None else f, out)
    return out


def vpin_bars(
    close: ArrayLike,
    quote_volume: ArrayLike,
    *,
    sigma_window: int = 20,
    bucket_usd: float = 50_000.0,
    n_buckets: int = 50,
) -> NDArray[np.float64]:
    """Kline VPIN (EL&O'H 2012, BVC on bars): one value per bar from close prices and quote
    volumes (e.g. 5m bars; quote currency). The first bar has no return and is not bucketed."""
    return vpin_trades(
        close, quote_volume, method="bvc", sigma_window=sigma_window,
        bucket_usd=bucket_usd, n_buckets=n_buckets,
    )  # fmt: skip


_EMPTY = np.empty(0, dtype=np.float64)


def _stream_params(
    method: str, sigma_window: int, bucket_usd: float, n_buckets: int
) -> tuple[int, int, float, int]:
    if method not in _METHOD_CODE:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    w = _check_window(sigma_window)
    b, nb = _check_bucket(bucket_usd, n_buckets)
    return _METHOD_CODE[method], w, b, nb


def _flags(code: int, is_buyer_maker: ArrayLike | None) -> np.ndarray | None:
    if code != _M_AGGR:
        return None
    if is_buyer_maker is None:
        raise ValueError("method='aggressor' needs is_buyer_maker")
    return _as_1d(is_buyer_maker, "is_buyer_maker")


# --------------------------------------------------------------------------- streaming


class VPINStream:
    """Streaming twin of :func:`vpin_trades` / :func:`vpin_bars` (same parameters, same units).

    ``update(price, quote_volume[, is_buyer_maker])`` takes one event (Python/NumPy scalars;
    returns a float) or a micro-batch (1-d arrays; returns an array), and returns the VPIN
    after each event — bit-identical to the batch function on the concatenated data for any
    split, since both run the same numba step on the same carried state. A rejected
    micro-batch (``ValueError`` naming its first bad index and the stream event number)
    leaves the state unchanged. ``is_buyer_maker`` is required for ``method="aggressor"``
    and ignored otherwise.
    """

    __slots__ = ("_aggr", "_cap", "_st", "bucket_usd", "method", "n_buckets", "sigma_window")

    def __init__(
        self,
        method: str = "bvc",
        *,
        sigma_window: int = 20,
        bucket_usd: float = 50_000.0,
        n_buckets: int = 50,
    ) -> None:
        code, w, b, nb = _stream_params(method, sigma_window, bucket_usd, n_buckets)
        self.method, self.sigma_window, self.bucket_usd, self.n_buckets = method, w, b, nb
        self._aggr = code == _M_AGGR
        self._cap = b * MAX_BUCKETS_PER_OBSERVATION
        self._st = _new_state(code, w, b, nb)

    @property
    def vpin(self) -> float:
        """Last VPIN value (NaN until ``n_buckets`` buckets have completed)."""
        return float(self._st[_VPIN])

    @property
    def n_events(self) -> int:
        """Events consumed so far."""
        return int(self._st[_NEVENTS])

    @property
    def n_buckets_completed(self) -> int:
        """Buckets completed so far."""
        return int(self._st[_NDONE])

    @property
    def open_bucket(self) -> tuple[float, float]:
        """(V_buy, V_sell) poured so far into the open (incomplete) bucket, quote units."""
        return float(self._st[_BUY]), float(self._st[_SELL])

    @property
    def recent_imbalances(self) -> NDArray[np.float64]:
        """|V_buy − V_sell| of the last ≤ n_buckets completed buckets, oldest first."""
        w, nb = self.sigma_window, self.n_buckets
        ring = self._st[_HDR + w : _HDR + w + nb]
        k = min(self.n_buckets_completed, nb)
        pos = int(self._st[_IPOS])
        return np.roll(ring, -pos)[nb - k :].copy()

    def update(
        self,
        price: float | ArrayLike,
        quote_volume: float | ArrayLike,
        is_buyer_maker: bool | ArrayLike | None = None,
    ) -> float | NDArray[np.float64]:
        """Consume one event (scalars → float) or a micro-batch (arrays → array of VPIN)."""
        if isinstance(price, float | int) and isinstance(quote_volume, float | int):
            # scalar fast path: no allocation, one numba call
            if not (0.0 < price < math.inf):
                self._bad_scalar(f"price = {price!r} is not a finite price > 0")
            if not (0.0 <= quote_volume <= self._cap):
                self._bad_scalar(f"quote_volume = {quote_volume!r} is not a volume in range")
            f = 0.0
            if self._aggr:
                if is_buyer_maker is None:
                    raise ValueError("method='aggressor' needs is_buyer_maker")
                if is_buyer_maker is True or is_buyer_maker is False:
                    f = 1.0 if is_buyer_maker else 0.0
                else:
                    f = float(is_buyer_maker)  # type: ignore[arg-type]
                    if not (f == 0.0 or f == 1.0):
                        self._bad_scalar(f"is_buyer_maker = {is_buyer_maker!r} is not 0/1")
            return _step(self._st, float(price), float(quote_volume), f)
        p = _as_1d(np.atleast_1d(price), "price")
        v = _as_1d(np.atleast_1d(quote_volume), "quote_volume")
        fl = None
        if self._aggr:
            if is_buyer_maker is None:
                raise ValueError("method='aggressor' needs is_buyer_maker")
            fl = _as_1d(np.atleast_1d(is_buyer_maker), "is_buyer_maker")
        _check_arrays(p, v, fl, "is_buyer_maker", self.bucket_usd, base=self.n_events)
        out = np.empty(v.shape[0], dtype=np.float64)
        _run(self._st, p, v, _EMPTY if fl is None else fl, out)
        if np.ndim(price) == 0 and np.ndim(quote_volume) == 0:
            return float(out[0])
        return out

    def _bad_scalar(self, msg: str) -> None:
        raise ValueError(f"{msg} (event {self.n_events} of the stream)")
