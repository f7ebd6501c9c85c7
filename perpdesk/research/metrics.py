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


def cagr_pct(equity: np.ndarray, ts_ns: np.ndarray) -> float:
    """Compound annual growth rate in percent: ((E_end / E_start)^(1 / years) − 1) × 100,
    with years = (t_end − t_start) / 365 days. NaN for a curve shorter than one step, and
    −100 when the curve ends at or below zero."""
    e = np.asarray(equity, dtype=float)
    t = np.asarray(ts_ns, dtype=np.int64)
    if e.size < 2 or t.size != e.size or t[-1] <= t[0] or not e[0] > 0:
        return math.nan
    if not e[-1] > 0:
        return -100.0
    years = float(t[-1] - t[0]) / YEAR_NS
    return (math.exp(math.log(e[-1] / e[0]) / years) - 1.0) * 100.0


def sortino(equity: np.ndarray, periods_per_year: float) -> float:
    """Annualised Sortino ratio: mean(r) / DD × sqrt(periods per year), with the downside
    deviation DD = sqrt(mean(min(r, 0)²)) over all periods and a zero target (Sortino &
    Price 1994). NaN when there is no downside."""
    r = simple_returns(np.asarray(equity, dtype=float))
    if r.size < 2:
        return math.nan
    dd = math.sqrt(float(np.mean(np.minimum(r, 0.0) ** 2)))
    if not dd > 1e-15:
        return math.nan
    return float(np.mean(r)) / dd * math.sqrt(periods_per_year)


def calmar(equity: np.ndarray, ts_ns: np.ndarray) -> float:
    """Calmar ratio: CAGR % / max drawdown % over the whole curve (Young 1991 uses 36
    months; we use the curve's own span). NaN when there is no drawdown."""
    dd = max_drawdown_pct(equity)
    if not dd > 1e-12:
        return math.nan
    return cagr_pct(equity, ts_ns) / dd


def max_drawdown_duration_ns(equity: np.ndarray, ts_ns: np.ndarray) -> int:
    """Longest time spent below a previous peak, in ns: from the sample that set the peak
    to the first sample back at or above it (or to the end of the curve if never)."""
    e = np.asarray(equity, dtype=float)
    t = np.asarray(ts_ns, dtype=np.int64)
    if e.size == 0:
        return 0
    peak = np.maximum.accumulate(e)
    at_peak = e >= peak
    # index of the sample that set the running peak, for every sample
    peak_idx = np.maximum.accumulate(np.where(at_peak, np.arange(e.size), 0))
    under = ~at_peak
    if not under.any():
        return 0
    longest = 0
    # a drawdown spell ends at the next at-peak sample (or the last sample)
    ends = np.flatnonzero(at_peak[1:] & under[:-1]) + 1
    for end in ends:
        longest = max(longest, int(t[end] - t[peak_idx[end - 1]]))
    if under[-1]:
        longest = max(longest, int(t[-1] - t[peak_idx[-1]]))
    return longest


def win_rate_pct(trade_pnl_usd: np.ndarray) -> float:
    """Share of closed trades with positive P&L, in percent (NaN with no trades)."""
    p = np.asarray(trade_pnl_usd, dtype=float)
    return float(np.mean(p > 0) * 100.0) if p.size else math.nan


def profit_factor(trade_pnl_usd: np.ndarray) -> float:
    """Gross profit / gross loss of closed trades (inf with no losing trade, NaN with no
    trades)."""
    p = np.asarray(trade_pnl_usd, dtype=float)
    if p.size == 0:
        return math.nan
    loss = -float(p[p < 0].sum())
    gain = float(p[p > 0].sum())
    return gain / loss if loss > 0 else (math.inf if gain > 0 else math.nan)


def exposure_pct(gross_notional_usd: np.ndarray) -> float:
    """Share of samples with an open position (gross notional > 0), in percent."""
    g = np.asarray(gross_notional_usd, dtype=float)
    return float(np.mean(g > 0) * 100.0) if g.size else math.nan


def turnover_per_year(traded_notional_usd: float, equity: np.ndarray, ts_ns: np.ndarray) -> float:
    """Annualised turnover: traded notional / mean equity / years (1.0 = the average
    equity traded once a year)."""
    e = np.asarray(equity, dtype=float)
    t = np.asarray(ts_ns, dtype=np.int64)
    if e.size < 2 or t[-1] <= t[0]:
        return math.nan
    years = float(t[-1] - t[0]) / YEAR_NS
    return traded_notional_usd / float(np.mean(e)) / years


def summarize(
    ts_ns: np.ndarray,
    equity: np.ndarray,
    trade_pnl_usd: np.ndarray | None = None,
    gross_notional_usd: np.ndarray | None = None,
    traded_notional_usd: float | None = None,
) -> dict[str, float]:
    """Every headline metric of a run, annualised from the curve's actual sampling
    frequency. Keys carry units: ``*_pct``, ``*_days``, ratios without suffix."""
    t = np.asarray(ts_ns, dtype=np.int64)
    e = np.asarray(equity, dtype=float)
    ppy = periods_per_year_from_ts(t)
    nan = math.nan
    return {
        "total_return_pct": total_return_pct(e),
        "cagr_pct": cagr_pct(e, t),
        "sharpe": sharpe(e, ppy),
        "sortino": sortino(e, ppy),
        "calmar": calmar(e, t),
        "max_dd_pct": max_drawdown_pct(e),
        "max_dd_days": max_drawdown_duration_ns(e, t) / 86_400e9,
        "win_rate_pct": win_rate_pct(trade_pnl_usd) if trade_pnl_usd is not None else nan,
        "profit_factor": profit_factor(trade_pnl_usd) if trade_pnl_usd is not None else nan,
        "trades": float(len(trade_pnl_usd)) if trade_pnl_usd is not None else nan,
        "exposure_pct": exposure_pct(gross_notional_usd) if gross_notional_usd is not None else nan,
        "turnover_per_year": (
            turnover_per_year(traded_notional_usd, e, t) if traded_notional_usd is not None else nan
        ),
    }
