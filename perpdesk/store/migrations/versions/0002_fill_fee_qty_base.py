"""Fills: ``fee_qty_base``, the part of the commission taken in the base asset.

A spot buy on Bybit, OKX and Binance (without BNB) pays its commission in the coin bought:
buying 0.075 BTC leaves 0.074925 BTC. The ledger moves the position by ``±qty − fee_qty_base``
(the holding the exchange reports) and counts the fee once in USD (``fee_usd`` keeps its
value at the fill price; the cash flow excludes the part paid in the base asset). Rows
written before this revision get 0 (their fees were paid or booked in USD).

Revision ID: 0002_fill_fee_qty_base
Revises: 0001_initial
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from perpdesk.store.models import Money

revision = "0002_fill_fee_qty_base"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("fills") as batch:
        batch.add_column(sa.Column("fee_qty_base", Money(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("fills") as batch:
        batch.drop_column("fee_qty_base")
