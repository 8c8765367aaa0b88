"""The OpenAPI document, as accurate as the API: each success response's model, the error
shapes with the codes every operation can answer, the security schemes (so `/docs` has its
Authorize button), stable operation ids (the handlers' names) and the form bodies of the OAuth
endpoints, which read their own forms. `tests/api/test_fuzz.py` holds the API to it
(Schemathesis: response schema and status code conformance)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field


class Error(BaseModel):
    """The API's one error shape. Some codes add fields (`details`, `missing`, `rule`,
    `deadline`, `retry_after`, `required_scope`)."""

    model_config = ConfigDict(extra="allow", json_schema_extra={
        "examples": [{"error": "admin_required",
                      "message": "only a system admin of this plan may do this"}]})

    error: str = Field(description="a stable machine-readable code")
    message: str = Field(description="for people")


class OAuthError(BaseModel):
    """RFC 6749 §5.2."""

    model_config = ConfigDict(extra="allow", json_schema_extra={
        "examples": [{"error": "invalid_grant",
                      "error_description": "the refresh token was already used; its grant "
                                           "is revoked"}]})

    error: str
    error_description: str | None = None


class TokenResponse(BaseModel):
    """RFC 6749 §5.1."""

    access_token: str
    token_type: str = Field(examples=["Bearer"])
    expires_in: int
    scope: str
    refresh_token: str | None = None


class Introspection(BaseModel):
    """RFC 7662 §2.2: `active` alone for a token that is not (or may not be seen)."""

    active: bool
    scope: str | None = None
    client_id: str | None = None
    sub: str | None = None
    token_type: str | None = None
    exp: int | None = None
    iat: int | None = None
    plan_id: str | None = None
    token_kind: str | None = None


class GatewayPass(BaseModel):
    """The gateway check's answer when the token passes (identity also in `X-Tessera-*`)."""

    active: bool
    subject: str
    plan: str
    scopes: str
    token_kind: str
    client: str | None = None
    expires_at: str | None = None


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str = Field(examples=["ready"])
    checks: dict[str, str]


_V1_ERRORS = {
    "400": "malformed JSON, or a value the store refuses",
    "401": "no credentials, or unknown, malformed, revoked or expired ones "
           "(`WWW-Authenticate: Bearer`)",
    "403": "credentials that may not do this (admin, scope, operator, own credentials, "
           "refused integration)",
    "404": "no such resource (another plan's look the same)",
    "409": "conflicts with the current state",
    "413": "the body is too large",
    "415": "the body is not JSON",
    "422": "the request is not valid",
    "429": "too many failed attempts (`Retry-After`)",
    "503": "the database cannot be had: retry (`Retry-After`)",
}
_OAUTH_ERRORS = {
    "400": "RFC 6749 §5.2 error",
    "401": "client authentication failed (`WWW-Authenticate: Basic`)",
    "403": "the client may not do this",
    "413": "the body is too large",
    "429": "too many failed client authentications: `slow_down` (`Retry-After`)",
    "503": "`temporarily_unavailable`: retry (`Retry-After`)",
}
_CLIENT_AUTH = [{"clientBasic": []}, {}]  # {}: client_secret_post, or a public client


def _form(properties: dict[str, str], required: list[str]) -> dict[str, Any]:
    return {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": {
        "type": "object", "required": required,
        "properties": {k: {"type": "string", "description": v} for k, v in properties.items()},
    }}}}


_FORMS = {
    "/oauth2/token": _form({
        "grant_type": "authorization_code, refresh_token or client_credentials",
        "code": "authorization_code", "code_verifier": "authorization_code (PKCE)",
        "redirect_uri": "authorization_code, when the authorization request carried it",
        "refresh_token": "refresh_token", "scope": "narrower than granted",
        "plan_id": "client_credentials, when installed in several plans",
        "client_id": "client_secret_post or a public client",
        "client_secret": "client_secret_post"}, ["grant_type"]),
    "/oauth2/introspect": _form({"token": "the token", "token_type_hint": "ignored",
                                 "client_id": "client_secret_post",
                                 "client_secret": "client_secret_post"}, ["token"]),
    "/oauth2/revoke": _form({"token": "the token", "token_type_hint": "ignored",
                             "client_id": "client_secret_post or a public client",
                             "client_secret": "client_secret_post"}, ["token"]),
}
_PUBLIC = {"/.well-known/oauth-authorization-server", "/healthz", "/readyz", "/metrics",
           "/openapi.json"}


def operation_id(route: APIRoute) -> str:
    """Stable ids: the handler's name."""
    return route.name


def install(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def document(app: FastAPI) -> dict[str, Any]:
    spec = get_openapi(title=app.title, version=app.version, summary=app.summary,
                       description=app.description, routes=app.routes)
    components = spec.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for model in (Error, OAuthError):
        schemas[model.__name__] = model.model_json_schema(ref_template="#/components/schemas/"
                                                          "{model}")
    components["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer",
                   "description": "a personal, integration, OAuth access or operator token"},
        "basic": {"type": "http", "scheme": "basic",
                  "description": "a user's email and password (a first personal token)"},
        "clientBasic": {"type": "http", "scheme": "basic",
                        "description": "client_secret_basic: client id and secret"},
    }
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            oauth = path.startswith("/oauth2/")
            if path in _PUBLIC:
                op["security"] = []
            elif oauth:
                op["security"] = _CLIENT_AUTH
            elif path == "/v1/me/tokens" and method == "post":
                op["security"] = [{"bearer": []}, {"basic": []}]
            else:
                op["security"] = [{"bearer": []}]
            if path in _FORMS and method == "post":
                op["requestBody"] = _FORMS[path]
            if path in _PUBLIC:
                continue
            ref = {"$ref": "#/components/schemas/" + ("OAuthError" if oauth else "Error")}
            for code, text in (_OAUTH_ERRORS if oauth else _V1_ERRORS).items():
                response = op["responses"].setdefault(code, {"description": text})
                if response.get("description") in (None, "", "Validation Error"):
                    response["description"] = text
                response["content"] = {"application/json": {"schema": ref}}
    return spec
