"""Perpetual-futures state features: funding, basis, open interest, depth.

Units and conventions.

* Funding rates are fractions per funding interval (Binance ``fundingRate``, e.g. 1e-4 =
  0.01 % per 8 h); ``interval_h`` is the symbol's own funding interval in hours (8, 4, 1 …).
  Annualised funding is in **percent per year**: ann_pct = rate × (24/interval_h) × 365 × 100
  (simple, not compounded; reimplemented here so this module stays import-free).
* Timestamps are int64 ns UTC and must be strictly increasing where taken.
* Basis values are fractions ((mark − index)/index, (perp − spot)/spot); 1e-3 = 10 bp.
* OI, volume and depth must be in the same unit as each other where they are divided (base
  units or quote notional — the ratio is unit-free only if both sides match).
* Rolling z-scores use the **population** standard deviation (ddof = 0) of the trailing
  window *including* the current value: z_t = (x_t − mean_w)/std_w. If every value in the
  window is identical (std 0) z_t = 0 (the value sits exactly at its mean) — this happens for
  real (funding pinned at the 0.01 % floor for days). Warm-up: the first ``window − 1``
  values are NaN (for z-scores of a first difference, ``window``: see each function).

Input rules: a NaN/inf value, a non-positive price or depth, a negative OI/volume, or an
unsorted/duplicate timestamp raises ``ValueError`` naming the first offending index
(streaming twins name the overall index and the index inside the update). Nothing is
skipped silently; NaN outputs other than warm-up are documented per function.

Streaming twins take one sample or a micro-batch of arrays per ``update`` and return exactly
what the batch function returns at those positions on the concatenated data, for any split
(same numba kernel, carried state). A rejected update leaves the state unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

__all__ = [
    "DOI_LONG_BUILD",
    "DOI_LONG_LIQUIDATION",
    "DOI_NONE",
    "DOI_SHORT_BUILD",
    "DOI_SHORT_SQUEEZE",
    "CascadeRiskStream",
    "CrowdingStream",
    "DoiTypeStream",
    "FundingAccelerationStream",
    "HourlyExceedance",
    "OiShockStream",
    "RollingZScoreStream",
    "annualise_funding",
    "basis_fair",
    "carry_yield",
    "cascade_risk",
    "crowding_ratio",
    "doi_type",
    "funding_acceleration",
    "liquidity_ratio",
    "minutes_above_per_hour",
    "oi_shock_z",
    "oi_volume_ratio",
    "rolling_zscore",
    "venue_basis",
    "volume_shock_z",
]

NS_PER_HOUR = 3_600_000_000_000
HOURS_PER_YEAR = 24.0 * 365.0

DOI_NONE = 0
"""ΔOI type: first bar, or Δprice == 0, or ΔOI == 0."""
DOI_LONG_BUILD = 1
"""Δprice > 0 and ΔOI > 0: new longs opening."""
DOI_SHORT_SQUEEZE = 2
"""Δprice > 0 and ΔOI < 0: shorts covering."""
DOI_SHORT_BUILD = 3
"""Δprice < 0 and ΔOI > 0: new shorts opening."""
DOI_LONG_LIQUIDATION = 4
"""Δprice < 0 and ΔOI < 0: longs closing / liquidated."""

# --------------------------------------------------------------------------- validation


def _where(i: int, base: int) -> str:
    return str(i) if base == 0 else f"{i + base} (index {i} of this update)"


def _arr(x: object, name: str, base: int = 0, kind: str = "finite") -> np.ndarray:
    """1-d float64; ``kind``: 'finite', 'nonneg' (finite, >= 0) or 'positive' (finite, > 0)."""
    a = np.ascontiguousarray(x, dtype=np.float64)
    if a.ndim == 0:
        a = a.reshape(1)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-d, got shape {a.shape}")
    ok = np.isfinite(a)
    if kind == "nonneg":
        ok &= a >= 0.0
    elif kind == "positive":
        ok &= a > 0.0
    if not ok.all():
        i = int(np.argmin(ok))
        need = {"finite": "finite", "nonneg": "finite and >= 0", "positive": "finite and > 0"}
        raise ValueError(f"{name}[{_where(i, base)}] = {a[i]!r}: must be {need[kind]}")
    return a


def _same_len(**arrays: np.ndarray) -> None:
    sizes = {k: v.size for k, v in arrays.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"lengths differ: {sizes}")


def _ts(x: object, name: str, base: int = 0, last: int | None = None) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim == 0:
        a = a.reshape(1)
    if a.ndim != 1 or not (a.dtype.kind in "iu" or a.size == 0):
        raise ValueError(f"{name} must be a 1-d integer (ns) array, got {a.dtype} {a.shape}")
    a = np.ascontiguousarray(a, dtype=np.int64)
    if a.size and last is not None and a[0] <= last:
        raise ValueError(
            f"{name}[{_where(0, base)}] = {a[0]} is not after the previous timestamp {last}"
        )
    bad = np.diff(a) <= 0
    if bad.any():
        i = int(np.argmax(bad)) + 1
        raise ValueError(
            f"{name}[{_where(i, base)}] = {a[i]} is not after {name}[{_where(i - 1, base)}]"
            " (timestamps must be strictly increasing)"
        )
    return a


def _window(w: int, name: str = "window", minimum: int = 2) -> int:
    if isinstance(w, bool) or int(w) != w or w < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {w!r}")
    return int(w)


# --------------------------------------------------------------------------- element-wise


def annualise_funding(rate: np.ndarray | float, interval_h: np.ndarray | float) -> np.ndarray:
    """Funding rate per interval → simple annualised **percent**: rate × (24/interval_h) × 365
    × 100. ``interval_h`` (hours, > 0) is the symbol's own funding interval, scalar or
    per-sample array (intervals change, e.g. 8 h → 4 h in volatile markets)."""
    r = _arr(rate, "rate")
    ih = _arr(interval_h, "interval_h", kind="positive")
    if ih.size not in (1, r.size):
        raise ValueError(f"interval_h must be scalar or match rate: {ih.size} vs {r.size}")
    return r * (24.0 / ih) * 365.0 * 100.0


def carry_yield(
    rate: np.ndarray | float,
    interval_h: np.ndarray | float,
    borrow_apr_pct: float = 0.0,
    round_trip_fee_pct: float = 0.0,
    holding_h: float = HOURS_PER_YEAR,
) -> np.ndarray:
    """Annualised carry of short perp / long spot, in **percent per year**.

    carry = annualise_funding(rate, interval_h) − borrow_apr_pct − round_trip_fee_pct ×
    (8760 / holding_h), where ``borrow_apr_pct`` is the annual cost (%) of financing the spot
    leg (borrow rate or opportunity cost), ``round_trip_fee_pct`` the total fees (% of
    notional) to open and close both legs, amortised over the expected holding period
    ``holding_h`` hours (default one year: the fee counts once per year). A negative funding
    rate gives negative carry (the reverse trade has its own borrow cost; model it separately).
    """
    fees = np.array([borrow_apr_pct, round_trip_fee_pct, holding_h], dtype=np.float64)
    names = ("borrow_apr_pct", "round_trip_fee_pct", "holding_h")
    for v, n in zip(fees, names, strict=True):
        if not np.isfinite(v) or (n == "holding_h" and v <= 0):
            raise ValueError(f"{n} must be finite{' and > 0' if n == 'holding_h' else ''}: {v}")
    return annualise_funding(rate, interval_h) - fees[0] - fees[1] * (HOURS_PER_YEAR / fees[2])


def basis_fair(mark: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Fair basis (mark − index)/index, a fraction. Prices finite and > 0."""
    m = _arr(mark, "mark", kind="positive")
    i = _arr(index, "index", kind="positive")
    _same_len(mark=m, index=i)
    return (m - i) / i


