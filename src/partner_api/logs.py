"""JSON logs through the one ``partner_api`` logger, one line per request.

Every record logged while a request is served carries its ``request_id``.
The request line names the method, the path (never the query string, which
may carry secrets), the status, the duration, the client address and the key
id; never a header, a body or a key.
"""

from __future__ import annotations

import logging
import time
from typing import TextIO

from flask import Flask, Response, g, has_app_context, request
from pythonjsonlogger.json import JsonFormatter

from partner_api import apikeys

LOGGER = "partner_api"
log = logging.getLogger(LOGGER)

# gunicorn.conf.py formats gunicorn's own lines with the same options, so
# every line the service prints parses the same way.
FORMAT = {
    "fmt": "{levelname}{name}{message}",
    "style": "{",
    "rename_fields": {"levelname": "level", "name": "logger"},
    "timestamp": "time",
}


class RequestIdFilter(logging.Filter):
    """Stamps each record with the id of the request being served, if any."""

    def filter(self, record: logging.LogRecord) -> bool:
        if has_app_context():
            request_id = g.get("request_id")
            if request_id is not None:
                record.request_id = request_id

        return True


_request_id_filter = RequestIdFilter()


def configure(app: Flask, stream: TextIO) -> None:
    """Level, request ids, and a JSON handler on `stream` unless logging is set up."""
    log.setLevel(app.config["LOG_LEVEL"])
    # One shared filter: addFilter ignores it when a second app adds it again.
    log.addFilter(_request_id_filter)
    if not logging.getLogger().handlers and not log.handlers:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(JsonFormatter(**FORMAT))  # type: ignore[arg-type]
        log.addHandler(handler)


def start_timer() -> None:
    g.started = time.perf_counter()


def log_request(response: Response) -> Response:
    """The request line: one per request, whatever its outcome."""
    if not log.isEnabledFor(logging.INFO):
        return response

    started = g.get("started")
    duration_ms = (time.perf_counter() - started) * 1000 if started else None
    path = request.path
    # A key pasted into a URL by mistake must not reach the log with the path.
    if apikeys.holds_key(path):
        path = apikeys.redact(path)

    principal = g.get("principal")
    log.info(
        "request",
        extra={
            "method": request.method,
            "path": path,
            "status": response.status_code,
            "duration_ms": round(duration_ms, 2) if duration_ms is not None else None,
            "client_ip": request.remote_addr,
            "key_id": principal.key_id if principal is not None else None,
        },
    )

    return response


def init_app(app: Flask) -> None:
    # Early, so the duration covers rate limiting and authentication too;
    # requestid.init_app, called after this, puts its hook in front.
    app.before_request_funcs.setdefault(None, []).insert(0, start_timer)
    # Registered first, so it runs after every other after_request hook and
    # logs the status the client actually gets.
    app.after_request(log_request)
