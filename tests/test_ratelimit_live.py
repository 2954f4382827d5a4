"""The published limit under real gunicorn processes and real Redis failures."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from flask import Flask

from tests.conftest import make_app, new_key
from tests.live import GUNICORN, ROOT, Server
from tests.redis_servers import (
    BlackHole,
    RedisServer,
    Sentinel,
    cluster_ports,
    make_cluster,
)

URL_PATH = "/v1/internal"


@pytest.fixture
def keyed_app(postgres_url: str, redis_url: str) -> Flask:
    return make_app(postgres_url, redis_url)


def servers(count: int, env: dict[str, str], workers: int = 2) -> list[Server]:
    started: list[Server] = []
    try:
        for _ in range(count):
            started.append(Server(env, workers=workers))
    except Exception:
        for server in started:
            server.stop()
        raise

    return started


@pytest.fixture
def stop_all() -> Iterator[list[Server]]:
    """Servers appended here are stopped after the test, pass or fail."""
    running: list[Server] = []
    yield running
    for server in running:
        server.stop()


def spread(running: list[Server], headers: dict[str, str], count: int) -> list[int]:
    """`count` requests round-robin over the servers, each on a new connection."""
    return [
        requests.get(
            f"{running[n % len(running)].url}{URL_PATH}", headers=headers, timeout=5
        ).status_code
        for n in range(count)
    ]


def test_two_instances_of_two_workers_share_one_count(
    keyed_app: Flask, postgres_url: str, redis_url: str, stop_all: list[Server]
) -> None:
    limit = 30
    headers = {"x-api-key": new_key(keyed_app)["key"]}
    env = {
        "DATABASE_URL": postgres_url,
        "REDIS_URL": redis_url,
        "RATE_LIMIT": f"{limit} per 15 minutes",
    }
    stop_all.extend(servers(2, env))

    statuses = spread(stop_all, headers, limit + 20)

    assert statuses.count(200) == limit
    assert statuses[limit:] == [429] * 20
    last = requests.get(f"{stop_all[0].url}{URL_PATH}", headers=headers, timeout=5)
    assert last.status_code == 429 and last.json()["code"] == "rate_limited"
    assert last.headers["X-RateLimit-Remaining"] == "0"
    assert int(last.headers["Retry-After"]) >= 1


def test_no_double_burst_at_a_window_edge(
    keyed_app: Flask, postgres_url: str, redis_url: str, stop_all: list[Server]
) -> None:
    """One request opens a window; a burst straddles its end 1.8 s later.

    A fixed window would accept 4 before the edge and 5 more right after it;
    the published promise allows no more than 5 in any 2-second span.
    """
    headers = {"x-api-key": new_key(keyed_app)["key"]}
    env = {
        "DATABASE_URL": postgres_url,
        "REDIS_URL": redis_url,
        "RATE_LIMIT": "5 per 2 seconds",
    }
    stop_all.extend(servers(1, env))
    url = f"{stop_all[0].url}{URL_PATH}"
    accepted: list[float] = []
    with requests.Session() as session:
        opened = time.monotonic()
        assert session.get(url, headers=headers, timeout=5).status_code == 200
        accepted.append(opened)
        time.sleep(1.8)
        while time.monotonic() < opened + 2.6:
            sent = time.monotonic()
            if session.get(url, headers=headers, timeout=5).status_code == 200:
                accepted.append(sent)
            time.sleep(0.02)

    # Client clocks run a few ms apart from the server's; allow for it.
    span = 2.0 - 0.05
    busiest = max(sum(1 for t in accepted if s <= t < s + span) for s in accepted)
    assert busiest <= 5
    assert len(accepted) >= 5


def test_remaining_counts_down_and_retry_after_is_honest(
    keyed_app: Flask, postgres_url: str, redis_url: str, stop_all: list[Server]
) -> None:
    headers = {"x-api-key": new_key(keyed_app)["key"]}
    env = {
        "DATABASE_URL": postgres_url,
        "REDIS_URL": redis_url,
        "RATE_LIMIT": "3 per 3 seconds",
    }
    stop_all.extend(servers(2, env))

    first = [
        requests.get(f"{s.url}{URL_PATH}", headers=headers, timeout=5)
        for s in (stop_all * 2)[:4]
    ]
    retry_after = int(first[-1].headers["Retry-After"])
    time.sleep(retry_after)
    after_wait = requests.get(
        f"{stop_all[1].url}{URL_PATH}", headers=headers, timeout=5
    )

    assert [r.status_code for r in first] == [200, 200, 200, 429]
    assert [r.headers["X-RateLimit-Remaining"] for r in first] == ["2", "1", "0", "0"]
    assert 1 <= retry_after <= 3
    assert after_wait.status_code == 200


@pytest.mark.parametrize(
    ("policy", "down_status"),
    [("memory", 200), ("open", 200), ("closed", 503)],
)
def test_redis_stopped_mid_run_then_restarted(
    keyed_app: Flask,
    postgres_url: str,
    tmp_path: Path,
    stop_all: list[Server],
    policy: str,
    down_status: int,
) -> None:
    private = RedisServer(cluster_ports(1, start=22000)[0], tmp_path)
    try:
        headers = {"x-api-key": new_key(keyed_app)["key"]}
        env = {
            "DATABASE_URL": postgres_url,
            "REDIS_URL": private.url,
            "RATE_LIMIT": "10 per minute",
            "RATE_LIMIT_ON_STORAGE_ERROR": policy,
        }
        stop_all.extend(servers(2, env, workers=1))
        before = spread(stop_all, headers, 4)

        private.stop()
        started = time.monotonic()
        during = [
            requests.get(f"{s.url}{URL_PATH}", headers=headers, timeout=5)
            for s in stop_all
            for _ in range(3)
        ]
        slowest = time.monotonic() - started

        private.start()  # empty: Redis keeps nothing on disk here
        time.sleep(2.5)  # past the interval at which workers retry Redis
        after = spread(stop_all, headers, 12)
    finally:
        private.stop()

    assert before == [200] * 4
    assert {r.status_code for r in during} == {down_status}
    assert all(r.json() for r in during)  # JSON bodies, never an HTML page
    assert slowest < 6 * 1.0
    if policy == "memory":
        assert all("X-RateLimit-Remaining" in r.headers for r in during)
    if policy == "closed":
        assert {r.json()["code"] for r in during} == {"rate_limit_unavailable"}
    # Counting is shared again: one budget of 10 across both instances.
    assert after == [200] * 10 + [429] * 2


def test_revocation_holds_after_redis_restarts_empty(
    database_url: str, tmp_path: Path
) -> None:
    """A restarted Redis must not repeat a generation a worker still holds."""
    private = RedisServer(cluster_ports(1, start=23000)[0], tmp_path)
    try:
        worker = make_app(database_url, None, REDIS_URL=private.url)
        operator = make_app(database_url, None, reset=False, REDIS_URL=private.url)
        victim, other = new_key(worker), new_key(worker, "other@example.com")
        runner = operator.test_cli_runner()
        assert runner.invoke(args=["keys", "revoke", other["id"]]).exit_code == 0
        client = worker.test_client()
        headers = {"x-api-key": victim["key"]}
        assert client.get(URL_PATH, headers=headers).status_code == 200

        private.stop()
        private.start()  # empty, as after a crash without persistence
        revoked = runner.invoke(args=["keys", "revoke", victim["id"]])
        time.sleep(2.2)  # let the worker retry Redis after its failed read
        statuses = [client.get(URL_PATH, headers=headers).status_code for _ in range(3)]
    finally:
        private.stop()

    assert revoked.exit_code == 0, revoked.output
    assert statuses == [401] * 3


def test_black_holed_redis_answers_within_a_second(
    database_url: str, redis_url: str
) -> None:
    hole = BlackHole()
    try:
        app = make_app(database_url, None, REDIS_URL=hole.url)
        client = app.test_client()
        timings = []
        for _ in range(5):
            started = time.monotonic()
            response = client.get(URL_PATH)
            timings.append(time.monotonic() - started)
            assert response.status_code == 401
    finally:
        hole.close()

    assert max(timings) < 1.0


def test_redis_cluster_shares_the_limit(
    keyed_app: Flask, postgres_url: str, tmp_path: Path, stop_all: list[Server]
) -> None:
    ports = cluster_ports(3)
    nodes = make_cluster(ports, tmp_path)
    try:
        limit = 12
        headers = {"x-api-key": new_key(keyed_app)["key"]}
        env = {
            "DATABASE_URL": postgres_url,
            "REDIS_URL": "redis+cluster://"
            + ",".join(f"127.0.0.1:{port}" for port in ports),
            "RATE_LIMIT": f"{limit} per minute",
        }
        stop_all.extend(servers(2, env))
        statuses = spread(stop_all, headers, limit + 8)
    finally:
        for node in nodes:
            node.stop()

    assert statuses == [200] * limit + [429] * 8


def test_redis_sentinel_shares_the_limit(
    keyed_app: Flask, postgres_url: str, tmp_path: Path, stop_all: list[Server]
) -> None:
    master_port, sentinel_port = cluster_ports(2, start=24000)
    master = RedisServer(master_port, tmp_path)
    sentinel = Sentinel(sentinel_port, master, tmp_path)
    try:
        headers = {"x-api-key": new_key(keyed_app)["key"]}
        env = {
            "DATABASE_URL": postgres_url,
            "REDIS_URL": sentinel.url,
            "RATE_LIMIT": "6 per minute",
        }
        stop_all.extend(servers(2, env))
        statuses = spread(stop_all, headers, 9)
    finally:
        sentinel.stop()
        master.stop()

    assert statuses == [200] * 6 + [429] * 3


def test_switching_strategy_over_old_counters(
    database_url: str, redis_url: str
) -> None:
    outcomes = []
    for strategy in ("fixed-window", "moving-window", "sliding-window-counter"):
        app = make_app(
            database_url,
            redis_url,
            reset=strategy == "fixed-window",
            RATE_LIMIT="3 per minute",
            RATE_LIMIT_STRATEGY=strategy,
        )
        outcomes.append([app.test_client().get(URL_PATH).status_code for _ in range(4)])

    # Each strategy keeps its own counters: no type clash, no error.
    assert outcomes == [[401, 401, 401, 429]] * 3


def test_a_counter_of_the_wrong_type_is_no_500(
    database_url: str, redis_url: str
) -> None:
    import redis as redis_lib

    app = make_app(database_url, redis_url, RATE_LIMIT="3 per minute")
    client = app.test_client()
    client.get(URL_PATH)
    raw = redis_lib.Redis.from_url(redis_url)
    for key in raw.scan_iter("partner_api:rl:*"):
        raw.delete(key)
        raw.hset(key, "foreign", "value")  # a hash where a list is expected
    raw.close()

    statuses = [client.get(URL_PATH).status_code for _ in range(3)]

    assert statuses == [401, 401, 401]


def test_production_serving_refuses_per_process_limits(postgres_url: str) -> None:
    import os
    import subprocess

    env = {**os.environ, "DATABASE_URL": postgres_url, "BIND": "127.0.0.1:1"}
    env.pop("REDIS_URL", None)
    result = subprocess.run(
        [str(GUNICORN), "-c", "gunicorn.conf.py", "wsgi:app"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert result.returncode != 0
    assert "REDIS_URL is not set" in result.stderr + result.stdout


def test_per_process_limits_when_asked_for(
    postgres_url: str, stop_all: list[Server]
) -> None:
    stop_all.extend(
        servers(
            1,
            {
                "DATABASE_URL": postgres_url,
                "REDIS_URL": "",
                "ALLOW_PER_PROCESS_LIMITS": "true",
            },
            workers=1,
        )
    )

    response = requests.get(f"{stop_all[0].url}{URL_PATH}", timeout=5)

    assert response.status_code == 401
    assert response.headers["X-RateLimit-Limit"] == "100"


def test_per_key_limit_applies_across_client_ips(
    database_url: str, redis_url: str
) -> None:
    app = make_app(
        database_url,
        redis_url,
        RATE_LIMIT="100 per minute",
        RATE_LIMIT_PER_KEY="3 per minute",
    )
    client = app.test_client()
    shared = {"x-api-key": new_key(app)["key"]}
    other = {"x-api-key": new_key(app, "other@example.com")["key"]}

    statuses = [
        client.get(
            URL_PATH, headers=shared, environ_base={"REMOTE_ADDR": f"192.0.2.{n}"}
        ).status_code
        for n in range(4)
    ]
    blocked = client.get(URL_PATH, headers=shared)
    unaffected = client.get(URL_PATH, headers=other)

    assert statuses == [200, 200, 200, 429]
    assert "per API key" in blocked.get_json()["message"]
    assert blocked.headers["RateLimit-Policy"] == '"key";q=3;w=60'
    assert unaffected.status_code == 200
