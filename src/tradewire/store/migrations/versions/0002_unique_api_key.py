"""One exchange API key belongs to one account: registering a key twice would make one signal
open two positions on the same exchange account.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("exchange_accounts") as batch:
        batch.create_unique_constraint("uq_exchange_accounts_api_key", ["api_key"])


def downgrade() -> None:
    with op.batch_alter_table("exchange_accounts") as batch:
        batch.drop_constraint("uq_exchange_accounts_api_key", type_="unique")
