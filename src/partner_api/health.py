"""Operational endpoints: outside ``/v1``, no key, never rate-limited."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response
from sqlalchemy import Engine, text

from partner_api.errors import envelope
from partner_api.extensions import db, rate_limiter
from partner_api.openapi import doc
from partner_api.schemas import HealthSchema, ReadinessSchema

log = logging.getLogger("partner_api")

bp = Blueprint("health", __name__)

# Load balancers give up on a probe after about a second: answer before that
# even when a dependency hangs, whatever its own timeouts.
READY_TIMEOUT_SECONDS = 1.0
OK = "ok"
NOT_CONFIGURED = "not configured"


@bp.get("/healthz")
@doc(response=HealthSchema, tags=["operations"])
def healthz() -> dict[str, str]:
    """The process is up and serving."""
    return {"status": "ok"}


@bp.get("/readyz")
@doc(response=ReadinessSchema, errors={503: ["not_ready"]}, tags=["operations"])
def readyz() -> Any:
    """The database and Redis answer: this instance can take traffic."""
    checks: dict[str, Callable[[], None]] = {"database": _select_one(db.engine)}
    results = {"redis": NOT_CONFIGURED}
    if rate_limiter.shared:
        checks["redis"] = _ping(rate_limiter.storage)

    results.update(run_checks(checks, READY_TIMEOUT_SECONDS))
    failing = {
        name: [result]
        for name, result in results.items()
        if result not in (OK, NOT_CONFIGURED)
    }
    if not failing:
        return {"status": "ready", "checks": results}

    log.warning("not ready: %s", ", ".join(f"{n} {r[0]}" for n, r in failing.items()))
    response: Response = envelope(
        503,
        "not_ready",
        f"Not ready: {' and '.join(failing)} unavailable.",
        failing,
    )
    response.headers["Retry-After"] = "5"

    return response


def _select_one(engine: Engine) -> Callable[[], None]:
    def check() -> None:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    return check


def _ping(storage: Any) -> Callable[[], None]:
    def check() -> None:
        # limits answers False rather than raising, for every Redis flavour.
        if not storage.check():
            raise ConnectionError("no answer to PING")

    return check


def run_checks(checks: dict[str, Callable[[], None]], timeout: float) -> dict[str, str]:
    """Run the checks side by side; each is "ok", "unreachable" or "timed out".

    A check still running at the deadline is left to finish in its daemon
    thread, bounded by the dependency's own timeouts.
    """
    results = dict.fromkeys(checks, "timed out")

    def run(name: str, check: Callable[[], None]) -> None:
        try:
            check()
        except Exception as error:  # any failure means "not ready", never a 500
            log.debug("readiness check %s failed", name, exc_info=error)
            results[name] = "unreachable"
        else:
            results[name] = OK

    threads = [
        threading.Thread(target=run, args=item, daemon=True, name=f"readyz-{item[0]}")
        for item in checks.items()
    ]
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.start()

    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))

    return dict(results)
