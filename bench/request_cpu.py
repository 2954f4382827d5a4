"""Server CPU per request: the API's authenticated, rate-limited GET /v1/internal
against a bare Flask JSON hello on the same gunicorn configuration.

Prints CPU microseconds per request for each and their ratio; the target is
a ratio of at most 2. Needs PostgreSQL and Redis (BENCH_DATABASE_URL,
BENCH_REDIS_URL; the test defaults otherwise). Sends traffic to loopback only,
a bounded number of requests.
"""

from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import services  # noqa: E402
from tests.conftest import make_app, new_key  # noqa: E402
from tests.live import Server  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU time of these processes, from /proc."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])

    return total / CLOCK_TICKS


def run(server: Server, headers: dict[str, str], count: int, threads: int) -> None:
    """`count` authenticated GETs from `threads` clients; every one must be 200."""
    url = f"{server.url}/v1/internal"

    def client(requests_count: int) -> None:
        with requests.Session() as session:
            for _ in range(requests_count):
                response = session.get(url, headers=headers, timeout=10)
                assert response.status_code == 200, response.text

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(client, [count // threads] * threads))


def measure(
    servers: dict[str, Server], headers: dict[str, str], total: int, rounds: int
) -> dict[str, float]:
    """Server CPU seconds per request, alternating rounds between the servers.

    Alternating spreads any background load on the machine evenly over both.
    """
    pids = {name: [s.process.pid, *s.worker_pids()] for name, s in servers.items()}
    spent = dict.fromkeys(servers, 0.0)
    per_round = total // rounds
    for server in servers.values():
        run(server, headers, 200, 2)  # warm up: imports, pools, key cache

    for _ in range(rounds):
        for name, server in servers.items():
            before = cpu_seconds(pids[name])
            run(server, headers, per_round, 4)
            spent[name] += cpu_seconds(pids[name]) - before

    return {name: seconds / (per_round * rounds) for name, seconds in spent.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    database_url = os.environ.get("BENCH_DATABASE_URL", services.DATABASE_URL)
    redis_url = os.environ.get("BENCH_REDIS_URL", services.REDIS_URL)
    if database_url == services.DATABASE_URL:
        services.prepare_postgres(database_url)

    app = make_app(database_url, redis_url)
    key = new_key(app, "bench@example.com")["key"]
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "RATE_LIMIT": "1000000 per 15 minutes",
    }

    servers = {
        "hello": Server(env, workers=args.workers, app="bench.hello_app:app"),
        "api": Server(env, workers=args.workers, app="wsgi:app"),
    }
    try:
        results = measure(servers, {"x-api-key": key}, args.requests, args.rounds)
    finally:
        for server in servers.values():
            server.stop()

    for name, seconds in results.items():
        print(f"{name:>6}: {seconds * 1e6:8.1f} us server CPU per request")
    ratio = results["api"] / results["hello"]
    print(f" ratio: {ratio:8.2f} (api / hello; target <= 2)")


if __name__ == "__main__":
    main()
