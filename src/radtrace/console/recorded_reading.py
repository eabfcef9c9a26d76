"""A reading as the audit log recorded it (``inference_completed``), read for the console: its payload, the images
it read, and the worklist's flags for it.

A recorded reading may have been edited in the database into any shape: every function here passes over what is
not what the worker records, never raising on it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.orm import Session

from radtrace.audit.events import EventType
from radtrace.audit.schema import AuditEventRow
from radtrace.console.reassigned_flags import REASSIGNED_FLAG, REJECTED_FLAG
from radtrace.dicom_charset import (
    CHARACTER_SET_ASSUMED,
    CHARACTER_SET_DOUBTFUL,
    recorded_choice,
)
from radtrace.model.image_marks import BURNED_IN_ANNOTATION, LOSSY_COMPRESSION, WINDOW_NOT_APPLIED, image_marks
from radtrace.reporting.sr import POLARITY_CONTRADICTION, SUSPECTED_NEGATIVE, PolarityNote, polarity_notes
from radtrace.reporting.text import dicom_text, fhir_text

__all__ = [
    "FLAG_LABELS",
    "SECONDARY_CAPTURE_PREFIX",
    "audit_payload",
    "image_polarity_notes",
    "reading_flags",
    "reading_for_revision",
    "recorded_frontal",
    "recorded_inputs",
    "recorded_objects",
    "recorded_text",
]

SECONDARY_CAPTURE_PREFIX: Final = "1.2.840.10008.5.1.4.1.1.7"

#: flag -> what the worklist says
FLAG_LABELS: Final = {
    "refused": "model refused",
    "truncated": "truncated",
    "unparsed": "unparsed",
    "view-unknown": "view unknown",
    "ap-portable": "AP / portable",
    "secondary-capture": "secondary capture",
    "text-sanitised": "text sanitised",
    SUSPECTED_NEGATIVE: "suspected negative",
    POLARITY_CONTRADICTION: "polarity header contradiction",
    CHARACTER_SET_ASSUMED: "character set assumed",
    CHARACTER_SET_DOUBTFUL: "character set doubtful",
    LOSSY_COMPRESSION: "lossy image",
    BURNED_IN_ANNOTATION: "burned-in annotation",
    WINDOW_NOT_APPLIED: "window not applied",
    REASSIGNED_FLAG: "image re-sent under another patient/study",
    REJECTED_FLAG: "image rejected by the PACS",
}


def audit_payload(stored: object) -> dict[str, Any]:
    """An audit event's payload as a dict; empty for one edited in the database into something that is not a JSON
    object (SQLite keeps any value): audit/ shows such a row raw and ``radtrace audit verify`` names it, while the
    console, which decoded every payload, answered 500 on the worklist for everyone for as long as it stayed."""
    try:
        parsed = json.loads(stored)  # type: ignore[arg-type]  # text, or whatever the row was edited into
    except (TypeError, ValueError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def reading_for_revision(session: Session, study_uid: str, revision: int) -> Mapping[str, Any] | None:
    """The ``inference_completed`` payload of one revision (its latest attempt), or None."""
    table = AuditEventRow
    payloads = session.scalars(
        sa.select(table.payload)
        .where(table.study_uid == study_uid, table.event_type == EventType.INFERENCE_COMPLETED.value)
        .order_by(table.seq.desc())
    )
    for text in payloads:
        payload = audit_payload(text)
        if payload.get("revision") == revision and isinstance(payload.get("reading"), dict):
            return dict(payload)
    return None


def reading_flags(reading: Mapping[str, Any], sop_class_uid: str | None) -> list[str]:
    """The worklist's flags for a reading: the model's own, view unknown, AP/portable, SC, text sanitised, and for
    any image it read, a picture that looks like a negative or a header that contradicts itself on polarity, a lossy
    image, text burned into the pixels, a window not applied (:func:`radtrace.model.image_marks.image_marks`, as the
    drafts flag them) and text read in a character set the header did not declare.

    ``reading`` is a recorded one (``inference_completed``'s), which may have been edited in the database into any
    shape: what is not what the worker records (an image entry that is no object, flags that are no list of text,
    a view that is no text) is passed over, never raised on; no readable image reads as one with no view."""
    flags = set(_strings(reading.get("flags")))
    images = recorded_objects(reading.get("images"))
    for image in images:
        flags.update(note.kind for note in image_polarity_notes(image))
        steps = image.get("preparation")
        if isinstance(steps, list):
            flags.update(mark.flag for mark in image_marks(steps))
            if (choice := recorded_choice(steps)) is not None and choice.flagged:
                flags.add(choice.flag)
    frontal = recorded_frontal(reading)
    if not recorded_text(frontal.get("view")):
        flags.add("view-unknown")
    if {"ap", "portable"} & set(_strings(frontal.get("view_flags"))):
        flags.add("ap-portable")
    if (sop_class_uid or recorded_text(frontal.get("sop_class_uid")) or "").startswith(SECONDARY_CAPTURE_PREFIX):
        flags.add("secondary-capture")
    texts = [recorded_text(step.get("text")) for step in recorded_objects(reading.get("reasoning"))]
    texts += [recorded_text(reading.get("impression"))] + [
        recorded_text(f.get("label")) for f in recorded_objects(reading.get("findings"))
    ]
    # As the drafts do: a text the SR (UT) or FHIR had to change to carry it means the draft reads differently.
    if any(text and (dicom_text(text, "UT").changed or fhir_text(text).changed) for text in texts):
        flags.add("text-sanitised")
    return sorted(flags)


def recorded_frontal(reading: Mapping[str, Any]) -> Mapping[str, Any]:
    """The frontal image of a recorded reading: its first image entry that is an object with role ``frontal``, else
    its first entry that is an object, else ``{}`` (entries edited into anything else are passed over)."""
    images = recorded_objects(reading.get("images"))
    return next((image for image in images if image.get("role") == "frontal"), images[0] if images else {})


def image_polarity_notes(image: object) -> tuple[PolarityNote, ...]:
    """What the inversion step of one image of a recorded reading (an item of its ``images``) found against the
    picture's polarity (:func:`radtrace.reporting.sr.polarity_notes`); none for a row edited into something else."""
    steps = image.get("preparation") if isinstance(image, Mapping) else None
    return polarity_notes(steps) if isinstance(steps, list) else ()


def recorded_inputs(payload: Mapping[str, Any] | None) -> dict[str, str]:
    """The images an ``inference_completed`` payload says the model read: ``{SOP Instance UID: SHA-256}`` (its
    ``inputs``, else its reading's ``images``); entries of any other shape are passed over."""
    if payload is None:
        return {}
    reading = payload.get("reading")
    entries = recorded_objects(payload.get("inputs")) or (
        recorded_objects(reading.get("images")) if isinstance(reading, Mapping) else []
    )
    return {
        str(entry["sop_instance_uid"]): str(entry["sha256"])
        for entry in entries
        if isinstance(entry.get("sop_instance_uid"), str) and isinstance(entry.get("sha256"), str)
    }


def recorded_objects(value: object) -> list[Mapping[str, Any]]:
    """The items of a recorded list that are objects (none when it is no list)."""
    return [item for item in value if isinstance(item, Mapping)] if isinstance(value, list | tuple) else []


def _strings(value: object) -> list[str]:
    """The items of a recorded list that are text (none when it is no list)."""
    return [item for item in value if isinstance(item, str)] if isinstance(value, list | tuple) else []


def recorded_text(value: object) -> str | None:
    """A recorded value if it is text, else None."""
    return value if isinstance(value, str) else None
