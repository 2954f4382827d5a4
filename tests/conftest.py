"""Fixtures: apps on SQLite and PostgreSQL, with a real Redis."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import flask_migrate
import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner

from partner_api import create_app
from partner_api.cli import issue_key
from partner_api.extensions import db
from partner_api.models import User
from tests import services

TABLES = ("idempotency_keys", "audit_events", "referrals", "api_keys", "users")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The test Redis, checked once; skipped (or failed in CI) when down."""
    try:
        services.redis_client()
    except Exception as error:
        services.unavailable("redis", error)

    return services.REDIS_URL


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.sqlite3'}"


_migrated: set[str] = set()


def _migrate_once(app: Flask, url: str) -> None:
    """Build each test database once per session, through the real migrations."""
    if url in _migrated:
        return

    # Alembic's env.py configures logging from alembic.ini, replacing the
    # root handlers through which pytest captures log records.
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    with app.app_context():
        flask_migrate.upgrade()

    root.handlers[:], root.level = handlers, level
    _migrated.add(url)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The test PostgreSQL database, emptied once per session."""
    try:
        services.prepare_postgres(services.DATABASE_URL)
    except Exception as error:
        services.unavailable("postgresql", error)

    return services.DATABASE_URL


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    """Each database test runs on both the embedded and the production database."""
    if request.param == "sqlite":
        return sqlite_url

    url: str = request.getfixturevalue("postgres_url")
    return url


def make_app(
    database_url: str, redis_url: str | None, reset: bool = True, **settings: str
) -> Flask:
    """An app on the given services; `reset` empties the tables and Redis keys."""
    app = create_app(
        {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url or "",
            "RATE_LIMIT": "1000 per minute",
            **settings,
        }
    )
    app.config["TESTING"] = True
    _apps.append(app)
    _migrate_once(app, database_url)
    if not reset:
        return app

    with app.app_context():
        for table in TABLES:
            db.session.execute(db.text(f"DELETE FROM {table}"))

        db.session.commit()

    if redis_url:
        services.clear_redis(services.redis_client(redis_url))

    return app


_apps: list[Flask] = []


@pytest.fixture(autouse=True)
def _close_connections() -> Iterator[None]:
    """Close the pools of every app a test built, so no connection leaks."""
    yield
    while _apps:
        with _apps.pop().app_context():
            db.engine.dispose()


@pytest.fixture
def app(database_url: str, redis_url: str) -> Flask:
    """The app on one of the two databases, counting limits in Redis."""
    return make_app(database_url, redis_url)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A test client for `app`."""
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    """Runs `partner-api` commands against `app`."""
    return app.test_cli_runner()


def new_key(app: Flask, owner_email: str = "partner@example.com") -> dict[str, Any]:
    """Issue a key for an owner (created if new): its id, plaintext and owner id."""
    with app.app_context():
        owner = db.session.scalar(
            db.select(User).where(User.email_key == owner_email.lower())
        )
        if owner is None:
            owner = User(email=owner_email, email_key=owner_email.lower())

        row, plaintext = issue_key(owner, "test")
        return {"id": row.id, "key": plaintext, "owner_id": row.owner_id}


@pytest.fixture
def api_key(app: Flask) -> dict[str, Any]:
    """A live key for partner@example.com."""
    return new_key(app)


@pytest.fixture
def auth(api_key: dict[str, Any]) -> dict[str, str]:
    """Headers that authenticate as `api_key`."""
    return {"x-api-key": api_key["key"]}
