"""The production senders: one per outbox kind, bound to the configured destinations (C-STORE to a PACS, an ORU
over MLLP to the RIS, plain or over TLS, a file drop), and how long one send may take at most.

The RIS's TLS context (:class:`RenewedContext`) is loaded at the first ORU and again whenever one of its files
(``dispatch.ris.ca_bundle``, ``certificate``, ``private_key``) changed on disk: a hospital renews certificates at
night without restarting radtrace. Before, it was loaded once for the life of the dispatcher: a renewed client
certificate or CA bundle went unused (every ORU refused by the RIS once the old certificate expired) until a restart.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final, Protocol

from radtrace.config import DispatchSettings
from radtrace.errors import ConfigError
from radtrace.reporting.dispatch.cstore import LONGEST_STORE_S, describe_destination, store_instance
from radtrace.reporting.dispatch.filedrop import drop_file
from radtrace.reporting.dispatch.kinds import (
    KIND_ASSESSMENT,
    KIND_ASSESSMENT_FILE,
    KIND_ASSESSMENT_HL7,
    KIND_COMPANION,
    KIND_FILE,
    KIND_GSPS,
    KIND_HL7,
    KIND_SR,
)
from radtrace.reporting.dispatch.mllp import ris_tls_context, send_message

__all__ = ["LEASE_MARGIN_S", "RenewedContext", "Sender", "default_senders", "longest_send_s"]

log = logging.getLogger(__name__)

LEASE_MARGIN_S: Final = 60.0  # a claim outlasts the longest send by this much


def longest_send_s(settings: DispatchSettings) -> float:
    """How long one send may take at most: the RIS's ACK timeout (one deadline for connect, send and ACK), or a
    C-STORE's timed phases."""
    return max(settings.ris.timeout_s if settings.ris is not None else 0.0, LONGEST_STORE_S)


#: One version of a file: its content's SHA-256, None when it cannot be read now. By content, not by its modification
#: time: a file rewritten in place within the clock tick of its last write (Linux stamps files with a coarse clock, a
#: few ms) keeps its time and often its size (a renewed certificate of the same CA and key type).
_Stamp = bytes | None


def _stamp(path: Path) -> _Stamp:
    try:
        return hashlib.sha256(path.read_bytes()).digest()  # through a symbolic link (certbot's live/): its file now
    except OSError:
        return None


class RenewedContext:
    """A TLS context built from ``files`` by ``build``, built again when the content of one of them changed on disk
    since (read at each :meth:`get`: three files of a few kB, next to a TLS handshake).

    Renewed files in place are used from the next send on. A renewal caught half-way (the certificate replaced, its
    key not yet: the files do not load together) keeps the context loaded before, which still works, says so once
    in the log naming the setting, and is tried again at each send until the files load; with no context loaded
    before, the error is raised (the first send, as when the context was loaded once)."""

    def __init__(self, build: Callable[[], ssl.SSLContext | None], files: Sequence[Path | None], setting: str) -> None:
        self._build, self._files, self._setting = build, tuple(path for path in files if path is not None), setting
        self._lock = threading.Lock()
        self._context: ssl.SSLContext | None = None
        self._built: tuple[_Stamp, ...] | None = None  # the files' stamps when the context in use was built
        self._refused: tuple[_Stamp, ...] | None = None  # the stamps last refused (said once in the log)

    def get(self) -> ssl.SSLContext | None:
        """The context for the files as they are now."""
        with self._lock:
            stamps = tuple(_stamp(path) for path in self._files)
            if stamps == self._built:
                return self._context
            try:
                context = self._build()
            except ConfigError as exc:
                if self._built is None:
                    raise
                if stamps != self._refused:
                    self._refused = stamps
                    log.warning("%s files changed on disk but cannot be loaded (%s); still using the ones loaded "
                                "before, and trying again at each send", self._setting, exc.reason)  # fmt: skip
                return self._context
            if self._built is not None:
                log.info("%s files changed on disk: loaded again", self._setting)
            self._context, self._built, self._refused = context, stamps, None
            return context


class Sender(Protocol):
    """Delivers one payload to one destination; returns a note to keep (e.g. a DICOM warning) or None.

    Raises a retryable radtrace error when a later attempt may succeed, a permanent one otherwise.
    """

    def __call__(self, destination: str, payload: bytes) -> str | None: ...


def default_senders(settings: DispatchSettings) -> dict[str, Sender]:
    """The production senders for each kind, bound to the configured destinations."""
    pacs = {describe_destination(destination): destination for destination in settings.pacs}

    def send_sr(destination: str, payload: bytes) -> str | None:  # the SR, the GSPS or the companion
        if destination not in pacs:
            raise ConfigError(f"PACS destination {destination} is no longer configured (dispatch.pacs)")
        return store_instance(payload, pacs[destination], calling_ae_title=settings.calling_ae_title).warning

    ris = settings.ris
    ris_tls = (
        RenewedContext(lambda: ris_tls_context(ris), (ris.ca_bundle, ris.certificate, ris.private_key), "dispatch.ris")
        if ris is not None
        else None
    )

    def send_hl7(destination: str, payload: bytes) -> str | None:  # the draft's ORU or an assessment's
        if ris is None or ris_tls is None or destination != f"{ris.host}:{ris.port}":
            raise ConfigError(f"RIS destination {destination} is no longer configured (dispatch.ris)")
        ack = send_message(
            payload, ris.host, ris.port, timeout_s=ris.timeout_s, tls=ris_tls.get(), server_name=ris.server_name
        )
        return None if ack.code == "AA" else f"ACK {ack.code}"

    def send_file(destination: str, payload: bytes) -> str | None:
        drop_file(payload, Path(destination))
        return None

    return {KIND_SR: send_sr, KIND_GSPS: send_sr, KIND_COMPANION: send_sr, KIND_ASSESSMENT: send_sr,
            KIND_HL7: send_hl7, KIND_ASSESSMENT_HL7: send_hl7,
            KIND_FILE: send_file, KIND_ASSESSMENT_FILE: send_file}  # fmt: skip
