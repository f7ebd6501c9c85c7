"""Initial ledger: orders, fills, positions, funding payments, transfers, equity snapshots,
events, layers, switches.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from perpdesk.store.models import Money

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _id() -> sa.Column:
    return sa.Column("id", _ID, primary_key=True, autoincrement=True)


def upgrade() -> None:
    op.create_table(
        "orders",
        _id(),
        sa.Column("client_order_id", sa.String(64), nullable=False),
        sa.Column("exchange_order_id", sa.String(64), nullable=True),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("venue", sa.String(32), nullable=False),
        sa.Column("symbol", sa.String(64), nullable=False),
        sa.Column("layer", sa.String(32), nullable=False),
        sa.Column("side", sa.String(4), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("qty_base", Money(), nullable=False),
        sa.Column("price", Money(), nullable=True),
        sa.Column("reduce_only", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("ts_ns", sa.BigInteger(), nullable=False),
        sa.Column("updated_ts_ns", sa.BigInteger(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_orders"),
        sa.UniqueConstraint("client_order_id", name="uq_orders_client_order_id"),
    )
    op.create_table(
        "fills",
        _id(),
        sa.Column("venue", sa.String(32), nullable=False),
        sa.Column("symbol", sa.String(64), nullable=False),
        sa.Column("trade_id", sa.String(64), nullable=False),
        sa.Column("client_order_id", sa.String(64), nullable=False),
        sa.Column("layer", sa.String(32), nullable=False),
        sa.Column("side", sa.String(4), nullable=False),
        sa.Column("qty_base", Money(), nullable=False),
        sa.Column("price", Money(), nullable=False),
        sa.Column("fee_usd", Money(), nullable=False),
        sa.Column("liquidity", sa.String(8), nullable=False),
        sa.Column("ts_ns", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_fills"),
        sa.UniqueConstraint("venue", "symbol", "trade_id", name="uq_fills_venue_symbol_trade_id"),
    )
    op.create_index("ix_fills_client_order_id", "fills", ["client_order_id"])
    op.create_index("ix_fills_ts_ns", "fills", ["ts_ns"])
    op.create_table(
        "positions",
        _id(),
        sa.Column("venue", sa.String(32), nullable=False),
        sa.Column("symbol", sa.String(64), nullable=False),
        sa.Column("layer", sa.String(32), nullable=False),
        sa.Column("qty_base", Money(), nullable=False),
        sa.Column("net_cash_usd", Money(), nullable=False),
        sa.Column("entry_cost_usd", Money(), nullable=False),
        sa.Column("fees_usd", Money(), nullable=False),
        sa.Column("funding_usd", Money(), nullable=False),
        sa.Column("mark_price", Money(), nullable=True),
        sa.Column("mark_ts_ns", sa.BigInteger(), nullable=True),
        sa.Column("updated_ts_ns", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_positions"),
        sa.UniqueConstraint("venue", "symbol", "layer", name="uq_positions_venue_symbol_layer"),
    )
    op.create_table(
        "funding_payments",
        _id(),
        sa.Column("venue", sa.String(32), nullable=False),
        sa.Column("symbol", sa.String(64), nullable=False),
        sa.Column("layer", sa.String(32), nullable=False),
        sa.Column("ts_ns", sa.BigInteger(), nullable=False),
        sa.Column("amount_usd", Money(), nullable=False),
        sa.Column("funding_rate", Money(), nullable=True),
        sa.Column("mark_price", Money(), nullable=True),
        sa.Column("qty_base", Money(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_funding_payments"),
        sa.UniqueConstraint(
            "venue", "symbol", "layer", "ts_ns", name="uq_funding_payments_venue_symbol_layer_ts_ns"
        ),
    )
    op.create_table(
        "transfers",
        _id(),
        sa.Column("transfer_id", sa.String(64), nullable=False),
        sa.Column("ts_ns", sa.BigInteger(), nullable=False),
        sa.Column("amount_usd", Money(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_transfers"),
        sa.UniqueConstraint("transfer_id", name="uq_transfers_transfer_id"),
    )
    op.create_table(
        "equity_snapshots",
        _id(),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("ts_ns", sa.BigInteger(), nullable=False),
        sa.Column("equity_usd", Money(), nullable=False),
        sa.Column("cash_usd", Money(), nullable=False),
        sa.Column("at_risk_usd", Money(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_equity_snapshots"),
        sa.UniqueConstraint("mode", "ts_ns", name="uq_equity_snapshots_mode_ts_ns"),
    )
    op.create_table(
        "events",
        _id(),
        sa.Column("ts_ns", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("dedupe_key", sa.String(128), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
        sa.UniqueConstraint("dedupe_key", name="uq_events_dedupe_key"),
    )
    op.create_index("ix_events_ts_ns", "events", ["ts_ns"])
    op.create_table(
        "layers",
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("updated_ts_ns", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_layers"),
    )
    op.create_table(
        "switches",
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("on", sa.Boolean(), nullable=False),
        sa.Column("updated_ts_ns", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_switches"),
    )


def downgrade() -> None:
    for name in ("switches", "layers", "events", "equity_snapshots", "transfers"):
        op.drop_table(name)
    for name in ("funding_payments", "positions", "fills", "orders"):
        op.drop_table(name)
