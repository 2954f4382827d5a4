"""Rate limiting of everything under ``/v1``: per client IP, optionally per key.

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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from flask import Flask, Response, g, request
from limits import RateLimitItem, parse
from limits.errors import StorageError
from limits.storage import MemoryStorage, RedisStorage, Storage, storage_from_string
from limits.strategies import STRATEGIES
from limits.strategies import RateLimiter as Strategy

from partner_api.errors import APIError

log = logging.getLogger("partner_api")

# Short enough that a dead or black-holed Redis never holds a worker for long.
REDIS_TIMEOUT_SECONDS = 0.25
RETRY_PRIMARY_SECONDS = 2.0
# Bump the version when the layout of counters changes, so that a new release
# never reads a counter that an older one wrote.
KEY_PREFIX = "partner_api:rl:v1"

# What limits does for a moving window in two round trips (acquire_entry,
# then get_moving_window) in one, on limits' own layout so that either reads
# what the other wrote: a list of hit timestamps, newest first, at most
# `limit` long. Returns {acquired, hits in the window, oldest hit in it}.
ACQUIRE_AND_COUNT = b"""
local now, limit, expiry = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local start = now - expiry
local acquired = 0
local last = redis.call('lindex', KEYS[1], limit - 1)
if not (last and tonumber(last) >= start) then
    redis.call('lpush', KEYS[1], ARGV[1])
    redis.call('ltrim', KEYS[1], 0, limit - 1)
    redis.call('expire', KEYS[1], expiry)
    acquired = 1
end

local low, high, oldest = 0, limit - 1, nil
while low <= high do
    local mid = math.floor((low + high) / 2)
    local hit = tonumber(redis.call('lindex', KEYS[1], mid))
    if hit and hit >= start then
        oldest, low = mid, mid + 1
    else
        high = mid - 1
    end
end

if oldest == nil then
    return {acquired, 0, ARGV[1]}
