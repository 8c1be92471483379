"""Initial schema: users, accounts, signals, trades, orders, processed events, outbox.

Revision ID: 0001
Revises:
Create Date: 2026-01-01

Types are spelled out here (not imported from ``tables.py``) so that this revision keeps
creating the same schema when the models change later: money is NUMERIC(36, 18) on PostgreSQL
and exact decimal text on SQLite, ids are BIGINT on PostgreSQL and the rowid alias on SQLite,
timestamps are epoch milliseconds.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
MONEY = sa.Numeric(36, 18).with_variant(sa.String(40), "sqlite")
STAMP = sa.BigInteger()


def _id() -> sa.Column[int]:
    return sa.Column("id", ID, nullable=False, autoincrement=True)


def upgrade() -> None:
    _users()
    _signals()
    _trades()
    _orders()
    _processed_events()
    _notifications()


def downgrade() -> None:
    for table in (
        "notifications", "processed_events", "orders", "trades", "signals",
        "exchange_accounts", "users",
    ):
        op.drop_table(table)


def _users() -> None:
    op.create_table(
        "users",
        _id(),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("discord_webhook_url", sa.String(500), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", STAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("name", name="uq_users_name"),
    )
    op.create_table(
        "exchange_accounts",
        _id(),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("label", sa.String(100), nullable=False),
        sa.Column("api_key", sa.String(128), nullable=False),
        sa.Column("api_secret_enc", sa.Text(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", STAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_exchange_accounts"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_exchange_accounts_user_id_users",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("user_id", "label", name="uq_exchange_accounts_user_id_label"),
    )
    op.create_index("ix_exchange_accounts_user_id", "exchange_accounts", ["user_id"])


def _signals() -> None:
    op.create_table(
        "signals",
        _id(),
        sa.Column("signal_id", sa.String(128), nullable=False),
        sa.Column("symbol", sa.String(32), nullable=False),
        sa.Column("side", sa.String(16), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("created_at", STAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_signals"),
        sa.UniqueConstraint("signal_id", name="uq_signals_signal_id"),
    )


def _trades() -> None:
    op.create_table(
        "trades",
        _id(),
        sa.Column("signal_id", sa.String(128), nullable=False),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("account_id", ID, nullable=False),
        sa.Column("symbol", sa.String(32), nullable=False),
        sa.Column("side", sa.String(20), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("close_reason", sa.String(20), nullable=True),
        sa.Column("quantity", MONEY, nullable=False),
        sa.Column("entry_price", MONEY, nullable=True),
        sa.Column("exit_price", MONEY, nullable=True),
        sa.Column("stop_loss", MONEY, nullable=False),
        sa.Column("take_profit", MONEY, nullable=False),
        sa.Column("leverage", sa.Integer(), nullable=False),
        sa.Column("realized_pnl", MONEY, nullable=False),
        sa.Column("commission", MONEY, nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", STAMP, nullable=False),
        sa.Column("updated_at", STAMP, nullable=False),
        sa.Column("closed_at", STAMP, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_trades"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_trades_user_id_users"),
        sa.ForeignKeyConstraint(
            ["account_id"], ["exchange_accounts.id"],
            name="fk_trades_account_id_exchange_accounts",
        ),
        sa.UniqueConstraint("signal_id", "account_id", name="uq_trades_signal_id_account_id"),
    )
    for column in ("user_id", "account_id", "symbol", "status"):
        op.create_index(f"ix_trades_{column}", "trades", [column])


def _orders() -> None:
    op.create_table(
        "orders",
        _id(),
        sa.Column("trade_id", ID, nullable=False),
        sa.Column("leg", sa.String(20), nullable=False),
        sa.Column("client_order_id", sa.String(36), nullable=False),
        sa.Column("exchange_order_id", sa.BigInteger(), nullable=True),
        sa.Column("algo_id", sa.BigInteger(), nullable=True),
        sa.Column("order_type", sa.String(32), nullable=False),
        sa.Column("side", sa.String(8), nullable=False),
        sa.Column("quantity", MONEY, nullable=False),
        sa.Column("price", MONEY, nullable=True),
        sa.Column("trigger_price", MONEY, nullable=True),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", STAMP, nullable=False),
        sa.Column("updated_at", STAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_orders"),
        sa.ForeignKeyConstraint(
            ["trade_id"], ["trades.id"], name="fk_orders_trade_id_trades", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("client_order_id", name="uq_orders_client_order_id"),
    )
    op.create_index("ix_orders_trade_id", "orders", ["trade_id"])


def _processed_events() -> None:
    op.create_table(
        "processed_events",
        sa.Column("event_id", sa.String(200), nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("processed_at", STAMP, nullable=False),
        sa.PrimaryKeyConstraint("event_id", name="pk_processed_events"),
    )


def _notifications() -> None:
    op.create_table(
        "notifications",
        _id(),
        sa.Column("user_id", ID, nullable=True),
        sa.Column("webhook_url", sa.String(500), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", STAMP, nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", STAMP, nullable=False),
        sa.Column("sent_at", STAMP, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_notifications"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_notifications_user_id_users", ondelete="SET NULL"
        ),
    )
    op.create_index("ix_notifications_due", "notifications", ["status", "next_attempt_at"])
