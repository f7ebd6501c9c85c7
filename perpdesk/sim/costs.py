"""Trading costs as small pluggable models: fees, slippage and latency.

Each model is a tiny object behind one protocol (ARCHITECTURE: small pluggable models, as
hftbacktest does), so a run swaps one without touching the engine:

- :class:`FeeModel` — maker/taker rates per instrument kind (and per-symbol overrides).
  Fee = fill notional × rate (Binance: "Trading Fee = Position Value × Trading Fee Rate",
  https://www.binance.com/en/support/faq/360033544231), rounded half-up to 1e-8 USD (the
  USDT wallet precision). A negative rate is a rebate (the fee is then negative). With
  ``spot_buy_fee_in_base`` a spot buy's commission is taken in the bought coin instead
  (:meth:`FeeModel.base_fee_qty`), as Binance (without BNB), Bybit and OKX do.
- :class:`FixedBpsSlippage` / :class:`BookDepthSlippage` — the price a taker pays away from
  its reference price.
- :class:`ConstantLatency` — nanoseconds between a decision and its arrival at the venue.

Rates are fractions (``0.0005`` = 0.0500 %); slippage in basis points (1 bp = 1e-4).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Protocol

from perpdesk.domain import InstrumentKind, Liquidity, Side
from perpdesk.errors import ConfigError

FEE_QUANTUM_USD = Decimal("0.00000001")
"""Fees are booked to 1e-8 USD (8 decimals, the precision of USDT balances on Binance)."""


@dataclass(frozen=True, slots=True)
class FeeSchedule:
    """Maker and taker rates of one tier, as fractions of notional (Decimal strings keep
    them exact). A negative maker rate is a rebate."""

    maker_rate: Decimal
    taker_rate: Decimal

    def __post_init__(self) -> None:
        object.__setattr__(self, "maker_rate", Decimal(str(self.maker_rate)))
        object.__setattr__(self, "taker_rate", Decimal(str(self.taker_rate)))
        if self.taker_rate < 0:
            raise ValueError(f"taker_rate {self.taker_rate} must be >= 0")
        if self.maker_rate + self.taker_rate < 0:
            raise ValueError("maker rebate larger than the taker fee is not a real schedule")

    def rate(self, liquidity: Liquidity) -> Decimal:
        """The rate for a maker or a taker fill."""
        return self.maker_rate if liquidity is Liquidity.MAKER else self.taker_rate


BINANCE_USDM_TIERS: dict[str, FeeSchedule] = {
    "VIP0": FeeSchedule(Decimal("0.000200"), Decimal("0.000500")),
    "VIP1": FeeSchedule(Decimal("0.000160"), Decimal("0.000400")),
    "VIP2": FeeSchedule(Decimal("0.000140"), Decimal("0.000350")),
    "VIP3": FeeSchedule(Decimal("0.000120"), Decimal("0.000320")),
    "VIP4": FeeSchedule(Decimal("0.000100"), Decimal("0.000300")),
    "VIP5": FeeSchedule(Decimal("0.000080"), Decimal("0.000270")),
    "VIP6": FeeSchedule(Decimal("0.000060"), Decimal("0.000250")),
}
"""Binance USDⓈ-M futures (USDT-margined) regular tiers, without the BNB discount.
Source: Binance fee schedule, https://www.binance.com/en/fee/futureFee (VIP0: maker
0.0200 %, taker 0.0500 %)."""

BINANCE_SPOT_VIP0 = FeeSchedule(Decimal("0.001000"), Decimal("0.001000"))
"""Binance spot regular user (VIP0) maker 0.1000 % / taker 0.1000 % without the BNB
discount. Source: https://www.binance.com/en/fee/schedule."""


