"""A reading kept from an attempt whose drafts could not be stored is not drafted again once one of its images was
moved to another patient/study or rejected by the PACS.

The listener marks only revisions the worker has claimed or finished (a queued one is read again without the image:
:mod:`radtrace.worker.read_instances`). A revision that read its images and then could not store its drafts (a full
disk) waits QUEUED for its retry, which drafts from the reading kept in the audit log
(:mod:`radtrace.worker.kept_readings`), not from what the revision reads now. Before, a PA film re-sent under
another patient in that wait was still described in the draft, unflagged. Now the kept reading is used only while
every image it read is still read (the same version, same SHA-256); otherwise the revision is read again. Real film
(tests/data/real-cxr) as the reading's image; both stores.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from radtrace.audit.events import Actor, AuditEvent, EventType
from radtrace.audit.recorder import AuditRecorder
from radtrace.store.engine import Store
from radtrace.store.models import RevisionState
from radtrace.worker.claims import Claim
from radtrace.worker.kept_readings import kept_readings
from reassigned_support import insert_instance, insert_study
from reporting_support import reading, real_film

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 6, 7, 0, tzinfo=UTC)
PA, LATERAL = "1.2.826.0.1.3680043.8.498.91", "1.2.826.0.1.3680043.8.498.92"


def _sha256(sop: str, version: int) -> str:
    return f"{sop}-{version}".ljust(64, "0")[:64]


def test_a_kept_reading_of_an_image_moved_to_another_patient_is_read_again_not_drafted(store: Store) -> None:
    with store.engine.begin() as connection:
        study_a, revision_a = insert_study(
            connection, "1.2.826.0.1.3680043.8.498.1", RevisionState.QUEUED, NOW, attempts=1
        )
        insert_instance(connection, study_a, revision_a, PA, 1, NOW, sha256=_sha256(PA, 1))
        insert_instance(connection, study_a, revision_a, LATERAL, 1, NOW, sha256=_sha256(LATERAL, 1))
    kept = reading([real_film("fuji-cr-chest-pa-mono1-10bit-no-filemeta.dcm")])
    inputs = [{"sop_instance_uid": sop, "sha256": _sha256(sop, 1), "role": "frontal", "view": "PA"}
              for sop in (PA, LATERAL)]  # fmt: skip
    recorder = AuditRecorder(store)
    for kind, payload in (
        (EventType.INFERENCE_COMPLETED, {"revision": 1, "reading": json.loads(kept.to_json()), "inputs": inputs}),
        (EventType.REPORT_FAILED, {"revision": 1, "reading_kept": True}),  # its drafts not stored: a full disk
    ):
        recorder.record(AuditEvent(kind, Actor(), study_uid="1.2.826.0.1.3680043.8.498.1", payload=payload))
    claim = Claim(revision_a, "1.2.826.0.1.3680043.8.498.1", None, 1, 2, 0, study_a)
    assert kept_readings(store, [claim]) == {revision_a: kept}  # its images unchanged: drafted again, not read
    with store.engine.begin() as connection:  # the PACS re-sends the PA film under patient B's study
        study_b, revision_b = insert_study(
            connection, "1.2.826.0.1.3680043.8.498.2", RevisionState.QUEUED, NOW, attempts=1
        )
        insert_instance(connection, study_b, revision_b, PA, 2, NOW, sha256=_sha256(PA, 2))
    assert kept_readings(store, [claim]) == {}  # read again: without the PA film, now B's
