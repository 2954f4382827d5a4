"""Configuration, read once from the environment when the app is created."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from limits import parse_many
from limits.strategies import STRATEGIES

STORAGE_ERROR_POLICIES = ("memory", "open", "closed")
# "per 0 minutes" parses as one minute in limits; refuse a zero multiple.
MULTIPLE = re.compile(r"(?:per|/)\s*(?:[1-9]\d*\s*)?[a-z]+\s*\Z", re.IGNORECASE)

LOOPBACK = "127.0.0.0/8,::1/128"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(RuntimeError):
    """A setting is missing or malformed; the service refuses to start."""


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default

    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None

    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")

    return value


def _choice(env: Mapping[str, str], name: str, default: str, allowed: Any) -> str:
    value = env.get(name, "").strip() or default
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")

    return value


def _limit(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, "").strip() or default
    if not value:
        return value

    try:
        items = parse_many(value)
    except ValueError:
        items = []

    # One limit, of at least one request, over a window of at least one unit.
    if len(items) != 1 or items[0].amount < 1 or not MULTIPLE.search(value):
        raise ConfigError(
            f"{name} must be one rate limit such as '100 per 15 minutes', got {value!r}"
        )

    return value


def _networks(env: Mapping[str, str], name: str, default: str) -> tuple[Network, ...]:
    value = env.get(name, "").strip() or default
    try:
        return tuple(
            ipaddress.ip_network(part.strip(), strict=False)
            for part in value.split(",")
            if part.strip()
        )
    except ValueError as error:
        raise ConfigError(
            f"{name} must list networks such as {default}: {error}"
        ) from None


def _database_url(env: Mapping[str, str], instance_path: str) -> str:
    url = env.get("DATABASE_URL", "").strip()
    if not url:
        return f"sqlite:///{Path(instance_path) / 'partner_api.sqlite3'}"

    # Hosted providers hand out postgres:// URLs; SQLAlchemy wants a driver name.
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]

    return url


def _engine_options(url: str, statement_timeout_ms: int) -> dict[str, Any]:
    # Statement parameters hold emails, names and password hashes: keep them
    # out of exception messages, and so out of every log.
    if url.startswith("sqlite"):
        # Wait for a concurrent writer instead of failing with "database is locked".
        return {"hide_parameters": True, "connect_args": {"timeout": 15}}

    # Fail fast when PostgreSQL stalls: a 503 beats a worker killed by gunicorn.
    return {
        "hide_parameters": True,
        "pool_pre_ping": True,
        "pool_size": 5,
        "pool_timeout": 5,
        "connect_args": {
            "connect_timeout": 3,
            "options": f"-c statement_timeout={statement_timeout_ms}",
        },
    }


def from_env(env: Mapping[str, str], instance_path: str) -> dict[str, Any]:
    """Build the Flask config mapping from environment variables."""
    database_url = _database_url(env, instance_path)
    # Well under gunicorn's worker timeout (30 s), which would kill the worker.
    statement_timeout_ms = _int(env, "DATABASE_STATEMENT_TIMEOUT_MS", 10_000, 1)
    rate_limit = _limit(env, "RATE_LIMIT", "100 per 15 minutes")

    return {
        "SQLALCHEMY_DATABASE_URI": database_url,
        "SQLALCHEMY_ENGINE_OPTIONS": _engine_options(
            database_url, statement_timeout_ms
        ),
        "DATABASE_STATEMENT_TIMEOUT_MS": statement_timeout_ms,
        "REDIS_URL": env.get("REDIS_URL", "").strip() or None,
        "RATE_LIMIT": rate_limit,
        "RATE_LIMIT_PER_KEY": _limit(env, "RATE_LIMIT_PER_KEY", "") or None,
        "RATE_LIMIT_STRATEGY": _choice(
            env, "RATE_LIMIT_STRATEGY", "moving-window", sorted(STRATEGIES)
        ),
        "RATE_LIMIT_ON_STORAGE_ERROR": _choice(
            env, "RATE_LIMIT_ON_STORAGE_ERROR", "memory", STORAGE_ERROR_POLICIES
        ),
        "TRUSTED_PROXY_HOPS": _int(env, "TRUSTED_PROXY_HOPS", 0),
        "MAX_CONTENT_LENGTH": _int(env, "MAX_BODY_BYTES", 64 * 1024, minimum=1),
        "KEY_CACHE_SECONDS": _int(env, "KEY_CACHE_SECONDS", 60),
        "LOG_LEVEL": env.get("LOG_LEVEL", "").strip().upper() or "INFO",
        # OPTIONS gets the 405 envelope like any other unsupported method.
        "PROVIDE_AUTOMATIC_OPTIONS": False,
        "METRICS_ALLOWED_NETWORKS": _networks(
            env, "METRICS_ALLOWED_NETWORKS", LOOPBACK
        ),
    }


def load(overrides: Mapping[str, str] | None, instance_path: str) -> dict[str, Any]:
    """Read the environment, with `overrides` taking the place of some variables."""
    return from_env({**os.environ, **(overrides or {})}, instance_path)