BYBIT_NON_VIP = (
    FeeSchedule(Decimal("0.000200"), Decimal("0.000550")),
    FeeSchedule(Decimal("0.001000"), Decimal("0.001000")),
)
"""Bybit non-VIP (perp, spot): USDT perpetuals maker 0.0200 % / taker 0.0550 %, spot maker
0.1000 % / taker 0.1000 %. Source: Bybit trading fee structure,
https://www.bybit.com/en/help-center/article/Trading-Fee-Structure (non-VIP row)."""

OKX_REGULAR_LV1 = (
    FeeSchedule(Decimal("0.000200"), Decimal("0.000500")),
    FeeSchedule(Decimal("0.000800"), Decimal("0.001000")),
)
"""OKX regular user Lv1 (perp, spot): USDT-margined swaps maker 0.020 % / taker 0.050 %, spot
maker 0.080 % / taker 0.100 % (the spot pair as in OKX's ``GET /api/v5/account/trade-fee``
answer recorded under ``shared/data/exchange-responses/other-venues/okx/``). Source:
https://www.okx.com/fees (Lv1)."""


@dataclass(frozen=True, slots=True)
class FeeModel:
    """Fee rates by instrument kind, with per-symbol overrides (engine symbol names, so a
    spot leg is ``BTCUSDT.SPOT``). Defaults: Binance USD-M VIP0 for perps, spot VIP0.

    ``spot_buy_fee_in_base``: a spot BUY's commission is taken in the base asset (the coin
    bought), as the exchanges of :meth:`for_venue` do — buying 0.075 BTC at 0.1 % leaves
    0.074925 BTC (:meth:`base_fee_qty`). A spot SELL's commission stays in the quote (USDT),
    perps always pay in USDT. Default False: every fee in USD (backtests unchanged)."""

    perp: FeeSchedule = field(default_factory=lambda: BINANCE_USDM_TIERS["VIP0"])
    spot: FeeSchedule = BINANCE_SPOT_VIP0
    overrides: dict[str, FeeSchedule] = field(default_factory=dict)
    spot_buy_fee_in_base: bool = False

    @classmethod
    def binance(cls, usdm_tier: str = "VIP0") -> FeeModel:
        """Binance USD-M rates of ``usdm_tier`` (``VIP0`` … ``VIP6``) and spot VIP0."""
        if usdm_tier not in BINANCE_USDM_TIERS:
            raise ValueError(f"unknown Binance USD-M tier '{usdm_tier}' (known: VIP0..VIP6)")
        return cls(perp=BINANCE_USDM_TIERS[usdm_tier])

    @classmethod
    def for_venue(cls, venue_id: str) -> FeeModel:
        """The regular-user schedule of a ccxt venue id: ``binanceusdm`` / ``binance``
        (:meth:`binance` VIP0), ``bybit`` (:data:`BYBIT_NON_VIP`), ``okx``
        (:data:`OKX_REGULAR_LV1`). Raises ``ValueError`` for another id.

        All three take a spot buy's commission in the coin bought (``spot_buy_fee_in_base``),
        a sell's in the USDT received. Sources: Binance spot fee schedule
        (https://www.binance.com/en/fee/schedule: the commission is deducted from the asset
        received unless the account pays fees with BNB — that discount is not modelled);
        Bybit trading fee structure
        (https://www.bybit.com/en/help-center/article/Trading-Fee-Structure: spot fees are
        charged in the coin received); OKX fee rules (https://www.okx.com/fees; a buy's
        ``fillFeeCcy`` in ``GET /api/v5/trade/fills`` is the base coin). The live path books
        the same (:meth:`perpdesk.execution.ccxt_live.LiveVenue._execution`: a fee in the base
        asset becomes ``fee_qty_base``, valued at the fill price in ``fee_usd``)."""
        if venue_id in ("binanceusdm", "binance"):
            return cls(perp=BINANCE_USDM_TIERS["VIP0"], spot_buy_fee_in_base=True)
        if venue_id == "bybit":
            return cls(perp=BYBIT_NON_VIP[0], spot=BYBIT_NON_VIP[1], spot_buy_fee_in_base=True)
        if venue_id == "okx":
            return cls(perp=OKX_REGULAR_LV1[0], spot=OKX_REGULAR_LV1[1], spot_buy_fee_in_base=True)
        raise ValueError(f"no fee schedule for venue {venue_id!r} (binanceusdm, bybit, okx)")

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any], where: str = "fees") -> FeeModel:
        """A fee model from config, e.g. ``{"usdm_tier": "VIP1"}`` or
        ``{"perp": {"maker_rate": "0.0002", "taker_rate": "0.0005"}, "spot": {...},
        "overrides": {"BTCUSDT": {...}}, "spot_buy_fee_in_base": true}`` (rates as fractions;
        strings keep them exact). Raises :class:`ConfigError` naming the key on a bad value."""
        known = {"usdm_tier", "perp", "spot", "overrides", "spot_buy_fee_in_base"}
        bad = sorted(set(cfg) - known)
        if bad:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(bad)} (known: {sorted(known)})")

        def sched(x: Any, key: str) -> FeeSchedule:
            if not isinstance(x, Mapping) or set(x) != {"maker_rate", "taker_rate"}:
                raise ConfigError(f"{where}.{key}: needs exactly maker_rate and taker_rate")
            try:
                return FeeSchedule(Decimal(str(x["maker_rate"])), Decimal(str(x["taker_rate"])))
            except (ValueError, ArithmeticError) as exc:
                raise ConfigError(f"{where}.{key}: {exc}") from None

        tier = cfg.get("usdm_tier", "VIP0")
        if tier not in BINANCE_USDM_TIERS:
            raise ConfigError(f"{where}.usdm_tier: unknown tier {tier!r} (VIP0..VIP6)")
        perp = sched(cfg["perp"], "perp") if "perp" in cfg else BINANCE_USDM_TIERS[tier]
        spot = sched(cfg["spot"], "spot") if "spot" in cfg else BINANCE_SPOT_VIP0
        over = {
            str(sym): sched(v, f"overrides.{sym}") for sym, v in cfg.get("overrides", {}).items()
        }
        in_base = cfg.get("spot_buy_fee_in_base", False)
        if not isinstance(in_base, bool):
            raise ConfigError(f"{where}.spot_buy_fee_in_base: {in_base!r} is not true or false")
        return cls(perp=perp, spot=spot, overrides=over, spot_buy_fee_in_base=in_base)

    @classmethod
    def zero(cls) -> FeeModel:
        """No fees (for tests and frictionless comparisons)."""
        z = FeeSchedule(Decimal(0), Decimal(0))
        return cls(perp=z, spot=z)

    def schedule(self, symbol: str, kind: InstrumentKind) -> FeeSchedule:
        """The schedule that applies to ``symbol``."""
        s = self.overrides.get(symbol)
        if s is not None:
            return s
        return self.spot if kind is InstrumentKind.SPOT else self.perp

    def fee_usd(
        self, symbol: str, kind: InstrumentKind, notional_usd: Decimal, liquidity: Liquidity
    ) -> Decimal:
        """``notional × rate`` rounded half-up to 1e-8 USD; negative for a maker rebate."""
        rate = self.schedule(symbol, kind).rate(liquidity)
        return (notional_usd * rate).quantize(FEE_QUANTUM_USD, rounding=ROUND_HALF_UP)

    def base_fee_qty(
        self, symbol: str, kind: InstrumentKind, side: Side, qty_base: Decimal, liquidity: Liquidity
    ) -> Decimal:
        """The commission taken in the base asset, in base units: ``qty × rate`` for a spot
        BUY when ``spot_buy_fee_in_base``, else 0 (the fee is then :meth:`fee_usd`).

        Exact (Decimal, not rounded): the exchanges round the coin commission to the
        asset's precision (BTC 1e-8), but with a lot of 1e-5 BTC (Binance) or 1e-6 (Bybit)
        and rates of 0.08–0.10 % the product has at most 9–10 decimals, so the difference
        is below 1e-8 BTC a fill; keeping it exact makes the USD value ``b × price`` (the
        fill's ``fee_usd``) book with no rounding remainder in the ledger. A zero or
        negative rate (a maker rebate, in no schedule :meth:`for_venue` gives) gives 0: it
        stays in USD."""
        if not self.spot_buy_fee_in_base or kind is not InstrumentKind.SPOT or side is not Side.BUY:
            return Decimal(0)
        rate = self.schedule(symbol, kind).rate(liquidity)
        return qty_base * rate if rate > 0 else Decimal(0)


