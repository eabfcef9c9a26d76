"""The attribute table is the one list: it matches the data dictionary, covers what the code reads, and the
conformance statement prints it as it is."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydicom.datadict import tag_for_keyword

from radtrace.dicom_listener.attributes import ATTRIBUTES, conformance_table

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "src" / "radtrace"
# Keywords the code names that are not header attributes of a received image: read inside a sequence the table
# lists, read back from radtrace's own SR, part of a DIMSE command, absent from the CR/DX/SC IODs, or a word.
NOT_HEADER_ATTRIBUTES = {
    "CodeMeaning": "inside View Code Sequence",
    "CodeValue": "inside View Code Sequence",
    "LUTData": "inside a LUT sequence",
    "LUTExplanation": "inside a LUT sequence",
    "ModalityLUTType": "inside Modality LUT Sequence",
    "CompletionFlag": "radtrace's own SR, read back",
    "VerificationFlag": "radtrace's own SR, read back",
    "ConceptCodeSequence": "radtrace's own SR, read back",
    "ConceptNameCodeSequence": "radtrace's own SR, read back",
    "ContentSequence": "radtrace's own SR, read back",
    "MeasuredValueSequence": "radtrace's own SR, read back",
    "ContributingEquipmentSequence": "written into radtrace's outputs",
    "SoftwareVersions": "written into radtrace's outputs",
    "ErrorComment": "a C-STORE response",
    "Status": "a C-STORE response",
    "FloatPixelData": "not in the CR, DX or SC IODs",
    "UID": "the word, in a message",
}
_READ = re.compile(r"""(?:\.\w+\(|getattr\(\w+, |\w+\(\w+, )"([A-Z][A-Za-z]+)"|"([A-Z][A-Za-z]+)" (?:not )?in \w+""")


def test_every_row_is_a_data_dictionary_attribute_listed_once() -> None:
    keywords = [a.keyword for a in ATTRIBUTES]
    assert len(keywords) == len(set(keywords))
    assert all(tag_for_keyword(k) is not None for k in keywords)
    assert all(a.read_by for a in ATTRIBUTES)


def test_only_identifiers_and_the_pixel_description_are_key() -> None:
    key = {a.keyword for a in ATTRIBUTES if a.key}
    assert key == {
        "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "TransferSyntaxUID",
        "SamplesPerPixel", "PhotometricInterpretation", "Rows", "Columns", "BitsAllocated", "BitsStored",
        "PixelRepresentation", "NumberOfFrames", "PixelData",
    }  # fmt: skip


def test_every_attribute_the_listener_model_and_reporting_read_is_in_the_table() -> None:
    table = {a.keyword for a in ATTRIBUTES}
    read: dict[str, set[str]] = {}
    for package in ("dicom_listener", "model", "reporting"):
        for path in (SOURCE / package).rglob("*.py"):
            if path.name == "attributes.py":
                continue
            for match in _READ.finditer(path.read_text(encoding="utf-8")):
                keyword = match.group(1) or match.group(2)
                if tag_for_keyword(keyword) is not None:
                    read.setdefault(keyword, set()).add(str(path.relative_to(SOURCE)))
    missing = {k: sorted(v) for k, v in read.items() if k not in table and k not in NOT_HEADER_ATTRIBUTES}
    assert missing == {}, "add these to radtrace.dicom_listener.attributes.ATTRIBUTES"
    assert {"PatientID", "Rows", "ViewPosition", "WindowCenterWidthExplanation"} <= set(read)  # the scan finds


def test_the_conformance_statement_prints_the_table_as_it_is() -> None:
    text = (ROOT / "docs" / "conformance.md").read_text(encoding="utf-8")
    found = re.search(r"<!-- attribute-table:begin[^\n]*-->\n(.*?)\n<!-- attribute-table:end -->", text, re.S)
    assert found is not None, "docs/conformance.md has no generated attribute table"
    assert found.group(1) == conformance_table(), "regenerate it: python -m radtrace.dicom_listener.attributes"
