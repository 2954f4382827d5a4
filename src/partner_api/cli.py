"""The ``partner-api`` command: Flask's CLI for this app, plus operators' tasks."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

import click
from email_validator import EmailNotValidError, validate_email
from flask.cli import AppGroup, FlaskGroup, with_appcontext
from sqlalchemy import select

from partner_api import apikeys, create_app, idempotency, seed
from partner_api.auth import announce_key_change
from partner_api.extensions import db
from partner_api.models import ApiKey, User, utcnow
from partner_api.schemas import isoformat

DEMO_OWNER = "demo-partner@example.com"


@click.group(cls=FlaskGroup, create_app=create_app)
def main() -> None:
    """Partner API: serve, migrate (`db upgrade`), manage API keys, housekeeping."""


def _when(value: datetime | None) -> str | None:
    return isoformat(value) if value is not None else None


def _owner(email: str) -> User:
    """The owner account for `email`, created without a password if new."""
    try:
        normalized = validate_email(email, check_deliverability=False).normalized
    except EmailNotValidError as error:
        raise click.ClickException(f"invalid owner email: {error}") from None

    owner = db.session.scalar(select(User).where(User.email_key == normalized.lower()))
    if owner is None:
        owner = User(email=normalized, email_key=normalized.lower())
        db.session.add(owner)

    return owner


def issue_key(owner: User, name: str) -> tuple[ApiKey, str]:
    """Store a new key's hash; return the row and the plaintext, shown once."""
    issued = apikeys.generate()
    row = ApiKey(
        id=issued.key_id,
        owner=owner,
        name=name,
        key_hash=issued.key_hash,
        display_prefix=issued.display_prefix,
    )
    db.session.add(row)
    db.session.commit()

    return row, issued.plaintext


def _describe(row: ApiKey) -> dict[str, Any]:
    return {
        "id": row.id,
        "owner": row.owner.email,
        "ownerId": row.owner_id,
        "name": row.name,
        "prefix": row.display_prefix,
        "status": row.status,
        "createdAt": _when(row.created_at),
        "lastUsedAt": _when(row.last_used_at),
    }


@click.group(cls=AppGroup)
def keys() -> None:
    """Issue, list and revoke partner API keys."""


@keys.command("create")
@click.option("--owner", required=True, help="Email of the owning platform account.")
@click.option("--name", default="default", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def create_key(owner: str, name: str, as_json: bool) -> None:
    """Issue a key; the plaintext is printed now and never again."""
    row, plaintext = issue_key(_owner(owner), name)
    if as_json:
        click.echo(json.dumps({**_describe(row), "key": plaintext}))
        return

    click.echo(f"Created key {row.id} for {row.owner.email}.")
    click.echo("Store it now; only its hash is kept:")
    click.echo(plaintext)


@keys.command("list")
@click.option("--owner", help="Only keys of this owner email.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
def list_keys(owner: str | None, as_json: bool) -> None:
    """List keys with their status; never a secret."""
    query = select(ApiKey).join(ApiKey.owner).order_by(ApiKey.created_at)
    if owner:
        query = query.where(User.email_key == owner.strip().lower())

    rows = [_describe(row) for row in db.session.scalars(query)]
    if as_json:
        click.echo(json.dumps(rows))
        return

    for row in rows:
        click.echo(
            f"{row['id']}  {row['status']:<8} {row['owner']}  {row['name']}  "
            f"created {row['createdAt']}  last used {row['lastUsedAt'] or 'never'}"
        )


@keys.command("revoke")
@click.argument("key_id")
def revoke_key(key_id: str) -> None:
    """Revoke a key; every worker refuses it from the next request on."""
    row = db.session.get(ApiKey, key_id)
    if row is None:
        raise click.ClickException(f"no API key with id {key_id!r}")

    if row.revoked_at is None:
        row.revoked_at = utcnow()
        db.session.commit()

    if not announce_key_change():
        raise click.ClickException(
            f"key {key_id} is revoked in the database, but Redis could not be told: "
            "workers may accept it until their key cache expires (KEY_CACHE_SECONDS)"
        )

    click.echo(f"Revoked key {key_id}.")


@click.command("demo-key")
@with_appcontext
def demo_key() -> None:
    """Create a demo owner and key for local development, if none exists."""
    owner = _owner(DEMO_OWNER)
    active = [
        row
        for row in db.session.scalars(select(ApiKey).where(ApiKey.owner == owner))
        if row.status == "active"
    ]
    if active:
        click.echo(
            f"The demo owner {DEMO_OWNER} already has key {active[0].id}; its secret "
            "was printed when it was created.\nFor a new one: partner-api keys "
            f"create --owner {DEMO_OWNER}"
        )
        return

    _, plaintext = issue_key(owner, "demo")
    click.echo(f"Demo API key for {DEMO_OWNER} (shown once):\n\n    {plaintext}\n")


@click.group(cls=AppGroup)
def idempotency_keys() -> None:
    """Housekeeping of the Idempotency-Key records."""


@idempotency_keys.command("purge")
def purge_idempotency_keys() -> None:
    """Delete expired Idempotency-Key records; run it hourly from cron."""
    deleted = idempotency.purge()
    click.echo(f"Deleted {deleted} expired idempotency keys.")


@click.group(cls=AppGroup)
def dev() -> None:
    """Development helpers; never run them against production."""


@dev.command("seed-referrals")
@click.option("--owner", required=True, help="Email of the referring owner.")
@click.option(
    "--users", "count", type=click.IntRange(min=1), default=1000, show_default=True
)
@click.option(
    "--days",
    type=click.IntRange(min=1),
    default=365,
    show_default=True,
    help="Spread the users' creation times over this many past days.",
)
def seed_referrals(owner: str, count: int, days: int) -> None:
    """Bulk-create synthetic users referred by OWNER (no passwords, fast)."""
    row = _owner(owner)
    key = db.session.scalar(
        select(ApiKey).where(ApiKey.owner == row).order_by(ApiKey.created_at)
    )
    if key is None:
        # Referrals name the key they came through; its secret is not needed.
        key, _ = issue_key(row, "seed")

    started = time.monotonic()
    seed.seed_referrals(row.id, key.id, count, days)
    elapsed = time.monotonic() - started
    click.echo(f"Seeded {count} referrals of {row.email} in {elapsed:.1f} s.")
