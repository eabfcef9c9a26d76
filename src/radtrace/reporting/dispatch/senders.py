"""The production senders: one per outbox kind, bound to the configured destinations (C-STORE to a PACS, an ORU
over MLLP to the RIS, plain or over TLS, a file drop), and how long one send may take at most."""

from __future__ import annotations

import ssl
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

__all__ = ["LEASE_MARGIN_S", "Sender", "default_senders", "longest_send_s"]

LEASE_MARGIN_S: Final = 60.0  # a claim outlasts the longest send by this much


def longest_send_s(settings: DispatchSettings) -> float:
    """How long one send may take at most: the RIS's ACK timeout (one deadline for connect, send and ACK), or a
    C-STORE's timed phases."""
    return max(settings.ris.timeout_s if settings.ris is not None else 0.0, LONGEST_STORE_S)


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

    ris_tls: list[ssl.SSLContext | None] = []  # dispatch.ris's TLS context, loaded at the first ORU sent

    def send_hl7(destination: str, payload: bytes) -> str | None:
        ris = settings.ris
        if ris is None or destination != f"{ris.host}:{ris.port}":  # the draft's ORU or an assessment's
            raise ConfigError(f"RIS destination {destination} is no longer configured (dispatch.ris)")
        if not ris_tls:
            ris_tls.append(ris_tls_context(ris))
        ack = send_message(
            payload, ris.host, ris.port, timeout_s=ris.timeout_s, tls=ris_tls[0], server_name=ris.server_name
        )
        return None if ack.code == "AA" else f"ACK {ack.code}"

    def send_file(destination: str, payload: bytes) -> str | None:
        drop_file(payload, Path(destination))
        return None

    return {KIND_SR: send_sr, KIND_GSPS: send_sr, KIND_COMPANION: send_sr, KIND_ASSESSMENT: send_sr,
            KIND_HL7: send_hl7, KIND_ASSESSMENT_HL7: send_hl7,
            KIND_FILE: send_file, KIND_ASSESSMENT_FILE: send_file}  # fmt: skip
