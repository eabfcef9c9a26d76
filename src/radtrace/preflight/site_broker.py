"""Every node of a multi-host site rings and listens on one broker: the same Redis database number and key prefix.

A node whose ``broker.url`` names another Redis database number (``redis://redis:6379/1`` where the site uses ``/0``)
or whose ``broker.key_prefix`` differs passed every start-up check (its broker answers) and then never received work:
the listener rang the doorbell in one database, the worker listened in the other, and each study waited in 'queued'
until the reconciler's rings, which went the same wrong way. The first node to start on a PostgreSQL database
records the site's broker (:mod:`radtrace.store.site_settings`); a node started later with another database number
or key prefix is refused (exit 2) in one line naming both, while radtrace processes run on the recorded one. When
none runs (the site stopped to move its broker), the new one is recorded in its place, with a warning. Another
server name for the same numbers is a warning (a second name of one Redis, or another Redis).

The queue names (``broker.gpu_queue``, ``broker.stat_queue``, ``broker.dispatch_queue``) are recorded and compared
the same way: a GPU host whose env file named another inference queue listened where no listener rang, and a
listener with another dispatch queue rang where no dispatcher listened; each passed its own checks. A record made
before queue names were recorded (d3e7351) is completed by the first node that agrees with the rest of it.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from radtrace.config import Settings
from radtrace.preflight.check import Check
from radtrace.preflight.database import judged_on_postgresql

if TYPE_CHECKING:
    from radtrace.store.engine import Store

__all__ = ["QUEUE_SETTINGS", "BrokerIdentity", "broker_identity", "site_broker_check"]

_NAME = "site broker"
_SETTING = "broker"
_REMEDY = (
    "set broker.url (RADTRACE_BROKER__URL), broker.key_prefix (RADTRACE_BROKER__KEY_PREFIX) and the queue names "
    "(RADTRACE_BROKER__GPU_QUEUE, RADTRACE_BROKER__STAT_QUEUE, RADTRACE_BROKER__DISPATCH_QUEUE) as on the site's "
    "other hosts"
)
#: The queue settings every node rings or listens on, in the order they are said.
QUEUE_SETTINGS = ("gpu_queue", "stat_queue", "dispatch_queue")
#: Processes that use no broker: their rows do not hold the site's broker in place.
_WITHOUT_BROKER = ("atna forwarder",)


@dataclass(frozen=True)
class BrokerIdentity:
    """Where a node's doorbell rings: the Redis server, database number, key prefix and queue names (no password).
    ``queues`` is None in a record made before queue names were recorded."""

    server: str
    db: str
    key_prefix: str
    queues: tuple[str, ...] | None = None

    def describe(self) -> str:
        return f"Redis database {self.db}, key prefix {self.key_prefix!r} (redis://{self.server}/{self.db})"

    def as_value(self) -> str:
        value: dict[str, object] = {"server": self.server, "db": self.db, "key_prefix": self.key_prefix}
        if self.queues is not None:
            value["queues"] = dict(zip(QUEUE_SETTINGS, self.queues, strict=True))
        return json.dumps(value, sort_keys=True)

    @classmethod
    def from_value(cls, value: str) -> BrokerIdentity | None:
        try:
            data = json.loads(value)
            queues = data.get("queues")
            named = None if queues is None else tuple(str(queues[setting]) for setting in QUEUE_SETTINGS)
            return cls(str(data["server"]), str(data["db"]), str(data["key_prefix"]), named)
        except (ValueError, KeyError, TypeError, AttributeError):
            return None

    def other_queues(self, site: BrokerIdentity) -> list[str]:
        """Each queue name of this node's that is not the site's, in words naming its setting; none when the site's
        record has no queue names."""
        if self.queues is None or site.queues is None:
            return []
        return [
            f"broker.{setting} (RADTRACE_BROKER__{setting.upper()}) is {own!r} here, {theirs!r} on the site"
            for setting, own, theirs in zip(QUEUE_SETTINGS, self.queues, site.queues, strict=True)
            if own != theirs
        ]

    def same_doorbell(self, site: BrokerIdentity) -> bool:
        """The same database number, key prefix and queue names (the server may be named otherwise)."""
        return (self.db, self.key_prefix) == (site.db, site.key_prefix) and not self.other_queues(site)


def broker_identity(settings: Settings) -> BrokerIdentity | None:
    """This node's Redis broker as :class:`BrokerIdentity`; None for the embedded broker and other transports."""
    url = settings.broker.url
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        return None
    try:
        port = parts.port or 6379
    except ValueError:  # a port that is not a number: the broker check says so
        return None
    db = parts.path.strip("/") or "0"
    queues = tuple(str(getattr(settings.broker, setting)) for setting in QUEUE_SETTINGS)
    return BrokerIdentity(f"{parts.hostname or 'localhost'}:{port}", db, settings.broker.key_prefix, queues)


