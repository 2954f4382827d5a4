"""Listing an owner's referrals: newest first, keyset pages, filters, owner-scoped."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update

from partner_api.extensions import db
from partner_api.models import Referral, User, utcnow
from partner_api.seed import seed_referrals
from partner_api.services import encode_cursor, referrals_page_query
from tests.conftest import new_key
from tests.test_users import assert_envelope

REFERRALS = "/v1/internal/referrals"
USERS = "/v1/internal/users"


def register(client: FlaskClient, headers: dict[str, str], count: int) -> list[str]:
    """Register `count` users; return their ids, oldest first."""
    ids = []
    for n in range(count):
        response = client.post(
            USERS, headers=headers, json={"email": f"u{n}@example.com"}
        )
        assert response.status_code == 201
        ids.append(response.get_json()["id"])

    return ids


def pages(
    client: FlaskClient, headers: dict[str, str], limit: int, **filters: str
) -> list[list[str]]:
    """Follow nextCursor to the end, with the same filters; the ids on each page."""
    result, cursor = [], None
    while True:
        query: dict[str, Any] = {"limit": limit, **filters}
        if cursor:
            query["cursor"] = cursor

        body = client.get(REFERRALS, headers=headers, query_string=query).get_json()
        result.append([user["id"] for user in body["data"]])
        cursor = body["nextCursor"]
        if cursor is None:
            return result


def test_pages_cover_every_referral_newest_first(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    ids = register(client, auth, 25)

    listed = pages(client, auth, limit=10)

    assert [len(page) for page in listed] == [10, 10, 5]
    assert [i for page in listed for i in page] == list(reversed(ids))


def test_default_limit_is_20(client: FlaskClient, auth: dict[str, str]) -> None:
    register(client, auth, 21)

    body = client.get(REFERRALS, headers=auth).get_json()

    assert len(body["data"]) == 20 and body["nextCursor"] is not None


def test_empty_listing(client: FlaskClient, auth: dict[str, str]) -> None:
    body = client.get(REFERRALS, headers=auth).get_json()

    assert body == {"data": [], "nextCursor": None}


@pytest.mark.parametrize(
    "query",
    [
        {"limit": "0"},
        {"limit": "101"},
        {"limit": "-1"},
        {"limit": "ten"},
        {"limit": "1.5"},
        {"cursor": "not-a-cursor"},
        {"cursor": "bm90fGE"},
        {"cursor": "MjAyNi0wMS0wMVQwMDowMDowMCswMDowMHx1c3Jf"},
        {"cursor": "%%%"},
        # "2026-W01-1|usr_" + 32 zeros: a week date, not what the API writes.
        {"cursor": "MjAyNi1XMDEtMXx1c3JfMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDA"},
        # A well-formed position whose id this API never issues.
        {"cursor": "MjAyNi0wMS0wMVQwMDowMDowMHx1c3JfAA"},
        {"offset": "10"},
        # "2026-01-01T00:00:00+00:00|usr_" + 32 zeros: the API writes no zone.
        {
            "cursor": "MjAyNi0wMS0wMVQwMDowMDowMCswMDowMHx1c3JfMDAwMDAwMDAwMDAwMD"
            "AwMDAwMDAwMDAwMDAwMDAwMDAwMDA"
        },
        {
            "createdBefore": "2026-06-01T00:00:00Z",
            "cursor": "MjAyNi0wMS0wMVQwMDowMDowMCswMDowMHx1c3JfMDAwMDAwMDAwMDAwMD"
            "AwMDAwMDAwMDAwMDAwMDAwMDAwMDA",
        },
        {"limit": "+5"},
        {"limit": "1_0"},
        {"limit": "\u0665"},
        {"limit": ["1", "abc"]},
        {"limit": ["5", "5"]},
    ],
)
def test_bad_limit_or_cursor_is_400(
    client: FlaskClient, auth: dict[str, str], query: dict[str, str]
) -> None:
    response = client.get(REFERRALS, headers=auth, query_string=query)

    assert response.status_code == 400
    assert response.get_json()["code"] in {"validation_failed", "invalid_cursor"}


def test_owners_never_see_each_others_referrals(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    other = {"x-api-key": new_key(app, "other-partner@example.com")["key"]}
    theirs = client.post(
        "/v1/internal/users", headers=other, json={"email": "theirs@example.com"}
    ).get_json()
    register(client, auth, 3)
    my_cursor = client.get(
        REFERRALS, headers=auth, query_string={"limit": 1}
    ).get_json()["nextCursor"]

    mine = client.get(REFERRALS, headers=auth).get_json()["data"]
    with_my_cursor = client.get(
        REFERRALS, headers=other, query_string={"cursor": my_cursor}
    ).get_json()["data"]

    assert theirs["id"] not in {user["id"] for user in mine}
    assert len(mine) == 3
    # A cursor copied from another owner's listing still shows only your own.
    assert [user["id"] for user in with_my_cursor] == [theirs["id"]]


def test_listing_needs_a_key(client: FlaskClient) -> None:
    assert_envelope(client.get(REFERRALS), 401, "missing_api_key")


def backdate(app: Flask, times: dict[str, datetime]) -> None:
    """Give each referral, by user id, the creation time in `times`."""
    with app.app_context():
        for user_id, created_at in times.items():
            db.session.execute(
                update(Referral)
                .where(Referral.user_id == user_id)
                .values(created_at=created_at)
            )

        db.session.commit()


@pytest.fixture
def five_days(app: Flask, client: FlaskClient, auth: dict[str, str]) -> list[str]:
    """Five referrals created at midnight UTC on 1 to 5 January 2026."""
    ids = register(client, auth, 5)
    backdate(app, {i: datetime(2026, 1, 1 + n) for n, i in enumerate(ids)})

    return ids


@pytest.mark.parametrize(
    "window",
    [
        {
            "createdAfter": "2026-01-02T00:00:00Z",
            "createdBefore": "2026-01-04T00:00:00Z",
        },
        {
            "createdAfter": "2026-01-02T02:00:00+02:00",
            "createdBefore": "2026-01-04T00:00Z",
        },
        {
            "createdAfter": "2026-01-01T19:00:00.000-05:00",
            "createdBefore": "2026-01-03T00:00:00.000001Z",
        },
    ],
)
def test_created_window_includes_after_and_excludes_before(
    client: FlaskClient,
    auth: dict[str, str],
    five_days: list[str],
    window: dict[str, str],
) -> None:
    listed = pages(client, auth, limit=1, **window)

    assert listed == [[five_days[2]], [five_days[1]]]


def test_time_filters_alone(
    client: FlaskClient, auth: dict[str, str], five_days: list[str]
) -> None:
    after = pages(client, auth, limit=2, createdAfter="2026-01-04T00:00:00Z")
    before = pages(client, auth, limit=2, createdBefore="2026-01-02T00:00:00Z")

    assert after == [[five_days[4], five_days[3]]]
    assert before == [[five_days[0]]]


@pytest.mark.parametrize(
    "value",
    [
        "2026-01-02T00:00:00",
        "2026-01-02",
        "yesterday",
        "",
        "2026-13-01T00:00:00Z",
        "9999-12-31T23:00:00-05:00",
    ],
)
@pytest.mark.parametrize("name", ["createdAfter", "createdBefore"])
def test_times_must_be_iso_8601_with_a_zone(
    client: FlaskClient, auth: dict[str, str], name: str, value: str
) -> None:
    response = client.get(REFERRALS, headers=auth, query_string={name: value})

    assert name in assert_envelope(response, 400, "validation_failed")["details"]


def test_external_id_and_email_match_exactly(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    for n, email in enumerate(
        ["Ada@Example.com", "ada2@example.com", "bob@example.com"]
    ):
        body = {"email": email, "externalId": f"crm-{n}"}
        assert client.post(USERS, headers=auth, json=body).status_code == 201

    def emails(**query: str) -> list[str]:
        body = client.get(REFERRALS, headers=auth, query_string=query).get_json()
        return [user["email"] for user in body["data"]]

    assert emails(externalId="crm-1") == ["ada2@example.com"]
    assert emails(externalId="CRM-1") == []
    assert emails(externalId="crm") == []
    assert emails(email="ada@example.com") == ["Ada@example.com"]
    assert emails(email=" ADA@EXAMPLE.COM ") == ["Ada@example.com"]
    assert emails(email="ada@example.co") == []
    assert emails(email="ada@example.com", externalId="crm-0") == ["Ada@example.com"]
    assert emails(email="ada@example.com", externalId="crm-1") == []
    assert emails(email="Ada@Example.com", createdBefore="2000-01-01T00:00:00Z") == []


@pytest.mark.parametrize(
    "query",
    [
        {"externalId": ""},
        {"externalId": "x" * 129},
        {"externalId": "nul\u0000"},
        {"email": "not-an-email"},
        {"email": "nul\u0000@example.com"},
        {"email": ""},
    ],
)
def test_bad_filters_are_400(
    client: FlaskClient, auth: dict[str, str], query: dict[str, str]
) -> None:
    response = client.get(REFERRALS, headers=auth, query_string=query)

    assert set(query) <= set(
        assert_envelope(response, 400, "validation_failed")["details"]
    )


def test_no_filter_or_cursor_reaches_another_owners_referrals(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    other = {"x-api-key": new_key(app, "other-partner@example.com")["key"]}
    body = {"email": "theirs@example.com", "externalId": "crm-1"}
    theirs = client.post(USERS, headers=other, json=body).get_json()
    client.post(USERS, headers=other, json={"email": "theirs2@example.com"})
    mine = register(client, auth, 2)
    their_cursor = client.get(
        REFERRALS, headers=other, query_string={"limit": 1}
    ).get_json()["nextCursor"]

    probes = [
        {"email": "theirs@example.com"},
        {"externalId": "crm-1"},
        {"createdAfter": "2000-01-01T00:00:00Z"},
        {"cursor": their_cursor},
        {"cursor": their_cursor, "createdBefore": "2100-01-01T00:00:00Z"},
        {"cursor": their_cursor, "email": "theirs@example.com"},
    ]
    seen = set()
    for query in probes:
        body = client.get(REFERRALS, headers=auth, query_string=query).get_json()
        seen |= {user["id"] for user in body["data"]}

    assert theirs["id"] not in seen
    assert seen <= set(mine)
    assert client.get(f"{USERS}/{theirs['id']}", headers=auth).status_code == 404


def test_summary_counts_total_and_last_30_days(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    other = {"x-api-key": new_key(app, "other-partner@example.com")["key"]}
    client.post(USERS, headers=other, json={"email": "theirs@example.com"})
    empty = client.get(f"{REFERRALS}/summary", headers=auth).get_json()
    ids = register(client, auth, 4)
    now = utcnow()
    backdate(
        app,
        {
            ids[0]: now - timedelta(days=400),
            ids[1]: now - timedelta(days=30, minutes=1),
            ids[2]: now - timedelta(days=29, hours=23),
        },
    )

    summary = client.get(f"{REFERRALS}/summary", headers=auth)

    assert empty == {"total": 0, "last30Days": 0}
    assert summary.status_code == 200
    assert summary.get_json() == {"total": 4, "last30Days": 2}
    assert_envelope(client.get(f"{REFERRALS}/summary"), 401, "missing_api_key")


def test_seeded_referrals_page_like_registered_ones(
    app: Flask, client: FlaskClient, auth: dict[str, str], api_key: dict[str, Any]
) -> None:
    runner = app.test_cli_runner()
    result = runner.invoke(
        args=[
            "dev",
            "seed-referrals",
            "--owner",
            "partner@example.com",
            "--users",
            "45",
        ]
    )
    register(client, auth, 1)

    listed = pages(client, auth, limit=10)
    summary = client.get(f"{REFERRALS}/summary", headers=auth).get_json()

    assert result.exit_code == 0, result.output
    assert "Seeded 45 referrals of partner@example.com" in result.output
    assert [len(page) for page in listed] == [10, 10, 10, 10, 6]
    with app.app_context():
        newest_first = db.session.scalars(
            select(Referral.user_id).order_by(
                Referral.created_at.desc(), Referral.user_id.desc()
            )
        ).all()
    assert [i for page in listed for i in page] == newest_first
    assert summary["total"] == 46 and 0 < summary["last30Days"] < 46


def scans(app: Flask, query: Any) -> list[dict[str, Any]]:
    """How the database ran `query` (PostgreSQL) or plans to (SQLite).

    PostgreSQL: every node of EXPLAIN ANALYZE, with its actual row counts.
    SQLite: the EXPLAIN QUERY PLAN lines, as {"detail": ...}.
    """
    with app.app_context():
        sql = str(query.compile(db.engine, compile_kwargs={"literal_binds": True}))
        if db.engine.dialect.name == "sqlite":
            rows = db.session.execute(db.text(f"EXPLAIN QUERY PLAN {sql}"))
            return [{"detail": row.detail} for row in rows]

        plan = db.session.scalar(db.text(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}"))

    nodes, pending = [], [plan[0]["Plan"]]
    while pending:
        node = pending.pop()
        pending.extend(node.get("Plans", []))
        nodes.append(node)

    return nodes


PAGE = 20


def test_every_page_reads_one_page_of_the_referrer_index(
    app: Flask, database_url: str
) -> None:
    owners = [new_key(app, f"owner-{n}@example.com") for n in range(3)]
    with app.app_context():
        for owner in owners:
            seed_referrals(owner["owner_id"], owner["id"], 1500)

        owner_id = owners[1]["owner_id"]
        oldest = db.session.execute(
            select(Referral.created_at, Referral.user_id, Referral.external_id)
            .where(Referral.referrer_id == owner_id)
            .order_by(Referral.created_at, Referral.user_id)
        ).all()

    def cursor(n: int) -> str:
        """The cursor after which the `n` oldest referrals remain."""
        return encode_cursor(oldest[n][0], oldest[n][1])

    window = {"created_after": oldest[10][0], "created_before": oldest[900][0]}
    pages = {
        "first": {},
        "middle": {"cursor": cursor(750)},
        "last": {"cursor": cursor(PAGE)},
        "last in a window": {"cursor": cursor(10 + PAGE), **window},
    }
    for name, filters in pages.items():
        reads = scans(app, referrals_page_query(owner_id, PAGE, **filters))
        if database_url.startswith("sqlite"):
            details = [read["detail"] for read in reads]
            assert any(
                d.startswith(
                    "SEARCH referrals USING INDEX ix_referrals_referrer_created"
                )
                for d in details
            ), (name, details)
            assert not any("SCAN" in d or "TEMP B-TREE" in d for d in details), name
            # The seek starts at the cursor rather than filtering up to it.
            if "cursor" in filters:
                assert any("(created_at,user_id)<(?,?)" in d for d in details), name

            continue

        # How users are joined depends on the table's size (a hash join over a
        # few thousand rows here; one primary-key lookup per row at scale, see
        # bench/referral_pages.py). The referrals side must not depend on it:
        # however deep the page, no step handles more than a page and a row,
        # and nothing is read only to be filtered away.
        indexes = {read["Index Name"] for read in reads if "Index Name" in read}
        assert indexes - {"pk_users"} == {"ix_referrals_referrer_created"}, name
        for read in reads:
            if read.get("Relation Name") == "users":
                continue

            assert read["Node Type"] != "Seq Scan", (name, read)
            assert read["Actual Rows"] <= PAGE + 1, (name, read)
            assert read.get("Rows Removed by Filter", 0) == 0, (name, read)
            assert read.get("Rows Removed by Index Recheck", 0) == 0, (name, read)


@pytest.mark.parametrize(
    ("column", "index"),
    [
        ("email", {"uq_users_email_key", "sqlite_autoindex_users_2"}),
        (
            "external_id",
            {"uq_referrals_referrer_id_external_id", "sqlite_autoindex_referrals_2"},
        ),
    ],
)
def test_exact_filters_go_through_their_unique_index(
    app: Flask, column: str, index: set[str]
) -> None:
    key = new_key(app)
    with app.app_context():
        seed_referrals(key["owner_id"], key["id"], 2000)
        user_id, external_id = db.session.execute(
            select(Referral.user_id, Referral.external_id).limit(1)
        ).one()
        email = db.session.scalar(select(User.email).where(User.id == user_id))

    value = email if column == "email" else external_id
    reads = scans(app, referrals_page_query(key["owner_id"], PAGE, **{column: value}))

    plan = repr(reads)
    assert any(name in plan for name in index), reads
    # "Seq Scan" on PostgreSQL, "SCAN <table>" on SQLite: a full read.
    assert "Seq Scan" not in plan and "SCAN " not in plan, reads
