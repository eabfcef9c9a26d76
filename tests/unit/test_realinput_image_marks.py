"""A lossy image, or one with text burned into its pixels, is said in every draft the model's reading makes.

Before: Burned In Annotation (0028,0301) YES, Lossy Image Compression (0028,2110) 01 with its ratio and method,
and a lossy transfer syntax with no such element (JPEG Baseline; NEMA's RG1 films, JPEG-LS NEAR 4 and JPEG 2000
with the irreversible wavelet) left no trace in the preparation steps: the SR, ORU and FHIR drafts listed no flag
and no image line, and the audit did not say the model read a lossy or annotated picture. Each case is a real
film of tests/data/real-cxr (tests/film_variants_support.py), read by the worker's chain.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

import hl7
import pydicom
import pytest
from rich.console import Console

from film_variants_support import FILMS, REAL, VARIANTS, film, read_back
from radtrace.config import ReportingSettings
from radtrace.model.image import display_values
from radtrace.model.image_marks import BURNED_IN_ANNOTATION, LOSSY_COMPRESSION, image_marks, source_step
from radtrace.model.presentation import reading_view
from radtrace.reporting import codes
from radtrace.reporting.fhir import build_fhir_bundle
from radtrace.reporting.hl7 import build_oru, observation_texts
from radtrace.reporting.sr import image_notes, output_flags
from reporting_support import reading, shown

pytestmark = pytest.mark.unit

SETTINGS = ReportingSettings()
WHEN = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("variant", "flag", "said"),
    [
        ("burned_in_annotation", BURNED_IN_ANNOTATION, "text or markers are burned into the pixels the model read"),
        ("lossy_marked", LOSSY_COMPRESSION, "the image was lossy compressed, ratio 10:1, ISO_10918_1: artefacts"),
        ("jpeg_baseline", LOSSY_COMPRESSION, "the image was lossy compressed: artefacts may hide or mimic"),
    ],
)
def test_a_lossy_or_annotated_film_is_flagged_and_said_in_the_sr_oru_and_fhir_drafts(
    variant: str, flag: str, said: str
) -> None:
    ds, stored = film("fuji")
    made = read_back(VARIANTS[variant](ds, stored).dataset)
    _, steps = display_values(made)
    [image] = shown([made])
    read = reading([made], images=(image.model_copy(update={"preparation": tuple(steps), "role": "frontal"}),))
    assert flag in output_flags(read, sanitised=False).split(", ")
    notes = image_notes(read)
    assert notes.startswith("frontal image (PA): ")
    assert said in notes
    oru = build_oru(read, made, settings=SETTINGS, sr_sop_instance_uid="1.2.3", created_at=WHEN)
    message = hl7.parse(oru.text)
    triples = ((str(s[3][0][0]), str(s[4]), message.unescape(str(s[5]))) for s in message.segments("OBX"))
    assert observation_texts(triples)[(codes.IMAGE_NOTES.value, "")] == notes
    assert flag in oru.text
    bundle = json.loads(build_fhir_bundle(read, made, settings=SETTINGS, revision=1, created_at=WHEN))
    [report] = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "DiagnosticReport"]
    assert report["conclusion"].endswith(notes)
    assert flag in report["conclusion"]
    out = io.StringIO()  # radtrace model read: the image's flags column and its warning line
    Console(file=out, width=400, color_system=None, force_terminal=False).print(reading_view(read))
    printed = " ".join(out.getvalue().split())
    assert flag in printed
    assert f"frontal: {said}" in printed


def test_the_film_as_stored_is_not_flagged() -> None:
    _, steps = display_values(film("fuji")[0])
    assert [step for step in steps if step["step"] == "source"] == []
    assert image_marks(steps) == ()


@pytest.mark.parametrize(
    ("name", "basis"),
    [("rg1", "JPEG-LS NEAR 4: each value within 4 of the original"), (None, "JPEG 2000 irreversible 9-7 wavelet")],
)
def test_a_lossy_codestream_without_lossy_image_compression_is_flagged(name: str | None, basis: str) -> None:
    """NEMA's RG1 films with their (0028,2110) removed: the codestream alone says they are lossy."""
    path = REAL / (FILMS[name] if name else "nema-rg1-cr-chest-pa-mono1-j2k-lossy.dcm")
    ds = pydicom.dcmread(path)
    assert ds.LossyImageCompression == "01"
    del ds.LossyImageCompression
    step = source_step(ds)
    assert step is not None
    assert step["lossy"]["basis"] == basis
    assert [mark.flag for mark in image_marks([step])] == [LOSSY_COMPRESSION]


def test_a_recorded_source_step_edited_into_something_else_says_nothing_it_holds() -> None:
    """A reading's JSON edited in the database: only finite ratios and code-like methods reach a draft."""
    forged = {"step": "source", "lossy": {"ratio": ["1e999", "<b>", 5], "method": ["ISO_10918_1", "\x1b]0;x"]}}
    [mark] = image_marks([forged, {"step": "source", "burned_in_annotation": "YES"}, "junk", None])
    assert (
        mark.text
        == "the image was lossy compressed, ratio 5:1, ISO_10918_1: artefacts may hide or mimic a fine finding"
    )
