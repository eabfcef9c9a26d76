"""What happened to the studies: ``radtrace status``, ``radtrace study show|retry``, ``radtrace drafts``."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from radtrace.cli.common import app, fail, open_store, out, settings_of
from radtrace.errors import RadtraceError


@app.command()
def status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    broker: Annotated[bool, typer.Option(help="Also ask the broker for its queue depths.")] = True,
) -> None:
    """Show revisions per state, outbox deliveries, queue depths, the oldest waiting and failures with reasons."""
    from radtrace.worker.status import collect_status

    settings = settings_of(ctx)
    with open_store(settings) as store:
        try:
            report = collect_status(settings, store, with_queues=broker)
        except RadtraceError as exc:
            fail(exc.reason)
    if as_json:
        typer.echo(json.dumps(report.as_json(), indent=2))
        return
    table = Table("state", "studies", "revisions", title="studies (by latest revision)", title_justify="left")
    for state, count in report.revisions.items():
        table.add_row(state, str(report.studies[state]), str(count))
    out.print(table)
    table = Table("state", "deliveries", title="outbox", title_justify="left")
    for state, count in report.outbox.items():
        table.add_row(state, str(count))
    out.print(table)
    if broker:
        table = Table("queue", "messages", title="broker queues", title_justify="left")
        for queue, depth in report.queues.items():
            table.add_row(queue, "unreachable" if depth is None else str(depth))
        out.print(table)
    oldest = report.oldest_waiting
    if oldest is None:
        out.print("oldest waiting: none")
    else:
        out.print(
            f"oldest waiting: study {oldest.study_key} revision {oldest.revision} {oldest.state.value} "
            f"for {oldest.waiting_s:.0f} s",
            highlight=False,
        )
    if report.failed:
        table = Table("study", "revision", "attempts", "finished", "reason", title="failed", title_justify="left")
        for failed_revision in report.failed:
            finished = failed_revision.finished_at.isoformat(timespec="seconds") if failed_revision.finished_at else ""
            table.add_row(
                failed_revision.study_key, str(failed_revision.revision), str(failed_revision.attempts), finished,
                escape(failed_revision.reason or ""),
            )  # fmt: skip
        out.print(table)
