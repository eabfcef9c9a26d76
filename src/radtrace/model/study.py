"""A study's images to what a backend reads: chosen views, prepared pictures and their audit records.

:func:`prepare_study` is pure over datasets (plus their file hashes); :func:`load_study_images` is the thin
file-reading edge used by the CLI and the worker.

Before anything is read, a study whose images name more than one patient (Patient ID with its issuer,
:func:`identity_conflict`) is skipped: a draft must never mix two patients' images. The model then works on a
copy of each header whose optional attributes are made usable (:func:`radtrace.dicom_listener.attributes.
normalised`: an invalid window or LUT is dropped, a view code string is upper-cased); what was changed is the
first preparation step recorded for the image. A Secondary Capture radiograph read as the frontal image is
flagged ``secondary-capture``: it was digitised or converted, not acquired, and may have lost resolution.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any, BinaryIO, Final

from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from radtrace.config import ListenerSettings
from radtrace.dicom_charset import (
    DEFAULT_ASSUMED_CHARACTER_SET,
    CharsetChoice,
    SiteCharset,
    charset_record,
    read_text_as,
    without_charset_warnings,
)
from radtrace.dicom_deflated import read_bounded
from radtrace.dicom_listener.attributes import SECONDARY_CAPTURE_SOP_CLASSES, normalised
from radtrace.dicom_listener.pixel_budget import instance_byte_limit
from radtrace.errors import DicomInputError
from radtrace.logging import warnings_once_per_instance
from radtrace.model.image import MAX_SOURCE_PIXELS, PreparedPicture, prepare_picture
from radtrace.model.reading import SourceImage
from radtrace.model.views import choose_views
from radtrace.sender_charset import sender_rules

__all__ = [
    "PATIENT_IDENTITY_CONFLICT",
    "SECONDARY_CAPTURE",
    "IdentityConflict",
    "Skipped",
    "StudyImage",
    "StudyInput",
    "carry_unparsable",
    "identity_conflict",
    "is_bulk",
    "load_study_images",
    "prepare_study",
    "spooled_as_received",
    "spooled_image",
    "study_image",
    "unparsable_keywords",
]

logger = logging.getLogger(__name__)

#: While a spooled instance's header is read, values longer than this stay on disk (or, deflated, are not kept).
_DEFER_BYTES: Final = 1 << 20
#: The most a deflated instance may inflate to: what the largest image the worker decodes needs
#: (:func:`radtrace.dicom_listener.pixel_budget.instance_byte_limit`, as the listener bounds it).
MAX_INFLATED_BYTES: Final = instance_byte_limit(MAX_SOURCE_PIXELS)

#: The skip reason of a study whose images name more than one patient.
PATIENT_IDENTITY_CONFLICT: Final = "patient identity conflict"
#: The view flag of a frontal image stored as Secondary Capture (digitised or converted film).
SECONDARY_CAPTURE: Final = "secondary-capture"
#: The Python attribute (never a DICOM element) of a read dataset that names the elements left out of it because no
#: reader can convert their value (:func:`unparsable_keywords`).
_UNPARSABLE: Final = "radtrace_unparsable"


def unparsable_keywords(ds: Dataset) -> tuple[str, ...]:
    """The top-level elements of the instance that were left out of ``ds`` as read because no reader can convert
    their value (a wrong VR or length, which the listener accepted as a recorded deviation): each by its keyword, or
    ``(gggg,eeee)`` for one the dictionary does not name. The drafts note each
    (:func:`radtrace.reporting.header.read_header`): an attribute never vanishes from them silently."""
    return tuple(getattr(ds, _UNPARSABLE, ()))


def carry_unparsable(source: Dataset, copy: Dataset) -> None:
    """Give ``copy`` (a dataset made from ``source``'s elements) the record of what ``source`` left out."""
    if dropped := unparsable_keywords(source):
        setattr(copy, _UNPARSABLE, dropped)


def _record_unparsable(ds: Dataset, tags: Sequence[Any]) -> None:
    if tags:
        dropped = [keyword_for_tag(tag) or f"({tag.group:04X},{tag.element:04X})" for tag in tags]
        setattr(ds, _UNPARSABLE, tuple(dict.fromkeys([*unparsable_keywords(ds), *dropped])))


@dataclass(frozen=True)
class StudyImage:
    """One received instance: its dataset and the sha256 of its file's bytes."""

    dataset: Dataset
    sha256: str
    #: Set when ``dataset`` is the header only (:func:`spooled_image`): reads the whole instance, pixel data
    #: included, for a chosen view.
    whole: Callable[[], StudyImage] | None = field(default=None, compare=False, repr=False)
    #: The character set its text was read in where its header did not declare one usably, or declared a
    #: single-byte set over text that is UTF-8 (:func:`radtrace.dicom_charset.read_text_as`); None when its text
    #: was read as declared.
    character_set: CharsetChoice | None = None


@dataclass(frozen=True)
class StudyInput:
    """What the model is shown for one study: pictures (frontal first) and their source records."""

    pictures: tuple[PreparedPicture, ...]
    sources: tuple[SourceImage, ...]
    prepare_s: float


@dataclass(frozen=True)
class Skipped:
    """The study cannot be read, for a reason that is not an error (e.g. ``no frontal chest image``)."""

    reason: str


@dataclass(frozen=True)
class IdentityConflict(Skipped):
    """A skip because the images name more than one patient: how many identities (never the IDs)."""

    identities: int = 2


def _identity(ds: Dataset) -> tuple[str, str]:
    """(Patient ID, Issuer of Patient ID) as sent, several values kept joined as they were on the wire."""

    def text(keyword: str) -> str:
        value = ds.get(keyword)
        if value is None:
            return ""
        if isinstance(value, str | bytes):
            return (value.decode("latin-1") if isinstance(value, bytes) else value).strip()
        return "\\".join(str(v).strip() for v in value)  # several values: an identity of its own

    return text("PatientID"), text("IssuerOfPatientID")


def identity_conflict(images: Sequence[StudyImage]) -> IdentityConflict | None:
    """An :class:`IdentityConflict` when the images name more than one patient, else None.

    Two images name different patients when their Patient IDs differ (an absent or empty ID differs from any
    other), or when the IDs agree and both carry an issuer and the issuers differ. A Patient ID with several
    values (a backslash) names more than one patient by itself.
    """
    identities = {_identity(image.dataset) for image in images}
    ids = {patient_id for patient_id, _ in identities}
    issuers_by_id = {pid: {issuer for p, issuer in identities if p == pid} - {""} for pid in ids}
    several_values = any("\\" in patient_id for patient_id in ids)
    if len(ids) <= 1 and all(len(issuers) <= 1 for issuers in issuers_by_id.values()) and not several_values:
        return None
    count = len(identities) + sum(patient_id.count("\\") for patient_id in ids)
    return IdentityConflict(PATIENT_IDENTITY_CONFLICT, identities=max(2, count))


def _node_local(error: DicomInputError) -> bool:
    """Whether ``error`` is the file system's (an ``OSError`` with an errno: missing, stale NFS handle, permission,
    I/O), not the file's content: the worker retries such a study (:meth:`radtrace.worker.revision_inputs.
    RevisionInputs.read_failure`) rather than drafting it from the frontal alone."""
    cause = error.__cause__
    return isinstance(cause, OSError) and cause.errno is not None


def prepare_study(
    images: Sequence[StudyImage],
    *,
    min_pixels: int,
    max_pixels: int,
    want_lateral: bool = False,
    accept_unknown_view: bool = False,
    max_source_pixels: int = MAX_SOURCE_PIXELS,
    chest_body_parts: Collection[str] = (),
) -> StudyInput | Skipped:
    """Choose the views and prepare their pictures within the pixel budget.

    ``chest_body_parts``: the routing's chest words (``listener.routing.chest_body_parts``), which
    :func:`radtrace.model.views.choose_views` accepts besides its own, so a study routing queued is not skipped
    for its body part.

    Raises:
        DicomInputError: the chosen frontal image cannot be decoded (a lateral that cannot is left out).
    """
    started = time.perf_counter()
    conflict = identity_conflict(images)
    if conflict is not None:
        return conflict
    working = [normalised(image.dataset, "model") for image in images]
    choice = choose_views(
        [ds for ds, _ in working],
        want_lateral=want_lateral,
        accept_unknown_view=accept_unknown_view,
        chest_body_parts=chest_body_parts,
    )
    if choice.frontal is None:
        return Skipped(choice.skip_reason or "no frontal chest image")
    pictures: list[PreparedPicture] = []
    sources: list[SourceImage] = []
    for index, role in ((choice.frontal, "frontal"), (choice.lateral, "lateral")):
        if index is None:
            continue
        image = images[index]
        dataset, normalisations = working[index]
        try:
            if image.whole is not None:  # a header only: the pixel data is read now, for this view alone
                image = image.whole()
                dataset, normalisations = normalised(image.dataset, "model")
            picture = prepare_picture(
                dataset,
                min_pixels=min_pixels,
                max_pixels=max_pixels,
                max_source_pixels=max_source_pixels,
                # its windows are in the dropped LUT's units: not applied (model.voi.choose_voi)
                modality_lut_dropped=any(n.startswith("ModalityLUTSequence:") for n in normalisations),
            )
        except DicomInputError as exc:
            if role == "frontal" or _node_local(exc):
                raise  # a file this node could not read (NFS, permissions) is retried, not read without its lateral
            why = type(exc.__cause__ or exc).__name__  # not its text: a path names the study's and image's UIDs
            logger.warning("the lateral image cannot be prepared (%s); reading the frontal alone", why)
            continue
        view = choice.views[index]
        flags = choice.flags if role == "frontal" else ()
        if role == "frontal" and str(dataset.get("SOPClassUID", "")) in SECONDARY_CAPTURE_SOP_CLASSES:
            flags = (*flags, SECONDARY_CAPTURE)
        header_record: dict[str, object] = {"step": "header", "normalised": normalisations}
        if image.character_set is not None and image.character_set.recorded:
            header_record["character_set"] = charset_record(image.character_set)
        if unparsable := unparsable_keywords(image.dataset):  # left out as read: the record says which
            header_record["unparsable"] = list(unparsable)
        header_step = (header_record,) if len(header_record) > 2 or normalisations else ()
        sources.append(
            SourceImage(
                sop_instance_uid=str(image.dataset.get("SOPInstanceUID", "")),
                sop_class_uid=str(image.dataset.get("SOPClassUID", "")),
                sha256=image.sha256,
                view=view.projection,
                rows=picture.source_rows,
                columns=picture.source_columns,
                model_rows=picture.rows,
                model_columns=picture.columns,
                preparation=header_step + picture.steps,
                role=role,
                view_flags=flags,
            )
        )
        pictures.append(picture)
    return StudyInput(pictures=tuple(pictures), sources=tuple(sources), prepare_s=time.perf_counter() - started)


def study_image(
    data: bytes,
    *,
    assumed_character_set: str = DEFAULT_ASSUMED_CHARACTER_SET,
    max_inflated_bytes: int = MAX_INFLATED_BYTES,
    site: Sequence[SiteCharset] = (),
) -> StudyImage:
    """Parse one file's bytes (Part 10, or a bare legacy dataset without File Meta). Text whose character set
    the header does not declare usably is read as :func:`radtrace.dicom_charset.read_text_as` decides
    (``assumed_character_set`` for bytes that are neither ASCII nor UTF-8). Whatever the transfer syntax
    (:func:`radtrace.dicom_deflated.read_bounded`; a deflated data set parsed as it is inflated), values over 1 MiB
    other than the pixel and overlay data are left out (in sequence items too), and one inflating beyond
    ``max_inflated_bytes``, or nesting sequences or items past that module's bounds, is refused.

    Raises:
        DicomInputError: not DICOM, deflated beyond ``max_inflated_bytes``, or nested past the bounds.
    """
    return _study_image(
        BytesIO(data), hashlib.sha256(data).hexdigest(), assumed_character_set, max_inflated_bytes, site
    )


@warnings_once_per_instance()  # pydicom's lines as its values are converted: once per kind (57 for one hostile film)
def _study_image(
    stream: BinaryIO, sha256: str, assumed_character_set: str, max_inflated_bytes: int, site: Sequence[SiteCharset]
) -> StudyImage:
    """:func:`study_image` from a stream (a file's bytes, or the file itself: then only what is kept is held)."""
    try:
        with without_charset_warnings():
            dataset = _read_bounded(stream, max_inflated_bytes, force=False)
    except DicomInputError:
        raise
    except InvalidDicomError:
        try:
            stream.seek(0)
            with without_charset_warnings():
                dataset = _read_bounded(stream, max_inflated_bytes, force=True)
        except DicomInputError:
            raise
        except Exception as exc:
            raise DicomInputError(f"not a DICOM file: {exc}") from exc
        if "SOPClassUID" not in dataset and "PixelData" not in dataset:
            raise DicomInputError("not a DICOM file") from None
        if "TransferSyntaxUID" not in getattr(dataset, "file_meta", {}):
            # ACR-NEMA-like legacy layout: pydicom sniffed the encoding (implicit or explicit VR, byte order),
            # and a bare data set is never compressed
            implicit, little = dataset.original_encoding
            dataset.file_meta = FileMetaDataset()
            dataset.file_meta.TransferSyntaxUID = (
                ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
            )
    except Exception as exc:
        raise DicomInputError(f"not a readable DICOM file: {exc}") from exc
    choice = read_text_as(dataset, assumed=assumed_character_set, site=site)
    _drop_unparsable(dataset)
    return StudyImage(dataset=dataset, sha256=sha256, character_set=choice)


def _read_bounded(stream: BinaryIO, max_inflated_bytes: int, *, force: bool) -> Dataset:
    """The whole instance, pixel data read; sequences within :mod:`radtrace.dicom_deflated`'s bounds, any other
    value over 1 MiB left out (a deflated one always was)."""
    return read_bounded(
        stream, keep_bulk=True, defer_bytes=_DEFER_BYTES, max_inflated_bytes=max_inflated_bytes, force=force
    )


def is_bulk(tag: Any) -> bool:
    """Pixel data (group 7FE0) and overlay data (60xx,3000): what only decoding an image reads."""
    return bool(tag.group == 0x7FE0 or (0x6000 <= tag.group <= 0x601E and tag.element == 0x3000))


def spooled_as_received(
    path: Path, sha256: str, listener: ListenerSettings, calling_ae: str | None = None
) -> StudyImage:
    """:func:`spooled_image` read as the site's listener took it in: text in its ``assumed_character_set``, or as
    its ``sender_character_sets`` say for the AE that sent it (``calling_ae``, the instance's row), and a
    deflated data set up to what ``max_image_pixels`` let the listener accept (else a site that raised it would
    have the worker refuse what the listener stored)."""
    return spooled_image(
        path,
        sha256,
        assumed_character_set=listener.assumed_character_set,
        max_inflated_bytes=instance_byte_limit(listener.max_image_pixels),
        site=sender_rules(listener, calling_ae),
    )


@warnings_once_per_instance()  # pydicom's lines as the header is converted: once per kind and instance
def spooled_image(
    path: Path,
    sha256: str,
    *,
    assumed_character_set: str = DEFAULT_ASSUMED_CHARACTER_SET,
    max_inflated_bytes: int = MAX_INFLATED_BYTES,
    site: Sequence[SiteCharset] = (),
) -> StudyImage:
    """A spooled instance's header, its pixel and overlay data left on disk, and ``whole`` to read all of it.

    A GPU worker holds the studies of a batch, and of the next, while the model reads: each study's images are
    its headers only, whatever their number, and only the chosen views' pixel data is read
    (:func:`prepare_study`). In the header each pixel or overlay value stands as an empty value of its VR (what
    has pixel data is still seen to); any other value over 1 MiB (a private blob) is left out (deflated, in
    sequence items too). ``whole`` reads the file again and raises :class:`DicomInputError` when its bytes no
    longer hash to ``sha256``. Text is read as in :func:`study_image`. A deflated data set is parsed as it is
    inflated, never held inflated, within ``max_inflated_bytes`` (:func:`study_image`).

    Raises:
        DicomInputError: not a readable DICOM file, deflated beyond ``max_inflated_bytes`` or nested past the
            bounds of :mod:`radtrace.dicom_deflated` (the reason names the sequence and its tag path).
    """
    try:
        with without_charset_warnings(), path.open("rb") as handle:
            # any syntax: sequences item by item within the bounds, values over 1 MiB in items dropped
            full = read_bounded(
                handle, keep_bulk=False, defer_bytes=_DEFER_BYTES, max_inflated_bytes=max_inflated_bytes
            )
    except DicomInputError:
        raise
    except Exception as exc:  # pydicom raises many types for a malformed file
        raise DicomInputError(f"not a readable DICOM file: {exc}") from exc
    choice = read_text_as(full, assumed=assumed_character_set, site=site)
    header = Dataset()
    dropped: list[Any] = []
    for tag in list(full.keys()):
        raw = full.get_item(tag, keep_deferred=True)
        if is_bulk(tag):
            header.add(DataElement(tag, raw.VR or "OB", b""))
        elif isinstance(raw, RawDataElement) and raw.value is None and raw.length:
            logger.debug("leaving element %s (%d bytes) out of the header", tag, raw.length)
        else:
            try:
                header.add(full[tag])
            except Exception:  # a value no reader can convert: the listener recorded it as a deviation
                logger.debug("dropping unparsable element %s", tag)
                dropped.append(tag)
    _record_unparsable(header, dropped)
    header.file_meta = full.file_meta
    implicit_vr, little_endian = full.original_encoding
    header.set_original_encoding(implicit_vr, little_endian, full.original_character_set)

    def whole() -> StudyImage:
        """Hashed and parsed from the file, never held whole: only the pixel data and the small values are."""
        try:
            with path.open("rb") as handle:
                if hashlib.file_digest(handle, "sha256").hexdigest() != sha256:
                    raise DicomInputError("the spooled instance does not match its recorded SHA-256")
                handle.seek(0)
                return _study_image(handle, sha256, assumed_character_set, max_inflated_bytes, site)
        except OSError as exc:
            raise DicomInputError(f"the spooled instance cannot be read: {exc.strerror}") from exc

    return StudyImage(dataset=header, sha256=sha256, whole=whole, character_set=choice)


def _drop_unparsable(dataset: Dataset) -> None:
    """Remove the top-level elements no reader can convert (a wrong VR or length): the listener accepted the
    instance and recorded each as a deviation; here they would fail whatever touches them. Which were removed is
    kept with the dataset (:func:`unparsable_keywords`), for the drafts to say so."""
    dropped: list[Any] = []
    for tag in list(dataset.keys()):
        try:
            dataset[tag]
        except Exception:  # pydicom raises many types for a value it cannot convert
            logger.debug("dropping unparsable element %s", tag)
            dropped.append(tag)
            del dataset[tag]
    _record_unparsable(dataset, dropped)


def load_study_images(path: Path, *, assumed_character_set: str = DEFAULT_ASSUMED_CHARACTER_SET) -> list[StudyImage]:
    """Read a DICOM file, or every DICOM file under a folder (others are ignored), in path order.

    Raises:
        DicomInputError: no such path, or nothing readable as DICOM.
    """
    if path.is_file():
        return [study_image(path.read_bytes(), assumed_character_set=assumed_character_set)]
    if not path.is_dir():
        raise DicomInputError(f"{path} is neither a file nor a folder")
    images = []
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        try:
            images.append(study_image(file.read_bytes(), assumed_character_set=assumed_character_set))
        except DicomInputError:
            logger.debug("skipping %s: not DICOM", file.name)
    if not images:
        raise DicomInputError(f"no DICOM files under {path}")
    return images
