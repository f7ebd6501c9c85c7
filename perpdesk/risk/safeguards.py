"""Pre-trade safeguards: pure functions called at submit time, before any venue sees an order.

``check_order(order, state, limits) -> Decision`` is the single gate. Every venue (simulated,
paper, live) goes through it; it has no I/O, no clock and no hidden state, so a test can drive
it with any sequence of requests.

Exposure is measured in **gross USD notional** (``|signed notional|``), the conservative
reading of the issue's rules (after cryptarch's ``safeguards.py``):

* a position is the signed notional one layer holds in one symbol, ``positions[(layer, symbol)]``
  (positive long, negative short; a spot leg is its own symbol, e.g. ``BTCUSDT:SPOT``);
* the single-position cap applies to a symbol's gross notional over all layers,
  ``Σ_layers |pos(l, s)| ≤ max_position_pct × bankroll / 100``;
* total deployed is ``Σ_(l,s) |pos(l, s)| ≤ max_deployed_pct × bankroll / 100``;
* a layer's exposure is ``Σ_s |pos(l, s)| ≤ layer_allocation_pct[l] × bankroll / 100``;
* the minimum position: an order that is not reduce-only must leave its position at 0 or at
  ``|pos| ≥ min_position_pct × bankroll / 100`` (no dust positions).

Boundaries: every cap is inclusive — a position of exactly 25 % of bankroll passes, one cent
more fails; a position of exactly the minimum passes. The daily-loss halt triggers when the
day's PnL is **at or below** ``-max_daily_loss_pct × bankroll / 100`` (reaching the limit halts).

Halted (kill switch on, or daily loss reached): only reduce-only orders pass, and a
reduce-only order must really reduce — opposite side to its own (layer, symbol) position and
no larger than it, so it can never open or flip a position. Reduce-only orders are exempt
from the caps and the minimum (reducing gross exposure can only lower every sum above).

Every live order, reduce-only included, needs ``enable_live_orders`` AND its layer in
``live_layers`` (so keep a layer live until it is flat); a paper or simulated order
(``live=False``) never reaches a real venue, so it needs neither.

Orders in flight count: the caller must pass a state whose positions include its working
(submitted, unfilled) orders as if filled — :func:`apply_order` does exactly that — so two
quick submits cannot together exceed a cap. Every checked-and-accepted client order id is
added to ``seen_client_order_ids`` by :func:`apply_order`; a duplicate id is rejected.

Amounts are ``Decimal`` (floats are converted with their shortest repr), so the boundaries
are exact: ``bankroll × pct / 100`` with pct = 25 and bankroll = 100,000 is exactly 25,000.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Protocol

from perpdesk.domain.orders import Side

__all__ = [
    "Decision",
    "Limits",
    "OrderRequest",
    "PortfolioState",
    "RiskSection",
    "apply_order",
    "check_order",
    "flatten_orders",
]

_HUNDRED = Decimal(100)


def _dec(x: Decimal | int | float | str, what: str) -> Decimal:
    """Exact ``Decimal`` of ``x`` (a float by its shortest repr); refuses NaN/inf and bools."""
    if isinstance(x, bool):
        raise ValueError(f"{what} = {x!r}: must be a number, not a bool")
    if isinstance(x, Decimal):
        d = x
    elif isinstance(x, int):
        d = Decimal(x)
    elif isinstance(x, float):
        if not math.isfinite(x):
            raise ValueError(f"{what} = {x!r}: must be finite")
        d = Decimal(repr(x))
    elif isinstance(x, str):
        d = Decimal(x)
    else:
        raise ValueError(f"{what} = {x!r}: must be a number")
    if not d.is_finite():
        raise ValueError(f"{what} = {x!r}: must be finite")
    return d


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """An order as the safeguards see it.

    ``notional_usd`` is the order's size in USD at the reference price (> 0; the side gives
    the sign). ``live=True`` means it is meant for a real exchange account.
    """

    layer: str
    symbol: str
    side: Side
    notional_usd: Decimal
    client_order_id: str
    reduce_only: bool = False
    live: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "notional_usd", _dec(self.notional_usd, f"order {self.client_order_id} notional")
        )
        object.__setattr__(self, "side", Side(self.side))

    @property
    def signed_notional_usd(self) -> Decimal:
        """``+notional`` for a buy, ``-notional`` for a sell."""
        return self.notional_usd if self.side is Side.BUY else -self.notional_usd


@dataclass(frozen=True, slots=True)
class PortfolioState:
    """What the book looks like at submit time.

    ``bankroll_usd`` scales every cap. ``positions_usd`` maps ``(layer, symbol)`` to signed
    notional USD (working orders included, see the module doc). ``daily_pnl_usd`` is the PnL
    since 00:00 UTC (realised + unrealised + funding − fees). ``kill_switch`` halts trading
    except reduce-only orders. ``seen_client_order_ids`` holds every id already submitted.
    ``disabled_layers`` (``perpdesk layer disable NAME``) may only reduce: their opening
    orders are rejected, their reduce-only exits pass.
    """

    bankroll_usd: Decimal
    positions_usd: Mapping[tuple[str, str], Decimal] = field(default_factory=dict)
    daily_pnl_usd: Decimal = Decimal(0)
    kill_switch: bool = False
    seen_client_order_ids: frozenset[str] = frozenset()
    disabled_layers: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        object.__setattr__(self, "bankroll_usd", _dec(self.bankroll_usd, "state bankroll_usd"))
        object.__setattr__(self, "daily_pnl_usd", _dec(self.daily_pnl_usd, "state daily_pnl_usd"))
        pos = {
            (str(k[0]), str(k[1])): _dec(v, f"state position {k}")
            for k, v in self.positions_usd.items()
        }
        object.__setattr__(self, "positions_usd", MappingProxyType(pos))
        object.__setattr__(self, "seen_client_order_ids", frozenset(self.seen_client_order_ids))
        object.__setattr__(self, "disabled_layers", frozenset(self.disabled_layers))

    def position_usd(self, layer: str, symbol: str) -> Decimal:
        """Signed notional of ``layer`` in ``symbol`` (0 when flat)."""
        return self.positions_usd.get((layer, symbol), Decimal(0))

    def symbol_gross_usd(self, symbol: str) -> Decimal:
        """``Σ_layers |pos(l, symbol)|``."""
        return sum((abs(v) for (_, s), v in self.positions_usd.items() if s == symbol), Decimal(0))

    def layer_gross_usd(self, layer: str) -> Decimal:
        """``Σ_symbols |pos(layer, s)|``."""
        return sum(
            (abs(v) for (lay, _), v in self.positions_usd.items() if lay == layer), Decimal(0)
        )

    def deployed_usd(self) -> Decimal:
        """``Σ |pos|`` over every (layer, symbol)."""
        return sum((abs(v) for v in self.positions_usd.values()), Decimal(0))


class RiskSection(Protocol):
    """The shape of ``perpdesk.config.RiskSettings`` (risk may not import config)."""

    enable_live_orders: bool
    live_layers: tuple[str, ...]
    max_position_pct: float
    max_deployed_pct: float
    min_position_pct: float
    max_daily_loss_pct: float
    layer_allocation_pct: Any


@dataclass(frozen=True, slots=True)
class Limits:
    """The caps, in % of bankroll (config ``[risk]``). A layer missing from
    ``layer_allocation_pct`` is unknown and every order of it is rejected."""

    enable_live_orders: bool = False
    live_layers: frozenset[str] = frozenset()
    max_position_pct: Decimal = Decimal(25)
    max_deployed_pct: Decimal = Decimal(50)
    min_position_pct: Decimal = Decimal(1)
    max_daily_loss_pct: Decimal = Decimal(5)
    layer_allocation_pct: Mapping[str, Decimal] = field(
        default_factory=lambda: MappingProxyType({"carry": Decimal(50)})
    )

    def __post_init__(self) -> None:
        for name in ("max_position_pct", "max_deployed_pct", "min_position_pct"):
            object.__setattr__(self, name, _dec(getattr(self, name), f"limits {name}"))
        object.__setattr__(
            self, "max_daily_loss_pct", _dec(self.max_daily_loss_pct, "limits max_daily_loss_pct")
        )
        alloc = {
            str(k): _dec(v, f"limits layer_allocation_pct[{k}]")
            for k, v in self.layer_allocation_pct.items()
        }
        object.__setattr__(self, "layer_allocation_pct", MappingProxyType(alloc))
        object.__setattr__(self, "live_layers", frozenset(self.live_layers))

    @classmethod
    def from_config(cls, risk: RiskSection) -> Limits:
        """Build from ``settings.risk`` (floats become their shortest exact decimal)."""
        alloc = risk.layer_allocation_pct
        alloc_map = alloc.model_dump() if hasattr(alloc, "model_dump") else dict(alloc)
        return cls(
            enable_live_orders=bool(risk.enable_live_orders),
            live_layers=frozenset(risk.live_layers),
            max_position_pct=_dec(risk.max_position_pct, "risk.max_position_pct"),
            max_deployed_pct=_dec(risk.max_deployed_pct, "risk.max_deployed_pct"),
            min_position_pct=_dec(risk.min_position_pct, "risk.min_position_pct"),
            max_daily_loss_pct=_dec(risk.max_daily_loss_pct, "risk.max_daily_loss_pct"),
            layer_allocation_pct={
                k: _dec(v, f"risk.layer_allocation_pct.{k}") for k, v in alloc_map.items()
            },
        )


@dataclass(frozen=True, slots=True)
class Decision:
    """The verdict. ``rule`` names the first rule broken (``""`` when ``ok``); ``reason`` is
    one line with the numbers."""

    ok: bool
    reason: str = ""
    rule: str = ""


_OK = Decision(True, "ok", "")


def _no(rule: str, reason: str) -> Decision:
    return Decision(False, reason, rule)


def _pct_of(bankroll: Decimal, pct: Decimal) -> Decimal:
    return bankroll * pct / _HUNDRED


def is_halted(state: PortfolioState, limits: Limits) -> tuple[bool, str]:
    """``(True, why)`` when the kill switch is on or the day's loss reached the limit
    (``daily_pnl_usd ≤ -max_daily_loss_pct × bankroll / 100``)."""
    if state.kill_switch:
        return True, "kill switch on"
    loss_cap = _pct_of(state.bankroll_usd, limits.max_daily_loss_pct)
    if state.daily_pnl_usd <= -loss_cap:
        return True, (
            f"daily PnL {state.daily_pnl_usd} USD reached the loss limit -{loss_cap} USD "
            f"({limits.max_daily_loss_pct}% of bankroll)"
        )
    return False, ""


def check_order(order: OrderRequest, state: PortfolioState, limits: Limits) -> Decision:
    """Accept or reject ``order`` given ``state`` and ``limits`` (rules in the module doc).

    Rules, in the order they are checked (``Decision.rule``): ``invalid``, ``duplicate_id``,
    ``unknown_layer``, ``live_disabled``, ``layer_not_live``, ``reduce_only`` (halted and
    the order is not reduce-only / a reduce-only order that would not reduce),
    ``layer_disabled``, ``max_position``, ``max_deployed``, ``layer_allocation``, ``min_position``.
    """
    cid = order.client_order_id
    if not cid or not cid.strip():
        return _no("invalid", "client_order_id is empty")
    if not order.layer or not order.symbol:
        return _no("invalid", f"order {cid}: layer and symbol must be set")
    if not order.notional_usd > 0:
        return _no("invalid", f"order {cid}: notional_usd {order.notional_usd} must be > 0")
    if not state.bankroll_usd > 0:
        return _no("invalid", f"order {cid}: bankroll {state.bankroll_usd} USD must be > 0")
    if cid in state.seen_client_order_ids:
        return _no("duplicate_id", f"order {cid}: client_order_id already used")
    if order.layer not in limits.layer_allocation_pct:
        known = ", ".join(sorted(limits.layer_allocation_pct))
        return _no("unknown_layer", f"order {cid}: unknown layer {order.layer!r} (known: {known})")
    if order.live and not limits.enable_live_orders:
        return _no("live_disabled", f"order {cid}: live order but enable_live_orders is false")
    if order.live and order.layer not in limits.live_layers:
        return _no(
            "layer_not_live", f"order {cid}: live order but layer {order.layer!r} is not live"
        )

    pos = state.position_usd(order.layer, order.symbol)
    delta = order.signed_notional_usd
    if order.reduce_only:
        # Must shrink |pos| without crossing zero: opposite sign and no larger.
        if pos == 0 or (pos > 0) == (delta > 0) or order.notional_usd > abs(pos):
            return _no(
                "reduce_only",
                f"order {cid}: reduce-only {order.side} {order.notional_usd} USD would not reduce "
                f"{order.layer}/{order.symbol} position {pos} USD",
            )
        return _OK

    halted, why = is_halted(state, limits)
    if halted:
        return _no("reduce_only", f"order {cid}: halted ({why}); only reduce-only orders pass")
    if order.layer in state.disabled_layers:
        return _no(
            "layer_disabled",
            f"order {cid}: layer {order.layer!r} is disabled; only reduce-only orders pass",
        )

    bank = state.bankroll_usd
    new_pos = pos + delta
    growth = abs(new_pos) - abs(pos)  # change of gross notional (may be negative)

    sym_after = state.symbol_gross_usd(order.symbol) + growth
    cap = _pct_of(bank, limits.max_position_pct)
    if growth > 0 and sym_after > cap:
        return _no(
            "max_position",
            f"order {cid}: {order.symbol} gross {sym_after} USD > cap {cap} USD "
            f"({limits.max_position_pct}% of {bank})",
        )
    dep_after = state.deployed_usd() + growth
    cap = _pct_of(bank, limits.max_deployed_pct)
    if growth > 0 and dep_after > cap:
        return _no(
            "max_deployed",
            f"order {cid}: deployed {dep_after} USD > cap {cap} USD "
            f"({limits.max_deployed_pct}% of {bank})",
        )
    lay_after = state.layer_gross_usd(order.layer) + growth
    cap = _pct_of(bank, limits.layer_allocation_pct[order.layer])
    if growth > 0 and lay_after > cap:
        return _no(
            "layer_allocation",
            f"order {cid}: layer {order.layer} gross {lay_after} USD > allocation {cap} USD "
            f"({limits.layer_allocation_pct[order.layer]}% of {bank})",
        )
    floor = _pct_of(bank, limits.min_position_pct)
    if new_pos != 0 and abs(new_pos) < floor:
        return _no(
            "min_position",
            f"order {cid}: resulting {order.layer}/{order.symbol} position {new_pos} USD is "
            f"below the minimum {floor} USD ({limits.min_position_pct}% of {bank})",
        )
    return _OK


def apply_order(state: PortfolioState, order: OrderRequest) -> PortfolioState:
    """The state after ``order`` fills completely (or is reserved as a working order):
    its signed notional added to ``(layer, symbol)`` and its id marked as seen. A position
    that reaches exactly 0 is removed. Call only after :func:`check_order` accepted it."""
    key = (order.layer, order.symbol)
    pos = dict(state.positions_usd)
    new = pos.get(key, Decimal(0)) + order.signed_notional_usd
    if new == 0:
        pos.pop(key, None)
    else:
        pos[key] = new
    return PortfolioState(
        bankroll_usd=state.bankroll_usd,
        positions_usd=pos,
        daily_pnl_usd=state.daily_pnl_usd,
        kill_switch=state.kill_switch,
        seen_client_order_ids=state.seen_client_order_ids | {order.client_order_id},
        disabled_layers=state.disabled_layers,
    )


def flatten_orders(
    state: PortfolioState, id_prefix: str, *, live: bool = False, layers: Iterable[str] = ()
) -> list[OrderRequest]:
    """Reduce-only orders that bring every position (of ``layers``, or all when empty) to 0 —
    what the kill switch sends. Ids are ``f"{id_prefix}-{n}"`` (``n`` from 0, sorted by
    layer then symbol); each passes :func:`check_order` even while halted, provided the ids
    are new."""
    wanted = set(layers)
    out: list[OrderRequest] = []
    for n, ((layer, symbol), pos) in enumerate(
        sorted((k, v) for k, v in state.positions_usd.items() if not wanted or k[0] in wanted)
    ):
        if pos == 0:
            continue
        out.append(
            OrderRequest(
                layer=layer,
                symbol=symbol,
                side=Side.SELL if pos > 0 else Side.BUY,
                notional_usd=abs(pos),
                client_order_id=f"{id_prefix}-{n}",
                reduce_only=True,
                live=live,
            )
        )
    return out
