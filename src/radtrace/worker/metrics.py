"""Prometheus metrics of a worker: stage latencies it observes, and the service's queue depths on each scrape.

Stages (seconds, one histogram labelled by ``stage``), following one revision through the service:

* ``complete``: its last instance received → queued (the settle time, plus the completion timer's delay);
* ``start``: queued (or its retry due) → claimed by a worker (doorbell, broker and waiting for a GPU);
* ``read``: the model's reading (image preparation and generation);
* ``report``: the reading done → ``reported`` (SR, HL7 and FHIR built, outbox rows written);
* ``deliver``: ``reported`` → every destination confirmed (``dispatched``);
* ``total``: last instance received → ``dispatched``.

Queue depths are read when Prometheus scrapes, from the database (revisions and outbox rows per state,
the oldest waiting, the destinations on hold and the model servers stopped for unparseable output) and the broker
(messages per queue), through :func:`radtrace.worker.status.collect_status`,
the same figures ``radtrace status`` prints. The QA drift and failure rules (:mod:`radtrace.qa.metrics`) are
served beside them. Each worker process has a registry of its own (no global state).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from radtrace.config import Settings
from radtrace.errors import RadtraceError
from radtrace.metrics_server import start_metrics_server
from radtrace.store.engine import Store
from radtrace.tls_renewal import watch_tls_expiry

__all__ = ["STAGES", "QueueDepthCollector", "WorkerMetrics", "serve_metrics"]

log = logging.getLogger(__name__)

STAGES: Final = ("complete", "start", "read", "report", "deliver", "total")
_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class WorkerMetrics:
    """Stage latencies and finished revisions, observed by the pipeline through :meth:`observe`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.stage_seconds = Histogram(
            "radtrace_stage_seconds", "Time a revision spent in each stage", ["stage"], buckets=_BUCKETS,
            registry=self.registry,
        )  # fmt: skip
        self.finished = Counter(
            "radtrace_revisions_finished", "Revisions that reached a final state, by state", ["state"],
            registry=self.registry,
        )  # fmt: skip

        self.server_unavailable = Gauge(
            "radtrace_model_server_unavailable",
            "1 while this worker holds reads for a model server that does not answer (its circuit breaker is open)",
            registry=self.registry,
        )
        self.server_unavailable_since = Gauge(
            "radtrace_model_server_unavailable_since_seconds",
            "Unix time since when the model server has not answered (0 while it answers)",
            registry=self.registry,
        )

    def model_server_unavailable(self, since: datetime | None) -> None:
        """The worker's circuit breaker opened (``since``: when the server was first found down) or closed (None)."""
        self.server_unavailable.set(0 if since is None else 1)
        self.server_unavailable_since.set(0 if since is None else since.timestamp())

    def observe(self, stage: str, seconds: float) -> None:
        """Record ``seconds`` spent in ``stage`` (one of :data:`STAGES`); a negative figure (clock skew) is 0."""
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}")
        self.stage_seconds.labels(stage=stage).observe(max(0.0, seconds))

    def finished_in(self, state: str) -> None:
        """Count one revision that reached the final ``state``."""
        self.finished.labels(state=state).inc()


class QueueDepthCollector(Collector):
    """Queue depths and waiting work, read at scrape time (``radtrace status``'s figures)."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store

    def collect(self) -> Iterator[Metric]:
        from radtrace.worker.status import collect_status

        up = GaugeMetricFamily("radtrace_store_up", "Whether the work database answered the scrape")
        try:
            status = collect_status(self.settings, self.store)
        except RadtraceError as exc:  # the database is down: say so in the scrape rather than fail it
            log.warning("queue depths not collected: %s", exc.reason)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        revisions = GaugeMetricFamily("radtrace_revisions", "Revisions per state", labels=["state"])
        for state, count in status.revisions.items():
            revisions.add_metric([state], count)
        yield revisions
        outbox = GaugeMetricFamily("radtrace_outbox_messages", "Outbound messages per state", labels=["state"])
        for state, count in status.outbox.items():
            outbox.add_metric([state], count)
        yield outbox
        queues = GaugeMetricFamily(
            "radtrace_broker_queue_messages", "Doorbells waiting in each broker queue (absent: unreachable)",
            labels=["queue"],
        )  # fmt: skip
        for name, depth in status.queues.items():
            if depth is not None:
                queues.add_metric([name], depth)
        if status.broker_error is not None:
            log.warning("queue depths not collected: %s", status.broker_error)
        yield queues
        oldest = GaugeMetricFamily(
            "radtrace_oldest_waiting_seconds", "Age of the revision waiting longest in a non-final state"
        )
        oldest.add_metric([], status.oldest_waiting.waiting_s if status.oldest_waiting else 0.0)
        yield oldest
        held = GaugeMetricFamily(
            "radtrace_dispatch_held_deliveries",
            "Deliveries waiting on a destination on hold (a permanent rejection; lifted by radtrace dispatch retry)",
            labels=["destination"],
        )
        for hold in status.holds:
            held.add_metric([hold.destination], hold.deliveries)
        yield held
        stopped = GaugeMetricFamily(
            "radtrace_model_reading_stopped",
            "1 per model server whose reading is stopped for unparseable output (lifted by radtrace model resume)",
            labels=["server"],
        )
        for stop in status.stops:
            stopped.add_metric([stop.server], 1)
        yield stopped


def serve_metrics(settings: Settings, store: Store, metrics: WorkerMetrics, port: int) -> None:
    """Expose ``metrics``, the queue depths and the QA drift and failure rules on ``port`` (a daemon thread)."""
    from radtrace.qa.metrics import QaRuleCollector

    metrics.registry.register(QueueDepthCollector(settings, store))
    metrics.registry.register(QaRuleCollector(settings, store))
    watch_tls_expiry(metrics.registry)  # dispatch.ris's certificate and CA, when this worker sends to the RIS
    host = settings.listener.metrics_bind_host  # unauthenticated: only as exposed as the listener
    start_metrics_server(port, addr=host, registry=metrics.registry)  # bounded: slow scrapers hold no threads
    log.info("worker metrics on %s:%d", host, port)
