"""Listing an owner's referrals: newest first, keyset pages, owner-scoped."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import new_key
from tests.test_users import assert_envelope

REFERRALS = "/v1/internal/referrals"


def register(client: FlaskClient, headers: dict[str, str], count: int) -> list[str]:
    """Register `count` users; return their ids, oldest first."""
    ids = []
    for n in range(count):
        response = client.post(
            "/v1/internal/users", headers=headers, json={"email": f"u{n}@example.com"}
        )
        assert response.status_code == 201
        ids.append(response.get_json()["id"])

    return ids


def pages(client: FlaskClient, headers: dict[str, str], limit: int) -> list[list[str]]:
    """Follow nextCursor to the end; return the ids on each page."""
    result, cursor = [], None
    while True:
        query: dict[str, Any] = {"limit": limit}
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
        # A well-formed position whose id this API never issues.
        {"cursor": "MjAyNi0wMS0wMVQwMDowMDowMHx1c3JfAA"},
        {"offset": "10"},
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
