"""The database schema: SQLAlchemy 2 declarative models, identical on SQLite and PostgreSQL.

Money is ``Money`` (exact ``Decimal``), timestamps are epoch milliseconds (``BIGINT``), enums are
stored as their string values (see ``store.types``). ``migrations/versions`` creates exactly
this schema; ``tests/integration/test_store.py`` checks that they agree on both databases.
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.ext.asyncio import AsyncAttrs
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from tradewire.domain import CloseReason, Leg, Side, TradeStatus
from tradewire.store.types import ID, EnumText, Money, wall_clock_ms

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class SignalStatus(StrEnum):
    ACCEPTED = "ACCEPTED"
    REJECTED = "REJECTED"


class OrderStatus(StrEnum):
    """Known order states; the column is free text so exchange states can be kept verbatim."""

    NEW = "NEW"  # recorded, not yet sent
    PLACED = "PLACED"  # acknowledged by the exchange
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    TRIGGERED = "TRIGGERED"  # algo order fired
    CANCELED = "CANCELED"
    EXPIRED = "EXPIRED"
    REJECTED = "REJECTED"
    FAILED = "FAILED"  # we could not place it


class NotificationStatus(StrEnum):
    PENDING = "PENDING"
    SENT = "SENT"
    FAILED = "FAILED"


class Base(AsyncAttrs, DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    discord_webhook_url: Mapped[str | None] = mapped_column(String(500))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[int] = mapped_column(BigInteger, default=wall_clock_ms)
    max_leverage: Mapped[int | None] = mapped_column(Integer)  # None: the signal's leverage
    max_position_usdt: Mapped[Decimal | None] = mapped_column(Money)  # None: the signal's size


class ExchangeAccount(Base):
    __tablename__ = "exchange_accounts"
    __table_args__ = (UniqueConstraint("user_id", "label"),)

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    label: Mapped[str] = mapped_column(String(100), default="default")
    api_key: Mapped[str] = mapped_column(String(128), unique=True)  # never logged in full
    api_secret_enc: Mapped[str] = mapped_column(Text)  # SecretBox token
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[int] = mapped_column(BigInteger, default=wall_clock_ms)

    def __repr__(self) -> str:
        return f"ExchangeAccount(id={self.id}, user_id={self.user_id}, label={self.label!r})"


class SignalRecord(Base):
    """Every signal received, accepted or not; ``signal_id`` makes intake idempotent."""

    __tablename__ = "signals"

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    signal_id: Mapped[str] = mapped_column(String(128), unique=True)
    symbol: Mapped[str] = mapped_column(String(32))
    side: Mapped[str] = mapped_column(String(16))  # free text: rejected signals are kept as sent
    payload: Mapped[str] = mapped_column(Text)  # JSON
    status: Mapped[SignalStatus] = mapped_column(EnumText(SignalStatus))
    created_at: Mapped[int] = mapped_column(BigInteger, default=wall_clock_ms)


class Trade(Base):
    """One signal executed on one account."""

    __tablename__ = "trades"
    __table_args__ = (UniqueConstraint("signal_id", "account_id"),)

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    signal_id: Mapped[str] = mapped_column(String(128))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("exchange_accounts.id"), index=True)
    symbol: Mapped[str] = mapped_column(String(32), index=True)
    side: Mapped[Side] = mapped_column(EnumText(Side))
    status: Mapped[TradeStatus] = mapped_column(EnumText(TradeStatus), index=True)
    close_reason: Mapped[CloseReason | None] = mapped_column(EnumText(CloseReason))
    quantity: Mapped[Decimal] = mapped_column(Money)
    entry_price: Mapped[Decimal | None] = mapped_column(Money)  # None until filled (MARKET)
    exit_price: Mapped[Decimal | None] = mapped_column(Money)
    stop_loss: Mapped[Decimal] = mapped_column(Money)
    take_profit: Mapped[Decimal] = mapped_column(Money)
    leverage: Mapped[int] = mapped_column(Integer)
    realized_pnl: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    commission: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[int] = mapped_column(BigInteger, default=wall_clock_ms)
    updated_at: Mapped[int] = mapped_column(BigInteger, default=wall_clock_ms)
    closed_at: Mapped[int | None] = mapped_column(BigInteger)

    orders: Mapped[list[Order]] = relationship(
        back_populates="trade", lazy="raise", order_by="Order.id"
    )


class Order(Base):
    """One order leg of a trade (entry, stop loss, take profit)."""

    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    trade_id: Mapped[int] = mapped_column(ForeignKey("trades.id", ondelete="CASCADE"), index=True)
    leg: Mapped[Leg] = mapped_column(EnumText(Leg))
    client_order_id: Mapped[str] = mapped_column(String(36), unique=True)
    exchange_order_id: Mapped[int | None] = mapped_column(BigInteger)
    algo_id: Mapped[int | None] = mapped_column(BigInteger)
    order_type: Mapped[str] = mapped_column(String(32))  # MARKET, LIMIT, STOP_MARKET, ...
    side: Mapped[str] = mapped_column(String(8))  # BUY / SELL
    quantity: Mapped[Decimal] = mapped_column(Money)
    price: Mapped[Decimal | None] = mapped_column(Money)
    trigger_price: Mapped[Decimal | None] = mapped_column(Money)
    status: Mapped[str] = mapped_column(String(24))  # OrderStatus values, or the exchange's
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[int] = mapped_column(BigInteger, default=wall_clock_ms)
    updated_at: Mapped[int] = mapped_column(BigInteger, default=wall_clock_ms)

    trade: Mapped[Trade] = relationship(back_populates="orders", lazy="raise")


class ProcessedEvent(Base):
    """Ledger of applied events: the primary key makes every effect exactly-once."""

    __tablename__ = "processed_events"

    event_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    account_id: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(40))
    processed_at: Mapped[int] = mapped_column(BigInteger, default=wall_clock_ms)


class Notification(Base):
    """Outbox row: a webhook message written with the state change, sent by the notifier."""

    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    webhook_url: Mapped[str] = mapped_column(String(500))
    payload: Mapped[str] = mapped_column(Text)  # JSON
    status: Mapped[NotificationStatus] = mapped_column(EnumText(NotificationStatus))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[int] = mapped_column(BigInteger)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[int] = mapped_column(BigInteger, default=wall_clock_ms)
    sent_at: Mapped[int | None] = mapped_column(BigInteger)


class IntakeStatus(StrEnum):
    """Where one intake message stands (``intake_messages.status``)."""

    PENDING_CONFIRMATION = "PENDING_CONFIRMATION"  # clean, waits for an operator
    EXECUTING = "EXECUTING"  # accepted and handed to the executor (row written first)
    EXECUTED = "EXECUTED"  # the executor placed it (``signal_id`` set)
    FAILED = "FAILED"  # the executor raised: see ``reason``
    REJECTED = "REJECTED"  # parser, safety check or operator said no
    DUPLICATE = "DUPLICATE"  # same content as another message of the channel in the window
    STALE = "STALE"  # older than the channel's max lag (backlog replays land here)
    CANCELLED = "CANCELLED"  # deleted by its author before execution
    IGNORED = "IGNORED"  # status posts, updates, noise: never executed


class IntakeMessage(Base):
    """One message from a source, keyed by (source, channel, message_id): the intake ledger.

    Edits update the row (``edit`` is the newest edit seen); an edit after execution never
    re-executes and is only described in ``note``."""

    __tablename__ = "intake_messages"
    __table_args__ = (
        UniqueConstraint("source", "channel", "message_id"),
        Index("ix_intake_messages_channel_received", "source", "channel", "received_at_ms"),
    )

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    source: Mapped[str] = mapped_column(String(20))
    channel: Mapped[str] = mapped_column(String(200))
    message_id: Mapped[str] = mapped_column(String(200))
    edit: Mapped[int] = mapped_column(Integer, default=0)
    reply_to: Mapped[str | None] = mapped_column(String(200))
    author: Mapped[str | None] = mapped_column(String(200))
    sent_at_ms: Mapped[int] = mapped_column(BigInteger)
    received_at_ms: Mapped[int] = mapped_column(BigInteger)
    text: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str | None] = mapped_column(String(64))
    parsed: Mapped[str | None] = mapped_column(Text)  # JSON: ParsedSignal.as_json()
    plan: Mapped[str | None] = mapped_column(Text)  # JSON: the order the checks accepted
    decision: Mapped[str | None] = mapped_column(String(20))  # execute / confirm / reject
    kind: Mapped[str | None] = mapped_column(String(20))  # new / update / status / unknown
    status: Mapped[IntakeStatus] = mapped_column(EnumText(IntakeStatus), index=True)
    reason: Mapped[str] = mapped_column(Text)
    note: Mapped[str | None] = mapped_column(Text)  # edits/deletes seen after execution
    signal_id: Mapped[str | None] = mapped_column(String(128))
    execution: Mapped[str | None] = mapped_column(Text)  # JSON: ExecutionReport.as_json()
    created_at: Mapped[int] = mapped_column(BigInteger, default=wall_clock_ms)
    updated_at: Mapped[int] = mapped_column(BigInteger, default=wall_clock_ms)
