"""Trend and volatility kernels: efficiency ratio, KAMA, Wilder ATR, ATR z-score, realised vol.

Sources: Kaufman, P. J. (1995), *Smarter Trading*, McGraw-Hill — efficiency ratio (ER) and
the adaptive moving average (KAMA); Wilder, J. W. (1978), *New Concepts in Technical
Trading Systems* — true range and ATR with Wilder smoothing.

Units. Prices are floats in quote currency (any consistent unit); ER is dimensionless in
[0, 1]; KAMA, TR and ATR are in price units; the z-score is dimensionless (price distance
from the SMA measured in ATRs); realised volatility is in log-return units per bar (a
fraction, not %) or, annualised, per year.

Input rules. Every price must be finite and > 0 and ``high >= low`` bar by bar; arrays must be
1-d and of equal length. A violation raises ``ValueError`` naming the first offending index
(streaming twins name the bar's overall index and its index inside the update). Nothing is
skipped silently. Warm-up outputs are NaN; each function documents exactly how many.

Streaming twins (``*Stream`` classes) take one bar or a micro-batch of arrays per ``update``
and return exactly (bit for bit) what the batch kernel returns at those positions on the
concatenated data, for any split: the batch function and the twin call the same numba
kernel, the twin carrying the recursive state and the few trailing closes a window needs.
A rejected update leaves the stream's state unchanged.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = [
    "AtrStream",
    "EfficiencyRatioStream",
    "KamaStream",
    "RealisedVolStream",
    "ZScoreStream",
    "atr",
    "efficiency_ratio",
    "kama",
    "realised_vol",
    "true_range",
    "zscore_atr",
]

# --------------------------------------------------------------------------- validation


def _prices(x: object, name: str, base: int = 0) -> np.ndarray:
    a = np.ascontiguousarray(x, dtype=np.float64)
    if a.ndim == 0:
        a = a.reshape(1)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-d, got shape {a.shape}")
    bad = ~(np.isfinite(a) & (a > 0.0))
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{name}[{_where(i, base)}] = {a[i]!r}: prices must be finite and > 0")
    return a


def _where(i: int, base: int) -> str:
    return str(i) if base == 0 else f"{i + base} (index {i} of this update)"


def _hlc(high: object, low: object, close: object, base: int = 0) -> tuple[np.ndarray, ...]:
    h = _prices(high, "high", base)
    lo = _prices(low, "low", base)
    c = _prices(close, "close", base)
    if not (h.size == lo.size == c.size):
        raise ValueError(f"high, low, close lengths differ: {h.size}, {lo.size}, {c.size}")
    bad = h < lo
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"high[{_where(i, base)}] = {h[i]!r} < low = {lo[i]!r}")
    return h, lo, c


def _period(p: int, name: str, minimum: int = 1) -> int:
    if isinstance(p, bool) or int(p) != p or p < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {p!r}")
    return int(p)


# --------------------------------------------------------------------------- kernels
# Each kernel writes out[i - start] for i in [start, len); ``offset`` is the overall bar
# index of local index 0 (the streaming twins prepend their kept history, so local != overall).


@numba.njit(cache=True)
def _er_at(c, i, n):
    num = abs(c[i] - c[i - n])
    den = 0.0
    for k in range(i - n + 1, i + 1):
        den += abs(c[k] - c[k - 1])
    return num / den if den > 0.0 else 0.0


@numba.njit(cache=True)
def _er_kernel(c, n, start, offset, out):
    for i in range(start, c.size):
        out[i - start] = np.nan if offset + i < n else _er_at(c, i, n)


@numba.njit(cache=True)
def _kama_kernel(c, n, fast_sc, slow_sc, start, offset, prev, out):
    d = fast_sc - slow_sc
    for i in range(start, c.size):
        a = offset + i
        if a < n:
            out[i - start] = np.nan
            continue
        if a == n:
            prev = c[i]
        else:
            s = _er_at(c, i, n) * d + slow_sc
            prev = prev + s * s * (c[i] - prev)
        out[i - start] = prev
    return prev


@numba.njit(cache=True)
def _tr(h, lo, prev_c, first):
    r = h - lo
    if not first:
        r = max(r, abs(h - prev_c), abs(lo - prev_c))
    return r


@numba.njit(cache=True)
def _atr_step(h, lo, c, p, a, prev_c, acc, atr):
    """One Wilder step for overall bar ``a``; returns (atr or NaN, prev_c, acc, atr)."""
    tr = _tr(h, lo, prev_c, a == 0)
    if a < p:
        acc += tr
        if a == p - 1:
            atr = acc / p
            return atr, c, acc, atr
        return np.nan, c, acc, atr
    atr = (atr * (p - 1) + tr) / p
    return atr, c, acc, atr


@numba.njit(cache=True)
def _atr_kernel(h, lo, c, p, offset, prev_c, acc, atr, out):
    for i in range(h.size):
        out[i], prev_c, acc, atr = _atr_step(h[i], lo[i], c[i], p, offset + i, prev_c, acc, atr)
    return prev_c, acc, atr


@numba.njit(cache=True)
def _tr_kernel(h, lo, c, out):
    for i in range(h.size):
        out[i] = _tr(h[i], lo[i], c[i - 1] if i > 0 else 0.0, i == 0)


@numba.njit(cache=True)
def _z_kernel(h, lo, c, m, p, start, offset, prev_c, acc, atr, out):
    # c carries history (start kept closes before the new bars); h, lo are the new bars only.
    for i in range(start, c.size):
        a = offset + i
        j = i - start
        v, prev_c, acc, atr = _atr_step(h[j], lo[j], c[i], p, a, prev_c, acc, atr)
        if a < m - 1 or a < p - 1:
            out[j] = np.nan
            continue
        s = 0.0
        for k in range(i - m + 1, i + 1):
            s += c[k]
        d = c[i] - s / m
        out[j] = d / v if v > 0.0 else np.nan
    return prev_c, acc, atr


@numba.njit(cache=True)
def _rv_kernel(c, w, ddof, start, offset, out):
    for i in range(start, c.size):
        if offset + i < w:
            out[i - start] = np.nan
            continue
        s = 0.0
        for k in range(i - w + 1, i + 1):
            s += math.log(c[k] / c[k - 1])
        mean = s / w
        ss = 0.0
        for k in range(i - w + 1, i + 1):
            e = math.log(c[k] / c[k - 1]) - mean
            ss += e * e
        out[i - start] = math.sqrt(ss / (w - ddof))


# --------------------------------------------------------------------------- batch API


def efficiency_ratio(close: np.ndarray, period: int = 10) -> np.ndarray:
    """Kaufman (1995) efficiency ratio, dimensionless in [0, 1].

    ER_t = |close_t − close_{t−n}| / Σ_{i=t−n+1..t} |close_i − close_{i−1}|, n = ``period``.
    When the denominator is 0 (n+1 equal closes) the numerator is 0 too and ER_t = 0 by
    definition (no movement, so no efficient movement). Warm-up: the first ``period`` values
    (indices 0..n−1) are NaN.
    """
    c = _prices(close, "close")
    n = _period(period, "period")
    out = np.empty(c.size)
    _er_kernel(c, n, 0, 0, out)
    return out


def _kama_sc(fast: int, slow: int) -> tuple[float, float]:
    fast = _period(fast, "fast")
    slow = _period(slow, "slow")
    return 2.0 / (fast + 1), 2.0 / (slow + 1)


def kama(close: np.ndarray, period: int = 10, fast: int = 2, slow: int = 30) -> np.ndarray:
    """Kaufman (1995) adaptive moving average, in price units.

    fast_sc = 2/(fast+1), slow_sc = 2/(slow+1), SC_t = (ER_t·(fast_sc − slow_sc) + slow_sc)²
    with ER_t = :func:`efficiency_ratio` (``period``), and KAMA_t = KAMA_{t−1} +
    SC_t·(close_t − KAMA_{t−1}). Seed: KAMA_n = close_n at index n = ``period`` (the first bar
    with a defined ER; ER_n itself is not used). Warm-up: indices 0..n−1 (``period`` values)
    are NaN.
    """
    c = _prices(close, "close")
    n = _period(period, "period")
    fsc, ssc = _kama_sc(fast, slow)
    out = np.empty(c.size)
    _kama_kernel(c, n, fsc, ssc, 0, 0, 0.0, out)
    return out


def true_range(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> np.ndarray:
    """Wilder (1978) true range, price units: TR_t = max(high_t − low_t, |high_t − close_{t−1}|,
    |low_t − close_{t−1}|); TR_0 = high_0 − low_0 (no previous close). No warm-up NaN."""
    h, lo, c = _hlc(high, low, close)
    out = np.empty(h.size)
    _tr_kernel(h, lo, c, out)
    return out


def atr(high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int = 14) -> np.ndarray:
    """Wilder (1978) average true range, price units.

    TR as in :func:`true_range` (TR_0 = high_0 − low_0). ATR_{p−1} = mean(TR_0..TR_{p−1}) (the
    first ``period`` TRs, summed in order), then ATR_t = (ATR_{t−1}·(p−1) + TR_t)/p.
    Warm-up: indices 0..p−2 (``period − 1`` values) are NaN.
    """
    h, lo, c = _hlc(high, low, close)
    p = _period(period, "period")
    out = np.empty(h.size)
    _atr_kernel(h, lo, c, p, 0, 0.0, 0.0, 0.0, out)
    return out


def zscore_atr(
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    sma_period: int = 20,
    atr_period: int = 14,
) -> np.ndarray:
    """Distance of close from its SMA in ATRs, dimensionless: z_t = (close_t − SMA_t)/ATR_t.

    SMA_t = mean(close_{t−m+1..t}), m = ``sma_period`` (summed in order); ATR_t as in
    :func:`atr` (``atr_period``). Warm-up: the first max(m, p) − 1 values are NaN. If ATR_t
    is exactly 0 (every TR so far was 0: no range at all) z_t is NaN — an undefined ratio, not
    a skipped input.
    """
    h, lo, c = _hlc(high, low, close)
    m = _period(sma_period, "sma_period")
    p = _period(atr_period, "atr_period")
    out = np.empty(h.size)
    _z_kernel(h, lo, c, m, p, 0, 0, 0.0, 0.0, 0.0, out)
    return out


def _ppy(periods_per_year: float | None) -> float:
    if periods_per_year is None:
        return 1.0
    v = float(periods_per_year)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"periods_per_year must be finite and > 0, got {periods_per_year!r}")
    return math.sqrt(v)


def realised_vol(
    close: np.ndarray,
    window: int = 20,
    ddof: int = 1,
    periods_per_year: float | None = None,
) -> np.ndarray:
    """Rolling realised volatility: standard deviation of log returns over ``window`` bars.

    r_i = ln(close_i / close_{i−1}); RV_t = sqrt(Σ_{i=t−w+1..t} (r_i − r̄)² / (w − ddof)) with
    r̄ the window mean (two-pass). ``ddof=1`` (default) is the sample std, ``ddof=0`` the
    population std. Units: log-return per bar; with ``periods_per_year`` (bars per year, e.g.
    8760 for 1h bars of a 24/7 market) the result is multiplied by sqrt(periods_per_year)
    (annualised, still a fraction: 0.6 = 60 %). Warm-up: indices 0..w−1 (``window`` values,
    since w returns need w+1 closes) are NaN.
    """
    c = _prices(close, "close")
    w = _period(window, "window")
    if ddof not in (0, 1) or w - ddof < 1:
        raise ValueError(f"ddof must be 0 or 1 and window − ddof >= 1, got ddof={ddof!r}")
    scale = _ppy(periods_per_year)
    out = np.empty(c.size)
    _rv_kernel(c, w, int(ddof), 0, 0, out)
    if scale != 1.0:
        out *= scale
    return out


# --------------------------------------------------------------------------- streaming twins


class _CloseHistory:
    """Keeps the last ``keep`` closes and the count of bars seen."""

    def __init__(self, keep: int) -> None:
        self._keep = keep
        self._hist = np.empty(0)
        self._n = 0

    @property
    def n_bars(self) -> int:
        """Bars consumed so far."""
        return self._n

    def _extend(self, c: np.ndarray) -> tuple[np.ndarray, int, int]:
        buf = np.concatenate((self._hist, c)) if self._hist.size else c
        return buf, self._hist.size, self._n - self._hist.size

    def _commit(self, buf: np.ndarray, added: int) -> None:
        self._hist = buf[max(buf.size - self._keep, 0) :].copy()
        self._n += added


class EfficiencyRatioStream(_CloseHistory):
    """Streaming twin of :func:`efficiency_ratio` (keeps the last ``period`` closes)."""

    def __init__(self, period: int = 10) -> None:
        self.period = _period(period, "period")
        super().__init__(self.period)

    def update(self, close: float | np.ndarray) -> np.ndarray:
        """Consume close(s); returns ER for each new bar (1-d array)."""
        c = _prices(close, "close", self._n)
        buf, start, off = self._extend(c)
        out = np.empty(c.size)
        _er_kernel(buf, self.period, start, off, out)
        self._commit(buf, c.size)
        return out


class KamaStream(_CloseHistory):
    """Streaming twin of :func:`kama` (keeps the last ``period`` closes and KAMA_{t−1})."""

    def __init__(self, period: int = 10, fast: int = 2, slow: int = 30) -> None:
        self.period = _period(period, "period")
        self._fsc, self._ssc = _kama_sc(fast, slow)
        self._prev = 0.0
        super().__init__(self.period)

    def update(self, close: float | np.ndarray) -> np.ndarray:
        """Consume close(s); returns KAMA for each new bar (1-d array, price units)."""
        c = _prices(close, "close", self._n)
        buf, start, off = self._extend(c)
        out = np.empty(c.size)
        self._prev = _kama_kernel(
            buf, self.period, self._fsc, self._ssc, start, off, self._prev, out
        )
        self._commit(buf, c.size)
        return out


class AtrStream:
    """Streaming twin of :func:`atr` (state: previous close, warm-up TR sum, ATR_{t−1})."""

    def __init__(self, period: int = 14) -> None:
        self.period = _period(period, "period")
        self._state = (0.0, 0.0, 0.0)
        self._n = 0

    @property
    def n_bars(self) -> int:
        """Bars consumed so far."""
        return self._n

    def update(
        self, high: float | np.ndarray, low: float | np.ndarray, close: float | np.ndarray
    ) -> np.ndarray:
        """Consume bar(s); returns ATR for each new bar (1-d array, price units)."""
        h, lo, c = _hlc(high, low, close, self._n)
        out = np.empty(h.size)
        self._state = _atr_kernel(h, lo, c, self.period, self._n, *self._state, out)
        self._n += h.size
        return out


class ZScoreStream(_CloseHistory):
    """Streaming twin of :func:`zscore_atr` (last ``sma_period`` closes + ATR state)."""

    def __init__(self, sma_period: int = 20, atr_period: int = 14) -> None:
        self.sma_period = _period(sma_period, "sma_period")
        self.atr_period = _period(atr_period, "atr_period")
        self._state = (0.0, 0.0, 0.0)
        super().__init__(self.sma_period)

    def update(
        self, high: float | np.ndarray, low: float | np.ndarray, close: float | np.ndarray
    ) -> np.ndarray:
        """Consume bar(s); returns z for each new bar (1-d array, in ATRs)."""
        h, lo, c = _hlc(high, low, close, self._n)
        buf, start, off = self._extend(c)
        out = np.empty(h.size)
        self._state = _z_kernel(
            h, lo, buf, self.sma_period, self.atr_period, start, off, *self._state, out
        )
        self._commit(buf, c.size)
        return out


class RealisedVolStream(_CloseHistory):
    """Streaming twin of :func:`realised_vol` (keeps the last ``window`` closes)."""

    def __init__(
        self, window: int = 20, ddof: int = 1, periods_per_year: float | None = None
    ) -> None:
        self.window = _period(window, "window")
        if ddof not in (0, 1) or self.window - ddof < 1:
            raise ValueError(f"ddof must be 0 or 1 and window − ddof >= 1, got ddof={ddof!r}")
        self.ddof = int(ddof)
        self._scale = _ppy(periods_per_year)
        super().__init__(self.window)

    def update(self, close: float | np.ndarray) -> np.ndarray:
        """Consume close(s); returns RV for each new bar (1-d array, same units as batch)."""
        c = _prices(close, "close", self._n)
        buf, start, off = self._extend(c)
        out = np.empty(c.size)
        _rv_kernel(buf, self.window, self.ddof, start, off, out)
        if self._scale != 1.0:
            out *= self._scale
        self._commit(buf, c.size)
        return out
