"""Serving under gunicorn: graceful shutdown and stalled dependencies.

Real gunicorn processes on PostgreSQL and Redis; what an operator's deploy
or a locked table does to requests in flight.
"""

from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
import requests
from flask import Flask
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import OperationalError

from partner_api.stalls import MARGIN_SECONDS, REFUSE_SECONDS, StallWatchdog
from tests.conftest import make_app, new_key
from tests.live import Server
from tests.proxy import FreezableProxy

USERS = "/v1/internal/users"
BURST = 120


@pytest.fixture
def app(postgres_url: str, redis_url: str) -> Flask:
    return make_app(postgres_url, redis_url)


def serve(postgres_url: str, redis_url: str, **env: str) -> Server:
    return Server(
        {
            "DATABASE_URL": postgres_url,
            "REDIS_URL": redis_url,
            "RATE_LIMIT": "100000 per minute",
            **env,
        },
        workers=2,
    )


def burst_email(n: int) -> str:
    return f"burst-{n}@example.com"


def register(url: str, key: str, n: int) -> requests.Response:
    """Registration n, with a password so each one keeps a worker busy."""
    return requests.post(
        f"{url}{USERS}",
        json={"email": burst_email(n), "password": f"password-{n}"},
        headers={"x-api-key": key, "Idempotency-Key": f"burst-{n}"},
        timeout=30,
    )


def registered(postgres_url: str) -> dict[str, str]:
    """email -> id of every user the burst created, read from the database."""
    url = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as connection:
        rows = connection.execute(
            "SELECT email, id FROM users WHERE email LIKE 'burst-%'"
        ).fetchall()

    return {email: id_ for email, id_ in rows}


