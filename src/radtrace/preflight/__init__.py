"""Start-up checks shared by every long-running radtrace service.

Each check is a plain value; the CLI says them (:mod:`radtrace.cli.startup`) and refuses to start on a failed one.
Each service runs the checks that apply to it (:func:`run_preflight`): a model that cannot read is a warning for
``serve`` and the inference worker (which waits for it) and no concern of the listener, dispatcher or QA API.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from radtrace.config import Settings, unread_dotenv
from radtrace.preflight.broker import BROKER_DOWN, embedded_broker, external_broker
from radtrace.preflight.check import Check, failed_checks
from radtrace.preflight.clock import clock_check
from radtrace.preflight.database import database_check, start_node_watch, store_problem
from radtrace.preflight.directories import data_dir_problem, free_space, writable_directory
from radtrace.preflight.model import check_model_weights
from radtrace.preflight.ports import (
    api_bind_problem,
    bind_api_socket,
    bind_problem,
    check_ports,
    listener_port_problem,
    metrics_port_problem,
    metrics_ports,
)
from radtrace.preflight.shared_data import shared_data_check
from radtrace.preflight.site_broker import site_broker_check
from radtrace.preflight.site_model import site_model_check
from radtrace.preflight.tls import atna_tls_check, pacs_tls_check, ris_tls_check, tls_check

__all__ = [
    "Check",
    "Service",
    "api_bind_problem",
    "atna_tls_check",
    "bind_api_socket",
    "bind_problem",
    "check_model_weights",
    "check_ports",
    "data_dir_problem",
    "failed_checks",
    "for_serve",
    "listener_port_problem",
    "metrics_port_problem",
    "metrics_ports",
    "ris_tls_check",
    "run_preflight",
    "start_node_watch",
    "store_problem",
]

#: Who runs the checks: ``serve`` (all of them), or one of the commands the deployments start alone (``radtrace
#: listen``, ``worker`` with the gpu queue, a dispatch-only ``worker``, ``api``).
Service = Literal["serve", "listener", "worker", "dispatcher", "api"]


def for_serve(checks: list[Check]) -> list[Check]:
    """The checks as ``serve`` must judge them: it is started by hand, so what a systemd unit waits out (a disk
    below the limit, an external broker that does not answer) is a mistake to correct before starting (exit 2).

    Before, serve started with a broker.url that answered nothing (a typo, Redis not started) and its workers
    logged Celery's reconnect errors every few seconds, and a full disk was exit 1 with no remedy.
    """
    judged = []
    for check in checks:
        if check.name == "free disk space" and check.status == "failed":
            check = Check(check.name, "failed", check.detail, config_error=True)
        elif check.name == "broker" and check.status == "warning":
            detail = check.detail.split(f"; {BROKER_DOWN['serve']}", 1)[0]
            check = Check(
                "broker", "failed", f"{detail}: start it, correct broker.url (RADTRACE_BROKER__URL), or unset "
                "broker.url for the embedded broker (one machine)", config_error=True,
            )  # fmt: skip
        judged.append(check)
    return judged


def run_preflight(settings: Settings, service: Service = "serve") -> list[Check]:
    """Run ``service``'s start-up checks, creating the data directories on the way.

    Every service: the settings (a ``./.env`` not in effect), the data directory, the work database (on PostgreSQL,
    this machine's clock against the server's; for a worker, dispatcher or QA API, that its data directory is the
    one the listener writes: :func:`shared_data_check`). The listener, workers and serve: the spool, quarantine and
    free space, the broker. The listener and serve: the listener's TLS files. Serve and the workers that deliver: the
    CA store a TLS PACS is checked against, and the RIS's TLS files (:func:`ris_tls_check`); serve: the ATNA
    forwarder's TLS files (``radtrace audit forward`` checks them itself, :func:`atna_tls_check`). The QA API: the
    broker only with the review console (which rings the dispatcher). Each that uses the broker, on PostgreSQL with
    Redis: its database number, key prefix and queue names against the site's (:func:`site_broker_check`). The model
    backend: serve and the inference worker only; the inference worker on PostgreSQL: its model settings against the
    running workers' newest readings (:func:`site_model_check`)."""
    dotenv = unread_dotenv(Path.cwd(), os.environ)
    checks = [Check("settings", "ok", "loaded and valid") if dotenv is None else Check("settings", "warning", dotenv)]
    problem = data_dir_problem(settings.data_dir, create=True)
    if problem is not None:  # every other check would fail on it too: say it once, with what to change
        return [*checks, Check("data directory", "failed", problem, config_error=True)]
    checks.append(writable_directory("data directory", settings.data_dir))
    if service != "api":
        checks += [
            writable_directory("spool", settings.spool_dir),
            writable_directory("quarantine", settings.quarantine_dir),
            free_space(settings),
        ]
    outbound = {"serve": (tls_check, pacs_tls_check, ris_tls_check, atna_tls_check), "listener": (tls_check,),
                "worker": (pacs_tls_check, ris_tls_check), "dispatcher": (pacs_tls_check, ris_tls_check)}  # fmt: skip
    checks += [tls for judge in outbound.get(service, ()) if (tls := judge(settings)) is not None]
    checks.append(database := database_check(settings))
    if database.status != "failed" and (clock := clock_check(settings)) is not None:
        checks.append(clock)
    if database.status != "failed" and (shared := shared_data_check(settings, service)) is not None:
        checks.append(shared)
    if service != "api" or settings.console.enabled:
        checks.append(embedded_broker(settings) or external_broker(settings, service))
        if database.status != "failed" and (site := site_broker_check(settings, service)) is not None:
            checks.append(site)  # a Redis database number or key prefix the site's other nodes do not use
    if service in ("serve", "worker"):
        checks.append(check_model_weights(settings))
    if service == "worker" and database.status != "failed" and (model := site_model_check(settings)) is not None:
        checks.append(model)
    return checks
