"""`radtrace send` of a folder copied from a patient's CD or a USB stick: found trying radtrace from outside.

Media written to PS3.10 (every CD a hospital hands out) hold a DICOMDIR at the root: the index of the files beside
it, a Media Storage Directory object, which no Storage SCP takes. Before, ``radtrace send FOLDER`` proposed its SOP
class with the films', the listener refused that presentation context (an ``instance_rejected`` audit event on the
receiving side) and the command listed the DICOMDIR as "no accepted presentation context" and exited 1, though
every film had been stored. dcmtk's ``storescu +sd`` stops at the DICOMDIR and sends nothing. Now the DICOMDIR is
listed as skipped, with why, and not proposed; the films are sent and the exit status is theirs.

The films are two in tests/data/real-cxr (the Fuji CR, made Part 10 in Explicit VR as the media profile wants, and
the canine DX) under ISO 9660 names; the DICOMDIR is written by dcmtk's dcmmkdir, as media creation software does.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from listener_support import audit_types, listener_settings, rows, running
from radtrace.store.engine import Store
from radtrace.store.models import Instance
from tests_support import as_part10, radtrace

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("dcmmkdir") is None, reason="dcmtk is not installed"),
]

REAL = Path(__file__).resolve().parents[1] / "data" / "real-cxr"
FILMS = {
    "IM000001": REAL / "fuji-cr-chest-pa-mono1-10bit-no-filemeta.dcm",
    "IM000002": REAL / "canine-dx-thorax-lateral-mono1-small.dcm",
}


def _media(root: Path) -> list[str]:
    """A PS3.10 file set: the films under DICOM/, the DICOMDIR at ``root``; returns the films' SOP Instance UIDs."""
    (root / "DICOM").mkdir(parents=True)
    uids = []
    for name, film in FILMS.items():
        ds = pydicom.dcmread(film, force=True)
        ds.SOPInstanceUID = generate_uid()
        as_part10(ds).save_as(root / "DICOM" / name, enforce_file_format=True)  # explicit VR, as media want
        uids.append(str(ds.SOPInstanceUID))
    subprocess.run(
        ["dcmmkdir", "--invent", *(f"DICOM/{name}" for name in FILMS)],
        check=True,
        capture_output=True,
        timeout=60,
        cwd=root,
    )
    assert (root / "DICOMDIR").is_file()
    return uids


def test_a_folder_from_a_cd_sends_its_films_and_skips_its_dicomdir(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    sent = _media(tmp_path / "cdrom")
    with running(listener_settings(tmp_path, listener_port), store):
        result = radtrace(
            "send", "--port", str(listener_port), "--called-ae", "RADTRACE", "--calling-ae", "PACS",
            str(tmp_path / "cdrom"),
        )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(row.sop_instance_uid for row in rows(store, Instance)) == sorted(sent)
    assert "instance_rejected" not in audit_types(store)  # the Media Storage Directory class was never proposed
    cells = [line.split("│")[1:3] for line in result.stdout.splitlines() if line.count("│") == 3]
    counts = {status.strip(): files.strip() for status, files in cells}
    assert counts == {"0x0000": "2", "skipped": "1"}, result.stdout
    assert "DICOMDIR: skipped: a DICOMDIR, the index of the files beside it" in " ".join(result.stderr.split())


def test_the_other_files_of_a_cd_are_listed_as_skipped_and_a_broken_dicom_file_is_still_a_failure(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    """A CD also holds a README, an AUTORUN.INF and a viewer: files found in the folder that are no DICOM at all
    are listed as skipped, not failures (before: 'not a DICOM file (AttributeError)' each, exit 1). A file that
    says it is DICOM ("DICM" at byte 128) and cannot be read is still a failure, as is any file named alone."""
    sent = _media(tmp_path / "cdrom")
    (tmp_path / "cdrom" / "README.TXT").write_text("Patient CD. Insert into a PC and run VIEWER.EXE.\r\n")
    (tmp_path / "cdrom" / "AUTORUN.INF").write_text("[autorun]\r\nopen=VIEWER\\VIEWER.EXE\r\n")
    (tmp_path / "cdrom" / "VIEWER").mkdir()
    (tmp_path / "cdrom" / "VIEWER" / "VIEWER.EXE").write_bytes(b"MZ\x90\x00" + bytes(400))
    with running(listener_settings(tmp_path, listener_port), store):
        send = ("send", "--port", str(listener_port), "--called-ae", "RADTRACE", "--calling-ae", "PACS")
        result = radtrace(*send, str(tmp_path / "cdrom"))
        assert result.returncode == 0, result.stdout + result.stderr
        assert sorted(row.sop_instance_uid for row in rows(store, Instance)) == sorted(sent)
        cells = [line.split("│")[1:3] for line in result.stdout.splitlines() if line.count("│") == 3]
        assert {status.strip(): files.strip() for status, files in cells} == {"0x0000": "2", "skipped": "4"}
        assert "README.TXT: skipped: not a DICOM file" in " ".join(result.stderr.split())

        named = radtrace(*send, str(tmp_path / "cdrom" / "README.TXT"))
        assert named.returncode == 1, named.stdout + named.stderr
        film = (tmp_path / "cdrom" / "DICOM" / "IM000001").read_bytes()
        (tmp_path / "cdrom" / "DICOM" / "IM000003").write_bytes(film[:200])  # "DICM", then cut inside its meta
        broken = radtrace(*send, str(tmp_path / "cdrom"))
        assert broken.returncode == 1, broken.stdout + broken.stderr
        assert "IM000003: not a DICOM file" in " ".join(broken.stderr.split())


def test_a_dicomdir_named_alone_is_a_failure_that_says_what_to_send(tmp_path: Path) -> None:
    """Nothing to send but the index: the command fails (exit 1) and says to send the folder."""
    _media(tmp_path / "cdrom")
    result = radtrace("send", "--port", "9", str(tmp_path / "cdrom" / "DICOMDIR"))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "send the folder that holds it" in " ".join(result.stderr.split())
