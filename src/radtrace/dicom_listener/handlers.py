"""pynetdicom event handlers: thin adapters from DICOM events to the listener's pure rules and store.

A handler never raises: every failure becomes a DICOM status (or an A-ASSOCIATE-RJ) and, where the
database is reachable, an audit event. Log lines name studies by their hashed key only.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset
from pynetdicom import evt

from radtrace.audit.events import Actor, AuditEvent, EventType, Outcome
from radtrace.audit.recorder import AuditRecorder
from radtrace.config import ListenerSettings
from radtrace.dicom_charset import audit_record
from radtrace.dicom_listener.admission import Admission, Connection, timeout_setting
from radtrace.dicom_listener.association_lines import QuarantineLines
from radtrace.dicom_listener.contexts import SERVICES_NOT_OFFERED, another_service, refused_pairs
from radtrace.dicom_listener.encoding import RELABELLED_SYNTAXES, relabel_mismatched_encoding
from radtrace.dicom_listener.filtering import FilterRule
from radtrace.dicom_listener.headers import ReceivedHeader, read_header, refused_identity
from radtrace.dicom_listener.idle_close import log_idle_close
from radtrace.dicom_listener.ingest import IngestOutcome, record_instance
from radtrace.dicom_listener.metrics import Door, ListenerMetrics, door_labels
from radtrace.dicom_listener.pixel_budget import (
    ImageTooLargeError,
    PixelMismatchError,
    check_file,
    instance_byte_limit,
)
from radtrace.dicom_listener.policy import (
    STATUS_CANNOT_UNDERSTAND,
    STATUS_IMAGE_TOO_LARGE,
    STATUS_MISSING_IDENTIFIERS,
    STATUS_OUT_OF_RESOURCES,
    STATUS_PIXEL_MISMATCH,
    STATUS_PROCESSING_FAILURE,
    STATUS_SOP_CLASS_MISMATCH,
    STATUS_SUCCESS,
    AssociationRequest,
    check_association,
    has_room,
    how_to_allow,
)
from radtrace.dicom_listener.refusals import RefusalAudit
from radtrace.dicom_listener.rq_budget import REFUSED_REASON, thread_cpu_s
from radtrace.dicom_listener.served import REFUSED_REASON as REQUEST_REFUSED
from radtrace.dicom_listener.served import RequestProblem
from radtrace.dicom_listener.spool import Spool, StagedFile, out_of_space
from radtrace.dicom_listener.structure import MalformedDataSetError, check_structure
from radtrace.dicom_listener.transport import close_fast_path, take_received
from radtrace.errors import DicomInputError, RadtraceError
from radtrace.logging import escape, redacting, study_key
from radtrace.sender_charset import sender_rules
from radtrace.store.engine import Store

if TYPE_CHECKING:
    from pynetdicom.association import Association

__all__ = ["ListenerHandlers"]

log = logging.getLogger(__name__)


def _status(code: int, comment: str | None = None) -> Dataset:
    status = Dataset()
    status.Status = code
    if comment:
        status.ErrorComment = comment[:64]  # LO
    return status


class SopClassMismatchError(DicomInputError):
    """The data set's SOP Class UID is not the abstract syntax of the presentation context it came on."""


_STATUS_OF: dict[type[DicomInputError], int] = {
    SopClassMismatchError: STATUS_SOP_CLASS_MISMATCH,
    ImageTooLargeError: STATUS_IMAGE_TOO_LARGE,
    PixelMismatchError: STATUS_PIXEL_MISMATCH,
    MalformedDataSetError: STATUS_CANNOT_UNDERSTAND,  # whatever element it names (a UID's: not a missing identifier)
}


def _connection(assoc: Association) -> Connection | None:
    connection = getattr(assoc, "radtrace_connection", None)
    return connection if isinstance(connection, Connection) else None


def _actor(assoc: Association) -> Actor:
    return Actor(ae_title=str(assoc.requestor.ae_title).strip() or None, host=assoc.requestor.address or None)


