"""Ledger tables (SQLAlchemy 2.0 declarative).

Money, prices and quantities are :class:`Money` — exact ``Decimal`` with at most 18 decimal
places, stored as ``NUMERIC(38, 18)`` on PostgreSQL and as canonical decimal TEXT on SQLite
(SQLite has no decimal type; SQLAlchemy's ``Numeric`` there goes through float). Nothing
here is ever a float. Times are ``BIGINT`` nanoseconds since the Unix epoch (UTC), ``ts_ns``.

Idempotency keys (unique constraints; the :class:`~perpdesk.store.ledger.Ledger` inserts
with ``ON CONFLICT DO NOTHING`` on them):

* ``orders.client_order_id`` — one row per order we ever submitted;
* ``fills (venue, symbol, trade_id)`` — the exchange's trade id (Binance ``id`` of
  ``/fapi/v1/userTrades``, per symbol); the paper venue makes its own stable ids;
* ``funding_payments (venue, symbol, layer, ts_ns)`` — one payment per position per settlement;
* ``transfers.transfer_id``, ``equity_snapshots (mode, ts_ns)``, ``events.dedupe_key``.

The migrations in ``perpdesk/store/migrations`` create exactly these tables (a test compares
them); change both together.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Dialect,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator, TypeEngine

from perpdesk.errors import PerpdeskError

__all__ = [
    "SCALE",
    "Base",
    "EquitySnapshotRow",
    "EventRow",
    "FillRow",
    "FundingPaymentRow",
    "LayerRow",
    "Money",
    "OrderRow",
    "PositionRow",
    "SwitchRow",
    "TransferRow",
    "canonical",
    "decimal_places",
]

SCALE = 18
"""Decimal places kept for money, prices and quantities (NUMERIC(38, 18))."""


def decimal_places(d: Decimal) -> int:
    """Significant decimal places of ``d`` (trailing zeros ignored): 1.50 → 1, 100 → 0."""
    _sign, digits, exp = d.as_tuple()
    assert isinstance(exp, int)
    if not any(digits):
        return 0
    n = len(digits)
    while n > 1 and digits[n - 1] == 0 and exp < 0:
        n -= 1
        exp += 1
    return max(0, -exp)


def canonical(d: Decimal) -> str:
    """Fixed-point text without exponent or trailing zeros, never rounded ("-0" → "0")."""
    t = format(d, "f")
    if "." in t:
        t = t.rstrip("0").rstrip(".")
    return "0" if t in ("-0", "0", "") else t


class Money(TypeDecorator[Decimal]):
    """Exact decimal column: ``NUMERIC(38, 18)`` on PostgreSQL, canonical TEXT on SQLite.

    Binds refuse floats and values with more than 18 decimal places (round to the venue's
    precision first) instead of rounding them silently; reads give ``Decimal``.
    """

    impl = Numeric(38, SCALE)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(64))
        return dialect.type_descriptor(Numeric(38, SCALE, asdecimal=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, Decimal | int):
            raise PerpdeskError(f"ledger: {value!r} is not a Decimal (money is never a float)")
        d = Decimal(value)
        if not d.is_finite():
            raise PerpdeskError(f"ledger: {d} is not a finite amount")
        if decimal_places(d) > SCALE:
            raise PerpdeskError(
                f"ledger: {d} has more than {SCALE} decimal places; round it to the venue's "
                "precision first"
            )
        if d.adjusted() >= 38 - SCALE:
            raise PerpdeskError(f"ledger: {d} is too large for NUMERIC(38, {SCALE})")
        if dialect.name == "sqlite":
            return canonical(d)
        return d

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        # Drop the trailing zeros NUMERIC(38, 18) pads with (exact: no rounding).
        return Decimal(canonical(value if isinstance(value, Decimal) else Decimal(str(value))))


# SQLite only aliases the rowid for "INTEGER PRIMARY KEY"; BIGINT would not autoincrement.
_Id = BigInteger().with_variant(Integer(), "sqlite")

_NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base with a naming convention (stable constraint names for migrations)."""

    metadata = MetaData(naming_convention=_NAMING)


class OrderRow(Base):
    """An order we submitted (any venue, any mode). ``status``: new, open, partially_filled,
    filled, canceled, rejected, expired. ``mode``: sim, paper or live."""

    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(_Id, primary_key=True, autoincrement=True)
    client_order_id: Mapped[str] = mapped_column(String(64), unique=True)
    exchange_order_id: Mapped[str | None] = mapped_column(String(64))
    mode: Mapped[str] = mapped_column(String(8))
    venue: Mapped[str] = mapped_column(String(32))
    symbol: Mapped[str] = mapped_column(String(64))
    layer: Mapped[str] = mapped_column(String(32))
    side: Mapped[str] = mapped_column(String(4))
    type: Mapped[str] = mapped_column(String(16))
    qty_base: Mapped[Decimal] = mapped_column(Money)
    price: Mapped[Decimal | None] = mapped_column(Money)
    reduce_only: Mapped[bool] = mapped_column(Boolean)
    status: Mapped[str] = mapped_column(String(20))
    ts_ns: Mapped[int] = mapped_column(BigInteger)
    updated_ts_ns: Mapped[int] = mapped_column(BigInteger)
    note: Mapped[str] = mapped_column(Text)


