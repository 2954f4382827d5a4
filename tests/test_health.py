"""Liveness and readiness: /healthz and /readyz, with dependencies up and down."""

from __future__ import annotations

import time

from flask import Flask

from partner_api import create_app
from tests.conftest import make_app
from tests.live import free_port
from tests.redis_servers import BlackHole
from tests.test_users import assert_envelope


def dead_postgres() -> str:
    return f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nothing"


def test_ready_when_database_and_redis_answer(app: Flask) -> None:
    response = app.test_client().get("/readyz")

    assert response.status_code == 200
    assert response.get_json() == {
        "status": "ready",
        "checks": {"database": "ok", "redis": "ok"},
    }


def test_redis_not_configured_is_not_a_failure(sqlite_url: str) -> None:
    app = make_app(sqlite_url, None)

    response = app.test_client().get("/readyz")

    assert response.status_code == 200
    assert response.get_json()["checks"] == {
        "database": "ok",
        "redis": "not configured",
    }


def test_database_down_is_503_naming_it(redis_url: str) -> None:
    app = create_app({"DATABASE_URL": dead_postgres(), "REDIS_URL": redis_url})

    response = app.test_client().get("/readyz", headers={"X-Request-ID": "probe-1"})

    body = assert_envelope(response, 503, "not_ready")
    assert body["details"] == {"database": ["unreachable"]}
    assert "database" in body["message"] and "redis" not in body["message"]
    assert body["requestId"] == "probe-1"
    assert response.headers["Retry-After"]


def test_redis_down_is_503_naming_it(sqlite_url: str) -> None:
    app = make_app(sqlite_url, None, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")

    response = app.test_client().get("/readyz")

    body = assert_envelope(response, 503, "not_ready")
    assert body["details"] == {"redis": ["unreachable"]}


def test_a_hanging_database_is_reported_within_the_deadline(redis_url: str) -> None:
    hole = BlackHole()
    url = f"postgresql+psycopg://postgres@127.0.0.1:{hole.port}/nothing"
    app = create_app({"DATABASE_URL": url, "REDIS_URL": redis_url})
    try:
        started = time.monotonic()
        response = app.test_client().get("/readyz")
        elapsed = time.monotonic() - started
    finally:
        hole.close()

    body = assert_envelope(response, 503, "not_ready")
    assert body["details"] == {"database": ["timed out"]}
    assert elapsed < 2.0


def test_probes_need_no_key_and_are_never_counted(
    sqlite_url: str, redis_url: str
) -> None:
    app = make_app(sqlite_url, redis_url, RATE_LIMIT="1 per minute")
    client = app.test_client()

    probes = {client.get(path).status_code for path in ["/healthz", "/readyz"] * 3}

    assert probes == {200}
    assert "X-RateLimit-Limit" not in client.get("/readyz").headers
    assert client.get("/v1/internal").status_code == 401