def venue_basis(perp: np.ndarray, spot: np.ndarray) -> np.ndarray:
    """Venue basis (perp − spot)/spot, a fraction. Prices finite and > 0."""
    p = _arr(perp, "perp", kind="positive")
    s = _arr(spot, "spot", kind="positive")
    _same_len(perp=p, spot=s)
    return (p - s) / s


def oi_volume_ratio(oi: np.ndarray, volume_24h: np.ndarray) -> np.ndarray:
    """Open interest / trailing 24 h volume (same units), dimensionless. OI >= 0, volume > 0
    (a zero 24 h volume raises: the ratio is undefined)."""
    o = _arr(oi, "oi", kind="nonneg")
    v = _arr(volume_24h, "volume_24h", kind="positive")
    _same_len(oi=o, volume_24h=v)
    return o / v


def liquidity_ratio(perp_depth: np.ndarray, spot_depth: np.ndarray) -> np.ndarray:
    """Perp book depth / spot book depth (same units and band), dimensionless. Perp depth
    >= 0, spot depth > 0."""
    p = _arr(perp_depth, "perp_depth", kind="nonneg")
    s = _arr(spot_depth, "spot_depth", kind="positive")
    _same_len(perp_depth=p, spot_depth=s)
    return p / s


# --------------------------------------------------------------------------- kernels


