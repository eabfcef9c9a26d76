"""Real films re-encoded the way PACS send them, through a running listener (C-STORE over 127.0.0.1).

Each file is derived from a film in tests/data/real-cxr with dcmtk (dcmconv, dcmcjpeg, dcmcjpls, dcmcrle), as a
PACS transcodes before sending. Every transfer syntax the listener negotiates is answered 0x0000 and the stored
file's hash is the one its row records, a 12-bit JPEG Extended film included (radtrace's GDCM plugin decodes it:
tests/integration/test_decoders_jpeg12.py). Where no decoder could read that film, it would be refused at receive
with a status whose comment names the Pixel Data element, quarantined and audited, instead of being accepted and
failing the study later (found by the real-input exploration).
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import struct
import subprocess
import tracemalloc
import zlib
from pathlib import Path

import pydicom
import pytest
from pydicom.filebase import DicomFileLike
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import generate_uid

from listener_support import audit_payloads, listener_settings, rows, running
from radtrace.dicom_listener.headers import read_header
from radtrace.dicom_listener.pixel_budget import ImageTooLargeError, check_file
from radtrace.dicom_listener.policy import STATUS_CANNOT_UNDERSTAND, STATUS_IMAGE_TOO_LARGE
from radtrace.dicom_listener.scu import send_files
from radtrace.errors import DicomInputError
from radtrace.store.engine import Store
from radtrace.store.models import Instance
from tests_support import as_part10

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("dcmcjpeg") is None, reason="dcmtk is not installed"),
]

REAL = Path(__file__).resolve().parents[1] / "data" / "real-cxr"
FUJI = REAL / "fuji-cr-chest-pa-mono1-10bit-no-filemeta.dcm"  # 10 bit, no File Meta: made Part 10 first
NIH = REAL / "nih-cxr14-00000001_000-dx-frontal-mono2-8bit.dcm"

#: dcmtk tool and options per transfer syntax a PACS sends.
ENCODINGS = {
    "explicit-le": ("dcmconv", "+te"),
    "implicit-le": ("dcmconv", "+ti"),
    "deflate": ("dcmconv", "+td"),
    "jpeg-lossless-sv1": ("dcmcjpeg", "+e1"),
    "jpeg-lossless-sv1-4kb-fragments": ("dcmcjpeg", "+e1", "+fs", "4"),  # a frame over 32 fragments
    "jpeg-lossless-p14": ("dcmcjpeg", "+el"),
    "jpeg-ls-lossless": ("dcmcjpls", "+el"),
    "jpeg-ls-near": ("dcmcjpls", "+en"),
    "rle": ("dcmcrle",),
}


def _part10(source: Path, target: Path) -> Path:
    """The film as a Part 10 file under new UIDs (the Fuji film has no File Meta)."""
    ds = pydicom.dcmread(source, force=True)
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        setattr(ds, keyword, generate_uid())
    as_part10(ds, syntax=None).save_as(target, enforce_file_format=True)
    return target


def _encoded(source: Path, folder: Path, name: str, *command: str) -> Path:
    base = _part10(source, folder / f"{name}.base.dcm")
    target = folder / f"{name}.dcm"
    subprocess.run([*command, str(base), str(target)], check=True, capture_output=True, timeout=60)
    return target


def test_every_transfer_syntax_a_pacs_sends_of_a_real_film_is_stored_as_sent(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    files = [_encoded(FUJI, tmp_path, name, *command) for name, command in ENCODINGS.items()]
    files.append(_encoded(NIH, tmp_path, "jpeg-baseline-8bit", "dcmcjpeg", "+eb"))
    settings = listener_settings(tmp_path, listener_port)
    with running(settings, store):
        results = send_files(files, "127.0.0.1", listener_port, calling_ae="PACS", called_ae="RADTRACE")
    assert [r.status for r in results] == [0x0000] * len(files), [(r.path.name, r.status, r.note) for r in results]
    stored = {row.sop_instance_uid: row for row in rows(store, Instance)}
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        row = stored[str(ds.SOPInstanceUID)]
        assert row.transfer_syntax_uid == str(ds.file_meta.TransferSyntaxUID)
        spooled = (settings.spool_dir / row.path).read_bytes()
        assert hashlib.sha256(spooled).hexdigest() == row.sha256


def test_a_12_bit_jpeg_extended_film_is_accepted_as_sent(tmp_path: Path, store: Store, listener_port: int) -> None:
    twelve_bit = _encoded(FUJI, tmp_path, "jpeg-extended-12bit", "dcmcjpeg", "+ee")
    assert pydicom.dcmread(twelve_bit).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.51"
    settings = listener_settings(tmp_path, listener_port)
    with running(settings, store):
        results = send_files([twelve_bit], "127.0.0.1", listener_port, calling_ae="PACS", called_ae="RADTRACE")
    assert [r.status for r in results] == [0x0000], [(r.status, r.note) for r in results]
    [row] = rows(store, Instance)
    spooled = (settings.spool_dir / row.path).read_bytes()
    assert hashlib.sha256(spooled).hexdigest() == row.sha256
    assert pydicom.dcmread(io.BytesIO(spooled)).PixelData == pydicom.dcmread(twelve_bit).PixelData


def test_a_12_bit_jpeg_extended_film_no_decoder_here_can_read_is_refused_naming_pixel_data(
    tmp_path: Path, store: Store, listener_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("radtrace.dicom_listener.pixel_budget.decodes_12_bit", lambda: False)  # GDCM missing
    twelve_bit = _encoded(FUJI, tmp_path, "jpeg-extended-12bit", "dcmcjpeg", "+ee")
    eight_bit = _encoded(NIH, tmp_path, "jpeg-extended-8bit", "dcmcjpeg", "+ee")  # 8-bit process 2/4: decodable
    settings = listener_settings(tmp_path, listener_port)
    with running(settings, store):
        results = send_files(
            [twelve_bit, eight_bit], "127.0.0.1", listener_port, calling_ae="PACS", called_ae="RADTRACE"
        )
    assert [r.status for r in results] == [STATUS_CANNOT_UNDERSTAND, 0x0000], [(r.status, r.note) for r in results]
    assert (results[0].note or "").startswith("(7FE0,0010) Pixel Data: 12-bit JPEG")
    [quarantined] = [json.loads(p) for p in audit_payloads(store, "instance_quarantined")]
    assert "12-bit JPEG" in quarantined["reason"]
    assert len(rows(store, Instance)) == 1  # only the 8-bit film was recorded


def _deflate_bomb(source: Path, target: Path, inflated_bytes: int) -> Path:
    """The film's header, deflated (1.2.840.10008.1.2.1.99), with a Pixel Data of ``inflated_bytes`` zeros: a file
    of a few hundred KiB that inflates to that size. Rows and Columns stay the film's, so nothing looks too large."""
    ds = pydicom.dcmread(_part10(source, target.with_suffix(".base.dcm")))
    del ds.PixelData
    body = io.BytesIO()
    writer = DicomFileLike(body)
    writer.is_little_endian, writer.is_implicit_VR = True, False
    write_dataset(writer, ds)
    head = body.getvalue() + struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OW", 0, inflated_bytes)
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [deflater.compress(head)]
    zeros = b"\x00" * (1 << 20)
    parts.extend(deflater.compress(zeros) for _ in range(inflated_bytes >> 20))
    parts.append(deflater.flush())
    meta = io.BytesIO()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    meta_writer = DicomFileLike(meta)
    write_file_meta_info(meta_writer, ds.file_meta)
    target.write_bytes(b"\x00" * 128 + b"DICM" + meta.getvalue() + b"".join(parts))
    return target


