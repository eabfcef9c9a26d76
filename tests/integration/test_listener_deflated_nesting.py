"""A deflated instance whose harm is inside a sequence, through a running listener (C-STORE over 127.0.0.1).

Films: the NIH real film deflated with a shape written into it (radtrace.testing.deflate_abuse). Before, the
listener accepted 200,000 empty sequence items (+140 MB and 7.7 s for its header read alone, bench/deflate_nested.py)
and answered a View Code Sequence of defined length carrying a private value over 4 KiB with 0x0110 'internal error
(AttributeError)'. Now the bomb is refused 0xC210 with a comment naming the sequence, quarantined and audited; the
film with 64 MiB of private zeros in its View Code Sequence item is stored, and the worker reads its view code.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pydicom
import pytest

from listener_support import audit_payloads, listener_settings, rows, running
from radtrace.dicom_deflated import MAX_ITEMS
from radtrace.dicom_listener.policy import STATUS_CANNOT_UNDERSTAND
from radtrace.dicom_listener.scu import send_files
from radtrace.model.study import spooled_as_received
from radtrace.store.engine import Store
from radtrace.store.models import Instance
from radtrace.testing.deflate_abuse import VIEW_CODE, shape_film

pytestmark = pytest.mark.integration


def test_a_sequence_item_bomb_is_refused_naming_the_sequence_and_a_large_value_in_an_item_is_stored(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    bomb = shape_film("items-undefined", MAX_ITEMS * 4, tmp_path / "bomb.dcm", fresh_uids=True)
    deep = shape_film("deep", 64, tmp_path / "deep.dcm", fresh_uids=True)
    undefined = shape_film("huge-in-item-undefined", 64 << 20, tmp_path / "undefined.dcm", fresh_uids=True)
    defined = shape_film("huge-in-item-defined", 8 << 10, tmp_path / "defined.dcm", fresh_uids=True)
    files = [bomb, deep, undefined, defined]
    settings = listener_settings(tmp_path, listener_port)
    with running(settings, store):
        results = send_files(files, "127.0.0.1", listener_port, calling_ae="PACS", called_ae="RADTRACE")
    statuses = [(r.status, r.note) for r in results]
    assert [r.status for r in results] == [STATUS_CANNOT_UNDERSTAND, STATUS_CANNOT_UNDERSTAND, 0, 0], statuses
    assert (results[0].note or "").startswith(f"(0009,1012) private: more than {MAX_ITEMS} sequence items"), statuses
    assert (results[1].note or "").startswith("(0009,1012) private: sequences nested more than 32 deep"), statuses
    reasons = sorted(json.loads(p)["reason"] for p in audit_payloads(store, "instance_quarantined"))
    assert len(reasons) == 2, reasons
    assert reasons[0].startswith(f"(0009,1012) private: more than {MAX_ITEMS} sequence items"), reasons
    assert reasons[1].startswith("(0009,1012) private: sequences nested more than 32 deep"), reasons
    stored = {row.sop_instance_uid: row for row in rows(store, Instance)}
    for path in (undefined, defined):
        row = stored[str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)]
        spooled = settings.spool_dir / row.path
        assert hashlib.sha256(spooled.read_bytes()).hexdigest() == row.sha256
        image = spooled_as_received(spooled, row.sha256, settings.listener)  # as the worker reads it
        assert image.dataset.ViewCodeSequence[0].CodeValue == VIEW_CODE[0]
    assert len(stored) == 2
