"""The service under gunicorn with several workers: what only real processes show."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from flask import Flask

from partner_api import apikeys
from tests.conftest import new_key
from tests.live import Server

USERS = "/v1/internal/users"


@pytest.fixture
def server(app: Flask, database_url: str, redis_url: str) -> Iterator[Server]:
    """Four gunicorn workers on the test database and Redis."""
    server = Server(
        {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "RATE_LIMIT": "1000 per minute",
        },
        workers=4,
    )
    yield server
    server.stop()


def test_concurrent_identical_registrations_create_one_user(
    app: Flask, server: Server
) -> None:
    headers = {"x-api-key": new_key(app)["key"]}
    body = {"email": "race@example.com", "password": "same-password"}

    def register(_: int) -> requests.Response:
        return requests.post(
            f"{server.url}{USERS}", json=body, headers=headers, timeout=30
        )

    with ThreadPoolExecutor(max_workers=10) as pool:
        responses = list(pool.map(register, range(10)))

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [409] * 9
    assert all(
        r.json()["code"] == "email_taken" for r in responses if r.status_code == 409
    )
    listing = requests.get(
        f"{server.url}/v1/internal/referrals", headers=headers, timeout=5
    ).json()
    assert [u["email"] for u in listing["data"]] == ["race@example.com"]


def test_concurrent_retries_with_one_idempotency_key_create_one_user(
    app: Flask, server: Server
) -> None:
    headers = {"x-api-key": new_key(app)["key"], "Idempotency-Key": "retry-1"}
    body = {"email": "race@example.com", "password": "same-password"}

    def register(_: int) -> requests.Response:
        return requests.post(
            f"{server.url}{USERS}", json=body, headers=headers, timeout=30
        )

    with ThreadPoolExecutor(max_workers=10) as pool:
        responses = list(pool.map(register, range(10)))

    later = register(0)

    replays = [r for r in responses if "Idempotent-Replayed" in r.headers]
    [created] = [r for r in responses if r.status_code == 201 and r not in replays]
    # The rest were told to retry, or arrived late enough to get the replay.
    told_to_retry = [r for r in responses if r not in replays and r is not created]
    assert len(told_to_retry) + len(replays) == 9
    assert all(r.json()["code"] == "idempotency_key_in_use" for r in told_to_retry)
    for replay in [*replays, later]:
        assert replay.headers["Idempotent-Replayed"] == "true"
        assert replay.status_code == 201 and replay.content == created.content
        assert replay.headers["Location"] == created.headers["Location"]
    listing = requests.get(
        f"{server.url}/v1/internal/referrals", headers=headers, timeout=5
    ).json()
    assert [u["email"] for u in listing["data"]] == ["race@example.com"]


def test_revocation_is_seen_by_every_worker(app: Flask, server: Server) -> None:
    key = new_key(app)
    headers = {"x-api-key": key["key"]}
    url = f"{server.url}/v1/internal"
    # Enough requests that every worker has verified and cached the key.
    with requests.Session() as session:
        assert all(
            session.get(url, headers=headers, timeout=5).status_code == 200
            for _ in range(40)
        )

    result = app.test_cli_runner().invoke(args=["keys", "revoke", key["id"]])

    assert result.exit_code == 0, result.output
    statuses = {
        requests.get(url, headers=headers, timeout=5).status_code for _ in range(40)
    }
    assert statuses == {401}


def test_limit_is_shared_by_all_workers(
    app: Flask, database_url: str, redis_url: str
) -> None:
    server = Server(
        {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "RATE_LIMIT": "10 per minute",
        },
        workers=4,
    )
    try:
        # New connections each time, so the requests spread over the workers.
        statuses = [
            requests.get(f"{server.url}/v1/internal", timeout=5).status_code
            for _ in range(16)
        ]
    finally:
        server.stop()

    assert statuses == [401] * 10 + [429] * 6


def test_chunked_bodies_are_held_to_the_same_maximum(
    app: Flask, server: Server
) -> None:
    headers = {"x-api-key": new_key(app)["key"], "Content-Type": "application/json"}
    url = f"{server.url}{USERS}"

    def chunked(body: bytes) -> Iterator[bytes]:
        # A generator makes requests send Transfer-Encoding: chunked.
        for start in range(0, len(body), 8192):
            yield body[start : start + 8192]

    small = json.dumps({"email": "chunked@example.com"}).encode()
    # A valid object of exactly the limit, then a tail that must not be cut off.
    exact = b'{"email": "cut@example.com", "lastName": "'
    exact += b"x" * (64 * 1024 - len(exact) - 2) + b'"}'
    tail = exact + b', "role": "admin"'

    accepted = requests.post(url, data=chunked(small), headers=headers, timeout=10)
    too_large = requests.post(url, data=chunked(tail), headers=headers, timeout=10)

    assert accepted.status_code == 201
    assert too_large.status_code == 413
    assert too_large.json()["code"] == "payload_too_large"


def test_an_untrusted_forwarded_value_of_any_length_is_no_500(
    app: Flask, database_url: str, redis_url: str
) -> None:
    headers = {"x-api-key": new_key(app)["key"], "X-Forwarded-For": "x" * 300}
    server = Server(
        {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "TRUSTED_PROXY_HOPS": "1",
        },
        workers=1,
    )
    try:
        response = requests.post(
            f"{server.url}{USERS}",
            json={"email": "forwarded@example.com"},
            headers=headers,
            timeout=10,
        )
    finally:
        server.stop()

    assert response.status_code == 201


@pytest.mark.parametrize(
    ("send", "status", "code"),
    [
        ({"path": "/v1/internal?q=" + "x" * 5000}, 414, "uri_too_long"),
        (
            {"headers": {f"X-Filler-{n}": "x" for n in range(120)}},
            431,
            "request_header_fields_too_large",
        ),
        (
            {"headers": {"X-Big": "x" * 9000}},
            431,
            "request_header_fields_too_large",
        ),
    ],
)
def test_requests_gunicorn_refuses_still_get_the_envelope(
    server: Server, send: dict[str, object], status: int, code: str
) -> None:
    path = str(send.get("path", "/v1/internal"))
    headers = send.get("headers", {})

    response = requests.get(f"{server.url}{path}", headers=headers, timeout=10)

    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"message", "error", "statusCode", "code"}
    assert (body["error"], body["statusCode"], body["code"]) == (
        response.reason,
        status,
        code,
    )
    assert body["message"].endswith("than the server accepts.")


def raw_exchange(server: Server, request: bytes) -> bytes:
    """Send bytes no HTTP client would, and read the answer to the end."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk

    return answer


