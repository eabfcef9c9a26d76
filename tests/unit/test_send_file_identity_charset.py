"""`radtrace send` reads a file's identity from its file meta alone: a file whose Specific Character Set pydicom does
not know (here "ISO_IR 999") cost three pydicom warnings per file before the file was even sent (found by the small
fixes helper: 'radtrace send' logged the warning 3 times per file)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pytest
from pydicom import dcmread

from radtrace.dicom_listener.scu_files import file_identity

pytestmark = pytest.mark.unit

REAL = Path(__file__).resolve().parents[1] / "data" / "real-cxr"


def test_a_files_identity_is_read_without_a_word_about_its_character_set(tmp_path: Path) -> None:
    source = sorted(REAL.glob("*.dcm"))[0]
    dataset = dcmread(source)
    path = tmp_path / "odd-charset.dcm"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset.SpecificCharacterSet = "ISO_IR 999"
        dataset.save_as(path)
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    handler = Collect()
    logging.getLogger("pydicom").addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            identity = file_identity(path)
    finally:
        logging.getLogger("pydicom").removeHandler(handler)
    assert identity == (str(dataset.SOPClassUID), str(dataset.file_meta.TransferSyntaxUID), str(dataset.SOPInstanceUID))
    assert [str(w.message) for w in caught if "999" in str(w.message)] == []
    assert [message for message in records if "999" in message] == []
