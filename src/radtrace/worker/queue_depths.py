"""Messages waiting in each queue (the doorbells waiting), read from the broker for ``radtrace status`` and the
metrics; when the broker does not answer, the depths are unknown and it is said why."""

from __future__ import annotations

import logging

from radtrace.config import Settings

__all__ = ["queue_depths", "queue_depths_and_error"]

log = logging.getLogger(__name__)

_KOMBU_PRIORITY_STEPS = (0, 3, 6, 9)  # kombu's Redis default; step 0 is the queue's own list


def queue_depths(settings: Settings) -> dict[str, int | None]:
    """Messages waiting in each queue; ``None`` for a queue whose broker cannot be reached."""
    return queue_depths_and_error(settings)[0]


def queue_depths_and_error(settings: Settings) -> tuple[dict[str, int | None], str | None]:
    """:func:`queue_depths` and, when they are unknown, why (the broker's URL without its password)."""
    from radtrace.config_reference import mask_url_password
    from radtrace.worker.app import is_embedded_broker

    names = [settings.broker.stat_queue, settings.broker.gpu_queue, settings.broker.dispatch_queue]
    depths: dict[str, int | None] = dict.fromkeys(names)
    try:
        depths.update(
            _embedded_depths(settings, names) if is_embedded_broker(settings) else _redis_depths(settings, names)
        )
    except Exception as exc:  # broker down or queue never declared: show unknown, not a traceback
        # said by the caller (radtrace status's broker row, the metrics' log line): here it was said twice
        log.debug("queue depths unavailable: %s: %s", type(exc).__name__, exc)
        url = mask_url_password(settings.broker_url)
        return depths, f"the broker at {url} did not answer ({type(exc).__name__}: {exc}) (broker.url)"
    return depths, None


def _embedded_depths(settings: Settings, names: list[str]) -> dict[str, int]:
    from radtrace.worker.app import create_app

    app = create_app(settings, with_tasks=False)
    with app.connection_for_read() as connection:
        connection.ensure_connection(max_retries=1, timeout=5)
        channel = connection.default_channel
        return {name: int(channel.queue_declare(queue=name, passive=True).message_count) for name in names}


def _redis_depths(settings: Settings, names: list[str]) -> dict[str, int]:
    """LLEN of each queue's lists, read directly: kombu's passive declare misses lists under a global key prefix.

    kombu keeps a queue in one Redis list per priority step: ``<prefix><queue>`` and ``<prefix><queue>\\x06\\x16<n>``.
    """
    import redis

    client = redis.Redis.from_url(settings.broker_url, socket_connect_timeout=5, socket_timeout=5)
    try:
        prefix = settings.broker.key_prefix
        depths = {}
        for name in names:
            keys = [f"{prefix}{name}", *(f"{prefix}{name}\x06\x16{step}" for step in _KOMBU_PRIORITY_STEPS[1:])]
            depths[name] = sum(int(client.llen(key)) for key in keys)
        return depths
    finally:
        client.close()
