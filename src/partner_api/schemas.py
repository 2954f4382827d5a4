"""Request and response schemas. Every request body goes through one of these."""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from email_validator import EmailNotValidError, validate_email
from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    fields,
    pre_load,
    validate,
)

EMAIL_MAX = 254
# The same rule as no_control_characters, for the published contract.
NO_CONTROL_CHARACTERS = r"^[^\x00-\x1F\x7F-\x9F]*$"


def no_control_characters(value: str) -> None:
    """Reject C0/C1 controls (NUL included) and lone surrogates.

    PostgreSQL refuses NUL and unpaired surrogates while SQLite stores them,
    so rejecting them here keeps both databases identical for the client.
    """
    for char in value:
        if unicodedata.category(char) in ("Cc", "Cs"):
            raise ValidationError("Must not contain control characters.")


class Text(fields.String):
    """A string field that rejects control characters and overlong values."""

    def __init__(
        self,
        max_length: int,
        min_length: int | None = None,
        documented: dict[str, str] | None = None,
        **kwargs: Any,
    ):
        validators: list[Callable[[str], Any]] = [
            validate.Length(min=min_length, max=max_length),
            no_control_characters,
        ]
        # What the published contract says about the value.
        metadata = documented or {"pattern": NO_CONTROL_CHARACTERS}
        super().__init__(validate=validators, metadata=metadata, **kwargs)


class Email(Text):
    """An address, trimmed and checked for syntax only (no DNS), then normalized."""

    def __init__(self, **kwargs: Any):
        super().__init__(EMAIL_MAX, documented={"format": "email"}, **kwargs)

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs).strip()
        # The validators (length, control characters) see the trimmed value.
        for validator in self.validators:
            validator(text)

        try:
            normalized: str = validate_email(
                text, check_deliverability=False
            ).normalized
        except EmailNotValidError as error:
            raise ValidationError(str(error)) from None

        return normalized


class UserCreateSchema(Schema):
    """Body of ``POST /v1/internal/users``."""

    class Meta:
        unknown = RAISE

    email = Email(required=True)
    password = Text(128, min_length=8, load_default=None, allow_none=True)
    first_name = Text(100, data_key="firstName", load_default=None, allow_none=True)
    last_name = Text(100, data_key="lastName", load_default=None, allow_none=True)
    external_id = Text(
        128, min_length=1, data_key="externalId", load_default=None, allow_none=True
    )

    @pre_load
    def require_object(self, data: Any, **_: Any) -> Any:
        if not isinstance(data, dict):
            raise ValidationError("The body must be a JSON object.", "_body")

        return data


def isoformat(value: datetime) -> str:
    """ISO 8601 in UTC with a Z, from the naive UTC values in the database."""
    return value.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")


class Timestamp(fields.Field[datetime]):
    def _serialize(self, value: Any, attr: Any, obj: Any, **kwargs: Any) -> Any:
        return None if value is None else isoformat(value)


class UserSchema(Schema):
    """A registered user as partners see it."""

    # Output only: `required` and `allow_none` describe what every response
    # holds, for the published contract.
    id = fields.String(required=True, metadata={"example": "usr_" + "0" * 32})
    email = fields.String(required=True)
    first_name = fields.String(data_key="firstName", required=True, allow_none=True)
    last_name = fields.String(data_key="lastName", required=True, allow_none=True)
    external_id = fields.String(data_key="externalId", required=True, allow_none=True)
    referrer_id = fields.String(data_key="referrerId", required=True)
    created_at = Timestamp(data_key="createdAt", required=True)


class ReferralPageSchema(Schema):
    """One page of referrals, newest first."""

    data = fields.List(fields.Nested(UserSchema), required=True)
    next_cursor = fields.String(
        data_key="nextCursor",
        required=True,
        allow_none=True,
        metadata={
            "description": "Pass as `cursor` for the next page; null at the end."
        },
    )


class RateLimitSchema(Schema):
    limit = fields.Integer(required=True)
    remaining = fields.Integer(required=True)
    reset = fields.Method(
        "reset_epoch",
        required=True,
        metadata={"type": "integer", "description": "Epoch seconds."},
    )

    def reset_epoch(self, state: Any) -> int:
        return math.ceil(float(state.reset))


