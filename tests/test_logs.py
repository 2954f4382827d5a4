"""Log lines: one JSON line per request, request ids everywhere, no secrets."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator

import pytest
import requests
from flask import Flask

from partner_api import create_app
from tests.conftest import make_app, new_key
from tests.live import Server
from tests.test_users import assert_envelope

USERS = "/v1/internal/users"
REQUEST_FIELDS = {
    "method",
    "path",
    "status",
    "duration_ms",
    "client_ip",
    "key_id",
    "request_id",
}


def request_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "partner_api" and r.getMessage() == "request"
    ]


@pytest.fixture
def keyed(sqlite_url: str, redis_url: str) -> Flask:
    """One database is enough: logging does not depend on it."""
    return make_app(sqlite_url, redis_url)


def test_one_request_line_with_every_field(
    keyed: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    key = new_key(keyed)
    client = keyed.test_client()
    caplog.set_level(logging.INFO, logger="partner_api")

    client.get(
        "/v1/internal?token=hunter2",
        headers={"x-api-key": key["key"], "X-Request-ID": "req-1"},
    )

    [line] = request_lines(caplog)
    assert line.levelno == logging.INFO
    fields = {name: getattr(line, name) for name in REQUEST_FIELDS}
    assert fields["method"] == "GET"
    assert fields["path"] == "/v1/internal"
    assert fields["status"] == 200
    assert fields["client_ip"] == "127.0.0.1"
    assert fields["key_id"] == key["id"]
    assert fields["request_id"] == "req-1"
    assert 0 < fields["duration_ms"] < 5000
    assert "hunter2" not in caplog.text


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nowhere", 404),
        ("POST", "/healthz", 405),
        ("GET", "/v1/internal", 401),
        ("GET", "/healthz", 200),
    ],
)
def test_every_outcome_is_logged_once(
    keyed: Flask,
    caplog: pytest.LogCaptureFixture,
    method: str,
    path: str,
    status: int,
) -> None:
    caplog.set_level(logging.INFO, logger="partner_api")

    response = keyed.test_client().open(path, method=method)

    [line] = request_lines(caplog)
    assert response.status_code == line.status == status
    assert line.request_id == response.headers["X-Request-ID"]  # type: ignore[attr-defined]


def test_rate_limited_requests_are_logged(
    sqlite_url: str, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(sqlite_url, redis_url, RATE_LIMIT="1 per minute")
    client = app.test_client()
    caplog.set_level(logging.INFO, logger="partner_api")

    statuses = [client.get("/v1/internal").status_code for _ in range(2)]

    assert statuses == [401, 429]
    assert [line.status for line in request_lines(caplog)] == [401, 429]  # type: ignore[attr-defined]


def test_a_key_in_the_path_is_redacted(
    keyed: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    key = new_key(keyed)["key"]
    caplog.set_level(logging.INFO, logger="partner_api")

    keyed.test_client().get(f"/v1/internal/users/{key}", headers={"x-api-key": key})

    [line] = request_lines(caplog)
    assert line.path == "/v1/internal/users/[redacted]"  # type: ignore[attr-defined]
    assert key not in caplog.text


def test_failure_logs_a_traceback_and_answers_with_the_request_id(
    keyed: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    @keyed.get("/boom")
    def boom() -> None:
        raise RuntimeError("internals")

    keyed.config["TESTING"] = False  # as in production: no exception propagation
    caplog.set_level(logging.INFO, logger="partner_api")

    response = keyed.test_client().get("/boom", headers={"X-Request-ID": "req-500"})

    body = assert_envelope(response, 500, "internal_error")
    assert body["requestId"] == "req-500"
    [failure] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert failure.exc_info is not None
    assert failure.request_id == "req-500"  # type: ignore[attr-defined]
    assert request_lines(caplog)[0].status == 500  # type: ignore[attr-defined]


def test_client_errors_carry_no_request_id_in_the_body(keyed: Flask) -> None:
    body = assert_envelope(keyed.test_client().get("/nowhere"), 404, "not_found")

    assert "requestId" not in body


def test_without_host_logging_lines_are_json(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logger = logging.getLogger("partner_api")
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers.clear()
    try:
        app = create_app({"DATABASE_URL": "sqlite://", "REDIS_URL": ""})
        app.test_client().get("/healthz", headers={"X-Request-ID": "req-json"})
    finally:
        for handler in logger.handlers[:]:
            logger.removeHandler(handler)
        root.handlers[:] = saved

    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    [line] = [line for line in lines if line["message"] == "request"]
    assert line["level"] == "INFO" and line["logger"] == "partner_api"
    assert REQUEST_FIELDS | {"time"} <= set(line)
    assert line["request_id"] == "req-json"


# --- under gunicorn: the whole output of a real server -----------------------


@pytest.fixture
def live(postgres_url: str, redis_url: str) -> Iterator[tuple[Flask, Server]]:
    app = make_app(postgres_url, redis_url)
    server = Server(
        {
            "DATABASE_URL": postgres_url,
            "REDIS_URL": redis_url,
            "RATE_LIMIT": "1000 per minute",
        },
        workers=2,
    )
    yield app, server
    server.stop()


def test_gunicorn_output_is_json_and_holds_no_secret(
    live: tuple[Flask, Server],
) -> None:
    app, server = live
    keys = [new_key(app, f"owner{n}@example.com") for n in range(2)]
    secrets = [key["key"] for key in keys]
    statuses = []
    with requests.Session() as session:
        for n in range(6):
            key = secrets[n % 2]
            password = f"pw-{uuid.uuid4().hex}"
            secrets.append(password)
            response = session.post(
                f"{server.url}{USERS}",
                json={"email": f"user{n}@example.com", "password": password},
                headers={"x-api-key": key, "X-Request-ID": f"reg-{n}"},
                timeout=10,
            )
            statuses.append(response.status_code)

        # Secrets where clients put them by mistake: a query, a path, a bad key.
        for url in (
            f"{server.url}/v1/internal?api_key={secrets[0]}",
            f"{server.url}/v1/internal/users/{secrets[1]}",
        ):
            session.get(url, headers={"x-api-key": secrets[0]}, timeout=10)

        wrong = secrets[0][:-1] + ("A" if secrets[0][-1] != "A" else "B")
        secrets.append(wrong)
        session.get(
            f"{server.url}/v1/internal", headers={"x-api-key": wrong}, timeout=10
        )

    output = server.stop()

    assert statuses == [201] * 6
    lines = [json.loads(line) for line in output.splitlines() if line.strip()]
    for secret in secrets:
        assert secret not in output
    registered = [
        line for line in lines if line.get("path") == USERS and line["status"] == 201
    ]
    assert sorted(line["request_id"] for line in registered) == [
        f"reg-{n}" for n in range(6)
    ]
    assert {line["key_id"] for line in registered} == {key["id"] for key in keys}
    gunicorn_lines = [line for line in lines if line["logger"] == "gunicorn.error"]
    assert gunicorn_lines, "gunicorn's own lines are JSON too"
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
