"""``radtrace send``: a C-STORE client for operators and tests, with a refusal told in one line and its remedy."""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from radtrace.cli.common import EXIT_FAILED, EXIT_USAGE, app, err, fail, out, settings_of
from radtrace.config import Settings, ae_title_problem
from radtrace.errors import RadtraceError
from radtrace.supervisor import LOCAL_CALLER

if TYPE_CHECKING:
    from radtrace.dicom_listener.scu import NoAssociationError, Rejection

__all__ = ["refusal_message", "send"]


@app.command()
def send(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="DICOM files or folders to send.")],
    host: Annotated[str, typer.Option(help="The peer's host.")] = "127.0.0.1",
    port: Annotated[int | None, typer.Option(help="The peer's port; default listener.port.")] = None,
    called_ae: Annotated[str | None, typer.Option(help="The peer's AE title; default listener.ae_title.")] = None,
    calling_ae: Annotated[
        str, typer.Option(help="Our AE title; the default is the caller 'make run' admits from this machine.")
    ] = LOCAL_CALLER,
) -> None:
    """Send DICOM files to a peer by C-STORE (operator and test tool); exit 1 unless all succeed (a DICOMDIR, the
    index of a CD's files, and files in a folder that are no DICOM at all are skipped and listed).

    Files go as they are on disk, in their own transfer syntax, over one association. A peer that refuses the
    association is named with its reason and what to change (exit 2 for a permanent refusal: AE titles).
    """
    from radtrace.dicom_listener.scu import NoAssociationError, send_files, summarise
    from radtrace.dicom_listener.scu_files import collect_files

    settings = settings_of(ctx)
    files = collect_files(paths)
    missing = [str(p) for p in files if not p.is_file()]
    if missing or not files:
        fail(f"no such file: {', '.join(missing)}" if missing else "no files to send", EXIT_USAGE)
    called_ae = called_ae or settings.listener.ae_title
    for option, title in (("--called-ae", called_ae), ("--calling-ae", calling_ae)):
        problem = ae_title_problem(title)
        if problem:
            fail(f"{option} {title!r}: {problem}", EXIT_USAGE)
    port = port or settings.listener.port
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        fail(f"--host {host!r} is not a known host name or address ({exc.strerror})", EXIT_USAGE)
    _quiet_pynetdicom()
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=err, transient=True,
    ) as progress:  # fmt: skip
        task = progress.add_task(f"C-STORE to {called_ae}", total=len(files))
        try:
            results = send_files(
                files, host, port, called_ae=called_ae, calling_ae=calling_ae,
                progress=lambda _result: progress.advance(task),
                found_in_folders=set(files) - {p for p in paths if not p.is_dir()},
            )  # fmt: skip
        except NoAssociationError as exc:
            progress.stop()
            if exc.rejection is not None:
                message = refusal_message(exc.rejection, settings, host, port, called_ae, calling_ae)
                fail(message, EXIT_USAGE if exc.rejection.permanent else EXIT_FAILED)
            fail(f"{exc.reason}: {_no_association_hint(exc, settings, host, port)}")
        except RadtraceError as exc:
            progress.stop()
            fail(f"{exc.reason}: {_no_association_hint(None, settings, host, port)}")
    table = Table("status", "files", title="C-STORE results", title_justify="left")
    for status, count in sorted(summarise(results).items()):
        table.add_row(status, str(count))
    out.print(table)
    for failed in (r for r in results if not r.ok):
        said = f"skipped: {failed.note}" if failed.skipped else failed.note or "failed"
        err.print(f"{escape(str(failed.path))}: {said}", highlight=False)
    sent = [r for r in results if not r.skipped]  # a DICOMDIR is listed, not sent: the films decide
    if not sent or not all(r.ok for r in sent):
        raise typer.Exit(EXIT_FAILED)


def refusal_message(
    refusal: Rejection, settings: Settings, host: str, port: int, called_ae: str, calling_ae: str
) -> str:
    """One line: who refused, the A-ASSOCIATE-RJ's codes and reason in plain words (PS3.8 table 9-21), and what
    to change. Exit 2 goes with a permanent refusal (AE titles: trying again unchanged cannot help)."""
    said = (
        f"{called_ae} at {host}:{port} refused the association "
        f"(A-ASSOCIATE-RJ {refusal.codes}: {refusal.result_words} by the {refusal.source_words}: "
    )
    match (refusal.source, refusal.reason):
        case (1, 3):
            return (
                f"{said}calling AE title {calling_ae!r} not recognised): that listener does not admit "
                f"{calling_ae!r} from this host; pass a --calling-ae it admits, or add this caller to its "
                "listener.allowed_callers (RADTRACE_LISTENER__ALLOWED_CALLERS; the listener's log line gives the "
                "value to set)"
            )
        case (1, 7):
            ours = settings.listener.ae_title
            hint = f" (this machine's listener.ae_title is {ours!r})" if ours != called_ae else ""
            return (
                f"{said}called AE title {called_ae!r} not recognised): pass --called-ae with the peer's own AE "
                f"title (a radtrace listener's listener.ae_title){hint}; if that title is right, the peer may not "
                f"admit calling AE {calling_ae!r} (dcmtk's dcmqrscp gives this reason then)"
            )
        case (3, 2):
            return (
                f"{said}local limit exceeded): the peer holds as many associations as it allows (a radtrace "
                "listener's listener.max_associations, or its per-source limit); try again when its other senders "
                "have finished"
            )
        case (3, 1):
            return (
                f"{said}temporary congestion): the peer is busy or its disk is nearly full (a radtrace listener "
                "refuses below listener.min_free_bytes free; its log says which); try again later"
            )
    remedy = (
        f"check --called-ae and that the peer admits calling AE {calling_ae!r} from this host"
        if refusal.permanent
        else "try again later"
    )
    return f"{said}{refusal.reason_words}): {remedy}"


def _no_association_hint(error: NoAssociationError | None, settings: Settings, host: str, port: int) -> str:
    """What a newcomer should check when nothing (or not DICOM) answered."""
    from radtrace.dicom_listener.scu import answers_http

    if error is not None and error.not_dicom:
        if error.http or answers_http(host, port):
            return (
                "that port answers HTTP, not DICOM (the QA API's api.port?); send to the DICOM listener's "
                f"listener.port ({settings.listener.port} in this machine's settings)"
            )
        return (
            "that port answered, but not in DICOM; send to a DICOM listener's port (radtrace's is listener.port, "
            f"{settings.listener.port} in this machine's settings)"
        )
    return (
        "is a DICOM listener running there? check --host and --port (radtrace's is listener.port, "
        "not the QA API's api.port)"
    )


def _quiet_pynetdicom() -> None:
    """pynetdicom's error lines are not printed (what happened is said once, in our words); they stay printed at
    --log-level DEBUG. For the rest of this command: its reader thread may still log the peer's last bytes after
    we have said what happened. pynetdicom's own NullHandler keeps Python's last-resort handler quiet."""
    logging.getLogger("pynetdicom").propagate = logging.getLogger().getEffectiveLevel() <= logging.DEBUG
