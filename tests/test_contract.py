"""Schemathesis against a live server, from the document it publishes.

Generated requests, valid and invalid, go to every operation; each response
must be no 5xx, match the document (status, headers, content type, body),
and, when it is an error, be the envelope. A bounded number of examples per
operation keeps the run under a minute.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from partner_api import apikeys, create_app
from partner_api.extensions import db
from partner_api.models import ApiKey, User
from tests.conftest import make_app
from tests.live import Server

SPEC = "/v1/internal/openapi.json"


@pytest.fixture(scope="module")
def live(postgres_url: str, redis_url: str) -> Iterator[Server]:
    """Two gunicorn workers, a real key and a limit no run can reach."""
    app = make_app(postgres_url, redis_url)
    with app.app_context():
        owner = User(email="contract@example.com", email_key="contract@example.com")
        db.session.add(
            ApiKey(
                id=KEY.key_id,
                owner=owner,
                key_hash=KEY.key_hash,
                display_prefix=KEY.display_prefix,
            )
        )
        db.session.commit()

    server = Server(
        {
            "DATABASE_URL": postgres_url,
            "REDIS_URL": redis_url,
            "RATE_LIMIT": "100000 per minute",
        },
        workers=2,
    )
    yield server
    server.stop()


def published_document() -> dict[str, Any]:
    """What every instance serves at SPEC: built by the same code, no server.

    Loaded when the tests are collected, so each operation becomes a test
    of its own; test_the_server_publishes_it checks it against a live one.
    """
    app = create_app({"DATABASE_URL": "sqlite://", "REDIS_URL": ""})
    document: dict[str, Any] = app.test_client().get(SPEC).get_json()

    return document


def error_is_the_envelope(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every 4xx and 5xx, documented or not, is the one JSON envelope."""
    if response.status_code < 400:
        return None

    body = response.json()
    assert isinstance(body, dict), body
    assert body["statusCode"] == response.status_code, body
    assert {"message", "error", "code"} <= set(body), body
    if response.status_code >= 500:
        assert body["requestId"] == response.headers["X-Request-ID"][0], body

    return None


# A request made invalid only by its size meets the server's limits first:
# 414 and 431 are documented refusals of it, as good as a 400.
CONFIG = schemathesis.Config.from_dict(
    {
        "checks": {
            "negative_data_rejection": {
                "expected-statuses": [
                    *(400, 401, 403, 404, 405, 406, 409, 414, 415, 422),
                    *(428, 429, 431, "5XX"),
                ]
            }
        }
    }
)
schema = schemathesis.openapi.from_dict(published_document(), config=CONFIG)
# Cases are generated while the tests are collected, before any fixture
# runs: the key is made now and stored by the live fixture.
KEY = apikeys.generate()


@schema.auth()
class ApiKeyAuth:
    """A real key on every request, the way Schemathesis knows it is auth."""

    def get(self, case: Any, context: Any) -> str:
        return KEY.plaintext

    def set(self, case: Any, data: str, context: Any) -> None:
        case.headers = {**(case.headers or {}), "x-api-key": data}


def test_the_server_publishes_it(live: Server) -> None:
    served = requests.get(f"{live.url}{SPEC}", timeout=10).json()

    assert served == schema.raw_schema


@schema.parametrize()
@settings(
    max_examples=int(os.environ.get("CONTRACT_EXAMPLES", "15")),
    deadline=None,
    database=None,
    derandomize=os.environ.get("CONTRACT_RANDOM") is None,
    suppress_health_check=list(HealthCheck),
)
def test_the_api_keeps_its_contract(case: Any, live: Server) -> None:
    case.call_and_validate(
        base_url=live.url,
        timeout=10,
        additional_checks=[error_is_the_envelope],
        # Schema-valid is not always acceptable: a cursor must be one this API
        # handed out, an email must pass checks JSON Schema cannot state.
        # Such requests get a documented 400, which this check would flag.
        excluded_checks=[positive_data_acceptance],
    )
