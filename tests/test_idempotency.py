"""Idempotency-Key on POST /v1/internal/users: retries replay, never duplicate."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy import delete, func, select, update

from partner_api import idempotency, services
from partner_api.extensions import db
from partner_api.models import IdempotencyKey, Referral, User, utcnow
from tests.conftest import new_key
from tests.test_users import assert_envelope

USERS = "/v1/internal/users"
BODY = {"email": "ada@example.com", "password": "correct horse", "firstName": "Ada"}


def post(
    client: FlaskClient, auth: dict[str, str], key: str | None, body: Any = BODY
) -> Any:
    headers = dict(auth) if key is None else {**auth, "Idempotency-Key": key}
    return client.post(USERS, headers=headers, json=body)


def user_emails(app: Flask) -> list[str]:
    """Emails of referred users: owners, who have no referral, do not count."""
    with app.app_context():
        query = select(User.email).join(Referral, Referral.user_id == User.id)
        return sorted(db.session.scalars(query))


def stored_keys(app: Flask) -> list[IdempotencyKey]:
    with app.app_context():
        rows = db.session.scalars(select(IdempotencyKey)).all()
        db.session.expunge_all()
        return list(rows)


def set_key_times(app: Flask, **times: Any) -> None:
    with app.app_context():
        db.session.execute(update(IdempotencyKey).values(**times))
        db.session.commit()


def test_a_retry_replays_the_first_response(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    first = post(client, auth, "key-1")
    retry = post(client, auth, "key-1")
    # The same JSON in another key order and spacing is the same request.
    reordered = client.post(
        USERS,
        headers={**auth, "Idempotency-Key": "key-1"},
        data=json.dumps(dict(reversed(BODY.items())), indent=2),
        content_type="application/json",
    )

    assert first.status_code == 201 and "Idempotent-Replayed" not in first.headers
    for replay in (retry, reordered):
        assert replay.status_code == 201
        assert replay.headers["Idempotent-Replayed"] == "true"
        assert replay.headers["Location"] == first.headers["Location"]
        assert replay.get_data() == first.get_data()
    assert user_emails(app) == ["ada@example.com"]


def test_keys_belong_to_the_owner_not_to_one_api_key(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    second_key = {"x-api-key": new_key(app)["key"]}
    other_owner = {"x-api-key": new_key(app, "other-partner@example.com")["key"]}
    first = post(client, auth, "shared")

    same_owner = post(client, second_key, "shared")
    # For another owner the key is new: its request runs and is not a reuse.
    theirs = post(client, other_owner, "shared", {"email": "bob@example.com"})

    assert same_owner.headers["Idempotent-Replayed"] == "true"
    assert same_owner.get_data() == first.get_data()
    assert theirs.status_code == 201 and "Idempotent-Replayed" not in theirs.headers
    assert user_emails(app) == ["ada@example.com", "bob@example.com"]


def test_the_same_key_with_another_body_is_422(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    assert post(client, auth, "key-1").status_code == 201

    other_body = post(client, auth, "key-1", {**BODY, "email": "eve@example.com"})
    other_password = post(client, auth, "key-1", {**BODY, "password": "other horse"})

    assert_envelope(other_body, 422, "idempotency_key_reused")
    assert_envelope(other_password, 422, "idempotency_key_reused")
    assert user_emails(app) == ["ada@example.com"]


@pytest.mark.parametrize(
    ("key", "status"),
    [
        ("", 400),
        ("k" * 256, 400),
        ("caf\u00e9", 400),
        ("tab\there", 400),
        ("del\x7f", 400),
        # Stored in plain text for a day: an API key pasted here is refused.
        ("pak_live_" + "k" * 51, 400),
        ("k", 201),
        ("k" * 255, 201),
        ('"8e03978e-40d5-43e8" ~!@#$%^&*()', 201),
    ],
)
def test_key_is_1_to_255_printable_ascii_characters(
    app: Flask, client: FlaskClient, auth: dict[str, str], key: str, status: int
) -> None:
    response = post(client, auth, key)

    if status == 400:
        assert_envelope(response, 400, "invalid_idempotency_key")
        assert user_emails(app) == []
    else:
        assert response.status_code == 201


@pytest.mark.parametrize(
    "bad",
    [
        {"email": "not-an-email", "password": "correct horse"},
        {**BODY, "isAdmin": True},
        "[]",
        "{",
    ],
)
def test_a_rejected_body_leaves_the_key_free_for_the_fixed_one(
    app: Flask, client: FlaskClient, auth: dict[str, str], bad: Any
) -> None:
    headers = {**auth, "Idempotency-Key": "key-1"}
    data = bad if isinstance(bad, str) else json.dumps(bad)
    rejected = client.post(
        USERS, headers=headers, data=data, content_type="application/json"
    )

    fixed = post(client, auth, "key-1")

    assert rejected.status_code == 400
    assert fixed.status_code == 201 and "Idempotent-Replayed" not in fixed.headers
    assert user_emails(app) == ["ada@example.com"]


@pytest.mark.parametrize(
    ("earlier", "body", "code"),
    [
        ({"email": "ADA@example.com"}, BODY, "email_taken"),
        (
            {"email": "x@example.com", "externalId": "crm-1"},
            {**BODY, "externalId": "crm-1"},
            "external_id_taken",
        ),
    ],
)
def test_a_conflict_is_stored_and_replayed(
    app: Flask,
    client: FlaskClient,
    auth: dict[str, str],
    earlier: dict[str, str],
    body: dict[str, str],
    code: str,
) -> None:
    assert post(client, auth, None, earlier).status_code == 201
    conflict = post(client, auth, "key-1", body)
    # Even once the conflicting user is gone, the key keeps its first answer.
    with app.app_context():
        db.session.execute(delete(Referral))
        db.session.execute(delete(User).where(User.email == earlier["email"]))
        db.session.commit()

    retry = post(client, auth, "key-1", body)

    assert_envelope(conflict, 409, code)
    assert_envelope(retry, 409, code)
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.get_data() == conflict.get_data()
    assert user_emails(app) == []


def hold_key(app: Flask, owner_id: str, key: str, body: Any = BODY) -> None:
    """Claim `key` as a request with `body` still running would have."""
    digest = idempotency.fingerprint("POST", USERS, body)
    with app.app_context():
        assert isinstance(idempotency.claim(owner_id, key, digest), idempotency.Claim)


def test_a_key_held_by_a_running_request_is_409_with_retry_after(
    app: Flask, client: FlaskClient, auth: dict[str, str], api_key: dict[str, Any]
) -> None:
    hold_key(app, api_key["owner_id"], "key-1")

    response = post(client, auth, "key-1")
    other_body = post(client, auth, "key-1", {**BODY, "email": "eve@example.com"})

    assert_envelope(response, 409, "idempotency_key_in_use")
    assert response.headers["Retry-After"] == "1"
    assert_envelope(other_body, 422, "idempotency_key_reused")
    assert user_emails(app) == []


@pytest.mark.parametrize(("age", "status"), [(50, 409), (70, 201)])
def test_an_abandoned_claim_is_taken_over_after_a_minute(
    app: Flask,
    client: FlaskClient,
    auth: dict[str, str],
    api_key: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
    age: int,
    status: int,
) -> None:
    hold_key(app, api_key["owner_id"], "key-1")
    set_key_times(app, created_at=utcnow() - timedelta(seconds=age))

    response = post(client, auth, "key-1")
    retry = post(client, auth, "key-1")

    assert response.status_code == status
    taken_over = "took over an abandoned idempotency key" in caplog.text
    assert taken_over == (status == 201)
    if status == 201:
        assert retry.headers["Idempotent-Replayed"] == "true"
        assert retry.get_data() == response.get_data()
        assert user_emails(app) == ["ada@example.com"]


def test_an_expired_key_starts_afresh(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    assert post(client, auth, "key-1").status_code == 201
    set_key_times(app, expires_at=utcnow() - timedelta(seconds=1))

    response = post(client, auth, "key-1", {"email": "eve@example.com"})

    assert response.status_code == 201 and "Idempotent-Replayed" not in response.headers
    assert user_emails(app) == ["ada@example.com", "eve@example.com"]


def test_a_key_is_kept_for_24_hours(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    before = utcnow()
    post(client, auth, "key-1")

    [row] = stored_keys(app)

    assert row.expires_at - before >= timedelta(hours=24)


def test_an_unexpected_error_frees_the_key(
    app: Flask,
    client: FlaskClient,
    auth: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    register = services.register_user

    def fail_once(*args: Any) -> Any:
        monkeypatch.setattr(services, "register_user", register)
        raise RuntimeError("the worker broke mid-request")

    monkeypatch.setattr(services, "register_user", fail_once)
    app.config["TESTING"] = False  # as in production: the error becomes a 500
    failed = post(client, auth, "key-1")

    assert_envelope(failed, 500, "internal_error")
    assert stored_keys(app) == []
    assert post(client, auth, "key-1").status_code == 201


def test_a_request_that_lost_its_claim_creates_nothing(
    app: Flask,
    client: FlaskClient,
    auth: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    register = services.register_user

    def taken_over_meanwhile(*args: Any) -> Any:
        # Another request judged ours abandoned and claimed the key afresh.
        with db.engine.begin() as connection:
            connection.execute(
                update(IdempotencyKey).values(
                    created_at=IdempotencyKey.created_at + timedelta(seconds=1)
                )
            )

        return register(*args)

    monkeypatch.setattr(services, "register_user", taken_over_meanwhile)
    response = post(client, auth, "key-1")

    assert_envelope(response, 409, "idempotency_key_in_use")
    assert user_emails(app) == []


def test_only_a_fingerprint_and_the_response_are_stored(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    created = post(client, auth, "key-1")

    [row] = stored_keys(app)
    stored = " ".join(str(getattr(row, c.name)) for c in IdempotencyKey.__table__.c)

    assert "correct horse" not in stored
    assert len(row.fingerprint) == 64 and set(row.fingerprint) <= set(
        "0123456789abcdef"
    )
    assert row.status == "done" and row.response_status == 201
    assert row.response_body == created.get_data(as_text=True)
    assert row.response_location == created.headers["Location"]


def test_requests_without_a_key_store_nothing(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    assert post(client, auth, None).status_code == 201
    assert post(client, auth, None).status_code == 409

    assert stored_keys(app) == []


def test_purge_deletes_only_expired_keys(
    app: Flask, client: FlaskClient, auth: dict[str, str], runner: FlaskCliRunner
) -> None:
    post(client, auth, "old")
    set_key_times(app, expires_at=utcnow() - timedelta(minutes=1))
    post(client, auth, "new", {"email": "eve@example.com"})

    first = runner.invoke(args=["idempotency", "purge"])
    second = runner.invoke(args=["idempotency", "purge"])

    assert first.exit_code == second.exit_code == 0
    assert first.output == "Deleted 1 expired idempotency keys.\n"
    assert second.output == "Deleted 0 expired idempotency keys.\n"
    assert [row.key for row in stored_keys(app)] == ["new"]
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(User)) == 3
