"""A seeded, vectorised generator of a synthetic perpetual-futures market, written into a
:class:`~perpdesk.data.catalog.Catalog`.

The market is for demos, tests and benchmarks: it has the shape of a Binance USD-M
universe (majors, alts, memecoins; 8h/4h/1h funding; spot and perp legs) and the
stylised facts a funding-carry strategy lives on, but it is not real data and its
parameters are hand-calibrated, not fitted. Everything is a pure function of
:class:`SyntheticSpec`: same spec, byte-identical catalog.

Model (times UTC; one latent path per minute, aggregated to 5-minute bars)
--------------------------------------------------------------------------

*Clock.* ``N = days × 1440`` one-minute steps; price/premium *points* ``k = 0..N`` sit at
``start + k min``. Bar ``j`` (stamped with its open time ``start + 5j min``) opens at
point ``5j`` and closes at point ``5j + 5``, so a bar's open *is* the previous close. High
and low are the extremes of the bar's six points widened by the excursion of the unseen
within-minute path, drawn from the law of a Brownian-bridge maximum
(``σ_1m·√(−ln U / 2)``); all prices are rounded to the instrument's tick.

*Market factor* (shared by all symbols). Log-return per minute
``m_k = σ_m(k)·z_k / √525600 + crash drift + 0.5 / 525600`` with
``σ_m = 40 % ann. × exp(v − ½·0.25²) × (1 + 0.25·cos 2π(hour − 15)/24) × (1 + 0.8·S)``:
``v`` is an hourly Ornstein–Uhlenbeck (OU) log-vol (half-life 3 days, sd 0.25), the cosine
the intraday cycle (busiest at 15:00 UTC), ``S ∈ [0, 1]`` market stress. Crashes come
about 4 a year (gamma(6) gaps with a 91-day mean, the first after 14–91 days): the factor
drops 9–25 % over 2–8 hours (front-loaded), retraces 20–50 % of that over 1–3 days, and
``S`` ramps to 1 and decays with a 1–3 day half-life. The +0.5 / year drift roughly
offsets the crashes. A market *sentiment* ``M`` (hourly OU, half-life 20 days, sd 1)
moves everyone's appetite for leverage.

*Symbols.* A fixed 40-symbol universe (``_UNIVERSE``: 4 majors, then alts and memes
interleaved so any prefix of ≥ 6 has 8h, 4h and 1h intervals and any prefix of ≥ 8 has
2+ names under $10 M a day); a spec takes the first ``n_symbols``, and symbol ``k`` is the
same in every market with that seed. Log spot price
``= β·Σm + idiosyncratic diffusion + jumps + κ_H·H − κ_N·Neg`` with β 0.85–1.45
(majors, fixed), 1.1–1.6 (alts), 1.4–2.2 (memes); idiosyncratic vol 15–45 % / 45–75 % /
80–130 % ann., higher in hype and stress; Poisson jumps 1.5 / 5 / 10 a year (sd 3 / 7 /
12 %). ``H`` and ``Neg`` are below; ``κ_H = 0.08 / 0.1`` and ``κ_N = 0.08 / 0.1`` (alts /
memes) make prices pump with hype, dump as it fades and sag while funding is negative.

*Leverage demand* ``X`` (excess funding, annualised fraction)::

    X = x̄ + b_M·M + σ_c·C + H − Neg − k_S·S

``x̄`` = 0 / 5 % / 8 % (majors / alts / memes: longs usually pay); ``b_M`` = 0.05 / 0.1 /
0.12; ``C`` an idiosyncratic hourly OU (half-life 1.5 days) scaled by ``σ_c`` = 0.03 /
0.06 / 0.08; ``k_S`` = 0.5 / 0.8 / 0.9. ``H`` sums hype episodes — Poisson, alts 3 a year
peaking at 80–400 % ann., memes 5 a year peaking at 150–650 % ann. (log-uniform): a
half-cosine ramp over 1–3 (memes 0.5–2) days, then exponential decay with a 2–6 (memes
1.5–5) day half-life; a market crash during an episode collapses it (6-hour half-life
from the crash). ``Neg`` sums negative-funding stretches (1.5 a year, 35–110 % (memes
40–120 %) ann., 3–18 days with one-day ramps). Majors have no ``H`` or ``Neg``: their
funding hovers at the baseline and dips below zero after crashes.

*Premium index* per minute for a symbol settling every ``h`` hours, ``x = X·h / 8760``::

    P = I + x + 0.05 %·tanh(x / w) + ε,    I = w = 0.01 % × h / 8

The ``tanh`` term is the arbitrage dead band: under the Binance clamp a premium within
±0.05 % of ``I`` costs nothing, so demand first fills the band and then moves the rate
(funding ≈ ``I + x`` once ``|x| ≫ w``, so ``X`` maps to the same annualised funding on
every interval). ``ε`` is microstructure noise: AR(1) with φ = 0.8 per minute (sd
0.003 / 0.005 / 0.006 %) plus AR(1) with a 3-hour half-life (sd 0.001 / 0.002 /
0.003 %). The perp trades at ``spot × (1 + P + η)`` with white last-trade noise ``η``
(sd 0.001 / 0.004 / 0.008 %). The mark price at a settlement is the perp price then.

*Funding* — Binance USD-M, "Introduction to Binance Futures Funding Rates"
(binance.com/en/support/faq/360033525031). Settlements at ``t = start + m·h``, ``m ≥ 1``::

    P̄ = Σ i·P_i / Σ i    (premium samples i = 1..n at the minutes of [t − h, t))
    F = P̄ + clamp(I − P̄, −0.05 %, +0.05 %), then clamped to [funding_floor, funding_cap]

evaluated as ``F = I`` exactly whenever ``|I − P̄| ≤ 0.05 %`` (the same number without
the round-off of ``P̄ + (I − P̄)``). Caps (our choice; the issue asks for majors
"capped at ±0.01 % × interval scaling"): majors ``±3 × I`` (±32.85 % ann.), alts ±2 %,
memes ±3 % per settlement (effectively uncapped). Intervals: majors 8h; alts 8h or 4h;
memes 8h, 4h or 1h (``_UNIVERSE``). Annualised figures use each symbol's own interval
(:func:`~perpdesk.domain.annualise_rate`).

*Volume* per bar, USD: a daily level per symbol (BTC $12 bn … illiquid names $2–3.5 M;
spot 35 / 45 / 50 % of perp) × intraday cycle (±35 %, peak 15:00 UTC) × weekend 0.7
(weekday 1.08) × activity ``(1 + 0.5·H + 0.8·Neg + 3·S)`` × ``(0.5 + 0.6·|r|/σ)`` (``r``
the bar's log return, ``σ`` its expected sd) × lognormal noise (sd 0.35) ×
``(price / initial)^0.3``; ``volume_base`` is that over the bar's mean OHLC. Taker-buy
share ``0.5 + 0.18·tanh(1.5·r/σ) + N(0, 0.04)`` clipped to [0.02, 0.98]. Open interest
(hourly, USD) = daily level × 0.6 / 0.4 / 0.3 × ``(price / initial)^0.3`` × OU noise
(sd 0.2, half-life 5 days) × ``(1 + 0.35·H) × (1 − 0.4·S)``; base = USD / perp price.

Horizon independence: each random component has its own ``SeedSequence`` stream and is
drawn in time order, so a ``days = d`` market is exactly the first ``d`` days of a longer
one with the same seed: nothing at time ``t`` depends on anything after ``t``.

Stylised facts
--------------

Measured by ``tests/test_synthetic.py`` on data read back from the catalog, default spec
(seed 7, 16 symbols × 365 days); the range over seeds 1–7 is for context, the test
asserts the band (per settlement unless noted).

====================================================  ===========  ==========  ===========
fact                                                  seed 7       seeds 1–7   test band
====================================================  ===========  ==========  ===========
majors: funding exactly at the baseline ``I``         89 %         72–96 %     ≥ 60 %
majors: funding > 20 % ann.                           0 %          0–1.1 %     < 2 %
alts: funding > 20 % ann.                             18 %         17–28 %     8–40 %
memes: funding > 20 % ann.                            25 %         16–38 %     12–50 %
alts + memes: funding < 0                             13 %         7–23 %      4–25 %
alts/memes: lag-1 autocorr. of funding, lowest        0.93         0.79–0.97   > 0.6
memes: highest funding, % ann.                        640          610–910     > 200
alts: highest funding, % ann.                         397          317–398     > 100
crash episodes per year (see below)                   6            3–8         2–9
symbols with median 24h perp volume < $10 M           3 of 16      3 of 16     ≥ 2, < 16
realised vol, median, majors / alts / memes (ann.)    55/93/153 %  —           increasing
====================================================  ===========  ==========  ===========

A crash episode is a drop of more than 10 % of the majors' equal-weighted log-price index
below its 24-hour high; flagged hours less than 24 hours apart are one episode. The count
includes drops of the diffusion, not only the injected crashes.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pyarrow as pa

from perpdesk.data.catalog import (
    BAR_SCHEMA,
    FUNDING_SCHEMA,
    NS_PER_S,
    OPEN_INTEREST_SCHEMA,
    Catalog,
)
from perpdesk.domain import Instrument, InstrumentKind
from perpdesk.errors import ConfigError

__all__ = [
    "COMPLETE_MARKER",
    "GENERATOR_VERSION",
    "MAX_SYMBOLS",
    "SymbolSummary",
    "SyntheticSpec",
    "SyntheticSpecError",
    "SyntheticSummary",
    "build_cached",
    "generate_market",
]

GENERATOR_VERSION = "1"
"""Bumped whenever the model changes, so cached markets are regenerated."""

COMPLETE_MARKER = "_COMPLETE"
MAX_SYMBOLS = 40
MAX_DAYS = 3660

MINUTES_PER_DAY = 1440
MINUTES_PER_YEAR = 525_600
BAR_MINUTES = 5
BASELINE_8H = 0.0001  # Binance interest component per 8h settlement (0.03 % a day)
CLAMP = 0.0005  # Binance dampener: clamp(I − P, −0.05 %, +0.05 %)

# Market factor (see the module docstring).
MARKET_VOL = 0.40  # annualised, before stochastic vol / intraday cycle / stress
MARKET_DRIFT = 0.5  # log per year; roughly offsets the crashes' net drop
SV_SD = 0.25  # sd of the hourly OU log-vol
STRESS_VOL = 0.8  # vol multiplier at full stress is 1 + STRESS_VOL
CRASH_RATE = 4.0  # per year
CRASH_GAP_SHAPE = 6.0  # gamma-distributed gaps: more regular than Poisson
PRICE_ELASTICITY = 0.3  # USD volume and open interest scale with (price / initial) ** this

ProgressFn = Callable[[int, int, str], None]


class SyntheticSpecError(ConfigError, ValueError):
    """A :class:`SyntheticSpec` field breaks a rule (names the field, value and rule)."""


# --------------------------------------------------------------------------------------
# Spec and summary
# --------------------------------------------------------------------------------------

_VENUE_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,31}$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True, slots=True)
class SyntheticSpec:
    """What to generate.

    ``seed``: non-negative int seeding every random stream. ``n_symbols``: 1..40, taken
    from the front of the fixed universe (majors first). ``days``: calendar days
    (2..3660) of 5-minute bars from 00:00 UTC of ``start`` (``YYYY-MM-DD``). ``venue``:
    the catalog venue name (lower-case, ``[a-z0-9_.-]``).
    """

    seed: int = 7
    n_symbols: int = 16
    days: int = 365
    start: str = "2024-01-01"
    venue: str = "synth"

    def __post_init__(self) -> None:
        def bad(name: str, rule: str) -> SyntheticSpecError:
            value = getattr(self, name)
            return SyntheticSpecError(f"SyntheticSpec.{name}={value!r}: {rule}")

        def is_int(v: object) -> bool:
            return isinstance(v, int | np.integer) and not isinstance(v, bool)

        if not is_int(self.seed) or not 0 <= self.seed < 2**63:
            raise bad("seed", "must be an int in 0..2**63-1")
        if not is_int(self.n_symbols) or not 1 <= self.n_symbols <= MAX_SYMBOLS:
            raise bad("n_symbols", f"must be an int in 1..{MAX_SYMBOLS}")
        if not is_int(self.days) or not 2 <= self.days <= MAX_DAYS:
            raise bad("days", f"must be an int in 2..{MAX_DAYS}")
        if not isinstance(self.start, str) or not _DATE_RE.match(self.start):
            raise bad("start", "must be a UTC date 'YYYY-MM-DD'")
        try:
            day = _dt.date.fromisoformat(self.start)
        except ValueError:
            raise bad("start", "must be a valid calendar date 'YYYY-MM-DD'") from None
        if not _dt.date(1970, 1, 1) <= day <= _dt.date(2200, 1, 1):
            raise bad("start", "must be between 1970-01-01 and 2200-01-01")
        if not isinstance(self.venue, str) or not _VENUE_RE.match(self.venue):
            raise bad("venue", "must match [a-z0-9][a-z0-9_.-]{0,31}")

    @property
    def start_ns(self) -> int:
        """00:00 UTC of ``start`` in ns since the epoch."""
        return int(np.datetime64(self.start, "D").astype("datetime64[ns]").astype(np.int64))

    @property
    def end_ns(self) -> int:
        """End of the generated period (exclusive for bars; the last settlement is here)."""
        return self.start_ns + self.days * MINUTES_PER_DAY * 60 * NS_PER_S

    def content_hash(self) -> str:
        """16 hex chars of sha256 over the fields and :data:`GENERATOR_VERSION`: the cache
        key of :func:`build_cached` (stable across processes and Python versions)."""
        payload = {f.name: getattr(self, f.name) for f in fields(self)}
        payload["seed"] = int(payload["seed"])
        payload["n_symbols"] = int(payload["n_symbols"])
        payload["days"] = int(payload["days"])
        payload["generator_version"] = GENERATOR_VERSION
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class SymbolSummary:
    """One generated symbol: its id, class (``major``/``alt``/``meme``) and funding
    interval in hours."""

    symbol: str
    cls: str
    funding_interval_h: int


@dataclass(frozen=True, slots=True)
class SyntheticSummary:
    """What :func:`generate_market` wrote. ``rows`` is ``(dataset, rows written)`` pairs
    (``instruments`` counts perp + spot rows)."""

    venue: str
    start_ns: int
    end_ns: int
    symbols: tuple[SymbolSummary, ...]
    rows: tuple[tuple[str, int], ...]

    @property
    def total_rows(self) -> int:
        """Rows written across all datasets."""
        return sum(n for _, n in self.rows)

    def rows_by_dataset(self) -> dict[str, int]:
        """``rows`` as a dict."""
        return dict(self.rows)

    def by_class(self, cls: str) -> list[str]:
        """Symbols of class ``cls``."""
        return [s.symbol for s in self.symbols if s.cls == cls]


# --------------------------------------------------------------------------------------
# Universe and class parameters
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Listing:
    base: str
    cls: str
    interval_h: int
    price0: float  # USD at start
    daily_volume_usd: float  # typical 24h perp quote volume in a calm market
    beta: float | None = None  # fixed for majors, drawn for the others
    idio_vol: float | None = None


# Order matters: any prefix of >= 6 has 8h, 4h and 1h; of >= 8 has 2+ names under $10M.
_UNIVERSE: tuple[_Listing, ...] = (
    _Listing("BTC", "major", 8, 42_000.0, 12e9, 1.0, 0.15),
    _Listing("ETH", "major", 8, 2_300.0, 6e9, 1.15, 0.25),
    _Listing("SOL", "major", 8, 100.0, 2.5e9, 1.45, 0.45),
    _Listing("BNB", "major", 8, 310.0, 6e8, 0.85, 0.30),
    _Listing("INJ", "alt", 4, 35.0, 1.5e8),
    _Listing("WIF", "meme", 1, 0.30, 4e8),
    _Listing("ZETA", "alt", 8, 1.2, 3e6),
    _Listing("MYRO", "meme", 4, 0.15, 2.5e6),
    _Listing("XRP", "alt", 8, 0.62, 8e8),
    _Listing("PEPE", "meme", 8, 1.4e-6, 5e8),
    _Listing("LINK", "alt", 8, 15.0, 2.2e8),
    _Listing("AVAX", "alt", 4, 36.0, 2.8e8),
    _Listing("BONK", "meme", 4, 1.4e-5, 1.6e8),
    _Listing("DOGE", "meme", 8, 0.09, 9e8),
    _Listing("MAVIA", "alt", 8, 2.5, 3e6),
    _Listing("FLOKI", "meme", 8, 1.8e-4, 9e7),
    _Listing("NEAR", "alt", 8, 3.6, 1.3e8),
    _Listing("SHIB", "meme", 8, 1.0e-5, 1.5e8),
    _Listing("OP", "alt", 8, 3.7, 1.1e8),
    _Listing("BOME", "meme", 1, 0.01, 1.2e8),
    _Listing("APT", "alt", 4, 9.5, 1.0e8),
    _Listing("TURBO", "meme", 8, 0.0015, 3e6),
    _Listing("SUI", "alt", 8, 1.4, 1.5e8),
    _Listing("TIA", "alt", 4, 16.0, 1.2e8),
    _Listing("MEW", "meme", 4, 0.004, 3e7),
    _Listing("ARB", "alt", 8, 1.9, 1.6e8),
    _Listing("FET", "alt", 8, 0.65, 9e7),
    _Listing("NEIRO", "meme", 1, 0.0008, 5e7),
    _Listing("SEI", "alt", 8, 0.7, 8e7),
    _Listing("KAVA", "alt", 8, 0.7, 3.5e6),
    _Listing("ATOM", "alt", 8, 11.0, 6e7),
    _Listing("POPCAT", "meme", 8, 0.4, 6e7),
    _Listing("LTC", "alt", 8, 72.0, 2e8),
    _Listing("FIL", "alt", 4, 5.8, 7e7),
    _Listing("BRETT", "meme", 4, 0.1, 4e7),
    _Listing("DOT", "alt", 8, 8.0, 1e8),
    _Listing("ADA", "alt", 8, 0.6, 2e8),
    _Listing("SPELL", "alt", 8, 0.0007, 2e6),
    _Listing("PNUT", "meme", 1, 0.5, 9e7),
    _Listing("AAVE", "alt", 8, 110.0, 1.2e8),
)
assert len(_UNIVERSE) == MAX_SYMBOLS


@dataclass(frozen=True, slots=True)
class _ClassModel:
    x_mean: float  # mean leverage demand (ann. fraction): longs usually pay
    b_m: float  # loading of leverage demand on market sentiment (ann. fraction per sd)
    sigma_c: float  # sd of idiosyncratic calm demand (ann. fraction)
    k_s: float  # demand lost at full market stress (ann. fraction)
    hype_rate: float  # hype episodes per year
    hype_peak: tuple[float, float]  # ann. fraction, log-uniform
    hype_rise_d: tuple[float, float]
    hype_half_life_d: tuple[float, float]
    neg_rate: float  # negative stretches per year
    neg_level: tuple[float, float]
    neg_days: tuple[float, float]
    premium_sd: float  # sd of the fast AR(1) premium noise (fraction)
    premium_slow_sd: float  # sd of the slow (3-hour half-life) premium noise
    trade_sd: float  # sd of last-trade noise on the perp (fraction)
    beta: tuple[float, float]
    idio_vol: tuple[float, float]  # ann.
    jump_rate: float  # per year
    jump_sd: float  # log
    kappa_h: float  # log-price bump per unit of hype demand
    kappa_n: float  # log-price sag per unit of negative demand
    spot_ratio: float  # spot volume / perp volume
    oi_ratio: float  # open interest USD / daily perp volume
    cap: float | None  # funding cap per settlement; None = cap_mult × I
    cap_mult: float = 3.0


_CLASS: dict[str, _ClassModel] = {
    "major": _ClassModel(
        x_mean=0.0, b_m=0.05, sigma_c=0.03, k_s=0.5,
        hype_rate=0.0, hype_peak=(1.0, 1.0), hype_rise_d=(1.0, 1.0), hype_half_life_d=(1.0, 1.0),
        neg_rate=0.0, neg_level=(0.0, 0.0), neg_days=(1.0, 1.0),
        premium_sd=0.00003, premium_slow_sd=0.00001, trade_sd=0.00001,
        beta=(1.0, 1.0), idio_vol=(0.2, 0.4), jump_rate=1.5, jump_sd=0.03,
        kappa_h=0.0, kappa_n=0.0, spot_ratio=0.35, oi_ratio=0.6, cap=None,
    ),
    "alt": _ClassModel(
        x_mean=0.05, b_m=0.1, sigma_c=0.06, k_s=0.8,
        hype_rate=3.0, hype_peak=(0.8, 4.0), hype_rise_d=(1.0, 3.0), hype_half_life_d=(2.0, 6.0),
        neg_rate=1.5, neg_level=(0.35, 1.1), neg_days=(4.0, 18.0),
        premium_sd=0.00005, premium_slow_sd=0.00002, trade_sd=0.00004,
        beta=(1.1, 1.6), idio_vol=(0.45, 0.75), jump_rate=5.0, jump_sd=0.07,
        kappa_h=0.08, kappa_n=0.08, spot_ratio=0.45, oi_ratio=0.4, cap=0.02,
    ),
    "meme": _ClassModel(
        x_mean=0.08, b_m=0.12, sigma_c=0.08, k_s=0.9,
        hype_rate=5.0, hype_peak=(1.5, 6.5), hype_rise_d=(0.5, 2.0), hype_half_life_d=(1.5, 5.0),
        neg_rate=1.5, neg_level=(0.4, 1.2), neg_days=(3.0, 14.0),
        premium_sd=0.00006, premium_slow_sd=0.00003, trade_sd=0.00008,
        beta=(1.4, 2.2), idio_vol=(0.8, 1.3), jump_rate=10.0, jump_sd=0.12,
        kappa_h=0.1, kappa_n=0.1, spot_ratio=0.5, oi_ratio=0.3, cap=0.03,
    ),
}  # fmt: skip


def _baseline(interval_h: int) -> float:
    """Interest component ``I`` per settlement: 0.01 % per 8h, scaled by the interval."""
    return BASELINE_8H * interval_h / 8


def _funding_bounds(listing: _Listing) -> tuple[float, float]:
    model = _CLASS[listing.cls]
    if model.cap is None:
        cap = model.cap_mult * _baseline(listing.interval_h)
        return -cap, cap
    return -model.cap, model.cap


def _tick_size(price0: float) -> float:
    """A power of ten between 2e-6 and 2e-5 of the initial price (BTC: 0.1)."""
    return float(10.0 ** math.floor(math.log10(price0 * 2e-5)))


def _lot_size(price0: float) -> float:
    """A power of ten worth $10–$100 at the initial price (BTC: 0.001)."""
    return float(10.0 ** math.floor(math.log10(100.0 / price0)))


def _instruments(venue: str, listings: list[_Listing]) -> list[Instrument]:
    out = []
    for lst in listings:
        symbol = f"{lst.base}USDT"
        tick, lot = _tick_size(lst.price0), _lot_size(lst.price0)
        floor, cap = _funding_bounds(lst)
        out.append(
            Instrument(
                venue=venue, symbol=symbol, kind=InstrumentKind.PERP, base=lst.base,
                quote="USDT", tick_size=tick, lot_size=lot,
                funding_interval_h=lst.interval_h, funding_cap=cap, funding_floor=floor,
            )
        )  # fmt: skip
        out.append(
            Instrument(
                venue=venue, symbol=symbol, kind=InstrumentKind.SPOT, base=lst.base,
                quote="USDT", tick_size=tick, lot_size=lot / 10,
            )
        )  # fmt: skip
    return out


# --------------------------------------------------------------------------------------
# Random streams and vectorised building blocks
# --------------------------------------------------------------------------------------

# Stream ids: one independent stream per random component (keeps horizon independence).
_S_MKT_VOL, _S_MKT_NOISE, _S_MKT_CRASH, _S_MKT_SENTIMENT = range(4)
(
    _S_PARAMS, _S_PRICE, _S_JUMPS, _S_HYPE, _S_NEG, _S_CALM, _S_PREMIUM, _S_TRADE,
    _S_BARS, _S_VOLUME, _S_OI,
) = range(11)  # fmt: skip


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=key))


def _ar1(e: np.ndarray, phi: float) -> np.ndarray:
    """``x_t = φ·x_{t−1} + e_t`` (``x_{−1} = 0``) without a Python loop over ``t``.

    Blocks of ``B`` steps (``φ^−B ≤ 1e8``) are solved at once as
    ``φ^j · cumsum(φ^−i · e_i)``; only the block-end carries are chained in a loop over
    blocks. Each output depends only on earlier inputs (prefix-stable).
    """
    n = e.size
    if n == 0:
        return e.astype(float)
    B = int(min(n, max(1, math.floor(math.log(1e8) / -math.log(phi)))))
    nb = -(-n // B)
    E = np.zeros(nb * B)
    E[:n] = e
    E = E.reshape(nb, B)
    j = np.arange(B, dtype=float)
    y = np.cumsum(E * phi**-j, axis=1) * phi**j
    phi_b = phi**B
    carry = np.empty(nb)
    c = 0.0
    last = y[:, -1]
    for b in range(nb):
        carry[b] = c
        c = last[b] + phi_b * c
    y += phi ** (j + 1) * carry[:, None]
    return y.reshape(-1)[:n]


def _ou(rng: np.random.Generator, n: int, half_life: float) -> np.ndarray:
    """Stationary AR(1) with unit sd and the given half-life (in steps), started in its
    stationary law."""
    phi = 0.5 ** (1.0 / half_life)
    z = rng.standard_normal(n)
    e = z * math.sqrt(1.0 - phi * phi)
    e[0] = z[0]
    return _ar1(e, phi)


def _hourly_to_points(xh: np.ndarray, n_points: int) -> np.ndarray:
    """Piecewise-linear path through hourly knots, sampled at every minute point."""
    k = np.arange(n_points)
    h = k // 60
    frac = (k % 60) / 60.0
    return xh[h] + (xh[h + 1] - xh[h]) * frac


def _ramp(x: np.ndarray) -> np.ndarray:
    """Smooth 0→1 on [0, 1] (half cosine), clipped outside."""
    return 0.5 - 0.5 * np.cos(np.pi * np.clip(x, 0.0, 1.0))


# --------------------------------------------------------------------------------------
# Market factor
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Market:
    n: int  # minute steps
    step_sd: np.ndarray  # (n,) ann. vol of the market factor per step (incl. stress)
    ret: np.ndarray  # (n,) market log-return per step (diffusion + crash drift)
    stress: np.ndarray  # (n+1,) in [0, 1]
    sentiment: np.ndarray  # (n+1,) sd-1 OU
    season: np.ndarray  # (n+1,) intraday vol cycle, mean 1
    crash_starts: np.ndarray  # minute index of each crash start


def _market(spec: SyntheticSpec) -> _Market:
    n = spec.days * MINUTES_PER_DAY
    hours = n // 60
    seed = spec.seed
    k = np.arange(n + 1)
    season = 1.0 + 0.25 * np.cos(2 * np.pi * ((k % MINUTES_PER_DAY) / 60.0 - 15.0) / 24.0)

    # Crashes: 4/yr (gamma gaps, the first after 15–100 % of a mean gap); drop 9–25 %
    # over 2–8 h, retrace 20–50 % over 1–3 days.
    rng = _rng(seed, 0, _S_MKT_CRASH)
    drift = np.zeros(n)
    stress = np.zeros(n + 1)
    starts = []
    mean_gap = MINUTES_PER_YEAR / CRASH_RATE
    t = mean_gap * (0.15 + 0.85 * rng.random())
    while True:
        if starts:
            t += rng.gamma(CRASH_GAP_SHAPE, mean_gap / CRASH_GAP_SHAPE)
        depth, dur_h, retrace, retrace_d, half_d = rng.random(5)
        if t >= n:
            break
        t0 = int(t)
        drop = math.log(1.0 - (0.09 + 0.16 * depth))
        dur = int(60 * (2 + 6 * dur_h))
        rdur = int(MINUTES_PER_DAY * (1 + 2 * retrace_d))
        half = MINUTES_PER_DAY * (1 + 2 * half_d)
        starts.append(t0)
        # Front-loaded drop: cumulative share 1 − (1 − τ)².
        tau = np.arange(dur + 1) / dur
        cum = drop * (1.0 - (1.0 - tau) ** 2)
        a, b = t0, min(n, t0 + dur)
        drift[a:b] += np.diff(cum)[: b - a]
        a2, b2 = t0 + dur, min(n, t0 + dur + rdur)
        if b2 > a2:
            drift[a2:b2] += -drop * (0.2 + 0.3 * retrace) / rdur
        # Stress: ramps to 1 through the drop, then decays.
        a, b = t0, min(n + 1, t0 + dur)
        stress[a:b] += tau[: b - a]
        end = min(n + 1, t0 + dur + int(12 * half))
        if end > t0 + dur:
            dt = np.arange(end - (t0 + dur))
            stress[t0 + dur : end] += np.exp(-dt * math.log(2) / half)
    np.minimum(stress, 1.0, out=stress)

    logvol = SV_SD * _ou(_rng(seed, 0, _S_MKT_VOL), hours + 2, 72.0)
    volmult = _hourly_to_points(np.exp(logvol - 0.5 * SV_SD**2), n + 1)
    step_sd = MARKET_VOL * volmult[:n] * season[:n] * (1.0 + STRESS_VOL * stress[:n])
    z = _rng(seed, 0, _S_MKT_NOISE).standard_normal(n)
    ret = step_sd / math.sqrt(MINUTES_PER_YEAR) * z + drift + MARKET_DRIFT / MINUTES_PER_YEAR
    sentiment = _hourly_to_points(_ou(_rng(seed, 0, _S_MKT_SENTIMENT), hours + 2, 480.0), n + 1)
    return _Market(n, step_sd, ret, stress, sentiment, season, np.array(starts, dtype=np.int64))


# --------------------------------------------------------------------------------------
# One symbol
# --------------------------------------------------------------------------------------


def _episodes_hype(
    rng: np.random.Generator, model: _ClassModel, n: int, crash_starts: np.ndarray
) -> np.ndarray:
    """Sum of hype episodes (ann. excess demand) at points 0..n; see the module doc."""
    out = np.zeros(n + 1)
    if model.hype_rate <= 0:
        return out
    t = 0.0
    lo, hi = model.hype_peak
    while True:
        gap, peak_u, rise_u, half_u = rng.random(4)
        t += -math.log1p(-gap) * MINUTES_PER_YEAR / model.hype_rate
        if t >= n:
            break
        t0 = int(t)
        peak = lo * (hi / lo) ** peak_u
        rise = MINUTES_PER_DAY * (model.hype_rise_d[0] + np.ptp(model.hype_rise_d) * rise_u)
        half = MINUTES_PER_DAY * (
            model.hype_half_life_d[0] + np.ptp(model.hype_half_life_d) * half_u
        )
        end = min(n + 1, t0 + int(rise + 10 * half))
        tau = np.arange(end - t0, dtype=float)
        shape = np.where(tau < rise, _ramp(tau / rise), np.exp(-(tau - rise) * math.log(2) / half))
        # A crash during the episode collapses it (6-hour half-life from the crash).
        hit = crash_starts[(crash_starts > t0) & (crash_starts < end)]
        if hit.size:
            tc = int(hit[0]) - t0
            shape[tc:] *= np.exp(-(tau[tc:] - tc) * math.log(2) / 360.0)
        out[t0:end] += peak * shape
    return out


def _episodes_neg(rng: np.random.Generator, model: _ClassModel, n: int) -> np.ndarray:
    """Sum of negative-funding stretches (positive numbers, subtracted from demand)."""
    out = np.zeros(n + 1)
    if model.neg_rate <= 0:
        return out
    t = 0.0
    day = float(MINUTES_PER_DAY)
    while True:
        gap, level_u, days_u = rng.random(3)
        t += -math.log1p(-gap) * MINUTES_PER_YEAR / model.neg_rate
        if t >= n:
            break
        t0 = int(t)
        level = model.neg_level[0] + np.ptp(model.neg_level) * level_u
        length = day * (model.neg_days[0] + np.ptp(model.neg_days) * days_u)
        end = min(n + 1, t0 + int(length + day))
        tau = np.arange(end - t0, dtype=float)
        shape = _ramp(tau / day) * (1.0 - _ramp((tau - length) / day))
        out[t0:end] += level * shape
    return out


def _jumps(rng: np.random.Generator, model: _ClassModel, n: int) -> tuple[np.ndarray, np.ndarray]:
    idx, size = [], []
    t = 0.0
    while True:
        gap, z = rng.random(), rng.standard_normal()
        t += -math.log1p(-gap) * MINUTES_PER_YEAR / model.jump_rate
        if t >= n:
            break
        idx.append(int(t))
        size.append(model.jump_sd * z)
    return np.array(idx, dtype=np.int64), np.array(size)


def _to_tick(x: np.ndarray, tick: float) -> np.ndarray:
    """Round prices to the tick grid (monotone, so OHLC order survives), at least 1 tick."""
    return np.maximum(np.rint(x / tick), 1.0) * tick


def _bars(
    points: np.ndarray,
    step_sd_log: np.ndarray,
    u_high: np.ndarray,
    u_low: np.ndarray,
    tick: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """OHLC of 5-minute bars from minute points (n+1,), tick-rounded.

    High/low add the excursion of the unobserved within-minute path beyond the sampled
    extremes: the maximum of a Brownian bridge over one minute,
    ``σ_1m·√(−ln U / 2)`` (its exact law for a bridge with equal endpoints).
    """
    nb = (points.size - 1) // BAR_MINUTES
    win = np.lib.stride_tricks.sliding_window_view(points, BAR_MINUTES + 1)[::BAR_MINUTES]
    win = win[:nb]
    o = points[0 : nb * BAR_MINUTES : BAR_MINUTES]
    c = points[BAR_MINUTES : nb * BAR_MINUTES + 1 : BAR_MINUTES]
    h = win.max(axis=1) * np.exp(step_sd_log * np.sqrt(-0.5 * np.log(u_high)))
    lo = win.min(axis=1) * np.exp(-step_sd_log * np.sqrt(-0.5 * np.log(u_low)))

    return _to_tick(o, tick), _to_tick(h, tick), _to_tick(lo, tick), _to_tick(c, tick)


def _bar_table(
    ts: np.ndarray,
    ohlc: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    vq: np.ndarray,
    taker_share: np.ndarray,
) -> pa.Table:
    o, h, lo, c = ohlc
    typical = (o + h + lo + c) / 4.0
    cols = [ts, o, h, lo, c, vq / typical, vq, vq * taker_share]
    return pa.Table.from_arrays([pa.array(x) for x in cols], schema=BAR_SCHEMA)


def _symbol_tables(
    spec: SyntheticSpec, index: int, listing: _Listing, mkt: _Market
) -> dict[str, pa.Table]:
    """Generate one symbol's perp/spot bars, funding and open interest."""
    seed = spec.seed
    model = _CLASS[listing.cls]
    n = mkt.n
    hours = n // 60
    L = listing.interval_h * 60
    rng = lambda stream: _rng(seed, 1, index, stream)  # noqa: E731

    # -- parameters ----------------------------------------------------------------------
    u = rng(_S_PARAMS).random(4)
    beta = listing.beta if listing.beta is not None else model.beta[0] + np.ptp(model.beta) * u[0]
    idio = (
        listing.idio_vol
        if listing.idio_vol is not None
        else model.idio_vol[0] + np.ptp(model.idio_vol) * u[1]
    )

    # -- leverage demand X (ann. excess funding) -----------------------------------------
    hype = _episodes_hype(rng(_S_HYPE), model, n, mkt.crash_starts)
    neg = _episodes_neg(rng(_S_NEG), model, n)
    calm = _hourly_to_points(_ou(rng(_S_CALM), hours + 2, 36.0), n + 1)
    stress = mkt.stress
    X = (
        model.x_mean
        + model.b_m * mkt.sentiment
        + model.sigma_c * calm
        + hype
        - neg
        - model.k_s * stress
    )

    # -- premium index and funding ---------------------------------------------------------
    interest = _baseline(listing.interval_h)  # I
    w = interest  # dead-band width scales with the interval like I does
    x = X * (listing.interval_h / 8760.0)
    zp = rng(_S_PREMIUM).standard_normal((n + 1, 2))
    premium_noise = _ar1(zp[:, 0] * (model.premium_sd * math.sqrt(1 - 0.8**2)), 0.8)
    slow = 0.5 ** (1 / 180)
    premium_noise += _ar1(zp[:, 1] * (model.premium_slow_sd * math.sqrt(1 - slow**2)), slow)
    del zp
    P = interest + x + CLAMP * np.tanh(x / w) + premium_noise
    del x, premium_noise, calm

    n_set = n // L
    weights = np.arange(1, L + 1, dtype=float)
    P_avg = (P[: n_set * L].reshape(n_set, L) * weights).sum(axis=1) / weights.sum()
    in_band = np.abs(interest - P_avg) <= CLAMP
    F = np.where(in_band, interest, P_avg + np.clip(interest - P_avg, -CLAMP, CLAMP))
    floor, cap = _funding_bounds(listing)
    F = np.clip(F, floor, cap)

    # -- prices ----------------------------------------------------------------------------
    idio_sd = idio * mkt.season[:n] * (1.0 + 0.08 * hype[:n]) * (1.0 + stress[:n])
    steps = beta * mkt.ret + idio_sd / math.sqrt(MINUTES_PER_YEAR) * rng(_S_PRICE).standard_normal(
        n
    )
    j_idx, j_size = _jumps(rng(_S_JUMPS), model, n)
    np.add.at(steps, j_idx, j_size)
    log_spot = np.empty(n + 1)
    log_spot[0] = 0.0
    np.cumsum(steps, out=log_spot[1:])
    log_spot += math.log(listing.price0) + model.kappa_h * hype - model.kappa_n * neg
    spot = np.exp(log_spot)
    del log_spot, steps
    trade_noise = rng(_S_TRADE).standard_normal(n + 1) * model.trade_sd
    perp = spot * (1.0 + P + trade_noise)
    del trade_noise, P

    # per-minute log-vol of the symbol (for bar excursions and volume normalisation)
    step_sd_log = np.sqrt((beta * mkt.step_sd) ** 2 + idio_sd**2) / math.sqrt(MINUTES_PER_YEAR)
    del idio_sd

    tick = _tick_size(listing.price0)
    nb = n // BAR_MINUTES
    bar_sd = step_sd_log[::BAR_MINUTES][:nb]
    ub = 1.0 - rng(_S_BARS).random((nb, 4))  # (0, 1]
    spot_ohlc = _bars(spot, bar_sd, ub[:, 0], ub[:, 1], tick)
    perp_ohlc = _bars(perp, bar_sd, ub[:, 2], ub[:, 3], tick)
    del ub

    # -- volume ----------------------------------------------------------------------------
    ts_bars = spec.start_ns + np.arange(nb, dtype=np.int64) * (BAR_MINUTES * 60 * NS_PER_S)
    bar_k = np.arange(nb) * BAR_MINUTES
    hod = (bar_k % MINUTES_PER_DAY) / 60.0
    weekday = (ts_bars // (86_400 * NS_PER_S) + 3) % 7  # Monday = 0
    season_v = (1.0 + 0.35 * np.cos(2 * np.pi * (hod - 15.0) / 24.0)) * np.where(
        weekday >= 5, 0.7, 1.08
    )
    activity = 1.0 + 0.5 * hype[bar_k] + 0.8 * neg[bar_k] + 3.0 * stress[bar_k]
    scale = (spot[bar_k] / listing.price0) ** PRICE_ELASTICITY
    base = listing.daily_volume_usd / (MINUTES_PER_DAY / BAR_MINUTES) * season_v * activity * scale
    bar_sigma = bar_sd * math.sqrt(BAR_MINUTES)
    vz = rng(_S_VOLUME).standard_normal((nb, 4))
    lognorm = np.exp(0.35 * vz[:, :2] - 0.5 * 0.35**2)
    tables: dict[str, pa.Table] = {}
    for col, (kind, ohlc, ratio) in enumerate(
        (("perp", perp_ohlc, 1.0), ("spot", spot_ohlc, model.spot_ratio))
    ):
        o, _, _, c = ohlc
        r = np.log(c / o) / bar_sigma
        vq = base * ratio * (0.5 + 0.6 * np.abs(r)) * lognorm[:, col]
        share = np.clip(0.5 + 0.18 * np.tanh(1.5 * r) + 0.04 * vz[:, 2 + col], 0.02, 0.98)
        tables[f"{kind}_bars_5m"] = _bar_table(ts_bars, ohlc, vq, share)

    # -- funding table -------------------------------------------------------------------
    set_k = np.arange(1, n_set + 1) * L
    tables["funding"] = pa.Table.from_arrays(
        [
            pa.array(spec.start_ns + set_k.astype(np.int64) * (60 * NS_PER_S)),
            pa.array(F),
            pa.array(np.full(n_set, listing.interval_h, dtype=np.int32)),
            pa.array(_to_tick(perp[set_k], tick)),  # mark price, on the tick grid like bars
        ],
        schema=FUNDING_SCHEMA,
    )

    # -- open interest (hourly) ----------------------------------------------------------
    oi_k = np.arange(hours) * 60
    oi_noise = _ou(rng(_S_OI), hours, 120.0)
    oi_usd = (
        listing.daily_volume_usd
        * model.oi_ratio
        * (spot[oi_k] / listing.price0) ** PRICE_ELASTICITY
        * np.exp(0.2 * oi_noise - 0.02)
        * (1.0 + 0.35 * hype[oi_k])
        * (1.0 - 0.4 * stress[oi_k])
    )
    tables["open_interest"] = pa.Table.from_arrays(
        [
            pa.array(spec.start_ns + oi_k.astype(np.int64) * (60 * NS_PER_S)),
            pa.array(oi_usd / perp[oi_k]),
            pa.array(oi_usd),
        ],
        schema=OPEN_INTEREST_SCHEMA,
    )
    return tables


# --------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------

_DATASETS = ("perp_bars_5m", "spot_bars_5m", "funding", "open_interest")


def generate_market(
    spec: SyntheticSpec, root: Path, progress: ProgressFn | None = None
) -> SyntheticSummary:
    """Generate the market described by ``spec`` into ``Catalog(root)``.

    Writes the venue's instruments (a PERP and a SPOT per symbol) and, per symbol,
    ``perp_bars_5m``, ``spot_bars_5m`` (``days × 288`` rows each), ``funding`` (one row per
    settlement, ``days × 24 / interval_h``) and ``open_interest`` (hourly). Symbols are
    generated one at a time (peak memory ≈ a few dozen arrays of ``days × 1440`` floats),
    each written by a background thread while the next is generated, and
    ``progress(done, total, symbol)`` is called (in the caller's thread) once a symbol is
    on disk. ``root`` should be empty
    or hold output of the same spec (the catalog merges identical rows and rejects
    conflicting ones).
    """
    catalog = Catalog(root)
    listings = list(_UNIVERSE[: spec.n_symbols])
    instruments = _instruments(spec.venue, listings)
    catalog.write_instruments(spec.venue, instruments)
    mkt = _market(spec)
    rows = dict.fromkeys(_DATASETS, 0)
    total = len(listings)

    def write(symbol: str, tables: dict[str, pa.Table]) -> None:
        for name in _DATASETS:
            catalog.write(spec.venue, name, symbol, tables[name])

    # One writer thread: symbol i is written (Parquet encoding releases the GIL) while
    # symbol i + 1 is generated. At most one symbol is in flight, so memory stays bounded;
    # the output does not depend on the overlap.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="synthetic-writer") as pool:
        pending: tuple[Future[None], int, str] | None = None
        for i, listing in enumerate(listings):
            symbol = f"{listing.base}USDT"
            tables = _symbol_tables(spec, i, listing, mkt)
            for name in _DATASETS:
                rows[name] += tables[name].num_rows
            if pending is not None:
                _finish(pending, total, progress)
            pending = (pool.submit(write, symbol, tables), i + 1, symbol)
            del tables
        if pending is not None:
            _finish(pending, total, progress)
    return SyntheticSummary(
        venue=spec.venue,
        start_ns=spec.start_ns,
        end_ns=spec.end_ns,
        symbols=tuple(
            SymbolSummary(f"{lst.base}USDT", lst.cls, lst.interval_h) for lst in listings
        ),
        rows=(("instruments", len(instruments)), *rows.items()),
    )


def _finish(
    pending: tuple[Future[None], int, str], total: int, progress: ProgressFn | None
) -> None:
    future, done, symbol = pending
    future.result()  # re-raises a write error here, in the caller's thread
    if progress is not None:
        progress(done, total, symbol)


def _is_complete(path: Path) -> bool:
    return (path / COMPLETE_MARKER).is_file()


def build_cached(spec: SyntheticSpec, data_dir: Path, progress: ProgressFn | None = None) -> Path:
    """The catalog root of ``spec`` under ``data_dir/synthetic/<content_hash>``, generated
    on first use and reused afterwards.

    A directory counts as built only if it holds ``_COMPLETE``. A build goes into a fresh
    hidden sibling (``tempfile.mkdtemp``); ``_COMPLETE`` is written last, then the
    directory is renamed into place in one step, so an interrupted build never leaves a
    catalog that looks complete. A stale directory without the marker is moved aside and
    replaced; if a concurrent builder publishes first, this build is discarded and the
    winner's directory returned.
    """
    parent = Path(data_dir).expanduser() / "synthetic"
    final = parent / spec.content_hash()
    if _is_complete(final):
        return final
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".building", dir=parent))
    try:
        summary = generate_market(spec, tmp, progress)
        meta = {f.name: getattr(spec, f.name) for f in fields(spec)}
        meta.update(generator_version=GENERATOR_VERSION, rows=summary.rows_by_dataset())
        with open(tmp / COMPLETE_MARKER, "w", encoding="utf-8") as fh:
            json.dump(meta, fh, sort_keys=True, default=int)
            fh.flush()
            os.fsync(fh.fileno())
        return _publish(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _publish(tmp: Path, final: Path) -> Path:
    """Rename the finished build ``tmp`` to ``final`` unless a complete one is there."""
    if _is_complete(final):
        return final  # a concurrent builder won; the caller removes tmp
    if final.exists():
        # Stale, incomplete: move it aside (atomic) before deleting, so the rename below
        # never races a half-deleted tree.
        trash = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".stale", dir=final.parent))
        with contextlib.suppress(FileNotFoundError):
            os.replace(final, trash / "old")
        shutil.rmtree(trash, ignore_errors=True)
    try:
        os.rename(tmp, final)
    except OSError:
        if _is_complete(final):
            return final
        raise
    return final
