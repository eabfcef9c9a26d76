"""What happened to the studies: ``radtrace status``, ``radtrace study show|retry``, ``radtrace drafts``."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console, Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from radtrace.audit.events import AuditEvent, EventType
from radtrace.cli.common import (
    EXIT_FAILED,
    EXIT_USAGE,
    app,
    fail,
    open_store,
    out,
    refuse_foreign_data_dir,
    refuse_missing_database,
    settings_of,
)
from radtrace.config import Settings
from radtrace.errors import RadtraceError
from radtrace.logging import escape as terminal_text

if TYPE_CHECKING:
    from radtrace.dicom_listener.reassigned import FlaggedRevision
    from radtrace.reporting.draft_store import DraftRevision, DraftView
    from radtrace.store.engine import Store
    from radtrace.worker.status import FailedRevision


@app.command()
def status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    broker: Annotated[bool, typer.Option(help="Also ask the broker for its queue depths.")] = True,
) -> None:
    """Show revisions per state, outbox deliveries, queue depths, the oldest waiting and failures with reasons.

    Exits 1 when the broker does not answer (with --broker, the default), after printing the rest."""
    from radtrace.cli.node_rows import node_rows, node_rows_table
    from radtrace.worker.disk_space import data_disk_line
    from radtrace.worker.status import collect_status

    settings = settings_of(ctx)
    with open_store(settings) as store:  # its errors: one line, a database that does not answer naming store.url
        report = collect_status(settings, store, with_queues=broker)
        nodes = node_rows(store, stale_after_s=settings.store.node_stale_after_s)  # which hosts run what
    program = _program(ctx)
    disk = data_disk_line(settings.data_dir, settings.listener.min_free_bytes)  # None while the data disk has room
    if as_json:
        data = report.as_json()
        data["data_disk"] = disk
        data["nodes"] = [row.as_json() for row in nodes]
        for ended in (*data["failed"], *data["skipped"], *data["holds"], *data["model_stops"]):  # type: ignore[misc]
            again = ended["again"]
            ended["again"] = [_pasteable(c, program) for c in again] if isinstance(again, list) else _pasteable(
                again, program)  # fmt: skip
        if report.refusals is not None:  # the listener's refusals of the last hour
            data["listener_refusals"] = report.refusals.as_json() | {
                "again": [_pasteable(c, program) for c in report.refusals.commands()]
            }
        typer.echo(json.dumps(data, indent=2))
        if report.broker_error:
            raise typer.Exit(EXIT_FAILED)
        return
    if disk is not None:
        out.print(escape(terminal_text(disk)), highlight=False, soft_wrap=True)
    out.print(node_rows_table(nodes) if nodes else "radtrace processes (nodes table): none running", highlight=False)
    table = Table("state", "studies", "revisions", title="studies (by latest revision)", title_justify="left")
    for state, count in report.revisions.items():
        table.add_row(state, str(report.studies[state]), str(count))
    out.print(table)
    table = Table("state", "deliveries", title="outbox", title_justify="left")
    for state, count in report.outbox.items():
        table.add_row(state, str(count))
    out.print(table)
    for line in report.flag_lines():  # drafts read from an image the PACS re-sent elsewhere or rejected
        out.print(line, highlight=False, soft_wrap=True)
    for line in report.in_flight_lines():  # a dispatcher killed mid-send: its claim must expire first
        out.print(escape(terminal_text(line)), highlight=False, soft_wrap=True)
    for line in report.hold_lines():  # a PACS that rejected us for good: its deliveries wait for the command
        out.print(escape(terminal_text(_pasteable(line, program))), highlight=False)
    for line in report.refusals.lines() if report.refusals is not None else []:  # why a modality's studies don't come
        pasted = _pasteable(line, program) if line.startswith("  again: ") else line
        out.print(escape(terminal_text(pasted)), highlight=False, soft_wrap=True)
    if broker:
        table = Table("queue", "messages", title="broker queues", title_justify="left")
        for queue, depth in report.queues.items():
            table.add_row(queue, "unreachable" if depth is None else str(depth))
        out.print(table)
        if report.broker_error:
            out.print(f"broker: {escape(terminal_text(report.broker_error))}: no doorbell rings while it is down "
                      "(the reconciler rings again once it answers)", highlight=False, soft_wrap=True)  # fmt: skip
    oldest = report.oldest_waiting
    if oldest is None:
        out.print("oldest waiting: none")
    else:
        out.print(
            f"oldest waiting: study {oldest.study_uid or oldest.study_key} revision {oldest.revision} "
            f"{oldest.state.value} for {oldest.waiting_s:.0f} s",
            highlight=False,
        )
        if oldest.reason:  # e.g. "waiting: model server unavailable since ..."
            out.print(f"  reason: {escape(terminal_text(oldest.reason))}", highlight=False)
    for title, revisions in (("failed", report.failed), ("skipped", report.skipped)):
        if revisions:
            out.print(_ended_table(title, revisions, program), crop=False)  # the commands whole, at any width
    if broker and report.broker_error:
        raise typer.Exit(EXIT_FAILED)


def _reassigned(store: Store, study_uid: str | None = None, mark: str = "reassigned_at") -> list[FlaggedRevision]:
    """Revisions read from an image the PACS re-sent under another patient or study (``rejected_at``: that it
    rejected), of one study or all."""
    from radtrace.dicom_listener.reassigned import flagged_revisions

    with store.session() as session:
        return flagged_revisions(session, study_uid, mark)


def _program(ctx: typer.Context) -> str:
    """How to run radtrace again as this command was run: the program (its path when ``radtrace`` on PATH is another
    or none) and the global options given (--config, --log-format, --log-level), shell-quoted, so that a command
    printed for pasting uses the same settings."""
    program = "radtrace"
    invoked = sys.argv[0] if sys.argv else ""
    if Path(invoked).name == "radtrace" and os.sep in invoked:
        found = shutil.which("radtrace")
        if found is None or Path(found).resolve() != Path(invoked).resolve():
            program = shlex.quote(invoked)
    params = ctx.find_root().params
    words = [program]
    for option, name in (("--config", "config"), ("--log-format", "log_format"), ("--log-level", "log_level")):
        if params.get(name) is not None:
            words += [option, shlex.quote(str(params[name]))]
    return " ".join(words)


def _pasteable(command: str, program: str) -> str:
    """``command`` (or a line holding one, ``… again: radtrace …``) with ``radtrace`` as :func:`_program` says."""
    head, found, rest = command.partition("radtrace ")
    if not found or (head and not head.rstrip().endswith(":")):
        return command
    return f"{head}{program} {rest}"


def _ended_table(title: str, revisions: list[FailedRevision], program: str = "radtrace") -> Group:
    """Failed or skipped revisions by Study UID and accession, each with its whole reason, wrapped."""
    width = max(40, out.width - 4)
    lines: list[Any] = [Text(f"{title} (newest first; details: radtrace study show UID)", "bold")]
    for revision in revisions:
        finished = f" · finished {revision.finished_at:%Y-%m-%d %H:%M:%S} UTC" if revision.finished_at else ""
        lines.append(Text(revision.study_uid, "cyan", no_wrap=True, overflow="ignore"))
        lines.append(
            Text(
                f"    accession {terminal_text(revision.accession or '—')} · revision {revision.revision}"
                f" · {revision.state.value} · {revision.attempts} attempt(s){finished}"
            )
        )
        reason = textwrap.fill(
            terminal_text(revision.reason or "(no reason recorded)"),
            width,
            initial_indent="    reason: ",
            subsequent_indent="    ",
        )
        lines.append(Text(reason, no_wrap=True, overflow="ignore"))
        # A delivery that failed is asked for again per destination, once what its reason names is fixed; study
        # retry would read nothing again (the draft is made).
        after = " (after fixing what the reason says)" if revision.failed_deliveries else ""
        for command in revision.again:
            lines.append(Text(f"    again: {_pasteable(command, program)}{after}", no_wrap=True, overflow="ignore"))
    return Group(*lines)


# --- study -------------------------------------------------------------------------------------

study_app = typer.Typer(help="Show one study's revisions, or retry a failed or skipped one.", no_args_is_help=True)
app.add_typer(study_app, name="study")


@study_app.command("show")
def study_show(
    ctx: typer.Context,
    study_uid: Annotated[str, typer.Argument(help="Study Instance UID.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """A study's revisions: state, full reason, attempts, instances, SR and deliveries (exit 1 if unknown)."""
    from radtrace.worker.study_detail import study_detail

    with open_store(settings_of(ctx)) as store:
        detail = study_detail(store, study_uid)
        reassigned = _reassigned(store, study_uid)
        rejected = _reassigned(store, study_uid, mark="rejected_at")
    if detail is None:
        fail(f"no study {study_uid} was received (radtrace status lists failed and skipped ones)")
    if as_json:
        marks = {
            "reassigned_revisions": [r.revision for r in reassigned],
            "rejected_revisions": [r.revision for r in rejected],
            "checked_revisions": sorted({r.revision for r in [*reassigned, *rejected] if r.checked_at is not None}),
        }
        typer.echo(json.dumps(detail.as_json() | marks, indent=2))
        return
    # The accession is what a peer sent: shown as text (no rich markup), control characters as in the log.
    accession = terminal_text(detail.accession or "—")
    out.print(Text(f"study {detail.study_uid} · accession {accession} · key {detail.study_key}"))
    table = Table("rev", "state", "attempts", "instances", "opened (UTC)", "SR", "deliveries", "reason")
    for rev in detail.revisions:
        deliveries = "\n".join(f"{terminal_text(name)}: {state}" for name, state in rev.deliveries.items())
        table.add_row(
            str(rev.number), rev.state.value, str(rev.attempts), str(rev.instances),
            f"{rev.opened_at:%Y-%m-%d %H:%M:%S}", rev.sr_sop_instance_uid or "",
            escape(deliveries or "none (drafts kept)"), escape(terminal_text(rev.reason or "")),
        )  # fmt: skip
    table.columns[-1].overflow = "fold"
    out.print(table)
    for flagged in reassigned:
        out.print(f"revision {flagged.revision}: an image it read was re-sent by the PACS under another patient/study "
                  f"({flagged.marked_at:%Y-%m-%d %H:%M:%S} UTC): {_checked(flagged)} "
                  "(audit: instance_reassigned)", highlight=False, soft_wrap=True, markup=False)  # fmt: skip
    for flagged in rejected:
        out.print(f"revision {flagged.revision}: an image it read was rejected by the PACS (rejection note, "
                  f"{flagged.marked_at:%Y-%m-%d %H:%M:%S} UTC): {_checked(flagged)} "
                  "(audit: instance_rejection_noted)", highlight=False, soft_wrap=True, markup=False)  # fmt: skip


