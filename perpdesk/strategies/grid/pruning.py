"""Pruning of stale or toxic grid fills (perpdesk issue 7), in priority order.

:func:`choose_prune` looks at the open fills and the market state of the last closed bar and
names at most one fill to close this bar, with its label. The five methods are tried in this
order and the first that finds a fill wins:

1. PRUNE_DEVIANCE — |price − KAMA| > ``prune_deviance_sigma`` × σ_price (price far outside
   its adaptive mean): close the worst fill, the one with the lowest unrealised PnL, if it is
   under water (upnl < 0).
2. PRUNE_OLDEST — fills older than ``prune_max_age_ns`` (now − ts_ns > max age, strict):
   close the oldest.
3. PRUNE_GAP — fills farther than ``prune_gap_spacings`` spacings from price
   (|price − entry| > n × spacing, strict, either direction): close the most distant.
4. PRUNE_FUNDING — the open fills' accumulated funding paid, F = Σ funding_usd, is positive
   and above ``prune_funding_frac`` × grid profit (strict; with no or negative grid profit any
   positive F qualifies): close the costliest fill (largest funding_usd, if > 0).
5. PRUNE_OFFSET — the realised-profit buffer pays for closing the worst under-water fill:
   if its loss −upnl ≤ ``profit_buffer_usd``, close it (the caller then debits the buffer).

Ties go to the fill that comes first in the sequence. Unrealised PnL is side × qty × (price −
entry) in USD, before fees. σ_price is the per-bar price standard deviation in price units
(close × :func:`perpdesk.features.trend.realised_vol`); spacing the grid's current spacing.
A NaN KAMA or σ (warm-up) skips the deviance test. One fill per bar at most, so a burst of
closes is spread over bars. Pure Python over a handful of fills: a few µs per call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from perpdesk.strategies.grid.params import GridParams
from perpdesk.strategies.grid.records import OpenFill, TradeLabel

__all__ = ["PruneChoice", "choose_prune", "worst_underwater"]


class PruneChoice(NamedTuple):
    """Close ``fills[index]`` with ``label``."""

    index: int
    label: TradeLabel


def worst_underwater(fills: Sequence[OpenFill], price: float) -> tuple[int, float]:
    """(index, upnl_usd) of the fill with the lowest unrealised PnL at ``price`` if it is
    negative, else (−1, 0.0)."""
    best, worst = -1, 0.0
    for i, f in enumerate(fills):
        u = f.side * f.qty_base * (price - f.price)
        if u < worst:
            best, worst = i, u
    return best, worst


def choose_prune(
    fills: Sequence[OpenFill],
    *,
    price: float,
    kama: float,
    sigma_price: float,
    now_ns: int,
    spacing: float,
    grid_profit_usd: float,
    profit_buffer_usd: float,
    params: GridParams,
) -> PruneChoice | None:
    """The fill to prune now and why, or None (rules and order in the module docstring).

    ``price`` the last close, ``kama`` its KAMA, ``sigma_price`` per-bar price σ (price
    units), ``now_ns`` the decision time, ``spacing`` the grid step (price units),
    ``grid_profit_usd`` realised profit of closed grid round trips, ``profit_buffer_usd`` the
    part of it set aside to pay for offset prunes.
    """
    if not fills:
        return None
    # One pass computes every rule's candidate (each rule's choice does not depend on the
    # others: the same comparisons, in the same order, as one loop per rule); the rules are
    # then applied in priority order.
    worst_i, worst_u = -1, 0.0  # worst_underwater(fills, price)
    old_i, old_ts = -1, now_ns - params.prune_max_age_ns
    far_i, far_d = -1, params.prune_gap_spacings * spacing
    total = 0.0
    cost_i, cost = -1, 0.0
    for i, f in enumerate(fills):
        fp = f.price
        u = f.side * f.qty_base * (price - fp)
        if u < worst_u:
            worst_i, worst_u = i, u
        if f.ts_ns < old_ts:
            old_i, old_ts = i, f.ts_ns
        d = abs(price - fp)
        if d > far_d:
            far_i, far_d = i, d
        fu = f.funding_usd
        total += fu
        if fu > cost:
            cost_i, cost = i, fu

    # 1. deviance
    if abs(price - kama) > params.prune_deviance_sigma * sigma_price and worst_i >= 0:
        return PruneChoice(worst_i, TradeLabel.PRUNE_DEVIANCE)
    # 2. oldest
    if old_i >= 0:
        return PruneChoice(old_i, TradeLabel.PRUNE_OLDEST)
    # 3. gap
    if far_i >= 0:
        return PruneChoice(far_i, TradeLabel.PRUNE_GAP)
    # 4. funding
    if total > 0.0 and total > params.prune_funding_frac * grid_profit_usd and cost_i >= 0:
        return PruneChoice(cost_i, TradeLabel.PRUNE_FUNDING)
    # 5. profit offset
    if profit_buffer_usd > 0.0 and worst_i >= 0 and -worst_u <= profit_buffer_usd:
        return PruneChoice(worst_i, TradeLabel.PRUNE_OFFSET)
    return None
