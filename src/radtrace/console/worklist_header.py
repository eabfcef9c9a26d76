"""A worklist row's patient header: name, ID, age, sex and dates read from the spooled image the model read.

Read as the worker reads it for the drafts (pixel data left on disk, large values dropped, sequences bounded; the text
in the character set :func:`radtrace.dicom_charset.read_text_as` decides, with the site's
``listener.sender_character_sets`` rule for the AE that sent the image), so the worklist names the patient as the
draft does.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from pydicom.errors import InvalidDicomError

from radtrace.config import ListenerSettings
from radtrace.dicom_age import age_at_study
from radtrace.dicom_charset import DEFAULT_ASSUMED_CHARACTER_SET, SiteCharset, read_text_as, without_charset_warnings
from radtrace.dicom_deflated import read_bounded
from radtrace.dicom_listener.headers import DEFAULT_MAX_INFLATED_BYTES
from radtrace.errors import DicomInputError
from radtrace.sender_charset import sender_rules

__all__ = ["header_charset", "patient_age", "patient_header"]

log = logging.getLogger(__name__)

_HEADER_TAGS: Final = ["PatientName", "PatientID", "PatientAge", "PatientSex", "StudyDate", "PatientBirthDate"]
#: A spooled image's header is read as the worker reads it: values longer than this are not kept.
_HEADER_DEFER_BYTES: Final = 1 << 20


def header_charset(listener: ListenerSettings | None, calling_ae: str | None) -> tuple[str, tuple[SiteCharset, ...]]:
    """The assumed character set and the site's ``listener.sender_character_sets`` rules for the AE that sent an
    image, as the worker reads it for the drafts (:func:`radtrace.sender_charset.sender_rules`)."""
    if listener is None:
        return DEFAULT_ASSUMED_CHARACTER_SET, ()
    return listener.assumed_character_set, sender_rules(listener, calling_ae)


def patient_header(
    spool_dir: Path, relative: str | None, assumed_character_set: str, site: tuple[SiteCharset, ...] = ()
) -> dict[str, str | None]:
    """The patient's name, ID, age, sex and dates from a spooled image, its text read as the worker reads it (the
    whole header, so an undeclared character set is decided on the same text, the sender's site rule applied:
    :func:`read_text_as`, :func:`header_charset`)."""
    values: dict[str, str | None] = dict.fromkeys(_HEADER_TAGS)
    if relative is None:
        return values
    try:  # as the worker reads it: pixel data left on disk, values over 1 MiB dropped (in items too: pydicom held
        # a 250 MiB private value in a View Code item, +262 MB per row shown, +525 MB deflated), sequences bounded
        with without_charset_warnings(), (spool_dir / relative).open("rb") as handle:
            ds = read_bounded(
                handle, keep_bulk=False, defer_bytes=_HEADER_DEFER_BYTES, max_inflated_bytes=DEFAULT_MAX_INFLATED_BYTES
            )
        read_text_as(ds, assumed=assumed_character_set, site=site)
    except (OSError, InvalidDicomError, ValueError, DicomInputError) as exc:
        log.warning("worklist: header of a spooled image unreadable: %s", type(exc).__name__)
        return values
    for keyword in _HEADER_TAGS:
        value = ds.get(keyword)
        values[keyword] = str(value).strip() or None if value is not None else None
    return values


def patient_age(header: Mapping[str, str | None]) -> str | None:
    """The age the header gives (Patient's Age read as a DICOM AS), else the age from birth to the study date, as an
    AS such as ``064Y`` or ``007M`` (None when neither is usable): :func:`radtrace.dicom_age.age_at_study`, the rule
    the drafts follow."""
    return age_at_study(header.get("PatientAge"), header.get("PatientBirthDate"), header.get("StudyDate")).age
