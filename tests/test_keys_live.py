"""Key lifecycle over HTTP across gunicorn workers, and no secret in any log."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator

import pytest
import requests
from flask import Flask

from tests.conftest import make_app
from tests.live import Server

ROOT = "/v1/internal"


@pytest.fixture
def app_and_server(postgres_url: str, redis_url: str) -> Iterator[tuple[Flask, Server]]:
    app = make_app(postgres_url, redis_url)
    server = Server(
        {
            "DATABASE_URL": postgres_url,
            "REDIS_URL": redis_url,
            "RATE_LIMIT": "1000 per minute",
            "LOG_LEVEL": "DEBUG",
        },
        workers=4,
    )
    yield app, server
    server.stop()


def statuses(server: Server, key: str, count: int = 24) -> set[int]:
    """Status codes of `count` requests on fresh connections (spread over workers)."""
    return {
        requests.get(
            f"{server.url}{ROOT}", headers={"x-api-key": key}, timeout=5
        ).status_code
        for _ in range(count)
    }


def cli(app: Flask, *args: str) -> dict[str, str]:
    result = app.test_cli_runner().invoke(args=[*args, "--json"])
    assert result.exit_code == 0, result.output
    parsed: dict[str, str] = json.loads(result.output)
    return parsed


def test_lifecycle_across_workers_with_no_secret_in_any_log(
    app_and_server: tuple[Flask, Server], caplog: pytest.LogCaptureFixture
) -> None:
    app, server = app_and_server
    caplog.set_level(logging.DEBUG)
    passwords = ["first-Passw0rd!", "second-Passw0rd?"]

    created = cli(app, "keys", "create", "--owner", "ops@example.com", "--name", "crm")
    assert statuses(server, created["key"]) == {200}
    for n, password in enumerate(passwords):
        response = requests.post(
            f"{server.url}{ROOT}/users",
            headers={"x-api-key": created["key"]},
            json={"email": f"user{n}@example.com", "password": password},
            timeout=30,
        )
        assert response.status_code == 201
    # Mistakes partners make: the key in the URL, in Authorization, mistyped.
    requests.get(f"{server.url}{ROOT}?api_key={created['key']}", timeout=5)
    requests.get(
        f"{server.url}{ROOT}",
        headers={"Authorization": f"Bearer {created['key']}"},
        timeout=5,
    )
    typo = created["key"][:-1] + ("A" if created["key"][-1] != "A" else "B")
    assert statuses(server, typo, 4) == {401}

    # Roll with a two-second grace: the old key works before, fails after.
    rolled = cli(app, "keys", "roll", created["id"], "--grace", str(2 / 3600))
    assert statuses(server, created["key"], 8) == {200}
    assert statuses(server, rolled["key"]) == {200}
    time.sleep(2.5)
    expired = requests.get(
        f"{server.url}{ROOT}", headers={"x-api-key": created["key"]}, timeout=5
    )
    assert expired.status_code == 401 and "expired" in expired.json()["message"]
    assert statuses(server, created["key"]) == {401}
    assert statuses(server, rolled["key"]) == {200}

    cli(app, "keys", "revoke", rolled["id"])
    assert statuses(server, rolled["key"]) == {401}

    shown = cli(app, "keys", "show", rolled["id"])
    assert shown["status"] == "revoked" and shown["lastUsedAt"] is not None

    # The service's logs: the server's output and the CLI's records (urllib3's
    # are this test's own client, which does log the URL it was given).
    service_records = [r for r in caplog.records if not r.name.startswith("urllib3")]
    logs = server.stop() + "\n".join(r.getMessage() for r in service_records)
    assert '"path": "/v1/internal"' in logs  # the request lines were captured
    secrets = [created["key"], rolled["key"], typo, *passwords]
    for secret in secrets:
        assert secret not in logs
    # Nor the secret part alone, however a log line might split a key.
    for key in (created["key"], rolled["key"]):
        assert key.rsplit("_", 1)[1] not in logs
