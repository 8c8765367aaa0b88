"""Real processes for the gateway tests: Tessera served by its CLI, nginx, an echo upstream."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx2

ROOT = Path(__file__).resolve().parents[2]
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, proc: subprocess.Popen, log: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx2.HTTPError):
            if httpx2.get(url, timeout=1).status_code < 500:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextlib.contextmanager
def tessera(database_url: str, folder: Path, name: str = "tessera",
            **settings: str) -> Iterator[str]:
    """`tessera serve` in a subprocess, as a user runs it; yields its base URL."""
    port = free_port()
    env = {**os.environ, "TESSERA_DATABASE_URL": database_url, "TESSERA_LOG_LEVEL": "info",
           "TESSERA_ISSUER": f"http://127.0.0.1:{port}",
           # A test machine shared by many processes can be slow: the tests that are not about
           # timeouts must not meet them (the hang test sets its own).
           "TESSERA_DB_STATEMENT_TIMEOUT_SECONDS": "10",
           **{f"TESSERA_{k.upper()}": v for k, v in settings.items()}}
    log = folder / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{base}/healthz", proc, log)
        yield base
    finally:
        stop(proc)


class _Echo(BaseHTTPRequestHandler):
    """The protected upstream: answers with the identity headers the gateway forwarded."""

    server: _EchoServer

    def _answer(self) -> None:
        self.server.paths.append(self.path)
        seen = {k.lower(): v for k, v in self.headers.items() if k.lower().startswith("x-")}
        body = json.dumps({"path": self.path, "method": self.command, "headers": seen}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_DELETE = _answer  # noqa: N815

    def log_message(self, *_args: object) -> None:
        pass


class _EchoServer(ThreadingHTTPServer):
    paths: list[str]

    @property
    def port(self) -> int:
        return self.server_address[1]


@contextlib.contextmanager
def echo_upstream() -> Iterator[_EchoServer]:
    server = _EchoServer(("127.0.0.1", 0), _Echo)
    server.paths = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def nginx_config(folder: Path, *, port: int, tessera: str, upstream: int) -> str:
    """The configuration of docs/gateway.md (its `server` part), with this test's ports and a
    private prefix: pid, logs and temp paths all in `folder`."""
    doc = (ROOT / "docs" / "gateway.md").read_text()
    server = doc.split("<!-- nginx-server-begin -->")[1].split("<!-- nginx-server-end -->")[0]
    server = server.split("```nginx\n", 1)[1].rsplit("```", 1)[0]
    server = (server.replace("127.0.0.1:8000", tessera.removeprefix("http://"))
                    .replace("127.0.0.1:9000", f"127.0.0.1:{upstream}")
                    .replace("listen 80;", f"listen 127.0.0.1:{port};"))
    user = "user root;\n" if os.geteuid() == 0 else ""
    temp = "\n".join(f"    {kind}_temp_path {folder}/{kind};"
                     for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""{user}worker_processes 1;
daemon off;
pid {folder}/nginx.pid;
error_log {folder}/nginx-error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {folder}/nginx-access.log;
{temp}
{server}
}}
"""


@contextlib.contextmanager
def nginx(folder: Path, *, tessera: str, upstream: int) -> Iterator[str]:
    assert NGINX is not None
    port = free_port()
    conf = folder / "nginx.conf"
    conf.write_text(nginx_config(folder, port=port, tessera=tessera, upstream=upstream))
    check = subprocess.run([NGINX, "-t", "-p", str(folder), "-e", str(folder / "nginx-error.log"),
                            "-c", str(conf)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    log = folder / "nginx-error.log"
    proc = subprocess.Popen([NGINX, "-p", str(folder), "-e", str(log), "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{base}/api/", proc, log)  # 401 from the check: nginx and Tessera up
        yield base
    finally:
        stop(proc)
