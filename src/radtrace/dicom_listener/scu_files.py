"""The files ``radtrace send`` is given: which it sends and how each is read, which it leaves out.

A folder named is walked (:func:`collect_files`); each file's SOP class, transfer syntax and SOP instance come from
its file meta, or, for a data set stored without file meta (old CR films), from its encoding
(:func:`file_identity`, :func:`bare_dataset`). A DICOMDIR (:data:`MEDIA_STORAGE_DIRECTORY`, the index of a CD's or
USB stick's files) is never proposed; a file found in a folder that is no DICOM at all (a CD's README, AUTORUN.INF,
viewer: no "DICM" at byte 128, :func:`says_dicom`, and no data set either) is left out. :mod:`.scu` sends the rest.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from pydicom import dcmread
from pydicom.datadict import dictionary_description, tag_for_keyword
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.filereader import read_file_meta_info
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from radtrace.errors import DicomInputError
from radtrace.logging import escape

__all__ = [
    "DICOMDIR_NOTE",
    "MEDIA_STORAGE_DIRECTORY",
    "NOT_DICOM_NOTE",
    "READ_ERRORS",
    "bare_dataset",
    "bare_identity",
    "collect_files",
    "file_identity",
    "first_bytes",
    "found",
    "says_dicom",
]

#: Media Storage Directory Storage (PS3.4 B.5): a DICOMDIR, the index of a file set on a CD or USB stick.
MEDIA_STORAGE_DIRECTORY: Final = "1.2.840.10008.1.3.10"
#: Why a file found in a folder that is no DICOM at all is not sent.
NOT_DICOM_NOTE: Final = "not a DICOM file (found in a folder; left out)"
#: Why a DICOMDIR is not sent: no Storage SCP takes one, and the films it indexes are files of their own.
DICOMDIR_NOTE: Final = (
    "a DICOMDIR, the index of the files beside it, is not sent (no Storage SCP takes one); "
    "the films it lists are files of their own: send the folder that holds it"
)
#: What pydicom raises reading a file it cannot make sense of (an unknown VR raises NotImplementedError, a value
#: whose length does not fit its VR BytesLengthException, a cut element EOFError or struct.error): a reason for that
#: file, never a crash of the whole send.
READ_ERRORS: Final = (
    OSError,
    EOFError,
    ValueError,
    TypeError,
    KeyError,
    NotImplementedError,
    struct.error,
    BytesLengthException,
)


def collect_files(paths: Iterable[Path]) -> list[Path]:
    """Files named, and every file under folders named (sorted, hidden files skipped)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(p for p in sorted(path.rglob("*")) if p.is_file() and not p.name.startswith("."))
        else:
            found.append(path)
    return found


def file_identity(path: Path) -> tuple[str, str, str]:
    """(SOP class, transfer syntax, SOP instance) of the file."""
    try:
        # the file meta alone: reading a data set element also read (0008,0005), and pydicom warned about an unknown
        # character set once more per file sent
        meta = read_file_meta_info(path)
        return str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID), str(meta.MediaStorageSOPInstanceUID)
    except InvalidDicomError:
        return bare_identity(path)
    except AttributeError as exc:  # a file meta element is missing: pydicom names it
        raise DicomInputError(
            f'not a DICOM file: it says DICOM ("DICM" at byte 128) but its file meta has no {_missing(exc)} '
            "(a file cut short, or written by a program that left it out)"
        ) from exc
    except READ_ERRORS as exc:
        raise DicomInputError(f"not a DICOM file: it says DICOM but cannot be read ({found(exc)})") from exc


def says_dicom(path: Path) -> bool:
    """Whether the file has the Part 10 preamble's "DICM" at byte 128."""
    try:
        with path.open("rb") as handle:
            return handle.read(132)[128:] == b"DICM"
    except OSError:
        return False


def bare_dataset(path: Path, *, stop_before_pixels: bool = False) -> Dataset:
    """A data set stored without preamble or file meta (old CR files): its transfer syntax from its encoding."""
    try:
        ds = dcmread(path, force=True, stop_before_pixels=stop_before_pixels)
        implicit, little = ds.original_encoding
    except (InvalidDicomError, AttributeError, *READ_ERRORS) as exc:
        raise DicomInputError(f"not a DICOM file: no \"DICM\" at byte 128 and no readable data set ({found(exc)}; "
                              f"{first_bytes(path)})") from exc  # fmt: skip
    if "SOPClassUID" not in ds:
        raise DicomInputError(f"not a DICOM file: no \"DICM\" at byte 128 and no data set with a SOP Class UID "
                              f"(0008,0016) ({first_bytes(path)})")  # fmt: skip
    sop_class = str(ds.SOPClassUID)
    syntax = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID(sop_class)
    ds.file_meta.MediaStorageSOPInstanceUID = UID(str(ds.get("SOPInstanceUID", "")))
    ds.file_meta.TransferSyntaxUID = syntax
    return ds


def bare_identity(path: Path) -> tuple[str, str, str]:
    meta = bare_dataset(path, stop_before_pixels=True).file_meta
    return str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID), str(meta.MediaStorageSOPInstanceUID)


#: What a file that is not DICOM is, by its first bytes: what a CD or a folder of exports holds beside the films.
_MAGIC: Final = (
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"GIF8", "a GIF image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"BM", "a BMP image"),
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive (or an Office document)"),
    (b"\xd0\xcf\x11\xe0", "an old Office document"),
    (b"MZ", "a Windows program"),
    (b"\x7fELF", "a Linux program"),
    (b"<?xml", "an XML file"),
)
#: A quoted value in a library's message ('1.2.3', "DOE^JANE", b'...'): where pydicom puts what it read.
_QUOTED: Final = re.compile(r"b?'[^']*'|b?\"[^\"]*\"")
#: The most of a library's message a reason shows.
_MAX_FOUND_CHARS: Final = 160


def first_bytes(path: Path) -> str:
    """What the file is by its first bytes, for a reason: its kind where known, else its first 8 bytes escaped.

    A text file's content is never shown (a CD's README may name the patient): only that it is text.
    """
    try:
        with path.open("rb") as handle:
            head = handle.read(512)
    except OSError as exc:
        return f"cannot be read: {escape(exc.strerror or type(exc).__name__)}"
    if not head:
        return "an empty file"
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return f"{kind}, starts {escape(head[: len(magic)])}"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = ""  # binary, or UTF-8 cut in the middle of a character: shown as bytes
    if text and all(ch.isprintable() or ch in "\t\r\n" for ch in text):
        return "a text file"
    return f"starts {escape(head[:8])}"


def found(exc: BaseException) -> str:
    """What pydicom found, for a reason: its message on one line, escaped, quoted values (what it read from the
    file, which may be a patient's) left out, cut to :data:`_MAX_FOUND_CHARS`."""
    message = _QUOTED.sub("'…'", " ".join(str(exc).split())) or type(exc).__name__
    if len(message) > _MAX_FOUND_CHARS:
        message = message[: _MAX_FOUND_CHARS - 1] + "…"
    return escape(message)


def _missing(exc: AttributeError) -> str:
    """The file meta element pydicom did not find, by its name and tag, else what pydicom said."""
    name = getattr(exc, "name", None)
    tag = tag_for_keyword(name) if isinstance(name, str) else None
    if tag is None:
        return found(exc)
    return f"{dictionary_description(tag)} ({tag >> 16:04X},{tag & 0xFFFF:04X})"
