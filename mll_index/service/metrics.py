"""The service's Prometheus metrics (prometheus-client): requests by route and status, latency,
the index version served and its reloads, in a registry of the app's own.

The counts are the worker process's: with `serve --workers N` each worker counts its own requests.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest

from mll_index.service.state import StateHolder

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class ServiceMetrics:
    """One app's metrics; the reload and version figures are read from `holder` when scraped.

    paths: the app's routes; a request to any other path is counted under route "unmatched", so
    that stray paths do not grow the label set.
    """

    def __init__(self, holder: StateHolder, paths: Iterable[str]) -> None:
        self.holder, self.paths = holder, frozenset(paths)
        self.registry = registry = CollectorRegistry()
        self.requests = Counter("mll_index_requests", "HTTP requests by route, method and status.",
                                ["route", "method", "status"], registry=registry)
        self.latency = Histogram("mll_index_request_seconds",
                                 "Time to answer a request (to its first byte when streamed).",
                                 ["route"], registry=registry, buckets=LATENCY_BUCKETS)
        self.version = Info("mll_index_index", "The index version being served.", registry=registry)
        Gauge("mll_index_index_reloads", "New index versions swapped in since start.",
              registry=registry).set_function(lambda: holder.reloads)
        Gauge("mll_index_index_reload_failures", "Checks that found a new version that could not be opened yet.",
              registry=registry).set_function(lambda: holder.failures)
        Gauge("mll_index_index_opened_timestamp_seconds", "When the served index version was opened (Unix time).",
              registry=registry).set_function(lambda: holder.current.opened_at)

    def count(self, path: str, method: str, status: int, seconds: float) -> None:
        """One answered request, by route (its path, or "unmatched"), method and status."""
        route = path if path in self.paths else "unmatched"
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def exposition(self) -> bytes:
        """The registry in Prometheus text format, the served version first brought up to date."""
        self.version.info({"version": self.holder.current.version, "path": str(self.holder.current.path)})
        return generate_latest(self.registry)
