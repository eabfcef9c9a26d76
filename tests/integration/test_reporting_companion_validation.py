"""Every companion document (Basic Text SR) passes dciodvfy with no error and renders with dcmtk, labelled and in
a radiologist's order; so does the reordered TID 1500 SR.

dciodvfy (dicom3tools) checks the Basic Text SR IOD: modules, attribute types, enumerated values, and the
content tree's value and relationship types (Basic Text SR allows no NUM, SCOORD or by-reference items). The
one warning accepted is dciodvfy not knowing radtrace's private coding scheme ``99RADTRACE`` (declared in the
Coding Scheme Identification Sequence, PS3.3 8.2). dsr2html must show, in this order, the notice, the
impression, the findings and the reasoning, each under its label.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset

from radtrace.config import ReportingSettings
from radtrace.model.reading import Finding, FindingStatus, ReasoningStep
from radtrace.reporting.companion import build_companion
from radtrace.reporting.sr import build_sr, sr_bytes
from reporting_support import (
    REAL_FILM_SHA256,
    SPECIAL_CHARACTERS,
    hostile_header_study,
    reading,
    real_film,
    source_study,
    sr_cases,
)

pytestmark = pytest.mark.integration

CASES = sr_cases()
PRIVATE_SCHEME_WARNING = "Warning - Unrecognized defined term <99RADTRACE> for value 1 of attribute <Coding Scheme"
DICOMDIR_WARNING = "Warning - Missing attribute or value that would be needed to build DICOMDIR"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found on PATH (apt-get install dicom3tools dcmtk)")
    return path


def _dciodvfy(ds: Dataset, path: Path) -> tuple[list[str], list[str]]:
    """(errors, warnings other than the private coding scheme and DICOMDIR ones) of dciodvfy on ``ds``."""
    path.write_bytes(sr_bytes(ds))
    verified = subprocess.run([_tool("dciodvfy"), str(path)], capture_output=True, text=True, timeout=60, check=False)
    lines = [line.strip() for line in (verified.stdout + verified.stderr).splitlines()]
    errors = [line for line in lines if "Error" in line]
    warnings = [
        line for line in lines if "Warning" in line and not line.startswith((PRIVATE_SCHEME_WARNING, DICOMDIR_WARNING))
    ]
    return errors, warnings


def _rendered(path: Path) -> str:
    """dsr2html's page as plain text (tags dropped, whitespace collapsed)."""
    done = subprocess.run([_tool("dsr2html"), str(path)], capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode()
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", done.stdout.decode("utf-8"))))


@pytest.mark.parametrize("flavour", ["comprehensive-3d", "comprehensive"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_companion_passes_dciodvfy_and_renders_with_dsrdump(name: str, flavour: str, tmp_path: Path) -> None:
    case, sources = CASES[name]
    config = ReportingSettings(sr_flavour=flavour)
    sr = build_sr(case, sources, settings=config, revision=1)
    companion = build_companion(case, sr, settings=config, revision=1)
    path = tmp_path / "companion.dcm"
    assert _dciodvfy(companion, path) == ([], [])
    dumped = subprocess.run([_tool("dsrdump"), "+U8", "+Pl", str(path)], capture_output=True, timeout=60, check=False)
    text, errors = dumped.stdout.decode("utf-8"), dumped.stderr.decode("utf-8")
    assert dumped.returncode == 0, errors
    assert [line for line in errors.splitlines() if line.startswith(("E:", "F:"))] == []
    assert "Basic Text SR Document" in text
    assert "Verification Flag   : UNVERIFIED" in text
    if case.impression:
        assert case.impression in text
    for step in case.reasoning:
        assert step.text in text


def test_companion_and_draft_render_in_a_radiologists_order_with_labels(tmp_path: Path) -> None:
    case, sources = CASES["typical"]
    sr = build_sr(case, sources, settings=ReportingSettings(), revision=1)
    (tmp_path / "sr.dcm").write_bytes(sr_bytes(sr))
    (tmp_path / "companion.dcm").write_bytes(
        sr_bytes(build_companion(case, sr, settings=ReportingSettings(), revision=1))
    )
    assert case.impression is not None

    page = _rendered(tmp_path / "companion.dcm")
    wanted = [
        "AI draft notice: AI DRAFT, NOT VERIFIED.",
        f"Impression: {case.impression}",
        "Findings Finding: Atelectasis: present",
        "Finding: Pneumothorax: absent",
        f"Model reasoning: image quality: {case.reasoning[0].text}",
        f"Model reasoning: summary: {case.reasoning[-1].text}",
        "AI draft structured report (TID 1500)",
    ]
    positions = [page.find(text) for text in wanted]
    assert -1 not in positions, [text for text, at in zip(wanted, positions, strict=True) if at == -1]
    assert positions == sorted(positions)

    page = _rendered(tmp_path / "sr.dcm")
    wanted = [
        "AI draft notice: Draft generated by an AI model.",
        f"Impression: {case.impression}",
        "Image Library",
        "Atelectasis",
        "Pneumothorax",
        f"Model reasoning: lungs: {case.reasoning[2].text}",
    ]
    positions = [page.find(text) for text in wanted]
    assert -1 not in positions, [text for text, at in zip(wanted, positions, strict=True) if at == -1]
    assert positions == sorted(positions)
    assert page.find("Present") < page.find("Absent")  # present findings come before absent ones


@pytest.mark.parametrize("name", sorted(REAL_FILM_SHA256))
def test_a_companion_on_each_real_film_passes_dciodvfy(name: str, tmp_path: Path) -> None:
    film = real_film(name)
    case = reading([film])
    sr = build_sr(case, [film], settings=ReportingSettings(), revision=1)
    assert _dciodvfy(build_companion(case, sr, settings=ReportingSettings(), revision=1), tmp_path / "c.dcm") == (
        [],
        [],
    )


def test_a_companion_on_a_hostile_header_passes_dciodvfy(tmp_path: Path) -> None:
    datasets = hostile_header_study()
    case = reading(datasets)
    sr = build_sr(case, datasets, settings=ReportingSettings(), revision=1)
    companion = build_companion(case, sr, settings=ReportingSettings(), revision=1)
    assert _dciodvfy(companion, tmp_path / "c.dcm") == ([], [])
    assert companion.PatientID == sr.PatientID == ""  # two Patient IDs: none chosen, as in the SR
    assert companion.OtherPatientIDsSequence == sr.OtherPatientIDsSequence


hostile_text = st.lists(
    st.one_of(st.sampled_from(SPECIAL_CHARACTERS), st.characters(codec=None)), min_size=1, max_size=300
).map("".join)


@settings(max_examples=5, deadline=None)
@given(
    impression=hostile_text,
    reasoning=hostile_text,
    label=hostile_text.map(lambda text: text.encode("utf-8", "replace").decode("utf-8")),
)
def test_companions_of_arbitrary_model_text_pass_dciodvfy(impression: str, reasoning: str, label: str) -> None:
    sources = source_study()
    case = reading(
        sources,
        impression=impression + "x",
        reasoning=(ReasoningStep(section="lungs", text=reasoning + "y"),),
        findings=[Finding(label=label + "z", status=FindingStatus.PRESENT)],
    )
    sr = build_sr(case, sources, settings=ReportingSettings(), revision=1)
    companion = build_companion(case, sr, settings=ReportingSettings(), revision=1)
    with tempfile.TemporaryDirectory() as directory:
        assert _dciodvfy(companion, Path(directory) / "c.dcm") == ([], [])
