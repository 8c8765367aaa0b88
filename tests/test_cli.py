"""The `tessera` command line: migrate and bootstrap a fresh database, as a newcomer does."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from app import credentials
from tests.gateway.processes import ROOT


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


def cli(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], text=True,
                          capture_output=True, timeout=120, check=False,
                          env={**os.environ, **env})


def test_configuration_problems_are_one_line_each_naming_the_variable(tmp_path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/c.db"
    r = cli(["migrate", "--status"], TESSERA_DATABASE_URL=url, TESSERA_LOG_LEVEL="verbose",
            TESSERA_DB_POOL_SIZE="many", TESSERA_DATABSE_URL="oops")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert lines[0] == ("tessera: warning: TESSERA_DATABSE_URL is not a Tessera setting; it is "
                        "ignored (did you mean TESSERA_DATABASE_URL?)")
    assert sorted(line.split(":")[1].strip() for line in lines[1:]) == \
        ["TESSERA_DB_POOL_SIZE", "TESSERA_LOG_LEVEL"]
    assert "Traceback" not in r.stderr
    r = cli(["migrate"], TESSERA_DATABASE_URL="mysql://x/y")
    assert r.returncode == 2 and r.stderr.startswith("tessera: TESSERA_DATABASE_URL: expected")


def test_user_errors_are_one_line_and_a_non_zero_exit(tmp_path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/u.db"
    r = cli(["serve", "--port", "1"], TESSERA_DATABASE_URL=url)
    assert r.returncode == 2 and "run `tessera migrate`" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert cli(["migrate"], TESSERA_DATABASE_URL=url).returncode == 0
    r = cli(["bootstrap", "--plan", "P", "--admin-email", "a@x.io", "--admin-password", "short"],
            TESSERA_DATABASE_URL=url)
    assert r.returncode == 2 and "at least 8 characters" in r.stderr
    assert cli(["create-operator", "--email", "o@x.io"], TESSERA_DATABASE_URL=url).returncode == 0
    r = cli(["create-operator", "--email", "o@x.io"], TESSERA_DATABASE_URL=url)
    assert r.returncode == 2 and r.stderr.strip() == \
        "tessera: an operator with the email o@x.io exists already"
    r = cli(["serve", "--workers", "2"], TESSERA_DATABASE_URL=url)
    assert r.returncode == 2 and "TESSERA_SECRET_KEY is not set" in r.stderr
    r = cli(["migrate"], TESSERA_DATABASE_URL="postgres://postgres@127.0.0.1:9/none")
    assert r.returncode == 1 and r.stderr.startswith("tessera: migrate: the database failed")
    assert len(r.stderr.strip().splitlines()) == 1
    version = cli(["--version"])
    assert version.returncode == 0 and version.stdout.startswith("tessera ")


def test_migrate_reports_its_status_and_goes_down_and_up(tmp_path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/m.db"
    r = cli(["migrate", "--status"], TESSERA_DATABASE_URL=url)
    assert r.returncode == 3 and json.loads(r.stdout)["current"] is None
    assert cli(["migrate"], TESSERA_DATABASE_URL=url).returncode == 0
    status = json.loads(cli(["migrate", "--status"], TESSERA_DATABASE_URL=url).stdout)
    assert status["up_to_date"] is True and status["current"] == status["head"]
    assert cli(["migrate", "--to", "0004"], TESSERA_DATABASE_URL=url).returncode == 0
    assert json.loads(cli(["migrate", "--status"],
                          TESSERA_DATABASE_URL=url).stdout)["current"] == "0004"
    assert cli(["migrate"], TESSERA_DATABASE_URL=url).returncode == 0
    assert cli(["migrate", "--status"], TESSERA_DATABASE_URL=url).returncode == 0


def test_the_default_database_does_not_depend_on_the_working_directory(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TESSERA_DATABASE_URL"}
    env |= {"XDG_DATA_HOME": str(tmp_path / "data"), "PYTHONPATH": str(ROOT)}
    for folder in (tmp_path / "a", tmp_path / "b"):
        folder.mkdir()
        r = subprocess.run([sys.executable, "-m", "app.cli", "migrate", "--status"],
                           cwd=folder, env=env,
                           capture_output=True, text=True, timeout=120, check=False)
        assert json.loads(r.stdout)["database"] == \
            f"sqlite+aiosqlite:///{tmp_path}/data/tessera/tessera.db", r.stderr


def test_the_printed_examples_work_as_pasted(tmp_path) -> None:
    """`bootstrap --howto` prints shell a newcomer pastes: run as printed against `tessera
    serve`, every command succeeds and each answer ends its line."""
    from tests.gateway.processes import free_port, stop, wait_until_up

    port = free_port()
    env = {**os.environ, "TESSERA_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/h.db",
           "TESSERA_ISSUER": f"http://127.0.0.1:{port}"}
    subprocess.run([sys.executable, "-m", "app.cli", "migrate"], env=env, check=True,
                   capture_output=True, timeout=120)
    boot = subprocess.run([sys.executable, "-m", "app.cli", "bootstrap", "--plan", "H",
                           "--admin-email", "h@example.com", "--howto"], env=env, check=True,
                          capture_output=True, text=True, timeout=120)
    script = "\n".join(line[2:] for line in boot.stderr.splitlines() if line.startswith("  "))
    assert "CLIENT_ID" in script and "python3" in script
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/healthz", proc, log)
        ran = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True,
                             text=True, timeout=60, check=False)
    finally:
        stop(proc)
    assert ran.returncode == 0, ran.stderr
    answers = [line for line in ran.stdout.splitlines() if line.startswith("{")]
    assert len(answers) == 6, ran.stdout  # a line each: no answer runs into the next
    assert json.loads(answers[-1])["active"] is True
    assert "HTTP/1.1 200 OK" in ran.stdout  # the gateway check's headers
