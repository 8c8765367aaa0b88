"""What an operator sees of `tessera serve`: JSON log lines (time, level, logger, the request's
id), Tessera's own lines at the level set, an `X-Request-ID` taken or made and returned, an
access log when asked, and Prometheus metrics that count the hot paths (answered in front of
the application) like every other request, optionally behind a token."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx2
import pytest

from tests.gateway.processes import ROOT, tessera

pytestmark = pytest.mark.asyncio


@pytest.fixture(scope="module")
def served(tmp_path_factory):  # noqa: ANN201
    folder = tmp_path_factory.mktemp("ops")
    url = f"sqlite+aiosqlite:///{folder}/ops.db"
    env = {**os.environ, "TESSERA_DATABASE_URL": url}
    subprocess.run([sys.executable, "-m", "app.cli", "migrate"], cwd=ROOT, env=env, check=True,
                   capture_output=True, timeout=120)
    boot = json.loads(subprocess.run(
        [sys.executable, "-m", "app.cli", "bootstrap", "--plan", "Ops", "--admin-email",
         "ops@example.com"], cwd=ROOT, env=env, check=True, capture_output=True, text=True,
        timeout=120).stdout)
    with tessera(url, folder, "ops", log_level="debug", access_log="true",
                 metrics_token="scrape-me") as base:
        yield {"base": base, "log": folder / "ops.log", "token": boot["admin_token"]}


def lines(log) -> list[dict]:  # noqa: ANN001
    out = []
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def logged(log, match) -> list[dict]:  # noqa: ANN001
    """The log's entries once one matches: a line is written when its request ends, which a
    busy server may do a moment after the client has its answer."""
    deadline = time.monotonic() + 10
    entries = lines(log)
    while not any(match(e) for e in entries) and time.monotonic() < deadline:
        time.sleep(0.05)
        entries = lines(log)
    return entries


async def test_every_line_is_json_and_carries_the_request_id(served) -> None:
    async with httpx2.AsyncClient(base_url=served["base"]) as http:
        r = await http.get("/v1/gateway/check", headers={
            "Authorization": f"Bearer {served['token']}", "X-Request-ID": "trace-42.a"})
        assert r.status_code == 200 and r.headers["x-request-id"] == "trace-42.a"
        r = await http.get("/v1/me", headers={"Authorization": f"Bearer {served['token']}",
                                              "X-Request-ID": "not<ok>" * 3})
        made = r.headers["x-request-id"]
        assert len(made) == 32 and "<" not in made  # an unusable one is replaced
    entries = logged(served["log"], lambda e: e.get("request_id") == made
                     and e.get("route") == "/v1/me")
    assert entries and all({"time", "level", "logger", "message"} <= set(e) for e in entries)
    access = [e for e in entries if e["logger"] == "tessera.access"]
    [check] = [e for e in access if e.get("request_id") == "trace-42.a"]
    assert check["route"] == "/v1/gateway/check" and check["status"] == 200
    assert check["duration_ms"] >= 0
    assert any(e.get("request_id") == made and e["route"] == "/v1/me" for e in access)
    assert served["token"] not in served["log"].read_text()


async def test_security_events_are_logged_without_secrets(served) -> None:
    async with httpx2.AsyncClient(base_url=served["base"]) as http:
        r = await http.post("/v1/me/tokens", json={}, auth=("ops@example.com", "wrong-guess-x"))
        assert r.status_code == 401
    entries = logged(served["log"], lambda e: e.get("event") == "sign_in_failed")
    [event] = [e for e in entries if e.get("event") == "sign_in_failed"]
    # Tessera's own INFO lines reach the log under `serve`, not only uvicorn's.
    assert (event["logger"], event["level"]) == ("tessera.users", "info")
    assert event["via"] == "basic" and event["account"] and "wrong-guess-x" not in json.dumps(
        lines(served["log"]))


async def test_metrics_count_the_hot_paths_and_need_the_token(served) -> None:
    async with httpx2.AsyncClient(base_url=served["base"]) as http:
        for _ in range(3):
            await http.get("/v1/gateway/check",
                           headers={"Authorization": f"Bearer {served['token']}"})
        assert (await http.get("/metrics")).status_code == 401
        r = await http.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    counted = [line for line in text.splitlines() if line.startswith(
        'tessera_http_request_duration_seconds_count{method="GET",route="/v1/gateway/check",'
        'status="200"}')]
    assert counted and float(counted[0].split()[-1]) >= 3, text[:2000]
    for name in ("tessera_db_pool_connections", "tessera_outbox_pending",
                 "tessera_outbox_oldest_pending_age_seconds", "tessera_batch_size",
                 "tessera_throttle_refusals_total", "tessera_cache_lookups_total",
                 "tessera_worker_cycle_seconds", "tessera_event_loop_lag_seconds_count"):
        assert name in text, name


async def test_the_loop_histogram_exposes_what_prometheus_clients_would() -> None:
    """The request histogram and cache counter are counted in plain integers
    (`app.ops.metrics`); scraped, they read exactly as prometheus-client's own would."""
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    from app.ops.metrics import LoopCounter, LoopHistogram

    bounds = (0.001, 0.01, 0.1, 1.0)
    theirs_registry, ours_registry = CollectorRegistry(), CollectorRegistry()
    theirs = Histogram("h_seconds", "doc", ["route"], buckets=bounds, registry=theirs_registry)
    their_counter = Counter("c", "doc", ["kind"], registry=theirs_registry)
    ours = LoopHistogram("h_seconds", "doc", ["route"], bounds)
    our_counter = LoopCounter("c", "doc", ["kind"])
    ours_registry.register(ours)
    ours_registry.register(our_counter)
    for value in (0.0005, 0.001, 0.002, 0.01, 0.5, 1.0, 3.0, 0.05):
        for route in ("/a", "/b") if value < 1 else ("/a",):
            theirs.labels(route).observe(value)
            ours.observe((route,), value)
    for kind in ("hit", "hit", "miss"):
        their_counter.labels(kind).inc()
        our_counter.inc(kind)

    def lines(registry: CollectorRegistry) -> list[str]:
        return sorted(line for line in generate_latest(registry).decode().splitlines()
                      if not line.startswith("#") and "_created" not in line)

    assert lines(ours_registry) == lines(theirs_registry)


async def test_the_event_loop_lag_is_measured_when_the_loop_is_held() -> None:
    """A synchronous step that holds the event loop (here 0.4 s) shows as one late timer: the
    time every request in flight waited, whatever its own handling cost."""
    import asyncio

    from app.ops.metrics import LOOP_LAG, watch_event_loop

    def late(over: float) -> int:
        """Samples later than `over` seconds (a bucket counts values up to its bound)."""
        child = LOOP_LAG.children.get((), [0] * (len(LOOP_LAG.bounds) + 2))
        return sum(child[i] for i, bound in enumerate(LOOP_LAG.bounds) if bound > over) \
            + child[len(LOOP_LAG.bounds)]

    before = late(0.25)
    watcher = asyncio.create_task(watch_event_loop(0.05))
    try:
        await asyncio.sleep(0.01)
        time.sleep(0.4)  # noqa: ASYNC251 - the point: the loop held, no timer runs meanwhile
        await asyncio.sleep(0.2)
    finally:
        watcher.cancel()
    assert late(0.25) == before + 1
