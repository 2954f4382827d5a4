"""The operators' command line: keys create, list, revoke; demo-key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from flask import Flask
from flask.testing import FlaskCliRunner

from partner_api import apikeys
from partner_api.extensions import db
from partner_api.models import ApiKey, User
from tests.conftest import make_app, new_key
from tests.live import free_port


def test_create_prints_the_key_once_and_stores_its_hash(
    app: Flask, runner: FlaskCliRunner
) -> None:
    result = runner.invoke(
        args=["keys", "create", "--owner", "New.Owner@Example.com", "--json"]
    )

    assert result.exit_code == 0, result.output
    created = json.loads(result.output)
    assert apikeys.is_well_formed(created["key"])
    with app.app_context():
        row = db.session.get(ApiKey, created["id"])
        assert row is not None
        assert row.key_hash == apikeys.hash_key(created["key"])
        assert created["key"] not in json.dumps(
            {c.name: str(getattr(row, c.name)) for c in ApiKey.__table__.columns}
        )
        owner = db.session.get(User, row.owner_id)
        assert owner is not None and owner.email == "New.Owner@example.com"


def test_create_reuses_an_existing_owner(app: Flask, runner: FlaskCliRunner) -> None:
    for name in ("one", "two"):
        result = runner.invoke(
            args=["keys", "create", "--owner", "same@example.com", "--name", name]
        )
        assert result.exit_code == 0, result.output

    with app.app_context():
        owners = db.session.scalars(db.select(User)).all()
        assert len(owners) == 1
        assert sorted(k.name for k in db.session.scalars(db.select(ApiKey))) == [
            "one",
            "two",
        ]


def test_list_shows_status_and_no_secret(runner: FlaskCliRunner) -> None:
    created = json.loads(
        runner.invoke(
            args=["keys", "create", "--owner", "a@example.com", "--json"]
        ).output
    )
    runner.invoke(args=["keys", "revoke", created["id"]])
    other = json.loads(
        runner.invoke(
            args=["keys", "create", "--owner", "b@example.com", "--json"]
        ).output
    )

    listing = runner.invoke(args=["keys", "list", "--json"])
    filtered = runner.invoke(
        args=["keys", "list", "--owner", "B@example.com", "--json"]
    )
    text = runner.invoke(args=["keys", "list"])

    rows = {row["id"]: row for row in json.loads(listing.output)}
    assert rows[created["id"]]["status"] == "revoked"
    assert rows[other["id"]]["status"] == "active"
    assert [row["id"] for row in json.loads(filtered.output)] == [other["id"]]
    for output in (listing.output, text.output):
        assert created["key"] not in output and other["key"] not in output
    assert created["id"] in text.output and "revoked" in text.output


def test_errors_are_one_line_and_non_zero(runner: FlaskCliRunner) -> None:
    unknown = runner.invoke(args=["keys", "revoke", "nosuchkey123"])
    bad_email = runner.invoke(args=["keys", "create", "--owner", "not-an-email"])

    for result in (unknown, bad_email):
        assert result.exit_code != 0
        assert len(result.output.strip().splitlines()) == 1
        assert result.output.startswith("Error: ")
    assert "nosuchkey123" in unknown.output


def test_demo_key_is_created_once(app: Flask, runner: FlaskCliRunner) -> None:
    first = runner.invoke(args=["demo-key"])
    second = runner.invoke(args=["demo-key"])

    assert first.exit_code == second.exit_code == 0
    assert "pak_live_" in first.output
    assert "pak_live_" not in second.output and "already has key" in second.output
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count()).select_from(ApiKey)) == 1


def test_revoke_says_so_when_redis_cannot_be_told(
    database_url: str, app: Flask
) -> None:
    key = new_key(app)
    cut_off = make_app(
        database_url, None, reset=False, REDIS_URL=f"redis://127.0.0.1:{free_port()}"
    )

    result = cut_off.test_cli_runner().invoke(args=["keys", "revoke", key["id"]])

    assert result.exit_code != 0
    assert "revoked in the database" in result.output
    assert "Traceback" not in result.output
    with cut_off.app_context():
        row = db.session.get(ApiKey, key["id"])
        assert row is not None and row.revoked_at is not None


def test_json_output_stays_parseable_when_the_command_logs(tmp_path: Path) -> None:
    """The real console script, without Redis: it warns, on stderr only."""
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'cli.sqlite3'}",
        "REDIS_URL": "",
    }
    command = str(Path(sys.executable).parent / "partner-api")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [command, *args], env=env, capture_output=True, text=True, timeout=60
        )

    assert run("db", "upgrade").returncode == 0
    created = run("keys", "create", "--owner", "cli@example.com", "--json")
    listing = run("keys", "list", "--json")

    assert created.returncode == listing.returncode == 0, created.stderr
    assert apikeys.is_well_formed(json.loads(created.stdout)["key"])
    assert [row["id"] for row in json.loads(listing.stdout)] == [
        json.loads(created.stdout)["id"]
    ]
    warning = json.loads(created.stderr.splitlines()[0])
    assert warning["level"] == "WARNING" and "REDIS_URL" in warning["message"]


def test_a_whole_key_may_stand_for_its_id_and_is_never_echoed(
    app: Flask, runner: FlaskCliRunner
) -> None:
    key = new_key(app)
    typo = key["key"][:-1] + ("A" if key["key"][-1] != "A" else "B")

    revoked = runner.invoke(args=["keys", "revoke", key["key"], "--json"])
    unknown = runner.invoke(args=["keys", "show", typo])

    assert revoked.exit_code == 0, revoked.output
    assert json.loads(revoked.output)["id"] == key["id"]
    with app.app_context():
        row = db.session.get(ApiKey, key["id"])
        assert row is not None and row.revoked_at is not None
    assert unknown.exit_code != 0
    assert typo not in unknown.output and "[redacted]" in unknown.output
