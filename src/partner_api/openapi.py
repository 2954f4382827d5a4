"""The OpenAPI 3.1 document, generated from the routes and marshmallow schemas.

Every route of the app is described; nothing is written by hand. The first
line of a view's docstring is the operation's summary, the rest its
description. What a route implies is added for it: a ``/v1`` route needs a
key (401) and is rate limited (429 and the rate-limit headers), a body can be
malformed (400, 413, 415), every route can fail (500). A view declares the
rest with :func:`doc`::

    @bp.post("/internal/users")
    @doc(body=UserCreateSchema, response=UserSchema, status=201,
         errors={409: ["email_taken", "external_id_taken"]})
    def create_user(): ...

The document is built once per app, on first request.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from importlib.metadata import PackageNotFoundError, version
from typing import Any, TypeVar

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Flask
from marshmallow import Schema
from werkzeug.routing import Rule

from partner_api import ratelimit, requestid, schemas

F = TypeVar("F", bound=Callable[..., Any])
SchemaLike = type[Schema] | Schema

SECURITY_SCHEME = "ApiKey"
JSON = "application/json"
HIDDEN_METHODS = {"HEAD", "OPTIONS"}
ATTRIBUTE = "__openapi__"

# Error codes that routes meet without raising them in their view.
BODY_ERRORS = {
    400: [
        "validation_failed",
        "empty_body",
        "malformed_json",
        "invalid_body",
        "malformed_body",
    ],
    413: ["payload_too_large"],
    415: ["unsupported_media_type"],
}
KEY_ERRORS = {
    401: ["missing_api_key", "invalid_api_key"],
    503: ["database_unavailable"],
}
LIMIT_ERRORS = {429: ["rate_limited"], 503: ["rate_limit_unavailable"]}
ALWAYS_ERRORS = {500: ["internal_error"]}
# Refused by the HTTP server (gunicorn.conf.py) before the app sees the
# request: not counted, and without a request id.
REFUSED_ERRORS = {
    414: ["uri_too_long"],
    431: ["request_header_fields_too_large"],
}

RATE_LIMIT_HEADERS = {
    "X-RateLimit-Limit": ("integer", "Requests allowed per window."),
    "X-RateLimit-Remaining": ("integer", "Requests left after this one."),
    "X-RateLimit-Reset": (
        "integer",
        "Epoch seconds when a request will be accepted again at the latest.",
    ),
    "RateLimit-Policy": (
        "string",
        'The budget in the IETF draft syntax: `"default";q=100;w=900`.',
    ),
    "RateLimit": (
        "string",
        'Where the client stands, IETF draft syntax: `"default";r=99;t=900`.',
    ),
}

# In the order the docs page shows them; an operation may bring a new one.
TAGS = (
    ("users", "Register users and read them back."),
    ("referrals", "The users your key's owner referred."),
    ("api", "Check a key."),
    ("operations", "For operators: liveness, readiness, metrics. No key."),
    ("docs", "This contract, for people and for programs. No key."),
)

DESCRIPTION = """\
Partners register users into the platform with an API key; every user they
register is recorded as their referral.

Send the key in the `x-api-key` header. Every request under `/v1/` (except
this document) counts against a rate limit per client IP; the `X-RateLimit-*`
and `RateLimit*` headers say where you stand, and a `429` carries
`Retry-After`. Every error is the same JSON envelope (`Error` below), with a
stable `code` for programs. Every response carries `X-Request-ID`.
"""


@dataclass(frozen=True)
class Operation:
    """What a view declares about itself; see :func:`doc`."""

    body: SchemaLike | None = None
    query: SchemaLike | None = None
    response: SchemaLike | dict[str, Any] | None = None
    status: int = 200
    media_type: str = JSON
    headers: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    errors: Mapping[int, Sequence[str]] = field(default_factory=dict)
    parameters: Sequence[dict[str, Any]] = ()
    tags: Sequence[str] = ()


def doc(**declared: Any) -> Callable[[F], F]:
    """Describe a view for the OpenAPI document.

    ``body``, ``query``: schemas of the JSON body and of the query string;
    ``response``: schema (or raw JSON Schema) of the success body, answered
    with ``status`` as ``media_type``; ``headers``: headers of the success
    response; ``errors``: status -> codes the view raises itself;
    ``parameters``: extra OpenAPI parameters (request headers, say).
    """
    operation = Operation(**declared)

    def decorate(view: F) -> F:
        setattr(view, ATTRIBUTE, operation)
        return view

    return decorate


def _api_version() -> str:
    try:
        return version("partner-api")
    except PackageNotFoundError:  # running from a checkout that is not installed
        return "0"


def _header(type_: str, description: str, required: bool = False) -> dict[str, Any]:
    return {
        "description": description,
        "required": required,
        "schema": {"type": type_},
    }


def _register_components(spec: APISpec) -> None:
    spec.components.security_scheme(
        SECURITY_SCHEME,
        {
            "type": "apiKey",
            "in": "header",
            "name": "x-api-key",
            "description": "Your key, as printed once when it was issued: "
            "`pak_live_<id>_<secret>`.",
        },
    )
    spec.components.schema("Error", schema=schemas.ErrorSchema)
    spec.components.header(
        requestid.HEADER,
        _header(
            "string",
            "The caller's X-Request-ID when it is 1-128 printable characters "
            "without spaces, else a generated one. Quote it when reporting.",
            required=True,
        ),
    )
    for name, (type_, description) in RATE_LIMIT_HEADERS.items():
        spec.components.header(name, _header(type_, description))

    spec.components.header(
        "Retry-After",
        _header("integer", "Seconds to wait before retrying.", required=True),
    )
    spec.components.parameter(
        "RequestId",
        "header",
        {
            "name": requestid.HEADER,
            "required": False,
            "description": "Your id for this request, echoed and logged. "
            "Replaced by a generated one unless it is 1-128 characters from "
            "`A-Za-z0-9._:@/+=-`.",
            "schema": {"type": "string"},
        },
    )


def _path(rule: Rule) -> tuple[str, list[dict[str, Any]]]:
    """Flask's /users/<user_id> as /users/{user_id}, with its parameters."""
    parameters = []
    for name, converter in rule._converters.items():  # no public accessor
        numeric = type(converter).__name__ in ("IntegerConverter", "NumberConverter")
        parameters.append(
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": {"type": "integer" if numeric else "string"},
            }
        )

    path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
    return path, parameters


