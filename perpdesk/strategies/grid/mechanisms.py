"""GridStrategyV4 decision math as pure functions of numbers and arrays (perpdesk issue 7).

No engine, clock or I/O here: the strategy class feeds these from its state and the bars.
Per-bar functions take and return plain Python floats (all of one bar's calls, pruning over
ten open fills included, take about 5 µs: ~0.17 s for a 35,040-bar year); the stateful
circuit breaker has a numba batch kernel and a streaming twin that share it.

Point-in-time. Every input that comes from a bar (ATR, ER, regime, Z, σ) must be that of bar
i−1 when deciding during bar i: orders rest from bar i's open and fill on its high/low.
:func:`lag1` shifts a per-bar array by one bar.

Units. Prices in quote currency per base unit (USD), quantities in base units, money in USD,
ATR in price units, σ as named per function.

Contents:

* grid geometry — :func:`grid_spacing`, :func:`grid_levels`, :func:`needs_regen`,
  :func:`opening_sides`, :func:`order_qty_base`;
* Avellaneda–Stoikov skew — :func:`inventory_q`, :func:`as_reservation_price`,
  :func:`as_spread`;
* trailing up — :func:`trail_shift`, :func:`affordable_levels`;
* circuit breaker — :func:`cb_step`, :func:`circuit_breaker`, :class:`CircuitBreakerStream`,
  :func:`breaker_triggers`;
* two-stage ATR stop — :func:`side_position`, :func:`stop_prices`, :func:`stop_exits`;
* VaR gate — :func:`var95_usd`, :func:`var_blocks`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numba
import numpy as np

from perpdesk.errors import PerpdeskError
from perpdesk.regimes.kama import Regime
from perpdesk.strategies.grid.records import FillSide, OpenFill, TradeLabel

__all__ = [
    "CircuitBreakerStream",
    "GridInputError",
    "StopExit",
    "affordable_levels",
    "as_reservation_price",
    "as_spread",
    "breaker_triggers",
    "cb_step",
    "circuit_breaker",
    "grid_levels",
    "grid_spacing",
    "inventory_q",
    "lag1",
    "needs_regen",
    "opening_sides",
    "order_qty_base",
    "side_position",
    "stop_exits",
    "stop_prices",
    "trail_shift",
    "var95_usd",
    "var_blocks",
]


class GridInputError(PerpdeskError, ValueError):
    """An input to a grid mechanism breaks a rule (one line naming the argument and the rule)."""


def _pos(name: str, v: float) -> float:
    if not (v > 0.0 and v != math.inf):
        raise GridInputError(f"{name} = {v!r}: must be finite and > 0")
    return v


def _nonneg(name: str, v: float) -> float:
    if not (v >= 0.0 and v != math.inf):
        raise GridInputError(f"{name} = {v!r}: must be finite and >= 0")
    return v


# --------------------------------------------------------------------------- point in time


def lag1(values: np.ndarray, first: float | bool | int) -> np.ndarray:
    """What bar i's decisions may use: out[i] = values[i−1], out[0] = ``first`` (nothing is
    known before the first bar). Same dtype and length."""
    v = np.asarray(values)
    if v.ndim != 1:
        raise GridInputError(f"values must be 1-d, got shape {v.shape}")
    out = np.empty_like(v)
    if v.size:
        out[0] = first
        out[1:] = v[:-1]
    return out


# --------------------------------------------------------------------------- grid geometry


def grid_spacing(atr: float, price: float, atr_mult: float, floor_frac: float) -> float:
    """Distance between adjacent levels, price units: max(k × ATR, floor_frac × price).

    ``atr`` Wilder ATR (price units) of the last closed bar, ``price`` its close, k =
    ``atr_mult``, ``floor_frac`` a fraction of price (0.002 = 0.2 %). The floor keeps the grid
    wider than a fee round trip when the market is quiet. Source: issue 7 (ATR spacing).
    """
    _nonneg("atr", atr)
    _pos("price", price)
    return max(atr_mult * atr, floor_frac * price)


def grid_levels(center: float, spacing: float, levels: int) -> tuple[list[float], list[float]]:
    """The L buy and L sell level prices around ``center`` (price units).

    buys[j−1] = center − j × spacing, sells[j−1] = center + j × spacing for j = 1..L (nearest
    first); nothing rests at the centre itself. A buy level that would be ≤ 0 is left out, so
    ``buys`` may be shorter than L on a very wide grid. ``center`` is the Avellaneda–Stoikov
    reservation price r (:func:`as_reservation_price`), not the mid.
    """
    _pos("center", center)
    _pos("spacing", spacing)
    if isinstance(levels, bool) or int(levels) != levels or levels < 1:
        raise GridInputError(f"levels = {levels!r}: must be an integer >= 1")
    buys = [center - j * spacing for j in range(1, int(levels) + 1)]
    sells = [center + j * spacing for j in range(1, int(levels) + 1)]
    return [b for b in buys if b > 0.0], sells


def needs_regen(anchor: float, price: float, spacing: float, regime_changed: bool) -> bool:
    """Whether to rebuild the grid: on a regime change, or when price has drifted more than one
    spacing from the anchor (|price − anchor| > spacing, strict). Not on every fill."""
    return bool(regime_changed) or abs(price - anchor) > spacing


def order_qty_base(capital_usd: float, order_frac: float, price: float) -> float:
    """One level's order size in base units: capital × order_frac / price (USD / USD per
    base). Exchange lot rounding is the venue's job, not this function's."""
    _pos("capital_usd", capital_usd)
    _pos("price", price)
    return capital_usd * order_frac / price


def opening_sides(
    regime: int, halted: bool = False, var_blocked: bool = False
) -> tuple[bool, bool]:
    """(may open longs, may open shorts) for a regime code (issue 7's table):

    NOISE both; UPTREND and BREAKOUT_UP longs only (no new shorts); DOWNTREND and
    BREAKOUT_DOWN shorts only (no new longs). A halted circuit breaker or a VaR block stops
    every opening order. Closing orders (take-profits, stops, prunes) are never gated here.
    """
    if halted or var_blocked:
        return False, False
    if regime == Regime.NOISE:
        return True, True
    if regime in (Regime.UPTREND, Regime.BREAKOUT_UP):
        return True, False
    if regime in (Regime.DOWNTREND, Regime.BREAKOUT_DOWN):
        return False, True
    raise GridInputError(f"regime = {regime!r}: not a regime code (-2..2)")


# --------------------------------------------------------------------------- Avellaneda–Stoikov


def inventory_q(
    net_qty_base: float, price: float, capital_usd: float, order_frac: float, levels: int
) -> float:
    """Normalised inventory q, dimensionless: net position notional / full one-side grid
    notional = net_qty × price / (L × order_frac × capital). Long > 0; q = ±1 when all L
    levels of one side are filled (it can exceed 1 after trailing or stacking)."""
    _pos("capital_usd", capital_usd)
    return net_qty_base * price / (levels * order_frac * capital_usd)


def as_reservation_price(
    mid: float, q: float, sigma_pct: float, gamma: float, horizon_bars: float
) -> float:
    """Avellaneda & Stoikov (2008), "High-frequency trading in a limit order book",
    Quantitative Finance 8(3):217–224, reservation price at t = 0: r = s − q·γ·σ²·T.

    Units (perpdesk's choice, so one γ and κ fit every coin): prices are measured in percent of
    the mid, i.e. the formula runs with s = 100 and the result is scaled back by mid/100:

        r = mid × (1 − q·γ·σ²·T / 100)

    with ``sigma_pct`` the per-bar standard deviation of price in percent of price (BTC 15 m
    ≈ 0.25; 100 × :func:`perpdesk.features.trend.realised_vol` of the last closed bar), T =
    ``horizon_bars`` in bars, q = :func:`inventory_q` (dimensionless), γ dimensionless in
    these units. A long inventory (q > 0) lowers r, so the grid buys lower and sells sooner.
    These are the units of the paper's numerical section (s = 100, σ = 2, T = 1, κ = 1.5,
    γ ∈ {0.01, 0.1, 0.5}), which the issue's κ 1.5 and γ 0.5 come from; σ²T there is the
    session variance, as σ_bar² × 96 bars is one day's here.
    """
    _pos("mid", mid)
    _nonneg("sigma_pct", sigma_pct)
    _pos("gamma", gamma)
    _pos("horizon_bars", horizon_bars)
    return mid * (1.0 - q * gamma * sigma_pct * sigma_pct * horizon_bars / 100.0)


def as_spread(
    mid: float, sigma_pct: float, gamma: float, kappa: float, horizon_bars: float
) -> float:
    """Avellaneda & Stoikov (2008) optimal total bid–ask spread at t = 0:
    δ = γσ²T + (2/γ)·ln(1 + γ/κ), in the same percent-of-mid units as
    :func:`as_reservation_price` and scaled back to price: result = mid × δ / 100.

    κ (per percent of price) is the decay of the market-order arrival rate with the quote's
    distance, λ(δ) = A·e^{−κδ}. The optimal quotes are r ∓ result/2. With the issue's γ 0.5,
    κ 1.5, T 96 and σ 0.25 % the spread is 3 + 1.1507 = 4.15 % of the mid: far wider than an
    ATR grid step on 15-minute bars, so the grid takes only its centre from A–S.
    """
    _pos("mid", mid)
    _nonneg("sigma_pct", sigma_pct)
    _pos("gamma", gamma)
    _pos("kappa", kappa)
    _pos("horizon_bars", horizon_bars)
    d = gamma * sigma_pct * sigma_pct * horizon_bars + (2.0 / gamma) * math.log1p(gamma / kappa)
    return mid * d / 100.0


# --------------------------------------------------------------------------- trailing up


def trail_shift(
    grid_top: float, price: float, regime: int, er: float, er_activation: float
) -> float:
    """How far to move the grid's anchor up, price units (0.0 = no trailing).

    Active only in UPTREND or BREAKOUT_UP with ER > ``er_activation`` (strict; NaN ER is
    inactive). When ``price`` (the last close) is above ``grid_top`` (the highest level of the
    current grid, centre + L × spacing) the anchor moves up by half the gap,
    (price − grid_top)/2, and the grid is regenerated from the new anchor; the other half of
    the gap is left so that one wick does not drag the whole grid to the high. While trailing,
    new buy levels are limited by :func:`affordable_levels` (the reserve). Source: issue 7.
    """
    if regime != Regime.UPTREND and regime != Regime.BREAKOUT_UP:
        return 0.0
    if not (er > er_activation) or not (price > grid_top):
        return 0.0
    return (price - grid_top) / 2.0


def affordable_levels(
    capital_usd: float, deployed_usd: float, order_frac: float, reserve_frac: float, levels: int
) -> int:
    """How many new opening levels may be placed, 0..L, keeping the reserve undeployed.

    budget = capital × (1 − reserve_frac) − deployed (USD: ``deployed_usd`` is the entry
    notional of the open fills plus the resting opening orders); each level costs
    capital × order_frac; result = min(L, floor(budget / cost)), 0 when the budget is spent.
    A relative tolerance of 1e-9 absorbs float error in the division (15 − 1e-15 counts 15).
    """
    _pos("capital_usd", capital_usd)
    cost = capital_usd * order_frac
    n = (capital_usd * (1.0 - reserve_frac) - deployed_usd) / cost
    if n <= 0.0:
        return 0
    return min(int(levels), math.floor(n * (1.0 + 1e-9)))


# --------------------------------------------------------------------------- circuit breaker


def cb_step(halted: bool, z: float, halt_z: float = -3.0, resume_z: float = -1.0) -> bool:
    """One step of the breaker's hysteresis, dimensionless Z = (close − SMA20)/ATR
    (:func:`perpdesk.features.trend.zscore_atr`).

    Running → halted when Z < ``halt_z``; halted → running when Z > ``resume_z``; otherwise the
    state holds (also for NaN Z, e.g. in warm-up). Halting stops opening orders only; open
    positions, their take-profits and stops stay. Source: issue 7.
    """
    if halted:
        return not (z > resume_z)
    return z < halt_z


@numba.njit(cache=True)
def _cb_kernel(z, halt_z, resume_z, halted, out):
    for i in range(z.size):
        v = z[i]
        if halted:
            if v > resume_z:
                halted = False
        elif v < halt_z:
            halted = True
        out[i] = halted
    return halted


def _cb_thresholds(halt_z: float, resume_z: float) -> tuple[float, float]:
    h, r = float(halt_z), float(resume_z)
    if not (math.isfinite(h) and math.isfinite(r) and h < r):
        raise GridInputError(
            f"halt_z = {halt_z!r}, resume_z = {resume_z!r}: need finite halt_z < resume_z"
        )
    return h, r


def _z_array(z: object) -> np.ndarray:
    a = np.ascontiguousarray(z, dtype=np.float64)
    if a.ndim == 0:
        a = a.reshape(1)
    if a.ndim != 1:
        raise GridInputError(f"z must be 1-d, got shape {a.shape}")
    return a


def circuit_breaker(z: np.ndarray, halt_z: float = -3.0, resume_z: float = -1.0) -> np.ndarray:
    """Breaker state after each bar (``bool``: True = halted), starting un-halted, by
    :func:`cb_step` applied in order. Decisions during bar i use state i−1 (:func:`lag1`)."""
    h, r = _cb_thresholds(halt_z, resume_z)
    a = _z_array(z)
    out = np.empty(a.size, dtype=np.bool_)
    _cb_kernel(a, h, r, False, out)
    return out


class CircuitBreakerStream:
    """Streaming twin of :func:`circuit_breaker` (same numba kernel; state: halted and the
    count of halts). ``update`` takes one Z or a micro-batch and returns the states."""

    def __init__(self, halt_z: float = -3.0, resume_z: float = -1.0) -> None:
        self._h, self._r = _cb_thresholds(halt_z, resume_z)
        self.halted = False
        self.n_triggers = 0
        """Running → halted transitions so far (for the report)."""

    def update(self, z: float | np.ndarray) -> np.ndarray:
        """Consume Z value(s); returns the breaker state after each (``bool`` array)."""
        a = _z_array(z)
        out = np.empty(a.size, dtype=np.bool_)
        was = self.halted
        self.halted = bool(_cb_kernel(a, self._h, self._r, was, out))
        self.n_triggers += breaker_triggers(out, was)
        return out


def breaker_triggers(halted: np.ndarray, before: bool = False) -> int:
    """Count of running → halted transitions in a state array (``before`` = the state before
    its first element)."""
    h = np.asarray(halted, dtype=np.bool_)
    if h.size == 0:
        return 0
    prev = np.concatenate(([before], h[:-1]))
    return int(np.count_nonzero(h & ~prev))


# --------------------------------------------------------------------------- two-stage stop


class StopExit(NamedTuple):
    """A stop execution: close ``qty_base`` at ``price`` (stage 1 or 2), labelled."""

    qty_base: float
    price: float
    stage: int
    label: TradeLabel


def side_position(fills: Sequence[OpenFill], side: int) -> tuple[float, float, int]:
    """(qty_base, volume-weighted average entry price, number of fills) of one side's open
    fills; (0.0, nan, 0) when there are none. The entry the two-stage stop measures from."""
    qty = notional = 0.0
    n = 0
    for f in fills:
        if f.side == side:
            qty += f.qty_base
            notional += f.qty_base * f.price
            n += 1
    return (qty, notional / qty, n) if n else (0.0, math.nan, 0)


def stop_prices(
    side: int, entry_price: float, atr: float, atr_mult: float = 3.5, stage2_mult: float = 1.5
) -> tuple[float, float]:
    """(stage-1, stage-2) stop prices, price units: d = atr_mult × ATR; a long stops at
    entry − d and entry − stage2_mult × d, a short at entry + d and entry + stage2_mult × d.
    ``entry_price`` is the side's volume-weighted average entry. Source: issue 7 (two-stage
    ATR stop, 3.5 ATR and 1.5 × that distance)."""
    _pos("entry_price", entry_price)
    _nonneg("atr", atr)
    d = atr_mult * atr
    sgn = 1.0 if side == FillSide.LONG else -1.0
    return entry_price - sgn * d, entry_price - sgn * stage2_mult * d


def stop_exits(
    side: int,
    qty_base: float,
    entry_price: float,
    atr: float,
    n_fills: int,
    stage1_done: bool,
    bar_open: float,
    bar_high: float,
    bar_low: float,
    atr_mult: float = 3.5,
    stage2_mult: float = 1.5,
    stage1_frac: float = 0.5,
) -> list[StopExit]:
    """The stop executions of one side's position during one bar (empty list = none).

    ``qty_base`` is the position's current size (after any earlier stage one), ``n_fills`` the
    number of open grid fills in it, ``atr`` the ATR of the last closed bar. Stage one closes
    ``stage1_frac`` of the position when the bar touches the stage-1 price (long: low ≤ it;
    short: high ≥ it) — the whole position if it is a single fill; stage two closes the rest
    at the stage-2 price. Both can happen in one bar. Fills are conservative: at the stop
    price, or at the open when the bar opens beyond it (a gap). Labels STOP_LONG/STOP_SHORT.
    """
    if not qty_base > 0.0:
        return []
    p1, p2 = stop_prices(side, entry_price, atr, atr_mult, stage2_mult)
    label = TradeLabel.STOP_LONG if side == FillSide.LONG else TradeLabel.STOP_SHORT
    long = side == FillSide.LONG
    out: list[StopExit] = []
    left = qty_base
    if not stage1_done and (bar_low <= p1 if long else bar_high >= p1):
        q1 = qty_base if n_fills <= 1 else qty_base * stage1_frac
        out.append(StopExit(q1, min(p1, bar_open) if long else max(p1, bar_open), 1, label))
        left = qty_base - q1
    if left > 0.0 and (stage1_done or out) and (bar_low <= p2 if long else bar_high >= p2):
        out.append(StopExit(left, min(p2, bar_open) if long else max(p2, bar_open), 2, label))
    return out


# --------------------------------------------------------------------------- VaR gate


def var95_usd(exposure_usd: float, sigma_15m: float, z: float = 1.65) -> float:
    """One-bar parametric (normal) value at risk at 95 %, USD: |exposure| × z × σ_15m.

    ``exposure_usd`` is the net directional notional (long − short books, USD) including the
    orders about to be placed; ``sigma_15m`` the standard deviation of 15-minute log returns
    (a fraction: :func:`perpdesk.features.trend.realised_vol` on 15-minute bars); z = 1.65 the
    one-sided 95 % normal quantile. Source: J.P. Morgan/Reuters (1996), *RiskMetrics —
    Technical Document*, 4th ed. (VaR = 1.65 σ × position at 95 %); issue 7.
    """
    return abs(exposure_usd) * z * sigma_15m


def var_blocks(
    exposure_usd: float,
    sigma_15m: float,
    equity_usd: float,
    max_drawdown_frac: float,
    z: float = 1.65,
) -> bool:
    """True = block new opening orders: VaR95 (:func:`var95_usd`) > max_drawdown_frac × equity
    (strict). Non-positive equity blocks; a NaN σ (warm-up) blocks too — no risk estimate, no
    new risk."""
    if not equity_usd > 0.0 or not sigma_15m >= 0.0:
        return True
    return var95_usd(exposure_usd, sigma_15m, z) > max_drawdown_frac * equity_usd
