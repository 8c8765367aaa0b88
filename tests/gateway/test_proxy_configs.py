"""The Envoy and Traefik configurations of docs/gateway.md, as written there, without running
either proxy (neither is a Debian, PyPI or npm package; nginx's is run for real in
test_nginx.py):

- the Envoy configuration is read with Envoy's own API definitions (`envoy-data-plane`, the
  data-plane API's messages): a misspelt field, an unknown enum value or a malformed duration
  fails, in the nested filter configurations too;
- what each proxy sends Tessera is sent to Tessera, and what it then lets through is checked
  against the configuration: the identity headers reach the upstream (and a client's own copies
  are dropped), a refusal's status, challenge and rule reach the client.

What this cannot show is what the proxies check beyond their API's shape (a required field
left out, say): Envoy's own validation is not run.
"""

from __future__ import annotations

import importlib
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from envoy_data_plane.envoy.config.bootstrap.v3 import Bootstrap
from sqlalchemy import update

from app.db import make_sessionmaker, session_scope
from app.integrations.models import Installation
from app.tokens import cache
from tests.gateway.test_check import bearer, custom_integration_token
from tests.helpers import set_period

DOC = Path(__file__).resolve().parents[2] / "docs" / "gateway.md"


def config_of(section: str) -> str:
    """The first YAML block after the heading `section` in docs/gateway.md."""
    text = DOC.read_text()
    start = text.index("```yaml\n", text.index(f"\n## {section}")) + len("```yaml\n")
    return text[start:text.index("```", start)]


def envoy() -> Bootstrap:
    text = config_of("Envoy")
    for type_url in set(re.findall(r"type\.googleapis\.com/([\w.]+)", text)):
        # Registers the message of each typed_config, so that it is read (and checked) too.
        importlib.import_module("envoy_data_plane." + type_url.rsplit(".", 1)[0])
    return Bootstrap.from_dict(yaml.safe_load(text))


def envoy_filters() -> dict[str, Any]:
    [listener] = envoy().static_resources.listeners
    [chain] = listener.filter_chains
    [manager] = chain.filters
    return {f.name: f.typed_config.unpack() for f in manager.typed_config.unpack().http_filters}


def canonical(header: str) -> str:
    """A header name as Go's net/http canonicalises it (`x-tessera-plan` → `X-Tessera-Plan`)."""
    return "-".join(part.capitalize() for part in header.split("-"))


def matches(patterns: list[Any], header: str) -> bool:
    """Envoy's StringMatcher list, as ext_authz applies it to (lower-case) header names."""
    return any((p.exact and header == p.exact) or (p.prefix and header.startswith(p.prefix))
               for p in patterns)


def test_the_envoy_configuration_is_valid_for_envoys_api() -> None:
    filters = envoy_filters()
    # The client's copies go before the check; the router is last.
    assert list(filters) == ["envoy.filters.http.header_mutation",
                             "envoy.filters.http.ext_authz", "envoy.filters.http.router"]
    authz = filters["envoy.filters.http.ext_authz"]
    assert authz.failure_mode_allow is False  # fail closed
    assert authz.status_on_error.code.value == 503
    assert authz.http_service.path_prefix == "/v1/gateway/check"
    clusters = {c.name for c in envoy().static_resources.clusters}
    assert authz.http_service.server_uri.cluster in clusters
    [listener] = envoy().static_resources.listeners
    manager = listener.filter_chains[0].filters[0].typed_config.unpack()
    routes = manager.route_config.virtual_hosts[0].routes
    assert {r.route.cluster for r in routes} <= clusters
    # `x_tessera_subject` is refused, not passed on to an upstream that may read it as a dash.
    assert manager.common_http_protocol_options.headers_with_underscores_action.name == \
        "REJECT_REQUEST"


