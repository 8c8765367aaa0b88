"""The ASGI application: `create_app()` wires settings, clock, database and routers."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi_offline import FastAPIOffline
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.routing import Route

from app.api import errors, openapi
from app.api.content_type import JSONBodiesOnly
from app.api.headers import SafeHeaders
from app.api.responses import JSON
from app.api.routing import RouteIndex
from app.clock import Clock, SystemClock
from app.config import Settings, get_settings
from app.db import make_engine, make_read_sessionmaker, make_sessionmaker
from app.gateway.fast_path import FastChecks
from app.oauth2 import dpop
from app.oauth2.clients import ClientReader
from app.oauth2.fast_path import FastForms
from app.oauth2.metadata import metadata as authorization_server_metadata
from app.oauth2.proofs import ProofRecorder
from app.ops.endpoints import router as ops_router
from app.ops.metrics import StateCollector, watch_event_loop
from app.ops.observe import Observed
from app.plans.service import PolicyReader
from app.throttle import hashing
from app.throttle.store import Throttles
from app.tokens.batches import Batches
from app.tokens.cache import Listener, TokenCache

log = logging.getLogger("tessera")


def create_served_app() -> Observed:
    """The application as `tessera serve` runs it (uvicorn's factory): behind its fast paths,
    and, outermost, request ids, metrics and the access log (`app.ops.observe`)."""
    settings = get_settings()
    return Observed(serve(create_app(settings, freeze_heap=True)),
                    metrics_on=settings.metrics_enabled, access_log=settings.access_log)


def serve(app: FastAPI) -> FastChecks:
    """`app` behind its fast paths: gateway checks, token requests and introspections answered
    in front of the application's middleware and router (`app/gateway/fast_path.py`,
    `app/oauth2/fast_path.py`); everything else reaches `app` as it came."""
    return FastChecks(FastForms(app))


# The served process's young-generation threshold: a collection after this many more container
# objects allocated than freed (CPython's default is 700). A request's objects die by reference
# counting; what outlives a request for a while (futures and rows queued in a token batch) made
# the default trigger a young collection every ~33 refreshes, 13-18 µs of CPU per refresh in all
# (about 7 %); at this threshold none ran in 12,000 refreshes (bench/NOTES.md). The price:
# cyclic garbage waits longer to be freed, and what survives a young collection longer still
# (the older generations count young collections, so they run about 28 times less often too).
YOUNG_THRESHOLD = 20_000


async def _close_pool(engine: AsyncEngine) -> None:
    """Close the pool's connections at shutdown. One that cannot be closed gracefully (its
    server stopped answering a moment ago) is dropped all the same, without SQLAlchemy's
    traceback: there is nothing left for an operator to act on."""
    pool_log = logging.getLogger("sqlalchemy.pool")
    level = pool_log.level
    pool_log.setLevel(logging.CRITICAL)
    try:
        await engine.dispose()
    except Exception as exc:  # noqa: BLE001 - shutting down: say it, and go on
        log.warning("closing the database pool at shutdown: %s", type(exc).__name__)
    finally:
        pool_log.setLevel(level)


def create_app(settings: Settings | None = None, *, clock: Clock | None = None,
               engine: AsyncEngine | None = None, freeze_heap: bool = False) -> FastAPI:
    """`freeze_heap`: once started, move every object alive so far (modules, routes, mappers,
    compiled statements) out of the garbage collector's generations (`gc.freeze`), so that a
    full collection under load walks only what requests allocate, and collect the young
    generation less often (`YOUNG_THRESHOLD`). Measured under wrk: full collections in the
    server took ~47 ms each without the freeze, ~5 ms with (bench/NOTES.md); each such pause
    holds every request in flight. For a long-lived server process only: objects frozen are
    never collected and the thresholds are the process's, so a test process creating many
    applications keeps it off."""
    settings = settings or get_settings()
    given_engine = engine is not None
    engine = engine or make_engine(settings.database_url, pool_size=settings.db_pool_size,
                                   pool_timeout=settings.db_pool_timeout_seconds,
                                   statement_timeout=settings.db_statement_timeout_seconds,
                                   connect_timeout=settings.db_connect_timeout_seconds)

    token_cache = TokenCache(settings.token_cache_size, settings.token_cache_bound_seconds,
                             listings_bytes=settings.token_listings_megabytes * 1024 * 1024)
    throttles = Throttles(engine)
    hashing.SLOTS.configure(settings.password_hash_concurrency, settings.password_hash_queue,
                            settings.password_hash_share)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # The cache answers only while its LISTEN/NOTIFY listener is healthy (PostgreSQL only).
        listener = Listener.for_engine(
            token_cache, engine, heartbeat_seconds=settings.token_cache_heartbeat_seconds,
            throttles=throttles)
        _app.state.listener = listener
        if listener is not None:
            listener.start()  # it learns the blocks in force when it connects
        else:
            with contextlib.suppress(Exception):  # a database not there yet: none to learn
                await throttles.load(_app.state.clock.now())
        if freeze_heap:
            gc.collect()
            gc.freeze()
            _young, older, oldest = gc.get_threshold()
            gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
        watcher = asyncio.create_task(watch_event_loop(), name="tessera-loop-lag") \
            if settings.metrics_enabled else None
        if settings.run_worker_in_serve:  # the background jobs in this process too
            from app.worker.loop import in_background

            # Its own connections, not bound by the requests' statement timeout: a sweep over
            # many tokens may take longer than any request should.
            worker_engine = engine if given_engine else make_engine(
                settings.database_url, pool_size=min(settings.db_pool_size, 5),
                connect_timeout=settings.db_connect_timeout_seconds)
            try:
                async with in_background(make_sessionmaker(worker_engine), _app.state.clock,
                                         settings) as reports:
                    _app.state.worker_reports = reports
                    yield
            finally:
                if worker_engine is not engine:
                    await worker_engine.dispose()
        else:
            yield
        if watcher is not None:
            watcher.cancel()
        if listener is not None:
            await listener.stop()
        await _close_pool(engine)

    # The documentation's pages with their assets served here, not from a CDN.
    app = FastAPIOffline(
        title="Tessera",
        version="0.1.0",
        summary="OAuth2 authorization and token-lifecycle service",
        lifespan=lifespan,
        default_response_class=JSON,
        generate_unique_id_function=openapi.operation_id,
    )
    openapi.install(app)
    app.state.settings = settings
    app.state.clock = clock or SystemClock()
    app.state.engine = engine
    app.state.sessionmaker = make_sessionmaker(engine)
    app.state.read_sessionmaker = make_read_sessionmaker(engine)
    app.state.metadata = authorization_server_metadata(settings)
    app.state.token_cache = token_cache
    app.state.token_batches = Batches.for_engine(engine)
    # What a change of a period reads first, batched on PostgreSQL; on SQLite, where the
    # reads of a unit of work go through its session, read there.
    app.state.plan_policies = PolicyReader(engine) if engine.dialect.name == "postgresql" \
        else None
    # DPoP (RFC 9449): proofs already used (this process's memory, and the database's for
    # every replica), and server nonces when required.
    app.state.dpop_replays = dpop.Replays(ProofRecorder(engine))
    app.state.dpop_nonces = dpop.Nonces(settings.secret_keys[0]) \
        if settings.dpop_nonce_required else None
    app.state.client_reader = ClientReader(engine)
    app.state.throttles = throttles
    app.state.metrics = CollectorRegistry(auto_describe=True)
    app.state.state_collector = StateCollector(app.state)
    app.state.metrics.register(app.state.state_collector)

    errors.install(app)

    app.add_middleware(JSONBodiesOnly)
    app.add_middleware(SafeHeaders)

    from app.audit.endpoints import router as audit_router
    from app.console.account import router as console_account_router
    from app.console.admin import router as console_admin_router
    from app.console.assets import router as console_assets_router
    from app.console.operator import router as console_operator_router
    from app.gateway.endpoints import router as gateway_router
    from app.integrations.endpoints import router as integrations_router
    from app.oauth2.authorize import router as authorize_router
    from app.oauth2.introspection import router as introspection_router
    from app.oauth2.metadata import router as metadata_router
    from app.oauth2.token_endpoint import router as token_router
    from app.plans.endpoints import dpop_router
    from app.plans.endpoints import router as plans_router
    from app.tokens.endpoints import router as tokens_router
    from app.users.endpoints import router as users_router

    # Routes go into the application's own table as they are (each already carries its full
    # path and tags), not through `include_router`: FastAPI matches an included router by
    # walking every router in turn, route by route, with a context per router, which cost a
    # request ~4 times a bare endpoint's whole work (bench/NOTES.md).
    routers = (gateway_router, introspection_router, token_router, plans_router, dpop_router,
               tokens_router, users_router, integrations_router, authorize_router,
               metadata_router,
               audit_router, ops_router, console_account_router, console_admin_router,
               console_assets_router, console_operator_router)
    # The hot paths' plain Starlette routes first, before FastAPI's documentation routes: the
    # documented copies behind them are never reached.
    hot = [route for router in routers[:3] for route in router.routes if type(route) is Route]
    moved = {id(route) for route in hot}
    for router in routers:
        if router.dependencies or not all(isinstance(route, APIRoute | Route)
                                          for route in router.routes):
            app.include_router(router)  # what only inclusion knows how to apply
        else:
            app.router.routes.extend(route for route in router.routes
                                     if id(route) not in moved)
    app.router.routes[:0] = hot
    # And in front of them all, an index of them (`app.api.routing`).
    app.router.routes.insert(0, RouteIndex(route for route in app.router.routes
                                           if isinstance(route, APIRoute | Route)))
    return app
