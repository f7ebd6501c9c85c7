"""The ledger: a durable record of orders, fills, positions, funding, transfers and events.

SQLite (WAL journal, ``synchronous=FULL``) by default, PostgreSQL by URL
(``postgresql+psycopg://user@host:5432/db``). The schema is created and upgraded by the
alembic migrations shipped in ``perpdesk/store/migrations`` (:func:`init_db`).

Every write is idempotent on its natural key (see :mod:`perpdesk.store.models`): a fill
reported twice — by a websocket and again by a REST reconciliation, or after a restart — is
stored once, and its position is moved once, in the same transaction as the insert. A second
report of the same key with different numbers is a :class:`LedgerError`, never a silent
overwrite.

Accounting (Binance USD-M linear perps; a spot leg books the same way):

* a fill of signed quantity ``q`` (+ buy, − sell) at price ``p`` with fee ``f`` (USD) moves the
  position's cash by ``−q·p − f``; a funding payment ``F`` (> 0 received) moves it by ``F``;
* a commission taken in the base asset (``fee_qty_base`` = b base units, a spot buy on Bybit,
  OKX, Binance without BNB; ``f`` is then ``b·p``) is paid with the coin: the quantity moves
  by ``q − b`` (what the exchange holds) and the cash by ``−q·p − f + b·p`` — the fee counts
  once, as the base units given up (booked as their disposal at ``p``: no realised PnL, the
  fee in ``fees_usd`` and in ``cash``);
* ``equity_usd = Σ transfers + Σ_positions (net_cash_usd + qty_base × mark_price)`` — exact;
* ``at_risk_usd = Σ |qty_base × mark_price|`` (gross notional at mark);
* ``cash_usd = Σ transfers + Σ_positions (net_cash_usd + entry_cost_usd)`` — the wallet
  balance (deposits + realised PnL + funding − fees) with average-cost realised PnL;
  ``equity − cash`` is the unrealised PnL ``Σ (qty × mark − entry_cost)``.

A position's mark is the last price given to :meth:`Ledger.set_mark`, or its last fill price
when that is newer. :meth:`Ledger.audit` recomputes equity from the fills and funding tables
alone and compares it with the positions table.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from perpdesk.domain.orders import Fill, Order, Side, to_decimal
from perpdesk.errors import PerpdeskError
from perpdesk.secrets import redact, register_secret
from perpdesk.store.models import (
    SCALE,
    EquitySnapshotRow,
    EventRow,
    FillRow,
    FundingPaymentRow,
    LayerRow,
    OrderRow,
    PositionRow,
    SwitchRow,
    TransferRow,
)

__all__ = [
    "HEAD_REVISION",
    "KILL_SWITCH",
    "AuditReport",
    "Ledger",
    "LedgerError",
    "LedgerStatus",
    "PositionView",
    "alembic_config",
    "default_url",
    "init_db",
    "make_engine",
    "safe_url",
]

HEAD_REVISION = "0002_fill_fee_qty_base"
KILL_SWITCH = "kill_switch"
MODES = ("sim", "paper", "live")
ORDER_STATUSES = (
    "new",
    "open",
    "partially_filled",
    "filled",
    "canceled",
    "rejected",
    "expired",
)
OPEN_STATUSES = ("new", "open", "partially_filled")

# Wide enough that sums of NUMERIC(38, 18) values never round.
_CTX = Context(prec=80)
_Q = Decimal(1).scaleb(-SCALE)
_ZERO = Decimal(0)
_MIGRATION_LOCK = 0x70657270  # "perp": pg_advisory_xact_lock key held while migrating


class LedgerError(PerpdeskError):
    """The ledger refused a write or cannot be opened (one line: the key and the problem;
    registered secrets are masked)."""

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))


def safe_url(url: str) -> str:
    """``url`` with its password masked (for messages and the CLI)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return redact(url)


