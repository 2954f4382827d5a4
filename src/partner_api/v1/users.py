"""Users registered by partners."""

from __future__ import annotations

from typing import Any, cast

from flask import g, url_for

from partner_api import services
from partner_api.openapi import doc
from partner_api.schemas import UserCreateSchema, UserSchema
from partner_api.v1 import bp, idempotent, load_body

create_schema = UserCreateSchema()
user_schema = UserSchema()


LOCATION = {
    "description": "Where to GET the new user.",
    "required": True,
    "schema": {"type": "string", "example": "/v1/internal/users/usr_..."},
}
REPLAYED = {
    "description": "`true` when this is the stored answer to an earlier request "
    "with the same Idempotency-Key and body.",
    "schema": {"type": "string", "enum": ["true"]},
}
IDEMPOTENCY_KEY = {
    "in": "header",
    "name": "Idempotency-Key",
    "required": False,
    "description": "Retry safely: the same key and body within 24 hours replays "
    "the first answer instead of registering again. 1-255 printable ASCII "
    "characters, scoped to your key's owner.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}


@bp.post("/internal/users")
@doc(
    body=UserCreateSchema,
    response=UserSchema,
    status=201,
    headers={"Location": LOCATION, "Idempotent-Replayed": REPLAYED},
    errors={
        400: ["invalid_idempotency_key"],
        409: ["email_taken", "external_id_taken", "idempotency_key_in_use"],
        422: ["idempotency_key_reused"],
    },
    parameters=[IDEMPOTENCY_KEY],
)
@idempotent
def create_user() -> tuple[dict[str, Any], int, dict[str, str]]:
    """Register a user as a referral of the key's owner; safe to retry with a key."""
    data = load_body(create_schema)
    user = services.register_user(g.principal, data)
    location = url_for("v1.get_user", user_id=user.id)

    return user_schema.dump(user), 201, {"Location": location}


@bp.get("/internal/users/<user_id>")
@doc(response=UserSchema, errors={404: ["not_found"]})
def get_user(user_id: str) -> dict[str, Any]:
    """One user, if the key's owner referred it."""
    user = services.find_referred_user(g.principal, user_id)

    return cast(dict[str, Any], user_schema.dump(user))
