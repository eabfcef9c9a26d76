"""``radtrace audit verify|checkpoint|query|timeline|rebind`` and ``radtrace audit token create|list|revoke``."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.markup import escape
from rich.table import Table

from radtrace.cli.common import EXIT_USAGE, audit_app, err, fail, open_store, out, row_progress, settings_of, token_app

if TYPE_CHECKING:
    from radtrace.audit.rebind import Rebound

QueryFormat = Literal["table", "json", "csv"]
TimelineFormat = Literal["table", "json"]


@audit_app.command("verify")
def audit_verify(
    ctx: typer.Context,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            help="A signed checkpoint kept elsewhere, checked too (needs the key); every checkpoint in "
            "audit.checkpoint_dir is always checked."
        ),
    ] = None,
) -> None:
    """Walk the audit hash chain against every signed checkpoint held and say what that proves (exit 1 if not)."""
    from radtrace.audit.checkpoints import CheckpointSource
    from radtrace.audit.operations import local_operator, verify_audit_log

    settings = settings_of(ctx)
    key = settings.audit.checkpoint_key
    if checkpoint is not None and key is None:
        fail("audit.checkpoint_key is not set (RADTRACE_AUDIT__CHECKPOINT_KEY): it is needed to check a checkpoint",
             EXIT_USAGE)  # fmt: skip
    with open_store(settings) as store, row_progress("verifying audit chain") as advance:
        verified = verify_audit_log(
            store,
            local_operator(),
            checkpoint_file=checkpoint,
            checkpoints=CheckpointSource.for_settings(settings),
            progress=advance,
        )
    result = verified.result
    out.print(f"checked {result.rows_checked} events; head seq {result.head_seq}, hash {result.head_hash}")
    if not verified.ok:
        if len(verified.problems) == 1:
            fail(verified.problems[0])
        for problem in verified.problems:  # in seq order, then the checkpoints
            err.print(escape(problem), highlight=False)
        fail(f"the audit log does not verify: the {len(verified.problems)} problems above")
    out.print(f"[green]audit chain valid[/]: {escape(verified.covered)}.", highlight=False)
    out.print(f"Not checked: {escape(verified.not_covered)}.", highlight=False)


@audit_app.command("checkpoint")
def audit_checkpoint(
    ctx: typer.Context,
    output: Annotated[Path | None, typer.Option(help="File to write; default audit.checkpoint_dir.")] = None,
) -> None:
    """Verify the chain, then write an HMAC-signed checkpoint (seq, hash) of its head, to keep outside the database."""
    from radtrace.audit.checkpoints import checkpoint_dir
    from radtrace.audit.operations import checkpoint_audit_log, local_operator
    from radtrace.errors import PermanentError

    settings = settings_of(ctx)
    key = settings.audit.checkpoint_key
    if key is None:
        fail("audit.checkpoint_key is not set (RADTRACE_AUDIT__CHECKPOINT_KEY); it has no default", EXIT_USAGE)
    directory = checkpoint_dir(settings)
    if output is None:
        output = directory / f"audit-checkpoint-{datetime.now(UTC):%Y%m%dT%H%M%S.%fZ}.json"
    with open_store(settings) as store:
        try:
            written = checkpoint_audit_log(
                store, local_operator(), key.get_secret_value().encode(), output, held_in=directory
            )
        except PermanentError as exc:
            fail(exc.reason)
    out.print(f"checkpoint of seq {written.seq} ({written.hash}) written to {output}; keep a copy off this host")


@audit_app.command("query")
def audit_query(
    ctx: typer.Context,
    study_uid: Annotated[str | None, typer.Option(help="Study Instance UID.")] = None,
    accession: Annotated[str | None, typer.Option(help="Accession number.")] = None,
    patient_id: Annotated[str | None, typer.Option(help="Patient ID (the lookup is itself audited with it).")] = None,
    since: Annotated[str | None, typer.Option(help="Recorded at or after, ISO 8601 with zone.")] = None,
    until: Annotated[str | None, typer.Option(help="Recorded before, ISO 8601 with zone.")] = None,
    event_type: Annotated[str | None, typer.Option(help="One event type, e.g. inference_completed.")] = None,
    model_name: Annotated[str | None, typer.Option(help="Model name.")] = None,
    model_version: Annotated[str | None, typer.Option(help="Model version.")] = None,
    label: Annotated[
        str | None,
        typer.Option(
            help="One finding label, or a received instance's character-set flag (character-set-assumed, "
            "character-set-doubtful), matched exactly."
        ),
    ] = None,
    outcome: Annotated[str | None, typer.Option(help="success, minor_failure, serious_failure, major_failure.")] = None,
    actor: Annotated[str | None, typer.Option(help="The user who acted (console user or API token name).")] = None,
    limit: Annotated[int, typer.Option(help="Events per page, 1-1000.")] = 100,
    after_seq: Annotated[int, typer.Option(help="Only events after this seq (the previous page's cursor).")] = 0,
    before_seq: Annotated[
        int | None, typer.Option(help="Only events before this seq (with --newest-first: the previous page's cursor).")
    ] = None,
    newest_first: Annotated[
        bool, typer.Option("--newest-first", help="The newest events first (page back with --before-seq).")
    ] = False,
    output_format: Annotated[QueryFormat, typer.Option("--format", help="How to print the page.")] = "table",
    timeline: Annotated[
        bool, typer.Option("--timeline", help="With --study-uid: the study's timeline (as `audit timeline`).")
    ] = False,
) -> None:
    """Query audit events for QA, oldest first (or newest first), one page at a time. The query itself is recorded."""
    from radtrace.audit.operations import local_operator
    from radtrace.audit.presentation import csv_chunks, page_json, page_table
    from radtrace.audit.queries import AuditQuery, QueryError, run_query

    if timeline:
        others = [accession, patient_id, since, until, event_type, model_name, model_version, label, outcome, actor]
        if study_uid is None or any(value is not None for value in others) or output_format == "csv":
            fail("--timeline takes --study-uid and --format table or json, and no other filter", EXIT_USAGE)
        _print_timeline(ctx, study_uid, output_format)
        return
    try:
        query = AuditQuery.parse(
            study_uid=study_uid, accession=accession, patient_id=patient_id, since=since, until=until,
            event_type=event_type, model_name=model_name, model_version=model_version, label=label,
            outcome=outcome, actor=actor, limit=limit, after_seq=after_seq, before_seq=before_seq,
            order="desc" if newest_first else "asc",
        )  # fmt: skip
    except QueryError as exc:
        fail(exc.reason, EXIT_USAGE)
    with open_store(settings_of(ctx)) as store:
        page = run_query(store, query, local_operator())
    if output_format == "json":
        typer.echo(page_json(page))
    elif output_format == "csv":
        for chunk in csv_chunks(page.events):
            typer.echo(chunk, nl=False)
    else:
        out.print(page_table(page))


@audit_app.command("export")
def audit_export(
    ctx: typer.Context,
    output_format: Annotated[
        Literal["atna-xml", "jsonl"], typer.Option("--format", help="atna-xml: PS3.15 A.5 messages; jsonl: rows.")
    ],
    output: Annotated[Path | None, typer.Option(help="File to write (default: standard output).")] = None,
    study_uid: Annotated[str | None, typer.Option(help="Study Instance UID.")] = None,
    since: Annotated[str | None, typer.Option(help="Recorded at or after, ISO 8601 with zone.")] = None,
    until: Annotated[str | None, typer.Option(help="Recorded before, ISO 8601 with zone.")] = None,
    event_type: Annotated[str | None, typer.Option(help="One event type, e.g. inference_completed.")] = None,
) -> None:
    """Export audit events, one per line, for sites that collect audit trails by file (the export is recorded)."""
    import socket
    import sys

    from radtrace.audit.atna.export import write_export
    from radtrace.audit.atna.message import AuditSource
    from radtrace.audit.operations import local_operator
    from radtrace.audit.queries import AuditFilter, QueryError, export_records

    settings = settings_of(ctx)
    try:
        selection = AuditFilter.parse(study_uid=study_uid, since=since, until=until, event_type=event_type)
    except QueryError as exc:
        fail(exc.reason, EXIT_USAGE)
    host = socket.gethostname()
    source = AuditSource(settings.atna.audit_source_id or host, settings.atna.enterprise_site_id, host=host)
    # Opened before the export is recorded: an output that cannot be written leaves no "exported" event.
    try:
        handle = sys.stdout.buffer if output is None else output.open("wb")
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror or exc}", EXIT_USAGE)
    with open_store(settings) as store, contextlib.ExitStack() as closing:
        if output is not None:
            closing.enter_context(handle)
        records = export_records(store, selection, local_operator())
        try:
            written = write_export(records, output_format, source, handle)
        except OSError as exc:  # e.g. the disk filled up: the file is incomplete
            fail(f"export to {output or 'standard output'} failed, the output is incomplete: {exc.strerror or exc}")
    err.print(f"exported {written} audit events as {output_format}" + (f" to {output}" if output else ""))


@audit_app.command("forward")
def audit_forward(
    ctx: typer.Context,
    once: Annotated[
        bool,
        typer.Option(
            "--once",
            help="Stop once every event recorded so far is delivered; exit 1 if the repository does not answer "
            "for 15 s.",
        ),
    ] = False,
) -> None:
    """Send the audit log to the audit record repository (IHE ATNA, settings atna.*): in order, at least once.

    Run on its own, it is a row of the database's ``nodes`` table while it runs (``radtrace db upgrade`` sees it) and
    watches the database's floor, as ``listen``, ``worker`` and ``api`` do; a newer radtrace that raised the floor or
    migrated the database stops it (exit 2, the watch's line naming both versions). Under ``radtrace serve``, serve's
    row and watch stand for it."""
    import os
    import signal
    import threading

    from radtrace.audit.atna.forwarder import ONCE_GIVE_UP_S, forwarder_from_settings
    from radtrace.cli.startup import say_checks
    from radtrace.errors import RadtraceError
    from radtrace.metrics_server import start_metrics_server
    from radtrace.preflight import atna_tls_check, start_node_watch
    from radtrace.supervisor import SERVED_CHILD_ENV

    settings = settings_of(ctx)
    if not settings.atna.host:
        fail("atna.host is not set (RADTRACE_ATNA__HOST): there is no repository to forward to", EXIT_USAGE)
    # The CA bundle and client certificate judged now, not at the first connection in the night (exit 2, or a
    # warning for a certificate ending soon): radtrace.preflight.tls, as serve and the listener do.
    say_checks(ctx, [tls] if (tls := atna_tls_check(settings)) is not None else [], service="atna forwarder")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    # A database already above this code's floor: exit 2, as when the watch stops it, so that systemd does not restart
    # it every few seconds until this host's radtrace is upgraded (deploy/systemd: RestartPreventExitStatus=2).
    with open_store(settings, too_old_exit=EXIT_USAGE) as store:
        # The watch's SIGTERM, once a newer radtrace raised the floor, is the handler's above: the forwarder stops at
        # its next step, the cursor kept at what the repository has settled.
        watch = None if os.environ.get(SERVED_CHILD_ENV) else start_node_watch(settings, "atna forwarder")
        try:
            forwarder = forwarder_from_settings(store, settings)
            if settings.atna.metrics_port is not None:
                # Unauthenticated, so bound where the listener's and workers' metrics are (listener.metrics_host, else
                # listener.host), not on every interface as prometheus_client's default had it; every scraper bounded.
                start_metrics_server(
                    settings.atna.metrics_port,
                    addr=settings.listener.metrics_bind_host,
                    registry=forwarder.metrics.registry,
                )
            forwarder.run(stop, until_caught_up=once, give_up_after_s=ONCE_GIVE_UP_S if once else None)
        except RadtraceError as exc:
            fail(exc.reason, EXIT_USAGE if not exc.retryable else 1)
        finally:
            if watch is not None:
                watch.stop()  # its row removed
    if watch is not None and watch.problem is not None:  # the watch's log line said why, naming both versions
        fail(f"audit forwarder stopped with audit events delivered up to seq {forwarder.cursor.seq}: this radtrace "
             "may no longer work on the database (the line above); the rest wait for an upgraded forwarder, from "
             "its cursor", EXIT_USAGE)  # fmt: skip
    err.print(f"audit events delivered up to seq {forwarder.cursor.seq}")


@audit_app.command("timeline")
def audit_timeline(
    ctx: typer.Context,
    study_uid: Annotated[str, typer.Argument(help="Study Instance UID.")],
    output_format: Annotated[TimelineFormat, typer.Option("--format", help="How to print it.")] = "table",
) -> None:
    """One study's events with the time between them and each stage's duration (exit 1 if it has none)."""
    _print_timeline(ctx, study_uid, output_format)


def _print_timeline(ctx: typer.Context, study_uid: str, output_format: str) -> None:
    from radtrace.audit.operations import local_operator
    from radtrace.audit.presentation import timeline_json, timeline_renderable
    from radtrace.audit.queries import QueryError, study_timeline

    with open_store(settings_of(ctx)) as store:
        try:
            timeline = study_timeline(store, study_uid, local_operator())
        except QueryError as exc:
            fail(exc.reason, EXIT_USAGE)
    if not timeline.entries:
        fail(f"no audit event names study {study_uid}")
    if output_format == "json":
        typer.echo(timeline_json(timeline))
    else:
        out.print(timeline_renderable(timeline))


@token_app.command("create")
def audit_token_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Who or what uses the token; recorded as the user of every query.")],
    role: Annotated[Literal["qa", "admin"], typer.Option(help="qa reads; admin also verifies and exports.")],
) -> None:
    """Create a QA API token and print its secret on stdout, once: only its SHA-256 is kept."""
    from radtrace.audit.operations import local_operator
    from radtrace.audit.tokens import TokenError, create_token

    with open_store(settings_of(ctx)) as store:
        try:
            issued = create_token(store, name, role, local_operator())
        except TokenError as exc:
            fail(exc.reason, EXIT_USAGE)
    err.print(f"{role} token {escape(name)!r} created; it is shown only this once:", highlight=False)
    typer.echo(issued.secret)


@token_app.command("list")
def audit_token_list(ctx: typer.Context) -> None:
    """List the QA API tokens (names, roles, dates; never secrets)."""
    from radtrace.audit.tokens import list_tokens

    with open_store(settings_of(ctx)) as store:
        tokens = list_tokens(store)
    table = Table("name", "role", "created (UTC)", "revoked (UTC)", title="QA API tokens", title_justify="left")
    for token in tokens:
        revoked = f"{token.revoked_at:%Y-%m-%d %H:%M:%S}" if token.revoked_at else ""
        table.add_row(escape(token.name), token.role.value, f"{token.created_at:%Y-%m-%d %H:%M:%S}", revoked)
    out.print(table)


@token_app.command("revoke")
def audit_token_revoke(ctx: typer.Context, name: Annotated[str, typer.Argument(help="The token's name.")]) -> None:
    """Revoke a QA API token at once; requests with it get 401 from then on."""
    from radtrace.audit.operations import local_operator
    from radtrace.audit.tokens import TokenError, revoke_token

    with open_store(settings_of(ctx)) as store:
        try:
            token = revoke_token(store, name, local_operator())
        except TokenError as exc:
            fail(exc.reason, EXIT_USAGE)
    out.print(f"token {escape(name)!r} revoked at {token.revoked_at:%Y-%m-%d %H:%M:%S} UTC", highlight=False)


@audit_app.command("rebind")
def audit_rebind(ctx: typer.Context) -> None:
    """Record in the audit log the tokens and console accounts created before radtrace bound credentials to it.

    Run once after upgrading: until then such a token or account is refused. The chain is verified first;
    a token or account that no creation event records as it stands is refused (exit 1) and reported.
    """
    from radtrace.audit.checkpoints import CheckpointSource
    from radtrace.audit.operations import ChainNotVerifiedError, local_operator
    from radtrace.audit.rebind import rebind_credentials

    settings = settings_of(ctx)
    with open_store(settings) as store:
        try:
            done = rebind_credentials(store, local_operator(), CheckpointSource.for_settings(settings))
        except ChainNotVerifiedError as exc:
            fail(exc.reason)
    report_rebound(done)


def report_rebound(done: Sequence[Rebound]) -> None:
    """Print what rebinding did to each token and account; exit 1 when one stays refused."""
    for item in done:
        line = f"{item.kind} {escape(item.name)!r}: {item.outcome}"
        if item.reason:
            err.print(f"{line}: {escape(item.reason)}", highlight=False)
        else:
            out.print(line, highlight=False)
    if any(item.outcome == "refused" for item in done):
        fail("some tokens or accounts are not recorded in the audit log and stay refused (a tamper_detected event "
             "names each): revoke them, or check who changed the database")  # fmt: skip