class ApiKeySchema(Schema):
    """The calling key as its partner sees it: never the secret or its hash."""

    id = fields.String(attribute="key_id", required=True)
    name = fields.String(required=True)
    prefix = fields.String(attribute="display_prefix", required=True)
    owner_id = fields.String(data_key="ownerId", required=True)
    created_at = Timestamp(data_key="createdAt", required=True)
    expires_at = Timestamp(data_key="expiresAt", required=True, allow_none=True)
    status = fields.String(
        required=True,
        metadata={"enum": ["active", "expiring", "expired", "revoked"]},
    )
    rate_limit = fields.Nested(
        RateLimitSchema, data_key="rateLimit", required=True, allow_none=True
    )


class Instant(fields.AwareDateTime):
    """An ISO 8601 time with a zone or Z, as naive UTC like the database holds."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        aware = super()._deserialize(value, attr, data, **kwargs)
        try:
            return aware.astimezone(UTC).replace(tzinfo=None)
        except OverflowError:
            # 9999-12-31T23:00:00-05:00 is valid ISO 8601 but past datetime.max.
            raise ValidationError("Not a time this API can represent.") from None


class PageSize(fields.Integer):
    """A query-string count in plain ASCII digits: no sign, "_" or other scripts."""

    DIGITS = re.compile(r"[0-9]{1,9}")

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> int:
        if isinstance(value, str) and not self.DIGITS.fullmatch(value):
            raise self.make_error("invalid")

        return super()._deserialize(value, attr, data, **kwargs)


class ReferralQuerySchema(Schema):
    """Query string of ``GET /v1/internal/referrals``: page, cursor, filters."""

    class Meta:
        unknown = RAISE

    limit = PageSize(
        load_default=20, validate=validate.Range(min=1, max=100), strict=False
    )
    cursor = fields.String(load_default=None)
    created_after = Instant(data_key="createdAfter", load_default=None)
    created_before = Instant(data_key="createdBefore", load_default=None)
    external_id = Text(128, min_length=1, data_key="externalId", load_default=None)
    email = Email(load_default=None)

    @pre_load
    def each_parameter_once(self, data: Any, **kwargs: Any) -> Any:
        # A query string can repeat a name; only the first value would be read,
        # so the rest would be checked by nobody.
        listed = getattr(data, "listvalues", None)
        if listed is not None:
            repeated = [
                k for k, v in zip(data.keys(), listed(), strict=True) if len(v) > 1
            ]
            if repeated:
                raise ValidationError(
                    {name: ["Give this parameter once."] for name in repeated}
                )

        return data


class ReferralSummarySchema(Schema):
    """Body of ``GET /v1/internal/referrals/summary``."""

    total = fields.Integer()
    last_30_days = fields.Integer(data_key="last30Days")


class VersionSchema(Schema):
    """The API version the key reached."""

    version = fields.String(required=True, metadata={"example": "v1"})


class HealthSchema(Schema):
    """The process is alive."""

    status = fields.String(required=True, metadata={"example": "ok"})


class ReadinessSchema(Schema):
    """Every dependency answered."""

    status = fields.String(required=True, metadata={"example": "ready"})
    checks = fields.Dict(
        keys=fields.String(),
        values=fields.String(),
        required=True,
        metadata={"example": {"database": "ok", "redis": "ok"}},
    )


class ErrorSchema(Schema):
    """The envelope of every error (errors.envelope builds it)."""

    message = fields.String(required=True, metadata={"description": "For people."})
    error = fields.String(
        required=True, metadata={"description": "The HTTP reason phrase."}
    )
    status_code = fields.Integer(
        data_key="statusCode",
        required=True,
        metadata={"description": "Always the HTTP status."},
    )
    code = fields.String(
        required=True, metadata={"description": "Stable, for programs."}
    )
    details = fields.Dict(
        keys=fields.String(),
        values=fields.List(fields.String()),
        metadata={"description": "Validation errors: reasons by field."},
    )
    request_id = fields.String(
        data_key="requestId",
        metadata={"description": "On 5xx: the request's id in our logs."},
    )