@numba.njit(cache=True)
def _rz_kernel(x, w, start, offset, out):
    """Rolling population z of x; out[i - start] for i >= start; offset = overall index of x[0]."""
    for i in range(start, x.size):
        if offset + i < w - 1:
            out[i - start] = np.nan
            continue
        s = 0.0
        lo = x[i]
        hi = x[i]
        for k in range(i - w + 1, i + 1):
            v = x[k]
            s += v
            lo = min(lo, v)
            hi = max(hi, v)
        if lo == hi:
            out[i - start] = 0.0
            continue
        mean = s / w
        ss = 0.0
        for k in range(i - w + 1, i + 1):
            e = x[k] - mean
            ss += e * e
        sd = np.sqrt(ss / w)
        out[i - start] = (x[i] - mean) / sd if sd > 0.0 else 0.0


@numba.njit(cache=True)
def _accel_kernel(ts, p, nxt, have, last_ts, last_p, last_nxt, out):
    for i in range(ts.size):
        if have and nxt[i] == last_nxt:
            out[i] = (p[i] - last_p) / ((ts[i] - last_ts) / 3.6e12)
        else:
            out[i] = np.nan
        have = True
        last_ts, last_p, last_nxt = ts[i], p[i], nxt[i]
    return last_ts, last_p, last_nxt


@numba.njit(cache=True)
def _doi_kernel(price, oi, have, last_p, last_oi, out):
    for i in range(price.size):
        code = 0
        if have:
            dp = price[i] - last_p
            do = oi[i] - last_oi
            if dp > 0.0:
                if do > 0.0:
                    code = 1
                elif do < 0.0:
                    code = 2
            elif dp < 0.0:
                if do > 0.0:
                    code = 3
                elif do < 0.0:
                    code = 4
        out[i] = code
        have = True
        last_p, last_oi = price[i], oi[i]


