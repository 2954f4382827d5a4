"""Key lifecycle: create, roll, revoke, expiry, last use, audit, header hygiene."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner

from partner_api.extensions import db
from partner_api.models import ApiKey, AuditEvent, utcnow
from tests.test_auth import count_statements
from tests.test_users import assert_envelope

ROOT = "/v1/internal"


def cli_json(runner: FlaskCliRunner, *args: str) -> Any:
    result = runner.invoke(args=[*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def audit_actions(app: Flask, key_id: str | None = None) -> list[tuple[str, str]]:
    with app.app_context():
        query = db.select(AuditEvent).order_by(AuditEvent.occurred_at)
        if key_id:
            query = query.where(AuditEvent.key_id == key_id)
        return [(e.action, e.outcome) for e in db.session.scalars(query)]


def set_expiry(app: Flask, key_id: str, delta: timedelta) -> None:
    with app.app_context():
        row = db.session.get(ApiKey, key_id)
        assert row is not None
        row.expires_at = utcnow() + delta
        db.session.commit()


def test_a_partner_sees_its_own_key(
    client: FlaskClient, auth: dict[str, str], api_key: dict[str, Any]
) -> None:
    response = client.get(f"{ROOT}/key", headers=auth)

    body = response.get_json()
    assert response.status_code == 200
    assert body["id"] == api_key["id"]
    assert body["ownerId"] == api_key["owner_id"]
    assert body["prefix"] == f"pak_live_{api_key['id']}"
    assert body["status"] == "active" and body["expiresAt"] is None
    assert body["createdAt"].endswith("Z")
    assert body["rateLimit"]["limit"] == 1000
    assert body["rateLimit"]["remaining"] == int(
        response.headers["X-RateLimit-Remaining"]
    )
    secret = api_key["key"].rsplit("_", 1)[1]
    assert secret not in response.get_data(as_text=True)
    assert "hash" not in response.get_data(as_text=True).lower()


def test_create_with_expiry_and_test_mode(
    client: FlaskClient, runner: FlaskCliRunner
) -> None:
    created = cli_json(
        runner,
        "keys", "create", "--owner", "t@example.com", "--name", "staging",
        "--expires-in", "3", "--test",
    )  # fmt: skip

    assert created["key"].startswith("pak_test_")
    assert created["status"] == "expiring" and created["mode"] == "test"
    shown = cli_json(runner, "keys", "show", created["id"])
    assert shown["name"] == "staging" and "key" not in shown
    body = client.get(f"{ROOT}/key", headers={"x-api-key": created["key"]}).get_json()
    assert body["status"] == "expiring" and body["expiresAt"] == created["expiresAt"]


def test_roll_without_grace_stops_the_old_key_now(
    app: Flask, client: FlaskClient, runner: FlaskCliRunner, api_key: dict[str, Any]
) -> None:
    old = {"x-api-key": api_key["key"]}
    assert client.get(ROOT, headers=old).status_code == 200

    rolled = cli_json(runner, "keys", "roll", api_key["id"], "--grace", "0")

    new = {"x-api-key": rolled["key"]}
    body = assert_envelope(client.get(ROOT, headers=old), 401, "invalid_api_key")
    assert "expired" in body["message"] and "roll" in body["message"]
    assert client.get(ROOT, headers=new).status_code == 200
    assert rolled["ownerId"] == api_key["owner_id"] and rolled["name"] == "test"
    assert ("key.rolled", "success") in audit_actions(app, rolled["id"])
    assert ("key.expired", "expired") in audit_actions(app, api_key["id"])


def test_roll_with_grace_keeps_both_keys_working(
    client: FlaskClient, runner: FlaskCliRunner, api_key: dict[str, Any]
) -> None:
    rolled = cli_json(runner, "keys", "roll", api_key["id"], "--grace", "2")

    old = client.get(f"{ROOT}/key", headers={"x-api-key": api_key["key"]})
    new = client.get(ROOT, headers={"x-api-key": rolled["key"]})

    assert old.status_code == new.status_code == 200
    assert old.get_json()["status"] == "expiring"
    assert cli_json(runner, "keys", "show", api_key["id"])["status"] == "expiring"


def test_roll_keeps_the_lifetime_and_mode(runner: FlaskCliRunner) -> None:
    created = cli_json(
        runner, "keys", "create", "--owner", "l@example.com", "--expires-in", "30",
        "--test",
    )  # fmt: skip

    rolled = cli_json(runner, "keys", "roll", created["id"])

    assert rolled["mode"] == "test" and rolled["key"].startswith("pak_test_")
    assert rolled["expiresAt"] > created["expiresAt"]


def test_a_key_is_rolled_once(
    app: Flask, runner: FlaskCliRunner, api_key: dict[str, Any]
) -> None:
    rolled = cli_json(runner, "keys", "roll", api_key["id"])

    again = runner.invoke(args=["keys", "roll", api_key["id"]])
    audited = cli_json(runner, "audit", "--key", api_key["id"])

    assert again.exit_code != 0 and rolled["id"] in again.output
    assert ("key.rolled", rolled["id"]) in {(e["action"], e["keyId"]) for e in audited}


@pytest.mark.parametrize(
    "args",
    [
        ["keys", "create", "--owner", "a@example.com", "--name", "n" * 101],
        ["keys", "create", "--owner", "a@example.com", "--name", "  "],
        ["keys", "create", "--owner", "a@example.com", "--expires-in", "1000000000"],
        ["keys", "roll", "{key}", "--grace", "inf"],
        ["keys", "roll", "{key}", "--grace", "nan"],
        ["keys", "roll", "{key}", "--grace", "1e12"],
        ["audit", "--since", "99999999999d"],
        ["audit", "--since", "yesterday"],
    ],
)
def test_bad_arguments_are_one_line_errors(
    runner: FlaskCliRunner, api_key: dict[str, Any], args: list[str]
) -> None:
    result = runner.invoke(args=[a.format(key=api_key["id"]) for a in args])

    assert result.exit_code != 0
    assert "Traceback" not in result.output
    # Click's usage errors exit through SystemExit; anything else escaped.
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_revoked_or_unknown_keys_cannot_be_rolled(
    runner: FlaskCliRunner, api_key: dict[str, Any]
) -> None:
    runner.invoke(args=["keys", "revoke", api_key["id"]])

    revoked = runner.invoke(args=["keys", "roll", api_key["id"]])
    unknown = runner.invoke(args=["keys", "roll", "nosuchkey000"])

    assert revoked.exit_code != 0 and "revoked" in revoked.output
    assert unknown.exit_code != 0 and "nosuchkey000" in unknown.output


def test_expiry_is_audited_once(
    app: Flask, client: FlaskClient, auth: dict[str, str], api_key: dict[str, Any]
) -> None:
    assert client.get(ROOT, headers=auth).status_code == 200
    set_expiry(app, api_key["id"], timedelta(seconds=-1))
    app.extensions["partner_api.key_cache"].drop_all()

    for _ in range(3):
        assert_envelope(client.get(ROOT, headers=auth), 401, "invalid_api_key")

    assert audit_actions(app, api_key["id"]).count(("key.expired", "expired")) == 1


def test_last_use_is_recorded_without_a_write_per_request(
    app: Flask, client: FlaskClient, auth: dict[str, str], runner: FlaskCliRunner,
    api_key: dict[str, Any],
) -> None:  # fmt: skip
    assert cli_json(runner, "keys", "show", api_key["id"])["lastUsedAt"] is None
    assert client.get(ROOT, headers=auth).status_code == 200

    with count_statements(app) as statements:
        for _ in range(10):
            client.get(ROOT, headers=auth)

    assert statements == []
    assert cli_json(runner, "keys", "show", api_key["id"])["lastUsedAt"] is not None


@pytest.mark.parametrize(
    ("headers", "query", "hint"),
    [
        ({"Authorization": "Bearer {key}"}, "", "Authorization"),
        ({}, "?api_key={key}", "URL"),
        ({}, "?x-api-key={key}", "URL"),
    ],
)
def test_keys_outside_the_header_are_refused_with_a_hint(
    client: FlaskClient,
    api_key: dict[str, Any],
    headers: dict[str, str],
    query: str,
    hint: str,
) -> None:
    key = api_key["key"]
    response = client.get(
        ROOT + query.format(key=key),
        headers={k: v.format(key=key) for k, v in headers.items()},
    )

    body = assert_envelope(response, 401, "missing_api_key")
    assert hint in body["message"] and "x-api-key" in body["message"]


def test_a_key_in_the_body_does_not_authenticate(
    client: FlaskClient, api_key: dict[str, Any]
) -> None:
    body = {"email": "a@example.com", "apiKey": api_key["key"]}

    response = client.post(f"{ROOT}/users", json=body)

    assert_envelope(response, 401, "missing_api_key")


def test_every_change_and_registration_is_audited_without_secrets(
    app: Flask, client: FlaskClient, runner: FlaskCliRunner
) -> None:
    created = cli_json(runner, "keys", "create", "--owner", "audit@example.com")
    headers = {"x-api-key": created["key"], "X-Request-ID": "req-audit-1"}
    body = {"email": "audited@example.com", "password": "hunter2-hunter2"}
    user = client.post(f"{ROOT}/users", headers=headers, json=body).get_json()
    client.post(f"{ROOT}/users", headers=headers, json=body)
    rolled = cli_json(runner, "keys", "roll", created["id"], "--grace", "0")
    cli_json(runner, "keys", "revoke", rolled["id"])

    events = cli_json(runner, "audit", "--owner", "audit@example.com")
    by_key = cli_json(runner, "audit", "--key", created["id"])
    recent = cli_json(runner, "audit", "--since", "1h")
    future = cli_json(runner, "audit", "--since", "2999-01-01T00:00:00Z")

    actions = sorted((e["action"], e["outcome"]) for e in events)
    assert actions == [
        ("key.created", "success"),
        ("key.revoked", "success"),
        ("key.rolled", "success"),
        ("user.registered", "created"),
        ("user.registered", "email_taken"),
    ]
    registered = next(e for e in events if e["outcome"] == "created")
    assert registered["subjectId"] == user["id"]
    assert registered["requestId"] == "req-audit-1"
    assert registered["clientIp"] == "127.0.0.1"
    assert registered["actor"] == f"key:{created['id']}"
    assert all(created["id"] in (e["keyId"], e["subjectId"]) for e in by_key)
    assert ("key.rolled", rolled["id"]) in {(e["action"], e["keyId"]) for e in by_key}
    assert len(recent) == len(events) and future == []
    everything = json.dumps(events)
    for secret in (created["key"], rolled["key"], "hunter2-hunter2"):
        assert secret not in everything
