"""Per-user risk caps: the most leverage and the largest position a signal may open for a user.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

MONEY = sa.Numeric(36, 18).with_variant(sa.String(40), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("max_leverage", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("max_position_usdt", MONEY, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("max_position_usdt")
        batch.drop_column("max_leverage")