def _checked(flagged: FlaggedRevision) -> str:
    """Whether a radiologist checked a flagged revision (the console's Checked: accepting its draft is allowed)."""
    if flagged.checked_at is None:
        return "do not sign its draft before checking"
    return (f"checked by {terminal_text(flagged.checked_by or '?')} ({flagged.checked_at:%Y-%m-%d %H:%M:%S} UTC; "
            "audit: image_flags_checked)")  # fmt: skip


@study_app.command("retry")
def study_retry(
    ctx: typer.Context,
    study_uid: Annotated[str, typer.Argument(help="Study Instance UID.")],
    revision: Annotated[int | None, typer.Option(help="Revision number; default the latest failed or skipped.")] = None,
) -> None:
    """Ask again for a failed or skipped revision (audited as study_retried).

    A reading is queued as a new attempt. A revision that failed for a delivery is not read again: its failed
    deliveries are made pending again (as 'radtrace dispatch retry' does, for this revision only). A revision flagged
    because an image it read was re-sent under another patient/study or rejected by the PACS is not retried (its
    draft stays withdrawn): the refusal names the revision that reads the study's images now.
    """
    from radtrace.audit.operations import local_operator
    from radtrace.worker.doorbell import ring_dispatch, ring_process
    from radtrace.worker.study_retry import StudyNotRetriableError, retry_revision

    settings = settings_of(ctx)
    with open_store(settings) as store:
        try:
            done = retry_revision(store, study_uid, revision, local_operator())
        except StudyNotRetriableError as exc:
            fail(exc.reason)
    missed = "the broker did not answer: the reconciler will pick it up"
    said = f"revision {done.number} of study {escape(study_uid)} was {done.previous.value}"
    if not done.redelivered:
        rung = ring_process(settings, study_uid, done.number)
        out.print(f"{said}; queued again{'' if rung else f' ({missed})'}", highlight=False)
        return
    unrung = sum(1 for outbox_id, _ in done.redelivered if not ring_dispatch(settings, outbox_id))
    out.print(f"{said} for a delivery; not read again (its draft is kept)", highlight=False, soft_wrap=True)
    for _, name in done.redelivered:
        out.print(f"pending again: {escape(name)}", highlight=False, soft_wrap=True)
    if unrung:
        out.print(f"{missed} ({unrung} of them)", highlight=False)


