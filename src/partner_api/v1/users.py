"""Users registered by partners."""

from __future__ import annotations

from typing import Any, cast

from flask import g, url_for

from partner_api import services
from partner_api.schemas import UserCreateSchema, UserSchema
from partner_api.v1 import bp, idempotent, load_body

create_schema = UserCreateSchema()
user_schema = UserSchema()


@bp.post("/internal/users")
@idempotent
def create_user() -> tuple[dict[str, Any], int, dict[str, str]]:
    """Register a user as a referral of the key's owner; safe to retry with a key."""
    data = load_body(create_schema)
    user = services.register_user(g.principal, data)
    location = url_for("v1.get_user", user_id=user.id)

    return user_schema.dump(user), 201, {"Location": location}


@bp.get("/internal/users/<user_id>")
def get_user(user_id: str) -> dict[str, Any]:
    """One user, if the key's owner referred it."""
    user = services.find_referred_user(g.principal, user_id)

    return cast(dict[str, Any], user_schema.dump(user))
