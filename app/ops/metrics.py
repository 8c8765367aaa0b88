"""Prometheus metrics (`/metrics`): what Tessera does, measured where it happens.

Request counts and latencies are taken at the outermost layer (`app.ops.observe`), so the hot
paths answered in front of the application count like every other request. Each metric's
children are bound once and kept: a labelled lookup per request would cost more than the
increment itself.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

REGISTRY = CollectorRegistry(auto_describe=True)

# Buckets from a cached check (well under a millisecond of server time) to a slow sign-in.
_LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)



class LoopHistogram(Collector):
    """A labelled histogram counted in plain integers, for what every request records: all
    requests are counted on the event loop's one thread, so no lock is needed, and
    prometheus-client's own histogram takes one per bucket and per sum (its cost on a cached
    gateway check was about 9 % of the throughput, in `make bench`). Read when scraped."""

    def __init__(self, name: str, documentation: str, labels: list[str],
                 buckets: tuple[float, ...]) -> None:
        self.name, self.documentation, self.labels, self.bounds = name, documentation, \
            labels, buckets
        # labels -> [count in each bucket (the last: past every bound)..., sum]
        self.children: dict[tuple[str, ...], list[Any]] = {}

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        child = self.children.get(labels)
        if child is None:
            child = self.children[labels] = [0] * (len(self.bounds) + 1) + [0.0]
        child[bisect.bisect_left(self.bounds, value)] += 1
        child[-1] += value

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        for labels, child in list(self.children.items()):
            running, buckets = 0, []
            for bound, count in zip(self.bounds, child, strict=False):
                running += count
                buckets.append((floatToGoString(bound), running))
            buckets.append(("+Inf", running + child[len(self.bounds)]))
            family.add_metric(list(labels), buckets, child[-1])
        yield family

    def describe(self) -> Iterator[HistogramMetricFamily]:
        yield HistogramMetricFamily(self.name, self.documentation, labels=self.labels)


class LoopCounter(Collector):
    """A labelled counter in plain integers, for the same reason (`LoopHistogram`)."""

    def __init__(self, name: str, documentation: str, labels: list[str]) -> None:
        self.name, self.documentation, self.labels = name, documentation, labels
        self.children: dict[tuple[str, ...], int] = {}

    def inc(self, *labels: str) -> None:
        self.children[labels] = self.children.get(labels, 0) + 1

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        for labels, value in list(self.children.items()):
            family.add_metric(list(labels), value)
        yield family

    def describe(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(self.name, self.documentation, labels=self.labels)


REQUESTS = LoopHistogram("tessera_http_request_duration_seconds",
                         "HTTP requests by route, method and status, and how long they took "
                         "(its _count is the number of requests)",
                         ["route", "method", "status"], _LATENCY)
REGISTRY.register(REQUESTS)
CACHE = LoopCounter("tessera_cache_lookups",
                    "Token cache lookups by what was looked up and result", ["kind", "result"])
REGISTRY.register(CACHE)
DB_UNAVAILABLE = Counter("tessera_db_unavailable", "Requests answered 503 because the "
                         "database could not be had, by why", ["reason"], registry=REGISTRY)
BATCH_SIZE = Histogram("tessera_batch_size", "Items per batched statement (group commit and "
                       "batched reads)", ["batcher"],
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=REGISTRY)
BATCH_RETRIES = Counter("tessera_batch_retries", "Batches run again, by why", ["batcher",
                        "cause"], registry=REGISTRY)
THROTTLED = Counter("tessera_throttle_refusals", "Attempts refused as too many failed "
                    "attempts (429), by what was guessed", ["guarded"], registry=REGISTRY)
THROTTLE_BLOCKS = Counter("tessera_throttle_blocks", "Keys blocked after too many failed "
                          "attempts, by what was guessed", ["guarded"], registry=REGISTRY)
WORKER_CYCLE = Histogram("tessera_worker_cycle_seconds", "Worker cycles and how long they "
                         "took", buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800),
                         registry=REGISTRY)
WORKER_ITEMS = Counter("tessera_worker_items", "What worker jobs did, by job and outcome",
                       ["job", "outcome"], registry=REGISTRY)

# How late the event loop runs a timer: while it is late, every request in flight waits,
# whatever its own handling costs (a long synchronous step, a garbage collection, or the process
# not scheduled at all). Sampled every `LOOP_LAG_INTERVAL` seconds.
LOOP_LAG_INTERVAL = 0.25
LOOP_LAG = LoopHistogram("tessera_event_loop_lag_seconds",
                         f"How late the event loop ran a timer due every {LOOP_LAG_INTERVAL} s: "
                         "a time every request in flight waited",
                         [], (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
REGISTRY.register(LOOP_LAG)


async def watch_event_loop(interval: float = LOOP_LAG_INTERVAL) -> None:
    """Runs for the life of the server (`app.main`): each sample one timer, nothing per
    request."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + interval
        await asyncio.sleep(interval)
        LOOP_LAG.observe((), max(0.0, loop.time() - due))


