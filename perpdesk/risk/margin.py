"""Tiered maintenance margin and liquidation price of Binance USDⓈ-M perpetuals (pure, Decimal).

Sources:

- Binance, "Leverage and Margin of USDⓈ-M Futures" (support FAQ 360033162192) and the
  trading-rules page: ``Maintenance Margin = Notional Position Value × Maintenance Margin
  Rate − Maintenance Amount``; ``Maintenance Amount on level n = Floor of level n ×
  (MMR_n − MMR_{n−1}) + Maintenance Amount on level n−1``. The API serves the table as
  ``GET /fapi/v1/leverageBracket`` (fields ``notionalFloor``, ``notionalCap``,
  ``initialLeverage``, ``maintMarginRatio``, ``cum``).
- Binance, "How to Calculate Liquidation Price of USDⓈ-M Futures Contracts" (support FAQ
  b3c689c1f50a44cabb3a84e663b81d93), cross margin, one-way and hedge mode::

      LP = (WB − TMM1 + UPNL1 + cumB + cumL + cumS
            − Side1BOTH×Position1BOTH×EP1BOTH − Position1LONG×EP1LONG + Position1SHORT×EP1SHORT)
           / (Position1BOTH×MMR_B + Position1LONG×MMR_L + Position1SHORT×MMR_S
              − Side1BOTH×Position1BOTH − Position1LONG + Position1SHORT)

  WB is the (cross) wallet balance, TMM1 and UPNL1 the maintenance margin and unrealised
  PnL of every *other* contract; in isolated mode WB is the position's isolated wallet and
  TMM1 = UPNL1 = 0. Positions are absolute sizes, Side1BOTH is +1 long / −1 short. The FAQ
  adds: if the bracket at the liquidation price differs from the one at the current
  notional, recompute with the MMR and cum of the bracket at the liquidation price —
  :func:`liquidation_price` does exactly that, iteratively.

Money is ``Decimal``; amounts are USD (USDT), quantities base units, rates fractions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from perpdesk.errors import PerpdeskError

__all__ = [
    "BINANCE_BTCUSDT_BRACKETS",
    "Bracket",
    "MarginError",
    "bracket_for",
    "brackets_from_binance",
    "brackets_from_ccxt",
    "brackets_from_records",
    "initial_margin",
    "liquidation_price",
    "liquidation_price_at_brackets",
    "maintenance_margin",
    "validate_brackets",
]

ZERO = Decimal(0)
ONE = Decimal(1)
CUM_TOLERANCE_USD = Decimal("0.000001")
"""Allowed gap between a table's ``cum`` and the value implied by its floors and rates (the
exchange serves ``cum`` as a JSON float, which can carry binary noise)."""


class MarginError(PerpdeskError):
    """A bracket table or a margin input breaks a rule (names the table/row and the rule)."""


@dataclass(frozen=True, slots=True)
class Bracket:
    """One notional tier: positions with ``notional_floor_usd < notional ≤ notional_cap_usd``
    use ``maint_margin_rate`` (fraction) and ``maint_amount_usd`` (Binance's ``cum``) and may
    be opened with at most ``max_leverage``."""

    notional_floor_usd: Decimal
    notional_cap_usd: Decimal
    max_leverage: int
    maint_margin_rate: Decimal
    maint_amount_usd: Decimal


def _dec(x: Any, where: str) -> Decimal:
    if isinstance(x, Decimal):
        d = x
    elif isinstance(x, float):
        d = Decimal(repr(x))
    elif isinstance(x, int | str):
        try:
            d = Decimal(x)
        except InvalidOperation:
            raise MarginError(f"{where}: {x!r} is not a number") from None
    else:
        raise MarginError(f"{where}: {x!r} is not a number")
    if not d.is_finite():
        raise MarginError(f"{where}: {x!r} is not a finite number")
    return d


def validate_brackets(
    brackets: Iterable[Bracket], *, name: str = "brackets"
) -> tuple[Bracket, ...]:
    """Check a bracket table and return it as a tuple.

    Rules: at least one bracket; the first starts at 0 with ``maint_amount_usd`` 0; each
    floor equals the previous cap (contiguous) and each cap is above its floor; maintenance
    rates strictly increase and lie in (0, 1); max leverage is ≥ 1 and never increases;
    ``cum_i = cum_{i−1} + floor_i × (mmr_i − mmr_{i−1})`` within ``CUM_TOLERANCE_USD``
    (Binance's maintenance-amount formula; it makes the maintenance margin continuous in
    the notional). Raises :class:`MarginError` naming ``name``, the bracket number and
    the rule.
    """
    out = tuple(brackets)
    if not out:
        raise MarginError(f"{name}: empty bracket table")
    prev: Bracket | None = None
    for i, b in enumerate(out, start=1):
        where = f"{name} bracket {i}"
        if not isinstance(b, Bracket):
            raise MarginError(f"{where}: not a Bracket ({type(b).__name__})")
        if b.notional_cap_usd <= b.notional_floor_usd:
            raise MarginError(
                f"{where}: cap {b.notional_cap_usd} is not above floor {b.notional_floor_usd}"
            )
        if not ZERO < b.maint_margin_rate < ONE:
            raise MarginError(f"{where}: maintenance rate {b.maint_margin_rate} not in (0, 1)")
        if b.max_leverage < 1:
            raise MarginError(f"{where}: max leverage {b.max_leverage} below 1")
        if prev is None:
            if b.notional_floor_usd != ZERO:
                raise MarginError(f"{where}: first floor {b.notional_floor_usd} is not 0")
            if b.maint_amount_usd != ZERO:
                raise MarginError(f"{where}: first maintenance amount {b.maint_amount_usd} != 0")
        else:
            if b.notional_floor_usd != prev.notional_cap_usd:
                raise MarginError(
                    f"{where}: floor {b.notional_floor_usd} != previous cap {prev.notional_cap_usd}"
                )
            if b.maint_margin_rate <= prev.maint_margin_rate:
                raise MarginError(
                    f"{where}: maintenance rate {b.maint_margin_rate} does not increase"
                )
            if b.max_leverage > prev.max_leverage:
                raise MarginError(f"{where}: max leverage {b.max_leverage} increases")
            want = prev.maint_amount_usd + b.notional_floor_usd * (
                b.maint_margin_rate - prev.maint_margin_rate
            )
            if abs(b.maint_amount_usd - want) > CUM_TOLERANCE_USD:
                raise MarginError(
                    f"{where}: maintenance amount {b.maint_amount_usd} != {want} "
                    "(previous cum + floor × rate step)"
                )
        prev = b
    return out


def _bracket(floor: Any, cap: Any, lev: Any, mmr: Any, cum: Any, where: str) -> Bracket:
    lev_d = _dec(lev, f"{where} max leverage")
    if lev_d != lev_d.to_integral_value():
        raise MarginError(f"{where}: max leverage {lev!r} is not an integer")
    return Bracket(
        notional_floor_usd=_dec(floor, f"{where} floor"),
        notional_cap_usd=_dec(cap, f"{where} cap"),
        max_leverage=int(lev_d),
        maint_margin_rate=_dec(mmr, f"{where} maintenance rate"),
        maint_amount_usd=_dec(cum, f"{where} maintenance amount"),
    )


def _get(row: Mapping[str, Any], key: str, where: str) -> Any:
    if not isinstance(row, Mapping):
        raise MarginError(f"{where}: expected an object, got {type(row).__name__}")
    if key not in row or row[key] is None:
        raise MarginError(f"{where}: missing key {key!r}")
    return row[key]


# Recorded GET /fapi/v1/leverageBracket?symbol=BTCUSDT response (as saved in the public
# repository boolean404/heikin-ashi-trading-bot, json/fapiPrivate_get_leverage_bracket.py;
# the same 10 tiers Binance announced for BTCUSDT in "Updates to Leverage and Margin Tiers
# of Binance Futures Contracts"). Binance revises tiers over time: load the live table
# with brackets_from_binance / brackets_from_ccxt for current figures.
_BTCUSDT_ROWS = (
    # floor, cap, max leverage, maintMarginRatio, cum
    ("0", "50000", 125, "0.004", "0"),
    ("50000", "250000", 100, "0.005", "50"),
    ("250000", "3000000", 50, "0.01", "1300"),
    ("3000000", "20000000", 20, "0.025", "46300"),
    ("20000000", "40000000", 10, "0.05", "546300"),
    ("40000000", "100000000", 5, "0.1", "2546300"),
    ("100000000", "120000000", 4, "0.125", "5046300"),
    ("120000000", "200000000", 3, "0.15", "8046300"),
    ("200000000", "300000000", 2, "0.25", "28046300"),
    ("300000000", "500000000", 1, "0.5", "103046300"),
)

BINANCE_BTCUSDT_BRACKETS: tuple[Bracket, ...] = validate_brackets(
    (
        _bracket(f, c, lev, m, cum, f"BTCUSDT bracket {i}")
        for i, (f, c, lev, m, cum) in enumerate(_BTCUSDT_ROWS, start=1)
    ),
    name="BINANCE_BTCUSDT_BRACKETS",
)
"""Default Binance USD-M BTCUSDT maintenance-margin table (10 tiers, 0.4 % … 50 %)."""


def brackets_from_records(
    records: Sequence[Mapping[str, Any]], *, name: str = "brackets"
) -> tuple[Bracket, ...]:
    """Brackets from rows with perpdesk's field names (``notional_floor_usd``,
    ``notional_cap_usd``, ``max_leverage``, ``maint_margin_rate``, ``maint_amount_usd``),
    e.g. a config table. Values may be numbers or numeric strings; validated."""
    out = []
    for i, row in enumerate(records, start=1):
        where = f"{name} row {i}"
        out.append(
            _bracket(
                _get(row, "notional_floor_usd", where),
                _get(row, "notional_cap_usd", where),
                _get(row, "max_leverage", where),
                _get(row, "maint_margin_rate", where),
                _get(row, "maint_amount_usd", where),
                where,
            )
        )
    return validate_brackets(out, name=name)


def brackets_from_binance(
    payload: Mapping[str, Any] | Sequence[Mapping[str, Any]], *, source: str = "leverageBracket"
) -> dict[str, tuple[Bracket, ...]]:
    """Brackets per symbol from a Binance ``GET /fapi/v1/leverageBracket`` response (a list
    of ``{"symbol", "brackets": [...]}`` or one such object when a symbol was sent).
    ``notionalCoef`` is ignored: the brackets served are already the account's own.
    Errors name ``source``, the symbol and the bracket."""
    items = [payload] if isinstance(payload, Mapping) else list(payload)
    out: dict[str, tuple[Bracket, ...]] = {}
    for k, item in enumerate(items):
        symbol = str(_get(item, "symbol", f"{source} item {k}"))
        rows = _get(item, "brackets", f"{source} {symbol}")
        bs = []
        for i, row in enumerate(rows, start=1):
            where = f"{source} {symbol} bracket {i}"
            bs.append(
                _bracket(
                    _get(row, "notionalFloor", where),
                    _get(row, "notionalCap", where),
                    _get(row, "initialLeverage", where),
                    _get(row, "maintMarginRatio", where),
                    _get(row, "cum", where),
                    where,
                )
            )
        out[symbol] = validate_brackets(bs, name=f"{source} {symbol}")
    return out


def brackets_from_ccxt(
    tiers: Mapping[str, Sequence[Mapping[str, Any]]] | Sequence[Mapping[str, Any]],
    *,
    source: str = "ccxt leverage tiers",
) -> dict[str, tuple[Bracket, ...]]:
    """Brackets per symbol from ccxt's ``fetch_leverage_tiers()`` (``{symbol: [tier, ...]}``)
    or ``fetch_market_leverage_tiers()`` (one list; keyed by the tiers' ``symbol``).

    ccxt's unified tier (``minNotional``, ``maxNotional``, ``maintenanceMarginRate``,
    ``maxLeverage``) has no maintenance amount: it is taken from ``info["cum"]`` (Binance)
    when present, else derived from the floors and rates with Binance's formula (see
    :func:`validate_brackets`). Keys are ccxt's unified symbols (``BTC/USDT:USDT``)."""
    if isinstance(tiers, Mapping):
        groups = {str(k): list(v) for k, v in tiers.items()}
    else:
        groups = {}
        for k, t in enumerate(tiers):
            groups.setdefault(str(_get(t, "symbol", f"{source} tier {k}")), []).append(t)
    out: dict[str, tuple[Bracket, ...]] = {}
    for symbol, rows in groups.items():
        bs: list[Bracket] = []
        for i, row in enumerate(rows, start=1):
            where = f"{source} {symbol} tier {i}"
            info = row.get("info") if isinstance(row, Mapping) else None
            floor = _dec(_get(row, "minNotional", where), f"{where} minNotional")
            mmr = _dec(_get(row, "maintenanceMarginRate", where), f"{where} maintenanceMarginRate")
            if isinstance(info, Mapping) and info.get("cum") is not None:
                cum = _dec(info["cum"], f"{where} info.cum")
            elif bs:
                prev = bs[-1]
                cum = prev.maint_amount_usd + floor * (mmr - prev.maint_margin_rate)
            else:
                cum = ZERO
            bs.append(
                _bracket(
                    floor,
                    _get(row, "maxNotional", where),
                    _get(row, "maxLeverage", where),
                    mmr,
                    cum,
                    where,
                )
            )
        out[symbol] = validate_brackets(bs, name=f"{source} {symbol}")
    return out


