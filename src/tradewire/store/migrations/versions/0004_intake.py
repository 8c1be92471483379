"""Signal intake ledger: one row per (source, channel, message_id) with its verdict.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
STAMP = sa.BigInteger()


def upgrade() -> None:
    op.create_table(
        "intake_messages",
        sa.Column("id", ID, nullable=False, autoincrement=True),
        sa.Column("source", sa.String(20), nullable=False),
        sa.Column("channel", sa.String(200), nullable=False),
        sa.Column("message_id", sa.String(200), nullable=False),
        sa.Column("edit", sa.Integer(), nullable=False),
        sa.Column("reply_to", sa.String(200), nullable=True),
        sa.Column("author", sa.String(200), nullable=True),
        sa.Column("sent_at_ms", STAMP, nullable=False),
        sa.Column("received_at_ms", STAMP, nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=True),
        sa.Column("parsed", sa.Text(), nullable=True),
        sa.Column("plan", sa.Text(), nullable=True),
        sa.Column("decision", sa.String(20), nullable=True),
        sa.Column("kind", sa.String(20), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("signal_id", sa.String(128), nullable=True),
        sa.Column("execution", sa.Text(), nullable=True),
        sa.Column("created_at", STAMP, nullable=False),
        sa.Column("updated_at", STAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_intake_messages"),
        sa.UniqueConstraint(
            "source", "channel", "message_id",
            name="uq_intake_messages_source_channel_message_id",
        ),
    )
    op.create_index("ix_intake_messages_status", "intake_messages", ["status"])
    op.create_index(
        "ix_intake_messages_channel_received", "intake_messages",
        ["source", "channel", "received_at_ms"],
    )


def downgrade() -> None:
    op.drop_table("intake_messages")
