from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator

from app.api.types import Input, Instant
from app.oauth2 import scopes as catalogue

_LOOPBACK = {"localhost", "127.0.0.1", "[::1]", "::1"}


def check_redirect_uri(uri: str) -> str:
    """RFC 6749 §3.1.2: absolute, no fragment; https, or http only on a loopback host
    (RFC 8252 §7.3); private-use schemes for native apps."""
    if len(uri) > 2000 or not uri.isascii() or any(c <= " " or c == "\x7f" for c in uri):
        # RFC 3986: a URI has no spaces, controls or raw non-ASCII (percent-encode them).
        raise ValueError("a redirect URI is at most 2000 ASCII characters, without spaces or "
                         "control characters")
    parts = urlsplit(uri)
    if not parts.scheme or parts.fragment or not (parts.netloc or parts.scheme not in {
            "http", "https"}):
        raise ValueError("a redirect URI must be absolute and carry no fragment")
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK:
        raise ValueError("plain http redirect URIs are allowed only on loopback hosts")
    if parts.scheme in {"javascript", "data", "file"}:
        raise ValueError("unsafe redirect URI scheme")
    return uri


class IntegrationIn(Input):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "name": "Reporting app", "redirect_uris": ["https://app.example/callback"],
        "scopes": ["profile", "data:read"], "confidential": True}]})

    name: str = Field(min_length=1, max_length=200)
    redirect_uris: list[str] = Field(default_factory=list, max_length=20)
    scopes: list[str] = Field(default_factory=list, max_length=len(catalogue.CATALOGUE))
    confidential: bool = True
    can_introspect: bool = False
    data_access: Literal["limited", "extended"] = "limited"
    # RFC 9449 §5.2 (registration metadata of RFC 7591's kind): every access token it gets is
    # DPoP-bound; a token request without a DPoP proof is refused.
    dpop_bound_access_tokens: bool = False

    @field_validator("redirect_uris")
    @classmethod
    def _uris(cls, value: list[str]) -> list[str]:
        return [check_redirect_uri(u) for u in value]

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, value: list[str]) -> list[str]:
        if catalogue.unknown(value):  # never echoed: the details never hold the input
            raise ValueError("unknown scope; the scopes are listed in the metadata's "
                             "scopes_supported")
        return list(dict.fromkeys(value))


class OperatorIntegrationIn(IntegrationIn):
    """What an operator registers: a third-party integration (reviewed, installed by plan
    admins through consent), or a platform resource server (`platform`: first-party, not
    subject to review; it introspects tokens of every plan and obtains no tokens itself)."""

    kind: Literal["third_party", "platform"] = "third_party"

    @model_validator(mode="after")
    def _platform_only_introspects(self) -> OperatorIntegrationIn:
        if self.kind == "platform" and (self.scopes or self.redirect_uris
                                        or not self.confidential or not self.can_introspect):
            raise ValueError("a platform resource server is confidential and introspects "
                             "(can_introspect true), with no scopes and no redirect URIs")
        return self


class IntegrationOut(BaseModel):
    id: uuid.UUID
    client_id: str
    name: str
    kind: str
    plan_id: uuid.UUID | None
    redirect_uris: list[str]
    scopes: list[str]
    confidential: bool
    can_introspect: bool
    data_access: str
    review_status: str
    review_deadline: datetime | None
    exception_until: datetime | None
    judged_third_party: bool
    created_at: datetime
    dpop_bound_access_tokens: bool = False


class IssuedIntegrationOut(IntegrationOut):
    client_secret: str | None = Field(description="shown this once; null for public clients")


class IntegrationTokenIn(Input):
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"name": "nightly export", "scopes": ["data:read"]}]})

    name: str | None = Field(default=None, max_length=200)
    scopes: list[str] | None = Field(default=None, description="default: all of the "
                                     "integration's permissions")


class ReviewIn(Input):
    """An operator's change to a review: status, deadline, and the steps recorded as done."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["not_reviewed", "in_review", "approved", "not_approved", "revoked"] | None \
        = None
    deadline: Instant | None = None
    steps: dict[Literal["business_verification", "terms_accepted", "review",
                        "penetration_test", "security_questionnaire"], bool] | None = None
    note: str | None = Field(default=None, max_length=500)


class ExceptionIn(Input):
    model_config = ConfigDict(extra="forbid",
                              json_schema_extra={"examples": [{"until": "2027-06-30T00:00:00Z"}]})

    until: Instant


class JudgementIn(Input):
    """The platform judges a custom integration to be operated by a third party."""

    model_config = ConfigDict(extra="forbid")

    deactivate_at: Instant
    review_deadline: Instant | None = Field(
        default=None, description="until when it may work unapproved; default deactivate_at")
    note: str | None = Field(default=None, max_length=500)


class ReportIn(Input):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "message": "This integration is run by our own team, not by a third party."}]})

    message: str = Field(min_length=1, max_length=2000)


class AccessOut(BaseModel):
    allowed: bool
    rule: str | None
    deadline: datetime | None
    description: str


class ReviewOut(IntegrationOut):
    review_steps: dict[str, dict]
    missing_steps: list[str]
    deactivation_scheduled_at: datetime | None


class InstallationOut(BaseModel):
    integration_id: uuid.UUID
    client_id: str
    name: str
    kind: str
    approved_scopes: list[str] = Field(description="what a plan admin approved for the plan: "
                                                   "no token the integration gets here carries "
                                                   "more")
    judged_third_party: bool
    data_access: str
    review_status: str
    missing_steps: list[str] = Field(default_factory=list,
                                     description="review steps not recorded as done yet")
    review_deadline: datetime | None
    exception_until: datetime | None
    deactivation_scheduled_at: datetime | None
    state: str
    deactivated_at: datetime | None
    deactivation_reason: str | None
    keep_confirmed_at: datetime | None
    access: AccessOut
    needs_attention: bool
    actions: list[str]


class ReportOut(BaseModel):
    integration_id: uuid.UUID
    plan_id: uuid.UUID | None
    reported_by: str
    message: str
    reported_at: datetime


class ExceptionRequestIn(Input):
    """A plan admin's request for an exception: why the integration must keep working."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"message": "Our payroll export runs on it until the vendor finishes its review."}]})

    message: str = Field(min_length=1, max_length=2000)


class ExceptionRequestOut(BaseModel):
    integration_id: uuid.UUID
    integration_name: str
    plan_id: uuid.UUID | None
    requested_by: str
    message: str
    requested_at: datetime


class ExceptionRefusalIn(Input):
    model_config = ConfigDict(extra="forbid")

    plan_id: uuid.UUID
    note: str | None = Field(default=None, max_length=500)


class DPoPBoundIn(Input):
    model_config = ConfigDict(extra="forbid",
                              json_schema_extra={"examples": [{"dpop_bound_access_tokens": True}]})

    dpop_bound_access_tokens: StrictBool
