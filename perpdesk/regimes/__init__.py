"""Regime labels from features. ``kama``: the five-state trend regime (NOISE, UPTREND,
DOWNTREND, BREAKOUT_UP, BREAKOUT_DOWN) from the ATR-normalised KAMA slope and the efficiency
ratio, batch and streaming."""

from perpdesk.regimes.kama import (
    KamaRegimeStream,
    Regime,
    RegimeInputError,
    classify_regime,
    kama_regime,
    kama_slope,
    lag_regime,
    regime_code,
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