def test_a_misspelt_envoy_field_would_fail_the_reading() -> None:
    """The check above can fail: Envoy's definitions refuse what Envoy would refuse."""
    text = config_of("Envoy").replace("path_prefix:", "path_prefx:")
    for type_url in set(re.findall(r"type\.googleapis\.com/([\w.]+)", text)):
        importlib.import_module("envoy_data_plane." + type_url.rsplit(".", 1)[0])
    with pytest.raises(KeyError, match="path_prefx"):
        Bootstrap.from_dict(yaml.safe_load(text))


async def test_what_envoy_sends_and_lets_through(client, plan, database, clock) -> None:
    filters = envoy_filters()
    authz = filters["envoy.filters.http.ext_authz"]
    service = authz.http_service
    added = {h.key: h.value for h in service.authorization_request.headers_to_add}
    dropped = {m.remove for m in filters["envoy.filters.http.header_mutation"].mutations
               .request_mutations}
    upstream = service.authorization_response.allowed_upstream_headers.patterns
    to_client = service.authorization_response.allowed_client_headers.patterns

    await set_period(client, plan, 30, "days")  # so the answer names an expiry too
    integ_id, _client_id, token = await custom_integration_token(client, plan)
    # Envoy: the original method and path after `path_prefix`, the Authorization header, and
    # the headers the configuration adds.
    r = await client.post(f"{service.path_prefix}/api/orders/7",
                          headers={**bearer(token), **added})
    assert r.status_code == 200, r.text
    identity = {h for h in r.headers if h.startswith("x-tessera-")}
    assert identity >= {"x-tessera-subject", "x-tessera-plan", "x-tessera-client",
                        "x-tessera-scopes", "x-tessera-expires-at", "x-tessera-token-kind"}
    assert all(matches(upstream, h) for h in identity)  # set on the upstream request
    assert identity <= dropped  # and a client's own copies never get there

    r = await client.get(f"{service.path_prefix}/api/orders/7",
                         headers={**bearer(token), "x-required-scope": "profile"})
    assert r.status_code == 403 and matches(to_client, "www-authenticate")

    async with session_scope(make_sessionmaker(database.engine)) as session:
        await session.execute(update(Installation)
                              .where(Installation.integration_id == uuid.UUID(integ_id))
                              .values(state="deactivated"))
        await cache.changed(session, integration_id=uuid.UUID(integ_id))
    r = await client.get(f"{service.path_prefix}/api/orders/7",
                         headers={**bearer(token), **added})
    assert r.status_code == 403
    refused = {h for h in r.headers if h.startswith("x-tessera-")}
    assert "x-tessera-refusal-rule" in refused
    assert all(matches(to_client, h) for h in refused | {"www-authenticate", "content-type"})
    assert refused <= dropped  # a client's copies of these never reach the upstream either


async def test_what_traefik_sends_and_lets_through(client, plan) -> None:
    middlewares = yaml.safe_load(config_of("Traefik"))["http"]["middlewares"]
    await set_period(client, plan, 30, "days")
    _integ_id, _client_id, token = await custom_integration_token(client, plan)
    for name, scope, status in (("tessera-auth", None, 200),
                                ("tessera-auth-write", "data:write", 403)):
        forward = middlewares[name]["forwardAuth"]
        address = forward["address"]
        assert address.startswith("http://127.0.0.1:8000/v1/gateway/check")
        # Traefik: a GET to the address, with the original request's headers.
        r = await client.get(address.removeprefix("http://127.0.0.1:8000"),
                             headers={**bearer(token), "X-Forwarded-Method": "POST",
                                      "X-Forwarded-Uri": "/api/write/orders"})
        assert r.status_code == status, (name, r.text)
        if scope is None:
            identity = [h for h in r.headers if h.lower().startswith("x-tessera-")]
            assert len(identity) == 6
            # Copied onto the forwarded request, after the client's own copies are stripped.
            # Traefik matches the regex as written (case-sensitive, Go's regexp) against
            # canonical header names, as Go's net/http holds them.
            regex = re.compile(forward["authResponseHeadersRegex"])
            assert all(regex.search(canonical(h)) for h in identity), identity
        else:
            assert r.json()["error"] == "insufficient_scope"
