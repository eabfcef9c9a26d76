"""A data set encoded Explicit VR Little Endian sent under an Implicit VR Little Endian presentation context, and
the reverse.

Before: answered Success and stored as received, its file meta claiming the other encoding. pydicom (our worker)
read it by detecting the VRs, but dcmtk's dcmdump stopped at the first element ('larger than remaining bytes in
file') and dicom3tools' dciodvfy found no SOP Class: any archive or viewer built on them could not open the study
once exported (Orthanc: 'Bad file format'). Now it is accepted, stored with a file meta naming the encoding actually
used, and the instance carries a deviation on (0002,0010) saying so (its row and instance_received). A data set
encoded as its context says is stored as before.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import warnings
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from listener_support import audit_payloads, dataset_bytes, listener_settings, rows, running
from orthanc_support import ORTHANC, running_orthanc
from radtrace.model.study import load_study_images
from radtrace.store.engine import Store
from radtrace.store.models import Instance
from radtrace.testing.abuse import store_files

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("dcmdump") is None or shutil.which("dciodvfy") is None, reason="dcmtk, dicom3tools"
    ),
]

NIH = Path(__file__).resolve().parents[1] / "data" / "real-cxr" / "nih-cxr14-00000001_000-dx-frontal-mono2-8bit.dcm"


def _films(folder: Path) -> tuple[Path, Path, Path]:
    """The NIH film under new UIDs: encoded Explicit VR with a file meta claiming Implicit VR (what a modality that
    encodes Explicit VR whatever was agreed sends), the same encoded Explicit VR and labelled so (what readers
    should see), and another really Implicit VR."""
    ds = pydicom.dcmread(NIH)
    assert ds.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    implicit = folder / "implicit.dcm"
    ds.save_as(implicit, enforce_file_format=True)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    explicit = folder / "explicit.dcm"
    ds.save_as(explicit, enforce_file_format=True)
    raw = bytearray(explicit.read_bytes())
    at = raw.index(b"1.2.840.10008.1.2.1\x00")
    raw[at : at + 20] = b"1.2.840.10008.1.2\x00\x00\x00"  # the same 20 bytes: UI padded with NUL
    claimed = folder / "claimed-implicit.dcm"
    claimed.write_bytes(bytes(raw))
    return claimed, explicit, implicit


@pytest.mark.skipif(shutil.which(ORTHANC) is None, reason="Orthanc is not installed")
def test_explicit_vr_under_an_implicit_context_is_stored_as_what_it_is_and_every_reader_reads_it(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    claimed, explicit, implicit = _films(tmp_path)
    bad = _run("dcmdump", claimed)  # the problem, as sent
    assert "larger" in bad.stderr, bad.stderr
    settings = listener_settings(tmp_path, listener_port)
    with running(settings, store):
        statuses = store_files([claimed, implicit], listener_port)
    assert list(statuses.values()) == [0x0000, 0x0000]

    by_sop = {i.sop_instance_uid: i for i in rows(store, Instance)}
    spooled = {p.name: p for p in settings.spool_dir.rglob("*.dcm") if ".incoming" not in p.parts}
    sop_of = {path: _sop(path) for path in (claimed, implicit)}
    stored = {path: next(p for p in spooled.values() if _sop(p) == sop_of[path]) for path in (claimed, implicit)}

    # dcmtk and dicom3tools read the stored file as they read the correctly labelled one
    dump = _run("dcmdump", stored[claimed])
    assert dump.returncode == 0, dump.stderr
    assert "E:" not in dump.stderr, dump.stderr
    assert "(0002,0010) UI =LittleEndianExplicit" in dump.stdout, dump.stdout[:2000]
    assert "(0010,1010) AS [58]" in dump.stdout, dump.stdout[:3000]
    verify = [_run("dciodvfy", p) for p in (stored[claimed], explicit)]
    assert verify[0].stderr.replace(str(stored[claimed]), "") == verify[1].stderr.replace(str(explicit), "")
    assert dataset_bytes(stored[claimed]) == dataset_bytes(explicit)  # the data set itself untouched
    # Orthanc (DCMTK inside) takes it as it is exported to an archive, with its header read right
    with running_orthanc(tmp_path / "orthanc") as orthanc:
        uploaded = httpx.post(f"{orthanc.url}/instances", content=stored[claimed].read_bytes(), timeout=30)
        assert uploaded.status_code == 200, uploaded.text
        tags = orthanc.get(f"/instances/{uploaded.json()['ID']}/simplified-tags")
    assert isinstance(tags, dict)
    assert (tags["PatientAge"], tags["Rows"], tags["SOPInstanceUID"]) == ("58", "1024", sop_of[claimed])
    # the worker reads it
    [image] = load_study_images(stored[claimed])
    assert image.dataset.Rows == 1024
    # the instance says what was done; an Implicit VR one is stored as it came, with no such deviation
    relabelled = by_sop[sop_of[claimed]]
    assert relabelled.transfer_syntax_uid == ExplicitVRLittleEndian
    assert dataset_bytes(stored[implicit]) == dataset_bytes(implicit)
    assert by_sop[sop_of[implicit]].transfer_syntax_uid == ImplicitVRLittleEndian
    received = {p["sop_instance_uid"]: p for p in map(json.loads, audit_payloads(store, "instance_received"))}
    [deviation] = [d for d in received[sop_of[claimed]].get("deviations", []) if d["tag"] == "(0002,0010)"]
    assert "Explicit VR Little Endian under an Implicit VR Little Endian presentation context" in deviation["problem"]
    assert not [d for d in received[sop_of[implicit]].get("deviations", []) if d["tag"] == "(0002,0010)"]


def _sop(path: Path) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's, on the file as sent: "Expected implicit VR, but found explicit"
        return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def _claiming(source: Path, syntax: str, target: Path) -> Path:
    """``source``'s bytes after a file meta claiming ``syntax``: its data set as it is, labelled otherwise."""
    data = source.read_bytes()
    start = 132 + 12 + int.from_bytes(data[140:144], "little")
    meta = pydicom.dcmread(source, stop_before_pixels=True).file_meta
    meta.TransferSyntaxUID = syntax
    written = DicomBytesIO()
    written.is_little_endian, written.is_implicit_VR = True, False
    write_file_meta_info(written, meta, enforce_standard=True)
    target.write_bytes(data[:132] + written.getvalue() + data[start:])
    return target


