"""Per-IP rate limiting: counting, headers, 429s, proxies and Redis failures."""

from __future__ import annotations

import logging
import math
import time

import pytest
from flask import Flask

from partner_api.config import ConfigError
from tests.conftest import make_app, new_key
from tests.live import free_port
from tests.test_users import assert_envelope

ROOT = "/v1/internal"
LIMIT_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")


@pytest.fixture
def limited(database_url: str, redis_url: str) -> Flask:
    """An app allowing 5 requests per minute per client."""
    return make_app(database_url, redis_url, RATE_LIMIT="5 per minute")


def test_every_v1_request_counts_whatever_its_outcome(limited: Flask) -> None:
    client = limited.test_client()
    headers = {"x-api-key": new_key(limited)["key"]}
    responses = [
        client.get(ROOT, headers=headers),  # 200
        client.get(ROOT),  # 401
        client.get("/v1/nowhere", headers=headers),  # 404
        client.delete(ROOT, headers=headers),  # 405
        client.post("/v1/internal/users", headers=headers, json={}),  # 400
        client.get(ROOT, headers=headers),  # over the limit
    ]

    assert [r.status_code for r in responses] == [200, 401, 404, 405, 400, 429]
    assert [r.headers["X-RateLimit-Remaining"] for r in responses] == [
        "4",
        "3",
        "2",
        "1",
        "0",
        "0",
    ]
    for response in responses:
        assert all(name in response.headers for name in LIMIT_HEADERS)
        assert response.headers["X-RateLimit-Limit"] == "5"
        assert response.headers["RateLimit-Policy"] == '"default";q=5;w=60'


def test_429_envelope_and_honest_retry_after(limited: Flask) -> None:
    client = limited.test_client()
    for _ in range(5):
        client.get(ROOT)

    response = client.get(ROOT)

    assert_envelope(response, 429, "rate_limited")
    retry_after = int(response.headers["Retry-After"])
    reset = int(response.headers["X-RateLimit-Reset"])
    assert 1 <= retry_after <= 60
    assert abs((time.time() + retry_after) - reset) <= 2


def test_health_is_never_counted(limited: Flask) -> None:
    client = limited.test_client()
    for _ in range(10):
        response = client.get("/healthz")
        assert response.status_code == 200
        assert "X-RateLimit-Remaining" not in response.headers

    assert client.get(ROOT).headers["X-RateLimit-Remaining"] == "4"


def test_clients_are_counted_separately(limited: Flask) -> None:
    client = limited.test_client()
    for _ in range(5):
        client.get(ROOT, environ_base={"REMOTE_ADDR": "192.0.2.1"})

    blocked = client.get(ROOT, environ_base={"REMOTE_ADDR": "192.0.2.1"})
    other = client.get(ROOT, environ_base={"REMOTE_ADDR": "192.0.2.2"})

    assert blocked.status_code == 429
    assert other.status_code == 401


def test_forged_forwarded_for_is_ignored_without_trusted_proxies(
    limited: Flask,
) -> None:
    client = limited.test_client()
    statuses = [
        client.get(ROOT, headers={"X-Forwarded-For": f"203.0.113.{n}"}).status_code
        for n in range(7)
    ]

    assert statuses == [401] * 5 + [429] * 2


def test_one_trusted_proxy_counts_the_address_it_saw(
    database_url: str, redis_url: str
) -> None:
    app = make_app(
        database_url, redis_url, RATE_LIMIT="2 per minute", TRUSTED_PROXY_HOPS="1"
    )
    client = app.test_client()

    def via_proxy(forwarded: str) -> int:
        return client.get(
            ROOT,
            headers={"X-Forwarded-For": forwarded},
            environ_base={"REMOTE_ADDR": "10.0.0.1"},
        ).status_code

    # The client forges a leftmost entry; only the proxy's own entry counts.
    alice = [via_proxy(f"6.6.6.{n}, 198.51.100.7") for n in range(3)]
    bob = [via_proxy("198.51.100.8") for _ in range(2)]

    assert alice == [401, 401, 429]
    assert bob == [401, 401]


def test_shared_across_processes_through_redis(
    database_url: str, redis_url: str
) -> None:
    """Two apps stand for two workers: one budget between them."""
    first = make_app(database_url, redis_url, RATE_LIMIT="4 per minute")
    second = make_app(database_url, redis_url, reset=False, RATE_LIMIT="4 per minute")
    clients = [first.test_client(), second.test_client()]

    statuses = [clients[n % 2].get(ROOT).status_code for n in range(6)]

    assert statuses == [401] * 4 + [429] * 2


@pytest.mark.parametrize(
    ("policy", "status", "has_headers"),
    [("memory", 401, True), ("open", 401, False), ("closed", 503, False)],
)
def test_unreachable_redis_follows_the_policy(
    database_url: str,
    policy: str,
    status: int,
    has_headers: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    app = make_app(
        database_url,
        None,
        RATE_LIMIT="3 per minute",
        REDIS_URL=dead_redis,
        RATE_LIMIT_ON_STORAGE_ERROR=policy,
    )
    client = app.test_client()

    started = time.monotonic()
    response = client.get(ROOT)

    assert time.monotonic() - started < 1.0
    assert response.status_code == status
    assert response.is_json and response.get_json()["statusCode"] == status
    assert ("X-RateLimit-Remaining" in response.headers) is has_headers
    if policy == "memory":
        # Counting goes on in the process while Redis is away.
        statuses = [client.get(ROOT).status_code for _ in range(3)]
        assert statuses == [401, 401, 429]
    if policy == "closed":
        assert response.get_json()["code"] == "rate_limit_unavailable"

    # Once per outage; an error only when requests are refused.
    [outage] = [r for r in caplog.records if "storage failed" in r.getMessage()]
    expected = logging.ERROR if policy == "closed" else logging.WARNING
    assert outage.levelno == expected


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RATE_LIMIT", "lots"),
        ("RATE_LIMIT", "0 per minute"),
        ("RATE_LIMIT", "100 per 0 minutes"),
        ("RATE_LIMIT", "5 per second; 100 per 15 minutes"),
        ("RATE_LIMIT_PER_KEY", "many per hour"),
        ("RATE_LIMIT_STRATEGY", "leaky-bucket"),
        ("RATE_LIMIT_ON_STORAGE_ERROR", "maybe"),
        ("TRUSTED_PROXY_HOPS", "-1"),
        ("TRUSTED_PROXY_HOPS", "one"),
    ],
)
def test_bad_settings_stop_the_start(database_url: str, name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        make_app(database_url, None, **{name: value})


def test_one_round_trip_counts_as_limits_itself_would(
    database_url: str, redis_url: str
) -> None:
    """The combined Redis script and limits' own reader see the same window."""
    app = make_app(database_url, redis_url, RATE_LIMIT="3 per minute")
    client = app.test_client()
    limiter = app.extensions["partner_api.rate_limiter"]

    responses = [client.get(ROOT) for _ in range(4)]
    with app.test_request_context():
        state = limiter.state_for("ip", "127.0.0.1")  # limits' get_window_stats

    assert limiter._one_trip is not None
    assert [r.status_code for r in responses] == [401, 401, 401, 429]
    assert [r.headers["X-RateLimit-Remaining"] for r in responses] == [
        "2",
        "1",
        "0",
        "0",
    ]
    assert state is not None and state.remaining == 0
    # Both put the reset at the first hit plus the window.
    resets = {r.headers["X-RateLimit-Reset"] for r in responses}
    assert resets == {str(math.ceil(state.reset))}
    assert 59 <= state.reset - time.time() <= 60
