"""Prometheus counters for the listener, in a registry of its own (no global state at import).

Exposed by ``radtrace listen`` on ``listener.metrics_port`` when set.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

__all__ = ["ListenerMetrics"]


class ListenerMetrics:
    """Associations, rejections, instances, bytes and C-STORE statuses."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.associations = Counter(
            "radtrace_listener_associations", "Associations requested, by result", ["result"], registry=self.registry
        )
        self.rejections = Counter(
            "radtrace_listener_rejections", "Associations rejected, by reason", ["reason"], registry=self.registry
        )
        self.instances = Counter(
            "radtrace_listener_instances", "C-STORE requests handled, by outcome", ["outcome"], registry=self.registry
        )
        self.bytes = Counter("radtrace_listener_received_bytes", "Bytes of instances received", registry=self.registry)
        self.statuses = Counter(
            "radtrace_listener_statuses", "C-STORE response statuses sent", ["status"], registry=self.registry
        )
        self.echoes = Counter("radtrace_listener_echoes", "C-ECHO requests answered", registry=self.registry)

    def status(self, status: int) -> None:
        """Count one C-STORE response status (as four hex digits)."""
        self.statuses.labels(status=f"0x{status:04X}").inc()
