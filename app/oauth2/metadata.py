"""RFC 8414 authorization server metadata, validated by Authlib's model of it."""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from fastapi import Request

from app.api.responses import JSON
from app.api.routing import api_router
from app.config import Settings
from app.oauth2 import dpop, scopes

router = api_router(tags=["oauth2"])

AUTH_METHODS = ["client_secret_basic", "client_secret_post"]


def metadata(settings: Settings) -> dict[str, Any]:
    base = settings.issuer.rstrip("/")
    doc = AuthorizationServerMetadata({
        "issuer": base,
        "authorization_endpoint": f"{base}/oauth2/authorize",
        "token_endpoint": f"{base}/oauth2/token",
        "introspection_endpoint": f"{base}/oauth2/introspect",
        "revocation_endpoint": f"{base}/oauth2/revoke",
        "scopes_supported": list(scopes.CATALOGUE),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "token_endpoint_auth_methods_supported": [*AUTH_METHODS, "none"],
        "introspection_endpoint_auth_methods_supported": AUTH_METHODS,
        "revocation_endpoint_auth_methods_supported": [*AUTH_METHODS, "none"],
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": True,
        "service_documentation": f"{base}/docs",
        "dpop_signing_alg_values_supported": list(dpop.ALGORITHMS),
    })
    doc.validate()
    return dict(doc)


@router.get("/.well-known/oauth-authorization-server", response_model=dict[str, Any],
            summary="Authorization server metadata (RFC 8414)")
async def metadata_endpoint(request: Request) -> JSON:
    # Built and validated once at start-up (app.main): a bad issuer fails there, not here.
    return JSON(request.app.state.metadata, headers={"Cache-Control": "public, max-age=300"})
