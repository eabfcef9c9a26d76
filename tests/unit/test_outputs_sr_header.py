"""What the SR writes for a person's name and the configured names, value by value (dciodvfy runs on the same
cases in tests/integration/test_outputs_hostile_header.py).

dciodvfy measures a PN value as a whole (at most 64 bytes), although PS3.5 allows 64 characters per component
group: a long name in three groups made every draft of that patient fail validation. The SR now keeps whole
groups that fit, leaves out the later ones (phonetic first), never the only group that names the person, and
says so in its header notes. A configured institution name with a backslash became two values (VM 2 in a VM 1
attribute), and an over-long one an invalid LO, in the SR, the companion and the GSPS.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
from pydicom.dataset import Dataset

from radtrace.config import ReportingSettings
from radtrace.model.reading import BoundingBox, Finding, FindingStatus
from radtrace.reporting import codes
from radtrace.reporting.companion import build_companion
from radtrace.reporting.gsps import build_gsps
from radtrace.reporting.sr import build_sr
from reporting_support import reading, source_study

pytestmark = pytest.mark.unit

SOURCES = source_study()


def _sr(**header: str) -> Dataset:
    sources = [copy.deepcopy(ds) for ds in SOURCES]  # Dataset.copy() shares its elements
    for keyword, value in header.items():
        setattr(sources[0], keyword, value)
    return build_sr(reading(sources), sources, settings=ReportingSettings(), revision=1)


def _texts(items: Any) -> Iterator[str]:
    for item in items:
        if item.ValueType == "TEXT":
            yield item.TextValue
        yield from _texts(item.get("ContentSequence", []))


@pytest.mark.parametrize(
    ("name", "written"),
    [
        ("Yamada^Tarou=" + "山田^太郎" * 3 + "=" + "やまだ^たろう" * 3, "Yamada^Tarou=" + "山田^太郎" * 3),
        ("Yamada^Tarou=山田^太郎=やまだ^たろう", "Yamada^Tarou=山田^太郎=やまだ^たろう"),  # 47 bytes: all kept
        ("x" * 40 + "=" + "y" * 40, "x" * 40 + "^"),
        ("=" + "山" * 30 + "=" + "や" * 30, "=" + "山" * 20 + "^"),  # the only group naming the person: cut
        ("Doe^John=", "Doe^John"),
    ],
)
def test_a_person_name_is_at_most_64_bytes_keeping_whole_groups_first(name: str, written: str) -> None:
    sr = _sr(PatientName=name, ReferringPhysicianName=name)
    assert str(sr.PatientName) == written
    assert str(sr.ReferringPhysicianName) == written
    assert len(written.encode("utf-8")) <= 64
    notes = "\n".join(_texts(sr.ContentSequence))
    assert ("PatientName: characters or lengths PN does not allow" in notes) == (
        len(name.encode("utf-8")) > 64 or "^" not in name.split("=")[0]
    )


@pytest.mark.parametrize(
    ("institution", "written"),
    [("Hôpital A\\B", "Hôpital A\ufffdB"), ("x" * 70, "x" * 64), ("山" * 30, "山" * 21), ("a\nb", "a\ufffdb")],
)
def test_the_configured_institution_name_is_one_valid_lo_in_every_dicom_output(institution: str, written: str) -> None:
    settings = ReportingSettings.model_construct(institution_name=institution, gsps=True)  # load refuses these
    sources = [copy.deepcopy(ds) for ds in SOURCES]
    box = BoundingBox(sop_instance_uid=str(sources[0].SOPInstanceUID), x_min=1.0, y_min=2.0, x_max=9.0, y_max=9.0)
    read = reading(sources, findings=[Finding(label="Lung Lesion", status=FindingStatus.PRESENT, boxes=(box,))])
    sr = build_sr(read, sources, settings=settings, revision=1)
    companion = build_companion(read, sr, settings=settings, revision=1)
    gsps = build_gsps(read, sources, settings=settings, revision=1)
    assert gsps is not None
    for document in (sr, companion, gsps):
        assert document.InstitutionName == written
        assert document["InstitutionName"].VM == 1


def test_header_notes_code_is_where_the_notes_are() -> None:
    """The note the name test looks for is the SR's header-notes item (guards the test's own reading)."""
    sr = _sr(PatientName="x" * 40 + "=" + "y" * 40)
    found = []
    for item in sr.ContentSequence:
        for child in item.get("ContentSequence", []):
            if child.ConceptNameCodeSequence[0].CodeValue == codes.HEADER_NOTES.value:
                found.append(child.TextValue)
    assert any("PatientName" in text for text in found)
