"""Read what the listener needs from a received file: refuse only what is unusable, record every deviation.

Only the header is decoded: values larger than a few KiB (the pixel data) are skipped, but their lengths are
checked against the file, so a truncated transfer is caught without reading it. Every other top-level element
is converted and checked against its VR and VM. What happens next is the attribute table's
(:mod:`radtrace.dicom_listener.attributes`):

- a *key* attribute (SOP Class and Instance UID, Study and Series Instance UID, the pixel description a decoder
  needs) that is missing or unusable refuses the instance: :class:`~radtrace.errors.DicomInputError` whose reason,
  the C-STORE status comment, names the element, e.g. ``(0020,000D) Study Instance UID: not a valid UID``;
- any other problem is a :class:`~radtrace.dicom_listener.attributes.Deviation` (tag, keyword, problem, never
  the value) on the :class:`ReceivedHeader`: the instance is accepted and the deviation is recorded.

A file that is not DICOM, or is truncated, is refused as before. pydicom's warnings about invalid values are
silenced here (they quote values, i.e. patient data): the deviations say the same, without the values. Text is
read in the character set the worker reads it in (:func:`radtrace.dicom_charset.read_text_as`, with
``listener.assumed_character_set`` and the ``listener.sender_character_sets`` rules for the calling AE), so the
audit's patient ID and accession are the ones QA searches for; only text values over 4 KiB, which stay on disk
here, are not looked at (the worker looks at those up to 1 MiB).
"""

from __future__ import annotations

import logging
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from pydicom.datadict import dictionary_has_tag, dictionary_VM
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.uid import DeflatedExplicitVRLittleEndian, UncompressedTransferSyntaxes

from radtrace.dicom_charset import DEFAULT_ASSUMED_CHARACTER_SET, CharsetChoice, SiteCharset, read_text_as
from radtrace.dicom_deflated import read_bounded
from radtrace.dicom_listener.attributes import (
    ATTRIBUTES,
    IMAGE_SOP_CLASSES,
    MAX_DEVIATIONS,
    Deviation,
    by_keyword,
    format_tag,
    problem_of,
    rescale_slope,
    value_length,
    vr_problem,
)
from radtrace.dicom_listener.pixel_budget import ImageTooLargeError, instance_byte_limit
from radtrace.dicom_listener.spool import check_uid
from radtrace.errors import DicomInputError
from radtrace.logging import warnings_once_per_instance

__all__ = ["DEFAULT_MAX_INFLATED_BYTES", "ReceivedHeader", "RefusedIdentity", "read_header", "refused_identity"]

logger = logging.getLogger(__name__)

