"""Ledger persistence (SQLAlchemy: SQLite with WAL by default, PostgreSQL by URL), alembic
migrations shipped in the package, and the atomic JSON snapshot of the live state."""

from perpdesk.store.ledger import (
    AuditReport,
    Ledger,
    LedgerError,
    LedgerStatus,
    PositionView,
    default_url,
    init_db,
    make_engine,
    safe_url,
)
from perpdesk.store.snapshot import read_snapshot, status_payload, write_snapshot

__all__ = [
    "AuditReport",
    "Ledger",
    "LedgerError",
    "LedgerStatus",
    "PositionView",
    "default_url",
    "init_db",
    "make_engine",
    "read_snapshot",
    "safe_url",
    "status_payload",
    "write_snapshot",
]
