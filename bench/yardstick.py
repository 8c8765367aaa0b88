"""The yardstick: a bare FastAPI endpoint returning the same JSON as the measured endpoints,
rendered the same way (orjson) and served the same way as `tessera serve` (uvicorn, httptools,
the same event loop, one worker, no access log). Run: `python -m bench.yardstick --port 8001
[--loop uvloop]`."""

from __future__ import annotations

import argparse
import json
import os

import uvicorn
from fastapi import FastAPI

from app.api.responses import JSON, NO_STORE

# The body of a live token's introspection answer, given by the benchmark (same size and shape).
BODY = json.loads(os.environ.get("BENCH_YARDSTICK_BODY", '{"active": true}'))

app = FastAPI()


@app.get("/yardstick")
async def yardstick() -> JSON:
    return JSON(BODY, headers=NO_STORE)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = parser.parse_args()
    uvicorn.run("bench.yardstick:app", host=args.host, port=args.port, loop=args.loop,
                http="httptools", log_level="warning", access_log=False, proxy_headers=True)


if __name__ == "__main__":
    main()
