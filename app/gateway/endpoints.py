"""`/v1/gateway/check`: forward-auth for nginx `auth_request`, Traefik ForwardAuth and Envoy
`ext_authz` (HTTP service). See docs/gateway.md for their configurations."""

from __future__ import annotations

from fastapi import APIRouter, Request

from app.api.responses import JSON
from app.gateway import service

router = APIRouter(tags=["gateway"])

# Gateways forward the original request's method (nginx `auth_request`, Envoy); all are answered,
# GET is the one documented in OpenAPI.
_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
_OTHER_METHODS = [m for m in _METHODS if m != "GET"]
_RESPONSES = {
    200: {"description": "The token passes; identity in `X-Tessera-*` headers."},
    401: {"description": "No token, or an unknown, malformed, revoked or expired one."},
    403: {"description": "A required scope is missing, or the integration is refused (rule 6)."},
    503: {"description": "The database cannot be reached: fail closed, retry."},
}


async def _check(request: Request, *, query_scope: bool) -> JSON:
    headers = request.headers
    try:
        required = service.required_scopes(
            ",".join(request.query_params.getlist("scope")) if query_scope else None,
            ",".join(headers.getlist("x-required-scope")),
        )
    except service.BadScope as exc:
        return JSON({"error": "invalid_request", "message": str(exc)}, status_code=400)
    state = request.app.state
    decision = await service.decide(headers.get("authorization"), required, state.clock.now(),
                                    cache=state.token_cache, sessionmaker=state.sessionmaker)
    return JSON(decision.body, status_code=decision.status, headers=decision.headers)


@router.get("/v1/gateway/check", responses=_RESPONSES)
@router.api_route("/v1/gateway/check", methods=_OTHER_METHODS, include_in_schema=False)
async def gateway_check(request: Request) -> JSON:
    """Forward-auth. Reads `Authorization: Bearer`; required scopes come from `?scope=` and the
    `X-Required-Scope` header (space- or comma-separated, all required)."""
    return await _check(request, query_scope=True)


@router.api_route("/v1/gateway/check/{original_path:path}", methods=_METHODS,
                  include_in_schema=False)
async def gateway_check_prefixed(request: Request) -> JSON:
    """Envoy `ext_authz` appends the original path (and query) to its `path_prefix`: that query
    is the original request's, so only `X-Required-Scope` names required scopes here."""
    return await _check(request, query_scope=False)
