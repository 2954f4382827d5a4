"""Prometheus metrics, summed across gunicorn workers.

Under gunicorn every worker writes its samples to files in
``PROMETHEUS_MULTIPROC_DIR`` (gunicorn.conf.py creates it, empties it at
start and marks dead workers), and a scrape of any worker reads them all.
Without that variable, as under ``flask run`` or in tests, one process keeps
its samples in memory.
"""

from __future__ import annotations

import ipaddress
import os
import time
from collections.abc import Sequence
from typing import Any

from flask import Blueprint, Flask, Response, abort, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from partner_api.config import Network
from partner_api.openapi import doc

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
# Any other method a client invents is counted as one label value, so no
# client can grow the number of series.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "<unmatched>"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

bp = Blueprint("metrics", __name__)


class Metrics:
    """The service's collectors, created per app so tests can build many."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.allowed: Sequence[Network] = ()

    def init_app(self, app: Flask) -> None:
        self.registry = registry = CollectorRegistry()
        self.allowed = app.config["METRICS_ALLOWED_NETWORKS"]
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self.requests = Counter(
            "partner_api_http_requests",
            "HTTP requests answered, by route, method and status.",
            ["endpoint", "method", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "partner_api_http_request_duration_seconds",
            "Time from the first hook to the response, by route.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.registrations = Counter(
            "partner_api_registrations",
            "Users registered (POST /v1/internal/users answered 201).",
            registry=registry,
        )
        self.rate_limited = Counter(
            "partner_api_rate_limited",
            "Requests refused with 429 for being over a rate limit.",
            registry=registry,
        )
        self.storage_fallbacks = Counter(
            "partner_api_rate_limit_storage_fallbacks",
            "Times a worker found the rate-limit storage failing and fell back "
            "to its RATE_LIMIT_ON_STORAGE_ERROR policy.",
            registry=registry,
        )

        app.after_request(self.observe)
        app.extensions["partner_api.rate_limiter"].on_fallback.append(
            self.storage_fallbacks.inc
        )
        app.extensions["partner_api.metrics"] = self

    def observe(self, response: Response) -> Response:
        rule = request.url_rule
        endpoint = rule.rule if rule is not None else UNMATCHED
        method = request.method if request.method in METHODS else "other"
        status = response.status_code
        # Looking up labelled children costs more than counting: keep them.
        # Routes, methods and statuses are all bounded, and so is this cache.
        key = (endpoint, method, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.requests.labels(endpoint, method, str(status)),
                self.latency.labels(endpoint),
            )

        count, latency = children
        count.inc()
        started = g.get("started")
        if started is not None:
            latency.observe(time.perf_counter() - started)

        if status == 429:
            self.rate_limited.inc()

        return response

    def exposition(self) -> bytes:
        """Every worker's samples when under gunicorn, else this process's."""
        if os.environ.get(MULTIPROC_DIR):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)

        return generate_latest(self.registry)

    def may_scrape(self, address: str | None) -> bool:
        try:
            ip = ipaddress.ip_address(address or "")
        except ValueError:
            return False

        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped

        return any(ip in network for network in self.allowed)


@bp.get("/metrics")
@doc(
    response={"type": "string"},
    media_type="text/plain",
    errors={404: ["not_found"]},
    tags=["operations"],
)
def get_metrics() -> Response:
    """Prometheus metrics, for scrapers on the allowed networks only."""
    metrics: Metrics = current_app.extensions["partner_api.metrics"]
    # Outside the allowed networks the answer is the plain 404 of an unknown
    # path, so scanners learn nothing about it.
    if not metrics.may_scrape(request.remote_addr):
        abort(404)

    return Response(metrics.exposition(), content_type=CONTENT_TYPE_LATEST)