def bracket_for(notional_usd: Decimal, brackets: Sequence[Bracket]) -> Bracket:
    """The bracket whose range ``(floor, cap]`` holds ``|notional_usd|`` (Binance writes
    tiers as ``floor < Position ≤ cap``); 0 falls in the first, a notional above the last
    cap is charged at the last tier (the exchange would not let it open)."""
    n = abs(notional_usd)
    for b in brackets:
        if n <= b.notional_cap_usd:
            return b
    return brackets[-1]


def maintenance_margin(notional_usd: Decimal, brackets: Sequence[Bracket]) -> Decimal:
    """Maintenance margin in USD of a position of ``|notional_usd|`` (mark × size):
    ``notional × MMR − cum`` of the bracket that holds the notional (Binance, "Leverage and
    Margin of USDⓈ-M Futures"). Continuous and convex in the notional for a valid table."""
    n = abs(notional_usd)
    if n == ZERO:
        return ZERO
    b = bracket_for(n, brackets)
    return n * b.maint_margin_rate - b.maint_amount_usd


def initial_margin(notional_usd: Decimal, leverage: int) -> Decimal:
    """Initial margin in USD: ``|notional| / leverage`` (Binance: Initial Margin = Notional
    Position Value / Leverage Level)."""
    if leverage < 1:
        raise MarginError(f"leverage {leverage} below 1")
    return abs(notional_usd) / Decimal(leverage)


