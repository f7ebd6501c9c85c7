"""Ledger schema revisions (alembic skips this file)."""