class ListenerHandlers:
    """The listener's handlers, bound to its store, spool, settings and metrics."""

    def __init__(
        self,
        settings: ListenerSettings,
        store: Store,
        spool: Spool,
        *,
        metrics: ListenerMetrics,
        free_bytes: Callable[[], int],
        on_instance: Callable[[], None] = lambda: None,
        admission: Admission | None = None,
    ) -> None:
        self.settings = settings
        self.rule = FilterRule.from_settings(settings.routing)
        self.store = store
        self.recorder = AuditRecorder(store)
        self.admission = admission or Admission(settings)
        self.refusals = RefusalAudit(self._audit_many, settings.refusal_audit_interval_s)
        #: presentation contexts refused at negotiation, aggregated as the refusals are: one association after another
        #: proposing what the listener does not take wrote one audit row each (200 in 4 s from one source)
        self.context_refusals = RefusalAudit(
            self._audit_many,
            settings.refusal_audit_interval_s,
            event_type=EventType.INSTANCE_REJECTED,
            items_key="contexts",
        )
        #: DIMSE requests refused (radtrace.dicom_listener.served), aggregated likewise, each event naming them
        self.request_refusals = RefusalAudit(
            self._audit_many,
            settings.refusal_audit_interval_s,
            event_type=EventType.INSTANCE_REJECTED,
            items_key="requests",
        )
        self.spool = spool
        self.quarantine_lines = QuarantineLines()
        self.metrics = metrics
        self.free_bytes = free_bytes
        self.on_instance = on_instance

    def bindings(self) -> list[evt.EventHandlerType]:
        """The ``evt_handlers`` list for ``AE.start_server``."""
        return [
            (evt.EVT_REQUESTED, self.on_requested),
            (evt.EVT_ACCEPTED, self.on_accepted),
            (evt.EVT_C_ECHO, self.on_echo),
            (evt.EVT_C_STORE, self.on_store),
            (evt.EVT_ABORTED, self.on_connection_lost),
            (evt.EVT_CONN_CLOSE, self.on_connection_lost),
        ]

    # --- association ----------------------------------------------------------------------------

    def on_requested(self, event: evt.Event) -> None:
        """Apply the association policy to an A-ASSOCIATE-RQ; reject (and audit) when it says so.

        Only here does a connection take an association slot: half-open ones never hold one.
        """
        assoc = event.assoc
        connection = _connection(assoc) or Connection(host=str(assoc.requestor.address), opened_at=0.0)
        try:
            primitive = assoc.requestor.primitive
            calling = str(getattr(primitive, "calling_ae_title", "") or "").strip()
            called = str(getattr(primitive, "called_ae_title", "") or "").strip()
            request = AssociationRequest(
                calling_ae=calling,
                called_ae=called,
                peer_host=str(assoc.requestor.address),
                active_associations=self.admission.admit(connection),
                free_bytes=self.free_bytes(),
                active_from_source=self.admission.held_by(connection.host),
                peer_max_pdu=assoc.requestor.maximum_length,
                plain_port=connection.plain_port,
            )
            rejection = check_association(request, self.settings)
        except Exception as exc:
            log.error("association policy failed (%s); rejecting", type(exc).__name__)
            self.admission.release(connection)
            self._charge_negotiation(connection)
            assoc.acse.send_reject(2, 3, 1)
            assoc.kill()
            return
        door = door_labels(self._door_of(connection))
        if rejection is None:
            self.metrics.associations.labels(result="accepted", **door).inc()
            return
        self.admission.release(connection)
        self._charge_negotiation(connection)
        self.metrics.associations.labels(result="rejected", **door).inc()
        self.metrics.rejections.labels(reason=rejection.reason, **door).inc()
        # per caller too: someone correcting a refused AE title sees the next refusal's line (and what to set) at once
        kind = f"rejected association: {rejection.reason}: {calling!r} to {called!r}"
        suffix = self.admission.peer_log.admit(request.peer_host, kind)
        if suffix is not None:
            log.warning(
                "rejected association from %s at %s to %s: %s; %s%s",
                escape(repr(calling)),
                escape(request.peer_host),
                escape(repr(called)),
                rejection.reason,
                escape(how_to_allow(rejection, request, self.settings)),
                suffix,
            )
        assoc.acse.send_reject(rejection.result, rejection.source, rejection.diagnostic)
        self.refusals.refused(
            request.peer_host,
            rejection.reason,
            calling_ae=calling or None,
            called_ae=called,
            result=rejection.result,
            source=rejection.source,
            diagnostic=rejection.diagnostic,
            port=connection.port or None,
            tls=connection.tls,
        )
        assoc.kill()

    def on_connection_refused(self, host: str, reason: str, **details: Any) -> None:
        """A connection closed before any PDU (half-open limits), or an association aborted for breaking the
        protocol: counted and audited in aggregate (``details`` go into the interval's first event; ``port`` and
        ``tls`` among them name the listener port)."""
        port = details.get("port")
        door = (port, bool(details.get("tls"))) if isinstance(port, int) and port else self._door_of(None)
        self.metrics.rejections.labels(reason=reason, **door_labels(door)).inc()
        interval = self.settings.refusal_audit_interval_s
        if reason == REFUSED_REASON and self.admission.negotiation.first_refusal(host, interval):
            log.warning(
                "refusing connections from %s until it earns back its negotiation CPU budget "
                "(%.2f CPU s a second, %.1f s at once; %.2f s of debt now); logged once per %g s",
                escape(host),
                self.admission.negotiation.rate,
                self.admission.negotiation.burst,
                -self.admission.negotiation.balance(host),
                interval,
            )
        self.refusals.refused(host, reason, **details)

    def _door_of(self, connection: Connection | None) -> Door:
        """The listener port ``connection`` came in by and whether over TLS, for the metrics' labels (the listener's
        own port where it is not known: at most two values in all)."""
        if connection is not None and connection.port:
            return connection.port, connection.tls
        return self.settings.port, self.settings.tls.enabled

    def _door(self, assoc: Association) -> dict[str, Any] | None:
        """With ``listener.plain_port``: the port an instance came in on and whether over TLS, for its audit event."""
        connection = _connection(assoc)
        if self.settings.plain_port is None or connection is None or not connection.port:
            return None
        return {"port": connection.port, "tls": connection.tls}

    def _charge_negotiation(self, connection: Connection) -> None:
        """Charge the association thread's CPU so far (its share of the negotiation) to the source's budget.

        Called once, from that thread, when the association is accepted or rejected (the DUL thread charges its own).
        """
        self.admission.negotiation.charge(connection.host, thread_cpu_s())

    def on_accepted(self, event: evt.Event) -> None:
        """Audit presentation contexts refused at negotiation (a SOP class or transfer syntax we do not take)."""
        connection = _connection(event.assoc)
        if connection is not None and connection.established_at is None:
            connection.established_at = self.admission.clock()
        if connection is not None:
            self._charge_negotiation(connection)
        refused = event.assoc.rejected_contexts
        if not refused:
            return
        door = self._door_of(connection)
        actor = _actor(event.assoc)
        services = [context for context in refused if another_service(context)]
        storage = [context for context in refused if not another_service(context)]
        for contexts, reason, label in (
            (storage, "presentation contexts refused at negotiation", "presentation context refused"),
            (services, SERVICES_NOT_OFFERED, "service not offered"),  # no instance refused: not paged
        ):
            if not contexts:
                continue
            self.metrics.rejections.labels(reason=label, **door_labels(door)).inc(len(contexts))
            self.context_refusals.refused(
                actor.host or "",
                reason,
                calling_ae=actor.ae_title,
                port=door[0] if connection is not None and connection.port else None,
                tls=door[1],
                items=refused_pairs(contexts, getattr(event.assoc.requestor, "primitive", None)),
                refused=len(contexts),
            )

    def on_request_refused(self, assoc: Association, problem: RequestProblem) -> None:
        """A DIMSE request refused (a service not served, a command that breaks its rules): counted and audited in
        aggregate per source and port, each event naming the distinct requests and problems it counts."""
        connection = _connection(assoc)
        door = self._door_of(connection)
        self.metrics.rejections.labels(reason=REQUEST_REFUSED, **door_labels(door)).inc()
        actor = _actor(assoc)
        self.request_refusals.refused(
            actor.host or "",
            REQUEST_REFUSED,
            calling_ae=actor.ae_title,
            port=door[0] if connection is not None and connection.port else None,
            tls=door[1],
            items=[{"command": problem.command, "problem": problem.problem, "status": problem.status}],
        )

    def flush_refusals(self, *, force: bool = False) -> None:
        """Write the counts of the refusal intervals that have ended (all of them with ``force``)."""
        self.refusals.flush(force=force)
        self.context_refusals.flush(force=force)
        self.request_refusals.flush(force=force)

    def on_cut_off(self, connection: Connection, reason: str) -> None:
        """The watchdog cut a connection off: audited when a deadline (a timeout) was the reason."""
        setting = timeout_setting(reason)
        if setting is not None:
            self.on_timed_out(connection, setting, reason)

    def on_timed_out(self, connection: Connection, setting: str, detail: str) -> bool:
        """A timeout ended the connection: counted and audited in aggregate like a refusal, once per connection
        (whether this call was that once).

        The event names the source, the calling AE title when the A-ASSOCIATE-RQ was read, the setting whose limit
        was passed and the bytes the peer had sent.
        """
        if not connection.mark_timed_out():
            return False
        assoc = connection.assoc
        primitive = getattr(getattr(assoc, "requestor", None), "primitive", None)
        calling = str(getattr(primitive, "calling_ae_title", "") or "").strip() or None
        received = getattr(getattr(getattr(assoc, "dul", None), "socket", None), "received_bytes", None)
        reason = f"connection timed out ({setting})"
        self.metrics.rejections.labels(reason=reason, **door_labels(self._door_of(connection))).inc()
        self.refusals.refused(
            connection.host,
            reason,
            calling_ae=calling,
            timeout=setting,
            limit=getattr(self.settings, setting.removeprefix("listener."), None),
            detail=detail,
            established=connection.established_at is not None,
            port=connection.port or None,
            tls=connection.tls,
            bytes_received=received if isinstance(received, int) else None,
        )
        return True

    def on_connection_lost(self, event: evt.Event) -> None:
        """Free the slot at once; drop the partial file of a C-STORE cut off mid-dataset (left open by pynetdicom).

        An association that pynetdicom aborted for its network timeout (idle too long) is audited and logged here
        (one INFO line: :mod:`~radtrace.dicom_listener.idle_close`).
        """
        connection = _connection(event.assoc)
        dul = getattr(event.assoc, "dul", None)
        idle = connection is not None and connection.cut_reason is None and dul is not None and dul.idle_timer_expired()
        self.admission.release(connection)  # first: the audit below writes to the database
        if unlogged := self.quarantine_lines.ended(event.assoc):  # per instance: the first of each kind logged
            log.warning(
                "%s in the association with %s not logged",
                unlogged,
                escape(str(getattr(event.assoc.requestor, "address", "") or "?")),
            )
        if idle and connection is not None:
            detail = f"no PDU for {self.settings.network_timeout_s:g} s"
            if self.on_timed_out(connection, "listener.network_timeout_s", detail):
                log_idle_close(event.assoc, connection, self.settings.network_timeout_s)
        close_fast_path(event.assoc)
        message = getattr(getattr(event.assoc, "dimse", None), "message", None)
        partial = getattr(message, "_data_set_file", None)
        if partial is None:
            return
        try:
            partial.close()
            Path(partial.name).unlink()
        except FileNotFoundError:
            return  # discarded already: an abort comes here twice (EVT_ABORTED, then EVT_CONN_CLOSE)
        except OSError as exc:
            log.warning("could not remove a partial transfer: %s", exc.strerror)
            return
        log.warning("association ended mid-transfer; the partial instance was discarded")

    def on_echo(self, event: evt.Event) -> int:
        """C-ECHO: success (the association policy already admitted the caller)."""
        self.metrics.echoes.labels(**door_labels(self._door_of(_connection(event.assoc)))).inc()
        return STATUS_SUCCESS

    # --- C-STORE --------------------------------------------------------------------------------

    def on_store(self, event: evt.Event) -> Dataset | int:
        """C-STORE: stage, parse, record; success only once the instance and its row are durable.

        Once the header is read, the instance's patient name, ID, birth date and accession are scrubbed from
        every log line written while it is handled (:func:`radtrace.logging.redacting`), whoever writes it: a
        library's message, an exception's text in the traceback logged below.
        """
        with contextlib.ExitStack() as scope:
            return self._store(event, scope)

    def _store(self, event: evt.Event, scope: contextlib.ExitStack) -> Dataset | int:
        actor = _actor(event.assoc)
        door = self._door_of(_connection(event.assoc))
        labels = door_labels(door)
        staged: StagedFile | None = None
        try:
            received = Path(event.dataset_path)
            free = self.free_bytes()
            if not has_room(free, self.settings):
                received.unlink(missing_ok=True)
                log.warning(
                    "refused an instance with 0xA700: %d bytes free on the spool, listener.min_free_bytes is %d",
                    free,
                    self.settings.min_free_bytes,
                )
                self._audit(
                    AuditEvent(
                        EventType.INSTANCE_REJECTED,
                        actor,
                        outcome=Outcome.MINOR_FAILURE,
                        payload={
                            "reason": "spool disk nearly full",
                            "sop_instance_uid": self._requested_sop(event),
                            "port": door[0],
                            "tls": door[1],
                        },  # radtrace status groups refusals by port
                    )
                )
                return self._answer(door, STATUS_OUT_OF_RESOURCES, "out of resources: spool disk nearly full")
            digest = take_received(event.assoc, received)
            if digest is not None and digest.error is not None:
                return self._out_of_space(received, digest.error, actor, event, door)
            # Explicit VR bytes under an Implicit VR context, or the reverse: stored with a file meta readers believe
            syntax = str(getattr(getattr(event, "context", None), "transfer_syntax", ""))
            relabelled = relabel_mismatched_encoding(received) if syntax in RELABELLED_SYNTAXES else None
            staged = self.spool.stage_file(received, digest=None if relabelled else digest)
            self.metrics.bytes.labels(**labels).inc(staged.size)
            header: ReceivedHeader | None = None
            try:
                limit = instance_byte_limit(self.settings.max_image_pixels)
                header = read_header(
                    staged.path,
                    max_inflated_bytes=limit,
                    assumed_character_set=self.settings.assumed_character_set,
                    site=sender_rules(self.settings, actor.ae_title),
                )
                scope.enter_context(redacting(*header.patient_values()))
                if relabelled is not None:
                    log.warning("an instance's %s (its file meta says so)", relabelled.problem)
                    header = replace(header, deviations=(*header.deviations, relabelled))
                self._check(header, event, staged.path)
            except DicomInputError as exc:
                return self._quarantine(staged, exc, actor, event, scope, door, header)
            result = record_instance(
                self.store,
                self.recorder,
                self.spool,
                staged,
                header,
                actor,
                max_image_pixels=self.settings.max_image_pixels,
                door=self._door(event.assoc),
                rule=self.rule,
            )
            staged = None
            self.metrics.instances.labels(outcome=result.outcome.value, **labels).inc()
            if result.outcome is not IngestOutcome.DUPLICATE:
                self.on_instance()
            log.debug(
                "study %s: instance %s (revision %d)",
                study_key(header.study_uid),
                result.outcome,
                result.revision_number,
            )
            return self._answer(door, STATUS_SUCCESS)
        except OSError as exc:
            if not out_of_space(exc):
                log.error("could not store a received instance: %s", exc.strerror or type(exc).__name__)
                self.metrics.instances.labels(outcome="failed", **labels).inc()
                return self._answer(door, STATUS_PROCESSING_FAILURE, f"internal error ({type(exc).__name__})")
            return self._out_of_space(Path(event.dataset_path), exc, actor, event, door)
        except RadtraceError as exc:
            log.error("could not record a received instance: %s", exc.reason)
            self.metrics.instances.labels(outcome="failed", **labels).inc()
            return self._answer(door, STATUS_PROCESSING_FAILURE, exc.reason)
        except Exception as exc:
            log.exception("unexpected failure handling C-STORE")
            self.metrics.instances.labels(outcome="failed", **labels).inc()
            return self._answer(door, STATUS_PROCESSING_FAILURE, f"internal error ({type(exc).__name__})")
        finally:
            if staged is not None:
                self.spool.discard(staged)

    @staticmethod
    def _requested_sop(event: evt.Event) -> str:
        return str(getattr(event.request, "AffectedSOPInstanceUID", "") or "")

    def _check(self, header: ReceivedHeader, event: evt.Event, path: Path) -> None:
        requested = self._requested_sop(event)
        if requested and requested != header.sop_instance_uid:
            raise DicomInputError("SOP Instance UID in the dataset differs from the C-STORE request")
        context = getattr(getattr(event, "context", None), "abstract_syntax", None)
        if context is not None and str(context) != header.sop_class_uid:
            raise SopClassMismatchError("SOP Class UID in the dataset differs from the presentation context")
        check_file(path, self.settings.max_image_pixels)  # before anything decodes it
        # the whole data set walked to its end (the header read stops at Pixel Data): a PDV sent twice, a value cut
        # short or run long is refused here, not acknowledged and read shifted by the worker
        check_structure(path, max_inflated_bytes=instance_byte_limit(self.settings.max_image_pixels))

    def _out_of_space(self, received: Path, exc: OSError, actor: Actor, event: evt.Event, door: Door) -> Dataset:
        """The spool filled up while the instance arrived: A700, the partial file removed, serving goes on."""
        received.unlink(missing_ok=True)
        self.metrics.instances.labels(outcome="failed", **door_labels(door)).inc()
        log.warning(
            "spool disk full while receiving an instance (%s): answered 0xA700, partial file removed",
            exc.strerror or type(exc).__name__,
        )
        self._audit(
            AuditEvent(
                EventType.INSTANCE_REJECTED,
                actor,
                outcome=Outcome.MINOR_FAILURE,
                payload={
                    "reason": "spool disk full during transfer",
                    "sop_instance_uid": self._requested_sop(event),
                    "port": door[0],
                    "tls": door[1],
                },
            )
        )
        return self._answer(door, STATUS_OUT_OF_RESOURCES, "out of resources: spool disk full")

    def _quarantine(
        self,
        staged: StagedFile,
        exc: DicomInputError,
        actor: Actor,
        event: evt.Event,
        scope: contextlib.ExitStack,
        door: Door,
        header: ReceivedHeader | None = None,
    ) -> Dataset:
        # named by its study where the file says it usably: QA asking about a study the PACS sent finds the refusal
        identity = refused_identity(
            staged.path,
            max_inflated_bytes=instance_byte_limit(self.settings.max_image_pixels),
            assumed_character_set=self.settings.assumed_character_set,
            site=sender_rules(self.settings, actor.ae_title),
        )
        scope.enter_context(redacting(*identity.patient_values()))
        where = self.spool.quarantine(staged, exc.reason)
        self.metrics.instances.labels(outcome="quarantined", **door_labels(door)).inc()
        if self.quarantine_lines.first(event.assoc, exc.reason):
            log.warning("quarantined an unusable instance as %s: %s", where.name, exc.reason)
        payload: dict[str, object] = {
            "reason": exc.reason,
            "sop_instance_uid": self._requested_sop(event),
            "sha256": staged.sha256,
            "size_bytes": staged.size,
            "quarantine_file": where.name,
        }
        # how the header's text was read where that was guessed or a site rule's, as instance_received says: from the
        # header read before the refusal, else from the identity's own read of the refused file
        guessed = header.character_set if header is not None else identity.character_set
        if guessed is not None and not guessed.recorded:
            guessed = None
        if guessed is not None:
            payload["character_set"] = audit_record(guessed)
        self._audit(
            AuditEvent(
                EventType.INSTANCE_QUARANTINED,
                actor,
                outcome=Outcome.SERIOUS_FAILURE,
                study_uid=identity.study_uid,
                accession=identity.accession,
                patient_id=identity.patient_id,
                labels=(guessed.flag,) if guessed is not None and guessed.flagged else (),
                payload=payload,
            )
        )
        identifiers = "UID" in exc.reason
        status = _STATUS_OF.get(type(exc)) or (STATUS_MISSING_IDENTIFIERS if identifiers else STATUS_CANNOT_UNDERSTAND)
        return self._answer(door, status, exc.reason)

    def _answer(self, door: Door, code: int, comment: str | None = None) -> Dataset:
        self.metrics.status(code, door)
        return _status(code, comment)

    def _audit_many(self, events: list[AuditEvent]) -> None:
        self.recorder.record_many(events)

    def _audit(self, event: AuditEvent) -> None:
        try:
            self.recorder.record(event)
        except RadtraceError as exc:  # the DICOM answer stands; the log says the audit row is missing
            log.error("could not record audit event %s: %s", event.type.value, exc.reason)