def liquidation_price_at_brackets(
    *,
    wallet_balance_usd: Decimal,
    other_maint_margin_usd: Decimal = ZERO,
    other_upnl_usd: Decimal = ZERO,
    both_qty_base: Decimal = ZERO,
    both_entry_price: Decimal = ZERO,
    both_bracket: Bracket | None = None,
    long_qty_base: Decimal = ZERO,
    long_entry_price: Decimal = ZERO,
    long_bracket: Bracket | None = None,
    short_qty_base: Decimal = ZERO,
    short_entry_price: Decimal = ZERO,
    short_bracket: Bracket | None = None,
) -> Decimal | None:
    """Binance's published USDⓈ-M liquidation-price formula (module docstring) evaluated
    with the given bracket (MMR, cum) per leg — one step, no tier search.

    ``both_qty_base`` is signed (+ long, − short; one-way mode); ``long_qty_base`` and
    ``short_qty_base`` are the hedge-mode sizes (≥ 0). A leg with zero size drops out (its
    bracket may be ``None``). Returns ``None`` when the denominator is 0 (margin does not
    depend on price at these tiers). The result may be ≤ 0."""
    if long_qty_base < ZERO or short_qty_base < ZERO:
        raise MarginError("hedge-mode sizes long_qty_base/short_qty_base must be ≥ 0")
    num = wallet_balance_usd - other_maint_margin_usd + other_upnl_usd
    den = ZERO
    if both_qty_base != ZERO:
        if both_bracket is None:
            raise MarginError("both_bracket is required for a non-zero BOTH position")
        side = ONE if both_qty_base > ZERO else -ONE
        q = abs(both_qty_base)
        num += both_bracket.maint_amount_usd - side * q * both_entry_price
        den += q * both_bracket.maint_margin_rate - side * q
    if long_qty_base != ZERO:
        if long_bracket is None:
            raise MarginError("long_bracket is required for a non-zero LONG position")
        num += long_bracket.maint_amount_usd - long_qty_base * long_entry_price
        den += long_qty_base * long_bracket.maint_margin_rate - long_qty_base
    if short_qty_base != ZERO:
        if short_bracket is None:
            raise MarginError("short_bracket is required for a non-zero SHORT position")
        num += short_bracket.maint_amount_usd + short_qty_base * short_entry_price
        den += short_qty_base * short_bracket.maint_margin_rate + short_qty_base
    if den == ZERO:
        return None
    return num / den