_STATUS = {code: str(code) for code in range(100, 600)}


def observe_request(route: str, method: str, status: int, seconds: float) -> None:
    REQUESTS.observe((route, method, _STATUS.get(status) or str(status)), seconds)


class _Bound:
    """The children of a labelled counter, bound on first use."""

    def __init__(self, metric: Counter) -> None:
        self.metric, self.children = metric, {}

    def inc(self, *labels: str, amount: float = 1) -> None:
        child = self.children.get(labels)
        if child is None:
            child = self.children[labels] = self.metric.labels(*labels)
        child.inc(amount)


cache = CACHE
db_unavailable = _Bound(DB_UNAVAILABLE)
batch_retries = _Bound(BATCH_RETRIES)
throttled = _Bound(THROTTLED)
throttle_blocks = _Bound(THROTTLE_BLOCKS)
worker_items = _Bound(WORKER_ITEMS)
_batch_sizes: dict[str, Any] = {}


def batch_size(batcher: str, size: int) -> None:
    child = _batch_sizes.get(batcher)
    if child is None:
        child = _batch_sizes[batcher] = BATCH_SIZE.labels(batcher)
    child.observe(size)


class StateCollector(Collector):
    """What is read when Prometheus scrapes: the connection pool, and the outbox's backlog (a
    query, its answer kept `ttl` seconds so scrapes cost the database little)."""

    def __init__(self, app_state: Any, ttl: float = 15.0) -> None:  # noqa: ANN401
        self.state, self.ttl = app_state, ttl
        self._outbox: tuple[float, int, float] | None = None  # (read at, pending, oldest age)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        pool = self.state.engine.pool
        gauge = GaugeMetricFamily("tessera_db_pool_connections",
                                  "Connections of this process's pool, by state", labels=["state"])
        for state, reader in (("checked_out", "checkedout"), ("idle", "checkedin")):
            if hasattr(pool, reader):
                gauge.add_metric([state], getattr(pool, reader)())
        yield gauge
        if self._outbox is not None:
            _at, pending, oldest = self._outbox
            yield GaugeMetricFamily("tessera_outbox_pending", "Notices not sent yet",
                                    value=pending)
            yield GaugeMetricFamily("tessera_outbox_oldest_pending_age_seconds",
                                    "How long the oldest pending notice has waited",
                                    value=oldest)

    async def refresh(self, read: Any) -> None:  # noqa: ANN401 - async () -> (pending, age)
        if self._outbox is not None and time.monotonic() - self._outbox[0] < self.ttl:
            return
        pending, oldest = await read()
        self._outbox = (time.monotonic(), pending, oldest)


def exposition(*registries: CollectorRegistry) -> bytes:
    return b"".join(generate_latest(r) for r in (REGISTRY, *registries))
