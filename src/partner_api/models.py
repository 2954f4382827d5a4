"""Database models: platform users, the API keys issued to them, referrals,
and the idempotency keys that make registrations safe to retry."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Optional

from sqlalchemy import (
    CheckConstraint,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from partner_api.extensions import Model


def utcnow() -> datetime:
    """Naive UTC, stored the same way on SQLite and PostgreSQL."""
    return datetime.now(UTC).replace(tzinfo=None)


def new_id(prefix: str) -> str:
    """An opaque id that reveals neither counts nor creation order."""
    return f"{prefix}_{uuid.uuid4().hex}"


class User(Model):
    """A platform account: a partner's registered user, or a key owner."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(
        String(40), primary_key=True, default=lambda: new_id("usr")
    )
    email: Mapped[str] = mapped_column(String(254))
    # Lower-cased copy: uniqueness ignores letter case on every database.
    email_key: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[Optional[str]] = mapped_column(String(255))
    first_name: Mapped[Optional[str]] = mapped_column(String(100))
    last_name: Mapped[Optional[str]] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    referral: Mapped[Optional[Referral]] = relationship(
        back_populates="user", foreign_keys="Referral.user_id"
    )


class ApiKey(Model):
    """A key issued to an owner. Only a hash of the secret is stored."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(100), default="default")
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    display_prefix: Mapped[str] = mapped_column(String(40))
    test_mode: Mapped[bool] = mapped_column(default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[Optional[datetime]]
    revoked_at: Mapped[Optional[datetime]]
    last_used_at: Mapped[Optional[datetime]]
    # Set once, by whichever request first meets the key expired: the expiry
    # is audited exactly once even when several workers see it together.
    expiry_recorded_at: Mapped[Optional[datetime]]
    rolled_from_id: Mapped[Optional[str]] = mapped_column(String(40))

    owner: Mapped[User] = relationship()

    @property
    def status(self) -> str:
        return key_status(self.revoked_at, self.expires_at)


EXPIRING_WITHIN = timedelta(days=7)


def key_status(revoked_at: datetime | None, expires_at: datetime | None) -> str:
    """active, expiring (within a week), expired or revoked."""
    if revoked_at is not None:
        return "revoked"

    if expires_at is None:
        return "active"

    now = utcnow()
    if expires_at <= now:
        return "expired"

    return "expiring" if expires_at - now <= EXPIRING_WITHIN else "active"


class AuditEvent(Model):
    """Who did what to which key or user; never a secret."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_owner_occurred", "owner_id", "occurred_at"),
        Index("ix_audit_events_key_occurred", "key_id", "occurred_at"),
    )

    id: Mapped[str] = mapped_column(
        String(40), primary_key=True, default=lambda: new_id("evt")
    )
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    action: Mapped[str] = mapped_column(String(40))
    outcome: Mapped[str] = mapped_column(String(40))
    actor: Mapped[str] = mapped_column(String(100))
    owner_id: Mapped[Optional[str]] = mapped_column(String(40))
    key_id: Mapped[Optional[str]] = mapped_column(String(40))
    subject_id: Mapped[Optional[str]] = mapped_column(String(40))
    client_ip: Mapped[Optional[str]] = mapped_column(String(64))
    request_id: Mapped[Optional[str]] = mapped_column(String(128))


class Referral(Model):
    """Links a user registered through the API to the key owner who referred it."""

    __tablename__ = "referrals"
    __table_args__ = (
        UniqueConstraint("referrer_id", "external_id"),
        # Keyset pagination: newest first within one referrer.
        Index("ix_referrals_referrer_created", "referrer_id", "created_at", "user_id"),
    )

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), primary_key=True)
    referrer_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    api_key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"))
    external_id: Mapped[Optional[str]] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    user: Mapped[User] = relationship(back_populates="referral", foreign_keys=[user_id])


class IdempotencyKey(Model):
    """A client's Idempotency-Key: held while its request runs, then its answer.

    Only a fingerprint of the request is kept, never the body (it may carry a
    password); the stored response never holds one.
    """

    __tablename__ = "idempotency_keys"
    __table_args__ = (
        CheckConstraint("status IN ('in_progress', 'done')", name="status"),
        CheckConstraint(
            "status = 'in_progress' OR response_status IS NOT NULL", name="response"
        ),
    )

    # The primary key is the uniqueness that decides which of several
    # concurrent requests with one key runs: the first INSERT wins.
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id"), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    response_status: Mapped[Optional[int]]
    response_body: Mapped[Optional[str]] = mapped_column(Text)
    response_location: Mapped[Optional[str]] = mapped_column(String(255))
    # When this claim was taken; a takeover rewrites it, so it also tells
    # the holder whether the claim is still its own.
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)
