"""Idempotency keys: a client retries a POST and gets the first answer again.

The semantics follow Stripe's and the IETF httpapi ``Idempotency-Key`` draft.
A key belongs to the API key's owner and is kept for :data:`RETENTION`. The
request that INSERTs the key first runs; any other request with the key sees
the row instead: still running (409), another body (422), or done (a replay).

Only a fingerprint of the request is stored, never the body, which may carry
a password; the stored response never holds one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from flask import Response
from sqlalchemy import ColumnElement, CursorResult, delete, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from partner_api import apikeys
from partner_api.errors import APIError
from partner_api.extensions import db
from partner_api.models import IdempotencyKey, utcnow

log = logging.getLogger("partner_api")

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
# Printable ASCII, space included; the draft leaves the length to the server.
WELL_FORMED = re.compile(r"\A[\x20-\x7e]{1,255}\Z")
RETENTION = timedelta(hours=24)
# A claim this old belongs to a request that died with its worker: gunicorn
# kills a worker after WORKER_TIMEOUT (30 s) and PostgreSQL ends a statement
# after 10 s. Should one still run, complete() finds its claim gone and rolls
# its writes back, so a takeover never lets a request run twice.
ABANDONED_AFTER = timedelta(seconds=60)
IN_PROGRESS, DONE = "in_progress", "done"


@dataclass(frozen=True, slots=True)
class Claim:
    """The key is held for this request, since `claimed_at`."""

    owner_id: str
    key: str
    claimed_at: datetime


def parse_key(raw: str | None) -> str | None:
    """The key from the header value, None when absent; 400 when malformed."""
    if raw is None:
        return None

    if not WELL_FORMED.match(raw):
        raise APIError(
            400,
            "invalid_idempotency_key",
            f"{HEADER} must be 1 to 255 printable ASCII characters.",
        )

    # Stored for a day and shown in no listing, but stored in plain text: an
    # API key sent here by mistake must not be.
    if apikeys.holds_key(raw):
        raise APIError(
            400,
            "invalid_idempotency_key",
            f"{HEADER} looks like an API key. Send a fresh random value, such "
            "as a UUID, and the key in x-api-key only.",
        )

    return raw


def fingerprint(method: str, path: str, body: Any) -> str:
    """SHA-256 of the request: equal JSON in any key order or spacing matches."""
    # ASCII escapes keep lone surrogates encodable; the hash is all we keep.
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest()


def _in_use() -> APIError:
    return APIError(
        409,
        "idempotency_key_in_use",
        "A request with this Idempotency-Key is still being processed. Retry "
        "shortly to get its response.",
        headers={"Retry-After": "1"},
    )


def _reused() -> APIError:
    return APIError(
        422,
        "idempotency_key_reused",
        "This Idempotency-Key was used for a request with another body. Use a "
        "new key for a new request.",
    )


def _row(owner_id: str, key: str) -> ColumnElement[bool]:
    return (IdempotencyKey.owner_id == owner_id) & (IdempotencyKey.key == key)


def _held(claim: Claim) -> ColumnElement[bool]:
    # A takeover rewrites created_at: a claim that no longer matches is lost.
    return (
        _row(claim.owner_id, claim.key)
        & (IdempotencyKey.status == IN_PROGRESS)
        & (IdempotencyKey.created_at == claim.claimed_at)
    )


def _fresh(fingerprint: str, now: datetime) -> dict[str, Any]:
    return {
        "fingerprint": fingerprint,
        "status": IN_PROGRESS,
        "response_status": None,
        "response_body": None,
        "response_location": None,
        "created_at": now,
        "expires_at": now + RETENTION,
    }


def _insert(owner_id: str, key: str, fingerprint: str, now: datetime) -> bool:
    """Claim a key nobody has; False when the primary key says it is taken."""
    try:
        db.session.execute(
            insert(IdempotencyKey).values(
                owner_id=owner_id, key=key, **_fresh(fingerprint, now)
            )
        )
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        return False

    return True


def _take_over(row: IdempotencyKey, fingerprint: str, now: datetime) -> bool:
    """Claim an expired or abandoned key, unless another request got there first."""
    owner_id, key, seen = row.owner_id, row.key, row.created_at
    abandoned = row.status == IN_PROGRESS and row.expires_at > now
    # Of several requests taking over one row, only the first still finds
    # the created_at they all read.
    taken = db.session.execute(
        update(IdempotencyKey)
        .where(_row(owner_id, key), IdempotencyKey.created_at == seen)
        .values(**_fresh(fingerprint, now))
    )
    if cast(CursorResult[Any], taken).rowcount != 1:
        db.session.rollback()
        return False

    db.session.commit()
    if abandoned:
        log.warning("took over an abandoned idempotency key of %s", owner_id)

    return True


def _replay(row: IdempotencyKey) -> Response:
    response = Response(
        row.response_body, status=row.response_status, mimetype="application/json"
    )
    if row.response_location:
        response.headers["Location"] = row.response_location

    response.headers[REPLAYED_HEADER] = "true"

    return response


def claim(owner_id: str, key: str, fingerprint: str) -> Claim | Response:
    """Hold the key for this request, or answer from what the key already has.

    Returns the claim, or the stored response to replay; raises 409 while
    another request holds the key and 422 when it was used for another body.
    An expired key counts as absent, purged or not.
    """
    # A few rounds: the row we collide with may be purged or taken over meanwhile.
    for _ in range(3):
        now = utcnow()
        if _insert(owner_id, key, fingerprint, now):
            return Claim(owner_id, key, now)

        row = db.session.scalar(select(IdempotencyKey).where(_row(owner_id, key)))
        if row is None:
            continue

        if row.expires_at > now:
            if row.fingerprint != fingerprint:
                raise _reused()

            if row.status == DONE:
                return _replay(row)

            if row.created_at > now - ABANDONED_AFTER:
                raise _in_use()

        if _take_over(row, fingerprint, now):
            return Claim(owner_id, key, now)

    raise _in_use()


def complete(claim: Claim, response: Response) -> None:
    """Store the response and commit it with the request's own writes.

    One commit for both: a request never creates without recording, nor
    records without creating. If the claim was taken over meanwhile, the
    request's writes are rolled back and the client is told to retry.
    """
    stored = db.session.execute(
        update(IdempotencyKey)
        .where(_held(claim))
        .values(
            status=DONE,
            response_status=response.status_code,
            response_body=response.get_data(as_text=True),
            response_location=response.headers.get("Location"),
        )
    )
    if cast(CursorResult[Any], stored).rowcount != 1:
        db.session.rollback()
        raise _in_use()

    db.session.commit()


def release(claim: Claim) -> None:
    """Free the key after an answer not worth keeping (a 400, an error)."""
    try:
        db.session.rollback()
        db.session.execute(delete(IdempotencyKey).where(_held(claim)))
        db.session.commit()
    except SQLAlchemyError:
        # The error being raised matters more to the client; a claim left
        # behind is taken over once abandoned.
        db.session.rollback()
        log.exception("cannot release an idempotency key of %s", claim.owner_id)


def purge() -> int:
    """Delete expired keys; return how many."""
    deleted = db.session.execute(
        delete(IdempotencyKey).where(IdempotencyKey.expires_at <= utcnow())
    )
    db.session.commit()

    return cast(CursorResult[Any], deleted).rowcount
