"""Order-flow imbalance (OFI) from best bid/ask updates: per event, trailing window, time grid.

Source: Cont, Kukanov & Stoikov (2014), "The price impact of order book events", J. Financial
Econometrics 12(1), eq. (1)-(3). For consecutive top-of-book updates n−1 → n

    e_n = q^b_n·1{p^b_n ≥ p^b_{n−1}} − q^b_{n−1}·1{p^b_n ≤ p^b_{n−1}}
          − q^a_n·1{p^a_n ≤ p^a_{n−1}} + q^a_{n−1}·1{p^a_n ≥ p^a_{n−1}}

and OFI over a period is the sum of e_n over the updates in it. Units: prices in quote
currency (e.g. USDT), quantities in base units (e.g. BTC), so e_n and OFI are in **base
units** (positive = net buying pressure at the top of the book).

First update. e of the very first update of a series (nothing before it) is defined as
**0**; it still counts as an event of its window / bucket (its depth enters the depth mean).
A streaming :class:`OfiStream` carries the last book across ``update`` calls, so only the
first update it ever sees gets e = 0, exactly as in the batch functions on the whole series.

Depth normalisation. Depth of update n is d_n = (q^b_n + q^a_n)/2 (base units). A normalised
OFI is OFI / (event-weighted mean of d_n over the same events that are summed), i.e.
``ofi_norm = Σ e_n / ((1/N) Σ d_n)`` (dimensionless, in "average top-of-book depths"; CKS
2014 §3 scale OFI by average depth in the same way). It is NaN when the mean depth is 0 or
the period has no events.

Trailing window (:func:`ofi_trailing`). At update i with timestamp t_i the value is the sum
over updates j ≤ i with t_j in (t_i − window_ns, t_i]. Equal timestamps are **allowed**
(Binance emits several bookTicker updates in the same millisecond); they are ordered by
index and the value at update i includes only updates up to i (no look-ahead to later
updates with the same timestamp): the last update of a same-timestamp group carries the
full (t − window, t] sum. Sums use Neumaier compensated summation (add on entry, subtract on
exit), so they stay accurate to a few ulp of the window sum over arbitrarily long series.

Time grid (:func:`ofi_buckets`). Bucket k covers [k·bucket_ns, (k+1)·bucket_ns) ns since
the Unix epoch (aligned to the epoch). The output is the contiguous run of buckets from the
one holding the first update to the one holding the last; empty buckets have ofi 0,
count 0 and NaN mean depth / normalised OFI. An update's e_n (which compares it to the
previous update, possibly in an earlier bucket) belongs to the bucket of its own timestamp.

Input rules (ValueError naming the first offending index): timestamps int64 ns,
non-decreasing (ties allowed); prices finite and > 0; quantities finite and ≥ 0; book not
crossed or locked (bid_px < ask_px).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from perpdesk.features._arrays import as_f64_1d, as_ts_ns

__all__ = [
    "OfiBuckets",
    "OfiStream",
    "OfiStreamUpdate",
    "OfiTrailing",
    "ofi_buckets",
    "ofi_events",
    "ofi_trailing",
]

_KINDS = {
    1: "bid_px is not finite and > 0",
    2: "ask_px is not finite and > 0",
    3: "bid_qty is not finite and >= 0",
    4: "ask_qty is not finite and >= 0",
    5: "book is crossed or locked (bid_px >= ask_px)",
    6: "timestamp is earlier than the previous one (timestamps must be non-decreasing)",
}


# --------------------------------------------------------------------------- kernels


@numba.njit(cache=True)
def _events_kernel(ts, bp, bq, ap, aq, check_ts, prev, has_prev, last_ts, e_out, d_out):
    """Validate and compute e_n (CKS 2014 eq. 1) and depth d_n in one pass.

    ``prev`` = (bid_px, bid_qty, ask_px, ask_qty) of the update before ``ts[0]`` if
    ``has_prev``. Returns (bad index or −1, kind). Outputs past a bad index are undefined.
    """
    pbp = prev[0]
    pbq = prev[1]
    pap = prev[2]
    paq = prev[3]
    have = has_prev
    lt = last_ts
    for i in range(bp.size):
        b = bp[i]
        bqi = bq[i]
        a = ap[i]
        aqi = aq[i]
        if not (np.isfinite(b) and b > 0.0):
            return i, 1
        if not (np.isfinite(a) and a > 0.0):
            return i, 2
        if not (np.isfinite(bqi) and bqi >= 0.0):
            return i, 3
        if not (np.isfinite(aqi) and aqi >= 0.0):
            return i, 4
        if b >= a:
            return i, 5
        if check_ts:
            t = ts[i]
            if (have or i > 0) and t < lt:
                return i, 6
            lt = t
        if have:
            e = 0.0
            if b >= pbp:
                e += bqi
            if b <= pbp:
                e -= pbq
            if a <= pap:
                e -= aqi
            if a >= pap:
                e += paq
            e_out[i] = e
        else:
            e_out[i] = 0.0
            have = True
        d_out[i] = (bqi + aqi) / 2.0
        pbp = b
        pbq = bqi
        pap = a
        paq = aqi
    return -1, 0


@numba.njit(cache=True, inline="always")
def _neum(s, c, x):
    """Neumaier compensated add: returns the new (sum, compensation)."""
    t = s + x
    if abs(s) >= abs(x):
        c += (s - t) + x
    else:
        c += (x - t) + s
    return t, c


@numba.njit(cache=True)
def _trailing_kernel(ts, e, d, lo, start, state, window, out_s, out_d, out_n):
    """Trailing (t − window, t] sums for positions start..end of the buffers.

    ``lo`` is the oldest position still inside the window; ``state`` = [s, c, sd, cd]
    (compensated sums of e and d over positions lo..start−1), updated in place.
    Shared by :func:`ofi_trailing` and :class:`OfiStream` (bit-identical results).
    """
    s = state[0]
    c = state[1]
    sd = state[2]
    cd = state[3]
    for p in range(start, ts.size):
        s, c = _neum(s, c, e[p])
        sd, cd = _neum(sd, cd, d[p])
        cut = ts[p] - window
        while ts[lo] <= cut:
            s, c = _neum(s, c, -e[lo])
            sd, cd = _neum(sd, cd, -d[lo])
            lo += 1
        k = p - start
        out_s[k] = s + c
        out_d[k] = sd + cd
        out_n[k] = p - lo + 1
    state[0] = s
    state[1] = c
    state[2] = sd
    state[3] = cd
    return lo


@numba.njit(cache=True)
def _bucket_kernel(ts, e, d, width, cur, state, out_s, out_d, out_n):
    """Close buckets as updates move past them; returns the open bucket id.

    ``cur`` is the open bucket id; ``state`` = [s, c, sd, cd, n] of the open bucket. Each
    bucket closed (the open one and any empty ones after it) is written to the outputs.
    """
    s = state[0]
    c = state[1]
    sd = state[2]
    cd = state[3]
    n = state[4]
    k = 0
    for i in range(ts.size):
        b = ts[i] // width
        while b > cur:
            out_s[k] = s + c
            out_d[k] = sd + cd
            out_n[k] = n
            k += 1
            cur += 1
            s = 0.0
            c = 0.0
            sd = 0.0
            cd = 0.0
            n = 0.0
        s, c = _neum(s, c, e[i])
        sd, cd = _neum(sd, cd, d[i])
        n += 1.0
    state[0] = s
    state[1] = c
    state[2] = sd
    state[3] = cd
    state[4] = n
    return cur


# --------------------------------------------------------------------------- helpers


def _pos_int(x: object, name: str) -> int:
    if isinstance(x, bool) or not isinstance(x, int | np.integer) or int(x) <= 0:
        raise ValueError(f"{name} must be a positive integer (ns), got {x!r}")
    return int(x)


def _book(bid_px, bid_qty, ask_px, ask_qty, ts_ns=None):
    arrs = [
        as_f64_1d(bid_px, "bid_px"),
        as_f64_1d(bid_qty, "bid_qty"),
        as_f64_1d(ask_px, "ask_px"),
        as_f64_1d(ask_qty, "ask_qty"),
    ]
    n = arrs[0].size
    ts = as_ts_ns(ts_ns) if ts_ns is not None else np.zeros(n, dtype=np.int64)
    for name, a in zip(
        ("ts_ns", "bid_px", "bid_qty", "ask_px", "ask_qty"), [ts, *arrs], strict=True
    ):
        if a.size != n:
            raise ValueError(f"{name} has length {a.size}, expected {n} (same as bid_px)")
    return ts, *arrs


def _run_events(ts, bp, bq, ap, aq, check_ts, prev, has_prev, last_ts, offset=0):
    n = bp.size
    e = np.empty(n, dtype=np.float64)
    d = np.empty(n, dtype=np.float64)
    idx, kind = _events_kernel(ts, bp, bq, ap, aq, check_ts, prev, has_prev, last_ts, e, d)
    if kind:
        vals = (
            f"ts_ns={int(ts[idx])}, bid_px={float(bp[idx])!r}, bid_qty={float(bq[idx])!r}, "
            f"ask_px={float(ap[idx])!r}, ask_qty={float(aq[idx])!r}"
        )
        raise ValueError(f"bad book update at index {idx + offset}: {_KINDS[kind]} ({vals})")
    return e, d


def _ratio(s: np.ndarray, d: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_d = np.where(n > 0, d / np.maximum(n, 1), np.nan)
        norm = np.where(mean_d > 0, s / mean_d, np.nan)
    return mean_d, norm


_NO_PREV = np.zeros(4, dtype=np.float64)


# --------------------------------------------------------------------------- batch API


def ofi_events(
    bid_px: np.ndarray, bid_qty: np.ndarray, ask_px: np.ndarray, ask_qty: np.ndarray
) -> np.ndarray:
    """Per-update OFI contribution e_n (base units; CKS 2014 eq. 1), e of the first = 0.

    No timestamps are taken here (the order of the arrays is the update order).
    """
    ts, bp, bq, ap, aq = _book(bid_px, bid_qty, ask_px, ask_qty)
    e, _ = _run_events(ts, bp, bq, ap, aq, False, _NO_PREV, False, 0)
    return e


@dataclass(frozen=True, slots=True)
class OfiTrailing:
    """Trailing-window OFI at each update (see module docstring).

    ``e``: per-update e_n (base units); ``ofi``: Σ e over the window (base units);
    ``mean_depth``: event mean of (q^b + q^a)/2 over the window (base units); ``ofi_norm``:
    ofi / mean_depth (dimensionless, NaN if mean_depth is 0); ``count``: updates in window.
    """

    e: np.ndarray
    ofi: np.ndarray
    mean_depth: np.ndarray
    ofi_norm: np.ndarray
    count: np.ndarray


def ofi_trailing(
    ts_ns: np.ndarray,
    bid_px: np.ndarray,
    bid_qty: np.ndarray,
    ask_px: np.ndarray,
    ask_qty: np.ndarray,
    window_ns: int,
) -> OfiTrailing:
    """e_n and the trailing OFI over updates j ≤ i with ts_j in (ts_i − window_ns, ts_i].

    ``ts_ns``: int64 ns, non-decreasing (ties allowed, ordered by index). CKS (2014).
    """
    w = _pos_int(window_ns, "window_ns")
    ts, bp, bq, ap, aq = _book(bid_px, bid_qty, ask_px, ask_qty, ts_ns)
    e, d = _run_events(ts, bp, bq, ap, aq, True, _NO_PREV, False, 0)
    n = ts.size
    s = np.empty(n)
    sd = np.empty(n)
    cnt = np.empty(n, dtype=np.int64)
    _trailing_kernel(ts, e, d, 0, 0, np.zeros(4), w, s, sd, cnt)
    mean_d, norm = _ratio(s, sd, cnt)
    return OfiTrailing(e=e, ofi=s, mean_depth=mean_d, ofi_norm=norm, count=cnt)


@dataclass(frozen=True, slots=True)
class OfiBuckets:
    """OFI per epoch-aligned time bucket [start_ns, start_ns + bucket_ns).

    ``ofi``: Σ e (base units); ``mean_depth``: event mean of (q^b + q^a)/2 (base units, NaN
    if empty); ``ofi_norm``: ofi / mean_depth (NaN if empty or zero depth); ``count``.
    """

    start_ns: np.ndarray
    ofi: np.ndarray
    mean_depth: np.ndarray
    ofi_norm: np.ndarray
    count: np.ndarray

    @staticmethod
    def _make(first: int, width: int, s, sd, n) -> OfiBuckets:
        cnt = np.asarray(n, dtype=np.int64)
        mean_d, norm = _ratio(np.asarray(s, dtype=float), np.asarray(sd, dtype=float), cnt)
        start = (np.int64(first) + np.arange(cnt.size, dtype=np.int64)) * np.int64(width)
        return OfiBuckets(
            start_ns=start,
            ofi=np.asarray(s, dtype=float),
            mean_depth=mean_d,
            ofi_norm=norm,
            count=cnt,
        )

    @staticmethod
    def concat(parts: list[OfiBuckets]) -> OfiBuckets:
        """Concatenate bucket runs (e.g. the pieces a stream emitted)."""
        return OfiBuckets(
            *(np.concatenate([getattr(p, f) for p in parts]) for f in OfiBuckets.__slots__)
        )


def ofi_buckets(
    ts_ns: np.ndarray,
    bid_px: np.ndarray,
    bid_qty: np.ndarray,
    ask_px: np.ndarray,
    ask_qty: np.ndarray,
    bucket_ns: int,
) -> OfiBuckets:
    """OFI summed per epoch-aligned bucket of ``bucket_ns`` (CKS 2014 eq. 2), contiguous grid
    from the first update's bucket to the last's (empty buckets included)."""
    w = _pos_int(bucket_ns, "bucket_ns")
    ts, bp, bq, ap, aq = _book(bid_px, bid_qty, ask_px, ask_qty, ts_ns)
    e, d = _run_events(ts, bp, bq, ap, aq, True, _NO_PREV, False, 0)
    if ts.size == 0:
        return OfiBuckets._make(0, w, [], [], [])
    first = int(ts[0] // w)
    nb = int(ts[-1] // w) - first  # closed by the kernel; +1 for the last (open) bucket
    s = np.empty(nb + 1)
    sd = np.empty(nb + 1)
    cnt = np.empty(nb + 1)
    st = np.zeros(5)
    _bucket_kernel(ts, e, d, w, first, st, s, sd, cnt)
    s[nb] = st[0] + st[1]
    sd[nb] = st[2] + st[3]
    cnt[nb] = st[4]
    return OfiBuckets._make(first, w, s, sd, cnt)


# --------------------------------------------------------------------------- streaming


@dataclass(frozen=True, slots=True)
class OfiStreamUpdate:
    """What :meth:`OfiStream.update` returns for its updates: the :class:`OfiTrailing` fields
    for each update, and ``buckets`` closed by these updates (``None`` if no ``bucket_ns``)."""

    e: np.ndarray
    ofi: np.ndarray
    mean_depth: np.ndarray
    ofi_norm: np.ndarray
    count: np.ndarray
    buckets: OfiBuckets | None


class OfiStream:
    """Streaming twin of :func:`ofi_trailing` and :func:`ofi_buckets` (same definitions).

    ``update`` takes one update (scalars) or a micro-batch (arrays); its trailing values
    equal the batch output on the concatenated series, bit for bit, for any split. Closed
    buckets are emitted once a later bucket's update arrives; :meth:`pending` returns the
    open (last) bucket, so ``concat(emitted + [pending()])`` equals :func:`ofi_buckets`.
    A bad micro-batch raises ValueError (index within that micro-batch) and leaves the
    state unchanged.
    """

    def __init__(self, window_ns: int, bucket_ns: int | None = None) -> None:
        self.window_ns = _pos_int(window_ns, "window_ns")
        self.bucket_ns = None if bucket_ns is None else _pos_int(bucket_ns, "bucket_ns")
        self._prev = np.zeros(4)
        self._has_prev = False
        self._last_ts = 0
        cap = 1024
        self._ts = np.empty(cap, dtype=np.int64)
        self._e = np.empty(cap)
        self._d = np.empty(cap)
        self._n = 0  # used length of the buffers
        self._lo = 0  # oldest buffered position still in the window
        self._tstate = np.zeros(4)
        self._bstate = np.zeros(5)
        self._bucket = 0
        self.n_seen = 0

    def _reserve(self, m: int) -> None:
        live = self._n - self._lo
        if self._n + m <= self._ts.size:
            return
        cap = max(self._ts.size, 2 * (live + m))
        for name in ("_ts", "_e", "_d"):
            old = getattr(self, name)
            new = np.empty(cap, dtype=old.dtype)
            new[:live] = old[self._lo : self._n]
            setattr(self, name, new)
        self._n = live
        self._lo = 0

    def update(
        self,
        ts_ns: int | np.ndarray,
        bid_px: float | np.ndarray,
        bid_qty: float | np.ndarray,
        ask_px: float | np.ndarray,
        ask_qty: float | np.ndarray,
    ) -> OfiStreamUpdate:
        """Feed one update or a micro-batch; returns per-update values and closed buckets."""
        ts, bp, bq, ap, aq = _book(bid_px, bid_qty, ask_px, ask_qty, ts_ns)
        e, d = _run_events(ts, bp, bq, ap, aq, True, self._prev, self._has_prev, self._last_ts)
        m = ts.size
        buckets = None
        if self.bucket_ns is not None:
            w = self.bucket_ns
            if m and self.n_seen == 0:
                self._bucket = int(ts[0] // w)
            first = self._bucket
            nb = int(ts[-1] // w) - first if m else 0
            s = np.empty(nb)
            sd = np.empty(nb)
            cnt = np.empty(nb)
            self._bucket = int(_bucket_kernel(ts, e, d, w, first, self._bstate, s, sd, cnt))
            buckets = OfiBuckets._make(first, w, s, sd, cnt)
        if m:
            self._reserve(m)
            n0 = self._n
            self._ts[n0 : n0 + m] = ts
            self._e[n0 : n0 + m] = e
            self._d[n0 : n0 + m] = d
            self._n = n0 + m
            s = np.empty(m)
            sd = np.empty(m)
            cnt = np.empty(m, dtype=np.int64)
            self._lo = int(
                _trailing_kernel(
                    self._ts[: self._n],
                    self._e[: self._n],
                    self._d[: self._n],
                    self._lo,
                    n0,
                    self._tstate,
                    self.window_ns,
                    s,
                    sd,
                    cnt,
                )
            )
            self._prev = np.array([bp[-1], bq[-1], ap[-1], aq[-1]])
            self._has_prev = True
            self._last_ts = int(ts[-1])
            self.n_seen += m
        else:
            s = np.empty(0)
            sd = np.empty(0)
            cnt = np.empty(0, dtype=np.int64)
        mean_d, norm = _ratio(s, sd, cnt)
        return OfiStreamUpdate(
            e=e, ofi=s, mean_depth=mean_d, ofi_norm=norm, count=cnt, buckets=buckets
        )

    def pending(self) -> OfiBuckets:
        """The open (last, possibly incomplete) bucket; empty if nothing seen or no bucket_ns."""
        if self.bucket_ns is None or self.n_seen == 0:
            return OfiBuckets._make(0, self.bucket_ns or 1, [], [], [])
        st = self._bstate
        return OfiBuckets._make(
            self._bucket, self.bucket_ns, [st[0] + st[1]], [st[2] + st[3]], [st[4]]
        )
