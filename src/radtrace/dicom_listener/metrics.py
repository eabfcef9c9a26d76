"""Prometheus counters for the listener, in a registry of its own (no global state at import).

Exposed by ``radtrace listen`` on ``listener.metrics_port`` when set. Every series carries the listener port it
counts (``port``, the number) and whether that port is the TLS one (``tls``, ``"true"``/``"false"``): a listener
serves ``listener.port`` and at most one ``listener.plain_port``, so each label has at most two values. The names
are unchanged; a query without the new labels (``sum(rate(radtrace_listener_rejections_total[5m]))``) sums both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["DOOR_LABELS", "Door", "ListenerMetrics", "door_labels"]

#: The labels naming the listener port a series counts.
DOOR_LABELS = ("port", "tls")

#: A listener port and whether it is the TLS one.
Door = tuple[int, bool]


def door_labels(door: Door) -> dict[str, str]:
    """``port`` and ``tls`` label values of ``door``."""
    port, tls = door
    return {"port": str(port), "tls": "true" if tls else "false"}


class _ActiveAssociations(Collector):
    """``radtrace_listener_associations_active{port,tls}``: associations holding a slot now, read at each scrape."""

    def __init__(self, doors: Iterable[Door], held: Callable[[], Mapping[Door, int]]) -> None:
        self._doors = list(doors)
        self._held = held

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "radtrace_listener_associations_active",
            "Associations holding a slot now, by listener port",
            labels=list(DOOR_LABELS),
        )
        held = self._held()
        for door in self._doors:
            labels = door_labels(door)
            family.add_metric([labels[name] for name in DOOR_LABELS], held.get(door, 0))
        yield family


class ListenerMetrics:
    """Associations, rejections, instances, bytes and C-STORE statuses, each by listener port."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        labels = list(DOOR_LABELS)
        self.associations = Counter(
            "radtrace_listener_associations",
            "Associations requested, by result and listener port",
            ["result", *labels],
            registry=self.registry,
        )
        self.rejections = Counter(
            "radtrace_listener_rejections",
            "Associations rejected, by reason and listener port",
            ["reason", *labels],
            registry=self.registry,
        )
        self.instances = Counter(
            "radtrace_listener_instances",
            "C-STORE requests handled, by outcome and listener port",
            ["outcome", *labels],
            registry=self.registry,
        )
        self.bytes = Counter(
            "radtrace_listener_received_bytes",
            "Bytes of instances received, by listener port",
            labels,
            registry=self.registry,
        )
        self.statuses = Counter(
            "radtrace_listener_statuses",
            "C-STORE response statuses sent, by listener port",
            ["status", *labels],
            registry=self.registry,
        )
        self.echoes = Counter(
            "radtrace_listener_echoes", "C-ECHO requests answered, by listener port", labels, registry=self.registry
        )
        self._active: _ActiveAssociations | None = None

    def status(self, status: int, door: Door) -> None:
        """Count one C-STORE response status (as four hex digits) on ``door``."""
        self.statuses.labels(status=f"0x{status:04X}", **door_labels(door)).inc()

    def watch_associations(self, doors: Iterable[Door], held: Callable[[], Mapping[Door, int]]) -> None:
        """Serve the associations held per port now (``held``, called at each scrape); once per registry."""
        if self._active is not None:
            self.registry.unregister(self._active)
        self._active = _ActiveAssociations(doors, held)
        self.registry.register(self._active)
