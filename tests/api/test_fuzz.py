"""No input yields a 5xx (rule 12), and the OpenAPI document is true: Schemathesis generates
requests from the whole document, valid and invalid, and sends them to `tessera serve` (a real
process, on SQLite and on PostgreSQL) as a plan admin and as a platform operator, path
parameters pointing at real resources half of the time. Every answer must be below 500, with a
status, a body and a content type the document lists for it."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import PG_HOST, REQUIRE_ALL
from tests.gateway.processes import ROOT, tessera


def _cli(env: dict[str, str], *args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=True, timeout=120)
    return json.loads(out.stdout)


def _pg(*args: str) -> bool:
    return subprocess.run(["psql", PG_HOST, "-qc", *args], capture_output=True,
                          timeout=30).returncode == 0


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def live(request, tmp_path_factory) -> Iterator[dict]:  # noqa: ANN001
    """A migrated database with a plan, its admin and an operator, served by `tessera serve`."""
    folder = tmp_path_factory.mktemp("fuzz")
    name = None
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{folder}/fuzz.db"
    else:
        name = f"tessera_fuzz_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        if not _pg(f'CREATE DATABASE "{name}"'):
            if REQUIRE_ALL:
                pytest.fail(f"PostgreSQL at {PG_HOST} is required")
            pytest.skip("PostgreSQL not available")
        url = f"{PG_HOST.rsplit('/', 1)[0].replace('postgresql://', 'postgresql+asyncpg://')}/{name}"
    env = {**os.environ, "TESSERA_DATABASE_URL": url}
    try:
        subprocess.run([sys.executable, "-m", "app.cli", "migrate"], cwd=ROOT, env=env,
                       check=True, capture_output=True, timeout=120)
        first = _cli(env, "bootstrap", "--plan", "Fuzz", "--admin-email", "admin@fuzz.example")
        operator = _cli(env, "create-operator", "--email", "ops@fuzz.example")
        with tessera(url, Path(folder)) as base:
            registered = httpx2.post(f"{base}/v1/integrations", json={"name": "Fuzzed"},
                                     headers={"Authorization":
                                              f"Bearer {operator['operator_token']}"})
            assert registered.status_code == 201, registered.text
            yield {"base": base, "plan_id": first["plan_id"],
                   "integration_id": registered.json()["id"],
                   "admin": first["admin_token"], "operator": operator["operator_token"]}
    finally:
        if name:
            _pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def api(live) -> schemathesis.BaseSchema:  # noqa: ANN001
    return schemathesis.openapi.from_url(f"{live['base']}/openapi.json")


def _call(case, live) -> None:  # noqa: ANN001
    for name in ("plan_id", "integration_id"):
        if name in (case.path_parameters or {}) and random.random() < 0.5:  # noqa: S311
            case.path_parameters[name] = live[name]
    token = live["operator"] if case.path.startswith("/v1/integrations") else live["admin"]
    case.call_and_validate(base_url=live["base"], checks=CHECKS,
                           headers={"Authorization": f"Bearer {token}"})


# No 5xx (rule 12), and every answer as documented: its status listed, its body of the
# listed schema, its content type the listed one.
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance,
          content_type_conformance]


def test_no_request_gets_a_server_error(api, live) -> None:  # noqa: ANN001
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) > 20, [o.label for o in operations]
    random.seed(0)
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def fuzz(case) -> None:  # noqa: ANN001
            _call(case, live)

        fuzz()
