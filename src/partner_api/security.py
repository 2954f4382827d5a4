"""Security headers for a JSON API, on every response.

No response of this API is meant to be rendered, framed or cached by a
browser, so the defaults forbid all three. A view that serves a page (the
docs) sets its own Content-Security-Policy or Cache-Control, and these
defaults leave it alone.
"""

from __future__ import annotations

from flask import Flask, Response

FIXED_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
)
# A view may set these itself; the defaults fill in only what it left out.
DEFAULT_HEADERS = (
    ("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'"),
    # Responses carry partners' users; no proxy or browser may keep them.
    ("Cache-Control", "no-store"),
)


def add_headers(response: Response) -> Response:
    headers = response.headers
    headers.extend(FIXED_HEADERS)
    for name, value in DEFAULT_HEADERS:
        headers.setdefault(name, value)

    return response


def init_app(app: Flask) -> None:
    app.after_request(add_headers)
