"""Driving a server with wrk: one Lua script per scenario, each request taking the next line of
a data file (a token, or a form body), split between wrk's threads so no line is sent twice
unless the file runs out. `done()` prints the figures as one JSON line."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

_LUA = r"""
local method, path, mode, basic = "%(method)s", "%(path)s", "%(mode)s", "%(basic)s"
local nthreads, datafile = %(threads)d, "%(datafile)s"
local counter, lines = 0, {}
local thread_count = 0

function setup(thread)
  thread:set("tid", thread_count)
  thread_count = thread_count + 1
end

function init(args)
  if datafile ~= "" then
    local i = 0
    for line in io.lines(datafile) do
      if i %% nthreads == tid then table.insert(lines, line) end
      i = i + 1
    end
    if #lines == 0 then  -- fewer lines than threads: every thread sends them all
      for line in io.lines(datafile) do table.insert(lines, line) end
    end
  end
end

function request()
  counter = counter + 1
  local item = lines[((counter - 1) %% math.max(#lines, 1)) + 1]
  if mode == "get" then
    return wrk.format(method, path)
  elseif mode == "bearer" then
    return wrk.format(method, path, {["Authorization"] = "Bearer " .. item})
  elseif mode == "cookie" then
    return wrk.format(method, path, {["Cookie"] = item})
  elseif mode == "dpop" then
    -- "<token> <proof>": a DPoP-bound token, its proof for the request the gateway forwards
    local token, proof = item:match("^(%%S+) (%%S+)$")
    return wrk.format(method, path, {["Authorization"] = "DPoP " .. token, ["DPoP"] = proof,
                                     ["X-Original-Method"] = "GET",
                                     ["X-Forwarded-Proto"] = "https",
                                     ["X-Forwarded-Host"] = "api.example",
                                     ["X-Original-URI"] = "/v2/things"})
  elseif mode == "bearer_json" then
    return wrk.format(method, path, {["Authorization"] = "Bearer " .. item,
                                     ["Content-Type"] = "application/json"},
                      '%(body)s')
  elseif mode == "form" then
    return wrk.format(method, path, {["Authorization"] = "Basic " .. basic,
                                     ["Content-Type"] = "application/x-www-form-urlencoded"},
                      item)
  end
end

%(response)s

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %%d, "duration_us": %%d, "non2xx": %%d, "connect": %%d, "read": %%d, ' ..
    '"write": %%d, "timeout": %%d, "p50_us": %%d, "p90_us": %%d, "p99_us": %%d, ' ..
    '"lines": %%d}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), #lines))
end
"""


# With --show-errors: the first few refusals of each wrk thread, for diagnosis (slows wrk).
_SHOW_ERRORS = r"""
local shown = 0
function response(status, headers, body)
  if status >= 300 and shown < 3 then
    shown = shown + 1
    io.stderr:write("non-2xx " .. status .. " " .. string.sub(body, 1, 200) .. "\n")
  end
end
"""


@dataclass(frozen=True)
class Result:
    requests: int
    seconds: float
    non2xx: int
    socket_errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def run(url: str, *, path: str, method: str = "GET", mode: str = "get", basic: str = "",
        datafile: Path | None = None, seconds: float = 10, connections: int = 64,
        threads: int = 2, workdir: Path, show_errors: bool = False,
        body: str = '{"name":"bench"}') -> Result:
    script = workdir / f"{mode}-{abs(hash((method, path, str(datafile), body)))}.lua"
    script.write_text(_LUA % {"method": method, "path": path, "mode": mode, "basic": basic,
                              "body": body,
                              "threads": threads, "datafile": str(datafile or ""),
                              "response": _SHOW_ERRORS if show_errors else ""})
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
         "--timeout", "5s", "-s", str(script), url],
        capture_output=True, text=True, timeout=seconds + 60, check=True)
    if show_errors and out.stderr:
        print(out.stderr, end="", file=sys.stderr)
    line = next((x for x in out.stdout.splitlines() if x.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no figures:\n{out.stdout}\n{out.stderr}")
    figures = json.loads(line.removeprefix("BENCH "))
    return Result(
        requests=figures["requests"], seconds=figures["duration_us"] / 1e6,
        non2xx=figures["non2xx"],
        socket_errors=sum(figures[k] for k in ("connect", "read", "write", "timeout")),
        p50_ms=figures["p50_us"] / 1000, p90_ms=figures["p90_us"] / 1000,
        p99_ms=figures["p99_us"] / 1000)