@numba.njit(cache=True)
def _hour_kernel(ts, z, thr, hours, above, valid):
    nb = -1
    for i in range(ts.size):
        h = (ts[i] // 3_600_000_000_000) * 3_600_000_000_000
        if nb < 0 or hours[nb] != h:
            nb += 1
            hours[nb] = h
            above[nb] = 0
            valid[nb] = 0
        if not np.isnan(z[i]):
            valid[nb] += 1
            if abs(z[i]) > thr:
                above[nb] += 1
    return nb + 1


# --------------------------------------------------------------------------- rolling z


def rolling_zscore(x: np.ndarray, window: int) -> np.ndarray:
    """Rolling population z-score of a finite series over ``window`` samples (including the
    current one); see the module docstring (std 0 → z = 0). Warm-up: ``window − 1`` NaNs.

    Use for the predicted-funding z, the basis z (:func:`basis_fair` / :func:`venue_basis`
    output) and, via :func:`volume_shock_z`, the volume shock.
    """
    a = _arr(x, "x")
    w = _window(window)
    out = np.empty(a.size)
    _rz_kernel(a, w, 0, 0, out)
    return out


class RollingZScoreStream:
    """Streaming twin of :func:`rolling_zscore` (keeps the last ``window − 1`` values)."""

    def __init__(self, window: int, name: str = "x") -> None:
        self.window = _window(window)
        self._name = name
        self._hist = np.empty(0)
        self._n = 0

    @property
    def n_samples(self) -> int:
        """Samples consumed so far."""
        return self._n

    def _run(self, a: np.ndarray) -> np.ndarray:
        buf = np.concatenate((self._hist, a)) if self._hist.size else a
        out = np.empty(a.size)
        _rz_kernel(buf, self.window, self._hist.size, self._n - self._hist.size, out)
        self._hist = buf[max(buf.size - (self.window - 1), 0) :].copy()
        self._n += a.size
        return out

    def update(self, x: float | np.ndarray) -> np.ndarray:
        """Consume value(s); returns z for each (1-d array)."""
        return self._run(_arr(x, self._name, self._n))


def volume_shock_z(volume: np.ndarray, window: int) -> np.ndarray:
    """Volume shock: rolling z of bar volume (>= 0, finite). Warm-up ``window − 1`` NaNs."""
    v = _arr(volume, "volume", kind="nonneg")
    w = _window(window)
    out = np.empty(v.size)
    _rz_kernel(v, w, 0, 0, out)
    return out


# --------------------------------------------------------------------------- funding accel


def funding_acceleration(
    ts_ns: np.ndarray, predicted: np.ndarray, next_settlement_ns: np.ndarray
) -> np.ndarray:
    """d(predicted funding)/dt in **rate per hour**: (p_t − p_{t−1}) / ((ts_t − ts_{t−1}) h).

    ``predicted`` is the exchange's predicted (next) funding rate per interval sampled at
    ``ts_ns`` (strictly increasing); ``next_settlement_ns`` the settlement time that
    prediction refers to (non-decreasing, >= ts). Across a rollover (next_settlement_t ≠
    next_settlement_{t−1}: the prediction now refers to a new period) the difference is NaN,
    as is index 0.
    """
    t = _ts(ts_ns, "ts_ns")
    p = _arr(predicted, "predicted")
    nx = _ts_settle(next_settlement_ns, t)
    _same_len(ts_ns=t, predicted=p, next_settlement_ns=nx)
    out = np.empty(t.size)
    _accel_kernel(t, p, nx, False, 0, 0.0, 0, out)
    return out


def _ts_settle(x: object, t: np.ndarray, base: int = 0, last: int | None = None) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim == 0:
        a = a.reshape(1)
    if a.ndim != 1 or not (a.dtype.kind in "iu" or a.size == 0):
        raise ValueError(f"next_settlement_ns must be a 1-d integer (ns) array, got {a.dtype}")
    a = np.ascontiguousarray(a, dtype=np.int64)
    if a.size != t.size:
        raise ValueError(f"lengths differ: ts_ns {t.size}, next_settlement_ns {a.size}")
    bad = a < t
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"next_settlement_ns[{_where(i, base)}] = {a[i]} is before ts {t[i]}")
    prev = np.concatenate(([last], a[:-1])) if last is not None else np.r_[a[:1], a[:-1]]
    bad = a < prev
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"next_settlement_ns[{_where(i, base)}] = {a[i]} decreases")
    return a


class FundingAccelerationStream:
    """Streaming twin of :func:`funding_acceleration` (state: last ts, predicted, settlement)."""

    def __init__(self) -> None:
        self._last: tuple[int, float, int] | None = None
        self._n = 0

    def update(
        self,
        ts_ns: int | np.ndarray,
        predicted: float | np.ndarray,
        next_settlement_ns: int | np.ndarray,
    ) -> np.ndarray:
        """Consume sample(s); returns the acceleration (rate/h) for each (1-d array)."""
        last = self._last
        t = _ts(ts_ns, "ts_ns", self._n, None if last is None else last[0])
        p = _arr(predicted, "predicted", self._n)
        nx = _ts_settle(next_settlement_ns, t, self._n, None if last is None else last[2])
        _same_len(ts_ns=t, predicted=p, next_settlement_ns=nx)
        out = np.empty(t.size)
        st = last if last is not None else (0, 0.0, 0)
        res = _accel_kernel(t, p, nx, last is not None, st[0], st[1], st[2], out)
        if t.size:
            self._last = (int(res[0]), float(res[1]), int(res[2]))
        self._n += t.size
        return out


