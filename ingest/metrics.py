"""The ingest daemon's Prometheus metrics, on a registry of its own (tests run several daemons)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class IngestMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events_in = Counter(
            "quipfeed_events_in", "Raw events received from sources", ["source"], registry=r
        )
        self.changes_published = Counter(
            "quipfeed_changes_published", "Changes put on the bus", ["source"], registry=r
        )
        self.dead_letters = Counter(
            "quipfeed_dead_letters", "Events sent to the dead-letter stream", ["reason"], registry=r
        )
        self.posts_indexed = Counter(
            "quipfeed_posts_indexed", "Posts written to the store", registry=r
        )
        self.posts_deleted = Counter(
            "quipfeed_deletes_applied", "Delete changes applied to the store", registry=r
        )
        self.duplicates = Counter(
            "quipfeed_duplicates_collapsed", "Posts collapsed onto an earlier twin", registry=r
        )
        self.store_errors = Counter(
            "quipfeed_store_errors", "Store writes that failed and will be retried", registry=r
        )
        self.bus_errors = Counter(
            "quipfeed_bus_errors", "Indexer reconnects after losing Redis", registry=r
        )
        self.source_reconnects = Counter(
            "quipfeed_source_errors",
            "Source iterations that ended in an error",
            ["source"],
            registry=r,
        )
        self.batch_seconds = Histogram(
            "quipfeed_batch_seconds",
            "Embed + write time of one indexer batch",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.freshness_seconds = Histogram(
            "quipfeed_freshness_seconds",
            "From a post reaching the bus to it being searchable",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.bus_lag = Gauge(
            "quipfeed_bus_lag", "Changes on the bus not yet acknowledged by an indexer", registry=r
        )
        self.posts_total = Gauge("quipfeed_posts_total", "Posts in the store", registry=r)
        self.store_up = Gauge(
            "quipfeed_store_up", "1 when the store answered the last scrape, else 0", registry=r
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
