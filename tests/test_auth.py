"""Authentication with x-api-key: errors, caching, immediate revocation."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event

from partner_api import apikeys
from partner_api.extensions import db
from tests.conftest import make_app, new_key
from tests.test_users import assert_envelope

ROOT = "/v1/internal"


@contextmanager
def count_statements(app: Flask) -> Iterator[list[str]]:
    """Record every SQL statement the app's engine runs inside the block."""
    statements: list[str] = []

    def record(*args: Any) -> None:
        statements.append(args[2])

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


def test_valid_key_gets_the_version(client: FlaskClient, auth: dict[str, str]) -> None:
    response = client.get(ROOT, headers=auth)

    assert response.status_code == 200
    assert response.get_json() == {"version": "v1"}


@pytest.mark.parametrize("header", ["x-api-key", "X-API-KEY", "X-Api-Key"])
def test_header_name_is_case_insensitive_and_value_trimmed(
    client: FlaskClient, api_key: dict[str, Any], header: str
) -> None:
    response = client.get(ROOT, headers={header: f"  {api_key['key']}\t"})

    assert response.status_code == 200


@pytest.mark.parametrize("headers", [{}, {"x-api-key": ""}, {"x-api-key": "   "}])
def test_missing_key(client: FlaskClient, headers: dict[str, str]) -> None:
    assert_envelope(client.get(ROOT, headers=headers), 401, "missing_api_key")


def test_malformed_and_unknown_keys(
    client: FlaskClient, api_key: dict[str, Any]
) -> None:
    key = api_key["key"]
    unknown = apikeys.generate().plaintext
    typo = key[:-1] + ("x" if key[-1] != "x" else "y")
    for candidate in ("nope", key[:-1], typo, unknown):
        response = client.get(ROOT, headers={"x-api-key": candidate})
        body = assert_envelope(response, 401, "invalid_api_key")
        assert candidate not in response.get_data(as_text=True)
        assert body["message"] == "The API key is not valid."


def test_revoked_key_is_refused_at_once(
    client: FlaskClient, runner: Any, auth: dict[str, str], api_key: dict[str, Any]
) -> None:
    assert client.get(ROOT, headers=auth).status_code == 200

    result = runner.invoke(args=["keys", "revoke", api_key["id"]])

    assert result.exit_code == 0, result.output
    body = assert_envelope(client.get(ROOT, headers=auth), 401, "invalid_api_key")
    assert "revoked" in body["message"]


def test_revocation_reaches_every_worker(
    database_url: str, redis_url: str, app: Flask, api_key: dict[str, Any]
) -> None:
    """Two apps stand for two workers, each with its own warm cache."""
    other_worker = make_app(database_url, redis_url, reset=False)
    headers = {"x-api-key": api_key["key"]}
    workers = [app.test_client(), other_worker.test_client()]
    for worker in workers:
        assert worker.get(ROOT, headers=headers).status_code == 200

    result = app.test_cli_runner().invoke(args=["keys", "revoke", api_key["id"]])

    assert result.exit_code == 0, result.output
    for worker in workers:
        assert_envelope(worker.get(ROOT, headers=headers), 401, "invalid_api_key")


def test_expired_key_says_it_expired(
    app: Flask, client: FlaskClient, auth: dict[str, str], api_key: dict[str, Any]
) -> None:
    with app.app_context():
        db.session.execute(
            db.text("UPDATE api_keys SET expires_at = :past WHERE id = :id"),
            {"past": "2020-01-01 00:00:00", "id": api_key["id"]},
        )
        db.session.commit()

    body = assert_envelope(client.get(ROOT, headers=auth), 401, "invalid_api_key")
    assert "expired" in body["message"]


def test_steady_state_runs_no_sql(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    assert client.get(ROOT, headers=auth).status_code == 200

    with count_statements(app) as statements:
        for _ in range(20):
            assert client.get(ROOT, headers=auth).status_code == 200

    assert statements == []


def test_without_redis_every_request_checks_the_database(database_url: str) -> None:
    """No shared channel for revocations: the cache must not be trusted."""
    app = make_app(database_url, None)
    key = new_key(app, "solo@example.com")
    client = app.test_client()
    headers = {"x-api-key": key["key"]}
    assert client.get(ROOT, headers=headers).status_code == 200

    with count_statements(app) as statements:
        assert client.get(ROOT, headers=headers).status_code == 200
    revoke = app.test_cli_runner().invoke(args=["keys", "revoke", key["id"]])

    assert len(statements) == 1
    assert revoke.exit_code == 0, revoke.output
    assert client.get(ROOT, headers=headers).status_code == 401


def test_rate_limited_requests_touch_no_database(
    database_url: str, redis_url: str
) -> None:
    app = make_app(database_url, redis_url, RATE_LIMIT="2 per minute")
    headers = {"x-api-key": new_key(app)["key"]}
    client = app.test_client()
    for _ in range(2):
        client.get(ROOT, headers=headers)

    with count_statements(app) as statements:
        response = client.get(ROOT, headers=headers)

    assert_envelope(response, 429, "rate_limited")
    assert statements == []