class SlippageModel(Protocol):
    """Price a taker gets for ``qty_base`` when the reference (best or last) price is
    ``ref_price`` and ``top_qty_base`` rests at the reference (NaN when unknown).
    Returns a price at least as bad as ``ref_price`` for the side."""

    def price(self, side: Side, ref_price: float, qty_base: float, top_qty_base: float) -> float:
        """The (unrounded) execution price."""
        ...


@dataclass(frozen=True, slots=True)
class FixedBpsSlippage:
    """``price = ref × (1 + side × bps / 1e4)`` — a constant cost in basis points."""

    bps: float = 0.0

    def __post_init__(self) -> None:
        if not self.bps >= 0:
            raise ValueError(f"slippage bps {self.bps} must be >= 0")

    def price(self, side: Side, ref_price: float, qty_base: float, top_qty_base: float) -> float:
        """The execution price."""
        return ref_price * (1.0 + side.sign * self.bps * 1e-4)


@dataclass(frozen=True, slots=True)
class BookDepthSlippage:
    """Linear impact in units of the visible top-of-book size:

    ``bps = base_bps + impact_bps_per_top × qty / top_qty`` (capped at ``max_bps``),
    ``price = ref × (1 + side × bps / 1e4)``. ``impact_bps_per_top`` is the cost of taking
    one more "top's worth" of size beyond the best level — a modelling assumption
    (square-root or book-walk models need full depth, which bookTicker data lacks). With
    the top size unknown (NaN or 0) the cap applies.
    """

    base_bps: float = 0.0
    impact_bps_per_top: float = 5.0
    max_bps: float = 50.0

    def price(self, side: Side, ref_price: float, qty_base: float, top_qty_base: float) -> float:
        """The execution price."""
        if not top_qty_base > 0 or math.isnan(top_qty_base):
            bps = self.max_bps
        else:
            bps = min(
                self.max_bps, self.base_bps + self.impact_bps_per_top * qty_base / top_qty_base
            )
        return ref_price * (1.0 + side.sign * bps * 1e-4)