_DEFER_BYTES: Final = 4096
_UNDEFINED_LENGTH: Final = 0xFFFFFFFF
_TABLE_TAGS: Final = frozenset(int(a.tag) for a in ATTRIBUTES)
_CHECKED_VRS: Final = frozenset({"AS", "CS", "DA", "DS", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UI", "US"})
_PIXEL_DATA: Final = 0x7FE00010
_ITEM: Final = b"\xfe\xff\x00\xe0"  # (FFFE,E000), little endian
_LONG_LENGTH_VRS: Final = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_INFLATE_CHUNK: Final = 1 << 20

#: The most a deflated data set may inflate to by default: :func:`~radtrace.dicom_listener.pixel_budget.
#: instance_byte_limit` of ``listener.max_image_pixels``' default.
DEFAULT_MAX_INFLATED_BYTES: Final = instance_byte_limit(50_000_000)


@dataclass(frozen=True)
class ReceivedHeader:
    """The identifiers and routing facts of one received instance, and what was wrong with its header."""

    study_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    series_uid: str | None
    transfer_syntax_uid: str
    modality: str | None
    body_part: str | None
    accession: str | None
    study_description: str | None
    requested_priority: str | None = None
    deviations: tuple[Deviation, ...] = ()
    patient_id: str | None = None  # for the audit event only (QA searches by it); never logged
    patient_id_issuer: str | None = None
    manufacturer: str | None = None
    manufacturer_model: str | None = None
    photometric: str | None = None
    pixel_spacing_mm: float | None = None
    patient_name: str | None = field(default=None, repr=False)  # for redacting logs only; never stored or logged
    patient_birth_date: str | None = field(default=None, repr=False)
    #: how its text's character set was decided (:func:`radtrace.dicom_charset.read_text_as`); None: as declared
    character_set: CharsetChoice | None = None

    def patient_values(self) -> tuple[str | None, ...]:
        """The values :func:`radtrace.logging.redacting` scrubs from logs while this instance is handled."""
        return self.patient_name, self.patient_id, self.accession, self.patient_birth_date, self.patient_id_issuer

    def deviations_json(self) -> list[dict[str, str]] | None:
        """The deviations as kept on the instance row and in the audit event; None when there are none."""
        return [d.as_json() for d in self.deviations] or None


def _requested_priority(ds: Dataset) -> str | None:
    """Requested Procedure Priority (0040,1003): top level, or in a Request Attributes item (images).

    Only a routing hint: a malformed nested value is treated as absent rather than failing the instance.
    """
    try:
        value = ds.get("RequestedProcedurePriority")
        for item in ds.get("RequestAttributesSequence") or ():
            if value is not None:
                break
            value = item.get("RequestedProcedurePriority")
    except Exception:  # pydicom raises many types for a malformed nested element
        return None
    return _text(value, 16)


def _spacing_mm(ds: Dataset) -> float | None:
    """The row spacing in mm, from Imager Pixel Spacing (the detector's) or else Pixel Spacing; None when neither
    holds a plausible number (a deviation of its own is reported by the attribute table, not here)."""
    for keyword in ("ImagerPixelSpacing", "PixelSpacing"):
        try:
            value = ds.get(keyword)
            first = value[0] if isinstance(value, MultiValue | list | tuple) else value
            spacing = float(first) if first is not None and str(first).strip() else None
        except (TypeError, ValueError, IndexError):
            continue
        if spacing is not None and 0.0 < spacing < 10.0:
            return round(spacing, 4)
    return None


@dataclass(frozen=True)
class RefusedIdentity:
    """Whose instance was refused at receive, for its audit event: the study (only a valid Study Instance UID),
    accession and patient ID, each ``None`` where the file does not say it usably."""

    study_uid: str | None = None
    accession: str | None = None
    patient_id: str | None = None
    patient_name: str | None = field(default=None, repr=False)  # for redacting logs only
    #: how its text was read, where :func:`~radtrace.dicom_charset.read_text_as` decided it (None: as declared, or
    #: not known: the file was refused before the decision could be made)
    character_set: CharsetChoice | None = None

    def patient_values(self) -> tuple[str | None, ...]:
        """The values :func:`radtrace.logging.redacting` scrubs from logs while the refusal is handled."""
        return self.patient_name, self.patient_id, self.accession


def refused_identity(
    path: Path,
    *,
    max_inflated_bytes: int = DEFAULT_MAX_INFLATED_BYTES,
    assumed_character_set: str = DEFAULT_ASSUMED_CHARACTER_SET,
    site: tuple[SiteCharset, ...] = (),
) -> RefusedIdentity:
    """The identifiers of an instance :func:`read_header` refused, so that QA finds the refusal by study or
    accession, and how their text was read. Parsed as :func:`read_header` parses (the same bounds: a deflated data set
    that would inflate too far is not inflated; text in the same character set); a file that cannot be parsed at all
    names nobody."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's warnings quote values
        partial: list[Dataset] = []
        choice: CharsetChoice | None = None
        try:
            ds, _, choice = _parse(path, max_inflated_bytes, assumed_character_set, site, partial)
        except DicomInputError:
            if not partial:
                return RefusedIdentity()
            ds = partial[0]  # refused inside a sequence: what was read before it (often the Study Instance UID)
        try:
            study_uid: str | None = check_uid(ds.get("StudyInstanceUID"), "Study Instance UID")
        except DicomInputError:
            study_uid = None
        return RefusedIdentity(
            study_uid,
            _text(ds.get("AccessionNumber"), 64),
            _text(ds.get("PatientID"), 64),
            _person_name(ds),
            character_set=choice,
        )


def _person_name(ds: Dataset) -> str | None:
    """Patient's Name as text (every component group), or None where it cannot be read."""
    try:
        return _text(ds.get("PatientName"), 400)
    except Exception:  # a name pydicom cannot decode is not worth refusing an instance for
        return None


def _text(value: Any, limit: int) -> str | None:
    """A routing value as text: the first of several values, stripped, cut to ``limit`` characters."""
    if isinstance(value, MultiValue | list | tuple):
        value = value[0] if len(value) else None
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    text = str(value).strip() if value is not None else ""
    return text[:limit] or None


def _check_inflated_size(path: Path, limit: int) -> None:
    """Refuse a deflated data set that inflates beyond ``limit`` bytes, counted as it streams (never held): a few
    hundred KiB of deflate can declare gigabytes, and pydicom inflates the whole data set in memory at once."""
    with path.open("rb") as handle:
        head = handle.read(132)
        offset = 132 if head[128:132] == b"DICM" else 0
        handle.seek(offset)
        while True:  # the file meta group, explicit VR little endian (PS3.10 7.1): skip it element by element
            element = handle.read(8)
            if len(element) < 8 or element[:2] != b"\x02\x00":
                break
            if element[4:6] in _LONG_LENGTH_VRS:
                length = int.from_bytes(handle.read(4), "little")
                offset += 12 + length
            else:
                length = int.from_bytes(element[6:8], "little")
                offset += 8 + length
            handle.seek(offset)
        handle.seek(offset)
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        inflated = 0
        while not inflater.eof:
            data = inflater.unconsumed_tail or handle.read(_INFLATE_CHUNK)
            if not data:
                break
            try:
                inflated += len(inflater.decompress(data, _INFLATE_CHUNK))
            except zlib.error:
                return  # not a deflate stream: the parser says what is wrong with it
            if inflated > limit:
                raise ImageTooLargeError(
                    f"(0002,0010) Transfer Syntax UID: deflated data set inflates beyond {limit} bytes "
                    "(listener.max_image_pixels)"
                )


def _parse(
    path: Path,
    max_inflated_bytes: int,
    assumed_character_set: str,
    site: tuple[SiteCharset, ...] = (),
    partial: list[Dataset] | None = None,
) -> tuple[Dataset, dict[int, str], CharsetChoice | None]:
    """The dataset with every small element converted, text in the character set
    :func:`~radtrace.dicom_charset.read_text_as` decides, the elements that could not be: ``{tag: problem}``, and
    that decision (None: read as declared). Refused inside a sequence, the top-level elements read before it are
    appended to ``partial`` (:func:`~radtrace.dicom_deflated.read_bounded`)."""
    size = path.stat().st_size
    unparsable: dict[int, str] = {}
    choice: CharsetChoice | None = None
    try:
        deflated = read_file_meta_info(path).get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian
        if deflated:
            # parsed as it is inflated (pydicom would hold it all inflated): large values are skipped, kept deferred
            # with their lengths; their positions are not file offsets (a cut stream is refused as it is read)
            _check_inflated_size(path, max_inflated_bytes)
        with path.open("rb") as handle:  # sequences item by item, bounded; large values in items dropped
            ds = read_bounded(
                handle,
                keep_bulk=False,
                defer_bytes=_DEFER_BYTES,
                max_inflated_bytes=max_inflated_bytes,
                keep_deferred=True,
                partial=partial,
            )
        try:  # before any value is converted: converted values keep their text
            choice = read_text_as(ds, assumed=assumed_character_set, site=site)
        except Exception:  # the decision never refuses an instance: its text is then read as pydicom's default
            logger.debug("character set not decided; reading the header as pydicom does", exc_info=True)
        for tag in list(ds.keys()):
            raw = ds.get_item(tag, keep_deferred=True)
            if isinstance(raw, RawDataElement) and raw.value is None and raw.length not in (0, _UNDEFINED_LENGTH):
                if not deflated and (raw.value_tell is None or raw.value_tell + raw.length > size):
                    raise DicomInputError(f"dataset is truncated inside element {format_tag(tag)}")
                continue
            try:
                ds[tag]  # converting the value is the check
            except Exception as exc:  # a value pydicom cannot convert: a wrong VR or length
                unparsable[int(tag)] = f"cannot be parsed ({type(exc).__name__})"
                del ds[tag]
        ds.file_meta  # noqa: B018  # a file without a meta group fails here, not later
    except DicomInputError:
        raise
    except (InvalidDicomError, EOFError) as exc:
        raise DicomInputError(f"not a DICOM dataset: {type(exc).__name__}") from exc
    except Exception as exc:  # pydicom raises many types for malformed input; all mean the same here
        raise DicomInputError(f"dataset cannot be parsed ({type(exc).__name__})") from exc
    return ds, unparsable, choice


def _other_deviations(ds: Dataset) -> list[Deviation]:
    """VR and VM problems of the top-level elements the table does not list (kept, never refused)."""
    found = []
    for key in sorted(ds.keys()):  # top level only (nested items are not read); keys: no deferred value is loaded
        tag = int(key)
        element = ds.get_item(key, keep_deferred=True)
        if tag in _TABLE_TAGS or isinstance(element, RawDataElement) or BaseTag(tag).is_private:
            continue  # a RawDataElement here is a deferred (large) value: not read
        if element.VR not in _CHECKED_VRS:
            continue
        if element.value is None or element.value == "":
            continue
        vm = dictionary_VM(tag) if dictionary_has_tag(tag) else "1-n"
        problem = vr_problem(element.VR, element.value, vm)
        if problem is not None:
            found.append(Deviation(format_tag(tag), element.keyword or "unknown", problem))
    return found


def _decodable(ds: Dataset) -> bool:
    return all(problem_of(ds, by_keyword(k)) is None for k in ("Rows", "Columns", "BitsAllocated", "SamplesPerPixel"))


def _pixel_data_problem(ds: Dataset, path: Path) -> str | None:
    """Pixel data no decoder can take, found from its length and (encapsulated) its first two item tags.

    Native pixel data shorter than Rows x Columns x Samples x Bits Allocated; encapsulated pixel data with a
    defined length, or whose Basic Offset Table is not followed by a fragment (no frame at all).
    """
    syntax = ds.file_meta.get("TransferSyntaxUID")
    element = ds.get_item(_PIXEL_DATA, keep_deferred=True)
    size = value_length(ds, _PIXEL_DATA)
    if syntax in UncompressedTransferSyntaxes or syntax == DeflatedExplicitVRLittleEndian:
        frames = int(float(ds.get("NumberOfFrames", 1) or 1))
        bits = int(ds.BitsAllocated) * int(ds.Rows) * int(ds.Columns) * int(ds.SamplesPerPixel) * frames
        return "too short for Rows x Columns x Bits" if size != _UNDEFINED_LENGTH and size * 8 < bits else None
    if size != _UNDEFINED_LENGTH:
        return "encapsulated with a defined length"
    if isinstance(element, RawDataElement) and element.value is None and element.value_tell is not None:
        with path.open("rb") as handle:  # deferred: read the two item headers, never the frames
            handle.seek(element.value_tell)
            first = handle.read(8)
            if len(first) < 8 or first[:4] != _ITEM:
                return "encapsulated without a Basic Offset Table item"
            handle.seek(int.from_bytes(first[4:], "little"), 1)
            second = handle.read(4)
    else:
        data = bytes(element.value or b"")
        if data[:4] != _ITEM or len(data) < 8:
            return "encapsulated without a Basic Offset Table item"
        second = data[8 + int.from_bytes(data[4:8], "little") :][:4]
    return None if second == _ITEM else "encapsulated without any frame"


def _rescale_slope_problem(ds: Dataset) -> str | None:
    """Rescale Slope 0 in an image the worker would read by its rescale (a class the model reads, pixel data, no
    Modality LUT Sequence): every pixel's value would be the Rescale Intercept, and the worker refuses the study
    (:func:`radtrace.model.modality_lut.modality_lut`), so it is refused here, while the sender can still be told.
    An unusable value is only a deviation (the worker's :func:`~radtrace.dicom_listener.attributes.normalised` copy
    drops it); with a Modality LUT Sequence the slope is not read unless the LUT cannot be applied, which only the
    pixels tell."""
    slope = by_keyword("RescaleSlope")
    if slope.tag not in ds or "PixelData" not in ds or "ModalityLUTSequence" in ds or problem_of(ds, slope):
        return None
    if str(ds.get("SOPClassUID", "")) not in IMAGE_SOP_CLASSES:
        return None
    try:
        zero = rescale_slope(ds) == 0.0  # as the worker reads it
    except (TypeError, ValueError):
        return None
    return "0, every pixel would be the intercept" if zero else None


def read_header(
    path: Path,
    *,
    max_inflated_bytes: int = DEFAULT_MAX_INFLATED_BYTES,
    assumed_character_set: str = DEFAULT_ASSUMED_CHARACTER_SET,
    site: tuple[SiteCharset, ...] = (),
) -> ReceivedHeader:
    """Parse a Part 10 file's header; :class:`DicomInputError` naming the element when it cannot be accepted.

    A deflated data set that inflates beyond ``max_inflated_bytes`` is refused before pydicom inflates it. Text
    whose character set the header does not declare usably is read as the worker reads it
    (``assumed_character_set``: ``listener.assumed_character_set``; ``site``: the calling AE's
    ``listener.sender_character_sets`` rules, :func:`radtrace.sender_charset.sender_rules`).
    """
    # pydicom's log lines, one per value converted: once per kind and instance (57 for control characters in each)
    with warnings.catch_warnings(), warnings_once_per_instance():
        warnings.simplefilter("ignore")  # pydicom warns, quoting values, about every invalid one
        ds, unparsable, choice = _parse(path, max_inflated_bytes, assumed_character_set, site)
        meta = ds.file_meta
        found: list[Deviation] = []
        for attribute in ATTRIBUTES:
            tag = int(attribute.tag)
            problem = unparsable.pop(tag, None) if tag in unparsable else problem_of(ds, attribute)
            if problem is None and attribute.keyword == "PixelData" and tag in ds and _decodable(ds):
                problem = _pixel_data_problem(ds, path)
            refused = _rescale_slope_problem(ds) if attribute.keyword == "RescaleSlope" else None
            if refused is not None:
                raise DicomInputError(Deviation(format_tag(tag), attribute.keyword, refused).comment())
            if problem is None:
                continue
            deviation = Deviation(format_tag(tag), attribute.keyword, problem)
            if attribute.key:
                raise DicomInputError(deviation.comment())
            found.append(deviation)
        found.extend(Deviation(format_tag(t), "unknown", p) for t, p in unparsable.items())
        found.extend(_other_deviations(ds))
        series = ds.get("SeriesInstanceUID")
        return ReceivedHeader(
            study_uid=check_uid(ds.get("StudyInstanceUID"), "Study Instance UID"),
            sop_instance_uid=check_uid(ds.get("SOPInstanceUID"), "SOP Instance UID"),
            sop_class_uid=check_uid(ds.get("SOPClassUID"), "SOP Class UID"),
            series_uid=check_uid(series, "Series Instance UID") if series else None,
            transfer_syntax_uid=check_uid(meta.get("TransferSyntaxUID"), "Transfer Syntax UID"),
            modality=_text(ds.get("Modality"), 16),
            body_part=_text(ds.get("BodyPartExamined"), 16),
            accession=_text(ds.get("AccessionNumber"), 64),
            study_description=_text(ds.get("StudyDescription"), 64),
            requested_priority=_requested_priority(ds),
            deviations=tuple(found[:MAX_DEVIATIONS]),
            patient_id=_text(ds.get("PatientID"), 64),
            patient_id_issuer=_text(ds.get("IssuerOfPatientID"), 64),
            manufacturer=_text(ds.get("Manufacturer"), 64),
            manufacturer_model=_text(ds.get("ManufacturerModelName"), 64),
            photometric=_text(ds.get("PhotometricInterpretation"), 16),
            pixel_spacing_mm=_spacing_mm(ds),
            patient_name=_person_name(ds),
            patient_birth_date=_text(ds.get("PatientBirthDate"), 32),
            character_set=choice,
        )
