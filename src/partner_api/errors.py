"""One envelope for every error, whoever raises it.

Views and hooks raise :class:`APIError` (or let Werkzeug raise an
``HTTPException``); the handlers here turn either into::

    {"message": ..., "error": <reason phrase>, "statusCode": <int>, "code": ...}

Server-side failures (5xx) add ``"requestId"``, the id in every log line of
the request, for the client to quote when it reports the problem.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from flask import Flask, Response, jsonify
from marshmallow import ValidationError
from sqlalchemy import exc as sa_exc
from werkzeug.exceptions import HTTPException

from partner_api import requestid

log = logging.getLogger("partner_api")

# Machine codes for errors that Werkzeug raises before a view runs.
DEFAULT_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable_content",
    429: "rate_limited",
    500: "internal_error",
    503: "service_unavailable",
}

DEFAULT_MESSAGES = {
    404: "No such resource. Check the path and the API version.",
    405: "This method is not allowed on this resource.",
    413: "The request body is larger than the server accepts.",
    500: "The server failed to handle this request. It has been logged.",
}


class APIError(Exception):
    """An error a client can act on, rendered in the envelope."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: dict[str, list[str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}


def envelope(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
) -> Response:
    """The JSON error response; the single place that shapes it."""
    body: dict[str, Any] = {
        "message": message,
        "error": HTTPStatus(status).phrase,
        "statusCode": status,
        "code": code,
    }
    if details is not None:
        body["details"] = details

    if status >= 500:
        request_id = requestid.current()
        if request_id is not None:
            body["requestId"] = request_id

    response = jsonify(body)
    response.status_code = status

    return response


def _flatten(messages: Any) -> dict[str, list[str]]:
    """marshmallow nests messages; clients get one flat list per field."""
    if isinstance(messages, list):
        return {"_body": [str(m) for m in messages]}

    details: dict[str, list[str]] = {}
    for field, reasons in messages.items():
        if isinstance(reasons, dict):
            reasons = [str(r) for nested in reasons.values() for r in nested]

        details[str(field)] = [str(r) for r in reasons]

    return details


def handle_api_error(error: APIError) -> Response:
    response = envelope(error.status, error.code, error.message, error.details)
    response.headers.update(error.headers)

    return response


def handle_http_exception(error: HTTPException) -> Response:
    status = error.code or 500
    message = DEFAULT_MESSAGES.get(status) or error.description or ""
    response = envelope(status, DEFAULT_CODES.get(status, "error"), message)

    # Keep headers such as Allow on 405, but never Werkzeug's HTML content type.
    for name, value in error.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value

    return response


def handle_validation_error(error: ValidationError) -> Response:
    return envelope(
        400,
        "validation_failed",
        "The request failed validation; see details.",
        _flatten(error.messages),
    )


def handle_database_unavailable(error: Exception) -> Response:
    # The database is down, stalled or out of connections: the client may
    # retry. The driver's text stays in the log, never in the body.
    # The session is rolled back and removed at teardown, as after any request.
    log.error("database unavailable: %s", type(error).__name__, exc_info=error)
    response = envelope(
        503,
        "database_unavailable",
        "The service cannot reach its database. Retry shortly.",
    )
    response.headers["Retry-After"] = "5"

    return response


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(APIError, handle_api_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(ValidationError, handle_validation_error)
    for db_error in (
        sa_exc.OperationalError,
        sa_exc.InterfaceError,
        sa_exc.TimeoutError,
    ):
        app.register_error_handler(db_error, handle_database_unavailable)
