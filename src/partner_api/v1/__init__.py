"""Version 1 of the partner API, under ``/v1``."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, current_app, g, make_response, request
from flask.typing import ResponseReturnValue
from gunicorn.http.errors import ParseException
from marshmallow import Schema
from werkzeug.exceptions import RequestEntityTooLarge

from partner_api import idempotency
from partner_api.auth import authenticate
from partner_api.errors import APIError, handle_api_error
from partner_api.extensions import db, rate_limiter

bp = Blueprint("v1", __name__, url_prefix="/v1")


@bp.before_request
def require_key() -> None:
    """Every v1 route needs a key; the IP limit was counted earlier, app-wide."""
    principal = authenticate()
    rate_limiter.check_key(principal.key_id)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys repeat is ambiguous: refuse it."""
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate key in a JSON object")

    return result


def read_body() -> bytes:
    """The whole body, or a 413 once it passes MAX_CONTENT_LENGTH.

    Werkzeug checks a declared Content-Length, but a chunked body has none and
    its limited stream stops silently at the limit: the tail would be cut off
    and the truncated prefix parsed. Reading one byte past the limit from the
    server's own stream tells the two cases apart.
    """
    if request.content_length is not None:
        return request.get_data(cache=False)

    if "wsgi.input_terminated" not in request.environ:
        return b""  # no length and no chunking: there is no body

    limit = current_app.config["MAX_CONTENT_LENGTH"]
    stream = request.environ["wsgi.input"]
    chunks, size = [], 0
    while size <= limit:
        try:
            chunk = stream.read(limit + 1 - size)
        except (OSError, ParseException):
            # The server's chunk decoder found a bad size line or a missing
            # terminator (gunicorn's ParseException, Werkzeug's OSError), or
            # the client hung up mid-body (OSError from both).
            raise APIError(
                400,
                "malformed_body",
                "The chunked request body is not well-formed or was cut short.",
            ) from None

        if not chunk:
            break

        chunks.append(chunk)
        size += len(chunk)

    if size > limit:
        raise RequestEntityTooLarge()

    return b"".join(chunks)


def json_body() -> dict[str, Any]:
    """The request's JSON object, parsed once; a 4xx envelope if it is not one."""
    if "json_body" in g:
        parsed: dict[str, Any] = g.json_body
        return parsed

    if request.mimetype != "application/json":
        raise APIError(
            415,
            "unsupported_media_type",
            "Send the body as JSON with Content-Type: application/json.",
        )

    raw = read_body()
    if not raw.strip():
        raise APIError(400, "empty_body", "The request body is empty.")

    try:
        data = json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError):
        # ValueError covers bad UTF-8, a BOM, duplicate keys and oversized
        # integers too.
        raise APIError(400, "malformed_json", "The body is not valid JSON.") from None

    if not isinstance(data, dict):
        raise APIError(400, "invalid_body", "The body must be a JSON object.")

    g.json_body = data

    return data


def load_body(schema: Schema) -> dict[str, Any]:
    """Parse and validate a JSON object body, or raise a 4xx envelope."""
    loaded: dict[str, Any] = schema.load(json_body())

    return loaded


def _answer(view: Callable[..., ResponseReturnValue], **kwargs: Any) -> Response:
    """The view's response; a conflict is a final answer too, kept like a success."""
    try:
        return make_response(view(**kwargs))
    except APIError as error:
        if error.status != 409:
            raise

        return handle_api_error(error)


def idempotent(view: Callable[..., ResponseReturnValue]) -> Callable[..., Response]:
    """Let clients retry the view safely by sending an ``Idempotency-Key``.

    The view leaves its writes uncommitted: they are committed here, with the
    stored response when a key was sent. A 400 or an unexpected error stores
    nothing and frees the key for a corrected retry.
    """

    @functools.wraps(view)
    def wrapper(**kwargs: Any) -> Response:
        key = idempotency.parse_key(request.headers.get(idempotency.HEADER))
        if key is None:
            response = make_response(view(**kwargs))
            db.session.commit()
            return response

        digest = idempotency.fingerprint(request.method, request.path, json_body())
        claim = idempotency.claim(g.principal.owner_id, key, digest)
        if isinstance(claim, Response):
            return claim

        try:
            response = _answer(view, **kwargs)
        except BaseException:
            idempotency.release(claim)
            raise

        idempotency.complete(claim, response)

        return response

    return wrapper


from partner_api.v1 import internal, keys, referrals, users  # noqa: E402, F401
