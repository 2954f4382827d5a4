"""Audit records: who changed which key, and every registration attempt.

A record holds ids, addresses and outcomes, never a key or a password.
"""

from __future__ import annotations

import getpass

from flask import g, has_request_context, request

from partner_api.extensions import db
from partner_api.models import AuditEvent


def cli_actor() -> str:
    """The operator behind a command-line change, as the OS knows them."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def record(
    action: str,
    outcome: str,
    actor: str,
    owner_id: str | None = None,
    key_id: str | None = None,
    subject_id: str | None = None,
) -> AuditEvent:
    """Add a record to the session; it commits with the change it describes."""
    event = AuditEvent(
        action=action,
        outcome=outcome,
        actor=actor,
        owner_id=owner_id,
        key_id=key_id,
        subject_id=subject_id,
    )
    if has_request_context():
        # A proxy may pass along whatever a client wrote; keep the column's size.
        event.client_ip = (request.remote_addr or "")[:64] or None
        event.request_id = g.get("request_id")

    db.session.add(event)

    return event
