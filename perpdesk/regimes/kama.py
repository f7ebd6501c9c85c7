"""Five-state trend regime from the KAMA slope normalised by ATR, gated by the efficiency ratio.

Sources: Kaufman, P. J. (1995), *Smarter Trading*, McGraw-Hill — efficiency ratio (ER) and the
adaptive moving average (KAMA); Wilder, J. W. (1978), *New Concepts in Technical Trading
Systems* — ATR. The kernels are :mod:`perpdesk.features.trend`'s (not re-implemented here).
The five states and their thresholds are perpdesk issue 7 (GridStrategyV4).

Definitions, per bar t (prices in quote currency):

* slope_t = (KAMA_t − KAMA_{t−1}) / ATR_t — dimensionless (KAMA's one-bar move in ATRs).
  NaN while KAMA_{t−1} or ATR_t is undefined (warm-up) or when ATR_t ≤ 0 (no range at all).
* ER_t = Kaufman's efficiency ratio over ``kama_period`` closes, in [0, 1] (the same ER that
  drives KAMA's smoothing constant).

Codes (``int8``), with θ = ``slope_threshold`` and e = ``er_threshold``; this is the exact
precedence, evaluated top to bottom, first match wins:

1. NOISE (0) if slope_t or ER_t is NaN (warm-up), or ER_t ≤ e — the ER gate applies to every
   trend state, breakouts included (the issue's NOISE rule "|slope| < θ or ER < 0.5" is
   unconditional);
2. BREAKOUT_UP (2) if slope_t > 2θ;  BREAKOUT_DOWN (−2) if slope_t < −2θ;
3. UPTREND (1) if slope_t > θ;  DOWNTREND (−1) if slope_t < −θ;
4. NOISE (0) otherwise (|slope_t| ≤ θ).

Boundaries: the issue leaves slope = θ and ER = e unassigned; both go to NOISE here (trend
states need a strict ">"); slope exactly 2θ is UPTREND, not a breakout.

The "FSM" is memoryless: a bar's state depends only on that bar's slope and ER, and any state
may follow any other (no dwell time, no hysteresis). Warm-up: the first defined code needs
KAMA_{t−1} (t ≥ kama_period + 1) and ATR_t (t ≥ atr_period − 1), so bars
0 .. max(kama_period + 1, atr_period − 1) − 1 are NOISE by rule 1.

Point-in-time. Code t uses bars 0..t only (the kernels are causal; a test appends bars and
checks the earlier codes do not change). Code t is known only once bar t has closed, so a
decision taken during bar i (orders resting at bar i's open, filled on its high/low) must use
code i−1: :func:`lag_regime` does that shift.

Batch and stream. :func:`kama_regime` classifies whole arrays (use it in the backtest: one
call per run, numba kernels). :class:`KamaRegimeStream` consumes bars one at a time or in
micro-batches (live) and returns exactly — bit for bit — the batch codes (and slopes) at the
same positions: both call the same numba kernels on the same KAMA/ATR/ER values, which
:mod:`perpdesk.features.trend` guarantees identical between its batch and streaming twins.
"""

from __future__ import annotations

import math
from enum import IntEnum

import numba
import numpy as np

from perpdesk.errors import PerpdeskError
from perpdesk.features.trend import (
    AtrStream,
    EfficiencyRatioStream,
    KamaStream,
    atr,
    efficiency_ratio,
    kama,
)

__all__ = [
    "KamaRegimeStream",
    "Regime",
    "RegimeInputError",
    "classify_regime",
    "kama_regime",
    "kama_slope",
    "lag_regime",
    "regime_code",
]


class RegimeInputError(PerpdeskError, ValueError):
    """A regime parameter or input breaks a rule (one line naming it and the rule)."""


class Regime(IntEnum):
    """The five regime codes (the ``int8`` values the arrays carry)."""

    BREAKOUT_DOWN = -2
    DOWNTREND = -1
    NOISE = 0
    UPTREND = 1
    BREAKOUT_UP = 2


