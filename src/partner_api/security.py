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
    # Plain adds: Headers.extend and setdefault cost several times more, on
    # every response.
    headers = response.headers
    for name, value in FIXED_HEADERS:
        headers.add(name, value)

    for name, value in DEFAULT_HEADERS:
        if name not in headers:
            headers.add(name, value)

    return response


def init_app(app: Flask) -> None:
    app.after_request(add_headers)
