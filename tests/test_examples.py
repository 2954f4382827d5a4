"""The partner's example client against gunicorn, PostgreSQL and Redis."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

from flask import Flask

from partner_api.extensions import db
from partner_api.models import Referral, User
from tests.conftest import make_app, new_key
from tests.live import ROOT, Server

CLIENT = ROOT / "examples" / "partner_client.py"
USERS_CSV = ROOT / "examples" / "users.csv"


def run_client(server: Server, key: str, rows: Path, rejects: Path) -> dict[str, int]:
    """Run the example client; return the counts from its summary."""
    result = subprocess.run(
        [
            sys.executable,
            str(CLIENT),
            "--url",
            server.url,
            "--key",
            key,
            "--csv",
            str(rows),
            "--rejects",
            str(rejects),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    counts = {
        name: int(number)
        for name, number in re.findall(
            r"^(created|already registered|rejected):\s+(\d+)", result.stdout, re.M
        )
    }
    assert set(counts) == {"created", "already registered", "rejected"}, result.stdout

    return counts


def serve(app: Flask, postgres_url: str, redis_url: str, limit: str) -> Server:
    return Server(
        {"DATABASE_URL": postgres_url, "REDIS_URL": redis_url, "RATE_LIMIT": limit},
        workers=4,
    )


def test_importing_the_sample_csv_matches_the_database(
    postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    app = make_app(postgres_url, redis_url)
    key = new_key(app, "importer@example.com")
    server = serve(app, postgres_url, redis_url, "100000 per 15 minutes")
    try:
        counts = run_client(server, key["key"], USERS_CSV, tmp_path / "rejects.csv")
    finally:
        server.stop()

    # The sample holds 975 valid users, 10 case-changed duplicates and 15
    # rows broken in one way each (see examples/make_users_csv.py).
    assert counts == {"created": 975, "already registered": 10, "rejected": 15}
    with (tmp_path / "rejects.csv").open(newline="", encoding="utf-8") as rejects:
        rejected = list(csv.DictReader(rejects))
    assert len(rejected) == 15 and all(row["reason"] for row in rejected)

    with USERS_CSV.open(newline="", encoding="utf-8") as source:
        rows = list(csv.DictReader(source))
    rejected_emails = {row["email"] for row in rejected}
    with app.app_context():
        referred = db.session.scalars(
            db.select(User.email_key)
            .join(Referral, Referral.user_id == User.id)
            .where(Referral.referrer_id == key["owner_id"])
        ).all()
    assert len(referred) == len(set(referred)) == 975
    for row in rows:
        if row["email"] not in rejected_emails:
            # Every accepted row is there once; the domain may be normalized.
            local = row["email"].rsplit("@", 1)[0].lower()
            assert any(email.startswith(local + "@") for email in referred)


def test_the_client_waits_out_429s(
    postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    app = make_app(postgres_url, redis_url)
    key = new_key(app, "patient@example.com")
    few = tmp_path / "few.csv"
    few.write_text(
        "email,password,first_name,last_name,external_id\n"
        + "".join(f"user{n}@example.org,,,,ext-{n}\n" for n in range(8)),
        encoding="utf-8",
    )
    server = serve(app, postgres_url, redis_url, "3 per 2 seconds")
    try:
        counts = run_client(server, key["key"], few, tmp_path / "rejects.csv")
    finally:
        server.stop()

    assert counts == {"created": 8, "already registered": 0, "rejected": 0}