# --------------------------------------------------------------------------- kernels


@numba.njit(cache=True)
def _code(s, e, theta, er_thr):
    # NaN compares False everywhere, so NaN slope or ER falls through to NOISE.
    if not (e > er_thr):
        return 0
    if s > 2.0 * theta:
        return 2
    if s < -2.0 * theta:
        return -2
    if s > theta:
        return 1
    if s < -theta:
        return -1
    return 0


@numba.njit(cache=True)
def _classify_kernel(slope, er, theta, er_thr, out):
    for i in range(slope.size):
        out[i] = _code(slope[i], er[i], theta, er_thr)


@numba.njit(cache=True)
def _slope_kernel(k, a, out):
    # k has one more element than a and out: k[0] is KAMA of the bar before a[0]'s bar.
    for i in range(a.size):
        d = k[i + 1] - k[i]
        v = a[i]
        out[i] = d / v if v > 0.0 else np.nan


# --------------------------------------------------------------------------- checks


def _check_thresholds(slope_threshold: float, er_threshold: float) -> tuple[float, float]:
    th = float(slope_threshold)
    if not (math.isfinite(th) and th > 0.0):
        raise RegimeInputError(f"slope_threshold = {slope_threshold!r}: must be finite and > 0")
    e = float(er_threshold)
    if not (0.0 <= e < 1.0):
        raise RegimeInputError(f"er_threshold = {er_threshold!r}: must be in [0, 1)")
    return th, e


def _check_atr_period(atr_period: int) -> int:
    if isinstance(atr_period, bool) or int(atr_period) != atr_period or atr_period < 1:
        raise RegimeInputError(f"atr_period = {atr_period!r}: must be an integer >= 1")
    return int(atr_period)


# --------------------------------------------------------------------------- batch API


def regime_code(
    slope: float, er: float, slope_threshold: float = 0.15, er_threshold: float = 0.5
) -> Regime:
    """The regime of one bar from its slope (ATRs per bar) and ER (dimensionless), by the
    precedence in the module docstring. NaN slope or ER is NOISE."""
    th, e = _check_thresholds(slope_threshold, er_threshold)
    return Regime(int(_code(float(slope), float(er), th, e)))


def classify_regime(
    slope: np.ndarray,
    er: np.ndarray,
    slope_threshold: float = 0.15,
    er_threshold: float = 0.5,
) -> np.ndarray:
    """Regime codes (``int8``) for arrays of slope (ATRs per bar) and ER (in [0, 1]), element
    by element, by the precedence in the module docstring."""
    th, e = _check_thresholds(slope_threshold, er_threshold)
    s = np.ascontiguousarray(slope, dtype=np.float64)
    r = np.ascontiguousarray(er, dtype=np.float64)
    if s.ndim != 1 or s.shape != r.shape:
        raise RegimeInputError(
            f"slope and er must be 1-d of equal length, got {s.shape}, {r.shape}"
        )
    out = np.empty(s.size, dtype=np.int8)
    _classify_kernel(s, r, th, e, out)
    return out


def kama_slope(
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    kama_period: int = 10,
    kama_fast: int = 2,
    kama_slow: int = 30,
    atr_period: int = 14,
) -> np.ndarray:
    """slope_t = (KAMA_t − KAMA_{t−1}) / ATR_t, dimensionless (Kaufman 1995 KAMA over
    ``close``; Wilder ATR over high/low/close). NaN in warm-up (t < max(kama_period + 1,
    atr_period − 1)) and where ATR_t ≤ 0. Bad prices raise the kernels' ``ValueError``."""
    k = kama(close, kama_period, kama_fast, kama_slow)
    a = atr(high, low, close, _check_atr_period(atr_period))
    out = np.empty(a.size)
    _slope_kernel(np.concatenate(([np.nan], k)), a, out)
    return out


