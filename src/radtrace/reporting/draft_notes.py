"""What every draft (the SR, the ORU, the FHIR Bundle) says about a reading beyond its findings and text: its flags
and its image notes, one rule for all three and the review console.

* :func:`output_flags`: the flags line (the reading's own flags, the polarity, image-mark and character-set flags
  of the images it read, ``text-sanitised``, and the drafts' header flags);
* :func:`labels_sanitised`: whether a finding label had to change to be carried (``text-sanitised``);
* :func:`image_notes`: the image line (``RT-IMG``), one line per image with anything to say: its polarity
  (:func:`polarity_notes`, which the console shows too), image marks, an undeclared character set, its view flags.

Each draft carries these texts through its own text-safety function (:mod:`radtrace.reporting.text`); the view and
an unknown view flag are made LO-safe here, so that the three drafts carry the same line.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from radtrace.dicom_charset import recorded_choice
from radtrace.model.image_marks import image_marks
from radtrace.model.polarity import (
    POLARITY_CONTRADICTION,
    SCORE_MARGIN,
    SUSPECTED_NEGATIVE,
    PolarityRecord,
    polarity_records,
)
from radtrace.model.reading import Reading
from radtrace.reporting.text import TEXT_SANITISED, dicom_text

__all__ = [
    "POLARITY_CONTRADICTION",
    "SUSPECTED_NEGATIVE",
    "PolarityNote",
    "image_notes",
    "labels_sanitised",
    "output_flags",
    "polarity_notes",
]


def output_flags(reading: Reading, *, sanitised: bool, extra: Sequence[str] = ()) -> str:
    """The flags an output lists: the reading's own, ``suspected-negative`` and ``polarity-contradiction`` for any
    image read whose inversion step found them (as the worklist flags them; :func:`polarity_notes` says them on the
    image's line), ``text-sanitised`` when the output had to change a text of the model's to carry it, and any
    ``extra`` (e.g. ``header-normalised``), ``lossy-compression``, ``burned-in-annotation`` and
    ``window-not-applied`` for an image whose preparation recorded them
    (:func:`radtrace.model.image_marks.image_marks`), and ``character-set-assumed`` when an image's text was read in a
    character set its header did not declare, ``character-set-doubtful`` when it was read as declared though it may
    be UTF-8 (:mod:`radtrace.dicom_charset`: the patient's name may be wrong)."""
    flags = {flag.value for flag in reading.flags} | set(extra)
    flags.update(note.kind for image in reading.images for note in polarity_notes(image.preparation))
    flags.update(mark.flag for image in reading.images for mark in image_marks(image.preparation))
    for image in reading.images:
        if (choice := recorded_choice(image.preparation)) and choice.flagged:
            flags.add(choice.flag)
    if sanitised:
        flags.add(TEXT_SANITISED)
    return ", ".join(sorted(flags))


def labels_sanitised(reading: Reading) -> bool:
    """Whether a finding label of the model's had to change to be carried (every draft names an unknown label by its
    LO-safe meaning, :func:`radtrace.reporting.codes.finding_code`): ``text-sanitised`` in all three drafts alike."""
    return any(dicom_text(finding.label, "LO").changed for finding in reading.findings)


# What each view flag of a source image means for whoever reads the draft (model.views, model.study).
_VIEW_FLAG_NOTES: Final = {
    "ap": "AP projection: the heart and mediastinum look larger than on a PA film",
    "portable": "portable (bedside) film",
    "view-from-description": "view taken from the series or image description, not from a coded view",
    "view-unknown": "view recorded nowhere: read as a frontal film",
    "secondary-capture": "secondary capture (a digitised or screen-captured film)",
}


@dataclass(frozen=True)
class PolarityNote:
    """Something an image's inversion step recorded against the picture's polarity, as the drafts and the console
    say it: ``kind`` is :data:`SUSPECTED_NEGATIVE` or :data:`POLARITY_CONTRADICTION`; ``text`` one clause naming
    what was found and what the header said; ``figures`` the check's measures ('' for a contradiction)."""

    kind: str
    text: str
    figures: str = ""


def polarity_notes(preparation: Iterable[object]) -> tuple[PolarityNote, ...]:
    """What an image's preparation (``SourceImage.preparation``, or its JSON in ``inference_completed``) recorded
    against its polarity (read by :func:`radtrace.model.polarity.polarity_records`): a picture that looks like a
    negative (a Photometric Interpretation that is probably wrong, so the model read a negative), a Presentation
    LUT Shape that contradicts the Photometric Interpretation (not followed). Only code-string header values and
    finite numbers are said; a contradiction whose header values are not code strings is not said."""
    notes: list[PolarityNote] = []
    for record in polarity_records(preparation):
        photometric, shape = record.photometric, record.presentation_lut_shape
        if record.kind == SUSPECTED_NEGATIVE:
            said = f"the header says {photometric or 'another Photometric Interpretation'}"
            if shape:
                said += f" with Presentation LUT Shape {shape}"
            found = f"polarity score {record.score:+.2f}; {said}" if record.score is not None else said
            notes.append(
                PolarityNote(
                    SUSPECTED_NEGATIVE,
                    f"the picture the model read looks like a negative ({found}): the Photometric Interpretation "
                    "may be wrong; check the film before trusting the findings",
                    _check_figures(record),
                )
            )
        elif shape and photometric:
            notes.append(
                PolarityNote(
                    POLARITY_CONTRADICTION,
                    f"the header contradicts itself on polarity (Presentation LUT Shape {shape} with Photometric "
                    f"Interpretation {photometric}): read as {photometric} says, the shape not followed; a viewer "
                    "that follows the shape shows the film the other way round",
                )
            )
    return tuple(notes)


def _check_figures(record: PolarityRecord) -> str:
    parts = [
        f"{name} {value:+.2f}"
        for name, value in (
            ("mediastinum over lungs", record.mediastinum_over_lungs),
            ("centre over border", record.centre_over_border),
        )
        if value is not None
    ]
    parts.append(f"a score below {-SCORE_MARGIN:+.2f} reads as a negative, above {SCORE_MARGIN:+.2f} as a film")
    return "; ".join(parts)


def image_notes(reading: Reading) -> str:
    """How the images the model read were taken, one line per image with anything to say ('' when none): a
    picture that looks like a negative (the model read a negative), a header that contradicts itself on the
    polarity, lossy compression or text burned in, an AP or portable film (what the heart's size means), a view
    guessed from text (may be wrong), a character set the header did not declare (the names and texts may read
    wrongly). The view and a view flag of no known meaning are said as a DICOM LO holds them (a control character
    as U+FFFD): a reading rebuilt from its recorded JSON may hold any text there, which reached the SR's TEXT raw
    (dciodvfy refused it) and FHIR's conclusion, and one line per image stays one line."""
    lines = []
    for image in reading.images:
        notes = [note.text for note in polarity_notes(image.preparation)]
        notes += [mark.text for mark in image_marks(image.preparation)]
        if (choice := recorded_choice(image.preparation)) and choice.flagged:
            notes.append(choice.sentence())
        notes += [_VIEW_FLAG_NOTES.get(flag) or dicom_text(flag, "LO").text for flag in image.view_flags]
        if notes:
            which = f"{image.role} image" if image.role else "image"
            view = (image.view and dicom_text(image.view, "LO").text) or "view unknown"
            lines.append(f"{which} ({view}): {'; '.join(notes)}")
    return "\n".join(lines)
