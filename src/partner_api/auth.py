"""API key authentication, with a per-process cache that never outlives a revoke.

Steady state costs no SQL: a key seen recently is served from memory. Every
revoke or roll writes a new generation token to Redis; each request reads it
and drops the whole cache when it changed, so a revoked key fails on the next
request on every worker. Without a reachable Redis there is no safe way to
hear about revokes, so every request looks the key up in the database instead.
"""

from __future__ import annotations

import hmac
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import Flask, current_app, g, request
from redis.exceptions import RedisError
from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError

from partner_api import apikeys, audit
from partner_api.errors import APIError
from partner_api.extensions import db, rate_limiter
from partner_api.models import ApiKey, key_status, utcnow
from partner_api.schemas import isoformat

log = logging.getLogger("partner_api")

GENERATION_KEY = "partner_api:keys:generation"
HEADER = "x-api-key"
# last_used_at is written at most this often per key and worker.
TOUCH_SECONDS = 30.0
# Query parameters where people put keys; naming them earns a clear 401.
KEY_PARAMETERS = ("api_key", "apikey", "api-key", "x-api-key", "x_api_key", "key")
_MISSING = object()


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the key and the owner it was issued to."""

    key_id: str
    key_hash: str
    owner_id: str
    name: str
    display_prefix: str
    created_at: datetime
    expires_at: datetime | None

    @property
    def status(self) -> str:
        return key_status(None, self.expires_at)

    def expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= utcnow()


class KeyCache:
    """Recently verified keys of this process, by hash."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[Principal, float]] = {}
        self._generation: Any = _MISSING
        self._touched: dict[str, float] = {}

    def get(self, key_hash: str, generation: Any, max_age: float) -> Principal | None:
        if generation != self._generation:
            self._entries.clear()
            self._generation = generation
            return None

        entry = self._entries.get(key_hash)
        if entry is None or time.monotonic() - entry[1] > max_age:
            return None

        return entry[0]

    def put(self, principal: Principal) -> None:
        self._entries[principal.key_hash] = (principal, time.monotonic())

    def drop(self, key_hash: str) -> None:
        self._entries.pop(key_hash, None)

    def drop_all(self) -> None:
        self._entries.clear()

    def due_for_touch(self, key_id: str) -> bool:
        """True at most once per TOUCH_SECONDS for each key."""
        now = time.monotonic()
        if now - self._touched.get(key_id, -TOUCH_SECONDS) < TOUCH_SECONDS:
            return False

        self._touched[key_id] = now
        return True


def init_app(app: Flask) -> None:
    app.extensions["partner_api.key_cache"] = KeyCache()


def _cache() -> KeyCache:
    cache: KeyCache = current_app.extensions["partner_api.key_cache"]
    return cache


def _current_generation() -> Any:
    """The revoke counter, or _MISSING when it cannot be read."""
    client = rate_limiter.redis
    if client is None:
        return _MISSING

    try:
        return client.get(GENERATION_KEY)
    except RedisError:
        log.warning("cannot read the key generation; checking keys in the database")
        return _MISSING


def announce_key_change() -> bool:
    """Tell every worker to forget cached keys. False when Redis is unreachable."""
    client = rate_limiter.redis
    if client is None:
        return not rate_limiter.shared

    # A fresh random token rather than a counter: a Redis that restarted empty
    # and counted up again could repeat a value a worker still holds.
    try:
        client.set(GENERATION_KEY, uuid.uuid4().hex)
    except RedisError as error:
        log.warning("cannot announce a key change through Redis: %s", error)
        return False

    return True


def _invalid(message: str = "The API key is not valid.") -> APIError:
    return APIError(401, "invalid_api_key", message)


def _missing() -> APIError:
    if request.headers.get("Authorization", "").lower().startswith("bearer"):
        message = (
            f"Send your API key in the {HEADER} header; the Authorization "
            "header is not read."
        )
    elif any(name in request.args for name in KEY_PARAMETERS):
        message = (
            "API keys in the URL are never accepted (URLs end up in logs). "
            f"Send your API key in the {HEADER} header."
        )
    else:
        message = f"Send your API key in the {HEADER} header."

    return APIError(401, "missing_api_key", message)


def _load(key_hash: str) -> Principal:
    row = db.session.scalar(select(ApiKey).where(ApiKey.key_hash == key_hash))
    if row is None or not hmac.compare_digest(row.key_hash, key_hash):
        raise _invalid()

    if row.revoked_at is not None:
        raise _invalid("The API key has been revoked.")

    return Principal(
        row.id,
        row.key_hash,
        row.owner_id,
        row.name,
        row.display_prefix,
        row.created_at,
        row.expires_at,
    )


def _record_expiry(principal: Principal) -> None:
    """Audit the expiry once, whichever worker meets it first."""
    claimed = db.session.execute(
        update(ApiKey)
        .where(ApiKey.id == principal.key_id, ApiKey.expiry_recorded_at.is_(None))
        .values(expiry_recorded_at=utcnow())
    )
    if claimed.rowcount:  # type: ignore[attr-defined]
        audit.record(
            "key.expired",
            "expired",
            actor="system",
            owner_id=principal.owner_id,
            key_id=principal.key_id,
        )

    db.session.commit()


def _touch(principal: Principal) -> None:
    """Keep last_used_at current to within a minute, not a write per request."""
    if not _cache().due_for_touch(principal.key_id):
        return

    try:
        db.session.execute(
            update(ApiKey)
            .where(ApiKey.id == principal.key_id)
            .values(last_used_at=utcnow())
        )
        db.session.commit()
    except SQLAlchemyError:
        # Serving matters more than the timestamp; the next touch retries.
        db.session.rollback()
        log.warning("cannot record last use of key %s", principal.key_id)


def authenticate() -> Principal:
    """Resolve the caller from ``x-api-key`` or raise a 401 envelope."""
    raw = request.headers.get(HEADER)
    if raw is None or not raw.strip():
        raise _missing()

    plaintext = raw.strip()
    if not apikeys.is_well_formed(plaintext):
        raise _invalid()

    key_hash = apikeys.hash_key(plaintext)
    generation = _current_generation()
    principal = None
    if generation is not _MISSING:
        max_age = current_app.config["KEY_CACHE_SECONDS"]
        principal = _cache().get(key_hash, generation, max_age)

    if principal is None:
        principal = _load(key_hash)
        if generation is not _MISSING:
            _cache().put(principal)

    if principal.expired():
        _cache().drop(key_hash)
        _record_expiry(principal)
        assert principal.expires_at is not None
        raise _invalid(
            f"The API key expired at {isoformat(principal.expires_at)}. "
            "Ask your operator to roll it for a new one."
        )

    g.principal = principal
    _touch(principal)

    return principal
