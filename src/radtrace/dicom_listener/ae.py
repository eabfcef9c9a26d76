"""The listener's Application Entity: Verification and Storage SCP, policy, TLS, and its lifetime.

:class:`Listener` wires the pieces: the spool, the handlers, the completion timer and a pynetdicom
server on ``listener.host:listener.port``. pynetdicom streams each received dataset straight to a
file (``STORE_RECV_CHUNKED_DATASET``): nothing is decoded on the hot path but the header, and large
instances never sit in memory.
"""

from __future__ import annotations

import logging
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Final, cast

from prometheus_client import CollectorRegistry
from pynetdicom import AE, _config
from pynetdicom.association import Association
from pynetdicom.transport import ThreadedAssociationServer

from radtrace.audit.events import Actor, AuditEvent, EventType
from radtrace.audit.recorder import AuditRecorder
from radtrace.config import Settings, TlsSettings
from radtrace.dicom_listener.admission import Admission, Watchdog
from radtrace.dicom_listener.completion import CompletionTimer
from radtrace.dicom_listener.contexts import supported_contexts
from radtrace.dicom_listener.filtering import FilterRule
from radtrace.dicom_listener.handlers import ListenerHandlers
from radtrace.dicom_listener.idle_close import ListenerSaysIdleClose
from radtrace.dicom_listener.metrics import ListenerMetrics
from radtrace.dicom_listener.shared_counts import SharedSourceCounts
from radtrace.dicom_listener.spool import Spool
from radtrace.dicom_listener.transport import ListenerServer
from radtrace.errors import ConfigError, RadtraceError
from radtrace.listener_lock import listener_ports
from radtrace.store.engine import Store
from radtrace.tls_keys import load_key_pair
from radtrace.tls_renewal import RenewedContext, renewing_server_context, watch_tls_expiry

__all__ = [
    "Listener",
    "build_ae",
    "quiet_pynetdicom",
    "renewed_server_context",
    "server_ssl_context",
]

log = logging.getLogger(__name__)

#: How long a stop waits, in all, for the associations' threads to end once their sockets are shut (each ends within
#: milliseconds unless a handler is still writing its instance or audit event).
STOP_GRACE_S: Final = 2.0