def liquidation_price(
    brackets: Sequence[Bracket],
    *,
    wallet_balance_usd: Decimal,
    other_maint_margin_usd: Decimal = ZERO,
    other_upnl_usd: Decimal = ZERO,
    both_qty_base: Decimal = ZERO,
    both_entry_price: Decimal = ZERO,
    long_qty_base: Decimal = ZERO,
    long_entry_price: Decimal = ZERO,
    short_qty_base: Decimal = ZERO,
    short_entry_price: Decimal = ZERO,
    start_price: Decimal | None = None,
) -> Decimal | None:
    """Liquidation price (USD) of one symbol's position(s) by Binance's USDⓈ-M formula,
    with each leg's MMR and cum taken from the bracket that holds the leg's notional *at the
    liquidation price* (the FAQ's "recalculate at the liquidation price's level").

    Inputs as in :func:`liquidation_price_at_brackets`; cross margin passes the cross
    wallet balance and the other symbols' maintenance margin and unrealised PnL, isolated
    margin passes the position's isolated wallet and zeros. ``start_price`` (e.g. the mark;
    default the entry price of the first non-zero leg) picks the first tiers.

    Returns ``None`` when no positive price liquidates the position (a long whose margin
    covers a fall to 0, or no position), ``Decimal(0)`` when every positive price does (a
    short already below maintenance at any price). Otherwise the margin balance equals the
    maintenance margin at the returned price: a long (or net-long hedge) is liquidated
    below it, a short above it.

    Algorithm: ``P ← formula(tiers at |q|·start)``; then repeat ``P ← formula(tiers at
    |q|·max(P, 0))`` until the tiers repeat. At most ``Σ len(brackets) + 1`` steps.

    Why it terminates at the right answer. Let ``f(P) = WB − TMM1 + UPNL1 + Σ side·q·(P −
    EP) − Σ MM(q·P)`` (margin balance minus maintenance margin as a function of the mark).
    With a valid table (:func:`validate_brackets`: rates increase, cum continuous), each
    leg's ``MM(N) = N·mmr_k − cum_k`` on tier k and the lines of all tiers lie below it:
    ``MM(N) = max_k (N·mmr_k − cum_k)`` (a continuous piecewise-linear function with
    increasing slopes is the maximum of its pieces). So the linear function ``g_c`` built
    from any tier combination ``c`` satisfies ``g_c ≥ f`` everywhere, with equality on the
    prices whose notionals fall in ``c``; the formula returns the root of ``g_c``, whose
    slope is ``−den``. ``f`` is concave (slopes only fall as tiers rise).

    *One direction (one-way, isolated, or a single hedge leg).* Long: ``f`` increases
    (slope ``q(1 − mmr) > 0``, mmr < 1), so it has one root ``P*``. Every ``g_c`` also
    increases and ``g_c(P*) ≥ f(P*) = 0``, so every iterate is ``≤ P*``. For the step
    after ``P_n``, ``c`` holds ``P_n``'s tiers, so ``g_c(P_n) = f(P_n) ≤ 0`` and the new
    root is ``≥ P_n``: the iterates rise monotonically, hence their tiers never fall. If the
    tiers repeat, ``P_{n+1}`` is a root of ``g_c`` lying in ``c``, i.e. a root of ``f``:
    ``P*``. Otherwise some tier index rose, which can happen at most ``len(brackets) − 1``
    times. Short: mirror image (``f`` decreases, iterates fall to ``P*``).

    *Hedge mode with both legs.* ``f`` is concave, so ``{f ≥ 0}`` is an interval
    ``[P_lo, P_hi]``. The first step's slope decides the side: if ``den < 0`` (net long at
    the start tiers) the root of ``g_c ≥ f`` lies at or below ``P_lo``; at every later
    iterate ``P ≤ P_lo`` concavity keeps the slope ≥ that at ``P_lo`` (> 0), so the argument
    above applies and the iteration converges to ``P_lo`` (the price at which falling
    marks liquidate); symmetrically to ``P_hi`` when ``den > 0``. Both legs' tier indices are
    monotone in ``P``, which bounds the steps by ``Σ len(brackets)``. If ``f < 0`` at every
    price the bound still stops the loop and the last iterate is returned (any price is a
    liquidation price then).
    """
    legs: list[tuple[str, Decimal, Decimal]] = [
        ("both", abs(both_qty_base), both_entry_price),
        ("long", long_qty_base, long_entry_price),
        ("short", short_qty_base, short_entry_price),
    ]
    active = [(n, q, ep) for n, q, ep in legs if q != ZERO]
    if not active:
        return None
    p = start_price if start_price is not None else active[0][2]

    def tiers_at(price: Decimal) -> dict[str, Bracket]:
        px = price if price > ZERO else ZERO
        return {n: bracket_for(q * px, brackets) for n, q, _ in active}

    combo = tiers_at(p)
    result: Decimal | None = None
    den_sign = 0
    for _ in range(len(brackets) * len(active) + 2):
        result = liquidation_price_at_brackets(
            wallet_balance_usd=wallet_balance_usd,
            other_maint_margin_usd=other_maint_margin_usd,
            other_upnl_usd=other_upnl_usd,
            both_qty_base=both_qty_base,
            both_entry_price=both_entry_price,
            both_bracket=combo.get("both"),
            long_qty_base=long_qty_base,
            long_entry_price=long_entry_price,
            long_bracket=combo.get("long"),
            short_qty_base=short_qty_base,
            short_entry_price=short_entry_price,
            short_bracket=combo.get("short"),
        )
        if result is None:
            return None
        # sign of den = sign of (f falls as price rises): recomputed from the tiers used
        den_sign = _den_sign(combo, both_qty_base, long_qty_base, short_qty_base)
        nxt = tiers_at(result)
        if nxt == combo:
            break
        combo = nxt
    assert result is not None
    if result <= ZERO:
        return None if den_sign < 0 else ZERO
    return result


def _den_sign(
    combo: Mapping[str, Bracket], both_q: Decimal, long_q: Decimal, short_q: Decimal
) -> int:
    den = ZERO
    if both_q != ZERO:
        side = ONE if both_q > ZERO else -ONE
        den += abs(both_q) * (combo["both"].maint_margin_rate - side)
    if long_q != ZERO:
        den += long_q * (combo["long"].maint_margin_rate - ONE)
    if short_q != ZERO:
        den += short_q * (combo["short"].maint_margin_rate + ONE)
    return (den > ZERO) - (den < ZERO)
