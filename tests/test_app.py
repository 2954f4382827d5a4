"""The factory, and errors that no view raises on purpose."""

from __future__ import annotations

import pytest
from flask import Flask
from sqlalchemy.exc import DBAPIError

from partner_api import apikeys, create_app
from partner_api.extensions import db
from tests.live import free_port
from tests.test_users import assert_envelope


def test_factory_registers_the_api(app: Flask) -> None:
    rules = {rule.rule for rule in app.url_map.iter_rules()}

    assert {"/healthz", "/v1/internal", "/v1/internal/users"} <= rules
    assert app.config["RATE_LIMIT"] == "1000 per minute"
    assert app.config["MAX_CONTENT_LENGTH"] == 64 * 1024


def test_defaults_use_embedded_sqlite() -> None:
    app = create_app({"DATABASE_URL": "", "REDIS_URL": "", "RATE_LIMIT": ""})

    assert app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite:///")
    assert app.config["SQLALCHEMY_DATABASE_URI"].endswith("partner_api.sqlite3")
    assert app.config["RATE_LIMIT"] == "100 per 15 minutes"
    assert app.config["TRUSTED_PROXY_HOPS"] == 0


def test_unhandled_error_is_an_envelope_without_traceback(app: Flask) -> None:
    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret internals")

    app.config["TESTING"] = False  # as in production: no exception propagation
    response = app.test_client().get("/boom")

    assert_envelope(response, 500, "internal_error")
    assert "secret internals" not in response.get_data(as_text=True)
    assert "Traceback" not in response.get_data(as_text=True)


def test_unreachable_database_is_503(redis_url: str) -> None:
    dead = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nothing"
    app = create_app({"DATABASE_URL": dead, "REDIS_URL": redis_url})
    # Only a well-formed key gets as far as the database.
    key = apikeys.generate().plaintext

    response = app.test_client().get("/v1/internal", headers={"x-api-key": key})

    body = assert_envelope(response, 503, "database_unavailable")
    assert "psycopg" not in str(body) and "nothing" not in str(body)
    assert response.headers["Retry-After"]


def test_unknown_paths_everywhere_are_json(app: Flask) -> None:
    client = app.test_client()
    for path in ("/", "/v2/internal", "/static/x.css", "/healthz/extra"):
        assert_envelope(client.get(path), 404, "not_found")

    response = client.post("/healthz")
    assert_envelope(response, 405, "method_not_allowed")
    assert "GET" in response.headers["Allow"]
    assert_envelope(client.options("/v1/internal"), 405, "method_not_allowed")
    # Doubled slashes are not merged into a redirect with an HTML body.
    assert_envelope(client.get("/v1//internal"), 404, "not_found")


def test_database_errors_never_carry_statement_parameters(app: Flask) -> None:
    with app.app_context():
        try:
            db.session.execute(
                db.text("SELECT CAST(:value AS TEXT), 1 / 0"),
                {"value": "secret-parameter"},
            )
        except DBAPIError as error:
            assert "division by zero" in str(error)
            assert "secret-parameter" not in str(error)
        else:
            # SQLite divides by zero into NULL rather than failing.
            assert app.config["SQLALCHEMY_ENGINE_OPTIONS"]["hide_parameters"]


def test_request_id_is_kept_or_generated(app: Flask) -> None:
    client = app.test_client()

    kept = client.get("/v1/internal", headers={"X-Request-ID": "req-42.abc"})
    replaced = client.get("/v1/internal", headers={"X-Request-ID": "bad id\u00e9"})
    # A key pasted into the wrong header must not be echoed, logged or stored.
    key = apikeys.generate().plaintext
    not_a_key = client.get("/healthz", headers={"X-Request-ID": key})
    generated = client.get("/healthz")

    assert kept.headers["X-Request-ID"] == "req-42.abc"
    assert replaced.headers["X-Request-ID"] != "bad id\u00e9"
    assert "pak_" not in not_a_key.headers["X-Request-ID"]
    assert len(generated.headers["X-Request-ID"]) == 32


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v1/internal", 200),
        ("GET", "/v1/internal", 401),
        ("POST", "/v1/internal/users", 400),
        ("GET", "/v1/nowhere", 404),
        ("GET", "/healthz", 200),
        ("PUT", "/healthz", 405),
    ],
)
def test_security_headers_on_every_response(
    app: Flask, auth: dict[str, str], method: str, path: str, status: int
) -> None:
    headers = auth if status != 401 else {}
    response = app.test_client().open(path, method=method, headers=headers, json=[])

    assert response.status_code == status
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Content-Security-Policy"] == (
        "default-src 'none'; frame-ancestors 'none'"
    )
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Cache-Control"] == "no-store"
