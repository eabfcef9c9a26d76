"""pydicom warns once per text value it converts (an unknown escape sequence, a value longer than its VR allows): one
instance with control characters in each of its text values gave 57 identical lines in the listener's log and 114 in
the worker's (header, then whole), in one second; an allowed peer could add that many per instance it sends. Each
read path (the listener's :func:`read_header`, the worker's :func:`spooled_image` and its ``whole``) now logs one line
per kind of warning and instance, saying how many there were, naming the study by key and no patient value.

Film: the NIH frontal film of tests/data/real-cxr under new UIDs, each of its text values (patient name and ID
among them, canary values) replaced by raw bytes with ESC, C0/C1 controls, U+2028 and a forged log record, declared
ISO_IR 192, as a peer would send them (the newcomer's make.py, notes/newcomer-repro).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import warnings
from collections import Counter
from pathlib import Path

import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.uid import generate_uid

from radtrace.dicom_listener.headers import read_header
from radtrace.logging import study_key
from radtrace.model.study import spooled_image

pytestmark = pytest.mark.unit

NIH = Path(__file__).resolve().parents[1] / "data" / "real-cxr" / "nih-cxr14-00000001_000-dx-frontal-mono2-8bit.dcm"
CANARIES = {"PatientName": "Canaryfam^Canarygiv", "PatientID": "CANARYPID31", "AccessionNumber": "CANARYACC31"}
FORGED = "\r\n2026-12-06 10:00:00,000 INFO    radtrace.supervisor: FORGED LINE by peer\n"
TEXT_VRS = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UR", "UT"}
KEPT = {"SpecificCharacterSet", "BodyPartExamined", "ViewPosition", "Modality", "PhotometricInterpretation"}
VARYING = re.compile(r"'[^']*'|\d+")  # what two warnings of one kind may differ in (a value's length)
COUNTED = re.compile(r" \((\d+) (times|like it) reading this instance\)$")


def _hostile(target: Path) -> tuple[str, int]:
    """The film with hostile bytes in each text value (each a different length); its Study UID and how many."""
    with warnings.catch_warnings():  # pydicom's own warnings about the film (not what is tested)
        warnings.simplefilter("ignore")
        return _write_hostile(target)


def _write_hostile(target: Path) -> tuple[str, int]:
    ds = pydicom.dcmread(NIH)
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for keyword, value in CANARIES.items():
        setattr(ds, keyword, value)
    ds.SpecificCharacterSet = "ISO_IR 192"
    hostile = 0
    for element in list(ds):
        if element.VR not in TEXT_VRS or element.keyword in KEPT:
            continue
        canary = CANARIES.get(element.keyword, "")
        text = f"{canary}A\x00\x07\x1b[31mRED\x1b[0m\x1b]0;title\x07\x7f\u2028\u0085{FORGED}" + "x" * hostile
        data = text.encode("utf-8")
        data += b" " * (len(data) % 2)
        ds[element.tag] = RawDataElement(element.tag, element.VR, len(data), data, 0, False, True)
        hostile += 1
    ds.save_as(target, enforce_file_format=True)
    return str(ds.StudyInstanceUID), hostile


def _pydicoms(output: str) -> list[str]:
    """The messages of pydicom's records, in either format."""
    lines = output.splitlines()
    if lines and lines[0].startswith("{"):
        return [record["message"] for record in map(json.loads, lines) if record["logger"] == "pydicom"]
    return [line.split(" pydicom: ", 1)[1] for line in lines if " pydicom: " in line]


def _assert_once_per_kind(output: str, study_uid: str, hostile: int) -> None:
    said = _pydicoms(output)
    kinds = Counter(VARYING.sub("_", COUNTED.sub("", message)) for message in said)
    assert kinds, output
    assert all(count == 1 for count in kinds.values()), said  # BASE: one line per value
    escapes = [message for message in said if "Found unknown escape sequence" in message]
    assert len(escapes) == 1, said
    counted = COUNTED.search(escapes[0])
    assert counted is not None, escapes
    assert int(counted.group(1)) >= hostile, escapes  # one per value, at least
    assert counted.group(2) == "times"  # the same message each time
    too_long = [message for message in said if "exceeds the maximum length of 64 allowed for VR LO" in message]
    assert len(too_long) == 1, said
    assert too_long[0].endswith("like it reading this instance)"), said  # their lengths differ
    assert all(f"(study {study_key(study_uid)})" in message for message in said), said
    for value in (*CANARIES["PatientName"].split("^"), CANARIES["PatientID"], CANARIES["AccessionNumber"]):
        assert value not in output
    assert "FORGED" not in "".join(line for line in output.splitlines() if not line.startswith(("20", "{")))


def test_the_listeners_header_read_logs_each_kind_of_pydicom_warning_once_with_its_count(
    tmp_path: Path, captured_log: io.StringIO
) -> None:
    study_uid, hostile = _hostile(tmp_path / "film.dcm")
    captured_log.seek(0)
    captured_log.truncate()  # what pydicom said while writing it
    read_header(tmp_path / "film.dcm")
    read_header(tmp_path / "film.dcm")  # a second read of the instance says nothing more
    _assert_once_per_kind(captured_log.getvalue(), study_uid, hostile)


def test_the_workers_header_and_whole_reads_log_each_kind_of_pydicom_warning_once_with_its_count(
    tmp_path: Path, captured_log: io.StringIO
) -> None:
    study_uid, hostile = _hostile(tmp_path / "film.dcm")
    captured_log.seek(0)
    captured_log.truncate()
    digest = hashlib.sha256((tmp_path / "film.dcm").read_bytes()).hexdigest()
    with warnings.catch_warnings():  # as in the worker (logging.captureWarnings): not errors, logged
        warnings.simplefilter("ignore")
        image = spooled_image(tmp_path / "film.dcm", digest)
        assert image.whole is not None
        image.whole()
    _assert_once_per_kind(captured_log.getvalue(), study_uid, hostile)
