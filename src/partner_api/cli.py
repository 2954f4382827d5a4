"""The ``partner-api`` command: Flask's CLI for this app, plus operators' tasks."""

from __future__ import annotations

import json
import math
import re
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import click
from email_validator import EmailNotValidError, validate_email
from flask import Flask
from flask.cli import AppGroup, FlaskGroup, with_appcontext
from sqlalchemy import or_, select

from partner_api import apikeys, audit, create_app, idempotency, seed
from partner_api.auth import announce_key_change
from partner_api.extensions import db
from partner_api.models import ApiKey, AuditEvent, User, utcnow
from partner_api.schemas import isoformat

DEMO_OWNER = "demo-partner@example.com"
DURATION = re.compile(r"\A(\d+)([mhd])\Z")


def create_cli_app() -> Flask:
    """The app for commands: their output (one JSON object with --json) owns
    standard output, so log lines go to standard error."""
    return create_app(log_stream=sys.stderr)


@click.group(cls=FlaskGroup, create_app=create_cli_app)
def main() -> None:
    """Partner API: serve, migrate (`db upgrade`), manage API keys, housekeeping."""


def _when(value: datetime | None) -> str | None:
    return isoformat(value) if value is not None else None


def _normalized(email: str) -> str:
    try:
        return validate_email(email.strip(), check_deliverability=False).normalized
    except EmailNotValidError as error:
        raise click.ClickException(f"invalid owner email: {error}") from None


def _owner(email: str) -> User:
    """The owner account for `email`, created without a password if new."""
    normalized = _normalized(email)
    owner = db.session.scalar(select(User).where(User.email_key == normalized.lower()))
    if owner is None:
        owner = User(email=normalized, email_key=normalized.lower())
        db.session.add(owner)

    return owner


def _key(key_id: str) -> ApiKey:
    """The key with this id; the whole key works too (pasting a leaked one)."""
    text = key_id.strip()
    if apikeys.is_well_formed(text):
        row = db.session.scalar(
            select(ApiKey).where(ApiKey.key_hash == apikeys.hash_key(text))
        )
    else:
        row = db.session.get(ApiKey, text)

    if row is None:
        raise click.ClickException(f"no API key with id {apikeys.redact(text)!r}")

    return row


def issue_key(
    owner: User,
    name: str,
    expires_at: datetime | None = None,
    test: bool = False,
    rolled_from: ApiKey | None = None,
) -> tuple[ApiKey, str]:
    """Store a new key's hash; return the row and the plaintext, shown once."""
    issued = apikeys.generate(test=test)
    row = ApiKey(
        id=issued.key_id,
        owner=owner,
        name=name,
        key_hash=issued.key_hash,
        display_prefix=issued.display_prefix,
        test_mode=test,
        expires_at=expires_at,
        rolled_from_id=rolled_from.id if rolled_from else None,
    )
    db.session.add(row)
    db.session.flush()
    audit.record(
        "key.rolled" if rolled_from else "key.created",
        "success",
        actor=audit.cli_actor(),
        owner_id=row.owner_id,
        key_id=row.id,
        subject_id=rolled_from.id if rolled_from else None,
    )
    db.session.commit()

    return row, issued.plaintext


def _describe(row: ApiKey) -> dict[str, Any]:
    return {
        "id": row.id,
        "owner": row.owner.email,
        "ownerId": row.owner_id,
        "name": row.name,
        "prefix": row.display_prefix,
        "mode": "test" if row.test_mode else "live",
        "status": row.status,
        "createdAt": _when(row.created_at),
        "expiresAt": _when(row.expires_at),
        "revokedAt": _when(row.revoked_at),
        "lastUsedAt": _when(row.last_used_at),
    }


def _line(row: dict[str, Any]) -> str:
    expires = row["expiresAt"] or "never"
    return (
        f"{row['id']}  {row['status']:<8} {row['mode']:<4}  {row['owner']}  "
        f"{row['name']!r}  created {row['createdAt']}  expires {expires}  "
        f"last used {row['lastUsedAt'] or 'never'}"
    )


def _announce(key_id: str, change: str) -> None:
    if not announce_key_change():
        raise click.ClickException(
            f"key {key_id} is {change} in the database, but Redis could not be "
            "told: workers may accept it until their key cache expires "
            "(KEY_CACHE_SECONDS); run this again once Redis answers"
        )


