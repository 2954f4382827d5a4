"""API key authentication, with a per-process cache that never outlives a revoke.

Steady state costs no SQL: a key seen recently is served from memory. Every
revoke bumps a generation counter in Redis; each request reads it and drops
the whole cache when it moved, so a revoked key fails on the next request on
every worker. Without a reachable Redis there is no safe way to hear about
revokes, so every request looks the key up in the database instead.
"""

from __future__ import annotations

import hmac
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import Flask, current_app, g, request
from redis.exceptions import RedisError
from sqlalchemy import select

from partner_api import apikeys
from partner_api.errors import APIError
from partner_api.extensions import db, rate_limiter
from partner_api.models import ApiKey, utcnow

log = logging.getLogger("partner_api")

GENERATION_KEY = "partner_api:keys:generation"
HEADER = "x-api-key"
_MISSING = object()


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the key and the owner it was issued to."""

    key_id: str
    key_hash: str
    owner_id: str
    expires_at: datetime | None


class KeyCache:
    """Recently verified keys of this process, by hash."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[Principal, float]] = {}
        self._generation: Any = _MISSING

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

    def clear(self) -> None:
        self._entries.clear()
        self._generation = _MISSING


def init_app(app: Flask) -> None:
    app.extensions["partner_api.key_cache"] = KeyCache()


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

    try:
        client.incr(GENERATION_KEY)
    except RedisError:
        log.exception("cannot announce a key change through Redis")
        return False

    return True


def _invalid(message: str = "The API key is not valid.") -> APIError:
    return APIError(401, "invalid_api_key", message)


def _load(key_hash: str) -> Principal:
    row = db.session.scalar(select(ApiKey).where(ApiKey.key_hash == key_hash))
    if row is None or not hmac.compare_digest(row.key_hash, key_hash):
        raise _invalid()

    if row.revoked_at is not None:
        raise _invalid("The API key has been revoked.")

    return Principal(row.id, row.key_hash, row.owner_id, row.expires_at)


def authenticate() -> Principal:
    """Resolve the caller from ``x-api-key`` or raise a 401 envelope."""
    raw = request.headers.get(HEADER)
    if raw is None or not raw.strip():
        raise APIError(
            401,
            "missing_api_key",
            f"Send your API key in the {HEADER} header.",
        )

    plaintext = raw.strip()
    if not apikeys.is_well_formed(plaintext):
        raise _invalid()

    key_hash = apikeys.hash_key(plaintext)
    generation = _current_generation()
    principal = None
    if generation is not _MISSING:
        cache = current_app.extensions["partner_api.key_cache"]
        max_age = current_app.config["KEY_CACHE_SECONDS"]
        principal = cache.get(key_hash, generation, max_age)

    if principal is None:
        principal = _load(key_hash)
        if generation is not _MISSING:
            current_app.extensions["partner_api.key_cache"].put(principal)

    if principal.expires_at is not None and principal.expires_at <= utcnow():
        raise _invalid("The API key has expired. Ask for a new key.")

    g.principal = principal

    return principal