# --------------------------------------------------------------------------- basis exceedance


@dataclass(frozen=True)
class HourlyExceedance:
    """Per clock-hour (UTC) bucket: start ns, samples with |z| > threshold, non-NaN samples."""

    hour_ns: np.ndarray
    above: np.ndarray
    valid: np.ndarray


def minutes_above_per_hour(
    ts_ns: np.ndarray, z: np.ndarray, threshold: float = 2.0
) -> HourlyExceedance:
    """ "Minutes per hour with |z| > threshold" from 1-minute samples of a z-score.

    Buckets are UTC clock hours floor(ts / 1 h); only hours holding at least one sample are
    returned, in order. ``above`` counts samples with |z| > threshold (strict), ``valid`` the
    non-NaN samples: NaN z (the rolling z-score's warm-up) is **skipped and counted** (it is
    in neither ``above`` nor ``valid``; valid < 60 also flags missing minutes). ±inf raises.
    Timestamps strictly increasing.
    """
    t = _ts(ts_ns, "ts_ns")
    a = np.ascontiguousarray(z, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"z must be 1-d, got shape {a.shape}")
    bad = np.isinf(a)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"z[{i}] = {a[i]!r}: must be finite or NaN (warm-up)")
    _same_len(ts_ns=t, z=a)
    thr = float(threshold)
    if not (np.isfinite(thr) and thr >= 0):
        raise ValueError(f"threshold must be finite and >= 0, got {threshold!r}")
    hours = np.empty(t.size, dtype=np.int64)
    above = np.empty(t.size, dtype=np.int64)
    valid = np.empty(t.size, dtype=np.int64)
    nb = _hour_kernel(t, a, thr, hours, above, valid)
    return HourlyExceedance(hours[:nb].copy(), above[:nb].copy(), valid[:nb].copy())


# --------------------------------------------------------------------------- open interest


def doi_type(price: np.ndarray, oi: np.ndarray) -> np.ndarray:
    """ΔOI regime per bar as int8 codes: :data:`DOI_LONG_BUILD` (Δp>0, ΔOI>0),
    :data:`DOI_SHORT_SQUEEZE` (Δp>0, ΔOI<0), :data:`DOI_SHORT_BUILD` (Δp<0, ΔOI>0),
    :data:`DOI_LONG_LIQUIDATION` (Δp<0, ΔOI<0), :data:`DOI_NONE` (0) on the first bar or when
    either delta is exactly 0. Prices > 0, OI >= 0."""
    p = _arr(price, "price", kind="positive")
    o = _arr(oi, "oi", kind="nonneg")
    _same_len(price=p, oi=o)
    out = np.empty(p.size, dtype=np.int8)
    _doi_kernel(p, o, False, 0.0, 0.0, out)
    return out


class DoiTypeStream:
    """Streaming twin of :func:`doi_type` (state: previous price and OI)."""

    def __init__(self) -> None:
        self._last: tuple[float, float] | None = None
        self._n = 0

    def update(self, price: float | np.ndarray, oi: float | np.ndarray) -> np.ndarray:
        """Consume bar(s); returns int8 codes (1-d array)."""
        p = _arr(price, "price", self._n, "positive")
        o = _arr(oi, "oi", self._n, "nonneg")
        _same_len(price=p, oi=o)
        out = np.empty(p.size, dtype=np.int8)
        lp, lo = self._last if self._last is not None else (0.0, 0.0)
        _doi_kernel(p, o, self._last is not None, lp, lo, out)
        if p.size:
            self._last = (float(p[-1]), float(o[-1]))
        self._n += p.size
        return out


def _doi_series(o: np.ndarray, first: float | None) -> np.ndarray:
    """ΔOI with NaN where there is no previous OI."""
    prev = np.concatenate(([np.nan if first is None else first], o[:-1]))
    return o - prev


