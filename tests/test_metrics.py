"""Prometheus metrics: what is counted, who may scrape, sums across workers."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from flask import Flask
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from partner_api.config import ConfigError
from tests.conftest import make_app, new_key
from tests.live import Server, free_port
from tests.test_users import assert_envelope

USERS = "/v1/internal/users"


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(text: str, name: str, **labels: str) -> float:
    """One sample's value; 0 when absent."""
    return samples(text).get((name, frozenset(labels.items())), 0.0)


def worker_count(path: Path, name: str, labels: dict[str, str]) -> float:
    """The value one worker wrote to its own file."""
    for metric in MultiProcessCollector.merge([str(path)]):
        for sample in metric.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)

    return 0.0


def wait_for_workers(metrics_dir: Path, count: int) -> None:
    """Each worker opens its file when its app is built, i.e. when it is ready."""
    deadline = time.monotonic() + 20
    while len(list(metrics_dir.glob("counter_*.db"))) < count:
        assert time.monotonic() < deadline, "the workers did not start"
        time.sleep(0.05)


def scrape(app: Flask) -> str:
    response = app.test_client().get("/metrics")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/plain"

    return response.get_data(as_text=True)


def test_requests_registrations_and_429s_are_counted(
    sqlite_url: str, redis_url: str
) -> None:
    app = make_app(sqlite_url, redis_url, RATE_LIMIT="3 per minute")
    client = app.test_client()
    headers = {"x-api-key": new_key(app)["key"]}

    client.post(USERS, json={"email": "a@example.com"}, headers=headers)
    client.post(USERS, json={"email": "a@example.com"}, headers=headers)
    client.get("/v1/internal", headers=headers)
    client.get("/v1/internal", headers=headers)
    text = scrape(app)

    requests_total = "partner_api_http_requests_total"
    assert value(text, requests_total, endpoint=USERS, method="POST", status="201") == 1
    assert value(text, requests_total, endpoint=USERS, method="POST", status="409") == 1
    route = "/v1/internal"
    assert value(text, requests_total, endpoint=route, method="GET", status="200") == 1
    assert value(text, requests_total, endpoint=route, method="GET", status="429") == 1
    assert value(text, "partner_api_registrations_total") == 1
    assert value(text, "partner_api_rate_limited_total") == 1
    latency = "partner_api_http_request_duration_seconds_count"
    assert value(text, latency, endpoint=USERS) == 2


def test_unknown_paths_and_methods_share_bounded_labels(
    sqlite_url: str, redis_url: str
) -> None:
    app = make_app(sqlite_url, redis_url)
    client = app.test_client()

    client.get("/no/such/path")
    client.open("/healthz", method="BREW")
    text = scrape(app)

    requests_total = "partner_api_http_requests_total"
    unmatched = {"endpoint": "<unmatched>", "method": "GET", "status": "404"}
    assert value(text, requests_total, **unmatched) == 1
    brew = {"endpoint": "<unmatched>", "method": "other", "status": "405"}
    assert value(text, requests_total, **brew) == 1


def test_storage_fallbacks_are_counted(sqlite_url: str) -> None:
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    app = make_app(sqlite_url, None, REDIS_URL=dead_redis)

    app.test_client().get("/v1/internal")

    assert value(scrape(app), "partner_api_rate_limit_storage_fallbacks_total") == 1


@pytest.mark.parametrize(
    ("allowed", "address", "status"),
    [
        ("", "127.0.0.1", 200),
        ("", "::1", 200),
        ("", "::ffff:127.0.0.1", 200),
        ("", "203.0.113.9", 404),
        ("", "2001:db8::1", 404),
        ("10.0.0.0/8, 2001:db8::/32", "10.1.2.3", 200),
        ("10.0.0.0/8, 2001:db8::/32", "2001:db8::1", 200),
        ("10.0.0.0/8, 2001:db8::/32", "127.0.0.1", 404),
    ],
)
def test_only_allowed_networks_may_scrape(
    sqlite_url: str, redis_url: str, allowed: str, address: str, status: int
) -> None:
    app = make_app(sqlite_url, redis_url, METRICS_ALLOWED_NETWORKS=allowed)

    response = app.test_client().get("/metrics", environ_base={"REMOTE_ADDR": address})

    if status == 404:
        # The same answer as for a path that does not exist.
        assert_envelope(response, 404, "not_found")
    else:
        assert response.status_code == 200


def test_metrics_need_no_key_and_are_not_rate_limited(
    sqlite_url: str, redis_url: str
) -> None:
    app = make_app(sqlite_url, redis_url, RATE_LIMIT="1 per minute")
    client = app.test_client()

    assert {client.get("/metrics").status_code for _ in range(3)} == {200}
    assert client.get("/v1/internal").status_code == 401


def test_bad_networks_stop_the_start(sqlite_url: str) -> None:
    with pytest.raises(ConfigError, match="METRICS_ALLOWED_NETWORKS"):
        make_app(sqlite_url, None, METRICS_ALLOWED_NETWORKS="loopback")


def test_counts_are_summed_across_gunicorn_workers(
    postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    app = make_app(postgres_url, redis_url)
    headers = {"x-api-key": new_key(app)["key"]}
    metrics_dir = tmp_path / "metrics"
    server = Server(
        {
            "DATABASE_URL": postgres_url,
            "REDIS_URL": redis_url,
            "RATE_LIMIT": "1000 per minute",
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        },
        workers=2,
    )
    count = 40

    def get(_: int) -> int:
        url = f"{server.url}/v1/internal"
        return requests.get(url, headers=headers, timeout=10).status_code

    try:
        wait_for_workers(metrics_dir, 2)
        # New connections from several threads, so both workers serve some.
        with ThreadPoolExecutor(max_workers=4) as pool:
            statuses = list(pool.map(get, range(count)))

        registered = [
            requests.post(
                f"{server.url}{USERS}",
                json={"email": f"sum{n}@example.com"},
                headers=headers,
                timeout=10,
            ).status_code
            for n in range(3)
        ]
        text = requests.get(f"{server.url}/metrics", timeout=10).text
    finally:
        server.stop()

    assert statuses == [200] * count and registered == [201] * 3
    labels = {"endpoint": "/v1/internal", "method": "GET", "status": "200"}
    per_worker = [
        served
        for path in metrics_dir.glob("counter_*.db")
        if (served := worker_count(path, "partner_api_http_requests_total", labels))
    ]
    assert len(per_worker) == 2, "both workers served some"
    assert value(text, "partner_api_http_requests_total", **labels) == count
    assert value(text, "partner_api_registrations_total") == 3
    latency = "partner_api_http_request_duration_seconds_count"
    assert value(text, latency, endpoint="/v1/internal") == count
