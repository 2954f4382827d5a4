"""Registering users: the contract of POST and GET /v1/internal/users."""

from __future__ import annotations

import json
from typing import Any

import pytest
from argon2 import PasswordHasher
from flask import Flask
from flask.testing import FlaskClient

from partner_api.extensions import db
from partner_api.models import Referral, User
from tests.conftest import new_key

USERS = "/v1/internal/users"


def assert_envelope(response: Any, status: int, code: str) -> dict[str, Any]:
    """The error body has the documented shape and agrees with the status."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body: dict[str, Any] = response.get_json()
    assert body["statusCode"] == status
    assert body["code"] == code
    assert isinstance(body["message"], str) and body["message"]
    assert isinstance(body["error"], str) and body["error"]

    return body


def test_register_returns_user_and_location(
    client: FlaskClient, auth: dict[str, str], api_key: dict[str, Any]
) -> None:
    response = client.post(
        USERS,
        headers=auth,
        json={
            "email": "  Ada.Lovelace@Example.COM ",
            "password": "correct horse",
            "firstName": "Ada",
            "lastName": "Lovelace",
            "externalId": "crm-1",
        },
    )

    assert response.status_code == 201
    user = response.get_json()
    assert set(user) == {
        "id",
        "email",
        "firstName",
        "lastName",
        "externalId",
        "referrerId",
        "createdAt",
    }
    assert user["email"] == "Ada.Lovelace@example.com"
    assert user["referrerId"] == api_key["owner_id"]
    assert user["externalId"] == "crm-1"
    assert user["id"].startswith("usr_") and not user["id"][4:].isdigit()
    assert user["createdAt"].endswith("Z")
    assert response.headers["Location"] == f"{USERS}/{user['id']}"
    assert "password" not in response.get_data(as_text=True)


def test_user_and_referral_are_stored_together(
    app: Flask, client: FlaskClient, auth: dict[str, str], api_key: dict[str, Any]
) -> None:
    body = {"email": "grace@example.com", "password": "s3cret-enough"}
    user_id = client.post(USERS, headers=auth, json=body).get_json()["id"]

    with app.app_context():
        user = db.session.get(User, user_id)
        referral = db.session.get(Referral, user_id)
        assert user is not None and referral is not None
        assert referral.referrer_id == api_key["owner_id"]
        assert referral.api_key_id == api_key["id"]
        # Only a salted slow hash is kept, and it verifies.
        assert user.password_hash is not None
        assert "s3cret-enough" not in user.password_hash
        assert PasswordHasher().verify(user.password_hash, "s3cret-enough")


def test_optional_fields_may_be_null_or_absent(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    nulls = {"password": None, "firstName": None, "lastName": None, "externalId": None}
    first = client.post(USERS, headers=auth, json={"email": "a@example.com", **nulls})
    second = client.post(USERS, headers=auth, json={"email": "b@example.com"})

    assert first.status_code == second.status_code == 201
    assert first.get_json()["firstName"] is None
    assert second.get_json()["externalId"] is None


LONG = "x" * 101


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "email"),
        ({"email": None}, "email"),
        ({"email": 42}, "email"),
        ({"email": "not-an-email"}, "email"),
        ({"email": "a b@example.com"}, "email"),
        ({"email": "a" * 250 + "@example.com"}, "email"),
        ({"email": "nul\u0000@example.com"}, "email"),
        ({"email": "a@example.com", "password": "short"}, "password"),
        ({"email": "a@example.com", "password": "p" * 129}, "password"),
        ({"email": "a@example.com", "password": 12345678}, "password"),
        ({"email": "a@example.com", "firstName": LONG}, "firstName"),
        ({"email": "a@example.com", "lastName": ["Doe"]}, "lastName"),
        ({"email": "a@example.com", "firstName": "Ada\u0000"}, "firstName"),
        ({"email": "a@example.com", "lastName": "bell\u0007"}, "lastName"),
        ({"email": "a@example.com", "firstName": "\ud800"}, "firstName"),
        ({"email": "a@example.com", "externalId": "e" * 129}, "externalId"),
        ({"email": "a@example.com", "externalId": 7}, "externalId"),
        ({"email": "a@example.com", "externalId": ""}, "externalId"),
        ({"email": "a@example.com", "isAdmin": True}, "isAdmin"),
        ({"email": "a@example.com", "referrerId": "usr_x"}, "referrerId"),
    ],
)
def test_invalid_bodies_are_rejected_per_field(
    app: Flask,
    client: FlaskClient,
    auth: dict[str, str],
    body: dict[str, Any],
    field: str,
) -> None:
    # json.dumps escapes non-ASCII, so a lone surrogate travels as "\\ud800".
    response = client.post(
        USERS, headers=auth, data=json.dumps(body), content_type="application/json"
    )

    details = assert_envelope(response, 400, "validation_failed")["details"]
    assert field in details and all(isinstance(r, str) for r in details[field])
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count()).select_from(User)) == 1


@pytest.mark.parametrize(
    ("data", "code"),
    [
        ('{"email": "a@example.com", "email": "b@example.com"}', "malformed_json"),
        ('\ufeff{"email": "a@example.com"}', "malformed_json"),
        ("", "empty_body"),
        ("   ", "empty_body"),
        ("{", "malformed_json"),
        ("{'email': 'a@example.com'}", "malformed_json"),
        ("[]", "invalid_body"),
        ('["a@example.com"]', "invalid_body"),
        ('"a@example.com"', "invalid_body"),
        ("42", "invalid_body"),
        ("null", "invalid_body"),
        ("[" * 5000 + "]" * 5000, "malformed_json"),
        ('{"email": 1' + "0" * 5000 + "}", "malformed_json"),
    ],
)
def test_bodies_that_are_not_a_json_object(
    client: FlaskClient, auth: dict[str, str], data: str, code: str
) -> None:
    response = client.post(
        USERS, headers=auth, data=data, content_type="application/json"
    )

    assert_envelope(response, 400, code)


def test_a_lone_surrogate_as_a_field_name_is_a_400(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    data = '{"email": "s@example.com", "\\ud800": 1}'

    response = client.post(
        USERS, headers=auth, data=data, content_type="application/json"
    )

    assert_envelope(response, 400, "validation_failed")


def test_utf16_is_malformed(client: FlaskClient, auth: dict[str, str]) -> None:
    data = '{"email": "a@example.com"}'.encode("utf-16")

    response = client.post(
        USERS, headers=auth, data=data, content_type="application/json"
    )

    assert_envelope(response, 400, "malformed_json")


def test_invalid_utf8_is_malformed(client: FlaskClient, auth: dict[str, str]) -> None:
    response = client.post(
        USERS,
        headers=auth,
        data=b'{"email": "\xff@x.com"}',
        content_type="application/json",
    )

    assert_envelope(response, 400, "malformed_json")


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded"]
)
def test_non_json_content_type_is_415(
    client: FlaskClient, auth: dict[str, str], content_type: str | None
) -> None:
    response = client.post(
        USERS,
        headers=auth,
        data='{"email": "a@example.com"}',
        content_type=content_type,
    )

    assert_envelope(response, 415, "unsupported_media_type")


def test_body_over_the_maximum_is_413(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    padding = "x" * (64 * 1024)
    response = client.post(
        USERS, headers=auth, json={"email": "a@example.com", "firstName": padding}
    )

    assert_envelope(response, 413, "payload_too_large")


def test_email_is_unique_in_any_letter_case_across_owners(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    other = {"x-api-key": new_key(app, "other-partner@example.com")["key"]}
    assert (
        client.post(USERS, headers=auth, json={"email": "Sam@Example.com"}).status_code
        == 201
    )

    same_owner = client.post(USERS, headers=auth, json={"email": "sam@example.COM"})
    other_owner = client.post(USERS, headers=other, json={"email": "SAM@example.com"})

    assert_envelope(same_owner, 409, "email_taken")
    assert_envelope(other_owner, 409, "email_taken")


def test_external_id_is_unique_per_owner(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    other = {"x-api-key": new_key(app, "other-partner@example.com")["key"]}
    first = {"email": "one@example.com", "externalId": "crm-9"}
    assert client.post(USERS, headers=auth, json=first).status_code == 201

    again = {"email": "two@example.com", "externalId": "crm-9"}
    taken = client.post(USERS, headers=auth, json=again)
    elsewhere = client.post(USERS, headers=other, json=again)

    assert_envelope(taken, 409, "external_id_taken")
    assert elsewhere.status_code == 201


def test_a_failed_registration_leaves_the_session_clean(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    body = {"email": "dup@example.com"}
    assert client.post(USERS, headers=auth, json=body).status_code == 201
    assert client.post(USERS, headers=auth, json=body).status_code == 409

    after = client.post(USERS, headers=auth, json={"email": "next@example.com"})
    listing = client.get("/v1/internal/referrals", headers=auth)

    assert after.status_code == 201
    assert [u["email"] for u in listing.get_json()["data"]] == [
        "next@example.com",
        "dup@example.com",
    ]


def test_get_user_only_for_its_referrer(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    other = {"x-api-key": new_key(app, "other-partner@example.com")["key"]}
    created = client.post(USERS, headers=auth, json={"email": "mine@example.com"})
    location = created.headers["Location"]

    mine = client.get(location, headers=auth)
    theirs = client.get(location, headers=other)
    unknown = client.get(f"{USERS}/usr_{'0' * 32}", headers=auth)
    garbage = client.get(f"{USERS}/%00%27;DROP", headers=auth)

    assert mine.status_code == 200 and mine.get_json() == created.get_json()
    # Another owner's user and a user that does not exist look the same.
    assert theirs.get_json()["message"] == unknown.get_json()["message"]
    for response in (theirs, unknown, garbage):
        assert_envelope(response, 404, "not_found")
