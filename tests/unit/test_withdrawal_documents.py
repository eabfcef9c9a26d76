"""The two documents that withdraw a draft (radtrace.reporting.withdrawal), built from drafts whose text is hostile.

The corrected ORU copies the draft's segments: text the draft escaped (delimiters, controls as ``\\Xhh\\``, the
hex stand-in itself, non-ASCII) must come through unchanged and the message stay hl7apy STRICT-valid, or the
withdrawal could never be built and the wrong patient's result would stay in the RIS. The rejection note names the
SR, the companion and the GSPS (three series) and passes dciodvfy.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from radtrace.config import ReportingSettings
from radtrace.reporting.companion import build_companion
from radtrace.reporting.gsps import build_gsps
from radtrace.reporting.hl7 import build_oru
from radtrace.reporting.sr import build_sr
from radtrace.reporting.withdrawal import build_rejection_note, build_withdrawal_oru, note_bytes, withdrawal_control_id
from reporting_support import sr_cases
from tests_support import DICOMDIR_WARNING, dciodvfy_lines

pytestmark = pytest.mark.unit

HOSTILE = "Line one\nline two\x01 with | pipe ^ caret & amp ~ tilde \\ back, \ue000 stand-in, é 漢字"


def _fields(text: str, name: str) -> list[list[str]]:
    return [segment.split("|") for segment in text.split("\r") if segment.startswith(name + "|")]


def test_the_corrected_oru_keeps_every_escaped_text_and_posts_each_observation_as_wrong() -> None:
    reading, sources = sr_cases()["non-ascii"]
    reading = reading.model_copy(update={"impression": HOSTILE})
    sr = build_sr(reading, sources, settings=ReportingSettings(), revision=1)
    draft = build_oru(reading, sources[0], settings=ReportingSettings(), sr_sop_instance_uid=str(sr.SOPInstanceUID))
    assert "\\X0A\\" in draft.text  # the draft escaped the line break as hex

    withdrawal = build_withdrawal_oru(draft.encode(), "read from | another ^ patient")

    parse_message(withdrawal.text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True).validate()
    assert withdrawal.control_id == withdrawal_control_id(draft.control_id) == _fields(withdrawal.text, "MSH")[0][9]
    for name in ("PID", "PV1", "ORC"):
        assert _fields(withdrawal.text, name) == _fields(draft.text, name)
    [obr] = _fields(withdrawal.text, "OBR")
    assert obr[25] == "C"
    assert obr[:22] == _fields(draft.text, "OBR")[0][:22]  # the same order: placer/filler numbers, service, times
    before, after = _fields(draft.text, "OBX"), _fields(withdrawal.text, "OBX")
    assert [obx[:11] for obx in after] == [obx[:11] for obx in before]  # every observation, its value unchanged
    assert {obx[11] for obx in after} == {"W"}
    [why, _] = _fields(withdrawal.text, "NTE")
    assert why[3].endswith("read from \\F\\ another \\S\\ patient")
    assert draft.control_id in why[3]


def test_the_rejection_note_names_the_sr_companion_and_gsps_and_passes_dciodvfy(tmp_path: Path) -> None:
    reading, sources = sr_cases()["boxes"]
    sr = build_sr(reading, sources, settings=ReportingSettings(), revision=1)
    companion = build_companion(reading, sr, settings=ReportingSettings(), revision=1)
    gsps = build_gsps(reading, sources, settings=ReportingSettings(), revision=1)
    assert gsps is not None

    note = build_rejection_note([sr, companion, gsps], "wrong patient", destination="PACS1@10.0.0.1:104")

    again = build_rejection_note([sr, companion, gsps], "wrong patient", destination="PACS1@10.0.0.1:104")
    assert again.SOPInstanceUID == note.SOPInstanceUID  # fixed by the SR and the destination
    other = build_rejection_note([sr, companion, gsps], "wrong patient", destination="PACS2@10.0.0.2:104")
    assert other.SOPInstanceUID != note.SOPInstanceUID
    assert (note.StudyInstanceUID, note.PatientID) == (sr.StudyInstanceUID, sr.PatientID)
    assert note.SeriesNumber not in {ds.SeriesNumber for ds in (sr, companion, gsps)}  # a series of its own
    [evidence] = note.CurrentRequestedProcedureEvidenceSequence
    named = {(s.SeriesInstanceUID, r.ReferencedSOPInstanceUID) for s in evidence.ReferencedSeriesSequence
             for r in s.ReferencedSOPSequence}  # fmt: skip
    assert named == {(ds.SeriesInstanceUID, ds.SOPInstanceUID) for ds in (sr, companion, gsps)}
    composite = [item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for item in note.ContentSequence
                 if item.ValueType == "COMPOSITE"]  # fmt: skip
    assert composite == [sr.SOPInstanceUID, companion.SOPInstanceUID, gsps.SOPInstanceUID]
    path = tmp_path / "note.dcm"
    path.write_bytes(note_bytes(note))
    lines = dciodvfy_lines(path)
    assert "KeyObjectSelectionDocument" in lines
    assert [line for line in lines if "Error" in line or ("Warning" in line and DICOMDIR_WARNING not in line)] == []
