"""Carry accounting: delta-neutral pairs (short perp, long spot) marked on the settlement grid.

Timing at a settlement instant t (grid index g), for a symbol that settles at t:

1. The strategy decides just before t with the last settled rate (stamped before t),
   the trailing 24h volume and prices as of t (bars closed at or before t).
2. Exits trade at the as-of prices and do **not** earn the settlement at t; entries trade
   at the same prices and **do** earn it.
3. Funding: a pair held over t receives ``q_perp × mark_t × rate_t`` (Binance USD-M:
   payment = position size × mark price × funding rate; shorts receive when the rate is
   positive). ``mark_t`` is the settlement's mark price, or the perp price when absent.

Sizing: each of ``max_positions`` slots gets capital ``C = carry capital / max_positions``;
a pair buys spot worth ``X = C × L / (L + 1)`` and shorts perp notional ``X`` with margin
``X / L`` (``L`` = perp leverage), so both legs fit in ``C``. No compounding: ``X`` is
fixed from the starting bankroll. Costs: ``cost_bps_per_leg`` of each leg's traded
notional, at entry and at exit. Price/basis PnL: ``q_spot × ΔS − q_perp × ΔP`` between
grid instants (zero by construction where no spot data exists).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from perpdesk.data.panel import CarryPanel


@dataclass(frozen=True, slots=True)
class CarrySizing:
    """Money and cost parameters of a carry run (USD, bps)."""

    bankroll_usd: float
    slot_capital_usd: float
    perp_leverage: float
    cost_bps_per_leg: float
    close_at_end: bool = True

    @property
    def leg_notional_usd(self) -> float:
        """X = C × L / (L + 1)."""
        return self.slot_capital_usd * self.perp_leverage / (self.perp_leverage + 1.0)


@dataclass(frozen=True, slots=True)
class StepView:
    """What the strategy sees at one instant: only information known before it."""

    ts_ns: int
    held: np.ndarray
    deciding: np.ndarray
    last_rate: np.ndarray
    last_interval_h: np.ndarray
    quote_volume_24h_usd: np.ndarray
    tradable: np.ndarray


class CarryStrategyLike(Protocol):
    def on_step(self, view: StepView) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass(frozen=True, slots=True)
class CarryRun:
    """Per-symbol, per-grid-instant results (arrays of shape ``(n_symbols, n_grid)``).

    ``held`` is the position after the decisions at g (held over the settlement at g and
    until g+1); ``funding_usd``, ``cost_usd`` and ``price_pnl_usd`` are booked at g.
    ``trades`` has one dict per round trip.
    """

    panel: CarryPanel
    sizing: CarrySizing
    held: np.ndarray
    entries: np.ndarray
    exits: np.ndarray
    closed_at_end: np.ndarray
    funding_usd: np.ndarray
    cost_usd: np.ndarray
    price_pnl_usd: np.ndarray
    trades: list[dict]

    @property
    def pnl_usd(self) -> np.ndarray:
        """Total PnL booked per symbol per grid instant."""
        return self.funding_usd - self.cost_usd + self.price_pnl_usd


def simulate_carry(panel: CarryPanel, strategy: CarryStrategyLike, sizing: CarrySizing) -> CarryRun:
    """Replay the settlement grid in time order, asking ``strategy`` at every instant where
    a symbol settles, and book funding, costs and price PnL (see the module docstring)."""
    n, m = panel.n_symbols, panel.grid_ts_ns.size
    X = sizing.leg_notional_usd
    cost_rate = sizing.cost_bps_per_leg / 1e4
    P, S = panel.perp_px, panel.spot_px
    held_m = np.zeros((n, m), dtype=bool)
    entries = np.zeros((n, m), dtype=bool)
    exits = np.zeros((n, m), dtype=bool)
    funding = np.zeros((n, m))
    cost = np.zeros((n, m))
    price_pnl = np.zeros((n, m))
    closed_at_end = np.zeros(n, dtype=bool)

    held = np.zeros(n, dtype=bool)
    q_perp = np.zeros(n)
    q_spot = np.zeros(n)
    last_rate = np.full(n, np.nan)
    last_int = np.zeros(n, dtype=np.int32)
    open_trade: list[dict | None] = [None] * n
    trades: list[dict] = []

    def close(i: int, g: int, reason: str) -> None:
        c = cost_rate * (q_spot[i] * S[i, g] + q_perp[i] * P[i, g])
        cost[i, g] += c
        t = open_trade[i]
        assert t is not None
        t.update(
            exit_ts_ns=int(panel.grid_ts_ns[g]),
            exit_perp_px=float(P[i, g]),
            exit_spot_px=float(S[i, g]),
            exit_reason=reason,
        )
        t["cost_usd"] += c
        trades.append(t)
        open_trade[i] = None
        held[i] = False
        q_perp[i] = q_spot[i] = 0.0

    for g in range(m):
        # price PnL of what was held over (g-1, g]
        if g > 0 and held.any():
            dp = np.where(
                held, q_spot * (S[:, g] - S[:, g - 1]) - q_perp * (P[:, g] - P[:, g - 1]), 0.0
            )
            price_pnl[:, g] = dp
            for i in np.flatnonzero(held):
                open_trade[i]["price_pnl_usd"] += float(dp[i])  # type: ignore[index]
        deciding = panel.settles[:, g]
        view = StepView(
            ts_ns=int(panel.grid_ts_ns[g]),
            held=held.copy(),
            deciding=deciding,
            last_rate=last_rate.copy(),
            last_interval_h=last_int.copy(),
            quote_volume_24h_usd=panel.quote_volume_24h_usd[:, g],
            tradable=panel.px_fresh[:, g],
        )
        exit_mask, enter_mask = strategy.on_step(view)
        exit_mask = exit_mask & held & deciding & panel.px_fresh[:, g]
        enter_mask = enter_mask & ~held & deciding & panel.px_fresh[:, g]
        for i in np.flatnonzero(exit_mask):
            close(i, g, "signal")
            exits[i, g] = True
        for i in np.flatnonzero(enter_mask):
            q_perp[i] = X / P[i, g]
            q_spot[i] = X / S[i, g]
            held[i] = True
            entries[i, g] = True
            c = cost_rate * 2.0 * X
            cost[i, g] += c
            open_trade[i] = {
                "symbol": panel.symbols[i],
                "entry_ts_ns": int(panel.grid_ts_ns[g]),
                "entry_perp_px": float(P[i, g]),
                "entry_spot_px": float(S[i, g]),
                "q_perp": float(q_perp[i]),
                "q_spot": float(q_spot[i]),
                "funding_usd": 0.0,
                "cost_usd": c,
                "price_pnl_usd": 0.0,
                "settlements": 0,
            }
        # settlement at g: pairs held over it receive q_perp × mark × rate
        pay = held & deciding
        if pay.any():
            mk = np.where(np.isnan(panel.mark_px[:, g]), P[:, g], panel.mark_px[:, g])
            f = np.where(pay, q_perp * mk * np.nan_to_num(panel.funding_rate[:, g]), 0.0)
            funding[:, g] = f
            for i in np.flatnonzero(pay):
                t = open_trade[i]
                assert t is not None
                t["funding_usd"] += float(f[i])
                t["settlements"] += 1
        # the settlement at g becomes known after g
        last_rate = np.where(deciding, panel.funding_rate[:, g], last_rate)
        last_int = np.where(deciding, panel.interval_h[:, g], last_int)
        held_m[:, g] = held

    if sizing.close_at_end and m:
        for i in np.flatnonzero(held):
            close(i, m - 1, "end")
            closed_at_end[i] = True
    for i in range(n):
        t = open_trade[i]
        if t is not None:
            t.update(exit_ts_ns=None, exit_perp_px=None, exit_spot_px=None, exit_reason="open")
            trades.append(t)
    trades.sort(key=lambda t: (t["entry_ts_ns"], t["symbol"]))
    return CarryRun(
        panel=panel,
        sizing=sizing,
        held=held_m,
        entries=entries,
        exits=exits,
        closed_at_end=closed_at_end,
        funding_usd=funding,
        cost_usd=cost,
        price_pnl_usd=price_pnl,
        trades=trades,
    )
