"""Version 1 of the partner API, under ``/v1``."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, request
from marshmallow import Schema

from partner_api.auth import authenticate
from partner_api.errors import APIError
from partner_api.extensions import rate_limiter

bp = Blueprint("v1", __name__, url_prefix="/v1")


@bp.before_request
def require_key() -> None:
    """Every v1 route needs a key; the IP limit was counted earlier, app-wide."""
    principal = authenticate()
    rate_limiter.check_key(principal.key_id)


def load_body(schema: Schema) -> dict[str, Any]:
    """Parse and validate a JSON object body, or raise a 4xx envelope."""
    if request.mimetype != "application/json":
        raise APIError(
            415,
            "unsupported_media_type",
            "Send the body as JSON with Content-Type: application/json.",
        )

    raw = request.get_data(cache=False)
    if not raw.strip():
        raise APIError(400, "empty_body", "The request body is empty.")

    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        # ValueError covers bad UTF-8 and oversized integers too.
        raise APIError(400, "malformed_json", "The body is not valid JSON.") from None

    if not isinstance(data, dict):
        raise APIError(400, "invalid_body", "The body must be a JSON object.")

    loaded: dict[str, Any] = schema.load(data)

    return loaded


from partner_api.v1 import internal, keys, referrals, users  # noqa: E402, F401
