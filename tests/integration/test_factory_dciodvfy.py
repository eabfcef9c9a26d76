"""Every instance the study factory calls valid passes dciodvfy (dicom3tools) without errors.

dciodvfy checks each instance against its IOD: module presence, attribute types, enumerated values,
code sequences and encoding. The broken kinds are checked too: those that are valid DICOM (a knee, a
CT slice) must pass, and those that claim an IOD violation must be caught by dciodvfy for that reason.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from radtrace.testing.broken import BrokenKind, broken_instance
from radtrace.testing.studies import VALID_VARIANTS, ImageSpec, StudySpec, make_image

pytestmark = pytest.mark.integration

ROWS, COLUMNS = 160, 128
STUDY = StudySpec(seed=11)

# The one warning accepted, and only where the variant exists to produce it: a DX image that records
# its view in View Position alone (common in the field), so view selection can be tested on that
# source. dciodvfy suggests the View Code Sequence too; adding it would defeat the variant.
VIEW_POSITION_ONLY_WARNING = (
    "Warning - ViewCodeSequence is empty or absent, but view is known since ViewPosition has a value"
)
ACCEPTED_WARNINGS = {
    name: (VIEW_POSITION_ONLY_WARNING,)
    for name, spec in VALID_VARIANTS.items()
    if spec.modality == "DX" and spec.view_source == "view_position"
}


@pytest.fixture(scope="module")
def dciodvfy() -> str:
    path = shutil.which("dciodvfy")
    if path is None:
        pytest.fail("dciodvfy not found on PATH: install dicom3tools (apt-get install dicom3tools)")
    return path


def _verify(dciodvfy: str, data: bytes, tmp_path: Path) -> list[str]:
    """dciodvfy's findings for a file: its Error and Warning lines."""
    path = tmp_path / "instance.dcm"
    path.write_bytes(data)
    result = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, timeout=60, check=False)
    lines = (result.stdout + result.stderr).splitlines()
    return [line.strip() for line in lines if "Error" in line or "Warning" in line]


def _file(image: ImageSpec) -> bytes:
    buffer = io.BytesIO()
    make_image(STUDY, replace(image, rows=ROWS, columns=COLUMNS)).save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize("name", sorted(VALID_VARIANTS))
def test_valid_variant_passes_dciodvfy(name: str, dciodvfy: str, tmp_path: Path) -> None:
    findings = _verify(dciodvfy, _file(VALID_VARIANTS[name]), tmp_path)
    assert [line for line in findings if line.startswith("Error")] == []
    unexpected = [line for line in findings if not line.startswith(ACCEPTED_WARNINGS.get(name, ()))]
    assert unexpected == []


@pytest.mark.parametrize("kind", [BrokenKind.NON_CHEST_BODY_PART, BrokenKind.CT_IMAGE])
def test_wrong_but_valid_instances_pass_dciodvfy(kind: BrokenKind, dciodvfy: str, tmp_path: Path) -> None:
    small = ImageSpec(rows=ROWS, columns=COLUMNS)
    assert _verify(dciodvfy, broken_instance(kind, STUDY, small), tmp_path) == []


@pytest.mark.parametrize(
    ("kind", "complaint"),
    [
        (BrokenKind.MISSING_STUDY_UID, "Missing attribute Type 1 Required Element=<StudyInstanceUID>"),
        (BrokenKind.WRONG_VR, "Explicit value representation doesn't match data dictionary; Explicit <UL>"),
        (BrokenKind.TRUNCATED_PIXEL_DATA, "while reading unencapsulated Pixel Data"),
    ],
)
def test_dciodvfy_finds_the_stated_fault(kind: BrokenKind, complaint: str, dciodvfy: str, tmp_path: Path) -> None:
    findings = _verify(dciodvfy, broken_instance(kind, STUDY, ImageSpec(rows=ROWS, columns=COLUMNS)), tmp_path)
    assert any(complaint in line for line in findings), findings
