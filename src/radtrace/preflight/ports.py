"""The ports radtrace's servers listen on: free, and allowed to this user, naming the setting to change."""

from __future__ import annotations

import errno
import socket

from radtrace.config import Settings
from radtrace.ports import bound_socket
from radtrace.preflight.check import Check

__all__ = [
    "api_bind_problem",
    "bind_api_socket",
    "bind_problem",
    "check_ports",
    "listener_port_problem",
    "metrics_port_problem",
    "metrics_ports",
]


def bind_api_socket(settings: Settings) -> socket.socket:
    """A TCP socket bound to ``api.host``:``api.port`` with the options uvicorn binds with (not yet listening);
    ``OSError`` when the address cannot be bound (see :func:`api_bind_problem`)."""
    return bound_socket(settings.api.host, settings.api.port)


def _api_port_free(settings: Settings) -> Check:
    """The QA API's address can be bound, as ``radtrace api`` will bind it."""
    host, port = settings.api.host, settings.api.port
    try:
        bind_api_socket(settings).close()
    except OSError as exc:
        return Check("QA API port", "failed", api_bind_problem(host, port, exc), config_error=True)
    return Check("QA API port", "ok", f"{host}:{port}")


def api_bind_problem(host: str, port: int, exc: OSError) -> str:
    """Why the QA API cannot listen on ``host:port``, naming the settings to change."""
    return bind_problem(host, port, "api.port, RADTRACE_API__PORT", exc)


def bind_problem(host: str, port: int, setting: str, exc: OSError) -> str:
    """Why ``host:port`` cannot be listened on, naming ``setting`` (the setting and its variable) to change."""
    if exc.errno == errno.EADDRINUSE:
        return (
            f"port {port} on {host} is already in use by another program ({setting}): choose a free port or stop "
            "that program"
        )
    if exc.errno == errno.EACCES:
        return f"port {port} needs privileges this user lacks ({setting}): use a port above 1023"
    return f"cannot listen on {host}:{port} ({setting}): {exc.strerror or exc}"


def metrics_ports(settings: Settings) -> list[tuple[int, str]]:
    """Each metrics port ``serve``'s children bind, with the setting that gives it: the listener's (one per listener
    process), the worker's (``broker.metrics_port``) and the dispatcher's (the next one), the ATNA forwarder's."""
    ports: list[tuple[int, str]] = []
    listener, worker = settings.listener.metrics_port, settings.broker.metrics_port
    if listener is not None:
        for index in range(settings.listener.processes):
            plus = f" + {index} (listener process {index})" if settings.listener.processes > 1 else ""
            ports.append((listener + index, f"listener.metrics_port{plus}, RADTRACE_LISTENER__METRICS_PORT"))
    if worker is not None:
        ports.append((worker, "broker.metrics_port (the worker's), RADTRACE_BROKER__METRICS_PORT"))
        ports.append((worker + 1, "broker.metrics_port + 1 (the dispatcher's), RADTRACE_BROKER__METRICS_PORT"))
    if settings.atna.enabled and settings.atna.metrics_port is not None:
        ports.append((settings.atna.metrics_port, "atna.metrics_port, RADTRACE_ATNA__METRICS_PORT"))
    return ports


def _metrics_ports_free(settings: Settings) -> Check | None:
    """Every metrics port serve's children will bind can be bound (None: no metrics port is set). Before, a metrics
    port another program held was found by the child itself, an OSError traceback, and the child was restarted for
    ever."""
    ports = metrics_ports(settings)
    if not ports:
        return None
    if (problem := metrics_port_problem(settings, ports)) is not None:
        return Check("metrics ports", "failed", problem, config_error=True)
    host = settings.listener.metrics_bind_host
    return Check("metrics ports", "ok", ", ".join(f"{host}:{port}" for port, _ in ports))


def metrics_port_problem(settings: Settings, ports: list[tuple[int, str]]) -> str | None:
    """Why one of ``ports`` (port, setting) cannot be bound on ``listener.metrics_bind_host`` as the metrics server
    binds it, naming its setting (:func:`bind_problem`), or None."""
    host = settings.listener.metrics_bind_host
    for port, setting in ports:
        try:
            bound_socket(host, port).close()  # as http.server binds (SO_REUSEADDR)
        except OSError as exc:
            return bind_problem(host, port, setting, exc)
    return None


def listener_port_problem(settings: Settings) -> str | None:
    """Why this user may not listen on ``listener.port`` or ``listener.plain_port`` at all (a port below 1024 without
    the privilege), or None.

    Only privilege is judged here: a port in use is left to ``radtrace listen``'s locks, which say who holds it.
    """
    from radtrace.listener_lock import listener_ports

    host = settings.listener.host or "0.0.0.0"  # noqa: S104
    for port, setting in listener_ports(settings):
        try:
            bound_socket(host, port).close()
        except OSError as exc:
            if exc.errno == errno.EACCES:
                return (
                    f"port {port} needs privileges this user lacks ({setting}): use a port above 1023 and tell the "
                    "PACS, or give the service CAP_NET_BIND_SERVICE (AmbientCapabilities= in its systemd unit)"
                )
    return None


def check_ports(settings: Settings) -> list[Check]:
    """For ``serve``: every port its children will listen on is free, so that serve refuses before it starts any
    child: the DICOM ports (the listener's locks, as ``radtrace listen`` takes them), the QA API's and the metrics
    ports when set."""
    from radtrace.listener_lock import listener_ports

    problem = listener_port_problem(settings) or _listener_lock_problem(settings)
    listener = (
        Check("DICOM port", "ok", ", ".join(f"{settings.listener.host}:{port}" for port, _ in listener_ports(settings)))
        if problem is None
        else Check("DICOM port", "failed", problem, config_error=True)
    )
    metrics = _metrics_ports_free(settings)
    return [listener, _api_port_free(settings), *([metrics] if metrics is not None else [])]


def _listener_lock_problem(settings: Settings) -> str | None:
    """Why ``radtrace listen`` would refuse its ports or data directory (:func:`radtrace.listener_lock.listener_locks`):
    another radtrace listener holds them (a ``make run`` still running in another terminal), said with its pid rather
    than as "QA API port 8080 is in use by another program" (the other serve's API); or another program accepts
    connections on a DICOM port. Before, that program's port was left to the listener: the table said "DICOM port
    ok", serve printed what next (its wait for the listener was answered by that program), then stopped."""
    from radtrace.listener_lock import ListenerLockError, listener_locks

    try:
        with listener_locks(settings):
            return None
    except ListenerLockError as exc:
        return exc.reason
