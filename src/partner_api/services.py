"""Registration and referral queries: the work behind the v1 views."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from sqlalchemy import Select, func, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import contains_eager

from partner_api import audit
from partner_api.auth import Principal
from partner_api.errors import APIError
from partner_api.extensions import db, metrics
from partner_api.models import Referral, User, new_id, utcnow

USER_ID = re.compile(r"\Ausr_[0-9a-f]{32}\Z")

# Argon2id with the library's defaults (RFC 9106 low-memory profile).
password_hasher = PasswordHasher()


@dataclass(frozen=True, slots=True)
class ReferredUser:
    """A user together with its referral, the shape partners see."""

    id: str
    email: str
    first_name: str | None
    last_name: str | None
    external_id: str | None
    referrer_id: str
    created_at: datetime

    @classmethod
    def of(cls, referral: Referral) -> ReferredUser:
        user = referral.user
        return cls(
            user.id,
            user.email,
            user.first_name,
            user.last_name,
            referral.external_id,
            referral.referrer_id,
            referral.created_at,
        )


def _violated_constraint(error: IntegrityError) -> str:
    """The constraint's name (PostgreSQL) or its columns (SQLite), never values."""
    diag = getattr(error.orig, "diag", None)
    if diag is not None and diag.constraint_name:
        return str(diag.constraint_name)

    # sqlite3: "UNIQUE constraint failed: users.email_key"
    return str(error.orig)


def _conflict(error: IntegrityError) -> APIError:
    # Constraint names follow the naming convention in extensions.py.
    violated = _violated_constraint(error)
    if "external_id" in violated:
        return APIError(
            409,
            "external_id_taken",
            "You already registered a user with this externalId.",
        )

    if "email_key" in violated:
        return APIError(409, "email_taken", "A user with this email already exists.")

    raise error


def register_user(principal: Principal, data: dict[str, Any]) -> ReferredUser:
    """Add the user and its referral; the caller commits them in one transaction.

    Conflicts surface here, at flush time, as a 409 with the session rolled back.
    """
    password = data["password"]
    now = utcnow()
    user = User(
        id=new_id("usr"),
        email=data["email"],
        email_key=data["email"].lower(),
        password_hash=password_hasher.hash(password) if password else None,
        first_name=data["first_name"],
        last_name=data["last_name"],
        created_at=now,
    )
    referral = Referral(
        user=user,
        referrer_id=principal.owner_id,
        api_key_id=principal.key_id,
        external_id=data["external_id"],
        created_at=now,
    )
    db.session.add_all([user, referral])
    _audit_registration(principal, "created", user.id)
    try:
        db.session.flush()
    except IntegrityError as error:
        db.session.rollback()
        conflict = _conflict(error)
        _audit_registration(principal, conflict.code, None)
        db.session.commit()
        raise conflict from None

    metrics.registrations.inc()

    return ReferredUser.of(referral)


def _audit_registration(
    principal: Principal, outcome: str, user_id: str | None
) -> None:
    audit.record(
        "user.registered",
        outcome,
        actor=f"key:{principal.key_id}",
        owner_id=principal.owner_id,
        key_id=principal.key_id,
        subject_id=user_id,
    )


def _referrals_of(owner_id: str) -> Select[Referral]:
    return (
        select(Referral)
        .join(Referral.user)
        .where(Referral.referrer_id == owner_id)
        .options(contains_eager(Referral.user))
    )


def find_referred_user(principal: Principal, user_id: str) -> ReferredUser:
    """The user, if the caller's owner referred it; 404 in every other case."""
    referral = None
    # Anything that cannot be an id is answered without asking the database.
    if USER_ID.match(user_id):
        referral = db.session.scalar(
            _referrals_of(principal.owner_id).where(Referral.user_id == user_id)
        )

    if referral is None:
        raise APIError(404, "not_found", "No user with this id among your referrals.")

    return ReferredUser.of(referral)


def encode_cursor(created_at: datetime, user_id: str) -> str:
    """The opaque position of a referral in its owner's newest-first listing."""
    raw = f"{created_at.isoformat()}|{user_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The position after which the next page starts; 400 if tampered."""
    invalid = APIError(
        400,
        "invalid_cursor",
        "The cursor is not one this API returned. Start again without it.",
    )
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        raw = base64.urlsafe_b64decode(padded.encode("ascii")).decode()
        created, user_id = raw.split("|")
        created_at = datetime.fromisoformat(created)
    except (ValueError, UnicodeError, binascii.Error):
        raise invalid from None

    # Only what encode_cursor writes is accepted (no week dates, no zones), and
    # only our own ids reach the query: PostgreSQL would fail on a NUL.
    if (
        created_at.tzinfo is not None
        or created_at.isoformat() != created
        or not USER_ID.match(user_id)
    ):
        raise invalid

    return created_at, user_id


def referrals_page_query(
    owner_id: str,
    limit: int,
    cursor: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    external_id: str | None = None,
    email: str | None = None,
) -> Select[Referral]:
    """The query for one page, and one row more to tell whether another follows.

    Every condition narrows the owner's rows, so no filter or cursor can
    reach another owner's referrals. Times are naive UTC, like the columns.
    """
    query = _referrals_of(owner_id)
    position = decode_cursor(cursor) if cursor is not None else None
    # The cursor and createdBefore are both upper bounds in the listing's
    # order, and either implies the other when it is the tighter. Only that
    # one is sent: SQLite seeks the index with a single upper bound.
    if created_before is not None and (
        position is None or created_before <= position[0]
    ):
        query = query.where(Referral.created_at < created_before)
    elif position is not None:
        query = query.where(tuple_(Referral.created_at, Referral.user_id) < position)

    if created_after is not None:
        query = query.where(Referral.created_at >= created_after)

    if external_id is not None:
        query = query.where(Referral.external_id == external_id)

    if email is not None:
        query = query.where(User.email_key == email.lower())

    # The same order as ix_referrals_referrer_created, read backwards: a page
    # costs `limit` index entries however deep it is.
    return query.order_by(Referral.created_at.desc(), Referral.user_id.desc()).limit(
        limit + 1
    )


def list_referrals(
    principal: Principal, limit: int, **filters: Any
) -> tuple[list[ReferredUser], str | None]:
    """One page of the owner's referrals, newest first, keyset-paginated.

    `filters` are the keyword arguments of :func:`referrals_page_query`.
    """
    query = referrals_page_query(principal.owner_id, limit, **filters)
    rows = db.session.scalars(query).all()
    page = [ReferredUser.of(row) for row in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        next_cursor = encode_cursor(page[-1].created_at, page[-1].id)

    return page, next_cursor


@dataclass(frozen=True, slots=True)
class ReferralSummary:
    """How many users an owner referred, in all and lately."""

    total: int
    last_30_days: int


def summarize_referrals(principal: Principal) -> ReferralSummary:
    """Both counts in one pass over the owner's part of the referrer index."""
    since = utcnow() - timedelta(days=30)
    total, recent = db.session.execute(
        select(
            func.count(),
            func.count().filter(Referral.created_at >= since),
        ).where(Referral.referrer_id == principal.owner_id)
    ).one()

    return ReferralSummary(total, recent)
