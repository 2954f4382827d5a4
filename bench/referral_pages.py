"""Referral pages on PostgreSQL: the first page against the last of 100,000.

Seeds 1,000,000 users, 100,000 of them referred by one owner and the rest by
nine others, then times GET /v1/internal/referrals in process (the full
request: auth, query, JSON) for the newest page and for the oldest one, whose
cursor is built from the oldest rows. Prints medians and their ratio; the
target is a ratio within 1.2. Also times the filters and the summary.

Uses BENCH_DATABASE_URL (default: the local partner_api_bench database), whose
schema it drops and rebuilds. Seeding takes under a minute.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import services as test_services  # noqa: E402
from tests.conftest import make_app, new_key  # noqa: E402

from partner_api import services  # noqa: E402
from partner_api.extensions import db  # noqa: E402
from partner_api.models import Referral, User  # noqa: E402
from partner_api.seed import seed_referrals  # noqa: E402

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/partner_api_bench"
REFERRALS = "/v1/internal/referrals"


def seed(app: Any, users: int, per_owner: int) -> dict[str, Any]:
    """The measured owner's key, after seeding every owner's referrals."""
    owners = users // per_owner
    key = new_key(app, "owner-0@bench.example")
    started = time.monotonic()
    with app.app_context():
        seed_referrals(key["owner_id"], key["id"], per_owner)
        for n in range(1, owners):
            other = new_key(app, f"owner-{n}@bench.example")
            seed_referrals(other["owner_id"], other["id"], per_owner)

        total = db.session.scalar(select(func.count()).select_from(User))

    print(f"seeded {total:,} users in {time.monotonic() - started:.1f} s")

    return key


def last_page_cursor(app: Any, owner_id: str, limit: int) -> str:
    """The cursor whose page holds the owner's `limit` oldest referrals."""
    with app.app_context():
        created_at, user_id = db.session.execute(
            select(Referral.created_at, Referral.user_id)
            .where(Referral.referrer_id == owner_id)
            .order_by(Referral.created_at, Referral.user_id)
            .offset(limit)
            .limit(1)
        ).one()

    return services.encode_cursor(created_at, user_id)


def median_ms(cases: dict[str, Callable[[], Any]], repeat: int) -> dict[str, float]:
    """Median milliseconds per case, the cases taking turns in a shuffled order.

    Turns spread whatever else the machine does evenly over the cases, and
    the shuffle keeps any case from always following the same neighbour.
    """
    timings: dict[str, list[float]] = {name: [] for name in cases}
    order = list(cases)
    for _ in range(repeat):
        random.shuffle(order)
        for name in order:
            started = time.perf_counter()
            cases[name]()
            timings[name].append(time.perf_counter() - started)

    return {name: statistics.median(values) * 1000 for name, values in timings.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--per-owner", type=int, default=100_000)
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=500)
    args = parser.parse_args()

    database_url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)
    test_services.prepare_postgres(database_url)
    # Request lines would bury the results; warnings still show.
    app = make_app(
        database_url, None, RATE_LIMIT="1000000 per minute", LOG_LEVEL="WARNING"
    )
    key = seed(app, args.users, args.per_owner)
    headers = {"x-api-key": key["key"]}
    client = app.test_client()
    oldest = last_page_cursor(app, key["owner_id"], args.limit)

    def page(**query: Any) -> dict[str, Any]:
        response = client.get(
            REFERRALS, headers=headers, query_string={"limit": args.limit, **query}
        )
        assert response.status_code == 200, response.get_data(as_text=True)
        body: dict[str, Any] = response.get_json()
        return body

    last = page(cursor=oldest)
    assert len(last["data"]) == args.limit and last["nextCursor"] is None
    newest_email = page()["data"][0]["email"]
    window = {
        "createdAfter": "2000-01-01T00:00:00Z",
        "createdBefore": "2100-01-01T00:00:00Z",
    }
    cases: dict[str, Callable[[], Any]] = {
        "first page": page,
        "last page": lambda: page(cursor=oldest),
        "last page, time window": lambda: page(cursor=oldest, **window),
        "email filter": lambda: page(email=newest_email.upper()),
        "externalId filter": lambda: page(externalId=last["data"][0]["externalId"]),
        "summary": lambda: client.get(f"{REFERRALS}/summary", headers=headers),
    }
    for request in cases.values():  # warm up: pools, key cache, buffers
        for _ in range(20):
            request()

    results = median_ms(cases, args.repeat)
    for name, milliseconds in results.items():
        print(f"{name:>24}: {milliseconds:6.2f} ms median per request")

    ratio = results["last page"] / results["first page"]
    print(f"{'ratio':>24}: {ratio:6.2f} (last / first; target within 1.2)")

    # The request's fixed costs (auth, JSON) could hide a slow query: time the
    # queries alone too.
    first_query = services.referrals_page_query(key["owner_id"], args.limit)
    last_query = services.referrals_page_query(
        key["owner_id"], args.limit, cursor=oldest
    )
    with app.app_context():
        sql = median_ms(
            {
                "first page, SQL only": lambda: db.session.execute(first_query).all(),
                "last page, SQL only": lambda: db.session.execute(last_query).all(),
            },
            args.repeat,
        )

    for name, milliseconds in sql.items():
        print(f"{name:>24}: {milliseconds:6.3f} ms median")

    ratio = sql["last page, SQL only"] / sql["first page, SQL only"]
    print(f"{'ratio':>24}: {ratio:6.2f} (SQL only)")


if __name__ == "__main__":
    main()