class LatencyModel(Protocol):
    """Nanoseconds between a decision at ``ts_ns`` and the order's arrival at the venue."""

    def arrival_ns(self, ts_ns: int) -> int:
        """Arrival time of an order decided at ``ts_ns``."""
        ...


@dataclass(frozen=True, slots=True)
class ConstantLatency:
    """A fixed decision-to-arrival delay (ns). The order is inert until it arrives; a
    cancel travels with the same delay."""

    latency_ns: int = 0

    def __post_init__(self) -> None:
        if self.latency_ns < 0:
            raise ValueError(f"latency_ns {self.latency_ns} must be >= 0")

    def arrival_ns(self, ts_ns: int) -> int:
        """``ts_ns + latency_ns``."""
        return ts_ns + self.latency_ns


@dataclass(frozen=True, slots=True)
class Costs:
    """The three cost models of a run. Default: Binance VIP0 fees, no slippage, no latency."""

    fees: FeeModel = field(default_factory=FeeModel)
    slippage: SlippageModel = field(default_factory=FixedBpsSlippage)
    latency: LatencyModel = field(default_factory=ConstantLatency)

    @classmethod
    def frictionless(cls) -> Costs:
        """Zero fees, zero slippage, zero latency."""
        return cls(fees=FeeModel.zero())
