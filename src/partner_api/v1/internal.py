"""The API root: lets a partner check its key and the version."""

from partner_api.openapi import doc
from partner_api.schemas import VersionSchema
from partner_api.v1 import bp


@bp.get("/internal")
@doc(response=VersionSchema, tags=["api"])
def get_version() -> dict[str, str]:
    """Check the key and report the API version."""
    return {"version": "v1"}
