"""The owner's referrals, newest first, and how many there are."""

from __future__ import annotations

from typing import Any, cast

from flask import g, request

from partner_api import services
from partner_api.schemas import ReferralQuerySchema, ReferralSummarySchema, UserSchema
from partner_api.v1 import bp

query_schema = ReferralQuerySchema()
users_schema = UserSchema(many=True)
summary_schema = ReferralSummarySchema()


@bp.get("/internal/referrals")
def list_referrals() -> dict[str, Any]:
    """List the users the key's owner referred, one page at a time."""
    args = query_schema.load(request.args)
    page, next_cursor = services.list_referrals(g.principal, **args)

    return {"data": users_schema.dump(page), "nextCursor": next_cursor}


@bp.get("/internal/referrals/summary")
def summarize_referrals() -> dict[str, Any]:
    """Count the users the key's owner referred: in all and in the last 30 days."""
    summary = services.summarize_referrals(g.principal)

    return cast(dict[str, Any], summary_schema.dump(summary))