# --- drafts ------------------------------------------------------------------------------------

drafts_app = typer.Typer(help="List, read and export the kept drafts (SR, HL7, FHIR).", no_args_is_help=True)
app.add_typer(drafts_app, name="drafts")


def _record_draft_use(settings: Settings, kind: EventType, study_uid: str, revision: int, **details: Any) -> None:
    """Audit a person reading or exporting a draft (when the work database exists)."""
    from radtrace.audit.operations import local_operator
    from radtrace.audit.recorder import AuditRecorder

    with open_store(settings) as store:
        AuditRecorder(store).record(
            AuditEvent(kind, local_operator(), study_uid=study_uid, payload={"revision": revision, **details})
        )


@drafts_app.command("list")
def drafts_list(
    ctx: typer.Context,
    study_uid: Annotated[str | None, typer.Argument(help="Only this Study Instance UID.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the kept drafts, newest first: each study's key (as log lines name it), accession, study date, modality
    and state, and its Study UID (for drafts show)."""
    from radtrace.reporting.draft_store import drafts_root, list_drafts

    settings = settings_of(ctx)
    refuse_foreign_data_dir(settings)
    root = drafts_root(settings)
    try:
        kept = list_drafts(root, study_uid)
    except RadtraceError as exc:
        fail(exc.reason, EXIT_USAGE)
    if not kept and not as_json:
        refuse_missing_database(settings)  # no drafts because this is not the data directory in use?
        out.print(f"no drafts kept under {root}", highlight=False)
        return
    recorded, unread = _recorded_revisions(settings, {draft.study_uid for draft in kept})
    rows = [_draft_row(draft, recorded.get((draft.study_uid, draft.revision))) for draft in kept]
    if as_json:
        typer.echo(json.dumps([draft.as_json() | row for draft, row in zip(kept, rows, strict=True)], indent=2))
        return
    out.print(f"drafts under {root}/<Study UID>/<revision>/ (newest first; read one: radtrace drafts show UID)")
    table = Table("study key", "accession", "study date", "modality", "rev", "state", "written", "Study UID",
                  box=None, pad_edge=False, header_style="bold")  # fmt: skip
    for draft, row in zip(kept, rows, strict=True):
        table.add_row(
            row["study_key"], *(Text(terminal_text(row[name] or "—")) for name in ("accession", "study_date",
            "modality")), str(draft.revision), row["state"] or "—", f"{draft.modified:%Y-%m-%d %H:%M}",
            Text(terminal_text(draft.study_uid)),
        )  # fmt: skip
    # each draft on one line, its columns whole (the UID to paste into drafts show): a narrow terminal wraps the
    # line rather than rich squeezing the columns to nothing
    table.width = out.measure(table, options=out.options.update(max_width=100_000)).maximum
    out.print(table, crop=False)
    if unread:
        out.print(f"state and modality not shown: {escape(terminal_text(unread))}", highlight=False, soft_wrap=True)


def _draft_row(draft: DraftRevision, recorded: tuple[str, str | None] | None) -> dict[str, str | None]:
    """What identifies a kept draft to a person: the study's key, accession and study date as its SR holds them
    (the film's), and the modality and state the work database records (None where unknown)."""
    from pydicom import dcmread

    from radtrace.logging import study_key

    accession = study_date = None
    with contextlib.suppress(Exception):  # an SR that cannot be read: drafts show says why
        sr = dcmread(draft.files["sr"], stop_before_pixels=True, specific_tags=["AccessionNumber", "StudyDate"])
        accession, study_date = str(sr.get("AccessionNumber", "")) or None, str(sr.get("StudyDate", "")) or None
    if study_date and len(study_date) == 8 and study_date.isdigit():
        study_date = f"{study_date[:4]}-{study_date[4:6]}-{study_date[6:]}"
    state, modality = recorded or (None, None)
    return {
        "study_key": study_key(draft.study_uid),
        "accession": accession,
        "study_date": study_date,
        "modality": modality,
        "state": state,
    }


def _recorded_revisions(
    settings: Settings, study_uids: set[str]
) -> tuple[dict[tuple[str, int], tuple[str, str | None]], str | None]:
    """Each revision's state and its images' modalities ('CR', 'CR/DX') by (Study UID, number), from the work
    database; with what kept them from being read instead (the drafts are listed all the same)."""
    import sqlalchemy as sa

    from radtrace.store.engine import Store, is_sqlite
    from radtrace.store.models import Instance, Revision, Study

    if not study_uids:
        return {}, None
    if is_sqlite(settings.store_url) and not settings.store.url and not (settings.data_dir / "radtrace.db").is_file():
        return {}, f"no radtrace database at {(settings.data_dir / 'radtrace.db').resolve()}"
    found: dict[tuple[str, int], tuple[str, str | None]] = {}
    store: Store | None = None
    try:
        store = Store.from_url(settings.store_url, connect_timeout_s=settings.store.connect_timeout_s)
        uids = sorted(study_uids)
        with store.session("listing the kept drafts") as session:
            for start in range(0, len(uids), 500):
                chunk = uids[start : start + 500]
                modalities: dict[tuple[str, int], set[str]] = {}
                for uid, number, modality in session.execute(
                    sa.select(Study.study_uid, Revision.number, Instance.modality)
                    .join(Revision, Instance.revision_id == Revision.id)
                    .join(Study, Revision.study_id == Study.id)
                    .where(Study.study_uid.in_(chunk), Instance.modality.is_not(None))
                    .distinct()
                ):
                    if modality:
                        modalities.setdefault((uid, number), set()).add(modality)
                for uid, number, state in session.execute(
                    sa.select(Study.study_uid, Revision.number, Revision.state)
                    .join(Study, Revision.study_id == Study.id)
                    .where(Study.study_uid.in_(chunk))
                ):
                    seen = modalities.get((uid, number))
                    found[(uid, number)] = (str(state.value), "/".join(sorted(seen)) if seen else None)
    except RadtraceError as exc:
        return found, exc.reason
    finally:
        if store is not None:
            store.dispose()
    return found, None


@drafts_app.command("show")
def drafts_show(
    ctx: typer.Context,
    study_uid: Annotated[str, typer.Argument(help="Study Instance UID.")],
    revision: Annotated[int | None, typer.Option(help="Revision number; default the newest kept.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Print a kept draft as a reviewer reads it: findings, impression and the model's reasoning (audited)."""
    from radtrace.reporting.draft_store import drafts_root, read_draft

    settings = settings_of(ctx)
    refuse_foreign_data_dir(settings)
    try:
        view = read_draft(drafts_root(settings), study_uid, revision)
    except RadtraceError as exc:
        fail(exc.reason)
    _record_draft_use(settings, EventType.DRAFT_ACCESSED, view.study_uid, view.revision, via="cli")
    if as_json:
        typer.echo(json.dumps(view.as_json(), indent=2, ensure_ascii=False))
        return
    print_draft(out, view)


def print_draft(console: Console, view: DraftView) -> None:
    """A kept draft as text for a terminal. Its UIDs and file paths are never folded at the console's width (80
    columns when piped): folded, a path was copied back broken ("…/report.fhir.jso" and "n," on the next line), and
    a Study UID under ``/var/lib/radtrace/drafts`` makes every path longer than that."""
    console.print(Text(f"Draft report: study {view.study_uid}, revision {view.revision}", style="bold"), soft_wrap=True)
    console.print(
        Text(
            f"accession {view.accession or '—'} · SR {view.sr_sop_instance_uid} · written {view.content_datetime}"
            f" · {view.completion} / {view.verification}"
        ),
        soft_wrap=True,
    )
    console.print(draft_renderable(view))
    console.print(Text("Files:", style="dim"))
    for path in view.files.values():
        console.print(Text(f"  {path}", style="dim"), soft_wrap=True)


def draft_renderable(view: DraftView) -> Group:
    """A kept draft's body (model, notices, findings, impression, reasoning) as text for a terminal."""
    lines: list[Any] = []
    if view.observer:
        lines.append(Text(f"model: {view.observer}"))
    lines += [Text(notice, style="bold yellow") for notice in view.notices]
    table = Table("finding", "presence", "confidence", "devices", title="Findings", title_justify="left")
    for finding in view.findings:
        confidence = "" if finding.confidence is None else f"{finding.confidence:.2f}"
        table.add_row(escape(finding.label), finding.presence, confidence, escape(", ".join(finding.devices)))
    lines += [Text(""), table if view.findings else Text("Findings: none recorded")]
    lines += [Text(""), Text("Impression", style="bold"), Text(view.impression or "—")]
    lines += [Text(""), Text("Reasoning", style="bold")]
    lines += [_step(section, text) for section, text in view.reasoning] or [Text("—")]
    lines.append(Text(""))
    return Group(*lines)


def _step(section: str, text: str) -> Text:
    """A reasoning step, headed by its section unless the model's text already names it."""
    if section.lower() in text[:60].lower():
        return Text(text)
    return Text.assemble((f"{section}: ", "italic"), text)


@drafts_app.command("export")
def drafts_export(
    ctx: typer.Context,
    study_uid: Annotated[str, typer.Argument(help="Study Instance UID.")],
    to: Annotated[Path, typer.Option("--to", help="Folder to copy the draft files into (created).")],
    revision: Annotated[int | None, typer.Option(help="Revision number; default the newest kept.")] = None,
) -> None:
    """Copy a kept draft's files (sr.dcm, oru.hl7, report.fhir.json …) into a folder (audited)."""
    from radtrace.reporting.draft_store import drafts_root, list_drafts

    settings = settings_of(ctx)
    refuse_foreign_data_dir(settings)
    try:
        kept = [d for d in list_drafts(drafts_root(settings), study_uid) if revision in (None, d.revision)]
    except RadtraceError as exc:
        fail(exc.reason, EXIT_USAGE)
    if not kept:
        fail(f"no draft is kept for study {study_uid}" + (f" revision {revision}" if revision else ""))
    draft = max(kept, key=lambda d: d.revision)
    try:
        to.mkdir(parents=True, exist_ok=True)
        written = [Path(shutil.copy2(path, to / path.name)) for path in draft.files.values()]
    except OSError as exc:
        fail(f"could not export to {to}: {exc.strerror or exc}")
    _record_draft_use(
        settings, EventType.DRAFT_EXPORTED, study_uid, draft.revision, via="cli", to=str(to.resolve()),
        files=[path.name for path in written],
    )  # fmt: skip
    for path in written:
        out.print(str(path), highlight=False)