def test_a_deflated_data_set_that_inflates_beyond_the_pixel_budget_is_refused_without_inflating_it(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    settings = listener_settings(tmp_path, listener_port, max_image_pixels=1_000_000)  # inflates to at most ~68 MiB
    bomb = _deflate_bomb(FUJI, tmp_path / "bomb.dcm", 256 << 20)
    assert bomb.stat().st_size < 1 << 20  # < 1 MiB on the wire, 256 MiB inflated
    honest = _encoded(FUJI, tmp_path, "deflate", "dcmconv", "+td")
    tracemalloc.start()
    try:
        with pytest.raises(DicomInputError, match=r"^\(0002,0010\) Transfer Syntax UID: deflated data set inflates"):
            read_header(bomb, max_inflated_bytes=64 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, peak  # counted as it streams, never held
    with running(settings, store):
        results = send_files([bomb, honest], "127.0.0.1", listener_port, calling_ae="PACS", called_ae="RADTRACE")
    assert [r.status for r in results] == [STATUS_IMAGE_TOO_LARGE, 0x0000], [(r.status, r.note) for r in results]
    assert results[0].note.startswith("(0002,0010) Transfer Syntax UID")
    [quarantined] = [json.loads(p) for p in audit_payloads(store, "instance_quarantined")]
    assert "inflates" in quarantined["reason"]


def test_an_instance_far_larger_than_its_image_needs_is_refused_before_anything_reads_it(tmp_path: Path) -> None:
    film = pydicom.dcmread(_part10(FUJI, tmp_path / "film.dcm"))
    film.PixelData = bytes(film.PixelData) + b"\x00" * (80 << 20)  # 80 MiB of trailing bytes on a 440 x 440 film
    padded = tmp_path / "padded.dcm"
    film.save_as(padded, enforce_file_format=True)
    with pytest.raises(ImageTooLargeError, match=r"^\(7FE0,0010\) Pixel Data: the instance is \d+ bytes"):
        check_file(padded, 1_000_000)  # an image of 10^6 samples needs at most 4 MB: 68 MiB allowed
    check_file(padded, 50_000_000)  # the default budget allows it; the worker reads the declared frame
