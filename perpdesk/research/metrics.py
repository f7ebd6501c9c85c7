"""Performance metrics of an equity curve.

Sharpe = mean(r) / std(r, ddof=1) × sqrt(periods per year), with simple per-period
returns r and zero risk-free rate (Sharpe 1994, "The Sharpe Ratio"); the periods per year
come from the curve's actual sampling interval (1095 for 8h settlements, 8760 for 1h),
never from an assumed daily frequency. Max drawdown = max over t of
1 − E_t / max_{s≤t} E_s, in percent.
"""

from __future__ import annotations

import math

import numpy as np

YEAR_NS = 365 * 86_400 * 1_000_000_000
HOURS_PER_YEAR = 24.0 * 365.0


def periods_per_year_from_ts(ts_ns: np.ndarray) -> float:
    """Sampling frequency of a time grid: one year divided by its median spacing."""
    if ts_ns.size < 2:
        return math.nan
    step = float(np.median(np.diff(ts_ns)))
    return YEAR_NS / step if step > 0 else math.nan


def simple_returns(equity: np.ndarray) -> np.ndarray:
    """r_t = E_t / E_{t−1} − 1."""
    return equity[1:] / equity[:-1] - 1.0


def sharpe(equity: np.ndarray, periods_per_year: float) -> float:
    """Annualised Sharpe ratio of an equity curve (NaN if flat or too short)."""
    r = simple_returns(np.asarray(equity, dtype=float))
    if r.size < 2:
        return math.nan
    sd = float(np.std(r, ddof=1))
    if not sd > 1e-15:
        return math.nan
    return float(np.mean(r)) / sd * math.sqrt(periods_per_year)


def max_drawdown_pct(equity: np.ndarray) -> float:
    """Largest peak-to-trough fall of the curve, in percent of the peak (0 if none)."""
    e = np.asarray(equity, dtype=float)
    if e.size == 0:
        return math.nan
    peak = np.maximum.accumulate(e)
    return float(np.max(1.0 - e / peak) * 100.0)


def total_return_pct(equity: np.ndarray) -> float:
    """(E_end / E_start − 1) × 100."""
    e = np.asarray(equity, dtype=float)
    return float((e[-1] / e[0] - 1.0) * 100.0) if e.size else math.nan