def oi_shock_z(oi: np.ndarray, window: int) -> np.ndarray:
    """OI shock: rolling population z of ΔOI_t = oi_t − oi_{t−1} over ``window`` deltas.

    Index 0 has no delta; warm-up: the first ``window`` values (indices 0..window−1) are NaN.
    OI finite and >= 0.
    """
    o = _arr(oi, "oi", kind="nonneg")
    w = _window(window)
    out = np.full(o.size, np.nan)
    if o.size > 1:
        _rz_kernel(np.diff(o), w, 0, 0, out[1:])
    return out


class OiShockStream:
    """Streaming twin of :func:`oi_shock_z` (previous OI + last ``window − 1`` deltas)."""

    def __init__(self, window: int) -> None:
        self._z = RollingZScoreStream(window, "oi")
        self._last: float | None = None
        self._n = 0

    def update(self, oi: float | np.ndarray) -> np.ndarray:
        """Consume OI sample(s); returns the shock z for each (1-d array)."""
        o = _arr(oi, "oi", self._n, "nonneg")
        out = np.full(o.size, np.nan)
        if o.size:
            d = _doi_series(o, self._last)
            k = 1 if self._last is None else 0
            out[k:] = self._z._run(d[k:])
            self._last = float(o[-1])
        self._n += o.size
        return out


def crowding_ratio(oi: np.ndarray, volume: np.ndarray, window: int) -> np.ndarray:
    """Crowding: OI shock z / volume shock z (both over ``window``), dimensionless.

    Large |ratio|: positioning changes faster than trading activity explains. Warm-up: the
    first ``window`` values are NaN (the OI shock's). Also NaN (documented, not skipped
    input) where the volume z is exactly 0 (division undefined).
    """
    o = _arr(oi, "oi", kind="nonneg")
    v = _arr(volume, "volume", kind="nonneg")
    _same_len(oi=o, volume=v)
    return _ratio(oi_shock_z(o, window), volume_shock_z(v, window))


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(num.size, np.nan)
    ok = (den != 0.0) & ~np.isnan(den) & ~np.isnan(num)
    out[ok] = num[ok] / den[ok]
    return out


class CrowdingStream:
    """Streaming twin of :func:`crowding_ratio`."""

    def __init__(self, window: int) -> None:
        self._oi = OiShockStream(window)
        self._vol = RollingZScoreStream(window, "volume")

    def update(self, oi: float | np.ndarray, volume: float | np.ndarray) -> np.ndarray:
        """Consume bar(s); returns the crowding ratio for each (1-d array)."""
        n = self._oi._n
        o = _arr(oi, "oi", n, "nonneg")
        v = _arr(volume, "volume", n, "nonneg")
        _same_len(oi=o, volume=v)
        return _ratio(self._oi.update(o), self._vol.update(v))


def cascade_risk(oi: np.ndarray, perp_depth: np.ndarray) -> np.ndarray:
    """Cascade risk ΔOI_t / perp_depth_t (same units), dimensionless; index 0 is NaN (no
    delta). OI >= 0, depth > 0 (empty book raises)."""
    o = _arr(oi, "oi", kind="nonneg")
    d = _arr(perp_depth, "perp_depth", kind="positive")
    _same_len(oi=o, perp_depth=d)
    return _doi_series(o, None) / d


class CascadeRiskStream:
    """Streaming twin of :func:`cascade_risk` (state: previous OI)."""

    def __init__(self) -> None:
        self._last: float | None = None
        self._n = 0

    def update(self, oi: float | np.ndarray, perp_depth: float | np.ndarray) -> np.ndarray:
        """Consume bar(s); returns ΔOI/depth for each (1-d array)."""
        o = _arr(oi, "oi", self._n, "nonneg")
        d = _arr(perp_depth, "perp_depth", self._n, "positive")
        _same_len(oi=o, perp_depth=d)
        out = _doi_series(o, self._last) / d
        if o.size:
            self._last = float(o[-1])
        self._n += o.size
        return out
