"""The Celery app factory: Redis in production, an embedded SQLite broker on one machine.

The broker is a doorbell, never the truth (DESIGN.md, principle 1): messages carry IDs only, as JSON;
a message lost with Redis or with a killed worker is rung again by the reconciler from the rows.

* Redis (``broker.url = redis://…``): every key under ``broker.key_prefix``; an unacknowledged
  message comes back after ``broker.visibility_timeout_s``.
* Embedded (the default, ``sqla+sqlite:///<data_dir>/broker.db``): kombu's SQLAlchemy transport on
  one SQLite file, no server. It polls; the interval is a class attribute of the transport, because
  kombu hands ``broker_transport_options`` to ``create_engine`` (a ``polling_interval`` there crashes),
  so the app uses a subclass with ``broker.embedded_polling_interval_s`` set on it.

Queues: ``broker.gpu_queue`` (inference; prefetch 1, ``acks_late``, ``reject_on_worker_lost``) and
``broker.dispatch_queue`` (deliveries). Task names are explicit (:mod:`radtrace.worker.tasks`).

STAT studies are rung on ``broker.stat_queue``, which GPU workers consume before ``broker.gpu_queue``:
Redis pops the queues in the order given (``queue_order_strategy = priority``), so a waiting STAT
doorbell is taken first. The embedded broker takes queues in turn; there the worker's own look for
waiting STAT revisions in the database (:meth:`~radtrace.worker.pipeline.StudyPipeline.waiting_stat`)
puts them first.
"""

from __future__ import annotations

import logging
from pathlib import Path
from queue import Empty
from typing import Any, Final

from celery import Celery
from kombu.entity import Exchange
from kombu.entity import Queue as BrokerQueue

from radtrace.config import Settings

__all__ = ["DISPATCH_TASK", "PROCESS_TASK", "create_app", "is_embedded_broker"]

log = logging.getLogger(__name__)

PROCESS_TASK: Final = "radtrace.process_study"
DISPATCH_TASK: Final = "radtrace.dispatch"
_EMBEDDED_SCHEME: Final = "sqla+"


def is_embedded_broker(settings: Settings) -> bool:
    """Whether the broker is the embedded SQLAlchemy (SQLite) transport rather than a server."""
    return settings.broker_url.startswith(_EMBEDDED_SCHEME)


def _embedded_transport(polling_interval_s: float) -> type[Any]:
    import warnings

    import sqlalchemy as sa
    from kombu.transport.sqlalchemy import Channel, Transport
    from kombu.transport.sqlalchemy.models import Message, Queue

    # kombu's Queue.messages relationship uses lazy="noload", deprecated in SQLAlchemy 2.1: the warning fires
    # when the mappers are configured, on the first send. Define kombu's two classes (as its Channel does,
    # default table names) and configure them here, once, with that one warning silenced.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*noload.*", category=sa.exc.SADeprecationWarning)
        define: Any = Channel._declarative_cls  # uses no instance state
        define(None, "Queue", Queue, {"__tablename__": "kombu_queue"})
        define(None, "Message", Message, {"__tablename__": "kombu_message"})
        sa.orm.configure_mappers()

    kombu_engine: Any = Channel._engine_from_config

    def engine_from_config(channel: Any) -> Any:
        engine = kombu_engine(channel)
        if engine.dialect.name == "sqlite":
            sa.event.listen(engine, "connect", _broker_pragmas)
        return engine

    channel = type("EmbeddedChannel", (Channel,), {"_engine_from_config": engine_from_config, "_get": _get_unless_full})
    return type(
        "EmbeddedTransport",
        (Transport,),
        {"polling_interval": polling_interval_s, "Channel": channel, "drain_events": _drain_events_until_stopping},
    )


def _drain_events_until_stopping(transport: Any, connection: Any, timeout: float | None = None) -> Any:
    """kombu's ``drain_events`` (poll, sleep ``polling_interval``, until a message or ``timeout``), which also ends
    once the worker is stopping (the embedded transport's).

    Celery's loop asks for events with a 2 s timeout and looks whether SIGTERM asked it to stop only between two such
    calls: an idle worker went on polling for up to 2 s after the signal, and a message that came meanwhile was
    taken and read (a whole study on the solo pool) before it stopped. Now the wait is sliced at the polling interval
    and ends (``socket.timeout``, what Celery's loop expects of an idle wait) as soon as a warm or cold shutdown has
    been asked for; nothing more is taken. A message being handled is not interrupted: that happens inside a slice.
    """
    import time

    from celery.worker import state
    from kombu.transport.sqlalchemy import Transport

    def stopping() -> bool:  # as celery.worker.state.maybe_shutdown reads them: a warm stop sets should_stop to 0
        return any(flag is not None and flag is not False for flag in (state.should_stop, state.should_terminate))

    deadline = None if timeout is None else time.monotonic() + timeout
    while not stopping():
        try:  # timeout 0: one look at the queues, no sleep
            return Transport.drain_events(transport, connection, timeout=0)  # type: ignore[no-untyped-call]
        except TimeoutError:  # socket.timeout
            pass
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            break
        time.sleep(transport.polling_interval if remaining is None else min(transport.polling_interval, remaining))
    raise TimeoutError  # socket.timeout: what Celery's loop expects of a wait that took nothing


