"""Every SR the reporting tests build passes dciodvfy without errors and renders with dcmtk's dsrdump.

dciodvfy (dicom3tools) checks the SR against its IOD (Comprehensive 3D SR / Comprehensive SR): modules,
attribute types, enumerated values, code sequences, the SR content tree's value and relationship types.
The one warning accepted is dciodvfy not knowing radtrace's private coding scheme designator
``99RADTRACE`` (private schemes are allowed by PS3.3 8.2 and are declared in the Coding Scheme
Identification Sequence). dsrdump (dcmtk) must render the document, TEMPLATE 1500 and all, without an
error, and show the impression and the whole reasoning trace in UTF-8.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from radtrace.config import ReportingSettings
from radtrace.reporting.gsps import build_gsps
from radtrace.reporting.sr import build_sr, sr_bytes
from reporting_support import sr_cases

pytestmark = pytest.mark.integration

CASES = sr_cases()
PRIVATE_SCHEME_WARNING = "Warning - Unrecognized defined term <99RADTRACE> for value 1 of attribute <Coding Scheme"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found on PATH (apt-get install dicom3tools dcmtk)")
    return path


@pytest.mark.parametrize("flavour", ["comprehensive-3d", "comprehensive"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_sr_passes_dciodvfy_and_renders_with_dsrdump(name: str, flavour: str, tmp_path: Path) -> None:
    reading, sources = CASES[name]
    path = tmp_path / f"{name}.dcm"
    path.write_bytes(sr_bytes(build_sr(reading, sources, settings=ReportingSettings(sr_flavour=flavour), revision=1)))

    verified = subprocess.run([_tool("dciodvfy"), str(path)], capture_output=True, text=True, timeout=60, check=False)
    findings = [
        line.strip()
        for line in (verified.stdout + verified.stderr).splitlines()
        if "Error" in line or "Warning" in line
    ]
    assert [line for line in findings if not line.startswith(PRIVATE_SCHEME_WARNING)] == []

    dumped = subprocess.run(
        [_tool("dsrdump"), "+U8", "+Pl", "+Pt", str(path)], capture_output=True, timeout=60, check=False
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
    verified = subprocess.run([_tool("dciodvfy"), str(path)], capture_output=True, text=True, timeout=60, check=False)
    lines = (verified.stdout + verified.stderr).splitlines()
    assert [line.strip() for line in lines if "Error" in line or "Warning" in line] == []
