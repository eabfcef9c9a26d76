"""pydicom's warning about an unknown Specific Character Set is logged once per instance in a process, however many
times radtrace reads the instance, naming its study by key, its peer-written term escaped.

pydicom warns twice in each read, and radtrace reads an instance more than once (the listener: header and pixel
budget; the worker: header and pixels): ``radtrace model read`` of a folder holding one such film logged the line
twice, the listener and the worker 4 times each (tests/integration/test_pydicom_warnings_once.py). Film: the small
canine DX film of tests/data/real-cxr with (0008,0005) replaced.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag
from pydicom.uid import generate_uid

from radtrace.dicom_charset import without_charset_warnings
from radtrace.dicom_deflated import read_bounded
from radtrace.logging import study_key
from tests_support import radtrace

pytestmark = pytest.mark.unit

CANINE = Path(__file__).resolve().parents[1] / "data" / "real-cxr" / "canine-dx-thorax-lateral-mono1-small.dcm"
FORGED = b"ISO_IR 999\nCRITICAL radtrace: forged"


def _film(target: Path, charset: bytes) -> str:
    """The canine film under new UIDs with (0008,0005) written as ``charset``; its Study Instance UID."""
    ds = pydicom.dcmread(CANINE)
    ds.StudyInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds._dict[Tag(0x00080005)] = RawDataElement(Tag(0x00080005), "CS", len(charset), charset, 0, False, True)
    with without_charset_warnings():
        ds.save_as(target, enforce_file_format=True)
    return str(ds.StudyInstanceUID)


def _read(path: Path) -> None:
    with without_charset_warnings(), path.open("rb") as handle:
        read_bounded(handle, keep_bulk=False, defer_bytes=1 << 20, max_inflated_bytes=1 << 30)


def _forget(log: io.StringIO) -> None:
    log.seek(0)
    log.truncate()


def _messages(output: str) -> list[str]:
    lines = output.splitlines()
    if lines and lines[0].startswith("{"):
        return [json.loads(line)["message"] for line in lines]
    return lines


def test_an_instance_read_twice_is_warned_about_once_with_its_study_and_the_term_escaped(
    tmp_path: Path, captured_log: io.StringIO
) -> None:
    study_uid = _film(tmp_path / "film.dcm", FORGED)
    _forget(captured_log)  # pydicom's warnings while writing it
    _read(tmp_path / "film.dcm")
    _read(tmp_path / "film.dcm")
    messages = _messages(captured_log.getvalue())
    assert len(messages) == 1, messages  # one line: the peer's newline cannot start a second one
    assert "Unknown encoding 'ISO_IR 999\\x0aCRITICAL radtrace: forged'" in messages[0]
    assert f"(study {study_key(study_uid)})" in messages[0]
    assert "Dog" not in captured_log.getvalue()  # the film's patient name, AVeryGood's


def test_each_instance_is_warned_about_once(tmp_path: Path, captured_log: io.StringIO) -> None:
    first, second = _film(tmp_path / "1.dcm", b"ISO_IR 999"), _film(tmp_path / "2.dcm", b"ISO_IR 999")
    _forget(captured_log)
    for name in ("1.dcm", "2.dcm", "1.dcm", "2.dcm"):
        _read(tmp_path / name)
    messages = _messages(captured_log.getvalue())
    assert len(messages) == 2, messages
    assert f"(study {study_key(first)})" in messages[0]
    assert f"(study {study_key(second)})" in messages[1]


def test_model_read_of_a_folder_with_such_a_film_says_it_once(tmp_path: Path) -> None:
    (tmp_path / "study").mkdir()
    _film(tmp_path / "study" / "film.dcm", b"ISO_IR 999")
    result = radtrace("model", "read", str(tmp_path / "study"), env={"RADTRACE_DATA_DIR": str(tmp_path / "var")})
    lines = [line for line in result.stderr.splitlines() if "Unknown encoding 'ISO_IR 999'" in line]
    assert len(lines) == 1, result.stderr