@pytest.mark.parametrize(
    "body",
    [b"zz\r\nabc\r\n0\r\n\r\n", b"3\r\nabcXY0\r\n\r\n", b"10\r\nabc"],
    ids=["bad-size", "no-terminator", "cut-short"],
)
def test_a_malformed_chunked_body_is_a_400(
    app: Flask, server: Server, body: bytes
) -> None:
    key = new_key(app)["key"]
    head = (
        f"POST {USERS} HTTP/1.1\r\nHost: 127.0.0.1\r\nx-api-key: {key}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )

    answer = raw_exchange(server, head.encode() + body)

    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 400 BAD REQUEST", answer[:500]
    envelope = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert (envelope["statusCode"], envelope["code"]) == (400, "malformed_body")


@pytest.mark.parametrize(
    "template",
    [
        # A raw byte gunicorn refuses, in a query string that carries a key.
        b"GET /v1/internal?api_key=%s&password=hunter2hunter2&x=\xe9 HTTP/1.1\r\n"
        b"Host: h\r\n\r\n",
        # A space in the target makes the line unparseable; gunicorn quotes it.
        b"GET /v1/internal?note=a %s HTTP/1.1\r\nHost: h\r\n\r\n",
        # A header line without its colon, quoted back as well.
        b"GET /v1/internal HTTP/1.1\r\nHost: h\r\nx-api-key %s\r\n\r\n",
    ],
    ids=["bad-byte", "bad-version", "bad-header"],
)
def test_requests_gunicorn_cannot_parse_leave_no_key_in_its_log(
    app: Flask, server: Server, template: bytes
) -> None:
    key = new_key(app)["key"]

    answer = raw_exchange(server, template.replace(b"%s", key.encode()))
    log = server.stop()

    assert answer.startswith(b"HTTP/1.1 400"), answer[:300]
    assert b"X-Frame-Options: DENY" in answer
    assert "Invalid" in log and "[redacted]" in log, log[-2000:]
    assert key not in log and apikeys.key_id_of(key) + "_" not in log
    assert "hunter2" not in log
