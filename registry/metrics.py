"""The registry's Prometheus metrics (``http.debug.prometheus``): what they are called,
and the calls that record them.

Names follow Distribution's where it has one (``registry_http_requests_total``,
``registry_http_request_duration_seconds``, ``registry_storage_action_seconds``), so
dashboards built for ``registry:2`` keep working. Every label comes from a bounded set:
route names (never the path), known methods, status codes, driver and action names.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from registry.metrics_tally import (
    CounterTally,
    HistogramTally,
    Labels,
    PendingCount,
    RequestTally,
)
from shared.metrics import LabelCache

# Request latency: from a cached manifest HEAD (sub-millisecond) to a large blob.
_REQUEST_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
)
_STORAGE_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
)
_GC_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600)

METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS"})


class RegistryMetrics:
    """The metrics of one registry app (one worker), in ``registry`` (its own).

    The request path only adds to tallies (registry.metrics_tally); :meth:`flush` moves
    them into the metrics, before a scrape and every second with several workers.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "registry_http_requests_total",
            "HTTP requests answered, by route name, method and status code.",
            ["handler", "method", "code"],
            registry=r,
        )
        self.request_duration = Histogram(
            "registry_http_request_duration_seconds",
            "Time from the request's head to the last byte of the response, by route.",
            ["handler", "method"],
            buckets=_REQUEST_BUCKETS,
            registry=r,
        )
        # livesum: the requests of live workers only; a killed worker's count goes with it.
        self.in_flight = Gauge(
            "registry_http_in_flight_requests",
            "Requests being served.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.received = Counter(
            "registry_http_request_bytes",
            "Request body bytes received, by route.",
            ["handler"],
            registry=r,
        )
        self.sent = Counter(
            "registry_http_response_bytes",
            "Response body bytes sent, by route.",
            ["handler"],
            registry=r,
        )
        self.storage_duration = Histogram(
            "registry_storage_action_seconds",
            "Storage driver operations and their latency, by driver and action.",
            ["driver", "action"],
            buckets=_STORAGE_BUCKETS,
            registry=r,
        )
        self.storage_errors = Counter(
            "registry_storage_errors",
            "Storage driver operations that failed (a missing path is not a failure).",
            ["driver", "action"],
            registry=r,
        )
        self.cache_requests = Counter(
            "registry_storage_cache",
            "Blob-descriptor cache lookups, by result (hit or miss).",
            ["type"],
            registry=r,
        )
        self.cache_failures = Counter(
            "registry_storage_cache_errors",
            "Blob-descriptor cache operations that went to storage because Redis did not "
            "answer (a command failed, or was skipped while Redis was failing).",
            registry=r,
        )
        self.uploads = Counter(
            "registry_uploads",
            "Blob uploads by event: started (an upload session opened), completed (a "
            "blob committed by an upload), failed (finishing an upload was refused).",
            ["event"],
            registry=r,
        )
        self.manifests_pushed = Counter(
            "registry_manifests_pushed",
            "Manifests stored by PUT, by media type.",
            ["media_type"],
            registry=r,
        )
        self.gc_runs = Counter(
            "registry_gc_runs",
            "Garbage collections run (dry runs not counted).",
            registry=r,
        )
        self.gc_bytes_freed = Counter(
            "registry_gc_freed_bytes",
            "Bytes of blob data garbage collection deleted.",
            registry=r,
        )
        self.gc_duration = Histogram(
            "registry_gc_duration_seconds",
            "How long a garbage collection took.",
            buckets=_GC_BUCKETS,
            registry=r,
        )
        # The notification sender's, one sample per endpoint *name* from the configuration
        # (a bounded set), never the URL (see registry.notifications.notifier).
        self.notifications_sent = Counter(
            "registry_notifications_delivered",
            "Events an endpoint accepted, by endpoint name.",
            ["endpoint"],
            registry=r,
        )
        self.notifications_failures = Counter(
            "registry_notifications_failures",
            "Failed delivery attempts, by endpoint name.",
            ["endpoint"],
            registry=r,
        )
        self.notifications_drops = Counter(
            "registry_notifications_dropped",
            "Events dropped because an endpoint's queue was full, by endpoint name.",
            ["endpoint"],
            registry=r,
        )
        self.proxy_stale = Counter(
            "registry_proxy_stale_served",
            "Cached tags a mirror served while its upstream was unreachable, by upstream "
            "prefix (/ for the one upstream of proxy.remoteurl).",
            ["upstream"],
            registry=r,
        )
        # Requests being served by this worker; the gauge is set from it at each flush.
        self.serving = 0
        self._requests = RequestTally(
            requests=self.requests,
            durations=self.request_duration,
            buckets=_REQUEST_BUCKETS,
            received=self.received,
            sent=self.sent,
        )
        # One request answered: its (route, method, status) labels, seconds, bytes
        # received and sent (see registry.request_metrics). The tally's own method, not
        # a method of this class calling it: one Python call fewer per request.
        self.request: Callable[[Labels, float, int, int], None] = self._requests.add
        self._storage_time = HistogramTally(self.storage_duration, _STORAGE_BUCKETS)
        self._storage_errors = CounterTally(self.storage_errors)
        self._pushed = CounterTally(self.manifests_pushed)
        self.cache_hits = PendingCount(self.cache_requests.labels("hit"))
        self.cache_misses = PendingCount(self.cache_requests.labels("miss"))
        self.cache_errors = PendingCount(self.cache_failures)
        self.uploads_started = PendingCount(self.uploads.labels("started"))
        self.uploads_completed = PendingCount(self.uploads.labels("completed"))
        self.uploads_failed = PendingCount(self.uploads.labels("failed"))
        self._pending = (
            self._requests,
            self._storage_time,
            self._storage_errors,
            self._pushed,
            self.cache_hits,
            self.cache_misses,
            self.cache_errors,
            self.uploads_started,
            self.uploads_completed,
            self.uploads_failed,
        )
        self.notifications_delivered = LabelCache(self.notifications_sent.labels)
        self.notifications_failed = LabelCache(self.notifications_failures.labels)
        self.notifications_dropped = LabelCache(self.notifications_drops.labels)

    def observe_storage(self, driver: str, action: str, seconds: float, failed: bool) -> None:
        """One storage driver operation (see registry.storage.driver.metered)."""
        self._storage_time.observe((driver, action), seconds)
        if failed:
            self._storage_errors.add((driver, action))

    def manifest_pushed(self, media_type: str) -> None:
        """A manifest stored; ``media_type`` is one storage accepted (a bounded set)."""
        self._pushed.add((media_type,))

    def flush(self) -> None:
        """Add what the tallies hold to the metrics (this worker's event loop only)."""
        for pending in self._pending:
            pending.flush()
        self.in_flight.set(self.serving)

    def collected(self, bytes_freed: int, seconds: float) -> None:
        self.gc_runs.inc()
        self.gc_bytes_freed.inc(bytes_freed)
        self.gc_duration.observe(seconds)


def method_label(method: str) -> str:
    """The method as a label: a client may send any token there, so others are ``other``."""
    return method if method in METHODS else "other"
