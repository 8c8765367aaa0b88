"""The yardsticks: endpoints returning the same JSON as the measured endpoints, rendered the same
way (orjson) and served the same way as `tessera serve` (uvicorn, httptools, the same event loop,
one worker, no access log). Two of them, for the design's two kinds of target:

- `app`: a bare FastAPI endpoint, the measure of the token endpoint and the management API;
- `raw`: a raw ASGI application (no framework), the limit of the server stack itself, the
  measure of the hot paths (introspection and the gateway check).

Run: `python -m bench.yardstick --port 8001 [--raw] [--loop uvloop]`."""

from __future__ import annotations

import argparse
import json
import os

import orjson
import uvicorn
from fastapi import FastAPI

from app.api.responses import JSON, NO_STORE

# The body of a live token's introspection answer, given by the benchmark (same size and shape).
BODY = json.loads(os.environ.get("BENCH_YARDSTICK_BODY", '{"active": true}'))

app = FastAPI()


@app.get("/yardstick")
async def yardstick() -> JSON:
    return JSON(BODY, headers=NO_STORE)


async def raw(scope: dict, receive, send) -> None:  # noqa: ANN001
    """The same answer with no framework: what uvicorn and httptools alone can serve."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = orjson.dumps(BODY)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"cache-control", b"no-store"), (b"pragma", b"no-cache")]})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--raw", action="store_true", help="serve the raw ASGI yardstick")
    args = parser.parse_args()
    uvicorn.run("bench.yardstick:raw" if args.raw else "bench.yardstick:app", host=args.host,
                port=args.port, loop=args.loop, http="httptools", log_level="warning",
                access_log=False, proxy_headers=True)


if __name__ == "__main__":
    main()
