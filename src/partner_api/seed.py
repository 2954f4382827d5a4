"""Bulk synthetic referrals for development and benchmarks, never for production.

Rows are generated inside the database by one INSERT ... SELECT per table,
with no password hashing, so a million users take seconds rather than hours.
"""

from __future__ import annotations

import secrets
from datetime import UTC

from sqlalchemy import text

from partner_api.extensions import db
from partner_api.models import utcnow

# The users come from a series 1..count; each dialect spells the series, the
# hex counter and the time arithmetic its own way.
USERS_SQL = {
    "postgresql": """
        INSERT INTO users (id, email, email_key, created_at)
        SELECT 'usr_' || :batch || lpad(to_hex(n), 16, '0'),
               'seed-' || :batch || '-' || n || '@example.com',
               'seed-' || :batch || '-' || n || '@example.com',
               CAST(:now AS timestamp) - make_interval(secs => n * :step)
        FROM generate_series(1, :count) AS n
    """,
    # Stored the way SQLAlchemy stores datetimes on SQLite, microseconds
    # included, so that the text comparisons of keyset pages stay exact.
    "sqlite": """
        WITH RECURSIVE series(n) AS (
            SELECT 1 UNION ALL SELECT n + 1 FROM series WHERE n < :count
        )
        INSERT INTO users (id, email, email_key, created_at)
        SELECT 'usr_' || :batch || printf('%016x', n),
               'seed-' || :batch || '-' || n || '@example.com',
               'seed-' || :batch || '-' || n || '@example.com',
               strftime('%Y-%m-%d %H:%M:%S', :now - n * :step, 'unixepoch')
                   || '.000000'
        FROM series
    """,
}

# Portable: the batch's users are one range of the users primary key.
REFERRALS_SQL = """
    INSERT INTO referrals (user_id, referrer_id, api_key_id, external_id, created_at)
    SELECT id, :owner_id, :api_key_id, 'seed-' || substr(id, 5), created_at
    FROM users
    WHERE id BETWEEN :first AND :last
"""


def seed_referrals(owner_id: str, api_key_id: str, count: int, days: int = 365) -> None:
    """Add `count` users referred by `owner_id`, spread over the last `days`.

    Ids and emails carry a random batch tag, so batches never collide. Each
    seeded user also gets an externalId. Statistics are refreshed afterwards,
    since the planner would otherwise plan for the tables as they were.
    """
    dialect = db.engine.dialect.name
    batch = secrets.token_hex(8)
    # Whole seconds: SQLite's strftime has no finer unit to offer.
    step = max(1, days * 86400 // max(count, 1))
    now = utcnow().replace(microsecond=0)
    db.session.execute(
        text(USERS_SQL[dialect]),
        {
            "batch": batch,
            "count": count,
            "step": step,
            # pysqlite's datetime adapter is deprecated: SQLite gets epoch seconds.
            "now": int(now.replace(tzinfo=UTC).timestamp())
            if dialect == "sqlite"
            else now,
        },
    )
    db.session.execute(
        text(REFERRALS_SQL),
        {
            "owner_id": owner_id,
            "api_key_id": api_key_id,
            "first": f"usr_{batch}{'0' * 16}",
            "last": f"usr_{batch}{'f' * 16}",
        },
    )
    db.session.commit()
    if dialect == "postgresql":
        # VACUUM cannot run in a transaction. It also sets the visibility map
        # that index-only scans need, as autovacuum would in time.
        autocommit = db.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        with autocommit as connection:
            connection.execute(text("VACUUM ANALYZE users, referrals"))
    else:
        db.session.execute(text("ANALYZE"))
        db.session.commit()
