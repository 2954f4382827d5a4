"""The calling key: lets a partner check its integration without asking anyone."""

from __future__ import annotations

from typing import Any, cast

from flask import g

from partner_api.openapi import doc
from partner_api.schemas import ApiKeySchema
from partner_api.v1 import bp

key_schema = ApiKeySchema()


@bp.get("/internal/key")
@doc(response=ApiKeySchema)
def get_key() -> dict[str, Any]:
    """The calling key's id, owner, dates, status and current rate-limit budget."""
    principal = g.principal
    # Named fields only: the principal also carries the key's hash.
    body = {
        "key_id": principal.key_id,
        "name": principal.name,
        "display_prefix": principal.display_prefix,
        "owner_id": principal.owner_id,
        "created_at": principal.created_at,
        "expires_at": principal.expires_at,
        "status": principal.status,
        "rate_limit": g.get("rate_limit"),
    }

    return cast(dict[str, Any], key_schema.dump(body))
