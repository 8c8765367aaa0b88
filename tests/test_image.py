"""The Dockerfile's steps, run here without a container engine: only the files it copies, the
package installed from them, then its command (migrate, then serve) in its working directory,
with its environment. What this cannot show is the base image and the user switch; what it does
show is that the copied files are enough for a service that migrates, serves and answers."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import httpx2

from tests.gateway.processes import free_port, stop, wait_until_up

ROOT = Path(__file__).resolve().parent.parent


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile as (instruction, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's build stages, each as its instructions."""
    found: list[list[tuple[str, str]]] = []
    for word, arg in instructions():
        if word == "FROM":
            found.append([])
        if found:
            found[-1].append((word, arg))
    return found


def test_the_image_is_built_in_stages_from_locked_dependencies() -> None:
    build, final = stages()
    assert ":" in build[0][1].split()[0] and "latest" not in build[0][1]  # a pinned base
    assert any(w == "RUN" and "--requirement requirements.lock" in a for w, a in build)
    assert not any(w == "RUN" and "pip install" in a for w, a in final)  # nothing built there
    words = [w for w, _ in final]
    assert "USER" in words and words.index("USER") > max(
        i for i, w in enumerate(words) if w == "COPY")  # everything copied stays root's
    assert "HEALTHCHECK" in words and "VOLUME" in words
    locked = (ROOT / "requirements.lock").read_text().splitlines()
    assert all("==" in line for line in locked if line and not line.startswith("#"))


def test_the_images_files_install_migrate_and_serve(tmp_path: Path) -> None:
    final = stages()[-1]
    [workdir] = [arg for word, arg in final if word == "WORKDIR"]
    [volume] = [json.loads(arg)[0] for word, arg in final if word == "VOLUME"]
    here = tmp_path / "image"  # stands for WORKDIR
    data = tmp_path / "volume"  # stands for the volume
    data.mkdir()
    env: dict[str, str] = {}
    for stage in stages():
        for word, arg in stage:
            if word == "COPY" and not arg.startswith("--from"):
                *sources, _target = shlex.split(arg)
                for source in sources:
                    if (ROOT / source).is_dir():
                        shutil.copytree(ROOT / source, here / source,
                                        ignore=shutil.ignore_patterns("__pycache__"))
                    else:
                        here.mkdir(parents=True, exist_ok=True)
                        shutil.copy(ROOT / source, here / source)
    for word, arg in final:
        if word == "ENV":
            for pair in shlex.split(arg):
                key, _, value = pair.partition("=")
                if key != "PATH":
                    env[key] = value.replace(workdir, str(here)).replace(volume, str(data))
    [command] = [json.loads(arg) for word, arg in final if word == "CMD"]
    [check] = [arg for word, arg in final if word == "HEALTHCHECK"]
    check = json.loads(check.split("CMD", 1)[1].strip())

    # `RUN pip install .`, into a folder of its own; its dependencies are this environment's.
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--isolated", "--quiet", "--no-deps",
                    "--no-build-isolation", "--no-index", "--target", str(site), str(here)],
                   check=True, cwd=here)
    assert (site / "app" / "oauth2" / "templates" / "consent.html").is_file()
    port = free_port()
    # The image's environment, not this one's settings (only what finds programs and locale).
    outside = {k: v for k, v in os.environ.items() if not k.startswith(("TESSERA_", "PYTHON"))}
    run_env = {**outside, **env, "PYTHONPATH": str(site),
               "PATH": f"{site / 'bin'}{os.pathsep}{os.environ['PATH']}",
               "TESSERA_ISSUER": f"http://127.0.0.1:{port}"}
    where = subprocess.run([sys.executable, "-c", "import app; print(app.__file__)"],
                           env=run_env, cwd=tmp_path, capture_output=True, text=True, check=True)
    assert where.stdout.strip().startswith(str(site)), where.stdout  # not this checkout

    assert command[:2] == ["sh", "-c"]
    script = command[2].replace("0.0.0.0", "127.0.0.1").replace("8000", str(port))
    log = tmp_path / "image.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(["sh", "-c", script], cwd=here, env=run_env, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_up(f"{base}/healthz", proc, log, timeout=60)
        assert httpx2.get(f"{base}/healthz").status_code == 200
        metadata = httpx2.get(f"{base}/.well-known/oauth-authorization-server").json()
        assert metadata["token_endpoint"] == f"{base}/oauth2/token"
        # The consent screen's templates came with the package.
        r = httpx2.get(f"{base}/oauth2/authorize", params={"client_id": "tc_unknown"})
        assert r.status_code == 400 and "text/html" in r.headers["content-type"], r.text
        # The HEALTHCHECK, as the engine runs it: ready.
        probe = subprocess.run([sys.executable, *[a.replace("8000", str(port))
                                                  for a in check[1:]]],
                               env=run_env, capture_output=True, timeout=30, check=False)
        assert probe.returncode == 0, probe.stderr
    finally:
        stop(proc)
    # The database the image's environment names was made by the migration, in the volume.
    database = Path(env["TESSERA_DATABASE_URL"].split("///", 1)[1])
    assert database.is_file() and database.is_relative_to(data)