def site_broker_check(settings: Settings, service: str) -> Check | None:
    """This node's Redis database number, key prefix and queue names against the site's recorded ones, on PostgreSQL
    with a Redis broker (``None`` elsewhere: the embedded database and broker are one host's); see the module
    docstring."""
    if broker_identity(settings) is None:
        return None
    return judged_on_postgresql(settings, lambda s, store: _judge(s, store, service))


def _judge(settings: Settings, store: Store, service: str) -> Check:
    from radtrace.store.nodes import live_nodes
    from radtrace.store.site_settings import read_site_setting, record_site_setting

    own = broker_identity(settings)
    assert own is not None
    by = f"{service} on {socket.gethostname()}"
    recorded = read_site_setting(store, _SETTING)
    if recorded is None:
        recorded = record_site_setting(store, _SETTING, own.as_value(), by, replace=False)
    site = BrokerIdentity.from_value(recorded.value)
    if site is not None and site.queues is None and site == BrokerIdentity(own.server, own.db, own.key_prefix):
        # recorded before queue names were: this node agrees with the rest of it, so its queue names complete it
        recorded = record_site_setting(store, _SETTING, own.as_value(), by, replace=True)
        site = BrokerIdentity.from_value(recorded.value)
    if site == own:
        return Check(_NAME, "ok", f"{own.describe()}, as recorded by {recorded.recorded_by}")
    running = [node for node in live_nodes(store, stale_after_s=settings.store.node_stale_after_s)
               if node.role not in _WITHOUT_BROKER]  # fmt: skip
    was = (
        f"the site's is {site.describe() if site else 'unreadable'}, recorded by {recorded.recorded_by} at "
        f"{recorded.recorded_at:%Y-%m-%d %H:%M} UTC"
    )
    if not running:  # the site was stopped (to move its broker): this node's is the site's from now on
        record_site_setting(store, _SETTING, own.as_value(), by, replace=True)
        return Check(_NAME, "warning", f"{was}; no radtrace process runs on it now, so this node's {own.describe()} "
                     "is recorded as the site's: the site's other hosts must use it too")  # fmt: skip
    runs = "; ".join(f"{node.role} on {node.host}" for node in running[:5]) + (
        f" and {len(running) - 5} more" if len(running) > 5 else ""
    )
    if site is not None and own.same_doorbell(site):
        return Check(_NAME, "warning", f"this node's broker is {own.describe()}; {was}, used by {runs}: another "
                     f"name of the same Redis is fine, another Redis never gets this node work; {_REMEDY}")  # fmt: skip
    queues = "; ".join(own.other_queues(site)) if site is not None else ""
    return Check(_NAME, "failed", f"this node's broker is {own.describe()}; {was}, used by {runs}"
                 f"{f'; {queues}' if queues else ''}: a node on another Redis database number, key prefix or queue "
                 f"name than the site's never receives work, or rings where no one listens; {_REMEDY}",
                 config_error=True)  # fmt: skip
