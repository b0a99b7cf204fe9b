"""The service's Prometheus metrics (prometheus-client): requests by route and status, latency,
the index version served and its reloads.

With one worker they live in a registry of the app's own. With `serve --workers N`, `serve` sets
PROMETHEUS_MULTIPROC_DIR to a fresh folder before uvicorn starts the workers, and prometheus-client's
multiprocess mode keeps every worker's values in files there: whichever worker answers `/metrics`
reads them all (MultiProcessCollector), so request counts and latency histograms are the sums over
the workers. The index gauges are per worker there (a `pid` label; `liveall`), since each worker
opens and reloads the index on its own.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest

from mll_index.service.state import StateHolder

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
CONTENT_TYPE = CONTENT_TYPE_LATEST
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"


def shared_across_workers() -> bool:
    """Whether prometheus-client runs in multiprocess mode in this process (its folder is set)."""
    return bool(os.environ.get(MULTIPROCESS_ENV))


class ServiceMetrics:
    """One app's metrics; the reload and version figures are read from `holder`.

    paths: the app's routes; a request to any other path is counted under route "unmatched", so
    that stray paths do not grow the label set.
    """

    def __init__(self, holder: StateHolder, paths: Iterable[str]) -> None:
        self.holder, self.paths = holder, frozenset(paths)
        self.shared = shared_across_workers()
        self.registry = registry = CollectorRegistry()
        self.requests = Counter("mll_index_requests", "HTTP requests by route, method and status.",
                                ["route", "method", "status"], registry=registry)
        self.latency = Histogram("mll_index_request_seconds",
                                 "Time to answer a request (to its first byte when streamed).",
                                 ["route"], registry=registry, buckets=LATENCY_BUCKETS)
        reloads = ("mll_index_index_reloads", "New index versions swapped in since start.")
        failures = ("mll_index_index_reload_failures", "Checks that found a new version that could not be opened yet.")
        opened = ("mll_index_index_opened_timestamp_seconds", "When the served index version was opened (Unix time).")
        if self.shared:
            # Multiprocess mode has no Info and no set_function: gauges set from the holder at every
            # request and scrape, the version as a labeled gauge (1 served, 0 no longer).
            self.gauges = {name: Gauge(name, text, registry=registry, multiprocess_mode="liveall")
                           for name, text in (reloads, failures, opened)}
            self.version_gauge = Gauge("mll_index_index_info", "The index version being served.", ["version", "path"],
                                       registry=registry, multiprocess_mode="liveall")
            self._served: tuple[str, str] | None = None
            self._sync()
        else:
            self.version = Info("mll_index_index", "The index version being served.", registry=registry)
            Gauge(*reloads, registry=registry).set_function(lambda: holder.reloads)
            Gauge(*failures, registry=registry).set_function(lambda: holder.failures)
            Gauge(*opened, registry=registry).set_function(lambda: holder.current.opened_at)

    def _sync(self) -> None:
        """Multiprocess mode: this worker's index gauges brought up to date from its holder."""
        holder = self.holder
        self.gauges["mll_index_index_reloads"].set(holder.reloads)
        self.gauges["mll_index_index_reload_failures"].set(holder.failures)
        self.gauges["mll_index_index_opened_timestamp_seconds"].set(holder.current.opened_at)
        served = (holder.current.version, str(holder.current.path))
        if served != self._served:
            if self._served is not None:
                self.version_gauge.labels(*self._served).set(0)
            self.version_gauge.labels(*served).set(1)
            self._served = served

    def count(self, path: str, method: str, status: int, seconds: float) -> None:
        """One answered request, by route (its path, or "unmatched"), method and status."""
        route = path if path in self.paths else "unmatched"
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)
        if self.shared:
            self._sync()

    def exposition(self) -> bytes:
        """Prometheus text format: this app's registry, or with several workers every worker's values."""
        if self.shared:
            from prometheus_client import multiprocess

            self._sync()
            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged)
            return generate_latest(merged)
        self.version.info({"version": self.holder.current.version, "path": str(self.holder.current.path)})
        return generate_latest(self.registry)
