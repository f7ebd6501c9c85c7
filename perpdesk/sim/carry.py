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
    a symbol settles, and book funding, costs and price PnL (see the module docstring).

    The loop over instants holds only the decisions (they are path-dependent through the
    position cap); funding, price PnL and per-trade figures are then computed over whole
    arrays from the recorded quantities."""
    n, m = panel.n_symbols, panel.grid_ts_ns.size
    X = sizing.leg_notional_usd
    cost_rate = sizing.cost_bps_per_leg / 1e4
    P, S = panel.perp_px, panel.spot_px
    q_perp_m = np.zeros((n, m))  # quantity held after the decisions at g
    q_spot_m = np.zeros((n, m))
    entries = np.zeros((n, m), dtype=bool)
    exits = np.zeros((n, m), dtype=bool)
    cost = np.zeros((n, m))
    closed_at_end = np.zeros(n, dtype=bool)

    held = np.zeros(n, dtype=bool)
    q_perp = np.zeros(n)
    q_spot = np.zeros(n)
    last_rate = np.full(n, np.nan)
    last_int = np.zeros(n, dtype=np.int32)
    entry_cost = cost_rate * 2.0 * X
    # round trips: (symbol, entry g, exit g or None, reason, exit cost USD)
    spans: list[tuple[int, int, int | None, str, float]] = []
    open_at: dict[int, int] = {}

    def close(i: int, g: int, reason: str) -> None:
        c = cost_rate * (q_spot[i] * S[i, g] + q_perp[i] * P[i, g])
        cost[i, g] += c
        spans.append((i, open_at.pop(i), g, reason, c))
        held[i] = False
        q_perp[i] = q_spot[i] = 0.0

    for g in range(m):  # every grid instant is some symbol's settlement
        deciding = panel.settles[:, g]
        fresh = panel.px_fresh[:, g]
        was_held = held.copy()
        view = StepView(
            ts_ns=int(panel.grid_ts_ns[g]),
            held=was_held,
            deciding=deciding,
            last_rate=last_rate.copy(),
            last_interval_h=last_int.copy(),
            quote_volume_24h_usd=panel.quote_volume_24h_usd[:, g],
            tradable=fresh,
        )
        exit_mask, enter_mask = strategy.on_step(view)
        for i in np.flatnonzero(exit_mask & was_held & deciding & fresh):
            close(int(i), g, "signal")
            exits[i, g] = True
        # a pair closed now is not reopened now
        for i in np.flatnonzero(enter_mask & ~was_held & deciding & fresh):
            q_perp[i] = X / P[i, g]
            q_spot[i] = X / S[i, g]
            held[i] = True
            entries[i, g] = True
            cost[i, g] += entry_cost
            open_at[int(i)] = g
        q_perp_m[:, g] = q_perp
        q_spot_m[:, g] = q_spot
        # the settlement at g becomes known after g
        last_rate = np.where(deciding, panel.funding_rate[:, g], last_rate)
        last_int = np.where(deciding, panel.interval_h[:, g], last_int)

    if sizing.close_at_end and m:
        for i in np.flatnonzero(held):
            close(int(i), m - 1, "end")
            closed_at_end[i] = True
    for i, g0 in open_at.items():
        spans.append((i, g0, None, "open", 0.0))

    held_m = q_perp_m > 0
    # funding at g for pairs held over the settlement at g: q_perp × mark × rate
    mark = np.where(np.isnan(panel.mark_px), P, panel.mark_px)
    pay = held_m & panel.settles
    funding = np.where(pay, q_perp_m * mark * np.nan_to_num(panel.funding_rate), 0.0)
    # price PnL booked at g of what was held over (g-1, g]
    price_pnl = np.zeros((n, m))
    if m > 1:
        dS, dP = np.diff(S, axis=1), np.diff(P, axis=1)
        was = held_m[:, :-1]
        price_pnl[:, 1:] = np.where(was, q_spot_m[:, :-1] * dS - q_perp_m[:, :-1] * dP, 0.0)

    trades = []
    for i, g0, g1, reason, exit_cost in spans:
        last = m - 1 if g1 is None else g1
        trades.append(
            {
                "symbol": panel.symbols[i],
                "entry_ts_ns": int(panel.grid_ts_ns[g0]),
                "exit_ts_ns": None if g1 is None else int(panel.grid_ts_ns[g1]),
                "exit_reason": reason,
                "entry_perp_px": float(P[i, g0]),
                "entry_spot_px": float(S[i, g0]),
                "exit_perp_px": None if g1 is None else float(P[i, g1]),
                "exit_spot_px": None if g1 is None else float(S[i, g1]),
                "q_perp": float(q_perp_m[i, g0]),
                "q_spot": float(q_spot_m[i, g0]),
                "settlements": int(pay[i, g0 : last + 1].sum()),
                "funding_usd": float(funding[i, g0 : last + 1].sum()),
                "cost_usd": entry_cost + exit_cost,
                "price_pnl_usd": float(price_pnl[i, g0 + 1 : last + 1].sum()),
            }
        )
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
