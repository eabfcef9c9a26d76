"""The attribute table is the one list: it matches the data dictionary, covers what the code reads, and the
conformance statement prints it as it is."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.datadict import keyword_for_tag, tag_for_keyword

from radtrace.dicom_listener.attributes import ATTRIBUTES, conformance_table

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "src" / "radtrace"
# Keywords the code names that are not header attributes of a received image: read inside a sequence the table
# lists, read back from radtrace's own SR, written into radtrace's outputs, part of a DIMSE command, absent from the
# CR/DX/SC IODs, or a word.
NOT_HEADER_ATTRIBUTES = {
    "CodeMeaning": "inside View Code Sequence",
    "CodeValue": "inside View Code Sequence",
    "LUTData": "inside a LUT sequence",
    "LUTDescriptor": "inside a LUT sequence",
    "LUTExplanation": "inside a LUT sequence",
    "ModalityLUTType": "inside Modality LUT Sequence",
    "CompletionFlag": "radtrace's own SR, read back",
    "VerificationFlag": "radtrace's own SR, read back",
    "ConceptCodeSequence": "radtrace's own SR, read back",
    "ConceptNameCodeSequence": "radtrace's own SR, read back",
    "ContentSequence": "radtrace's own SR, read back",
    "MeasuredValueSequence": "radtrace's own SR, read back",
    "RelationshipType": "radtrace's own SR, read back",
    "TextValue": "radtrace's own SR, read back",
    "ValueType": "radtrace's own SR, read back",
    "ContentDate": "radtrace's own SR, read back",
    "ContentTime": "radtrace's own SR, read back",
    "OtherPatientIDsSequence": "radtrace's own SR, read back (copied into the rejection note withdrawing it)",
    "Item": "the encoding's item tag (FFFE,E000), walked by the structure check",
    "ItemDelimitationItem": "the encoding's delimitation tag (FFFE,E00D), walked by the structure check",
    "SequenceDelimitationItem": "the encoding's delimitation tag (FFFE,E0DD), walked by the structure check",
    "CodingSchemeDesignator": "an IHE IOCM rejection note's title (a KOS, no CR/DX/SC attribute)",
    "CurrentRequestedProcedureEvidenceSequence": "the instances an IHE IOCM rejection note rejects",
    "ReferencedSeriesSequence": "the instances an IHE IOCM rejection note rejects",
    "ReferencedSOPSequence": "the instances an IHE IOCM rejection note rejects",
    "ReferencedSOPInstanceUID": "the instances an IHE IOCM rejection note rejects",
    "InstanceCreationDate": "written into radtrace's outputs",
    "InstanceCreationTime": "written into radtrace's outputs",
    "PresentationCreationDate": "written into radtrace's GSPS",
    "PresentationCreationTime": "written into radtrace's GSPS",
    "ContributingEquipmentSequence": "written into radtrace's outputs",
    "ErrorComment": "a C-STORE response",
    "AffectedSOPInstanceUID": "a C-STORE request's command",
    "AffectedSOPClassUID": "a DIMSE request's command",
    "RequestedSOPClassUID": "a DIMSE request's command",
    "CommandField": "a DIMSE request's command",
    "CommandDataSetType": "a DIMSE request's command",
    "MessageID": "a DIMSE request's command",
    "Priority": "a DIMSE request's command",
    "Status": "a C-STORE response",
    "FloatPixelData": "not in the CR, DX or SC IODs",
    "DoubleFloatPixelData": "not in the CR, DX or SC IODs",
    "UID": "the word, in a message",
    "Impressions": "a code meaning (DCM 121072), not the retired attribute",
    # An instance sent again is compared with the copy held attribute by attribute (dicom_listener/resend.py): these
    # are left out of that comparison, or what a lossy re-encoding changes; the model and outputs read none of them.
    "LengthToEnd": "left out when an instance sent again is compared",
    "DerivationDescription": "left out when an instance sent again is compared",
    "PlanarConfiguration": "left out when an instance sent again is compared",
    "DataSetTrailingPadding": "left out when an instance sent again is compared",
    "ImageType": "compared: changed by a lossy re-encoding",
    "SourceImageSequence": "compared: changed by a lossy re-encoding",
    "DerivationCodeSequence": "compared: changed by a lossy re-encoding",
}
_READ = re.compile(r"""(?:\.\w+\(|getattr\(\w+, |\w+\(\w+, )"([A-Z][A-Za-z]+)"|"([A-Z][A-Za-z]+)" (?:not )?in \w+""")
# Any quoted keyword (in a tuple of keywords looped over, a set copied into an output, a mapping), and an attribute
# read off a dataset (not an assignment to one).
_QUOTED = re.compile(r"""(?<![\w.])["']([A-Z][A-Za-z]+)["']""")
_ATTRIBUTE_READ = re.compile(r"""\b(?:ds|dataset|source|image|header|item)\.([A-Z][A-Za-z]+)\b(?!\s*=[^=])""")
# A keyword built at run time: f"{colour}PaletteColorLookupTableData".
_TEMPLATE = re.compile(r"""f["']([A-Za-z]*\{\w+\}[A-Za-z]*)["']""")
_PLACEHOLDER = re.compile(r"\{\w+\}")
_TEMPLATE_VALUES = ("Red", "Green", "Blue")
# A read by tag number: 0x7FE00001, Tag(0x0028, 0x0101), (0x7FE0, 0x0002).
_TAG_NUMBER = re.compile(r"\b0x([0-9A-Fa-f]{8})\b|\(0x([0-9A-Fa-f]{4}),\s*0x([0-9A-Fa-f]{4})\)")
# The table literal itself names every keyword; everything else (attribute_table.py, attributes.py) is scanned.
_TABLE_LITERAL = re.compile(r"^ATTRIBUTES: Final\[.*?^\)  # fmt: skip$", re.S | re.M)


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


def _reads(text: str) -> Iterator[str]:
    """Every data dictionary keyword ``text`` reads: named, built from a template, or by tag number."""
    for pattern in (_READ, _QUOTED, _ATTRIBUTE_READ):
        for match in pattern.finditer(text):
            keyword = next(group for group in match.groups() if group)
            if tag_for_keyword(keyword) is not None:
                yield keyword
    for match in _TEMPLATE.finditer(text):
        built = [_PLACEHOLDER.sub(value, match.group(1)) for value in _TEMPLATE_VALUES]
        known = [keyword for keyword in built if tag_for_keyword(keyword) is not None]
        if re.search(r"[A-Z][a-z]+[A-Z]", match.group(1)):  # CamelCase around the placeholder: a keyword
            assert known, f"teach this test the values of {match.group(1)!r}"
        yield from known
    for match in _TAG_NUMBER.finditer(text):
        number = int(match.group(1), 16) if match.group(1) else int(match.group(2) + match.group(3), 16)
        if number >> 16 == 0x0000:
            continue  # group 0000 is a DIMSE command's (a status pair such as (0x0000, 0x0001) reads alike)
        keyword = keyword_for_tag(number)
        if keyword:
            yield keyword


def _read_by_package() -> dict[str, set[str]]:
    read: dict[str, set[str]] = {}
    for package in ("dicom_listener", "model", "reporting"):
        for path in (SOURCE / package).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            if path.name == "attribute_table.py":
                text, count = _TABLE_LITERAL.subn("", text)
                assert count == 1, "the ATTRIBUTES literal moved: update _TABLE_LITERAL"
            for keyword in _reads(text):
                read.setdefault(keyword, set()).add(str(path.relative_to(SOURCE)))
    return read


def test_the_scan_finds_reads_in_every_form() -> None:
    text = """
ds.get("PatientID"); for keyword in ("PixelSpacing", "PixelAspectRatio"): pass
if ds.HighBit: ds.Columns = 1
f"{colour}PaletteColorLookupTableDescriptor"
_EOT = (0x7FE00001, 0x7FE00002); Tag(0x0028, 0x0120); status in (0x0000, 0x0001)
"""
    assert set(_reads(text)) == {
        "PatientID", "PixelSpacing", "PixelAspectRatio", "HighBit", "RedPaletteColorLookupTableDescriptor",
        "GreenPaletteColorLookupTableDescriptor", "BluePaletteColorLookupTableDescriptor", "ExtendedOffsetTable",
        "ExtendedOffsetTableLengths", "PixelPaddingValue",
    }  # fmt: skip


def test_every_attribute_the_listener_model_and_reporting_read_is_in_the_table() -> None:
    table = {a.keyword for a in ATTRIBUTES}
    read = _read_by_package()
    missing = {k: sorted(v) for k, v in read.items() if k not in table and k not in NOT_HEADER_ATTRIBUTES}
    assert missing == {}, "add these to radtrace.dicom_listener.attributes.ATTRIBUTES"
    assert {"PatientID", "Rows", "ViewPosition", "WindowCenterWidthExplanation"} <= set(read)  # the scan finds
    assert {"PixelPaddingValue", "ExtendedOffsetTable", "RedPaletteColorLookupTableData"} <= set(read)


def test_no_keyword_is_excused_that_the_table_lists_or_the_code_no_longer_reads() -> None:
    read = _read_by_package()
    assert sorted(set(NOT_HEADER_ATTRIBUTES) & {a.keyword for a in ATTRIBUTES}) == []
    assert sorted(set(NOT_HEADER_ATTRIBUTES) - set(read)) == []


def test_the_conformance_statement_prints_the_table_as_it_is() -> None:
    text = (ROOT / "docs" / "conformance.md").read_text(encoding="utf-8")
    found = re.search(r"<!-- attribute-table:begin[^\n]*-->\n(.*?)\n<!-- attribute-table:end -->", text, re.S)
    assert found is not None, "docs/conformance.md has no generated attribute table"
    assert found.group(1) == conformance_table(), "regenerate it: python -m radtrace.dicom_listener.attributes"
