"""The `tessera` command line: migrate and bootstrap a fresh database, as a newcomer does."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from app import credentials


def run(args: list[str], db: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TESSERA_DATABASE_URL": f"sqlite+aiosqlite:///{db}"}
    return subprocess.run([sys.executable, "-m", "app.cli", *args], env=env, text=True,
                          capture_output=True, timeout=120, check=False)


def test_migrate_bootstrap_only_when_empty(tmp_path) -> None:
    db = tmp_path / "first.db"
    assert run(["migrate"], db).returncode == 0
    first = run(["bootstrap", "--plan", "First", "--admin-email", "Admin@Example.com",
                 "--if-empty", "--howto"], db)
    assert first.returncode == 0, first.stderr
    out = json.loads(first.stdout)
    assert set(out) >= {"plan_id", "admin_user_id", "admin_token", "admin_password"}
    assert credentials.kind_of(out["admin_token"]) is credentials.SecretKind.personal
    assert "curl" in first.stderr and out["plan_id"] in first.stderr
    again = run(["bootstrap", "--plan", "Second", "--admin-email", "b@example.com",
                 "--if-empty"], db)
    assert again.returncode == 0 and again.stdout == ""
    op = run(["create-operator", "--email", "ops@example.com"], db)
    assert op.returncode == 0, op.stderr
    assert json.loads(op.stdout)["operator_token"].startswith("tso_")