def test_sigterm_during_a_burst_of_registrations_loses_and_duplicates_none(
    app: Flask, postgres_url: str, redis_url: str
) -> None:
    key = new_key(app)["key"]
    server = serve(postgres_url, redis_url)
    answered = threading.Semaphore(0)
    results: dict[int, requests.Response | Exception] = {}

    def send(n: int) -> None:
        try:
            results[n] = register(server.url, key, n)
        except requests.ConnectionError as error:
            results[n] = error
        answered.release()

    with ThreadPoolExecutor(max_workers=12) as pool:
        for n in range(BURST):
            pool.submit(send, n)
        # A deploy arrives a quarter of the way through.
        for _ in range(BURST // 4):
            answered.acquire(timeout=30)
        server.process.send_signal(signal.SIGTERM)
        exit_code = server.process.wait(timeout=60)
    log = server.stop()

    responses = {n: r for n, r in results.items() if isinstance(r, requests.Response)}
    refused = sorted(n for n, r in results.items() if isinstance(r, Exception))
    assert exit_code == 0, log[-2000:]
    assert "WORKER TIMEOUT" not in log and "SIGKILL" not in log
    # Some requests were cut off by the shutdown; every one that was
    # answered was answered in full, with the user it created.
    assert len(responses) >= BURST // 4 and refused, (len(responses), refused)
    assert {r.status_code for r in responses.values()} == {201}
    in_database = registered(postgres_url)
    for n, response in responses.items():
        assert in_database[burst_email(n)] == response.json()["id"]

    # The partner retries what got no answer, with the same keys, on the
    # next deploy: each either registers now or replays what the first try
    # did before the connection dropped. Nothing twice, nothing missing.
    server = serve(postgres_url, redis_url)
    try:
        retries = {n: register(server.url, key, n) for n in refused}
    finally:
        server.stop()

    assert {r.status_code for r in retries.values()} == {201}
    in_database = registered(postgres_url)
    assert sorted(in_database) == sorted(burst_email(n) for n in range(BURST))
    for n, response in {**responses, **retries}.items():
        assert in_database[burst_email(n)] == response.json()["id"]


def test_a_stalled_database_is_a_503_not_a_killed_worker(
    app: Flask, postgres_url: str, redis_url: str
) -> None:
    key = new_key(app)["key"]
    headers = {"x-api-key": key}
    # Statements give up after half a second; gunicorn kills after five.
    server = serve(
        postgres_url,
        redis_url,
        DATABASE_STATEMENT_TIMEOUT_MS="500",
        WORKER_TIMEOUT="5",
    )
    url = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    try:
        # Warm every worker's key cache, so only the users table is waited on.
        for _ in range(10):
            requests.get(f"{server.url}/v1/internal", headers=headers, timeout=5)
        workers = sorted(server.worker_pids())

        stalled: list[Any] = []
        with psycopg.connect(url) as holder:
            holder.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
            for path, method, body in (
                (USERS, "POST", {"email": "stalled@example.com"}),
                ("/v1/internal/referrals", "GET", None),
            ):
                started = time.monotonic()
                response = requests.request(
                    method,
                    f"{server.url}{path}",
                    json=body,
                    headers=headers,
                    timeout=10,
                )
                stalled.append((response, time.monotonic() - started))
            holder.rollback()

        after = requests.post(
            f"{server.url}{USERS}",
            json={"email": "stalled@example.com"},
            headers=headers,
            timeout=10,
        )
        workers_after = sorted(server.worker_pids())
    finally:
        log = server.stop()

    for response, seconds in stalled:
        assert response.status_code == 503, response.text
        assert response.headers["Content-Type"] == "application/json"
        body = response.json()
        assert (body["statusCode"], body["code"]) == (503, "database_unavailable")
        assert body["requestId"] == response.headers["X-Request-ID"]
        assert response.headers["Retry-After"] == "5"
        assert seconds < 3
    assert after.status_code == 201
    assert workers_after == workers, log[-2000:]
    assert "WORKER TIMEOUT" not in log


def through_proxy(
    postgres_url: str, freeze_on: bytes | None = None
) -> tuple[FreezableProxy, URL]:
    """A relay to the test database, and the database URL that goes through it."""
    url = make_url(postgres_url)
    proxy = FreezableProxy((url.host or "127.0.0.1", url.port or 5432), freeze_on)

    return proxy, url.set(host="127.0.0.1", port=proxy.port)


def serve_through(proxied: URL, redis_url: str) -> Server:
    """Statements give up after half a second; gunicorn kills after ten."""
    return serve(
        proxied.render_as_string(hide_password=False),
        redis_url,
        DATABASE_STATEMENT_TIMEOUT_MS="500",
        WORKER_TIMEOUT="10",
    )


def assert_cut_off_not_killed(
    silent: requests.Response, log: str, workers: list[int], after: list[int]
) -> None:
    assert silent.status_code == 503, silent.text
    assert silent.json()["code"] == "database_unavailable"
    assert "cutting it off" in log
    assert after == workers, log[-2000:]
    assert "WORKER TIMEOUT" not in log


def test_a_database_gone_silent_is_a_503_not_a_killed_worker(
    app: Flask, postgres_url: str, redis_url: str
) -> None:
    """A server, pooler or network that stops answering on open connections."""
    headers = {"x-api-key": new_key(app)["key"]}
    proxy, proxied = through_proxy(postgres_url)
    server = serve_through(proxied, redis_url)
    try:
        for _ in range(6):  # every worker holds a pooled connection
            requests.get(f"{server.url}/v1/internal/referrals", headers=headers)
        workers = sorted(server.worker_pids())

        proxy.freeze()
        started = time.monotonic()
        silent = requests.get(
            f"{server.url}/v1/internal/referrals", headers=headers, timeout=15
        )
        seconds = time.monotonic() - started
        proxy.thaw()
        time.sleep(REFUSE_SECONDS)  # the worker refuses statements meanwhile

        after = requests.get(
            f"{server.url}/v1/internal/referrals", headers=headers, timeout=10
        )
        workers_after = sorted(server.worker_pids())
    finally:
        log = server.stop()
        proxy.close()

    assert_cut_off_not_killed(silent, log, workers, workers_after)
    # The deadline (0.5 s + 2 s), then a new connection's timeout (3 s).
    assert seconds < 7, seconds
    assert after.status_code == 200


def test_a_first_connection_gone_silent_is_a_503_too(
    app: Flask, postgres_url: str, redis_url: str
) -> None:
    """Silent during SQLAlchemy's own set-up queries on a worker's first connection.

    That set-up holds a lock every later connection of the worker waits for,
    so an unwatched stall there would wedge the worker until it is killed.
    """
    headers = {"x-api-key": new_key(app)["key"]}
    # The first query SQLAlchemy sends on a new engine's first connection.
    proxy, proxied = through_proxy(postgres_url, freeze_on=b"version()")
    server = serve_through(proxied, redis_url)
    try:
        workers = sorted(server.worker_pids())
        started = time.monotonic()
        silent = requests.get(f"{server.url}/v1/internal", headers=headers, timeout=15)
        seconds = time.monotonic() - started
        proxy.thaw()
        time.sleep(REFUSE_SECONDS)

        after = [
            requests.get(f"{server.url}/v1/internal", headers=headers, timeout=10)
            for _ in range(6)
        ]
        workers_after = sorted(server.worker_pids())
    finally:
        log = server.stop()
        proxy.close()

    assert_cut_off_not_killed(silent, log, workers, workers_after)
    assert seconds < 6, seconds
    assert [r.status_code for r in after] == [200] * 6


def test_after_a_cut_statements_fail_fast_for_a_while(postgres_url: str) -> None:
    """One request must not meet one stall after another and add them up."""
    proxy, proxied = through_proxy(postgres_url)
    engine = create_engine(proxied, connect_args={"connect_timeout": 3})
    StallWatchdog().watch(engine, statement_timeout_seconds=0.2)

    def select(n: int) -> object:
        with engine.connect() as connection:
            return connection.execute(text(f"SELECT {n}")).scalar()

    try:
        assert select(1) == 1
        proxy.freeze()
        started = time.monotonic()
        with pytest.raises(OperationalError):
            select(2)
        cut_after = time.monotonic() - started
        proxy.thaw()

        started = time.monotonic()
        with pytest.raises(OperationalError, match="went silent"):
            select(3)
        refused_after = time.monotonic() - started

        time.sleep(REFUSE_SECONDS)
        recovered = select(4)
    finally:
        engine.dispose()
        proxy.close()

    assert 0.2 + MARGIN_SECONDS <= cut_after < 0.2 + MARGIN_SECONDS + 1.5
    assert refused_after < 0.5
    assert recovered == 4
