"""Reaching the real PostgreSQL and Redis the tests run against."""

from __future__ import annotations

import os

import psycopg
import pytest
import redis
from sqlalchemy.engine import make_url

IN_CI = os.environ.get("CI", "").lower() == "true"
DATABASE_URL = os.environ.get(
    "TEST_DATABASE_URL",
    "postgresql+psycopg://postgres@127.0.0.1:5432/partner_api_test",
)
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

HOW_TO_START = {
    "postgresql": "start it with: pg_ctlcluster $(ls /etc/postgresql) main start "
    "(or set TEST_DATABASE_URL)",
    "redis": "start it with: redis-server --daemonize yes --port 6379 "
    "(or set TEST_REDIS_URL)",
}


def unavailable(service: str, error: Exception) -> None:
    """Skip with a how-to locally; under CI=true a missing service is a failure."""
    message = f"{service} is unreachable ({error}); {HOW_TO_START[service]}"
    if IN_CI:
        pytest.fail(message, pytrace=False)

    pytest.skip(message)


def _libpq(url: str) -> dict[str, object]:
    parsed = make_url(url)
    return {
        "host": parsed.host or "127.0.0.1",
        "port": parsed.port or 5432,
        "user": parsed.username or "postgres",
        "password": parsed.password,
        "connect_timeout": 3,
    }


def prepare_postgres(url: str) -> None:
    """Create the test database if needed and empty its schema."""
    name = make_url(url).database
    params = _libpq(url)
    with psycopg.connect(dbname="postgres", autocommit=True, **params) as conn:  # type: ignore[arg-type]
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
        ).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')

    with psycopg.connect(dbname=name, autocommit=True, **params) as conn:  # type: ignore[arg-type]
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")


def redis_client(url: str = REDIS_URL) -> redis.Redis:
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    client.ping()
    return client


def clear_redis(client: redis.Redis) -> None:
    """Forget every key this service wrote, and nothing else."""
    keys = list(client.scan_iter("partner_api:*", count=1000))
    if keys:
        client.delete(*keys)