class _OneLineExceptions(logging.Filter):
    """pynetdicom's ``LOGGER.exception`` as one line, ``Type: message``, without the traceback.

    pynetdicom logs a traceback for input that is only a peer's mistake (an AE title not in ASCII,
    before it refuses it; an A-ASSOCIATE-RQ it cannot take): a dozen lines per hostile
    connection that read as a crash. The listener's own failures keep theirs.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None:
            text = record.getMessage()
            name = type(exc).__name__
            record.msg = text if text.startswith(name) else f"{name}: {text}"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True


_ONE_LINE = _OneLineExceptions()
_IDLE_CLOSE = ListenerSaysIdleClose()


def quiet_pynetdicom() -> None:
    """Never log C-STORE identifiers (patient data), log pynetdicom's exceptions on one line each, leave an idle
    association's end to the listener's own line, and stream received datasets to files."""
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
    _config.LOG_HANDLER_LEVEL = "none"
    _config.STORE_RECV_CHUNKED_DATASET = True
    # A filter on a logger sees only that logger's records: each of pynetdicom's modules has its own.
    for name in list(logging.root.manager.loggerDict):
        if name == "pynetdicom" or name.startswith("pynetdicom."):
            logging.getLogger(name).addFilter(_ONE_LINE)  # the same object twice is kept once
    # an idle association's end is the listener's to say, at INFO (idle_close.py), not pynetdicom's ERROR
    logging.getLogger("pynetdicom.association").addFilter(_IDLE_CLOSE)


def server_ssl_context(tls: TlsSettings) -> ssl.SSLContext | None:
    """The TLS server context for ``listener.tls`` (PS3.15 B.1/B.9 profile: TLS 1.2+), or ``None`` when off."""
    if not tls.enabled:
        return None
    if tls.certificate is None or tls.private_key is None:  # pragma: no cover - the settings refuse this
        raise ConfigError("listener.tls.enabled needs certificate and private_key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        load_key_pair(context, tls.certificate, tls.private_key, setting="listener.tls.")
        if tls.ca_bundle is not None:
            context.load_verify_locations(tls.ca_bundle)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"listener.tls: cannot load certificate, key or CA bundle: {exc}") from exc
    context.verify_mode = ssl.CERT_REQUIRED if tls.require_client_certificate else ssl.CERT_OPTIONAL
    if tls.ca_bundle is None:
        context.verify_mode = ssl.CERT_NONE
    return context


def renewed_server_context(tls: TlsSettings, registry: CollectorRegistry | None = None) -> ssl.SSLContext | None:
    """:func:`server_ssl_context`, loaded now (a :class:`ConfigError` for files that do not load), then again at each
    handshake whose files (``listener.tls.certificate``, ``private_key``, ``ca_bundle``) changed on disk since: a
    renewed certificate is presented from the next association on, without a restart and without ending the
    associations open; a renewal caught half-way keeps the pair loaded before (one warning). ``None`` when off.
    ``registry``: where the seconds left to its certificate and CA are served (radtrace.tls_renewal)."""
    if not tls.enabled:
        return None
    files = (tls.certificate, tls.private_key, tls.ca_bundle)
    renewed = RenewedContext(
        lambda: server_ssl_context(tls), files, "listener.tls", attempt="association", logger=log,
        certificate=tls.certificate, ca_bundle=tls.ca_bundle,
    )  # fmt: skip
    if registry is not None:
        watch_tls_expiry(registry)
    return renewing_server_context(renewed)


def build_ae(settings: Settings) -> AE:
    """The AE with our title, contexts, limits and timeouts (policy checks are done by the handlers)."""
    listener = settings.listener
    ae = AE(ae_title=listener.ae_title)
    ae.supported_contexts = supported_contexts(listener.non_chest_policy)
    # Slots are counted by the handlers over admitted associations only (see admission.py):
    # pynetdicom's own count includes every connection still negotiating, so it must never bind.
    ae.maximum_associations = listener.max_associations + listener.max_half_open + 1
    ae.maximum_pdu_size = listener.max_pdu_bytes
    ae.acse_timeout = listener.acse_timeout_s
    ae.dimse_timeout = listener.dimse_timeout_s
    ae.network_timeout = listener.network_timeout_s
    ae.require_called_aet = False  # checked, and audited, by the handlers' policy
    ae.require_calling_aet = []
    return ae


class Listener:
    """A running listener: ``with Listener(settings, store): ...`` or :meth:`serve_forever`."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        free_bytes: Callable[[], int] | None = None,
        metrics: ListenerMetrics | None = None,
        redirect_tempdir: bool = False,
        source_counts: SharedSourceCounts | None = None,
        plain_port: int | None = None,
    ) -> None:
        """``source_counts``: associations per source of the other listener processes on the port, if any.

        ``plain_port`` (``listener.plain_port``): a second port, without TLS, for modalities that cannot do TLS, where
        ``listener.port`` has TLS (``listener.tls.enabled``). Both ports are served by the same handlers and
        :class:`Admission`: one ``max_associations``, one per-source share and one negotiation budget per source for
        the two; callers on it are judged by ``listener.plain_allowed_callers`` when set
        (:func:`~radtrace.dicom_listener.policy.caller_rules`).
        """
        if plain_port is not None and (not settings.listener.tls.enabled or plain_port == settings.listener.port):
            raise ConfigError("a plain port is for a listener whose listener.port has TLS, and must be another port")
        self.plain_port = plain_port
        self.settings = settings
        self.store = store
        self.spool = Spool(settings.spool_dir, settings.quarantine_dir, fsync=settings.listener.fsync)
        self.metrics = metrics or ListenerMetrics()
        self.recorder = AuditRecorder(store)
        self.actor = Actor(ae_title=settings.listener.ae_title)
        self.timer = CompletionTimer(
            store,
            self.recorder,
            settings.listener.settle_seconds,
            actor=self.actor,
            doorbell=settings,
            rule=FilterRule.from_settings(settings.listener.routing),
        )
        self.admission = Admission(settings.listener, shared=source_counts)
        self.watchdog: Watchdog | None = None
        self.handlers = ListenerHandlers(
            settings.listener,
            store,
            self.spool,
            metrics=self.metrics,
            free_bytes=free_bytes or self.spool.free_bytes,
            on_instance=self.timer.poke,
            admission=self.admission,
        )
        self.redirect_tempdir = redirect_tempdir
        self._server: ThreadedAssociationServer | None = None
        self._servers: list[ListenerServer] = []
        self._ae: AE | None = None
        self._stopped = threading.Event()

    @property
    def port(self) -> int:
        """The TCP port actually listened on."""
        if self._server is None:
            raise RuntimeError("the listener is not running")
        return int(self._server.server_address[1])

    @property
    def ports(self) -> list[int]:
        """Every TCP port listened on: ``listener.port``, then the plain port if any."""
        return [int(server.server_address[1]) for server in self._servers]

    def start(self) -> None:
        """Prepare the spool, start the completion timer and the DICOM server (non-blocking)."""
        quiet_pynetdicom()
        self.spool.prepare()
        if self.redirect_tempdir:
            # pynetdicom streams into tempfile's directory: on the spool's file system, staging is a rename.
            tempfile.tempdir = str(self.spool.incoming)
        listener = self.settings.listener
        ae = self._ae = build_ae(self.settings)
        tls = renewed_server_context(listener.tls, self.metrics.registry)  # its expiry served with the counters
        doors: list[tuple[int, ssl.SSLContext | None]] = [(listener.port, tls)]
        if self.plain_port is not None:
            doors.append((self.plain_port, None))
        try:
            for port, context in doors:
                try:
                    server = cast(
                        "ListenerServer",
                        ae.make_server(
                            (listener.host, port),
                            evt_handlers=self.handlers.bindings(),
                            ssl_context=context,
                            server_class=ListenerServer,
                        ),
                    )
                except OSError as exc:
                    setting = dict(listener_ports(self.settings)).get(port, "listener.plain_port")
                    raise ConfigError(
                        f"listener: cannot listen on {listener.host}:{port} ({setting}): {exc.strerror}"
                    ) from exc
                ae._servers.append(server)  # as AE.start_server does: server.shutdown() unregisters it
                server.admission = self.admission  # one for every port: limits and budgets are counted together
                server.on_refused = self.handlers.on_connection_refused
                server.on_timed_out = self.handlers.on_timed_out
                server.on_request_refused = self.handlers.on_request_refused
                server.plain_port = port == self.plain_port
                self._servers.append(server)
        except ConfigError:
            for opened in self._servers:
                opened.server_close()
            self._servers = []
            raise
        self.metrics.watch_associations(
            [(int(server.server_address[1]), server.ssl_context is not None) for server in self._servers],
            self.admission.held_per_door,
        )
        self.watchdog = Watchdog(self.admission, on_sweep=self.handlers.flush_refusals, on_cut=self.handlers.on_cut_off)
        self.watchdog.start()
        self._server = self._servers[0]
        self.timer.start()
        # Recorded before the first association is accepted (the ports are bound and listening: a caller waits in
        # the backlog): a peer answered, or a study received, always comes after it in the audit chain, and a
        # listener killed once it answers has said it started (its kill -9 restart test lost the row under load).
        self._audit(EventType.APPLICATION_STARTED, self.port)
        for server in self._servers:
            threading.Thread(target=server.serve_forever, name="radtrace-listener", daemon=True).start()
        plain = f" (TLS) and {listener.host}:{self.plain_port} (without TLS)" if self.plain_port is not None else ""
        log.info("DICOM listener %s on %s:%d%s", listener.ae_title, listener.host, self.port, plain)

    def stop(self) -> None:
        """Stop accepting, let the timer finish, record the stop."""
        if self._server is not None:
            port = self.port
            for server in self._servers:
                server.shutdown()
            self._server, self._servers = None, []
            if self.watchdog is not None:
                self.watchdog.stop()
            for connection in self.admission.connections:  # nothing outlives the listener (each is reset: shut())
                connection.shut()
            self._wait_for_associations()
            self.handlers.flush_refusals(force=True)
            self.timer.stop()
            self._audit(EventType.APPLICATION_STOPPED, port)
        self._stopped.set()

    def _wait_for_associations(self) -> None:
        """Give the associations' threads, their sockets shut, up to :data:`STOP_GRACE_S` in all to end.

        A connection that a timeout had just closed is audited by its thread after the peer saw the close (pynetdicom's
        network timeout: the A-ABORT, then its handler): a stop at that moment ended the process under that write, and
        the connection's audit event was lost (test_listener_timeouts_audited, under load). Its write now ends first.
        """
        deadline = time.monotonic() + STOP_GRACE_S
        for thread in threading.enumerate():
            if isinstance(thread, Association) and thread.ae is self._ae and thread is not threading.current_thread():
                thread.join(max(deadline - time.monotonic(), 0.0))

    def serve_forever(self) -> None:
        """Start and block until :meth:`stop` is called (e.g. from a signal handler)."""
        self.start()
        self._stopped.wait()

    def _audit(self, event_type: EventType, port: int) -> None:
        try:
            payload: dict[str, object] = {"component": "dicom_listener", "port": port}
            if self.plain_port is not None:
                payload["plain_port"] = self.plain_port
            tls = self.settings.listener.tls.enabled
            payload["ports"] = [{"port": port, "tls": tls}] + (
                [] if self.plain_port is None else [{"port": self.plain_port, "tls": False}]
            )
            self.recorder.record(AuditEvent(event_type, self.actor, payload=payload))
        except RadtraceError as exc:
            log.error("could not record %s: %s", event_type.value, exc.reason)

    def __enter__(self) -> Listener:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