def _print_new_key(row: ApiKey, plaintext: str, as_json: bool, verb: str) -> None:
    if as_json:
        click.echo(json.dumps({**_describe(row), "key": plaintext}))
        return

    click.echo(f"{verb} key {row.id} for {row.owner.email}.")
    click.echo("Store it now; only its hash is kept:")
    click.echo(plaintext)


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def _name(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    name = value.strip()
    if not 1 <= len(name) <= 100 or not name.isprintable():
        raise click.BadParameter("must be 1 to 100 printable characters")

    return name


def _hours(_ctx: click.Context, _param: click.Parameter, value: float) -> float:
    if not math.isfinite(value):
        raise click.BadParameter("must be a number of hours")

    return value


@click.group(cls=AppGroup)
def keys() -> None:
    """Issue, roll, list and revoke partner API keys."""


@keys.command("create")
@click.option("--owner", required=True, help="Email of the owning platform account.")
@click.option("--name", default="default", show_default=True, callback=_name)
@click.option(
    "--expires-in",
    type=click.IntRange(min=1, max=3650),
    help="Days until the key expires (at most ten years).",
)
@click.option("--test", is_flag=True, help="Issue a pak_test_ key.")
@json_option
def create_key(
    owner: str, name: str, expires_in: int | None, test: bool, as_json: bool
) -> None:
    """Issue a key; the plaintext is printed now and never again."""
    expires_at = utcnow() + timedelta(days=expires_in) if expires_in else None
    row, plaintext = issue_key(_owner(owner), name, expires_at, test)
    _print_new_key(row, plaintext, as_json, "Created")


@keys.command("roll")
@click.argument("key_id")
@click.option(
    "--grace",
    type=click.FloatRange(min=0, max=24 * 366),
    default=24.0,
    show_default=True,
    callback=_hours,
    help="Hours the old key keeps working (0: it stops now).",
)
@json_option
def roll_key(key_id: str, grace: float, as_json: bool) -> None:
    """Replace a key: same owner, name and settings; the old one ends after --grace."""
    old = _key(key_id)
    if old.status in ("revoked", "expired"):
        raise click.ClickException(f"key {old.id} is {old.status}; create a new one")

    successor = db.session.scalar(
        select(ApiKey.id).where(ApiKey.rolled_from_id == old.id)
    )
    if successor is not None:
        # Its expiry is already the grace period's end, not its real lifetime.
        raise click.ClickException(
            f"key {old.id} was already rolled into {successor}; roll that one"
        )

    now = utcnow()
    lifetime = old.expires_at - old.created_at if old.expires_at else None
    ends = now + timedelta(hours=grace)
    old.expires_at = min(ends, old.expires_at) if old.expires_at else ends
    new, plaintext = issue_key(
        old.owner,
        old.name,
        now + lifetime if lifetime else None,
        old.test_mode,
        rolled_from=old,
    )
    _announce(old.id, "rolled")
    _print_new_key(new, plaintext, as_json, f"Rolled {old.id} into")
    if not as_json:
        click.echo(f"The old key {old.id} stops working at {_when(old.expires_at)}.")


@keys.command("revoke")
@click.argument("key_id")
@json_option
def revoke_key(key_id: str, as_json: bool) -> None:
    """Revoke a key; every worker refuses it from the next request on."""
    row = _key(key_id)
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        audit.record(
            "key.revoked",
            "success",
            actor=audit.cli_actor(),
            owner_id=row.owner_id,
            key_id=row.id,
        )
        db.session.commit()

    _announce(row.id, "revoked")
    click.echo(json.dumps(_describe(row)) if as_json else f"Revoked key {row.id}.")


@keys.command("list")
@click.option("--owner", help="Only keys of this owner email.")
@json_option
def list_keys(owner: str | None, as_json: bool) -> None:
    """List keys with their status; never a secret."""
    query = select(ApiKey).join(ApiKey.owner).order_by(ApiKey.created_at)
    if owner:
        query = query.where(User.email_key == _normalized(owner).lower())

    rows = [_describe(row) for row in db.session.scalars(query)]
    if as_json:
        click.echo(json.dumps(rows))
        return

    for row in rows:
        click.echo(_line(row))


@keys.command("show")
@click.argument("key_id")
@json_option
def show_key(key_id: str, as_json: bool) -> None:
    """One key's status, dates and owner; never its secret."""
    row = _describe(_key(key_id))
    click.echo(json.dumps(row) if as_json else _line(row))


def _since(value: str) -> datetime:
    """An ISO 8601 time, or a span back from now such as 30m, 24h or 7d."""
    span = DURATION.match(value.strip())
    if span:
        amount, unit = int(span.group(1)), span.group(2)
        minutes = {"m": 1, "h": 60, "d": 24 * 60}[unit] * amount
        try:
            return utcnow() - timedelta(minutes=minutes)
        except OverflowError:
            raise click.BadParameter("that span reaches before year 1") from None

    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise click.BadParameter("use ISO 8601 or a span like 30m, 24h, 7d") from None

    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)

    return parsed


@click.command("audit")
@click.option("--owner", help="Only records of this owner email.")
@click.option("--key", "key_id", help="Only records of this key id.")
@click.option("--since", help="ISO 8601 time, or a span such as 24h or 7d.")
@click.option("--limit", type=click.IntRange(1, 10000), default=200, show_default=True)
@json_option
@with_appcontext
def audit_log(
    owner: str | None,
    key_id: str | None,
    since: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Show audit records, newest first."""
    query = select(AuditEvent).order_by(AuditEvent.occurred_at.desc()).limit(limit)
    if owner:
        email_key = _normalized(owner).lower()
        owner_id = db.session.scalar(select(User.id).where(User.email_key == email_key))
        query = query.where(AuditEvent.owner_id == owner_id)

    if key_id:
        # A roll is recorded under the new key, with the old one as subject.
        key_id = key_id.strip()
        query = query.where(
            or_(AuditEvent.key_id == key_id, AuditEvent.subject_id == key_id)
        )

    if since:
        query = query.where(AuditEvent.occurred_at >= _since(since))

    events = [
        {
            "id": event.id,
            "occurredAt": _when(event.occurred_at),
            "action": event.action,
            "outcome": event.outcome,
            "actor": event.actor,
            "ownerId": event.owner_id,
            "keyId": event.key_id,
            "subjectId": event.subject_id,
            "clientIp": event.client_ip,
            "requestId": event.request_id,
        }
        for event in db.session.scalars(query)
    ]
    if as_json:
        click.echo(json.dumps(events))
        return

    for event in events:
        click.echo(
            f"{event['occurredAt']}  {event['action']:<16} {event['outcome']:<18} "
            f"{event['actor']}  key={event['keyId']}  subject={event['subjectId']}  "
            f"ip={event['clientIp']}  request={event['requestId']}"
        )


@click.command("demo-key")
@with_appcontext
def demo_key() -> None:
    """Create a demo owner and key for local development, if none exists."""
    owner = _owner(DEMO_OWNER)
    active = [
        row
        for row in db.session.scalars(select(ApiKey).where(ApiKey.owner == owner))
        if row.status in ("active", "expiring")
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
