"""The owner's referrals, newest first."""

from __future__ import annotations

from typing import Any

from flask import g, request

from partner_api import services
from partner_api.schemas import ReferralQuerySchema, UserSchema
from partner_api.v1 import bp

query_schema = ReferralQuerySchema()
users_schema = UserSchema(many=True)


@bp.get("/internal/referrals")
def list_referrals() -> dict[str, Any]:
    """List the users the key's owner referred, one page at a time."""
    args = query_schema.load(request.args)
    page, next_cursor = services.list_referrals(
        g.principal, args["limit"], args["cursor"]
    )

    return {"data": users_schema.dump(page), "nextCursor": next_cursor}
