"""A source image in any Specific Character Set gives drafts that say the patient's name as the PACS did.

The source's name is taken from pydicom's character-set test files (Latin-1, Greek, Arabic, Hebrew, Cyrillic,
ISO 2022 Japanese and Korean with code extensions, GB18030, UTF-8), written into a source image *as bytes in that
character set* and read back, as the listener would receive it. What must hold: the SR declares ``ISO_IR 192`` and
its bytes are UTF-8 (read back raw, the name's bytes decode as UTF-8 to the same name); the SR passes dciodvfy;
the ORU (MSH-18 ``UNICODE UTF-8``) carries the same family and given names in PID-5; the FHIR Patient too.
"""

from __future__ import annotations

import copy
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_charset_files
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO

from radtrace.config import ReportingSettings
from radtrace.reporting.drafts import build_drafts
from radtrace.reporting.hl7 import unescape
from reporting_support import reading, source_study
from tests_support import DICOMDIR_WARNING, PRIVATE_SCHEME_WARNING, dciodvfy_lines

pytestmark = pytest.mark.integration

WHEN = datetime(2026, 3, 14, 10, 0, tzinfo=UTC)
CHARSET_FILES = {
    Path(path).name: path
    for path in get_charset_files()
    if Path(path).name
    in {
        "chrFren.dcm",
        "chrGreek.dcm",
        "chrArab.dcm",
        "chrHbrw.dcm",
        "chrRuss.dcm",
        "chrH31.dcm",
        "chrH32.dcm",
        "chrI2.dcm",
        "chrX1.dcm",
        "chrX2.dcm",
    }
}


def _source_in(charset_file: str) -> tuple[list[Dataset], str]:
    """The test study with the file's patient name, encoded in the file's character set and read back."""
    example = dcmread(CHARSET_FILES[charset_file], force=True)
    name = str(example.PatientName)
    sources = [copy.deepcopy(ds) for ds in source_study()]
    sources[0].SpecificCharacterSet = example.SpecificCharacterSet
    sources[0].PatientName = name
    buffer = DicomBytesIO()
    sources[0].save_as(buffer, enforce_file_format=True)
    sources[0] = dcmread(io.BytesIO(buffer.getvalue()))
    assert str(sources[0].PatientName) == name  # the round trip through the source's own bytes
    return sources, name


@pytest.mark.parametrize("charset_file", sorted(CHARSET_FILES))
def test_a_source_in_any_character_set_gives_utf8_drafts_with_the_same_name(charset_file: str, tmp_path: Path) -> None:
    assert len(CHARSET_FILES) == 10  # every file named above ships with pydicom
    sources, name = _source_in(charset_file)
    files = build_drafts(reading(sources), sources, settings=ReportingSettings(), revision=1, created_at=WHEN)
    path = tmp_path / "sr.dcm"
    path.write_bytes(files.sr)
    lines = dciodvfy_lines(path)
    expected = (PRIVATE_SCHEME_WARNING, DICOMDIR_WARNING)
    assert [line for line in lines if "Error" in line or ("Warning" in line and not line.startswith(expected))] == []

    raw = dcmread(path, defer_size=None)
    assert raw.SpecificCharacterSet == "ISO_IR 192"
    written = raw["PatientName"].value
    groups = str(written).split("=")
    want = [group if "^" in group or not group else group + "^" for group in name.split("=")]
    assert groups == want
    # The bytes as stored are UTF-8: decode them independently of pydicom's character-set handling.
    stored = dcmread(path, defer_size=None)
    stored.SpecificCharacterSet = "ISO_IR 6"  # no decoding help: read the raw value bytes
    raw_bytes = stored.get_item("PatientName").value
    assert raw_bytes.decode("utf-8").rstrip(" ") == "=".join(want)

    text = files.hl7.decode("utf-8")
    assert "|UNICODE UTF-8" in text.split("\r")[0]
    [pid] = [segment.split("|") for segment in text.split("\r") if segment.startswith("PID|")]
    family, given = ([*name.split("=")[0].split("^"), ""])[:2]
    if family or given:
        assert [unescape(part) for part in pid[5].split("^")[:2]] == [family, given][: len(pid[5].split("^")[:2])]
    bundle = json.loads(files.fhir.decode("utf-8"))
    [patient] = [entry["resource"] for entry in bundle["entry"] if entry["resource"]["resourceType"] == "Patient"]
    if family:
        assert patient["name"][0]["family"] == family
