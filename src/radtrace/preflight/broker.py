"""The broker: the embedded one's tables created once, an external one that answers."""

from __future__ import annotations

import time

from radtrace.config import Settings
from radtrace.preflight.check import Check

__all__ = ["BROKER_DOWN", "embedded_broker", "external_broker"]

#: What a broker that does not answer means, for each service, in its own log line. Before, the one sentence
#: "studies are received and wait until it does" was said by every service, the QA API included, which receives none.
BROKER_DOWN = {
    "serve": "studies are received and wait until it does",
    "listener": "studies are received and wait until it does",
    "worker": "this worker reads no study until it does; studies received wait in 'queued'",
    "dispatcher": "no report is delivered until it does; each waits in the outbox",
    "api": "reports approved in the review console wait in the outbox until it does",
}


def embedded_broker(settings: Settings) -> Check | None:
    """Create the embedded broker's tables once, here: children creating them at the same moment race
    ("table kombu_queue already exists") and a worker then reports its broker connection lost."""
    from radtrace.worker.app import create_app, is_embedded_broker

    if not is_embedded_broker(settings):
        return None
    problem = ""
    for _attempt in range(3):  # processes started together (systemd units) may still race here: try again
        try:
            with create_app(settings, with_tasks=False).connection_for_write() as connection:
                connection.ensure_connection(max_retries=1)
                _ = connection.default_channel.session  # creates the kombu tables
        except Exception as exc:  # kombu and SQLAlchemy raise many types; the check only reports
            problem = f"{type(exc).__name__}: {exc}"
            time.sleep(0.2)
            continue
        return Check("embedded broker", "ok", settings.broker_url.removeprefix("sqla+sqlite:///"))
    return Check("embedded broker", "failed", f"{settings.broker_url}: {problem}")


def external_broker(settings: Settings, service: str = "serve") -> Check:
    """A Redis (or other external) broker answers. Only a warning: the database is the record and the broker a
    doorbell, so studies are still received and the reconciler rings for them once it answers; but a mistyped
    broker.url should be said at start, not only in the workers' reconnect lines. ``service`` says what it means
    for that service (:data:`BROKER_DOWN`)."""
    from radtrace.config_reference import masked_settings
    from radtrace.worker.app import create_app

    shown = masked_settings(settings)["broker"]["effective_url"]
    try:
        with create_app(settings, with_tasks=False).connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=3)
    except Exception as exc:  # kombu and redis-py raise many types; the check only reports
        return Check(
            "broker",
            "warning",
            f"{shown} does not answer ({exc}); {BROKER_DOWN[service]} (broker.url, RADTRACE_BROKER__URL)",
        )
    return Check("broker", "ok", shown)
