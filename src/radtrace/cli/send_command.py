"""``radtrace send``: a C-STORE client for operators and tests, with a refusal told in one line and its remedy."""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from radtrace.cli.common import EXIT_FAILED, EXIT_USAGE, app, err, fail, out, settings_of
from radtrace.config import Settings, ae_title_problem
from radtrace.errors import RadtraceError
from radtrace.supervisor import LOCAL_CALLER

__all__ = ["Refusal", "refusal_message", "send"]


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
    """Send DICOM files to a peer by C-STORE (operator and test tool); exit 1 unless all succeed.

    Files go as they are on disk, in their own transfer syntax, over one association. A peer that refuses the
    association is named with its reason and what to change (exit 2 for a permanent refusal: AE titles).
    """
    from radtrace.dicom_listener.scu import collect_files, send_files, summarise

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
    words = _pynetdicom_words()
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=err, transient=True,
    ) as progress:  # fmt: skip
        task = progress.add_task(f"C-STORE to {called_ae}", total=len(files))
        try:
            results = send_files(
                files, host, port, called_ae=called_ae, calling_ae=calling_ae,
                progress=lambda _result: progress.advance(task),
            )  # fmt: skip
        except RadtraceError as exc:
            progress.stop()
            refusal = words.refusal()
            if refusal is not None:
                fail(refusal_message(refusal, settings, host, port, called_ae, calling_ae), refusal.exit_code)
            fail(f"{exc.reason}: {_no_association_hint(words, settings)}")
    table = Table("status", "files", title="C-STORE results", title_justify="left")
    for status, count in sorted(summarise(results).items()):
        table.add_row(status, str(count))
    out.print(table)
    for failed in (r for r in results if not r.ok):
        err.print(f"{escape(str(failed.path))}: {failed.note or 'failed'}", highlight=False)
    if not all(r.ok for r in results):
        raise typer.Exit(EXIT_FAILED)


@dataclass(frozen=True)
class Refusal:
    """An A-ASSOCIATE-RJ as pynetdicom words it (PS3.8 9.3.4): result, source and reason."""

    result: str  # "Rejected Permanent" or "Rejected Transient"
    source: str  # "Service User", "Service Provider (ACSE)", "Service Provider (Presentation)"
    reason: str  # e.g. "Calling AE title not recognised"

    @property
    def permanent(self) -> bool:
        return self.result.endswith("Permanent")

    @property
    def exit_code(self) -> int:
        """2 (bad usage or configuration) for a permanent refusal: trying again unchanged cannot help."""
        return EXIT_USAGE if self.permanent else EXIT_FAILED


def refusal_message(refusal: Refusal, settings: Settings, host: str, port: int, called_ae: str, calling_ae: str) -> str:
    """One line: who refused, the reason in plain words, and what to change."""
    said = f"{called_ae} at {host}:{port} refused the association ({refusal.result.lower()}, {refusal.source}: "
    reason = refusal.reason.lower()
    if reason.startswith("calling ae title"):
        return (
            f"{said}calling AE title {calling_ae!r} not recognised): that listener does not admit {calling_ae!r} "
            "from this host; pass a --calling-ae it admits, or add this caller to its listener.allowed_callers "
            "(RADTRACE_LISTENER__ALLOWED_CALLERS; the listener's log line gives the value to set)"
        )
    if reason.startswith("called ae title"):
        ours = settings.listener.ae_title
        hint = f" (this machine's listener.ae_title is {ours!r})" if ours != called_ae else ""
        return (
            f"{said}called AE title {called_ae!r} not recognised): pass --called-ae with the peer's own AE title "
            f"(a radtrace listener's listener.ae_title){hint}"
        )
    if reason == "local limit exceeded":
        return (
            f"{said}local limit exceeded): the peer holds as many associations as it allows (a radtrace listener's "
            "listener.max_associations); try again when its other senders have finished"
        )
    if reason == "temporary congestion":
        return (
            f"{said}temporary congestion): the peer is busy or its disk is nearly full (a radtrace listener refuses "
            "below listener.min_free_bytes free; its log says which); try again later"
        )
    remedy = (
        f"check --called-ae and that the peer admits calling AE {calling_ae!r} from this host"
        if refusal.permanent
        else "try again later"
    )
    return f"{said}{refusal.reason}): {remedy}"


def _no_association_hint(words: _PynetdicomWords, settings: Settings) -> str:
    """What a newcomer should check when nothing (or not DICOM) answered."""
    if words.spoke_http:
        return (
            "that port answers HTTP, not DICOM (the QA API's api.port?); send to the DICOM listener's "
            f"listener.port ({settings.listener.port} in this machine's settings)"
        )
    return (
        "is a DICOM listener running there? check --host and --port (radtrace's is listener.port, "
        "not the QA API's api.port)"
    )


class _PynetdicomWords(logging.Handler):
    """pynetdicom's log records during one send: kept to be told in our words, not printed as its error lines."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record.getMessage())

    def refusal(self) -> Refusal | None:
        """The A-ASSOCIATE-RJ pynetdicom logged ("Result: R, Source: S" then "Reason: X"), if any."""
        result_source = next((r for r in self.records if r.startswith("Result: ") and ", Source: " in r), None)
        reason = next((r for r in self.records if r.startswith("Reason: ")), None)
        if result_source is None or reason is None:
            return None
        result, source = result_source.removeprefix("Result: ").split(", Source: ", 1)
        return Refusal(result.strip(), source.strip(), reason.removeprefix("Reason: ").strip())

    @property
    def spoke_http(self) -> bool:
        """The peer's first bytes were 'HTTP' (pynetdicom: "Unknown PDU type received '0x48'")."""
        return any("Unknown PDU type received '0x48'" in r for r in self.records)


def _pynetdicom_words() -> _PynetdicomWords:
    """Collect pynetdicom's records instead of printing them (they stay printed at --log-level DEBUG), for the rest
    of this command: its reader thread may still log the peer's last bytes after we have said what happened."""
    library = logging.getLogger("pynetdicom")
    words = _PynetdicomWords()
    library.addHandler(words)
    library.propagate = logging.getLogger().getEffectiveLevel() <= logging.DEBUG
    return words
