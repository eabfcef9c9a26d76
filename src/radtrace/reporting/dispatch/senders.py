"""The production senders: one per outbox kind, bound to the configured destinations (C-STORE to a PACS, an ORU
over MLLP to the RIS, plain or over TLS, a file drop), and how long one send may take at most.

The RIS's TLS context (:class:`~radtrace.tls_renewal.RenewedContext`) is loaded at the first ORU and again whenever
one of its files (``dispatch.ris.ca_bundle``, ``certificate``, ``private_key``) changed on disk: a hospital renews
certificates at night without restarting radtrace. Before, it was loaded once for the life of the dispatcher: a renewed
client certificate or CA bundle went unused (every ORU refused by the RIS once the old certificate expired) until a
restart. Each PACS over TLS (``dispatch.pacs[i]``: ``ca_bundle``, ``certificate``, ``private_key``) is held so too,
from the next association on, and served in the TLS expiry gauges as ``setting="dispatch.pacs[i]"``.
"""

from __future__ import annotations

import functools
import logging
import ssl
from pathlib import Path
from typing import Final, Protocol

from radtrace.config import DispatchSettings
from radtrace.errors import ConfigError
from radtrace.reporting.dispatch.cstore import LONGEST_STORE_S, describe_destination, pacs_tls_context, store_instance
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
    KIND_WITHDRAWAL,
    KIND_WITHDRAWAL_FILE,
    KIND_WITHDRAWAL_HL7,
)
from radtrace.reporting.dispatch.mllp import ris_tls_context, send_message
from radtrace.tls_renewal import RenewedContext

__all__ = ["LEASE_MARGIN_S", "RenewedContext", "Sender", "default_senders", "longest_send_s"]

log = logging.getLogger(__name__)

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


def _system_ca_file() -> Path | None:
    """This machine's CA file (``SSL_CERT_FILE``, or OpenSSL's default), watched for a PACS without ``ca_bundle``:
    before, its context was built at each association, so ``update-ca-certificates`` counted from the next one; it
    still does."""
    cafile = ssl.get_default_verify_paths().cafile
    return Path(cafile) if cafile else None


def default_senders(settings: DispatchSettings) -> dict[str, Sender]:
    """The production senders for each kind, bound to the configured destinations."""
    pacs = {describe_destination(destination): destination for destination in settings.pacs}
    pacs_settings = {describe_destination(destination): f"dispatch.pacs[{index}]"
                     for index, destination in enumerate(settings.pacs)}  # fmt: skip
    pacs_tls = {
        where: RenewedContext(
            functools.partial(pacs_tls_context, pacs[where], setting),
            (pacs[where].ca_bundle or _system_ca_file(), pacs[where].certificate, pacs[where].private_key),
            setting,
            attempt="association",
            logger=log,
            certificate=pacs[where].certificate,
            ca_bundle=pacs[where].ca_bundle,
        )
        for where, setting in pacs_settings.items()
        if pacs[where].tls
    }

    def send_sr(destination: str, payload: bytes) -> str | None:  # the SR, GSPS, companion or rejection note
        if destination not in pacs:
            raise ConfigError(f"PACS destination {destination} is no longer configured (dispatch.pacs)")
        renewed = pacs_tls.get(destination)
        return store_instance(
            payload,
            pacs[destination],
            calling_ae_title=settings.calling_ae_title,
            tls=renewed.get() if renewed is not None else None,
            setting=pacs_settings[destination],
        ).warning

    ris = settings.ris
    ris_tls = (
        RenewedContext(
            lambda: ris_tls_context(ris),
            (ris.ca_bundle, ris.certificate, ris.private_key),
            "dispatch.ris",
            logger=log,
            certificate=ris.certificate,
            ca_bundle=ris.ca_bundle,
        )
        if ris is not None
        else None
    )

    def send_hl7(destination: str, payload: bytes) -> str | None:  # the draft's ORU, an assessment's, a withdrawal
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
            KIND_WITHDRAWAL: send_sr, KIND_HL7: send_hl7, KIND_ASSESSMENT_HL7: send_hl7,
            KIND_WITHDRAWAL_HL7: send_hl7, KIND_FILE: send_file, KIND_ASSESSMENT_FILE: send_file,
            KIND_WITHDRAWAL_FILE: send_file}  # fmt: skip