def _get_unless_full(channel: Any, queue: str) -> Any:
    """kombu's ``Channel._get``, waiting out a full disk instead of losing the connection (the embedded channel's).

    Taking a message marks it delivered (an UPDATE): on a full disk its commit fails with SQLITE_FULL, which kombu
    counts as a lost connection, so Celery's consumer reconnected five times a second (two warnings each, a
    'Frequent restarts detected' traceback every second), leaked a pooled connection each time (the failed
    session was never rolled back), and after 15 ended the worker ('Unrecoverable error: QueuePool limit ...
    reached'); under systemd, restarted into the start-up checks, which fail on a full disk. Now the session is
    rolled back, the channel answers 'no message' (the message stays where it is, not delivered), says so once
    (:class:`~radtrace.worker.broker_space.BrokerSpace`) and does not touch the database again for 1 s, doubling
    up to 30 s while the disk stays full; the first message taken again says the space is back.
    """
    from kombu.transport.sqlalchemy import Channel

    from radtrace.worker.broker_space import BrokerSpace

    space: BrokerSpace | None = channel.__dict__.get("_radtrace_space")
    if space is None:
        space = channel._radtrace_space = BrokerSpace(str(channel.connection.client.hostname or ""))
    if space.waiting():
        raise Empty()
    try:
        message = Channel._get(channel, queue)  # type: ignore[no-untyped-call]
    except Empty:  # no message: a read, which proves nothing about the space
        raise
    except Exception as exc:
        if not space.is_full(exc):
            raise
        channel.session.rollback()
        space.full()
        raise Empty() from exc
    space.taken()
    return message


def _broker_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL and NORMAL sync for broker.db: a commit costs ~5 ms instead of ~16 ms in the rollback journal.

    The broker is a doorbell: a message lost with the last transactions before a power cut is rung
    again by the reconciler from the work database, which keeps its full durability.
    """
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def _queue(name: str) -> Any:
    # Each queue its own direct exchange and routing key: sharing the default exchange and key would copy
    # every message into both queues.
    return BrokerQueue(name, Exchange(name, type="direct"), routing_key=name)  # type: ignore[no-untyped-call]


def create_app(settings: Settings, *, with_tasks: bool = True) -> Celery:
    """A Celery app for ``settings``; with ``with_tasks`` the worker's tasks are registered on it.

    Senders (the doorbell) need no tasks: they send by name.
    """
    broker = settings.broker
    app = Celery("radtrace", set_as_current=False)
    transport_options: dict[str, Any] = {}
    url = settings.broker_url
    conf: dict[str, Any] = {}
    if is_embedded_broker(settings):
        url = url[len(_EMBEDDED_SCHEME) :]
        if url.startswith("sqlite:///"):  # kombu cannot create the file's directory
            Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        conf["broker_transport"] = _embedded_transport(broker.embedded_polling_interval_s)
    else:
        transport_options.update(
            visibility_timeout=broker.visibility_timeout_s,
            socket_connect_timeout=5,
            socket_timeout=30,
            queue_order_strategy="priority",  # the queues in the order the worker names them: STAT first
        )
        if broker.key_prefix:
            transport_options["global_keyprefix"] = broker.key_prefix
    conf.update(
        broker_url=url,
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        # Celery's default, 100 tries 2 s to 30 s apart, ended every worker ~46 min into a Redis outage with
        # "Unrecoverable error" and a traceback, exit 1: a worker waits the outage out, as at its start
        broker_connection_max_retries=None,
        broker_connection_timeout=5,
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        result_backend=None,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_default_queue=broker.gpu_queue,
        task_queues=[_queue(broker.stat_queue), _queue(broker.gpu_queue), _queue(broker.dispatch_queue)],
        task_routes={
            PROCESS_TASK: {"queue": broker.gpu_queue},
            DISPATCH_TASK: {"queue": broker.dispatch_queue},
        },
        task_publish_retry=True,
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5},
        timezone="UTC",
        enable_utc=True,
    )
    app.conf.update(conf)
    if with_tasks:
        from radtrace.worker.tasks import register_tasks

        register_tasks(app, settings)
    return app
