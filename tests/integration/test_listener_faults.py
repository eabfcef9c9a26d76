"""Bad input and faults: duplicates, new versions, unparsable data, refused callers, low disk, races."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydicom import dcmread

from listener_support import associate, audit_payloads, audit_types, listener_settings, rows, running
from radtrace.dicom_listener.dcmtk import echoscu, storescu
from radtrace.dicom_listener.policy import (
    STATUS_CANNOT_UNDERSTAND,
    STATUS_MISSING_IDENTIFIERS,
    STATUS_OUT_OF_RESOURCES,
)
from radtrace.dicom_listener.scu import send_files
from radtrace.store.engine import Store
from radtrace.store.models import Instance, Revision, Study
from radtrace.testing.broken import BrokenKind, broken_instance
from radtrace.testing.studies import ImageSpec, StudySpec, make_image, make_study, write_study

pytestmark = pytest.mark.integration


def test_same_instance_twice_is_a_duplicate_and_changed_bytes_a_new_version(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    settings = listener_settings(tmp_path, listener_port)
    [original] = write_study(make_study(images=[ImageSpec()]), tmp_path / "v1")
    changed = dcmread(original)
    changed.ImageComments = "re-sent after a correction"
    changed_path = tmp_path / "v2.dcm"
    changed.save_as(changed_path)
    with running(settings, store):
        for files in ([original], [original], [changed_path]):
            sent = storescu(files, listener_port)
            assert sent.returncode == 0, sent.stderr
    versions = sorted((i.version, Path(i.path).name) for i in rows(store, Instance))
    sop = changed.SOPInstanceUID
    assert versions == [(1, f"{sop}.dcm"), (2, f"{sop}.v2.dcm")]
    assert (settings.spool_dir / changed.StudyInstanceUID / f"{sop}.v2.dcm").is_file()
    assert audit_types(store).count("instance_duplicate") == 1
    assert audit_types(store).count("instance_new_version") == 1


@pytest.mark.parametrize(
    ("kind", "status"),
    [
        (BrokenKind.MISSING_STUDY_UID, STATUS_MISSING_IDENTIFIERS),
        (BrokenKind.TRUNCATED_PIXEL_DATA, STATUS_CANNOT_UNDERSTAND),
        (BrokenKind.WRONG_VR, STATUS_CANNOT_UNDERSTAND),
    ],
)
def test_unparsable_data_is_refused_with_a_failure_status_and_quarantined(
    tmp_path: Path, store: Store, listener_port: int, kind: BrokenKind, status: int
) -> None:
    settings = listener_settings(tmp_path, listener_port)
    path = tmp_path / "broken.dcm"
    path.write_bytes(broken_instance(kind))
    with running(settings, store):
        # Our SCU sends the file's bytes unchanged (storescu refuses to read a truncated file).
        [result] = send_files([path], "127.0.0.1", listener_port, calling_ae="PACS", called_ae="RADTRACE")
    assert result.status == status
    assert rows(store, Instance) == []
    quarantined = sorted(p.name for p in settings.quarantine_dir.iterdir())
    assert len(quarantined) == 2
    assert quarantined[1].endswith(".reason.txt")
    assert not [p for p in settings.spool_dir.rglob("*") if p.is_file()]
    assert audit_types(store)[1:-1] == ["instance_quarantined"]


def test_refused_callers_get_the_right_rejection_and_are_audited(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    settings = listener_settings(
        tmp_path, listener_port, allowed_callers=[{"ae_title": "PACS"}, {"ae_title": "FARAWAY", "host": "10.0.0.0/8"}]
    )
    with running(settings, store):
        unknown = echoscu(listener_port, calling="STRANGER")
        wrong_called = echoscu(listener_port, called="SOMEONE_ELSE")
        wrong_network = echoscu(listener_port, calling="FARAWAY")
        allowed = echoscu(listener_port)
    assert "Calling AE Title Not Recognized" in unknown.stderr
    assert "Called AE Title Not Recognized" in wrong_called.stderr
    assert "Calling AE Title Not Recognized" in wrong_network.stderr
    assert allowed.returncode == 0
    with store.engine.connect() as connection:
        rejected = connection.execute(
            sa.text("SELECT actor_ae, payload FROM audit_events WHERE event_type = 'association_rejected' ORDER BY seq")
        ).all()
    # FARAWAY is refused from the same source for the same reason as STRANGER within the interval:
    # it is counted, and its count written when the listener stops, not audited row by row.
    assert [row[0] for row in rejected] == ["STRANGER", "PACS", None]
    assert "called AE title is not ours" in rejected[1][1]
    aggregated = json.loads(rejected[2][1])
    assert (aggregated["reason"], aggregated["count"]) == ("calling AE title not allowed", 1)
    assert aggregated["aggregated"] is True


def test_non_chest_classes_can_be_refused_at_negotiation(tmp_path: Path, store: Store, listener_port: int) -> None:
    settings = listener_settings(tmp_path, listener_port, non_chest_policy="reject")
    path = tmp_path / "ct.dcm"
    path.write_bytes(broken_instance(BrokenKind.CT_IMAGE))
    with running(settings, store):
        sent = storescu([path], listener_port)
    assert sent.returncode != 0
    assert "No presentation context" in sent.stderr or "no acceptable presentation context" in sent.stderr.lower()
    assert rows(store, Instance) == []
    with store.engine.connect() as connection:
        [payload] = connection.execute(
            sa.text("SELECT payload FROM audit_events WHERE event_type = 'instance_rejected'")
        ).scalars()
    assert '"result":3' in payload  # abstract syntax (CT Image Storage) not supported


def test_low_disk_answers_out_of_resources_refuses_associations_and_recovers(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    settings = listener_settings(tmp_path, listener_port, min_free_bytes=1000)
    free = [10_000, 0]  # the association is admitted, then the disk fills before the C-STORE
    [image] = write_study(make_study(images=[ImageSpec()]), tmp_path / "in")
    with running(settings, store, free_bytes=lambda: free.pop(0) if len(free) > 1 else free[0]):
        [result] = send_files([image], "127.0.0.1", listener_port, calling_ae="PACS", called_ae="RADTRACE")
        assert result.status == STATUS_OUT_OF_RESOURCES
        refused = echoscu(listener_port)
        assert "Temporary congestion" in refused.stderr or "Rejected Transient" in refused.stderr
        free[0] = 10_000  # space came back
        [retried] = send_files([image], "127.0.0.1", listener_port, calling_ae="PACS", called_ae="RADTRACE")
    assert retried.status == 0x0000
    assert len(rows(store, Instance)) == 1
    assert not list((settings.spool_dir / ".incoming").iterdir())
    assert {"instance_rejected", "association_rejected", "instance_received"} <= set(audit_types(store))
    with store.engine.connect() as connection:
        [payload] = connection.execute(
            sa.text("SELECT payload FROM audit_events WHERE event_type = 'instance_rejected'")
        ).scalars()
    # the port it came in on: radtrace status groups refusals by port (it said "port not recorded" before)
    assert (json.loads(payload)["reason"], json.loads(payload)["port"]) == ("spool disk nearly full", listener_port)


def test_two_associations_sending_one_study_at_once(tmp_path: Path, store: Store, listener_port: int) -> None:
    settings = listener_settings(tmp_path, listener_port)
    spec = StudySpec(study_uid="1.2.826.0.1.3680043.8.498.77")
    files = write_study([make_image(spec, ImageSpec(), 1, n) for n in range(1, 7)], tmp_path / "in")
    halves = [files[:4], files[2:]]  # two instances go both ways
    results: list[int] = []
    with running(settings, store):
        threads = [
            threading.Thread(target=lambda f=f: results.append(storescu(f, listener_port).returncode)) for f in halves
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert results == [0, 0]
    assert len(rows(store, Study)) == 1
    assert len(rows(store, Revision)) == 1
    assert len(rows(store, Instance)) == 6
    assert audit_types(store).count("instance_duplicate") == 2


def test_an_unsupported_transfer_syntax_is_refused_at_negotiation(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    from pydicom.uid import DigitalXRayImageStorageForPresentation
    from pynetdicom import AE

    settings = listener_settings(tmp_path, listener_port)
    peer = AE(ae_title="PACS")
    peer.add_requested_context(DigitalXRayImageStorageForPresentation, ["1.2.840.10008.1.2.4.92"])  # JPEG 2000 Part 2
    peer.add_requested_context("1.2.840.10008.1.1")
    with running(settings, store):
        assoc = peer.associate("127.0.0.1", listener_port, ae_title="RADTRACE")
        try:
            assert assoc.is_established
            assert [cx.abstract_syntax for cx in assoc.accepted_contexts] == ["1.2.840.10008.1.1"]
            assert [cx.result for cx in assoc.rejected_contexts] == [4]  # transfer syntaxes not supported
        finally:
            assoc.release()


def test_a_transfer_cut_off_midway_leaves_nothing_visible(tmp_path: Path, store: Store, listener_port: int) -> None:
    from pynetdicom import _config
    from pynetdicom.pdu_primitives import P_DATA

    settings = listener_settings(tmp_path, listener_port, max_pdu_bytes=16384)
    [image] = write_study(make_study(images=[ImageSpec(rows=1024, columns=1024)]), tmp_path / "in")
    with running(settings, store):
        assoc = associate(image, listener_port)
        send_pdu = assoc.dul.send_pdu
        sent = [0]

        def cut_after_some_data(primitive: object) -> None:
            send_pdu(primitive)  # type: ignore[arg-type]
            if isinstance(primitive, P_DATA):
                sent[0] += 1
                if sent[0] == 20:  # the sender's host dies mid-dataset: the connection just ends
                    assoc.dul.socket.socket.shutdown(2)  # type: ignore[union-attr]

        assoc.dul.send_pdu = cut_after_some_data  # type: ignore[method-assign]
        previous = _config.STORE_SEND_CHUNKED_DATASET
        _config.STORE_SEND_CHUNKED_DATASET = True
        try:
            assoc.send_c_store(image)
        finally:
            _config.STORE_SEND_CHUNKED_DATASET = previous
            assoc.abort()
            raw = getattr(assoc.dul.socket, "socket", None)
            if raw is not None:  # pynetdicom leaves a reset socket open
                raw.close()
        assert sent[0] >= 20
        [retried] = send_files([image], "127.0.0.1", listener_port, calling_ae="PACS", called_ae="RADTRACE")
    assert retried.status == 0x0000
    [instance] = rows(store, Instance)
    assert instance.version == 1
    spooled = [p for p in settings.spool_dir.rglob("*") if p.is_file()]
    assert spooled == [settings.spool_dir / instance.path]
    assert audit_types(store).count("instance_received") == 1


def test_associations_beyond_the_maximum_are_refused_for_now(tmp_path: Path, store: Store, listener_port: int) -> None:
    from pynetdicom import AE

    settings = listener_settings(tmp_path, listener_port, max_associations=1)
    holder = AE(ae_title="PACS")
    holder.add_requested_context("1.2.840.10008.1.1")
    with running(settings, store):
        held = holder.associate("127.0.0.1", listener_port, ae_title="RADTRACE")
        try:
            assert held.is_established
            refused = echoscu(listener_port)
        finally:
            held.release()
        assert "Reason: Local Limit Exceeded" in refused.stderr
        for _ in range(20):  # a slot is free again once the held association's thread has ended
            if echoscu(listener_port).returncode == 0:
                break
            time.sleep(0.1)
        else:
            pytest.fail("no association admitted after the held one was released")
    assert "too many concurrent associations" in str(audit_payloads(store, "association_rejected"))
