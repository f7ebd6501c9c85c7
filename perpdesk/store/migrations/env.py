"""Alembic environment of the ledger.

Runs on the connection that :func:`perpdesk.store.ledger.init_db` passes in
``config.attributes["connection"]``, else on an engine built from ``sqlalchemy.url``
(with the same SQLite pragmas as the ledger). Offline mode prints the SQL.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from perpdesk.store.models import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    conn = config.attributes.get("connection")
    if conn is not None:
        _run(conn)
    else:
        from perpdesk.store.ledger import make_engine

        engine = make_engine(config.get_main_option("sqlalchemy.url") or "")
        try:
            with engine.begin() as c:
                _run(c)
        finally:
            engine.dispose()
