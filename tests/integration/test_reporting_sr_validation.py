"""Every SR the reporting tests build passes dciodvfy without errors and renders with dcmtk's dsrdump.

dciodvfy (dicom3tools) checks the SR against its IOD (Comprehensive 3D SR / Comprehensive SR): modules,
attribute types, enumerated values, code sequences, the SR content tree's value and relationship types.
The one warning accepted is dciodvfy not knowing radtrace's private coding scheme designator
``99RADTRACE`` (private schemes are allowed by PS3.3 8.2 and are declared in the Coding Scheme
Identification Sequence). dsrdump (dcmtk) must render the document, TEMPLATE 1500 and all, without an
error, and show the impression and the whole reasoning trace in UTF-8.

The same holds for an SR on each real film in tests/data/real-cxr (their headers lack Type 3 attributes
highdicom would read), on a header with the faults of issue 13, and on a sample of arbitrary model text
(every C0/C1 control, lone surrogates); and the audit keeps the raw model output exactly as it came.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import tempfile
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from radtrace.audit.chain import verify_chain
from radtrace.audit.events import Actor, AuditEvent, EventType
from radtrace.audit.recorder import AuditRecorder
from radtrace.config import ReportingSettings
from radtrace.model.reading import BoundingBox, Finding, FindingStatus, ReasoningStep
from radtrace.reporting.gsps import build_gsps
from radtrace.reporting.sr import build_sr, sr_bytes
from radtrace.store.engine import Store
from reporting_support import (
    REAL_FILM_SHA256,
    REAL_FILMS,
    SPECIAL_CHARACTERS,
    hostile_header_study,
    reading,
    real_film,
    source_study,
    sr_cases,
)
from tests_support import PRIVATE_SCHEME_WARNING, dciodvfy_lines, dicom_tool, sr_dciodvfy

pytestmark = pytest.mark.integration

CASES = sr_cases()


@pytest.mark.parametrize("flavour", ["comprehensive-3d", "comprehensive"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_sr_passes_dciodvfy_and_renders_with_dsrdump(name: str, flavour: str, tmp_path: Path) -> None:
    reading, sources = CASES[name]
    path = tmp_path / f"{name}.dcm"
    path.write_bytes(sr_bytes(build_sr(reading, sources, settings=ReportingSettings(sr_flavour=flavour), revision=1)))

    findings = [line for line in dciodvfy_lines(path) if "Error" in line or "Warning" in line]
    assert [line for line in findings if not line.startswith(PRIVATE_SCHEME_WARNING)] == []

    dumped = subprocess.run(
        [dicom_tool("dsrdump"), "+U8", "+Pl", "+Pt", str(path)], capture_output=True, timeout=60, check=False
    )
    text, errors = dumped.stdout.decode("utf-8"), dumped.stderr.decode("utf-8")
    assert dumped.returncode == 0, errors
    assert [line for line in errors.splitlines() if line.startswith(("E:", "F:"))] == []
    assert ("Comprehensive 3D SR Document" if flavour == "comprehensive-3d" else "Comprehensive SR Document") in text
    assert "TID 1500" in text
    assert "Verification Flag   : UNVERIFIED" in text
    assert "Preliminary Flag    : PRELIMINARY" in text
    if reading.impression:
        assert reading.impression in text
    for step in reading.reasoning:
        assert step.text in text


@pytest.mark.parametrize("name", ["typical", "boxes", "non-ascii"])
def test_gsps_passes_dciodvfy(name: str, tmp_path: Path) -> None:
    reading, sources = CASES[name]
    gsps = build_gsps(reading, sources, settings=ReportingSettings(), revision=1)
    assert gsps is not None
    path = tmp_path / f"{name}-gsps.dcm"
    path.write_bytes(sr_bytes(gsps))
    assert [line for line in dciodvfy_lines(path) if "Error" in line or "Warning" in line] == []


@pytest.mark.parametrize("name", sorted(REAL_FILM_SHA256))
def test_an_sr_on_each_real_film_passes_dciodvfy(name: str, tmp_path: Path) -> None:
    assert hashlib.sha256((REAL_FILMS / name).read_bytes()).hexdigest()[:16] == REAL_FILM_SHA256[name]
    film = real_film(name)
    sr = build_sr(reading([film]), [film], settings=ReportingSettings(), revision=1)
    assert sr_dciodvfy(sr, tmp_path / "sr.dcm") == ([], [])
    library = [item for item in sr.ContentSequence if item.ConceptNameCodeSequence[0].CodeValue == "111028"]
    assert len(library) == 1  # the image library lists the film, with or without its Type 3 descriptors


@pytest.mark.parametrize("name", sorted(REAL_FILM_SHA256))
def test_a_gsps_on_each_real_film_passes_dciodvfy(name: str, tmp_path: Path) -> None:
    film = real_film(name)
    box = BoundingBox(sop_instance_uid=str(film.SOPInstanceUID), x_min=2.0, y_min=3.0, x_max=20.0, y_max=30.0)
    read = reading([film], findings=[Finding(label="Lung Lesion", status=FindingStatus.PRESENT, boxes=(box,))])
    gsps = build_gsps(read, [film], settings=ReportingSettings(gsps=True), revision=1)
    assert gsps is not None
    assert sr_dciodvfy(gsps, tmp_path / "gsps.dcm") == ([], [])


def test_an_sr_on_a_hostile_header_passes_dciodvfy(tmp_path: Path) -> None:
    datasets = hostile_header_study()
    sr = build_sr(reading(datasets), datasets, settings=ReportingSettings(), revision=1)
    assert sr_dciodvfy(sr, tmp_path / "sr.dcm") == ([], [])


hostile_text = st.lists(
    st.one_of(st.sampled_from(SPECIAL_CHARACTERS), st.characters(codec=None)), min_size=1, max_size=300
).map("".join)


@settings(max_examples=5, deadline=None)
@given(
    impression=hostile_text,
    reasoning=hostile_text,
    label=hostile_text.map(lambda text: text.encode("utf-8", "replace").decode("utf-8")),  # a Finding refuses them
)
def test_srs_of_arbitrary_model_text_pass_dciodvfy(impression: str, reasoning: str, label: str) -> None:
    sources = source_study()
    read = reading(
        sources,
        impression=impression + "x",  # never whitespace only: the item is written
        reasoning=(ReasoningStep(section="lungs", text=reasoning + "y"),),
        findings=[Finding(label=label + "z", status=FindingStatus.PRESENT)],
    )
    sr = build_sr(read, sources, settings=ReportingSettings(), revision=1)
    with tempfile.TemporaryDirectory() as directory:
        assert sr_dciodvfy(sr, Path(directory) / "sr.dcm") == ([], [])


def test_the_audit_keeps_the_raw_model_output_bytes_exact(store: Store) -> None:
    # Everything an output must change (controls, delimiters, the HL7 stand-in) is kept as it came.
    raw = "".join(chr(code) for code in range(0xA0)) + "\\|^&~\ue000 Ü 胸 😀 </answer>"
    recorded = AuditRecorder(store).record(
        AuditEvent(
            type=EventType.INFERENCE_COMPLETED,
            actor=Actor(process="test"),
            study_uid="1.2.826.0.1.3680043.8.498.1",
            payload={"raw_output": raw},
        )
    )
    with store.session() as session:
        payload = session.execute(sa.text("SELECT payload FROM audit_events WHERE seq = :seq"), {"seq": recorded.seq})
        stored = json.loads(payload.scalar_one())["raw_output"]
    assert stored.encode("utf-8") == raw.encode("utf-8")
    assert verify_chain(store).ok