def default_url(data_dir: Path) -> str:
    """The default ledger: SQLite file ``<data_dir>/ledger.sqlite``."""
    return f"sqlite:///{Path(data_dir).expanduser() / 'ledger.sqlite'}"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # Autocommit at the driver; SQLAlchemy's "begin" event below emits BEGIN itself, so
    # transactions are real and pragmas are not inside one.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_begin(conn: Any) -> None:
    # Write transactions take the write lock up front (BEGIN IMMEDIATE): a deferred one that
    # read first cannot upgrade once another writer committed (SQLITE_BUSY, no retry).
    conn.exec_driver_sql(conn.get_execution_options().get("perpdesk_begin", "BEGIN"))


def make_engine(url: str) -> Engine:
    """An engine for ``url``: SQLite with WAL + ``synchronous=FULL`` + a 30 s busy timeout
    (the parent directory is created), or any other SQLAlchemy URL (PostgreSQL:
    ``postgresql+psycopg://…``). Raises :class:`LedgerError` on a malformed URL."""
    if not url:
        raise LedgerError("ledger: empty database URL (set store.url or pass --url)")
    try:
        u = make_url(url)
    except ArgumentError:
        raise LedgerError(f"ledger: {redact(url)!r} is not a database URL") from None
    if u.password:
        register_secret(str(u.password))  # never in messages or logs from here on
    if u.get_backend_name() == "sqlite":
        if u.database and u.database != ":memory:" and not u.database.startswith("file:"):
            Path(u.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(u)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    try:
        return create_engine(u, pool_pre_ping=True)
    except (ArgumentError, ImportError) as exc:
        raise LedgerError(f"ledger: cannot use {safe_url(url)}: {redact(str(exc))}") from None


def alembic_config(url: str) -> Any:
    """An alembic ``Config`` pointing at the packaged migrations and ``url``."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", "perpdesk.store:migrations")
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def init_db(url: str) -> str:
    """Create or upgrade the ledger at ``url`` to the latest schema (idempotent). Returns the
    revision now applied. Raises :class:`LedgerError` if the database is unreachable."""
    from alembic import command

    engine = make_engine(url)
    cfg = alembic_config(url)
    try:
        # One migrator at a time: SQLite takes the write lock up front, PostgreSQL an advisory
        # lock held to commit; the second process then finds the schema at head.
        with engine.execution_options(perpdesk_begin="BEGIN IMMEDIATE").begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
        return _current_revision(engine) or ""
    except OperationalError as exc:
        raise LedgerError(f"ledger: cannot reach {safe_url(url)}: {_first_line(exc)}") from None
    finally:
        engine.dispose()


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return redact(text[0] if text else type(exc).__name__)


def _current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def _dec(x: Decimal | int | float | str, what: str) -> Decimal:
    if isinstance(x, bool):
        raise LedgerError(f"ledger: {what} = {x!r}: not a number")
    if isinstance(x, float):
        return to_decimal(x)
    try:
        d = Decimal(x)
    except (ArithmeticError, ValueError, TypeError):
        raise LedgerError(f"ledger: {what} = {x!r}: not a number") from None
    if not d.is_finite():
        raise LedgerError(f"ledger: {what} = {x!r}: not finite")
    return d


@dataclass(frozen=True, slots=True)
class PositionView:
    """A position as :meth:`Ledger.status` reports it (USD at ``mark_price``)."""

    venue: str
    symbol: str
    layer: str
    qty_base: Decimal
    mark_price: Decimal | None
    notional_usd: Decimal
    entry_price: Decimal | None
    unrealised_pnl_usd: Decimal
    pnl_usd: Decimal
    funding_usd: Decimal
    fees_usd: Decimal


@dataclass(frozen=True, slots=True)
class LedgerStatus:
    """What ``perpdesk status`` shows. Amounts in USD (definitions in the module doc)."""

    deposits_usd: Decimal
    equity_usd: Decimal
    cash_usd: Decimal
    at_risk_usd: Decimal
    positions: tuple[PositionView, ...]
    layers: Mapping[str, bool]
    kill_switch: bool
    open_orders: int
    n_orders: int
    n_fills: int
    last_fill_ts_ns: int | None


@dataclass(frozen=True, slots=True)
class AuditReport:
    """Equity from the positions table vs recomputed from transfers, fills and funding."""

    ledger_equity_usd: Decimal
    recomputed_equity_usd: Decimal
    mismatches: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """True when the two equities agree exactly and every position matches its fills."""
        return not self.mismatches and self.ledger_equity_usd == self.recomputed_equity_usd


def _redact_json(data: Mapping[str, Any] | None) -> str:
    text = json.dumps(data or {}, sort_keys=True, default=str, separators=(",", ":"))
    return redact(text)


class Ledger:
    """Reads and idempotent writes on a migrated ledger database.

    ``Ledger(url)`` refuses a database that is not at the latest migration (run
    :func:`init_db` / ``perpdesk init-db``). Each method is one transaction.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        db = self.engine.url.database
        if (
            self.engine.dialect.name == "sqlite"
            and db
            and db != ":memory:"
            and not db.startswith("file:")
            and not Path(db).expanduser().is_file()
        ):
            self.engine.dispose()
            raise LedgerError(f"ledger {safe_url(url)}: no such database; run `perpdesk init-db`")
        try:
            rev = _current_revision(self.engine)
        except OperationalError as exc:
            self.engine.dispose()
            raise LedgerError(f"ledger: cannot reach {safe_url(url)}: {_first_line(exc)}") from None
        if rev != HEAD_REVISION:
            self.engine.dispose()
            raise LedgerError(
                f"ledger {safe_url(url)}: schema at {rev or 'nothing'}, expected "
                f"{HEAD_REVISION}; run `perpdesk init-db`"
            )
        self._dialect = self.engine.dialect.name
        self._write_engine = self.engine.execution_options(perpdesk_begin="BEGIN IMMEDIATE")

    def close(self) -> None:
        """Release the connections."""
        self.engine.dispose()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Ledger({safe_url(self.url)!r})"

    @contextmanager
    def _tx(self, write: bool = True) -> Iterator[Session]:
        engine = self._write_engine if write else self.engine
        try:
            with Session(engine) as s, s.begin(), localcontext(_CTX):
                yield s
        except PerpdeskError:
            raise
        except SQLAlchemyError as exc:
            raise LedgerError(f"ledger {safe_url(self.url)}: {_first_line(exc)}") from None

    def _insert(self, s: Session, model: type, values: dict[str, Any]) -> bool:
        """INSERT … ON CONFLICT DO NOTHING; True when a row was written."""
        mod = sqlite if self._dialect == "sqlite" else postgresql
        pk = list(model.__table__.primary_key.columns)  # type: ignore[attr-defined]
        stmt = mod.insert(model).values(**values).on_conflict_do_nothing().returning(*pk)
        # RETURNING, not rowcount: psycopg reports -1 for INSERT … ON CONFLICT here.
        return s.connection().execute(stmt).first() is not None

    # ------------------------------------------------------------------ writes

    def record_transfer(
        self, transfer_id: str, amount_usd: Decimal, ts_ns: int, note: str = ""
    ) -> bool:
        """Capital in (> 0) or out (< 0), e.g. the paper bankroll. Idempotent by
        ``transfer_id``; a different amount under the same id is a :class:`LedgerError`."""
        amount = _dec(amount_usd, f"transfer {transfer_id} amount_usd")
        with self._tx() as s:
            if self._insert(
                s,
                TransferRow,
                {
                    "transfer_id": transfer_id,
                    "ts_ns": ts_ns,
                    "amount_usd": amount,
                    "note": redact(note),
                },
            ):
                return True
            old = s.scalars(select(TransferRow).where(TransferRow.transfer_id == transfer_id)).one()
            if old.amount_usd != amount:
                raise LedgerError(
                    f"ledger: transfer {transfer_id} already recorded with {old.amount_usd} USD, "
                    f"not {amount}"
                )
            return False

    def record_order(
        self,
        order: Order,
        *,
        layer: str,
        mode: str,
        status: str = "new",
        ts_ns: int | None = None,
        note: str = "",
    ) -> bool:
        """Record an order before it is sent. Idempotent by ``client_order_id``; the same id
        with a different venue/symbol/side/quantity is a :class:`LedgerError`."""
        if mode not in MODES:
            raise LedgerError(
                f"ledger: order {order.client_order_id}: mode {mode!r} not in {MODES}"
            )
        if status not in ORDER_STATUSES:
            raise LedgerError(f"ledger: order {order.client_order_id}: unknown status {status!r}")
        qty = _dec(order.qty_base, f"order {order.client_order_id} qty_base")
        price = None if order.price is None else _dec(order.price, "order price")
        t = order.ts_ns if ts_ns is None else ts_ns
        values = {
            "client_order_id": order.client_order_id,
            "exchange_order_id": None,
            "mode": mode,
            "venue": order.venue,
            "symbol": order.symbol,
            "layer": layer,
            "side": Side(order.side).value,
            "type": str(order.type.value),
            "qty_base": qty,
            "price": price,
            "reduce_only": bool(order.reduce_only),
            "status": status,
            "ts_ns": t,
            "updated_ts_ns": t,
            "note": redact(note),
        }
        with self._tx() as s:
            if self._insert(s, OrderRow, values):
                return True
            old = s.scalars(
                select(OrderRow).where(OrderRow.client_order_id == order.client_order_id)
            ).one()
            for key in ("venue", "symbol", "layer", "side", "qty_base", "mode"):
                if getattr(old, key) != values[key]:
                    raise LedgerError(
                        f"ledger: order {order.client_order_id} already recorded with {key} = "
                        f"{getattr(old, key)}, not {values[key]}"
                    )
            return False

    def update_order(
        self,
        client_order_id: str,
        status: str,
        ts_ns: int,
        exchange_order_id: str | None = None,
    ) -> None:
        """Move an order to ``status`` (stale updates — older ``ts_ns`` — are ignored)."""
        if status not in ORDER_STATUSES:
            raise LedgerError(f"ledger: order {client_order_id}: unknown status {status!r}")
        with self._tx() as s:
            row = s.scalars(
                select(OrderRow).where(OrderRow.client_order_id == client_order_id)
            ).one_or_none()
            if row is None:
                raise LedgerError(f"ledger: order {client_order_id}: not recorded")
            if ts_ns < row.updated_ts_ns:
                return
            row.status = status
            row.updated_ts_ns = ts_ns
            if exchange_order_id is not None:
                row.exchange_order_id = exchange_order_id

    def record_fill(
        self,
        fill: Fill,
        trade_id: str,
        *,
        layer: str | None = None,
        fee_qty_base: Decimal | int | str = 0,
    ) -> bool:
        """Record a fill and move its position, once. ``trade_id`` is the exchange's trade
        id (unique per venue and symbol). ``layer`` defaults to the layer of the order the
        fill belongs to. ``fee_qty_base`` is the part of the fee the venue took in the base
        asset (base units; ``fill.fee_usd`` includes it at ``fill.price``): the position moves
        by ``±qty − fee_qty_base`` (module docstring). Returns False when this trade id was
        already recorded with the same numbers; raises :class:`LedgerError` when it was
        recorded with other numbers."""
        qty = _dec(fill.qty_base, f"fill {trade_id} qty_base")
        price = _dec(fill.price, f"fill {trade_id} price")
        fee = _dec(fill.fee_usd, f"fill {trade_id} fee_usd")
        fee_base = _dec(fee_qty_base, f"fill {trade_id} fee_qty_base")
        if not qty > 0 or not price > 0:
            raise LedgerError(f"ledger: fill {trade_id}: qty_base and price must be > 0")
        side = Side(fill.side)
        with self._tx() as s:
            if layer is None:
                layer = s.scalars(
                    select(OrderRow.layer).where(OrderRow.client_order_id == fill.client_order_id)
                ).one_or_none()
                if layer is None:
                    raise LedgerError(
                        f"ledger: fill {trade_id}: order {fill.client_order_id} not recorded "
                        "(pass layer=)"
                    )
            values = {
                "venue": fill.venue,
                "symbol": fill.symbol,
                "trade_id": str(trade_id),
                "client_order_id": fill.client_order_id,
                "layer": layer,
                "side": side.value,
                "qty_base": qty,
                "price": price,
                "fee_usd": fee,
                "liquidity": str(fill.liquidity.value),
                "ts_ns": int(fill.ts_ns),
                "fee_qty_base": fee_base,
            }
            if not self._insert(s, FillRow, values):
                old = s.scalars(
                    select(FillRow).where(
                        FillRow.venue == fill.venue,
                        FillRow.symbol == fill.symbol,
                        FillRow.trade_id == str(trade_id),
                    )
                ).one()
                keys = ("client_order_id", "side", "qty_base", "price", "fee_usd", "layer")
                # a row written before fee_qty_base existed (revision 0001) holds 0: it stays
                # as booked (re-reading the last fills after an upgrade must not stop the
                # runner; the gross quantity shows as a reconcile mismatch, not silently)
                legacy = old.fee_qty_base == 0 and fee_base != 0
                for key in keys if legacy else (*keys, "fee_qty_base"):
                    if getattr(old, key) != values[key]:
                        raise LedgerError(
                            f"ledger: fill {fill.venue}/{fill.symbol}/{trade_id} already recorded "
                            f"with {key} = {getattr(old, key)}, not {values[key]}"
                        )
                return False
            pos = self._position_for_update(s, fill.venue, fill.symbol, layer, fill.ts_ns)
            q = qty if side is Side.BUY else -qty
            pos.entry_cost_usd = _entry_cost_after(pos.qty_base, pos.entry_cost_usd, q, price)
            pos.qty_base = pos.qty_base + q
            if fee_base != 0:  # the base units the fee took: disposed of at the fill price
                pos.entry_cost_usd = _entry_cost_after(
                    pos.qty_base, pos.entry_cost_usd, -fee_base, price
                )
                pos.qty_base = pos.qty_base - fee_base
            pos.net_cash_usd = pos.net_cash_usd - q * price - fee + fee_base * price
            pos.fees_usd = pos.fees_usd + fee
            if pos.mark_ts_ns is None or fill.ts_ns >= pos.mark_ts_ns:
                pos.mark_price, pos.mark_ts_ns = price, int(fill.ts_ns)
            pos.updated_ts_ns = max(pos.updated_ts_ns, int(fill.ts_ns))
            return True

    def _position_for_update(
        self, s: Session, venue: str, symbol: str, layer: str, ts_ns: int
    ) -> PositionRow:
        self._insert(
            s,
            PositionRow,
            {
                "venue": venue,
                "symbol": symbol,
                "layer": layer,
                "qty_base": _ZERO,
                "net_cash_usd": _ZERO,
                "entry_cost_usd": _ZERO,
                "fees_usd": _ZERO,
                "funding_usd": _ZERO,
                "mark_price": None,
                "mark_ts_ns": None,
                "updated_ts_ns": int(ts_ns),
            },
        )
        return s.scalars(
            select(PositionRow)
            .where(
                PositionRow.venue == venue,
                PositionRow.symbol == symbol,
                PositionRow.layer == layer,
            )
            .with_for_update()
        ).one()

    def record_funding(
        self,
        venue: str,
        symbol: str,
        layer: str,
        ts_ns: int,
        amount_usd: Decimal,
        *,
        funding_rate: Decimal | None = None,
        mark_price: Decimal | None = None,
        qty_base: Decimal | None = None,
    ) -> bool:
        """Funding received (> 0) or paid (< 0) by the (venue, symbol, layer) position at
        settlement ``ts_ns``; Binance USD-M pays ``−qty × mark × rate``. Idempotent by
        (venue, symbol, layer, ts_ns); another amount for the same key is a LedgerError."""
        amount = _dec(amount_usd, f"funding {symbol} {ts_ns} amount_usd")
        values = {
            "venue": venue,
            "symbol": symbol,
            "layer": layer,
            "ts_ns": int(ts_ns),
            "amount_usd": amount,
            "funding_rate": None if funding_rate is None else _dec(funding_rate, "funding_rate"),
            "mark_price": None if mark_price is None else _dec(mark_price, "mark_price"),
            "qty_base": None if qty_base is None else _dec(qty_base, "qty_base"),
        }
        with self._tx() as s:
            if not self._insert(s, FundingPaymentRow, values):
                old = s.scalars(
                    select(FundingPaymentRow).where(
                        FundingPaymentRow.venue == venue,
                        FundingPaymentRow.symbol == symbol,
                        FundingPaymentRow.layer == layer,
                        FundingPaymentRow.ts_ns == int(ts_ns),
                    )
                ).one()
                if old.amount_usd != amount:
                    raise LedgerError(
                        f"ledger: funding {venue}/{symbol}/{layer} at {ts_ns} already recorded "
                        f"with {old.amount_usd} USD, not {amount}"
                    )
                return False
            pos = self._position_for_update(s, venue, symbol, layer, ts_ns)
            pos.net_cash_usd = pos.net_cash_usd + amount
            pos.funding_usd = pos.funding_usd + amount
            pos.updated_ts_ns = max(pos.updated_ts_ns, int(ts_ns))
            return True

    def set_mark(self, venue: str, symbol: str, mark_price: Decimal, ts_ns: int) -> int:
        """Mark every layer's position in (venue, symbol) at ``mark_price`` (older marks are
        ignored). Returns the number of positions updated."""
        mark = _dec(mark_price, f"mark {symbol}")
        with self._tx() as s:
            res = s.execute(
                update(PositionRow)
                .where(
                    PositionRow.venue == venue,
                    PositionRow.symbol == symbol,
                    (PositionRow.mark_ts_ns.is_(None)) | (PositionRow.mark_ts_ns <= int(ts_ns)),
                )
                .values(mark_price=mark, mark_ts_ns=int(ts_ns))
            )
            return int(res.rowcount or 0)

    def record_event(
        self,
        kind: str,
        message: str,
        ts_ns: int,
        data: Mapping[str, Any] | None = None,
        dedupe_key: str | None = None,
    ) -> bool:
        """Append an event. Message and data are redacted of every registered secret.
        With ``dedupe_key`` the write is idempotent."""
        values = {
            "ts_ns": int(ts_ns),
            "kind": kind,
            "message": redact(message),
            "data": _redact_json(data),
            "dedupe_key": dedupe_key,
        }
        with self._tx() as s:
            return self._insert(s, EventRow, values)

    def record_equity_snapshot(self, mode: str, ts_ns: int) -> bool:
        """Store the current equity, cash and at-risk under (mode, ts_ns), once."""
        st = self.status()
        with self._tx() as s:
            return self._insert(
                s,
                EquitySnapshotRow,
                {
                    "mode": mode,
                    "ts_ns": int(ts_ns),
                    "equity_usd": _q(st.equity_usd),
                    "cash_usd": _q(st.cash_usd),
                    "at_risk_usd": _q(st.at_risk_usd),
                },
            )

    def set_layer(self, name: str, enabled: bool, ts_ns: int, reason: str = "") -> None:
        """Enable or disable a strategy layer (persists across restarts)."""
        self._set(LayerRow, "name", name, {"enabled": bool(enabled)}, ts_ns, reason)

    def set_kill_switch(self, on: bool, ts_ns: int, reason: str = "") -> None:
        """Turn the kill switch on (halt, flatten) or off; persists across restarts."""
        self._set(SwitchRow, "name", KILL_SWITCH, {"on": bool(on)}, ts_ns, reason)

    def _set(
        self, model: type, key: str, name: str, vals: dict[str, Any], ts_ns: int, reason: str
    ) -> None:
        row = {key: name, **vals, "updated_ts_ns": int(ts_ns), "reason": redact(reason)}
        with self._tx() as s:
            if not self._insert(s, model, row):
                obj = s.get(model, name, with_for_update=True)
                assert obj is not None
                for k, v in row.items():
                    setattr(obj, k, v)

    # ------------------------------------------------------------------ reads

    def kill_switch(self) -> bool:
        """Whether the kill switch is on."""
        with self._tx(write=False) as s:
            row = s.get(SwitchRow, KILL_SWITCH)
            return bool(row and row.on)

    def layers(self) -> dict[str, bool]:
        """Layer name → enabled, as recorded."""
        with self._tx(write=False) as s:
            return {r.name: r.enabled for r in s.scalars(select(LayerRow).order_by(LayerRow.name))}

    def fills(self, since_ts_ns: int | None = None) -> list[FillRow]:
        """Fills in time order (``ts_ns >= since_ts_ns`` when given), detached rows."""
        with self._tx(write=False) as s:
            q = select(FillRow).order_by(FillRow.ts_ns, FillRow.id)
            if since_ts_ns is not None:
                q = q.where(FillRow.ts_ns >= since_ts_ns)
            rows = list(s.scalars(q))
            s.expunge_all()
            return rows

    def open_orders(self) -> list[OrderRow]:
        """Orders whose status is new, open or partially_filled (detached rows)."""
        with self._tx(write=False) as s:
            rows = list(
                s.scalars(
                    select(OrderRow)
                    .where(OrderRow.status.in_(OPEN_STATUSES))
                    .order_by(OrderRow.ts_ns, OrderRow.id)
                )
            )
            s.expunge_all()
            return rows

    def order(self, client_order_id: str) -> OrderRow | None:
        """The order row of ``client_order_id`` (detached), or None."""
        with self._tx(write=False) as s:
            row = s.scalars(
                select(OrderRow).where(OrderRow.client_order_id == client_order_id)
            ).one_or_none()
            if row is not None:
                s.expunge(row)
            return row

    def status(self) -> LedgerStatus:
        """Equity, cash, at-risk, positions, layers and the kill switch (module doc)."""
        with self._tx(write=False) as s:
            deposits = sum(s.scalars(select(TransferRow.amount_usd)), _ZERO)
            views = []
            equity, cash, at_risk = deposits, deposits, _ZERO
            for p in s.scalars(
                select(PositionRow).order_by(
                    PositionRow.venue, PositionRow.symbol, PositionRow.layer
                )
            ):
                mark = p.mark_price
                value = p.qty_base * mark if mark is not None else _ZERO
                equity += p.net_cash_usd + value
                cash += p.net_cash_usd + p.entry_cost_usd
                at_risk += abs(value)
                if p.qty_base == 0 and p.net_cash_usd == 0:
                    continue
                views.append(
                    PositionView(
                        venue=p.venue,
                        symbol=p.symbol,
                        layer=p.layer,
                        qty_base=p.qty_base,
                        mark_price=mark,
                        notional_usd=value,
                        entry_price=(
                            _q(p.entry_cost_usd / p.qty_base) if p.qty_base != 0 else None
                        ),
                        unrealised_pnl_usd=value - p.entry_cost_usd,
                        pnl_usd=p.net_cash_usd + value,
                        funding_usd=p.funding_usd,
                        fees_usd=p.fees_usd,
                    )
                )
            layers = {
                r.name: r.enabled for r in s.scalars(select(LayerRow).order_by(LayerRow.name))
            }
            ks = s.get(SwitchRow, KILL_SWITCH)
            n_open = s.scalar(
                select(func.count()).select_from(OrderRow).where(OrderRow.status.in_(OPEN_STATUSES))
            )
            n_orders = s.scalar(select(func.count()).select_from(OrderRow))
            n_fills = s.scalar(select(func.count()).select_from(FillRow))
            last = s.scalar(select(func.max(FillRow.ts_ns)))
            return LedgerStatus(
                deposits_usd=deposits,
                equity_usd=equity,
                cash_usd=cash,
                at_risk_usd=at_risk,
                positions=tuple(views),
                layers=layers,
                kill_switch=bool(ks and ks.on),
                open_orders=int(n_open or 0),
                n_orders=int(n_orders or 0),
                n_fills=int(n_fills or 0),
                last_fill_ts_ns=None if last is None else int(last),
            )

    def audit(self) -> AuditReport:
        """Recompute each position's quantity (``Σ q − fee_qty_base``) and cash from the fills
        and funding tables and equity as ``Σ transfers + Σ_fills(−q·p − fee + fee_qty_base·p)
        + Σ funding + Σ_positions qty × mark``; compare with the positions table. Read-only."""
        with self._tx(write=False) as s:
            deposits = sum(s.scalars(select(TransferRow.amount_usd)), _ZERO)
            qty: dict[tuple[str, str, str], Decimal] = {}
            cash: dict[tuple[str, str, str], Decimal] = {}
            for f in s.scalars(select(FillRow)):
                k = (f.venue, f.symbol, f.layer)
                q = f.qty_base if f.side == Side.BUY.value else -f.qty_base
                qty[k] = qty.get(k, _ZERO) + q - f.fee_qty_base
                cash[k] = cash.get(k, _ZERO) - q * f.price - f.fee_usd + f.fee_qty_base * f.price
            for fp in s.scalars(select(FundingPaymentRow)):
                k = (fp.venue, fp.symbol, fp.layer)
                cash[k] = cash.get(k, _ZERO) + fp.amount_usd
            mismatches = []
            ledger_eq, recomputed = deposits, deposits
            seen = set()
            for p in s.scalars(select(PositionRow)):
                k = (p.venue, p.symbol, p.layer)
                seen.add(k)
                mark = p.mark_price if p.mark_price is not None else _ZERO
                ledger_eq += p.net_cash_usd + p.qty_base * mark
                recomputed += cash.get(k, _ZERO) + qty.get(k, _ZERO) * mark
                if p.qty_base != qty.get(k, _ZERO):
                    mismatches.append(
                        f"{'/'.join(k)}: qty {p.qty_base} in positions, {qty.get(k, _ZERO)} from fills"
                    )
                if p.net_cash_usd != cash.get(k, _ZERO):
                    mismatches.append(
                        f"{'/'.join(k)}: cash {p.net_cash_usd} in positions, "
                        f"{cash.get(k, _ZERO)} from fills and funding"
                    )
            for k in sorted(set(qty) | set(cash)):
                if k not in seen:
                    mismatches.append(f"{'/'.join(k)}: fills or funding but no position row")
                    recomputed += cash.get(k, _ZERO)
            return AuditReport(ledger_eq, recomputed, tuple(mismatches))


def _q(x: Decimal) -> Decimal:
    """Round to the ledger's 18 places (half-even)."""
    with localcontext(_CTX):
        return x.quantize(_Q, rounding=ROUND_HALF_EVEN)


def _entry_cost_after(qty: Decimal, cost: Decimal, dq: Decimal, price: Decimal) -> Decimal:
    """Average-cost rule: adding keeps Σ q·p; reducing keeps the average price (cost scales
    by the remaining fraction, rounded to 18 places); crossing zero restarts at ``price``."""
    new = qty + dq
    if qty == 0 or (qty > 0) == (dq > 0):
        return cost + dq * price
    if new == 0:
        return _ZERO
    if (new > 0) == (qty > 0):
        return _q(cost * new / qty)
    return new * price
