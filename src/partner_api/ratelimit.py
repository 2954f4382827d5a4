"""Per-client-IP rate limiting of everything under ``/v1``.

Built on ``limits``, the engine under flask-limiter, called from one
``before_request`` hook rather than through flask-limiter's decorators. Two
reasons: flask-limiter skips requests that match no route, and every ``/v1``
request must count, a 404 or 405 included; and its per-request bookkeeping
costs more CPU than the whole of a lean request here.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, cast

from flask import Flask, Response, g, request
from limits import RateLimitItem, parse
from limits.errors import StorageError
from limits.storage import MemoryStorage, Storage, storage_from_string
from limits.strategies import STRATEGIES
from limits.strategies import RateLimiter as Strategy

from partner_api.errors import APIError

log = logging.getLogger("partner_api")

# Short enough that a dead or black-holed Redis never holds a worker for long.
REDIS_TIMEOUT_SECONDS = 0.25
RETRY_PRIMARY_SECONDS = 2.0
KEY_PREFIX = "partner_api:rl"


@dataclass(frozen=True, slots=True)
class LimitState:
    """What the client is told about its budget after this request."""

    limit: int
    remaining: int
    reset: float
    window: int

    def seconds_to_reset(self) -> int:
        return max(1, math.ceil(self.reset - time.time()))


def is_limited_path(path: str) -> bool:
    return path == "/v1" or path.startswith("/v1/")


class RateLimiter:
    """Counts requests per client IP in shared storage, with a stated fallback."""

    def __init__(self) -> None:
        self.item: RateLimitItem | None = None
        self.storage: Storage | None = None
        self.shared = False
        self._primary: Strategy | None = None
        self._fallback: Strategy | None = None
        self._policy = "memory"
        self._degraded_until = 0.0

    def init_app(self, app: Flask) -> None:
        config = app.config
        self.item = parse(config["RATE_LIMIT"])
        strategy = STRATEGIES[config["RATE_LIMIT_STRATEGY"]]
        self._policy = config["RATE_LIMIT_ON_STORAGE_ERROR"]
        self.storage = self._make_storage(config)
        self.shared = config["REDIS_URL"] is not None
        self._primary = strategy(self.storage)
        self._fallback = strategy(MemoryStorage())

        app.before_request(self.check_request)
        app.after_request(self.add_headers)
        app.extensions["partner_api.rate_limiter"] = self

    @staticmethod
    def _make_storage(config: dict[str, Any]) -> Storage:
        url = config["REDIS_URL"]
        if url is None:
            log.warning(
                "REDIS_URL is not set: rate limits are counted per process, "
                "so each worker allows the full limit"
            )
            return MemoryStorage()

        # A namespace per strategy: counters of another strategy (another data
        # type under the same key) can never be read by this one.
        prefix = f"{KEY_PREFIX}:{config['RATE_LIMIT_STRATEGY']}"
        storage = storage_from_string(
            url,
            key_prefix=prefix,
            wrap_exceptions=True,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        )
        return cast(Storage, storage)

    @property
    def redis(self) -> Any | None:
        """The Redis client shared with other features, or None without Redis."""
        if not self.shared or self.degraded:
            return None

        return getattr(self.storage, "storage", None)

    @property
    def degraded(self) -> bool:
        return time.monotonic() < self._degraded_until

    def check_request(self) -> None:
        """Count this request; raise 429 once the client's budget is spent."""
        if not is_limited_path(request.path):
            return

        state, allowed = self._hit(request.remote_addr or "unknown")
        g.rate_limit = state
        if not allowed:
            assert state is not None
            raise APIError(
                429,
                "rate_limited",
                f"Too many requests: the limit is {self._describe()}. "
                f"Retry in {state.seconds_to_reset()} seconds.",
                headers={"Retry-After": str(state.seconds_to_reset())},
            )

    def _hit(self, client: str) -> tuple[LimitState | None, bool]:
        assert self.item is not None and self._primary and self._fallback
        if not self.degraded:
            try:
                return self._count(self._primary, client)
            except StorageError as error:
                self._enter_degraded(error)

        if self._policy == "memory":
            return self._count(self._fallback, client)

        if self._policy == "open":
            return None, True

        raise APIError(
            503,
            "rate_limit_unavailable",
            "The rate-limit store is unreachable, so requests are refused. "
            "Retry shortly.",
            headers={"Retry-After": str(math.ceil(RETRY_PRIMARY_SECONDS))},
        )

    def _count(self, strategy: Strategy, client: str) -> tuple[LimitState, bool]:
        assert self.item is not None
        allowed = strategy.hit(self.item, "ip", client)
        reset, remaining = strategy.get_window_stats(self.item, "ip", client)
        if self._degraded_until and strategy is self._primary:
            self._degraded_until = 0.0
            log.warning("rate-limit storage is reachable again; counts are shared")

        state = LimitState(
            self.item.amount,
            max(0, remaining),
            reset,
            self.item.get_expiry(),
        )
        return state, allowed

    def _enter_degraded(self, error: StorageError) -> None:
        # Logged once per outage, not per request.
        if not self._degraded_until:
            log.error(
                "rate-limit storage failed (%s); policy %r until it recovers",
                type(error.storage_error).__name__,
                self._policy,
            )

        self._degraded_until = time.monotonic() + RETRY_PRIMARY_SECONDS

    def _describe(self) -> str:
        assert self.item is not None
        unit = self.item.GRANULARITY.name
        multiple = self.item.multiples
        per = f"{multiple} {unit}s" if multiple != 1 else unit

        return f"{self.item.amount} requests per {per} per client"

    def add_headers(self, response: Response) -> Response:
        """Tell the client its budget, on every counted response."""
        state: LimitState | None = g.get("rate_limit")
        if state is None:
            return response

        reset_in = state.seconds_to_reset()
        headers = response.headers
        headers.add("X-RateLimit-Limit", str(state.limit))
        headers.add("X-RateLimit-Remaining", str(state.remaining))
        headers.add("X-RateLimit-Reset", str(math.ceil(state.reset)))
        headers.add("RateLimit-Policy", f'"default";q={state.limit};w={state.window}')
        headers.add("RateLimit", f'"default";r={state.remaining};t={reset_in}')

        return response

    def state_for(self, client: str) -> LimitState | None:
        """The current budget of a client, without counting a request."""
        assert self.item is not None and self._primary and self._fallback
        strategy = self._fallback if self.degraded else self._primary
        try:
            reset, remaining = strategy.get_window_stats(self.item, "ip", client)
        except StorageError:
            return None

        return LimitState(self.item.amount, remaining, reset, self.item.get_expiry())
