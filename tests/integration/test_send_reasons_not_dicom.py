"""`radtrace send FILE` of a file that is no DICOM, or says DICOM and cannot be read: the reason says what it is.

Found trying radtrace from outside: a README.TXT or a JPEG named alone failed with "not a DICOM file
(AttributeError)", an exception's class name a hospital user can do nothing with, and a file with "DICM" at byte 128
and an unknown VR in its file meta stopped the whole command with a traceback (pydicom's NotImplementedError).
Now the reason says what was found: no "DICM" preamble and no data set, with the file's kind by its first bytes (a
text file's content is never shown), or which file meta element is missing, or pydicom's message on one line with
the values it quotes (read from the file: they may be a patient's) left out.

Every file here fails before an association is tried: no listener is needed (port 9 is never reached).
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from tests_support import radtrace

pytestmark = pytest.mark.integration

FILM = Path(__file__).resolve().parents[1] / "data" / "real-cxr" / "canine-dx-thorax-lateral-mono1-small.dcm"


def _send(path: Path) -> str:
    result = radtrace("send", "--port", "9", str(path))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert "AttributeError" not in result.stdout + result.stderr, result.stderr
    return " ".join((result.stdout + result.stderr).split())


def test_a_named_text_file_and_jpeg_say_what_they_are_and_never_show_the_text(tmp_path: Path) -> None:
    readme = tmp_path / "README.TXT"
    readme.write_text("Patient DOE^JANE, born 1950. Insert into a PC and run VIEWER.EXE.\r\n")
    said = _send(readme)
    assert 'README.TXT: not a DICOM file: no "DICM" at byte 128 and no data set with a SOP Class UID' in said, said
    assert "(a text file)" in said, said
    assert "DOE" not in said, said
    assert "1950" not in said, said

    photo = tmp_path / "IMG_0001.JPG"
    photo.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(300))
    said = _send(photo)
    assert "IMG_0001.JPG: not a DICOM file: no" in said, said
    assert "(a JPEG image, starts \\xff\\xd8\\xff)" in said, said


def test_a_file_that_says_dicom_and_cannot_be_read_says_what_pydicom_found(tmp_path: Path) -> None:
    cut = tmp_path / "IM000003"
    cut.write_bytes(FILM.read_bytes()[:200])  # "DICM", then cut inside the file meta, before the transfer syntax
    said = _send(cut)
    assert "IM000003: not a DICOM file: it says DICOM" in said, said
    assert "its file meta has no Transfer Syntax UID (0002,0010)" in said, said

    unknown_vr = tmp_path / "IM000004"  # before: pydicom's NotImplementedError ended the command with a traceback
    meta = struct.pack("<HH", 0x0002, 0x0002) + b"ZZ" + struct.pack("<H", 8) + b"DOE^JANE"
    unknown_vr.write_bytes(bytes(128) + b"DICM" + meta)
    said = _send(unknown_vr)
    assert "IM000004: not a DICOM file: it says DICOM but cannot be read" in said, said
    assert "Unknown Value Representation '…' in tag (0002,0002)" in said, said
    assert "ZZ" not in said, said
    assert "DOE" not in said, said

    wrong_length = tmp_path / "IM000005"  # before: pydicom's BytesLengthException, with the bytes, in a traceback
    meta = struct.pack("<HH", 0x0002, 0x0000) + b"UL" + struct.pack("<H", 3) + b"DOE"
    wrong_length.write_bytes(bytes(128) + b"DICM" + meta)
    said = _send(wrong_length)
    assert "IM000005: not a DICOM file: it says DICOM but cannot be read (Expected total bytes" in said, said
    assert "received '…' with length 3" in said, said
    assert "DOE" not in said, said


def test_what_pydicom_found_is_one_escaped_line_without_the_values_it_quotes() -> None:
    from radtrace.dicom_listener.scu_files import found

    message = found(ValueError("Invalid value for VR PN: 'DOE^JANE'\n2026-12-06 ERROR forged \x1b[2J" + "x" * 400))
    assert message.startswith("Invalid value for VR PN: '…' 2026-12-06 ERROR forged \\x1b[2J"), message
    assert "DOE" not in message, message
    assert "\n" not in message, message
    assert len(message) <= 170, message
