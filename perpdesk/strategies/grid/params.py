"""GridStrategyV4 parameters: one frozen, validated dataclass with every default.

Defaults marked "issue 7" are the issue's; the others are perpdesk's choices (noted per field)
where the issue names a mechanism but no number. A bad value raises
:class:`perpdesk.errors.ConfigError` with one line naming the field, the value and the rule,
e.g. ``GridParams.slope_threshold = -0.1: must be > 0``. ``dataclasses.replace`` re-validates.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, fields

from perpdesk.errors import ConfigError

__all__ = ["GridParams"]

_H_NS = 3_600 * 1_000_000_000


@dataclass(frozen=True, slots=True)
class GridParams:
    """Every knob of the grid's decision math (units in the names; see the mechanisms)."""

    # Regime FSM (perpdesk.regimes.kama)
    kama_period: int = 10
    """KAMA and ER lookback in bars (issue 7)."""
    kama_fast: int = 2
    """KAMA fast smoothing period (Kaufman's 2; perpdesk default)."""
    kama_slow: int = 30
    """KAMA slow smoothing period (Kaufman's 30; perpdesk default)."""
    atr_period: int = 14
    """Wilder ATR period in bars (Wilder's 14; perpdesk default)."""
    slope_threshold: float = 0.15
    """θ: trend when |KAMA slope| > θ ATRs per bar, breakout beyond 2θ (issue 7)."""
    er_threshold: float = 0.5
    """ER gate of every trend state (issue 7)."""

    # Grid
    spacing_atr_mult: float = 1.0
    """k: spacing = max(k × ATR, floor); perpdesk default."""
    spacing_floor_frac: float = 0.002
    """Spacing floor as a fraction of price (0.2 %, well above a maker round trip);
    perpdesk default."""
    levels_per_side: int = 5
    """L: resting levels below (buys) and above (sells) the centre; perpdesk default."""
    order_frac: float = 0.05
    """One level's order notional as a fraction of capital; perpdesk default
    (2 × 5 levels × 5 % = 50 % of capital at most, inside the 75 % the reserve allows)."""

    # Avellaneda–Stoikov (2008)
    as_gamma: float = 0.5
    """γ risk aversion, dimensionless in the relative units used (issue 7)."""
    as_kappa: float = 1.5
    """κ order-arrival decay, per unit of relative price (issue 7)."""
    as_horizon_bars: int = 96
    """T in bars (96 = one day of 15-minute bars; issue 7)."""
    vol_window: int = 96
    """Bars of log returns behind σ (realised vol) for A–S and deviance; perpdesk default."""

    # Trailing up
    trail_er_activation: float = 0.65
    """ER above which trailing up is active in UPTREND/BREAKOUT_UP (issue 7)."""
    reserve_frac: float = 0.25
    """Fraction of capital never deployed while trailing (issue 7)."""

    # Circuit breaker
    cb_sma_period: int = 20
    """SMA of Z = (close − SMA)/ATR (issue 7)."""
    cb_halt_z: float = -3.0
    """Halt opening orders when Z < this (issue 7)."""
    cb_resume_z: float = -1.0
    """Resume when Z > this (issue 7)."""

    # Stops
    stop_atr_mult: float = 3.5
    """Stage-one stop distance from entry in ATRs (issue 7)."""
    stop_stage1_frac: float = 0.5
    """Fraction of the position closed at stage one (issue 7)."""
    stop_stage2_mult: float = 1.5
    """Stage-two distance as a multiple of the stage-one distance (issue 7)."""

    # Pruning
    prune_deviance_sigma: float = 3.0
    """Deviance when |price − KAMA| > this × σ_price (issue 7)."""
    prune_max_age_ns: int = 24 * _H_NS
    """Oldest: a fill older than this (24 h; issue 7)."""
    prune_gap_spacings: float = 3.0
    """Gap: a fill farther than this many spacings from price (issue 7)."""
    prune_funding_frac: float = 0.5
    """Funding: open fills' funding paid above this fraction of grid profit (issue 7)."""

    # VaR gate
    var_z: float = 1.65
    """One-sided 95 % normal quantile (issue 7)."""
    max_drawdown_frac: float = 0.2
    """Block new orders when VaR95 > this × equity; perpdesk default."""

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.type in ("int", int):
                if isinstance(v, bool) or not isinstance(v, int):
                    _bad(f.name, v, "must be an integer")
            elif isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                _bad(f.name, v, "must be a finite number")
        for name in (
            "kama_period",
            "kama_fast",
            "kama_slow",
            "atr_period",
            "levels_per_side",
            "as_horizon_bars",
            "cb_sma_period",
            "prune_max_age_ns",
        ):
            if getattr(self, name) < 1:
                _bad(name, getattr(self, name), "must be >= 1")
        if self.vol_window < 2:
            _bad("vol_window", self.vol_window, "must be >= 2 (a sample std needs 2 returns)")
        if self.kama_fast >= self.kama_slow:
            _bad("kama_fast", self.kama_fast, f"must be < kama_slow ({self.kama_slow})")
        for name in (
            "slope_threshold",
            "spacing_atr_mult",
            "spacing_floor_frac",
            "as_gamma",
            "as_kappa",
            "stop_atr_mult",
            "prune_deviance_sigma",
            "prune_gap_spacings",
            "var_z",
        ):
            if not getattr(self, name) > 0:
                _bad(name, getattr(self, name), "must be > 0")
        for name in ("er_threshold", "trail_er_activation", "reserve_frac"):
            if not 0 <= getattr(self, name) < 1:
                _bad(name, getattr(self, name), "must be in [0, 1)")
        for name in ("order_frac", "stop_stage1_frac", "max_drawdown_frac"):
            if not 0 < getattr(self, name) <= 1:
                _bad(name, getattr(self, name), "must be in (0, 1]")
        if self.spacing_floor_frac >= 1:
            _bad("spacing_floor_frac", self.spacing_floor_frac, "must be < 1")
        if self.prune_funding_frac < 0:
            _bad("prune_funding_frac", self.prune_funding_frac, "must be >= 0")
        if self.stop_stage2_mult <= 1:
            _bad("stop_stage2_mult", self.stop_stage2_mult, "must be > 1 (beyond stage one)")
        if not self.cb_halt_z < self.cb_resume_z:
            _bad("cb_halt_z", self.cb_halt_z, f"must be < cb_resume_z ({self.cb_resume_z})")

    def content_hash(self) -> str:
        """SHA-256 (hex, first 16) of the fields as sorted JSON: equal params, equal hash."""
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _bad(name: str, value: object, rule: str) -> None:
    raise ConfigError(f"GridParams.{name} = {value!r}: {rule}")