def test_implicit_vr_under_an_explicit_context_is_stored_as_implicit_vr(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    """The reverse: Implicit VR bytes under an Explicit VR Little Endian context. dcmtk read the first element's
    length as its VR and failed alike; now stored as Implicit VR Little Endian, with the deviation."""
    _, _, implicit = _films(tmp_path)
    claimed = _claiming(implicit, ExplicitVRLittleEndian, tmp_path / "claimed-explicit.dcm")
    bad = _run("dcmdump", claimed)
    assert "E:" in bad.stderr, bad.stderr  # the problem, as sent
    settings = listener_settings(tmp_path, listener_port)
    with running(settings, store):
        assert list(store_files([claimed], listener_port).values()) == [0x0000]
    [stored] = [p for p in settings.spool_dir.rglob("*.dcm") if ".incoming" not in p.parts]
    dump = _run("dcmdump", stored)
    assert "E:" not in dump.stderr, dump.stderr
    assert "(0002,0010) UI =LittleEndianImplicit" in dump.stdout, dump.stdout[:2000]
    assert "(0010,1010) AS [58]" in dump.stdout, dump.stdout[:3000]
    assert dataset_bytes(stored) == dataset_bytes(implicit)
    [image] = load_study_images(stored)
    assert image.dataset.Rows == 1024
    [instance] = rows(store, Instance)
    assert instance.transfer_syntax_uid == ImplicitVRLittleEndian
    [received] = map(json.loads, audit_payloads(store, "instance_received"))
    [deviation] = [d for d in received.get("deviations", []) if d["tag"] == "(0002,0010)"]
    assert deviation["problem"] == (
        "data set encoded Implicit VR Little Endian under an Explicit VR Little Endian presentation context; "
        "stored as Implicit VR Little Endian"
    )


def _run(tool: str, path: Path) -> subprocess.CompletedProcess[str]:
    """dcmtk's or dicom3tools' reading of ``path`` (bytes a misread file prints are not all UTF-8)."""
    return subprocess.run([tool, str(path)], capture_output=True, text=True, errors="replace", check=False)
