"""The published contract: the OpenAPI document and a page that renders it.

The page uses Swagger UI from the flask-swagger-ui package, served by this
app itself: it works without any outside network, and its
Content-Security-Policy allows scripts and styles from this origin only.
(The package's own blueprint starts Swagger UI with an inline script, which
that policy forbids, so only its files are used.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import flask_swagger_ui
from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    render_template,
    request,
    send_from_directory,
)

from partner_api import openapi
from partner_api.openapi import doc
from partner_api.ratelimit import OPENAPI_PATH

bp = Blueprint("docs", __name__)

SWAGGER_UI = Path(flask_swagger_ui.__file__).parent / "dist"
OWN_ASSETS = Path(__file__).parent / "docs_assets"
# Only these files are served, each from the folder it lives in.
ASSETS = {
    "swagger-ui-bundle.js": SWAGGER_UI,
    "swagger-ui.css": SWAGGER_UI,
    "favicon-32x32.png": SWAGGER_UI,
    "docs.js": OWN_ASSETS,
    "docs.css": OWN_ASSETS,
}
ASSET_MAX_AGE = 24 * 3600
# Swagger UI sets inline styles and draws data: images; it runs no inline
# script (docs.js starts it) and talks to this origin only.
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
OPENAPI_OBJECT = {"type": "object", "description": "An OpenAPI 3.1 document."}
TEXT = {"type": "string"}


@bp.get(OPENAPI_PATH)
@doc(response=OPENAPI_OBJECT, tags=["docs"])
def get_openapi() -> dict[str, Any]:
    """This document. Needs no key and is not rate-limited."""
    spec: dict[str, Any] | None = current_app.extensions.get("partner_api.openapi")
    if spec is None:
        spec = openapi.build(current_app)
        current_app.extensions["partner_api.openapi"] = spec

    return spec


@bp.get("/docs")
@doc(response=TEXT, media_type="text/html", tags=["docs"])
def get_docs() -> Response:
    """The documentation page: a first-request guide and every operation."""
    page = render_template(
        "docs.html",
        base_url=request.host_url.rstrip("/"),
        spec_url=OPENAPI_PATH,
    )
    response = Response(page, mimetype="text/html")
    response.headers["Content-Security-Policy"] = PAGE_CSP

    return response


@bp.get("/docs/assets/<filename>")
@doc(
    response={"type": "string", "format": "binary"},
    media_type="*/*",
    parameters=[
        {
            "name": "filename",
            "in": "path",
            "required": True,
            "schema": {"type": "string", "enum": sorted(ASSETS)},
        }
    ],
    errors={404: ["not_found"]},
    tags=["docs"],
)
def get_docs_asset(filename: str) -> Response:
    """A script, style sheet or image of the documentation page."""
    folder = ASSETS.get(filename)
    if folder is None:
        abort(404)

    return send_from_directory(folder, filename, max_age=ASSET_MAX_AGE)
