"""The OpenAPI document: valid 3.1, complete, public, and easy to extend."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from marshmallow import Schema, fields
from openapi_spec_validator import validate

from partner_api.openapi import RATE_LIMIT_HEADERS, doc
from tests.conftest import make_app

SPEC = "/v1/internal/openapi.json"
HIDDEN = {"HEAD", "OPTIONS"}


@pytest.fixture
def plain(sqlite_url: str, redis_url: str) -> Flask:
    """The document does not depend on the database."""
    return make_app(sqlite_url, redis_url)


def document(app: Flask) -> dict[str, Any]:
    response = app.test_client().get(SPEC)
    assert response.status_code == 200
    spec: dict[str, Any] = response.get_json()

    return spec


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if method != "parameters"
    ]


def test_the_document_is_valid_openapi_3_1(plain: Flask) -> None:
    spec = document(plain)

    assert spec["openapi"] == "3.1.0"
    validate(spec)


def test_every_route_and_method_is_described(plain: Flask) -> None:
    spec = document(plain)
    described = {(path, method) for path, method, _ in operations(spec)}

    routes = {
        (rule.rule.replace("<", "{").replace(">", "}"), method.lower())
        for rule in plain.url_map.iter_rules()
        for method in (rule.methods or set()) - HIDDEN
    }
    assert routes == described


def test_public_and_never_counted(sqlite_url: str, redis_url: str) -> None:
    app = make_app(sqlite_url, redis_url, RATE_LIMIT="1 per minute")
    client = app.test_client()

    responses = [client.get(SPEC) for _ in range(3)]

    assert {r.status_code for r in responses} == {200}
    assert "X-RateLimit-Limit" not in responses[0].headers
    assert client.get("/v1/internal").status_code == 401


def test_key_scheme_errors_and_headers(plain: Flask) -> None:
    spec = document(plain)
    scheme = spec["components"]["securitySchemes"]["ApiKey"]
    assert scheme == {**scheme, "type": "apiKey", "in": "header", "name": "x-api-key"}

    for path, _, operation in operations(spec):
        responses = operation["responses"]
        keyed = path.startswith("/v1/") and path != SPEC
        assert (operation["security"] == [{"ApiKey": []}]) is keyed, path
        assert {"414", "431", "500"} <= set(responses), path
        if keyed:
            assert {"401", "429", "503"} <= set(responses), path

        for status, response in responses.items():
            headers = response["headers"]
            # Refused by gunicorn before the app: no id, nothing counted.
            refused = status in ("414", "431")
            assert ("X-Request-ID" in headers) is not refused, (path, status)
            limited = keyed and not refused
            assert (set(RATE_LIMIT_HEADERS) <= set(headers)) is limited, path
            if int(status) >= 400:
                schema = response["content"]["application/json"]["schema"]
                assert schema["allOf"] == [{"$ref": "#/components/schemas/Error"}]
                assert schema["properties"]["statusCode"] == {"const": int(status)}
            if status in ("429", "503"):
                assert "Retry-After" in headers


@pytest.mark.parametrize(
    ("path", "method", "status", "codes"),
    [
        ("/v1/internal/users", "post", "201", None),
        (
            "/v1/internal/users",
            "post",
            "400",
            [
                "validation_failed",
                "empty_body",
                "malformed_json",
                "invalid_body",
                "malformed_body",
                "invalid_idempotency_key",
            ],
        ),
        (
            "/v1/internal/users",
            "post",
            "409",
            ["email_taken", "external_id_taken", "idempotency_key_in_use"],
        ),
        ("/v1/internal/users", "post", "422", ["idempotency_key_reused"]),
        ("/v1/internal/users", "post", "413", ["payload_too_large"]),
        ("/v1/internal/users", "post", "415", ["unsupported_media_type"]),
        ("/v1/internal/users/{user_id}", "get", "404", ["not_found"]),
        (
            "/v1/internal/referrals",
            "get",
            "400",
            ["validation_failed", "invalid_cursor"],
        ),
        (
            "/v1/internal",
            "get",
            "503",
            ["database_unavailable", "rate_limit_unavailable"],
        ),
        ("/readyz", "get", "503", ["not_ready"]),
        ("/metrics", "get", "404", ["not_found"]),
    ],
)
def test_status_codes_and_error_codes(
    plain: Flask, path: str, method: str, status: str, codes: list[str] | None
) -> None:
    response = document(plain)["paths"][path][method]["responses"][status]

    if codes is not None:
        schema = response["content"]["application/json"]["schema"]
        assert schema["properties"]["code"]["enum"] == codes


def test_registration_is_described_from_its_schemas(plain: Flask) -> None:
    spec = document(plain)
    operation = spec["paths"]["/v1/internal/users"]["post"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    created = operation["responses"]["201"]

    assert body == {"$ref": "#/components/schemas/UserCreate"}
    user_create = spec["components"]["schemas"]["UserCreate"]
    assert user_create["required"] == ["email"]
    assert user_create["additionalProperties"] is False
    assert user_create["properties"]["password"]["minLength"] == 8
    assert created["headers"]["Location"]["required"] is True
    user = spec["components"]["schemas"]["User"]
    assert user["properties"]["createdAt"] == {"type": "string", "format": "date-time"}
    assert user["properties"]["externalId"]["type"] == ["string", "null"]


def test_a_new_endpoint_needs_a_schema_and_a_decorator(plain: Flask) -> None:
    class SummarySchema(Schema):
        total = fields.Integer(required=True)

    @plain.get("/example/summary")
    @doc(response=SummarySchema, errors={409: ["busy"]}, tags=["example"])
    def get_summary() -> dict[str, int]:
        """Count everything.

        Longer words for the description.
        """
        return {"total": 0}

    spec = document(plain)

    operation = spec["paths"]["/example/summary"]["get"]
    assert operation["operationId"] == "getSummary"
    assert operation["summary"] == "Count everything."
    assert operation["description"] == "Longer words for the description."
    assert operation["tags"] == ["example"]
    assert operation["responses"]["200"]["content"]["application/json"] == {
        "schema": {"$ref": "#/components/schemas/Summary"}
    }
    assert operation["responses"]["409"]["content"]["application/json"]["schema"][
        "properties"
    ]["code"] == {"enum": ["busy"]}
    validate(spec)
