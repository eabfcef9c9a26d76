"""The five real films of tests/data/real-cxr through ``radtrace serve``, each sent as its own study.

The two NEMA films are one image in two compressions and share their UIDs; the JPEG-LS one is sent under new
Study, Series and SOP Instance UIDs (its pixel data and every other element as they are) so it is a study of its own.
A sixth study is the Fuji film as a Fuji or Konica CR archive sends lossy films, 12-bit JPEG Extended (dcmtk's
``dcmcjpeg +ee``), under new UIDs.

Every frontal human film (two NEMA CR films, JPEG 2000 and JPEG-LS; the Fuji CR without file meta or Type 3
spacing and orientation; the NIH Secondary Capture DX with no body part) ends with a draft whose SR and companion
document pass dciodvfy with 0 errors and whose HL7 parses; the canine lateral ends ``skipped`` with a reason a
radiologist understands. The factory writes every optional attribute; these films do not.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pydicom
import pytest
import sqlalchemy as sa
from hl7apy.parser import parse_message
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, JPEGExtended12Bit, generate_uid

from radtrace.dicom_listener.dcmtk import dcmtk_env
from radtrace.store.engine import Store
from radtrace.store.models import Revision, RevisionState, Study
from radtrace.testing.services import free_port
from reporting_support import REAL_FILMS
from serve_support import running_serve, tiny_service_env, wait_until
from tests_support import dciodvfy_errors, dicom_tool, radtrace

pytestmark = pytest.mark.e2e

FRONTAL = [
    "nema-rg1-cr-chest-pa-mono1-j2k-lossy.dcm",
    "nema-rg1-cr-chest-pa-mono1-jpegls-near-lossless.dcm",
    "fuji-cr-chest-pa-mono1-10bit-no-filemeta.dcm",
    "nih-cxr14-00000001_000-dx-frontal-mono2-8bit.dcm",
]
LATERAL = "canine-dx-thorax-lateral-mono1-small.dcm"
JPEG_12_BIT = "fuji-cr-chest-pa-mono1-10bit as 12-bit JPEG Extended"


def test_real_films_get_valid_drafts_and_the_lateral_a_reasoned_skip(tmp_path: Path, tiny_model_dir: Path) -> None:
    listener_port, api_port = free_port(), free_port()
    data_dir = tmp_path / "radtrace"
    drop = tmp_path / "drop"
    drop.mkdir()
    env = tiny_service_env(
        data_dir,
        listener_port=listener_port,
        model_dir=tiny_model_dir,
        api_port=api_port,
        callers=("PACS", "RADTRACE-SEND"),
    ) | {"RADTRACE_DISPATCH__FILE_DROP_DIR": str(drop)}
    files = {name: REAL_FILMS / name for name in [*FRONTAL, LATERAL]}
    files[FRONTAL[1]] = _with_new_uids(REAL_FILMS / FRONTAL[1], tmp_path / FRONTAL[1])
    files[JPEG_12_BIT] = _with_new_uids(_jpeg_extended_12_bit(REAL_FILMS / FRONTAL[2], tmp_path), tmp_path / "j12.dcm")
    uids = {name: str(pydicom.dcmread(path, force=True, stop_before_pixels=True).StudyInstanceUID)
            for name, path in files.items()}  # fmt: skip
    assert len(set(uids.values())) == 6  # six studies
    log_file = tmp_path / "serve.log"
    with running_serve(env, log_file, listener_port=listener_port, graceful_stop=False):  # nothing on stopping
        for name in [*FRONTAL, JPEG_12_BIT, LATERAL]:  # `radtrace send`, as the README has it: a film a study
            sent = radtrace("send", str(files[name]), "--port", str(listener_port), env=env)
            assert sent.returncode == 0, f"{name}: {sent.stdout}{sent.stderr}"
        store = Store.from_url(f"sqlite:///{data_dir / 'radtrace.db'}")

        def states() -> dict[str, tuple[RevisionState, str | None, str | None]]:
            with store.session() as session:
                rows = session.execute(
                    sa.select(Study.study_uid, Revision.state, Revision.reason, Revision.sr_sop_instance_uid).join(
                        Revision, Revision.study_id == Study.id
                    )
                ).all()
            return {row[0]: (row[1], row[2], row[3]) for row in rows}

        def settled() -> bool:
            now = states()
            return len(now) == 6 and all(
                state in (RevisionState.DISPATCHED, RevisionState.SKIPPED, RevisionState.FAILED)
                for state, _, _ in now.values()
            )

        wait_until(settled, 180, "six real films to end dispatched or skipped", log_file)
        final = states()
        store.dispose()

    lateral_state, lateral_reason, _ = final[uids[LATERAL]]
    assert lateral_state is RevisionState.SKIPPED
    assert lateral_reason == "no frontal chest image"
    for name in [*FRONTAL, JPEG_12_BIT]:
        state, reason, sr_uid = final[uids[name]]
        assert state is RevisionState.DISPATCHED, f"{name}: {state} ({reason})"
        sr_path = drop / f"{sr_uid}.dcm"
        sr = pydicom.dcmread(sr_path)
        assert sr.StudyInstanceUID == uids[name]
        assert (sr.CompletionFlag, sr.VerificationFlag) == ("COMPLETE", "UNVERIFIED")
        assert dciodvfy_errors(sr_path) == [], name
        companion = drop / f"{sr_uid}.companion.dcm"
        assert dciodvfy_errors(companion) == [], name
        hl7 = (drop / f"{sr_uid}.hl7").read_text(encoding="utf-8").replace("\r\n", "\r").replace("\n", "\r")
        message = parse_message(hl7.strip("\r"), find_groups=False)
        assert message.msh.msh_9.to_er7() == "ORU^R01^ORU_R01"


def _jpeg_extended_12_bit(source: Path, directory: Path) -> Path:
    """The film written with file meta, then encoded by dcmtk as 12-bit JPEG Extended (Process 4)."""
    dataset = pydicom.dcmread(source, force=True)
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    plain, encoded = directory / "fuji-le.dcm", directory / "fuji-jpeg12.dcm"
    dataset.save_as(plain, enforce_file_format=True)
    done = subprocess.run([dicom_tool("dcmcjpeg"), "+ee", str(plain), str(encoded)], env=dcmtk_env(),
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert pydicom.dcmread(encoded, stop_before_pixels=True).file_meta.TransferSyntaxUID == JPEGExtended12Bit
    return encoded


def _with_new_uids(source: Path, target: Path) -> Path:
    """A copy of a real film under new Study, Series and SOP Instance UIDs, its pixel data untouched."""
    dataset = pydicom.dcmread(source)
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        setattr(dataset, keyword, generate_uid())
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.save_as(target, enforce_file_format=True)
    return target
