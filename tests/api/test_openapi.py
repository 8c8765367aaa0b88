"""The OpenAPI document describes the API as it is (its truth is held by Schemathesis in
tests/api/test_fuzz.py), and the documentation pages work without the internet."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.asyncio


async def test_the_document_has_models_errors_security_and_stable_ids(client) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert set(spec["components"]["securitySchemes"]) == {"bearer", "basic", "clientBasic"}
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            assert re.fullmatch(r"[a-z_]+", op["operationId"]), op["operationId"]
            for code, response in op["responses"].items():
                schema = response.get("content", {}).get("application/json", {}).get("schema")
                if code.startswith("2") and code != "204" and path != "/metrics":
                    assert schema not in (None, {}, {"type": "string"}), (method, path, code)
            if path.startswith("/v1/"):
                assert {"401", "403", "404", "422", "503"} <= set(op["responses"]), path
                assert op["responses"]["404"]["content"]["application/json"]["schema"] == \
                    {"$ref": "#/components/schemas/Error"}
    token = spec["paths"]["/oauth2/token"]["post"]
    form = token["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]
    assert "grant_type" in form["required"] and "code_verifier" in form["properties"]
    assert token["responses"]["200"]["content"]["application/json"]["schema"] == \
        {"$ref": "#/components/schemas/TokenResponse"}
    assert spec["paths"]["/v1/me/tokens"]["post"]["security"] == [{"bearer": []},
                                                                   {"basic": []}]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_the_documentation_needs_no_cdn(client, page) -> None:
    html = (await client.get(page)).text
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets and all(a.startswith("/") for a in assets), assets
    for asset in assets:
        assert (await client.get(asset)).status_code == 200, asset


async def test_every_request_example_is_a_valid_request(client) -> None:
    """The examples shown in /docs for request bodies are accepted by the models that read
    them: a reader who copies one gets past validation."""
    from app.integrations.schemas import (
        ExceptionIn,
        IntegrationIn,
        IntegrationTokenIn,
        OperatorIntegrationIn,
        ReportIn,
    )
    from app.plans.schemas import PeriodIn
    from app.tokens.schemas import PersonalTokenIn
    from app.users.schemas import UserIn

    schemas = (await client.get("/openapi.json")).json()["components"]["schemas"]
    models = [PeriodIn, PersonalTokenIn, UserIn, IntegrationIn, OperatorIntegrationIn,
              IntegrationTokenIn, ExceptionIn, ReportIn]
    for model in models:
        examples = schemas[model.__name__].get("examples")
        assert examples, model.__name__
        for example in examples:
            model.model_validate(example)
