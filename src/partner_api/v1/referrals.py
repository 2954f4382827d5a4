"""The owner's referrals, newest first, and how many there are."""

from __future__ import annotations

from typing import Any, cast

from flask import g, request

from partner_api import services
from partner_api.openapi import doc
from partner_api.schemas import (
    ReferralPageSchema,
    ReferralQuerySchema,
    ReferralSummarySchema,
)
from partner_api.v1 import bp

query_schema = ReferralQuerySchema()
page_schema = ReferralPageSchema()
summary_schema = ReferralSummarySchema()


@bp.get("/internal/referrals")
@doc(
    query=ReferralQuerySchema,
    response=ReferralPageSchema,
    errors={400: ["invalid_cursor"]},
)
def list_referrals() -> dict[str, Any]:
    """List the users the key's owner referred, one page at a time."""
    args = query_schema.load(request.args)
    page, next_cursor = services.list_referrals(g.principal, **args)

    return cast(
        dict[str, Any], page_schema.dump({"data": page, "next_cursor": next_cursor})
    )


@bp.get("/internal/referrals/summary")
@doc(response=ReferralSummarySchema, tags=["referrals"])
def summarize_referrals() -> dict[str, Any]:
    """Count the users the key's owner referred: in all and in the last 30 days."""
    summary = services.summarize_referrals(g.principal)

    return cast(dict[str, Any], summary_schema.dump(summary))