def _error_response(status: int, codes: Sequence[str]) -> dict[str, Any]:
    listed = ", ".join(f"`{code}`" for code in codes)
    description = f"{HTTPStatus(status).phrase}: {listed}."
    if status in REFUSED_ERRORS:
        description += " Refused before the API reads the request."

    response: dict[str, Any] = {
        "description": description,
        "content": {
            JSON: {
                "schema": {
                    "allOf": [{"$ref": "#/components/schemas/Error"}],
                    "properties": {
                        "statusCode": {"const": status},
                        "code": {"enum": list(codes)},
                    },
                }
            }
        },
    }
    if status in (429, 503):
        response["headers"] = {"Retry-After": "Retry-After"}

    return response


def _merge(*tables: Mapping[int, Sequence[str]]) -> dict[int, list[str]]:
    merged: dict[int, list[str]] = {}
    for table in tables:
        for status, codes in table.items():
            known = merged.setdefault(status, [])
            known.extend(code for code in codes if code not in known)

    return merged


def _operation(
    rule: Rule, view: Callable[..., Any], declared: Operation, operation_id: str
) -> dict[str, Any]:
    keyed = rule.endpoint.split(".", 1)[0] == "v1"
    limited = ratelimit.is_limited_path(rule.rule)
    summary, _, description = (inspect.getdoc(view) or view.__name__).partition("\n")

    errors = _merge(
        BODY_ERRORS if declared.body is not None else {},
        {400: ["validation_failed"]} if declared.query is not None else {},
        KEY_ERRORS if keyed else {},
        LIMIT_ERRORS if limited else {},
        declared.errors,
        ALWAYS_ERRORS,
        REFUSED_ERRORS,
    )

    success: dict[str, Any] = {
        "description": HTTPStatus(declared.status).phrase,
        "headers": dict(declared.headers),
    }
    if declared.response is not None:
        success["content"] = {declared.media_type: {"schema": declared.response}}

    responses: dict[str, Any] = {str(declared.status): success}
    for status, codes in sorted(errors.items()):
        responses[str(status)] = _error_response(status, codes)

    # Every response carries the request id; /v1 ones say the budget left.
    # (A string names a component; apispec turns it into a $ref.)
    for code, response in responses.items():
        headers = response.setdefault("headers", {})
        if int(code) in REFUSED_ERRORS:
            continue

        headers[requestid.HEADER] = requestid.HEADER
        if limited:
            headers.update({name: name for name in RATE_LIMIT_HEADERS})

    parameters: list[Any] = ["RequestId"]
    if declared.query is not None:
        parameters.append({"in": "query", "schema": declared.query})

    parameters.extend(declared.parameters)
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary.strip(),
        "tags": list(declared.tags) or [view.__module__.rsplit(".", 1)[-1]],
        "parameters": parameters,
        "responses": responses,
        "security": [{SECURITY_SCHEME: []}] if keyed else [],
    }
    if description.strip():
        operation["description"] = description.strip()

    if declared.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {JSON: {"schema": declared.body}},
        }

    return operation


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(part.title() for part in rest)


def build(app: Flask) -> dict[str, Any]:
    """The document for every route of `app`."""
    marshmallow = MarshmallowPlugin()
    spec = APISpec(
        title="Partner API",
        version=_api_version(),
        openapi_version="3.1.0",
        plugins=[marshmallow],
        info={"description": DESCRIPTION},
    )
    marshmallow.map_to_openapi_type(  # type: ignore[no-untyped-call]
        schemas.Timestamp, "string", "date-time"
    )
    for name, description in TAGS:
        spec.tag({"name": name, "description": description})

    _register_components(spec)

    operation_ids: set[str] = set()
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        view = app.view_functions[rule.endpoint]
        declared: Operation = getattr(view, ATTRIBUTE, Operation())
        path, path_parameters = _path(rule)
        methods = sorted((rule.methods or set()) - HIDDEN_METHODS)
        operations = {}
        for method in methods:
            # The view's name, unless one view serves several methods.
            name = view.__name__ if len(methods) == 1 else f"{method}_{view.__name__}"
            operation_id = _camel(name.lower())
            if operation_id in operation_ids:
                raise ValueError(f"two operations would be named {operation_id}")

            operation_ids.add(operation_id)
            operations[method.lower()] = _operation(rule, view, declared, operation_id)

        spec.path(path=path, operations=operations, parameters=path_parameters)

    return spec.to_dict()
