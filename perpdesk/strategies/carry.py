"""Funding-rate carry rules: short the perp, buy the spot, collect funding while it is high.

The rules follow the threshold carry studied in CLRS-style funding-arbitrage work
(enter above an annualised-funding threshold, exit below a lower one, so the band
stops the pair churning on noise):

- signal: annualised funding of the **last settled** rate, with the rate's own interval,
  ``ann_pct = rate × 24/interval_h × 365 × 100`` (see :func:`annualise_rate`);
- enter when ``ann_pct > entry_ann_pct`` and the trailing 24h quote volume is at least
  ``min_quote_volume_24h_usd``, while fewer than ``max_positions`` pairs are open —
  candidates at the same instant are taken best signal first (ties: symbol order);
- exit when ``ann_pct < exit_ann_pct``.

The rules are pure functions of arrays; :mod:`perpdesk.sim.carry` does the accounting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from perpdesk.domain import annualise_rate


@dataclass(frozen=True, slots=True)
class CarryRules:
    """Thresholds of the carry rules (percent annualised; USD for volume)."""

    entry_ann_pct: float = 20.0
    exit_ann_pct: float = 3.0
    min_quote_volume_24h_usd: float = 10_000_000.0
    max_positions: int = 10

    def __post_init__(self) -> None:
        if self.entry_ann_pct <= self.exit_ann_pct:
            raise ValueError("entry_ann_pct must be above exit_ann_pct")
        if self.max_positions < 1:
            raise ValueError("max_positions must be >= 1")


class CarryStrategy:
    """The carry rules as a strategy the carry simulator drives step by step.

    At each settlement instant the simulator passes a :class:`perpdesk.sim.carry.StepView`
    holding only information known before that instant; the strategy answers which
    pairs to close and which to open.
    """

    def __init__(self, rules: CarryRules) -> None:
        self.rules = rules

    def on_step(self, view: StepViewLike) -> tuple[np.ndarray, np.ndarray]:
        """``(exit_mask, enter_mask)`` for this instant."""
        ann = signal_ann_pct(view.last_rate, view.last_interval_h)
        return decide(
            self.rules, view.held, view.deciding, ann, view.quote_volume_24h_usd, view.tradable
        )


class StepViewLike(Protocol):
    """What a carry strategy may see at one instant (all per-symbol arrays)."""

    held: np.ndarray
    deciding: np.ndarray
    last_rate: np.ndarray
    last_interval_h: np.ndarray
    quote_volume_24h_usd: np.ndarray
    tradable: np.ndarray


def signal_ann_pct(last_rate: np.ndarray, last_interval_h: np.ndarray) -> np.ndarray:
    """Annualised percent of the last settled rates (NaN where none has settled yet)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(last_interval_h > 0, annualise_rate(last_rate, last_interval_h), np.nan)


def decide(
    rules: CarryRules,
    held: np.ndarray,
    deciding: np.ndarray,
    ann_pct: np.ndarray,
    quote_volume_24h_usd: np.ndarray,
    tradable: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """One decision instant. All arguments are per-symbol arrays.

    ``held``: pairs open now; ``deciding``: symbols whose settlement is due now (only they
    act — new information arrives with their settlement); ``ann_pct``: signal known
    before now; ``tradable``: fresh prices exist. Returns ``(exit_mask, enter_mask)``.
    Exits happen before entries, so a slot freed now can be reused now.
    """
    exit_mask = held & deciding & tradable & (ann_pct < rules.exit_ann_pct)
    open_after_exits = int(held.sum() - exit_mask.sum())
    free = rules.max_positions - open_after_exits
    enter_mask = np.zeros_like(held)
    if free <= 0:
        return exit_mask, enter_mask
    cand = (
        ~held
        & deciding
        & tradable
        & (ann_pct > rules.entry_ann_pct)
        & (quote_volume_24h_usd >= rules.min_quote_volume_24h_usd)
    )
    idx = np.flatnonzero(cand)
    if idx.size:
        # best signal first; stable sort keeps symbol order on ties
        order = idx[np.argsort(-ann_pct[idx], kind="stable")]
        enter_mask[order[:free]] = True
    return exit_mask, enter_mask