end
return {acquired, oldest + 1, redis.call('lindex', KEYS[1], oldest)}
"""


@dataclass(frozen=True, slots=True)
class LimitState:
    """What the client is told about one budget after this request."""

    policy: str
    limit: int
    remaining: int
    reset: float
    window: int

    def seconds_to_reset(self) -> int:
        return max(1, math.ceil(self.reset - time.time()))


# The published contract is public: reading it needs no key and costs no
# budget (docs.py serves it).
OPENAPI_PATH = "/v1/internal/openapi.json"


def is_limited_path(path: str) -> bool:
    return (path == "/v1" or path.startswith("/v1/")) and path != OPENAPI_PATH


def describe(item: RateLimitItem) -> str:
    """'100 per 15 minutes', as an operator would write it."""
    unit = item.GRANULARITY.name
    if item.multiples != 1:
        return f"{item.amount} per {item.multiples} {unit}s"

    return f"{item.amount} per {unit}"


class RateLimiter:
    """Counts requests in shared storage, with a stated fallback when it fails."""

    def __init__(self) -> None:
        self.ip_item: RateLimitItem | None = None
        self.key_item: RateLimitItem | None = None
        self.storage: Storage | None = None
        self.shared = False
        self._primary: Strategy | None = None
        self._fallback: Strategy | None = None
        self._policy = "memory"
        self._degraded_until = 0.0
        self._one_trip: Any | None = None
        # Called each time a storage error sends a request to the fallback
        # policy (metrics count them).
        self.on_fallback: list[Callable[[], None]] = []

    def init_app(self, app: Flask) -> None:
        config = app.config
        self.ip_item = parse(config["RATE_LIMIT"])
        per_key = config["RATE_LIMIT_PER_KEY"]
        self.key_item = parse(per_key) if per_key else None
        strategy = STRATEGIES[config["RATE_LIMIT_STRATEGY"]]
        self._policy = config["RATE_LIMIT_ON_STORAGE_ERROR"]
        self.storage = self._make_storage(config)
        self.shared = config["REDIS_URL"] is not None
        self._primary = strategy(self.storage)
        self._fallback = strategy(MemoryStorage())
        self._degraded_until = 0.0
        self.on_fallback = []
        self._one_trip = None
        if (
            isinstance(self.storage, RedisStorage)
            and strategy is STRATEGIES["moving-window"]
        ):
            connection = self.storage.get_connection()
            self._one_trip = connection.register_script(ACQUIRE_AND_COUNT)

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

        timeouts = {
            "socket_timeout": REDIS_TIMEOUT_SECONDS,
            "socket_connect_timeout": REDIS_TIMEOUT_SECONDS,
        }
        options: dict[str, Any] = dict(timeouts)
        if "+sentinel://" in url:
            # Sentinels get no timeouts of their own unless given explicitly.
            options["sentinel_kwargs"] = timeouts

        # A namespace per strategy: a counter written by another strategy
        # (another Redis type under the same name) is never read by this one.
        storage = storage_from_string(
            url,
            key_prefix=f"{KEY_PREFIX}:{config['RATE_LIMIT_STRATEGY']}",
            wrap_exceptions=True,
            **options,
        )
        return cast(Storage, storage)

    @property
    def redis(self) -> Any | None:
        """The Redis client, for other shared state; None without a healthy one."""
        if not self.shared or self.degraded:
            return None

        return getattr(self.storage, "storage", None)

    @property
    def degraded(self) -> bool:
        return time.monotonic() < self._degraded_until

    def check_request(self) -> None:
        """Count this request against its IP; 429 once the budget is spent."""
        if not is_limited_path(request.path):
            return

        assert self.ip_item is not None
        client = request.remote_addr or "unknown"
        state, allowed = self._hit(self.ip_item, "ip", client)
        g.rate_limit = state
        if not allowed:
            self._reject(state, "per client IP")

    def check_key(self, key_id: str) -> None:
        """Count this request against its API key too, when a per-key limit is set."""
        if self.key_item is None:
            return

        state, allowed = self._hit(self.key_item, "key", key_id)
        current: LimitState | None = g.get("rate_limit")
        if state is not None and (
            current is None or not allowed or state.remaining < current.remaining
        ):
            g.rate_limit = state

        if not allowed:
            self._reject(state, "per API key")

    def _reject(self, state: LimitState | None, scope: str) -> None:
        assert state is not None
        retry_after = state.seconds_to_reset()
        raise APIError(
            429,
            "rate_limited",
            f"Too many requests: the limit is {state.limit} per "
            f"{state.window} seconds {scope}. Retry in {retry_after} seconds.",
            headers={"Retry-After": str(retry_after)},
        )

    def _hit(
        self, item: RateLimitItem, scope: str, identity: str
    ) -> tuple[LimitState | None, bool]:
        assert self._primary is not None and self._fallback is not None
        if not self.degraded:
            try:
                return self._count(self._primary, item, scope, identity)
            except StorageError as error:
                self._enter_degraded(error)

        if self._policy == "memory":
            return self._count(self._fallback, item, scope, identity)

        if self._policy == "open":
            return None, True

        raise APIError(
            503,
            "rate_limit_unavailable",
            "The rate-limit store is unreachable, so requests are refused. "
            "Retry shortly.",
            headers={"Retry-After": str(math.ceil(RETRY_PRIMARY_SECONDS))},
        )

    def _count(
        self, strategy: Strategy, item: RateLimitItem, scope: str, identity: str
    ) -> tuple[LimitState, bool]:
        if strategy is self._primary and self._one_trip is not None:
            allowed, reset, remaining = self._acquire_and_count(item, scope, identity)
        else:
            allowed = strategy.hit(item, scope, identity)
            reset, remaining = strategy.get_window_stats(item, scope, identity)

        if self._degraded_until and strategy is self._primary:
            self._degraded_until = 0.0
            log.info("rate-limit storage is reachable again; counts are shared")

        policy = "default" if scope == "ip" else scope
        state = LimitState(
            policy, item.amount, max(0, remaining), reset, item.get_expiry()
        )
        return state, allowed

    def _acquire_and_count(
        self, item: RateLimitItem, scope: str, identity: str
    ) -> tuple[bool, float, int]:
        """A moving-window hit and the window after it, in one Redis call."""
        storage = cast(RedisStorage, self.storage)
        key = storage.prefixed_key(item.key_for(scope, identity))
        expiry = item.get_expiry()
        try:
            acquired, hits, oldest = self._one_trip(  # type: ignore[misc]
                keys=[key], args=[repr(time.time()), item.amount, expiry]
            )
        except storage.base_exceptions as error:
            raise StorageError(error) from error

        return bool(acquired), float(oldest) + expiry, item.amount - int(hits)

    def _enter_degraded(self, error: StorageError) -> None:
        # Logged once per outage, not per request: a warning while requests
        # are still served (memory, open), an error when they are refused.
        if not self._degraded_until:
            log.log(
                logging.ERROR if self._policy == "closed" else logging.WARNING,
                "rate-limit storage failed (%s); policy %r until it recovers",
                type(error.storage_error).__name__,
                self._policy,
            )

        self._degraded_until = time.monotonic() + RETRY_PRIMARY_SECONDS
        for listener in self.on_fallback:
            listener()

    def add_headers(self, response: Response) -> Response:
        """Tell the client its budget, on every counted response."""
        state: LimitState | None = g.get("rate_limit")
        if state is None:
            return response

        name = f'"{state.policy}"'
        headers = response.headers
        headers.add("X-RateLimit-Limit", str(state.limit))
        headers.add("X-RateLimit-Remaining", str(state.remaining))
        headers.add("X-RateLimit-Reset", str(math.ceil(state.reset)))
        headers.add("RateLimit-Policy", f"{name};q={state.limit};w={state.window}")
        headers.add(
            "RateLimit", f"{name};r={state.remaining};t={state.seconds_to_reset()}"
        )

        return response

    def state_for(self, scope: str, identity: str) -> LimitState | None:
        """The current budget of a client or key, without counting a request."""
        item = self.ip_item if scope == "ip" else self.key_item
        if item is None or self._primary is None or self._fallback is None:
            return None

        strategy = self._fallback if self.degraded else self._primary
        try:
            reset, remaining = strategy.get_window_stats(item, scope, identity)
        except StorageError:
            return None

        policy = "default" if scope == "ip" else scope
        return LimitState(policy, item.amount, remaining, reset, item.get_expiry())
