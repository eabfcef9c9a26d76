"""What a long-running command says about its start-up checks, and how it refuses to start: one function for
``serve`` and for ``listen``, ``worker`` and ``api``.

``serve``, started by hand in a terminal, prints them as a table. ``listen``, ``worker`` and ``api`` are what the
systemd units, compose and Kubernetes start, alone, and there the log is what is read: each warning and each failure
is one log line (with the fields ``check``, ``result`` and ``service``: one journald entry, one JSON object with
``--log-format json``). Before, those three said none of their warnings (a ``./.env`` whose ``RADTRACE_*`` variables
were not in effect, an external broker that did not answer, weights the worker could not load) and ``api`` ran no
check at all. Started by ``serve`` (``--started-by-serve``), whose table already said the warnings, a child says only
its failures.

A failed check refuses the start either way, with the same exit status: 2 when only a change on this host can fix
every failure, a setting or this host's radtrace below the database's floor (systemd's ``RestartPreventExitStatus=2``
then stops restarting it, serve stops), else 1 (a PostgreSQL schema older than this code is 1: the unit starts by
itself once 'radtrace db upgrade' has run).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.table import Table

from radtrace.cli.common import EXIT_FAILED, EXIT_USAGE, fail, out

if TYPE_CHECKING:
    from radtrace.preflight import Check

__all__ = ["say_checks"]

log = logging.getLogger(__name__)

_COLOUR = {"ok": "green", "warning": "yellow", "failed": "red"}


def say_checks(ctx: typer.Context, checks: list[Check], *, service: str) -> None:
    """Say ``service``'s start-up ``checks`` (serve: a table; alone: a log line for each that is not ok) and exit
    with serve's refusal status when one failed."""
    from radtrace.preflight import failed_checks

    if service == "serve":
        table = Table("check", "result", "detail", title="radtrace serve: start-up checks", title_justify="left")
        for check in checks:
            table.add_row(check.name, f"[{_COLOUR[check.status]}]{check.status}[/]", escape(check.detail))
        out.print(table)
    else:
        started_by_serve = bool(ctx.find_root().params.get("started_by_serve"))
        for check in checks:
            if check.status == "failed" or (check.status == "warning" and not started_by_serve):
                log.log(logging.ERROR if check.status == "failed" else logging.WARNING, "start-up check %r %s: %s",
                        check.name, check.status, check.detail,
                        extra={"check": check.name, "result": check.status, "service": service})  # fmt: skip
    failed = failed_checks(checks)
    if failed:
        names = ", ".join(check.name for check in failed)
        fail(
            f"start-up checks failed ({names}); see the table above"
            if service == "serve"
            else f"{service} not started: start-up checks failed ({names}); see the log lines above",
            EXIT_USAGE if all(check.config_error for check in failed) else EXIT_FAILED,
        )
