"""The ATNA forwarder: every audit row, in ``seq`` order, to the audit record repository, at least once.

Delivery contract:

* **In order, no gap.** Rows are read by ``seq`` (gap-free, assigned under the recorder's lock, so a row is
  visible only after every earlier one). After any failure the forwarder resends from the durable cursor.
* **Durable cursor.** A small JSON file (default ``<data_dir>/atna/cursor.json``: the last *settled* seq and
  its hash) written to a temporary name, fsynced, renamed, directory fsynced. Nothing else is kept across restarts.
* **When a row counts as delivered.** Syslog over TLS has no application acknowledgement. A batch is written,
  then the forwarder waits until the repository's TCP stack acknowledged every byte (Linux SIOCOUTQ reaches 0);
  the batch *settles* once the connection has stayed up ``settle_s`` longer (a receiver that dies loses what
  sat unread in its socket, and its death shows as a closed connection). Only settled rows move the cursor.
  So a receiver or forwarder crash resends at most the unsettled window: duplicates, each recognisable by the
  ``seq`` in its structured data and in the message, never a gap.
* **Anchored.** Each row must chain onto the hash of the row sent before it (the cursor's after a restart): a
  tail deleted, or rewritten under the same numbers, after it was forwarded stops the forwarder with an error
  naming the seq, rather than sending a second history the repository would hold beside the first.
* **Repository down.** Reconnects with exponential backoff (``backoff_initial_s`` doubling to ``backoff_max_s``);
  the backlog (head seq minus cursor) is exported as the gauge ``radtrace_atna_backlog_events``.

UDP has no acknowledgement at all: rows settle as soon as they are sent (best effort, RFC 5426).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, cast

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Gauge

from radtrace.audit.atna.message import AuditMessageInvalidError, AuditSource, audit_message_xml, event_time
from radtrace.audit.atna.syslog import (
    StreamTransport,
    SyslogHeader,
    SyslogTransport,
    UdpTransport,
    frame,
    room_for_message,
)
from radtrace.audit.chain import GENESIS_HASH
from radtrace.audit.events import EventType, Outcome
from radtrace.audit.queries import AuditRecord, record_columns
from radtrace.audit.schema import AuditEventRow
from radtrace.config import AtnaSettings, Settings
from radtrace.durable import fsync_directory
from radtrace.errors import ConfigError, RadtraceError, RetryableError
from radtrace.store.engine import Store, is_postgresql
from radtrace.tls_keys import tls_context
from radtrace.tls_renewal import RenewedContext, watch_tls_expiry

__all__ = [
    "ONCE_GIVE_UP_S",
    "AtnaForwarder",
    "AtnaMetrics",
    "Cursor",
    "CursorFile",
    "forwarder_from_settings",
    "transport_for",
]

log = logging.getLogger(__name__)

_AUDIT_TABLE: Final = cast(sa.Table, AuditEventRow.__table__)
MAX_REMEMBERED_ALERTS: Final = 100
#: How long ``radtrace audit forward --once`` tries a repository that does not answer before it gives up, in all.
ONCE_GIVE_UP_S: Final = 15.0
LAST_TRY_S: Final = 1.0  # the least time a try is given before giving up: enough to connect on a LAN


@dataclass(frozen=True)
class Cursor:
    """The last settled row: its seq and hash (0 and "" before the first)."""

    seq: int = 0
    hash: str = ""


class CursorFile:
    """The forwarder's durable cursor: written atomically and fsynced before it is relied on."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> Cursor:
        """The stored cursor, or the start of the log if there is none yet."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return Cursor(int(data["seq"]), str(data.get("hash", "")))
        except FileNotFoundError:
            return Cursor()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"ATNA cursor file {self.path} is unreadable: {exc}") from exc

    def write(self, cursor: Cursor) -> None:
        """Replace the cursor durably (temporary file, fsync, rename, directory fsync)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{self.path.name}.tmp")
        with temporary.open("w", encoding="utf-8") as handle:
            json.dump({"seq": cursor.seq, "hash": cursor.hash}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)
        fsync_directory(self.path.parent)

    @property
    def alerts_path(self) -> Path:
        """Beside the cursor: the stop alerts the repository already has (one per distinct problem)."""
        return self.path.with_name(f"{self.path.name}.alerted")

    def alerted(self) -> list[str]:
        """The problems already alerted, oldest first (none when the file is missing or unreadable)."""
        try:
            data = json.loads(self.alerts_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        return [str(item) for item in data] if isinstance(data, list) else []

    def remember_alert(self, problem: str) -> None:
        """Add ``problem`` to what was alerted (the last :data:`MAX_REMEMBERED_ALERTS` are kept), durably."""
        kept = [*[item for item in self.alerted() if item != problem], problem][-MAX_REMEMBERED_ALERTS:]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.alerts_path.with_name(f".{self.alerts_path.name}.tmp")
        with temporary.open("w", encoding="utf-8") as handle:
            json.dump(kept, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.alerts_path)
        fsync_directory(self.path.parent)


class AtnaMetrics:
    """The forwarder's Prometheus metrics, in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.backlog = Gauge(
            "radtrace_atna_backlog_events",
            "Audit events recorded but not yet settled at the audit record repository",
            registry=self.registry,
        )
        self.forwarded_seq = Gauge(
            "radtrace_atna_forwarded_seq", "The last settled audit seq (the durable cursor)", registry=self.registry
        )
        self.sent = Counter(
            "radtrace_atna_sent_events", "Audit messages written, resends included", registry=self.registry
        )
        self.failures = Counter(
            "radtrace_atna_connection_failures",
            "Connections to the repository that failed or broke",
            registry=self.registry,
        )
        watch_tls_expiry(self.registry)  # atna's certificate and CA: seconds left, read at each scrape


def transport_for(settings: AtnaSettings) -> SyslogTransport:
    """The transport the settings name (TLS by default)."""
    if not settings.host:
        raise ConfigError("atna.host is not set (RADTRACE_ATNA__HOST)")
    if settings.transport == "udp":
        return UdpTransport(settings.host, settings.port)
    context: RenewedContext | None = None
    if settings.transport == "tls":  # loaded now (a ConfigError at start), again at a connection after a renewal
        files = (settings.ca_bundle, settings.certificate, settings.private_key)
        context = RenewedContext(
            lambda: tls_context(settings.ca_bundle, settings.certificate, settings.private_key),
            files,
            "atna",
            attempt="connection",
            logger=log,
            certificate=settings.certificate,
            ca_bundle=settings.ca_bundle,
        )
        context.get()
    return StreamTransport(settings.host, settings.port, context, server_name=settings.server_name)


def _unsendable(record: AuditRecord, problem: str) -> AuditRecord:
    """A Security Alert standing in for a row no audit message can carry as stored (same seq and hash)."""
    return replace(
        record, event_type=EventType.TAMPER_DETECTED.value, dicom_event_id=EventType.TAMPER_DETECTED.dicom.code,
        outcome=Outcome.MAJOR_FAILURE.value, actor_ae=None, actor_host=None, actor_user=None,
        actor_process="radtrace audit forward", study_uid=None, accession=None, patient_id=None, model_name=None,
        model_version=None, labels=(),
        payload={"problem": f"audit row seq {record.seq} cannot be sent as stored (edited in the database?): "
                            f"{problem}; run radtrace audit verify"},
    )  # fmt: skip


class AtnaForwarder:
    """Walks the audit log behind a durable cursor and sends each row as an ATNA syslog message."""

    def __init__(
        self,
        store: Store,
        settings: AtnaSettings,
        cursor_file: CursorFile,
        transport: SyslogTransport,
        source: AuditSource,
        *,
        metrics: AtnaMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.settings = settings
        self.cursor_file = cursor_file
        self.transport = transport
        self.source = source
        self.metrics = metrics or AtnaMetrics()
        self.clock = clock
        self.header = SyslogHeader(hostname=source.host or source.source_id, procid=str(os.getpid()))
        self.cursor = cursor_file.read()
        self._connected = False
        self._next_seq = self.cursor.seq + 1
        self._last_hash = self._cursor_hash()  # what the next row's prev_hash must be
        self._unsettled: deque[tuple[Cursor, float]] = deque()  # (last row of a batch, when it was acknowledged)

    # --- one pass ---------------------------------------------------------------------------------
    def _rows(self) -> list[AuditRecord]:
        statement = (
            self._integer_seqs(sa.select(*record_columns(self.store)))
            .where(_AUDIT_TABLE.c.seq >= self._next_seq)
            .order_by(_AUDIT_TABLE.c.seq)
            .limit(self.settings.batch_size)
        )
        with self.store.session("reading audit events to forward") as session:
            rows = session.execute(statement).mappings().all()
        return [AuditRecord.from_row(row) for row in rows]

    def _head(self) -> int:
        with self.store.session("reading the audit head") as session:
            head = session.execute(self._integer_seqs(sa.select(sa.func.max(_AUDIT_TABLE.c.seq)))).scalar()
        return int(head or 0)

    def _integer_seqs(self, statement: sa.Select[Any]) -> sa.Select[Any]:
        """Only rows with a numeric seq: SQLite keeps a seq edited into text and sorts it after every number.

        Such a row is not part of the chain; the gap it leaves stops forwarding at its place (with an alert).
        """
        if is_postgresql(self.store.engine):
            return statement
        return statement.where(sa.func.typeof(_AUDIT_TABLE.c.seq) == "integer")

    def _stopped(self, seq: int, problem: str) -> ConfigError:
        """Tell the repository the log stops making sense at ``seq`` (best effort), and the error to stop with.

        Stopping rather than sending a second history is the contract; stopping in silence would leave the
        off-host copy believing nothing happened since. A Security Alert naming the problem goes first, once per
        distinct problem: the supervisor restarts a stopped forwarder, and each restart meets the same problem
        (the alerts sent are remembered beside the cursor; one that could not be sent is tried again).
        """
        remembered = f"{seq}: {problem}"
        if remembered in self.cursor_file.alerted():
            log.info("forwarding stopped at seq %s; the ATNA repository was already told", seq)
            return ConfigError(problem)
        alert = AuditRecord(
            seq=seq, recorded_at=datetime.now(UTC), event_type=EventType.TAMPER_DETECTED.value,
            dicom_event_id=EventType.TAMPER_DETECTED.dicom.code, outcome=Outcome.MAJOR_FAILURE.value,
            actor_ae=None, actor_host=None, actor_user=None, actor_process=self.header.app_name + " audit forward",
            study_uid=None, accession=None, patient_id=None, model_name=None, model_version=None, labels=(),
            payload={"problem": f"forwarding stopped at seq {seq}: {problem}"}, prev_hash="", hash="",
            recorded_at_unreadable=None,
        )  # fmt: skip
        try:
            if self._connected and self.transport.alive():
                stamp = event_time(alert)
                room = room_for_message(self.header, seq=seq, row_hash="", timestamp=stamp, failure=True,
                                        limit=self.settings.max_message_bytes)  # fmt: skip
                xml = audit_message_xml(alert, self.source, max_bytes=room)
                self.transport.send([frame(self.header, xml, seq=seq, row_hash="", timestamp=stamp, failure=True)])
            else:
                return ConfigError(problem)
        except (RadtraceError, OSError) as exc:
            log.warning("could not tell the ATNA repository that forwarding stopped: %s", exc)
            return ConfigError(problem)
        try:
            self.cursor_file.remember_alert(remembered)
        except OSError as exc:
            log.warning("could not remember that the ATNA repository was told (%s): a restart tells it again", exc)
        return ConfigError(problem)

    def _message(self, record: AuditRecord) -> bytes:
        stamp, failure = event_time(record), record.outcome != Outcome.SUCCESS.value
        room = room_for_message(self.header, seq=record.seq, row_hash=record.hash, timestamp=stamp, failure=failure,
                                limit=self.settings.max_message_bytes)  # fmt: skip
        try:
            xml = audit_message_xml(record, self.source, max_bytes=room)
        except (ValueError, TypeError, AuditMessageInvalidError) as exc:
            # A row edited in the database into something no audit message can carry must not stop the
            # forwarder for good (everything after it would never leave the host): the repository gets a
            # Security Alert under the row's seq and hash instead, saying so.
            log.error("audit seq %s cannot be sent as stored (%s): a tamper alert is sent in its place", record.seq,
                      exc)  # fmt: skip
            xml = audit_message_xml(_unsendable(record, str(exc)), self.source, max_bytes=room)
        return frame(self.header, xml, seq=record.seq, row_hash=record.hash, timestamp=stamp, failure=failure)

    def _connect(self, timeout_s: float | None = None) -> None:
        self.transport.connect() if timeout_s is None else self.transport.connect(timeout_s)
        self._connected = True
        # Resend everything not settled: what the dead connection may have dropped.
        self._unsettled.clear()
        self._next_seq = self.cursor.seq + 1
        self._last_hash = self._cursor_hash()

    def _cursor_hash(self) -> str | None:
        """The hash the row after the cursor chains onto (``None``: unknown, a cursor written without one)."""
        if self.cursor.seq == 0:
            return GENESIS_HASH
        return self.cursor.hash or None

    def _check_chained(self, rows: list[AuditRecord]) -> None:
        """Refuse rows that do not chain onto what was already sent: the log was rewritten after forwarding.

        The repository holds the forwarded rows and their hashes: it is the anchor that shows a tail deleted
        (and refilled under the same numbers) after it left, which the chain in the database alone cannot.
        """
        expected, expected_seq = self._last_hash, rows[0].seq if rows else 0
        for record in rows:
            if record.seq != expected_seq:
                raise self._stopped(
                    expected_seq,
                    f"audit seq {expected_seq} is missing (next is {record.seq}): rows were deleted, or a seq was "
                    "edited into something that is not a number (possible tampering; run radtrace audit verify)",
                )
            expected_seq += 1
            if expected is not None and record.prev_hash != expected:
                raise self._stopped(
                    record.seq,
                    f"audit seq {record.seq} does not chain onto seq {record.seq - 1} as forwarded to the "
                    "repository: the audit log was rewritten or its tail deleted after it was sent (possible "
                    "tampering; run radtrace audit verify and compare with the repository)",
                )
            expected = record.hash

    def _settle(self, *, everything: bool = False) -> None:
        now = self.clock()
        settled: Cursor | None = None
        while self._unsettled and (everything or now - self._unsettled[0][1] >= self.settings.settle_s):
            settled = self._unsettled.popleft()[0]
        if settled is not None:
            self.cursor_file.write(settled)
            self.cursor = settled
            self.metrics.forwarded_seq.set(settled.seq)

    def step(self, *, connect_within_s: float | None = None) -> int:
        """Connect if needed (within ``connect_within_s``, default the transport's timeout), send one batch, settle
        what the connection has outlived; rows sent (0: idle).

        Raises :class:`RetryableError` when the repository is unreachable or the connection broke.
        """
        if not self._connected:
            self._connect(connect_within_s)
        if not self.transport.alive():
            raise RetryableError("the ATNA repository closed the connection")
        self._settle()
        rows = self._rows()
        if rows:
            if rows[0].seq != self._next_seq:
                raise self._stopped(
                    self._next_seq,
                    f"audit seq {self._next_seq} is missing (next is {rows[0].seq}): the audit log is not the one "
                    f"the ATNA cursor {self.cursor_file.path} belongs to, or rows were deleted",
                )
            self._check_chained(rows)
            self.transport.send([self._message(record) for record in rows])
            self.metrics.sent.inc(len(rows))
            last = rows[-1]
            self._unsettled.append((Cursor(last.seq, last.hash), self.clock()))
            self._next_seq = last.seq + 1
            self._last_hash = last.hash
            if not self.transport.acknowledged:
                self._settle(everything=True)
        self.metrics.backlog.set(max(0, self._head() - self.cursor.seq))
        return len(rows)

    def _gave_up(self, exc: RetryableError, tries: int, seconds: float, limit_s: float) -> RetryableError:
        """The error ``run(give_up_after_s=...)`` ends with: why, tries and seconds, and the events that wait."""
        self.transport.close()
        try:
            waiting = f"{max(0, self._head() - self.cursor.seq)} audit events wait (from seq {self.cursor.seq + 1})"
        except RadtraceError:
            waiting = f"audit events from seq {self.cursor.seq + 1} wait"
        return RetryableError(
            f"{_no_break(exc.reason)}; gave up after {tries} {'try' if tries == 1 else 'tries'} in {seconds:.0f} s "
            f"(at most {limit_s:.0f} s); "
            f"{waiting}: the cursor is kept, run it again once the repository answers"
        )

    def _check_cursor(self) -> None:
        head = self._head()
        if self.cursor.seq > head:
            raise ConfigError(
                f"the ATNA cursor {self.cursor_file.path} is at seq {self.cursor.seq} but the audit log ends at "
                f"{head}: wrong database, or the log was replaced"
            )
        if self.cursor.seq and self.cursor.hash:
            with self.store.session("reading the audit row at the ATNA cursor") as session:
                stored = session.execute(
                    sa.select(_AUDIT_TABLE.c.hash).where(_AUDIT_TABLE.c.seq == self.cursor.seq)
                ).scalar()
            if stored != self.cursor.hash:
                raise ConfigError(
                    f"audit seq {self.cursor.seq} has hash {str(stored)[:16]}..., but the row forwarded to the "
                    f"repository under that seq had {self.cursor.hash[:16]}... (ATNA cursor "
                    f"{self.cursor_file.path}): the audit log was rewritten or its tail deleted and refilled "
                    "after it was sent (possible tampering), or this is another database"
                )

    def run(
        self, stop: threading.Event, *, until_caught_up: bool = False, give_up_after_s: float | None = None
    ) -> None:
        """Forward until ``stop`` is set: sends, idles ``poll_interval_s`` when caught up, backs off on failure.

        ``until_caught_up``: return once every row recorded so far is settled (``radtrace audit forward --once``).
        ``give_up_after_s``: raise :class:`RetryableError` once the repository has failed for that long without a
        break (each try's connection and handshake bounded by what is left), saying why, how many tries and how
        many events wait; without it (a running forwarder) the backoff goes on for as long as the outage lasts.
        """
        self._check_cursor()
        delay = self.settings.backoff_initial_s
        failing_since: float | None = None  # when the first try of the current outage began
        tries = 0
        while not stop.is_set():
            began = self.clock()
            left = None if give_up_after_s is None else give_up_after_s - (began - (failing_since or began))
            try:
                sent = self.step(connect_within_s=left)
            except RetryableError as exc:
                self._connected = False
                self.transport.close()
                self.metrics.failures.inc()
                tries += 1
                failing_since = began if failing_since is None else failing_since
                failing_for = self.clock() - failing_since
                wait = delay
                if give_up_after_s is not None:
                    left = give_up_after_s - failing_for
                    if left <= LAST_TRY_S:  # too little time for another try
                        raise self._gave_up(exc, tries, failing_for, give_up_after_s) from exc
                    wait = min(delay, left - LAST_TRY_S)  # the last try still has LAST_TRY_S to connect
                log.warning("ATNA forwarding paused (%s); retrying in %.1f s", exc.reason, wait)
                stop.wait(wait)
                delay = min(delay * 2, self.settings.backoff_max_s)
                continue
            failing_since, tries = None, 0
            delay = self.settings.backoff_initial_s
            if not sent:
                if until_caught_up and not self._unsettled:
                    break
                stop.wait(self.settings.poll_interval_s)
        self.transport.close()


def _no_break(reason: str) -> str:
    return reason.replace("\n", " ").replace("\r", " ")


def forwarder_from_settings(store: Store, settings: Settings, **kwargs: Any) -> AtnaForwarder:
    """An :class:`AtnaForwarder` for ``settings.atna`` (its transport, cursor file and audit source)."""
    atna = settings.atna
    host = socket.gethostname()
    source = AuditSource(atna.audit_source_id or host, atna.enterprise_site_id, host=host)
    cursor = CursorFile(atna.cursor_file or settings.data_dir / "atna" / "cursor.json")
    return AtnaForwarder(store, atna, cursor, transport_for(atna), source, **kwargs)
