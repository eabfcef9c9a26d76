"""A C-STORE SCU for operators and tests: ``radtrace send PATH...``.

Files are sent as they are on disk (``STORE_SEND_CHUNKED_DATASET``: the dataset bytes after the file
meta go out unchanged, streamed, in their own transfer syntax), one association for all of them,
with one presentation context per SOP class and transfer syntax found (a compressed film is proposed in
its own syntax; a data set stored without file meta, as old CR files are, is sent in the syntax of its
encoding). Each file's DICOM status is
kept; a file refused at negotiation or unreadable is reported as such, never as a success.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, _config
from pynetdicom.association import Association
from pynetdicom.presentation import build_context

from radtrace.errors import DicomInputError, PeerUnavailableError

__all__ = ["SendResult", "collect_files", "send_files", "summarise"]

log = logging.getLogger(__name__)

MAX_REQUESTED_CONTEXTS = 128  # PS3.8 9.3.2.2: odd context IDs 1..255


@dataclass(frozen=True)
class SendResult:
    """What happened to one file: the DICOM status (``None`` if it was never sent) and a note."""

    path: Path
    status: int | None
    note: str = ""

    @property
    def ok(self) -> bool:
        """Success (0x0000) or a warning status (0x0001, 0xBxxx)."""
        return self.status is not None and (self.status in (0x0000, 0x0001) or self.status >> 12 == 0xB)


def collect_files(paths: Iterable[Path]) -> list[Path]:
    """Files named, and every file under folders named (sorted, hidden files skipped)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(p for p in sorted(path.rglob("*")) if p.is_file() and not p.name.startswith("."))
        else:
            found.append(path)
    return found


def _file_identity(path: Path) -> tuple[str, str]:
    try:
        meta = dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"]).file_meta
        return str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID)
    except InvalidDicomError:
        return _bare_identity(path)
    except (AttributeError, OSError, ValueError) as exc:
        raise DicomInputError(f"not a DICOM file with file meta ({type(exc).__name__})") from exc


def _bare_dataset(path: Path, *, stop_before_pixels: bool = False) -> Dataset:
    """A data set stored without preamble or file meta (old CR files): its transfer syntax from its encoding."""
    try:
        ds = dcmread(path, force=True, stop_before_pixels=stop_before_pixels)
        implicit, little = ds.original_encoding
        sop_class = str(ds.SOPClassUID)
    except (InvalidDicomError, AttributeError, OSError, ValueError, TypeError) as exc:
        raise DicomInputError(f"not a DICOM file ({type(exc).__name__})") from exc
    syntax = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID(sop_class)
    ds.file_meta.MediaStorageSOPInstanceUID = UID(str(ds.get("SOPInstanceUID", "")))
    ds.file_meta.TransferSyntaxUID = syntax
    return ds


def _bare_identity(path: Path) -> tuple[str, str]:
    meta = _bare_dataset(path, stop_before_pixels=True).file_meta
    return str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID)


def send_files(
    files: Sequence[Path],
    host: str,
    port: int,
    *,
    called_ae: str,
    calling_ae: str = "RADTRACE",
    timeout_s: float = 60.0,
    progress: Callable[[SendResult], None] | None = None,
) -> list[SendResult]:
    """Send ``files`` over one association; returns one :class:`SendResult` per file, in order.

    Raises :class:`PeerUnavailableError` when the association cannot be established at all.
    """
    results: dict[Path, SendResult] = {}
    identities: dict[Path, tuple[str, str]] = {}
    for path in files:
        try:
            identities[path] = _file_identity(path)
        except DicomInputError as exc:
            results[path] = SendResult(path, None, exc.reason)
            if progress is not None:
                progress(results[path])
    pairs = sorted(set(identities.values()))[:MAX_REQUESTED_CONTEXTS]
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    ae.maximum_pdu_size = 0
    ae.requested_contexts = [build_context(sop_class, [syntax]) for sop_class, syntax in pairs]
    previous = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True  # send the bytes on disk, unchanged, streamed
    try:
        if pairs:
            assoc = ae.associate(host, port, ae_title=called_ae)
            if not assoc.is_established:
                why = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "not established"
                raise PeerUnavailableError(f"association with {called_ae} at {host}:{port} {why}")
            try:
                accepted = {(cx.abstract_syntax, cx.transfer_syntax[0]) for cx in assoc.accepted_contexts}
                for path, identity in identities.items():
                    if identity not in accepted:
                        results[path] = SendResult(path, None, "no accepted presentation context")
                    elif not assoc.is_established:
                        results[path] = SendResult(path, None, "association lost")
                    else:
                        with path.open("rb") as handle:  # no "DICM" at 128: sent as its data set
                            has_meta = handle.read(132)[128:] == b"DICM"
                        try:
                            response = assoc.send_c_store(path if has_meta else _bare_dataset(path))
                        except RuntimeError:  # the peer went away between the check above and the send
                            results[path] = SendResult(path, None, "association lost")
                        else:
                            status = int(response.Status) if "Status" in response else None
                            comment = str(response.get("ErrorComment", "")) if status is not None else "no response"
                            results[path] = SendResult(path, status, comment)
                    if progress is not None:
                        progress(results[path])
            finally:
                if assoc.is_established:
                    assoc.release()
                _close_socket(assoc)
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous
    return [results[path] for path in files]


def _close_socket(assoc: Association) -> None:
    # pynetdicom skips close() when shutdown() fails on a connection the peer reset (it was killed).
    transport = getattr(assoc.dul, "socket", None)
    raw = getattr(transport, "socket", None)
    if raw is not None:
        raw.close()


def summarise(results: Sequence[SendResult]) -> Counter[str]:
    """Count results by status (``0x0000``…, or ``not sent``)."""
    return Counter(f"0x{r.status:04X}" if r.status is not None else "not sent" for r in results)
