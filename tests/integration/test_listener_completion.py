"""Study completion with a real listener: settle, queue or skip, next revision, timers rebuilt on restart."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from listener_support import audit_types, listener_settings, rows, running
from radtrace.dicom_listener.dcmtk import storescu
from radtrace.store.engine import Store
from radtrace.store.models import Revision, RevisionState
from radtrace.testing.broken import BrokenKind, broken_instance
from radtrace.testing.studies import ImageSpec, StudySpec, make_image, write_study

pytestmark = pytest.mark.integration

SETTLE_S = 0.6


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("condition not met in time")
        time.sleep(0.05)


def states(store: Store) -> list[tuple[int, RevisionState, str | None]]:
    return sorted((r.number, r.state, r.reason) for r in rows(store, Revision))


def test_a_settled_study_is_queued_and_later_instances_open_the_next_revision(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    settings = listener_settings(tmp_path, listener_port, settle_seconds=SETTLE_S)
    spec = StudySpec(study_uid="1.2.826.0.1.3680043.8.498.5")
    first = write_study([make_image(spec, ImageSpec(), 1, 1)], tmp_path / "a")
    late = write_study([make_image(spec, ImageSpec(view="LL"), 1, 2)], tmp_path / "b")
    with running(settings, store):
        assert storescu(first, listener_port).returncode == 0
        assert states(store) == [(1, RevisionState.RECEIVING, None)]
        wait_for(lambda: states(store) == [(1, RevisionState.QUEUED, None)])
        assert storescu(late, listener_port).returncode == 0
        wait_for(lambda: states(store) == [(1, RevisionState.QUEUED, None), (2, RevisionState.QUEUED, None)])
    assert audit_types(store).count("study_queued") == 2


def test_a_misrouted_knee_is_stored_and_skipped_with_a_reason(tmp_path: Path, store: Store, listener_port: int) -> None:
    settings = listener_settings(tmp_path, listener_port, settle_seconds=SETTLE_S)
    path = tmp_path / "knee.dcm"
    path.write_bytes(broken_instance(BrokenKind.NON_CHEST_BODY_PART))
    with running(settings, store):
        assert storescu([path], listener_port).returncode == 0
        wait_for(lambda: states(store)[0][1] is RevisionState.SKIPPED)
    assert states(store) == [(1, RevisionState.SKIPPED, "not a chest radiograph (body part KNEE)")]
    assert "study_skipped" in audit_types(store)


def test_a_study_left_receiving_by_a_stopped_listener_completes_after_restart(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    settings = listener_settings(tmp_path, listener_port, settle_seconds=1.5)
    files = write_study([make_image(StudySpec(), ImageSpec(), 1, 1)], tmp_path / "in")
    with running(settings, store):
        assert storescu(files, listener_port).returncode == 0
    assert states(store) == [(1, RevisionState.RECEIVING, None)]  # stopped before it settled
    with running(settings, store):
        wait_for(lambda: states(store) == [(1, RevisionState.QUEUED, None)])


def test_a_queued_study_rings_the_doorbell_once_its_row_is_committed(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    from radtrace.worker.status import queue_depths

    settings = listener_settings(tmp_path, listener_port, settle_seconds=SETTLE_S)
    files = write_study([make_image(StudySpec(), ImageSpec(), 1, 1)], tmp_path / "in")
    with running(settings, store):
        assert storescu(files, listener_port).returncode == 0
        wait_for(lambda: states(store) == [(1, RevisionState.QUEUED, None)])
        wait_for(lambda: queue_depths(settings)[settings.broker.gpu_queue] == 1)
    assert queue_depths(settings)[settings.broker.dispatch_queue] == 0
    queued = rows(store, Revision)[0]
    assert queued.queued_at is not None  # the reconciler measures "overdue" from it


def test_a_stat_request_marks_the_revision_stat_and_the_routing_rule_comes_from_settings(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    from pydicom.dataset import Dataset

    from radtrace.store.models import Instance, Priority

    settings = listener_settings(
        tmp_path, listener_port, settle_seconds=SETTLE_S, routing={"chest_body_parts": ["CHEST"]}
    )
    stat_image = make_image(StudySpec(study_uid="1.2.826.0.1.3680043.8.498.61"), ImageSpec(), 1, 1)
    request = Dataset()
    request.RequestedProcedurePriority = "STAT"
    stat_image.RequestAttributesSequence = [request]
    routine_image = make_image(StudySpec(study_uid="1.2.826.0.1.3680043.8.498.62"), ImageSpec(), 1, 1)
    ribs_image = make_image(StudySpec(study_uid="1.2.826.0.1.3680043.8.498.63"), ImageSpec(), 1, 1)
    ribs_image.BodyPartExamined = "RIBS"  # a chest part by default, not by this site's rule
    files = [*write_study([stat_image], tmp_path / "stat"), *write_study([routine_image], tmp_path / "routine"),
             *write_study([ribs_image], tmp_path / "ribs")]  # fmt: skip
    with running(settings, store):
        assert storescu(files, listener_port).returncode == 0
        wait_for(lambda: all(r.state is not RevisionState.RECEIVING for r in rows(store, Revision)))
    by_study = {r.study.study_uid[-2:]: r for r in _revisions_with_studies(store)}
    assert (by_study["61"].state, by_study["61"].priority) == (RevisionState.QUEUED, Priority.STAT)
    assert (by_study["62"].state, by_study["62"].priority) == (RevisionState.QUEUED, Priority.ROUTINE)
    assert (by_study["63"].state, by_study["63"].reason) == (
        RevisionState.SKIPPED, "not a chest radiograph (body part RIBS)"
    )  # fmt: skip
    assert sorted(i.requested_priority or "" for i in rows(store, Instance)) == ["", "", "STAT"]


def _revisions_with_studies(store: Store) -> list[Revision]:
    import sqlalchemy as sa
    from sqlalchemy.orm import joinedload

    with store.session() as session:
        return list(session.scalars(sa.select(Revision).options(joinedload(Revision.study))).all())
