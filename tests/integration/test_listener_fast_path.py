"""The listener's data set fast path: the file it writes, and the hash it takes while writing, are what was sent.

Every C-STORE data set goes through :class:`radtrace.dicom_listener.transport.DatasetFastPathDUL`;
these tests fragment data sets into hundreds of small PDUs, from dcmtk's storescu and from
pynetdicom, and check that no hash had to be read back from disk and that each recorded hash is the
spool file's.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pytest

from listener_support import associate, dataset_bytes, listener_settings, rows, running
from radtrace.dicom_listener.dcmtk import storescu
from radtrace.dicom_listener.scu import send_files
from radtrace.dicom_listener.spool import Spool, StagedFile
from radtrace.store.engine import Store
from radtrace.store.models import Instance
from radtrace.testing.studies import ImageSpec, StudySpec, make_study, write_study
from serve_support import wait_until

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("sender", ["storescu", "pynetdicom"])
def test_data_sets_in_many_small_pdus_are_kept_and_hashed_without_reading_them_back(
    tmp_path: Path, store: Store, listener_port: int, monkeypatch: pytest.MonkeyPatch, sender: str
) -> None:
    # A 4 KiB maximum PDU: each 512² image arrives in some 130 PDUs, the command set in its own.
    settings = listener_settings(tmp_path, listener_port, max_pdu_bytes=4096)
    images = [ImageSpec(rows=512, columns=512), ImageSpec(rows=512, columns=640, bits_stored=16)]
    files = write_study(make_study(StudySpec(study_uid="1.2.826.0.1.3680043.8.498.77"), images), tmp_path / "in")
    read_back: list[Path] = []
    seal = Spool._seal

    def counting_seal(spool: Spool, path: Path) -> StagedFile:
        read_back.append(path)
        return seal(spool, path)

    monkeypatch.setattr(Spool, "_seal", counting_seal)
    with running(settings, store):
        if sender == "storescu":
            sent = storescu(files, listener_port)
            assert sent.returncode == 0, sent.stderr
        else:
            results = send_files(files, "127.0.0.1", listener_port, calling_ae="PACS", called_ae="RADTRACE")
            assert [r.status for r in results] == [0x0000] * len(files)
    assert read_back == []  # every hash came from the fast path
    instances = rows(store, Instance)
    assert len(instances) == len(files)
    sources = {dataset_bytes(f) for f in files}
    for instance in instances:
        spooled = settings.spool_dir / instance.path
        data = spooled.read_bytes()
        assert instance.sha256 == hashlib.sha256(data).hexdigest()
        assert instance.size_bytes == len(data)
        assert dataset_bytes(spooled) in sources


def test_a_malformed_p_data_pdu_aborts_the_association_and_the_next_one_is_served(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    settings = listener_settings(tmp_path, listener_port)
    [image] = write_study(make_study(images=[ImageSpec(rows=256, columns=256)]), tmp_path / "in")
    with running(settings, store):
        assoc = associate(image, listener_port)
        # A P-DATA-TF whose one PDV says it is 100 bytes long in a PDU of 10: the fast path leaves it
        # to pynetdicom, which cannot decode it either and aborts.
        malformed = b"\x04\x00" + struct.pack(">L", 10) + struct.pack(">L", 100) + b"\x01\x03abcd"
        assoc.dul.socket.socket.sendall(malformed)  # type: ignore[union-attr]
        wait_until(lambda: assoc.is_aborted, 10, "the listener aborting the association")
        [sent] = send_files([image], "127.0.0.1", listener_port, calling_ae="PACS", called_ae="RADTRACE")
    assert sent.status == 0x0000
    assert len(rows(store, Instance)) == 1
