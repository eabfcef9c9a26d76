"""Hostile peers on 127.0.0.1: huge PDU claims, drip feeders, half-open floods, slow associations."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom import AE

from listener_support import listener_settings, running
from radtrace.dicom_listener.ae import Listener
from radtrace.dicom_listener.dcmtk import echoscu
from radtrace.dicom_listener.refusals import LIVE_S, SERVICES_NOT_OFFERED
from radtrace.store.engine import Store

pytestmark = pytest.mark.integration

ABORT = 0x07


def _connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _closed_within(sock: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """Whether the listener closed ``sock`` within ``seconds``, and what it sent before."""
    sock.settimeout(seconds)
    received = b""
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            chunk = sock.recv(4096)
            if not chunk:
                return True, received
            received += chunk
    except TimeoutError:
        return False, received
    except ConnectionResetError:
        return True, received
    return False, received


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


def test_a_pdu_claiming_4_gib_is_aborted_at_its_header_without_allocating_it(
    tmp_path: Path, store: Store, listener_port: int, sockets: list[socket.socket]
) -> None:
    settings = listener_settings(tmp_path, listener_port)
    with running(settings, store) as listener:
        for pdu_type in (0x01, 0x04):  # an A-ASSOCIATE-RQ, and a P-DATA-TF before any association
            sock = _connect(listener_port)
            sockets.append(sock)
            sock.sendall(struct.pack(">BBL", pdu_type, 0, 0xFFFFFFFF) + b"\x00" * 100)
            closed, answer = _closed_within(sock, 5)
            assert closed
            assert answer[:1] == bytes((ABORT,))  # A-ABORT, then the listener closes
        assert listener.admission.budget.peak < 1024 * 1024
        assert echoscu(listener_port).returncode == 0


def test_drip_feeders_hold_no_slot_and_are_cut_off_at_the_negotiation_deadline(
    tmp_path: Path, store: Store, listener_port: int, sockets: list[socket.socket]
) -> None:
    settings = listener_settings(tmp_path, listener_port, max_associations=1, negotiation_timeout_s=1.5)
    with running(settings, store):
        for _ in range(4):
            sock = _connect(listener_port)
            sock.sendall(b"\x01")  # the first byte of an A-ASSOCIATE-RQ, and nothing more for now
            sockets.append(sock)
        started = time.monotonic()
        assert echoscu(listener_port).returncode == 0  # the only slot is free: drips do not hold it
        assert time.monotonic() - started < 2
        for sock in sockets:
            sock.sendall(b"\x00")  # still dripping: a wall-clock deadline, not an idle timer
        for sock in sockets:
            assert _closed_within(sock, 3)[0]
        assert time.monotonic() - started < 4


def test_half_open_connections_are_limited_per_source(
    tmp_path: Path, store: Store, listener_port: int, sockets: list[socket.socket]
) -> None:
    settings = listener_settings(tmp_path, listener_port, max_half_open_per_source=3)
    with running(settings, store) as listener:
        sockets.extend(_connect(listener_port, "127.0.0.2") for _ in range(3))
        fourth = _connect(listener_port, "127.0.0.2")
        sockets.append(fourth)
        assert _closed_within(fourth, 3)[0]  # over the limit: closed before any PDU
        assert listener.admission.half_open_by_source()["127.0.0.2"] == 3
        assert echoscu(listener_port).returncode == 0  # another source is not affected


def test_an_aborted_association_frees_its_slot_at_once(
    tmp_path: Path, store: Store, listener_port: int, sockets: list[socket.socket]
) -> None:
    settings = listener_settings(tmp_path, listener_port, max_associations=1)
    peer = AE(ae_title="PACS")
    peer.add_requested_context("1.2.840.10008.1.1")
    with running(settings, store) as listener:
        assoc = peer.associate("127.0.0.1", listener_port, ae_title="RADTRACE")
        assert assoc.is_established
        raw = assoc.dul.socket.socket
        assert raw is not None
        raw.sendall(struct.pack(">BBL", 0x04, 0, 8) + b"\xff" * 8)  # a malformed P-DATA-TF: aborted
        deadline = time.monotonic() + 3
        while listener.admission.slots_taken() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert listener.admission.slots_taken() == 0
        started = time.monotonic()
        assert echoscu(listener_port).returncode == 0
        assert time.monotonic() - started < 2
        assoc.abort()


def test_a_pdu_dripped_inside_an_association_is_cut_off(
    tmp_path: Path, store: Store, listener_port: int, sockets: list[socket.socket]
) -> None:
    settings = listener_settings(
        tmp_path, listener_port, max_associations=1, pdu_grace_s=1.0, min_transfer_rate_bytes_s=1000
    )
    peer = AE(ae_title="PACS")
    peer.add_requested_context("1.2.840.10008.1.1")
    with running(settings, store) as listener:
        assoc = peer.associate("127.0.0.1", listener_port, ae_title="RADTRACE")
        assert assoc.is_established
        raw = assoc.dul.socket.socket
        assert raw is not None
        raw.sendall(struct.pack(">BBL", 0x04, 0, 1000) + b"\x00" * 16)  # allowed 1 s + 1 s; 16 bytes come
        started = time.monotonic()
        while listener.admission.slots_taken() and time.monotonic() - started < 6:
            time.sleep(0.05)
        elapsed = time.monotonic() - started
        assert listener.admission.slots_taken() == 0
        assert 1.5 < elapsed < 4
        assert echoscu(listener_port).returncode == 0
        assoc.abort()


def test_refusals_from_one_source_are_audited_once_per_interval_with_a_count(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    settings = listener_settings(tmp_path, listener_port)
    with Listener(settings, store) as listener:
        started = time.monotonic()
        for _ in range(12):
            echoscu(listener_port, calling="STRANGER")
        rows = [e for e in _rejections(store)]
        # the first at once; the rest are counted, their count so far written at most once per LIVE_S
        assert 1 <= len(rows) <= 1 + (time.monotonic() - started) // LIVE_S, rows
        listener.handlers.refusals.flush(force=True)
    rows = _rejections(store)
    assert rows[0]["count"] == 1, rows
    assert sum(row["count"] for row in rows[1:]) == 11, rows  # in one event, or more LIVE_S apart


def test_associations_proposing_only_what_is_not_taken_are_audited_once_per_interval_with_a_count(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    """An admitted caller proposing, association after association, SOP classes and transfer syntaxes the listener
    does not take: before, one instance_rejected row each (200 in 4 s from one source in the hostile-peer session);
    now the first of the interval with the contexts, then the count of the rest, with the distinct contexts the later
    associations proposed (before, those that the first had not proposed were in no event). Contexts of other services
    than storage (C-FIND, C-MOVE) are aggregated the same way under their own reason (ab702e4)."""
    settings = listener_settings(tmp_path, listener_port)
    with Listener(settings, store):
        for n in range(15):
            peer = AE(ae_title="PACS")
            peer.add_requested_context("1.2.840.10008.5.1.4.1.2.2.1")  # Study Root C-FIND: not taken
            peer.add_requested_context("1.2.840.10008.5.1.4.1.1.1.1", ["1.2.840.10008.1.2.4.100"])  # MPEG2: not taken
            if n % 2:  # the later ones also propose C-MOVE, and DX in JPEG XL, neither taken
                peer.add_requested_context("1.2.840.10008.5.1.4.1.2.2.2")
                peer.add_requested_context("1.2.840.10008.5.1.4.1.1.1.1", ["1.2.840.10008.1.2.4.110"])
            peer.add_requested_context("1.2.840.10008.1.1")  # so that the association is established
            assoc = peer.associate("127.0.0.1", listener_port, ae_title="RADTRACE")
            assert assoc.is_established
            assoc.release()
    rejections = _rejections(store, "instance_rejected")
    storage = [r for r in rejections if r["reason"] == "presentation contexts refused at negotiation"]
    services = [r for r in rejections if r["reason"] == SERVICES_NOT_OFFERED]  # C-FIND, C-MOVE: audited apart
    assert len(storage) + len(services) == len(rejections), rejections
    for events, first_results, later_expected in (
        (storage, [4], {("1.2.840.10008.5.1.4.1.1.1.1", "1.2.840.10008.1.2.4.100", 4),
                        ("1.2.840.10008.5.1.4.1.1.1.1", "1.2.840.10008.1.2.4.110", 4)}),
        (services, [3], {("1.2.840.10008.5.1.4.1.2.2.1", None, 3), ("1.2.840.10008.5.1.4.1.2.2.2", None, 3)}),
    ):  # fmt: skip
        first, *rest = events
        assert (first["count"], first["aggregated"], first["refused"]) == (1, False, 1), first
        assert [c["result"] for c in first["contexts"]] == first_results  # PS3.8 Table 9-18: 3 SOP class, 4 syntax
        assert all(r["aggregated"] for r in rest), rest
        assert sum(r["count"] for r in rest) == 14, rest
        later = {(c["sop_class_uid"], c.get("transfer_syntax"), c["result"]) for r in rest for c in r["contexts"]}
        assert later == later_expected, rest


def _rejections(store: Store, event_type: str = "association_rejected") -> list[dict[str, object]]:
    import json

    import sqlalchemy as sa

    with store.engine.connect() as connection:
        query = sa.text("SELECT payload FROM audit_events WHERE event_type = :type ORDER BY seq")
        return [json.loads(row[0]) for row in connection.execute(query, {"type": event_type})]


def _statuses(files: list[Path], port: int) -> list[int | None]:
    from radtrace.dicom_listener.scu import send_files

    return [r.status for r in send_files(files, "127.0.0.1", port, calling_ae="PACS", called_ae="RADTRACE")]


def test_decompression_bombs_and_lying_codestreams_are_refused_at_receive(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    from radtrace.dicom_listener.policy import STATUS_IMAGE_TOO_LARGE, STATUS_PIXEL_MISMATCH
    from radtrace.testing.bombs import j2k_bomb

    settings = listener_settings(tmp_path, listener_port)
    bomb = j2k_bomb(tmp_path / "bomb")  # 65535 x 65535 in the header and the codestream
    liar = j2k_bomb(tmp_path / "liar", size=128, header_matches=False)  # the header says 64 x 64
    honest = j2k_bomb(tmp_path / "honest", size=64)
    with running(settings, store):
        statuses = _statuses([bomb, liar, honest], listener_port)
    assert statuses == [STATUS_IMAGE_TOO_LARGE, STATUS_PIXEL_MISMATCH, 0x0000]
    quarantined = sorted(p.read_text() for p in settings.quarantine_dir.glob("*.reason.txt"))
    assert any("listener.max_image_pixels" in reason for reason in quarantined)


def test_a_data_set_of_another_sop_class_than_its_context_is_refused(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    from pydicom import dcmread
    from pydicom.uid import ComputedRadiographyImageStorage

    from radtrace.dicom_listener.policy import STATUS_SOP_CLASS_MISMATCH
    from radtrace.testing.studies import ImageSpec, make_study, write_study

    settings = listener_settings(tmp_path, listener_port)
    [dx] = write_study(make_study(images=[ImageSpec(modality="DX", rows=64, columns=64)]), tmp_path / "dx")
    ds = dcmread(dx)
    ds.file_meta.MediaStorageSOPClassUID = ComputedRadiographyImageStorage  # offered under CR, a DX inside
    ds.save_as(dx)
    with running(settings, store):
        assert _statuses([dx], listener_port) == [STATUS_SOP_CLASS_MISMATCH]


def test_a_disk_filling_up_mid_transfer_answers_out_of_resources_and_serving_goes_on(
    tmp_path: Path, store: Store, listener_port: int, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import errno

    from radtrace.dicom_listener import transport
    from radtrace.dicom_listener.policy import STATUS_OUT_OF_RESOURCES
    from radtrace.testing.studies import ImageSpec, make_study, write_study

    class FullDisk:
        """The data set file, on a file system with 64 KiB left."""

        def __init__(self, real: object) -> None:
            self.real, self.written = real, 0

        def write(self, chunk: memoryview) -> None:
            if self.written + len(chunk) > 64 * 1024:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.written += len(chunk)
            self.real.write(chunk)  # type: ignore[attr-defined]

        def __getattr__(self, name: str) -> object:
            return getattr(self.real, name)

    partials: list[Path] = []
    original = transport._Stream.__init__

    def fill_up_first(stream: transport._Stream, message: object, hasher: transport._Hasher) -> None:
        original(stream, message, hasher)
        if not partials:
            stream.file = FullDisk(stream.file)
        partials.append(stream.path)

    monkeypatch.setattr(transport._Stream, "__init__", fill_up_first)
    settings = listener_settings(tmp_path, listener_port)
    files = write_study(make_study(images=[ImageSpec(rows=512, columns=512), ImageSpec()]), tmp_path / "study")
    with running(settings, store), caplog.at_level("WARNING"):
        assert _statuses(files, listener_port) == [STATUS_OUT_OF_RESOURCES, 0x0000]
    assert not partials[0].exists()  # the partial file is gone
    assert "spool disk full while receiving an instance" in caplog.text
