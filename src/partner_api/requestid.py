"""X-Request-ID: kept when the caller sends a sane one, generated otherwise."""

from __future__ import annotations

import re
import uuid

from flask import Flask, Response, g, request

from partner_api import apikeys

HEADER = "X-Request-ID"
# Printable, no spaces, bounded: safe to echo and to write into logs.
WELL_FORMED = re.compile(r"\A[A-Za-z0-9._:@/+=-]{1,128}\Z")


def assign() -> None:
    inbound = request.headers.get(HEADER, "")
    # The id is echoed, logged, stored in audit records and put in 5xx bodies:
    # a key sent here by mistake must go no further.
    if WELL_FORMED.match(inbound) and not apikeys.holds_key(inbound):
        g.request_id = inbound
    else:
        g.request_id = uuid.uuid4().hex


def echo(response: Response) -> Response:
    request_id = g.get("request_id")
    if request_id:
        response.headers[HEADER] = request_id

    return response


def current() -> str | None:
    """The id of the request being served, if any."""
    value: str | None = g.get("request_id") if g else None
    return value


def init_app(app: Flask) -> None:
    # First in, so every later hook and every log line can use the id.
    app.before_request_funcs.setdefault(None, []).insert(0, assign)
    app.after_request(echo)
