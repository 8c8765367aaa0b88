"""`/v1/gateway/check`: forward-auth for nginx `auth_request`, Traefik ForwardAuth and Envoy
`ext_authz` (HTTP service). See docs/gateway.md for their configurations."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from app.api.openapi import GatewayPass
from app.api.responses import JSON
from app.api.routing import api_router
from app.gateway import service

router = api_router(tags=["gateway"])

CHECK = "/v1/gateway/check"
# Gateways forward the original request's method (nginx `auth_request`, Envoy): all are answered.
_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
_RESPONSES = {
    200: {"description": "The token passes; identity in `X-Tessera-*` headers."},
    401: {"description": "No token, or an unknown, malformed, revoked or expired one."},
    403: {"description": "A required scope is missing, or the integration is refused (rule 6)."},
    503: {"description": "The database cannot be reached: fail closed, retry."},
}


def dpop_state(state: Any) -> tuple[Any, Any]:  # noqa: ANN401
    """What a DPoP check needs of the application: its proofs' store and its nonces."""
    return state.dpop_replays, state.dpop_nonces


async def gateway_check(request: Request) -> JSON:
    """Forward-auth. Reads `Authorization: Bearer`; required scopes come from `?scope=` and the
    `X-Required-Scope` header (space- or comma-separated, all required). Under
    `/v1/gateway/check/<original path>` (Envoy appends the original path and query to its
    `path_prefix`) the query is the original request's, so only the header names scopes."""
    headers = request.headers
    query = request.scope["query_string"] and "original_path" not in request.path_params
    try:
        required = service.required_scopes(
            ",".join(request.query_params.getlist("scope")) if query else None,
            ",".join(headers.getlist("x-required-scope")),
        )
    except service.BadScope as exc:
        return JSON({"error": "invalid_request", "message": str(exc)}, status_code=400)
    state = request.app.state
    forwarded = service.Forwarded.of(headers.get, request.method,
                                     request.path_params.get("original_path"),
                                     proofs=len(headers.getlist("dpop")))
    decision = await service.decide(headers.get("authorization"), required, state.clock.now(),
                                    cache=state.token_cache,
                                    reader=state.token_batches.reader, forwarded=forwarded,
                                    dpop_state=dpop_state(state))
    return JSON(decision.body, status_code=decision.status, headers=decision.headers)


# The hot path is served by plain Starlette routes: with headers in and headers out there is
# nothing for FastAPI's dependency solving and validation to do, and skipping them roughly halves
# the cost of a check (bench/RESULTS.md). They come first in the router, so they are matched.
router.add_route(CHECK, gateway_check, methods=_METHODS, include_in_schema=False)
router.add_route(CHECK + "/{original_path:path}", gateway_check, methods=_METHODS,
                 include_in_schema=False)
# The same endpoint as documented in OpenAPI (never dispatched: the route above matches first).
router.add_api_route(CHECK, gateway_check, methods=["GET"], responses=_RESPONSES,
                     response_model=GatewayPass,
                     summary="Forward-auth check for API gateways")