class FillRow(Base):
    """One execution. ``fee_usd`` > 0 is paid, < 0 a rebate (the whole commission in USD).
    ``fee_qty_base`` is the part of it the venue took in the symbol's base asset, in base
    units (a spot buy's commission on Bybit, OKX, Binance without BNB; valued at ``price``
    inside ``fee_usd``): the position moves by ``±qty_base − fee_qty_base``."""

    __tablename__ = "fills"
    __table_args__ = (UniqueConstraint("venue", "symbol", "trade_id"),)

    id: Mapped[int] = mapped_column(_Id, primary_key=True, autoincrement=True)
    venue: Mapped[str] = mapped_column(String(32))
    symbol: Mapped[str] = mapped_column(String(64))
    trade_id: Mapped[str] = mapped_column(String(64))
    client_order_id: Mapped[str] = mapped_column(String(64), index=True)
    layer: Mapped[str] = mapped_column(String(32))
    side: Mapped[str] = mapped_column(String(4))
    qty_base: Mapped[Decimal] = mapped_column(Money)
    price: Mapped[Decimal] = mapped_column(Money)
    fee_usd: Mapped[Decimal] = mapped_column(Money)
    liquidity: Mapped[str] = mapped_column(String(8))
    ts_ns: Mapped[int] = mapped_column(BigInteger, index=True)
    fee_qty_base: Mapped[Decimal] = mapped_column(Money, default=Decimal(0), server_default="0")


class PositionRow(Base):
    """A (venue, symbol, layer) position kept in step with its fills and funding.

    ``qty_base`` is signed (Σ (side·qty − fee_qty_base) of fills). ``net_cash_usd`` is every
    cash flow of the position: ``Σ(−side·qty·price − fee + fee_qty_base·price) + Σ funding``
    (a fee paid in the base asset leaves as base units, not cash) — so its PnL at mark m is exactly
    ``net_cash_usd + qty_base·m`` (no average-price division, nothing to round).
    ``entry_cost_usd`` is ``qty_base × average entry price`` by the average-cost rule (a
    reduction keeps the average, rounded to 18 places; display and ``cash`` only)."""

    __tablename__ = "positions"
    __table_args__ = (UniqueConstraint("venue", "symbol", "layer"),)

    id: Mapped[int] = mapped_column(_Id, primary_key=True, autoincrement=True)
    venue: Mapped[str] = mapped_column(String(32))
    symbol: Mapped[str] = mapped_column(String(64))
    layer: Mapped[str] = mapped_column(String(32))
    qty_base: Mapped[Decimal] = mapped_column(Money)
    net_cash_usd: Mapped[Decimal] = mapped_column(Money)
    entry_cost_usd: Mapped[Decimal] = mapped_column(Money)
    fees_usd: Mapped[Decimal] = mapped_column(Money)
    funding_usd: Mapped[Decimal] = mapped_column(Money)
    mark_price: Mapped[Decimal | None] = mapped_column(Money)
    mark_ts_ns: Mapped[int | None] = mapped_column(BigInteger)
    updated_ts_ns: Mapped[int] = mapped_column(BigInteger)


class FundingPaymentRow(Base):
    """Funding received (> 0) or paid (< 0) by one position at one settlement."""

    __tablename__ = "funding_payments"
    __table_args__ = (UniqueConstraint("venue", "symbol", "layer", "ts_ns"),)

    id: Mapped[int] = mapped_column(_Id, primary_key=True, autoincrement=True)
    venue: Mapped[str] = mapped_column(String(32))
    symbol: Mapped[str] = mapped_column(String(64))
    layer: Mapped[str] = mapped_column(String(32))
    ts_ns: Mapped[int] = mapped_column(BigInteger)
    amount_usd: Mapped[Decimal] = mapped_column(Money)
    funding_rate: Mapped[Decimal | None] = mapped_column(Money)
    mark_price: Mapped[Decimal | None] = mapped_column(Money)
    qty_base: Mapped[Decimal | None] = mapped_column(Money)


class TransferRow(Base):
    """Capital in (> 0) or out (< 0) of the account: the paper bankroll, deposits, withdrawals."""

    __tablename__ = "transfers"

    id: Mapped[int] = mapped_column(_Id, primary_key=True, autoincrement=True)
    transfer_id: Mapped[str] = mapped_column(String(64), unique=True)
    ts_ns: Mapped[int] = mapped_column(BigInteger)
    amount_usd: Mapped[Decimal] = mapped_column(Money)
    note: Mapped[str] = mapped_column(Text)


class EquitySnapshotRow(Base):
    """Equity, cash and gross exposure at ``ts_ns`` as the runner saw them."""

    __tablename__ = "equity_snapshots"
    __table_args__ = (UniqueConstraint("mode", "ts_ns"),)

    id: Mapped[int] = mapped_column(_Id, primary_key=True, autoincrement=True)
    mode: Mapped[str] = mapped_column(String(8))
    ts_ns: Mapped[int] = mapped_column(BigInteger)
    equity_usd: Mapped[Decimal] = mapped_column(Money)
    cash_usd: Mapped[Decimal] = mapped_column(Money)
    at_risk_usd: Mapped[Decimal] = mapped_column(Money)


class EventRow(Base):
    """Something worth keeping: a halt, a reject, a reconnect. ``data`` is JSON text;
    ``dedupe_key`` (optional) makes a write idempotent."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(_Id, primary_key=True, autoincrement=True)
    ts_ns: Mapped[int] = mapped_column(BigInteger, index=True)
    kind: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[str] = mapped_column(Text)
    dedupe_key: Mapped[str | None] = mapped_column(String(128), unique=True)


class LayerRow(Base):
    """Whether a strategy layer may trade (set by the operator or a halt); survives restarts."""

    __tablename__ = "layers"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean)
    updated_ts_ns: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(Text)


class SwitchRow(Base):
    """Named on/off switches that must survive restarts (``kill_switch``)."""

    __tablename__ = "switches"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    on: Mapped[bool] = mapped_column(Boolean)
    updated_ts_ns: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(Text)