def kama_regime(
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    kama_period: int = 10,
    slope_threshold: float = 0.15,
    er_threshold: float = 0.5,
    atr_period: int = 14,
    kama_fast: int = 2,
    kama_slow: int = 30,
) -> np.ndarray:
    """Regime code (``int8``, values of :class:`Regime`) of every bar.

    slope from :func:`kama_slope`, ER = :func:`perpdesk.features.trend.efficiency_ratio` over
    ``kama_period`` closes; codes by the precedence in the module docstring. Code t uses bars
    0..t only; a decision during bar i uses code i−1 (:func:`lag_regime`).
    """
    th, e = _check_thresholds(slope_threshold, er_threshold)
    s = kama_slope(high, low, close, kama_period, kama_fast, kama_slow, atr_period)
    er = efficiency_ratio(close, kama_period)
    out = np.empty(s.size, dtype=np.int8)
    _classify_kernel(s, er, th, e, out)
    return out


def lag_regime(codes: np.ndarray) -> np.ndarray:
    """The regime each bar's decisions may use: out[i] = codes[i−1], out[0] = NOISE (no bar
    before the first). ``int8``, same length."""
    c = np.asarray(codes, dtype=np.int8)
    if c.ndim != 1:
        raise RegimeInputError(f"codes must be 1-d, got shape {c.shape}")
    out = np.empty_like(c)
    if c.size:
        out[0] = Regime.NOISE
        out[1:] = c[:-1]
    return out


# --------------------------------------------------------------------------- streaming twin


class KamaRegimeStream:
    """Streaming twin of :func:`kama_regime` (and of :func:`kama_slope`).

    State: the KAMA, ATR and ER streams of :mod:`perpdesk.features.trend` plus KAMA of the last
    bar. ``update`` takes one bar or a micro-batch and returns the codes of the new bars, equal
    bit for bit to the batch codes at those positions for any split. ``last_slope`` and
    ``last_er`` hold the newest bar's slope and ER (NaN before any bar). A rejected update
    (bad price) leaves the stream unchanged.
    """

    def __init__(
        self,
        kama_period: int = 10,
        slope_threshold: float = 0.15,
        er_threshold: float = 0.5,
        atr_period: int = 14,
        kama_fast: int = 2,
        kama_slow: int = 30,
    ) -> None:
        self._th, self._e = _check_thresholds(slope_threshold, er_threshold)
        self._kama = KamaStream(kama_period, kama_fast, kama_slow)
        self._atr = AtrStream(_check_atr_period(atr_period))
        self._er = EfficiencyRatioStream(kama_period)
        self._prev_kama = np.nan
        self.last_slope = math.nan
        self.last_er = math.nan

    @property
    def n_bars(self) -> int:
        """Bars consumed so far."""
        return self._atr.n_bars

    def update_full(
        self, high: float | np.ndarray, low: float | np.ndarray, close: float | np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Consume bar(s); returns (codes ``int8``, slope, ER) for the new bars."""
        h = np.atleast_1d(np.asarray(high, dtype=np.float64))
        lo = np.atleast_1d(np.asarray(low, dtype=np.float64))
        c = np.atleast_1d(np.asarray(close, dtype=np.float64))
        # The ATR stream validates all three arrays and rejects a bad update before changing
        # any state; the KAMA and ER streams then see closes that already passed.
        a = self._atr.update(h, lo, c)
        k = self._kama.update(c)
        er = self._er.update(c)
        s = np.empty(a.size)
        _slope_kernel(np.concatenate(([self._prev_kama], k)), a, s)
        codes = np.empty(a.size, dtype=np.int8)
        _classify_kernel(s, er, self._th, self._e, codes)
        if a.size:
            self._prev_kama = k[-1]
            self.last_slope = float(s[-1])
            self.last_er = float(er[-1])
        return codes, s, er

    def update(
        self, high: float | np.ndarray, low: float | np.ndarray, close: float | np.ndarray
    ) -> np.ndarray:
        """Consume bar(s); returns their regime codes (``int8``)."""
        return self.update_full(high, low, close)[0]
