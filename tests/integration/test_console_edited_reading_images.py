"""A reading whose image entries were edited in the database does not stop the worklist.

The worklist's rows are made from each reported revision's ``inference_completed`` payload (``sync_review_items``,
on a console request). An image entry of that reading edited into something that is not an object made the sync
raise on its frontal-image line (``'str' object has no attribute 'get'``), so the worklist answered 500 for
everyone and no later study reached it while the row stayed. Now what cannot be read is passed over.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from audit_support import as_superuser
from console_support import add_user, console_client, console_settings, reported_study, sign_in, study_path
from radtrace.audit.events import EventType
from radtrace.audit.schema import AuditEventRow
from radtrace.console.schema import ReviewItem
from radtrace.console.worklist import sync_review_items
from radtrace.model.reader import StudyReader
from radtrace.store.engine import Store

pytestmark = pytest.mark.integration


def _edited_reading(store: Store, study_uid: str, edit: str) -> tuple[str, str]:
    """(the UPDATE that edits the study's recorded reading, the findings the worklist shows for it)."""
    with store.session() as session:
        seq, text = session.execute(
            sa.select(AuditEventRow.seq, AuditEventRow.payload).where(
                AuditEventRow.study_uid == study_uid,
                AuditEventRow.event_type == EventType.INFERENCE_COMPLETED.value,
            )
        ).one()
    payload = json.loads(text)
    images = payload["reading"]["images"]
    if edit == "an entry before the frontal image":
        images.insert(0, "edited")
    elif edit == "every entry":
        payload["reading"]["images"] = ["edited", 7, None]
    else:  # the frontal image's fields
        images[0].update(view_flags=5, sop_class_uid=1.2, sop_instance_uid={"x": 1})
        payload["reading"]["identity"] = "edited"
    quoted = json.dumps(payload).replace("'", "''")
    present = ",".join(f["label"] for f in payload["reading"]["findings"] if f["status"] == "present")
    return f"UPDATE audit_events SET payload = '{quoted}' WHERE seq = {seq}", present  # noqa: S608


def _rows(store: Store) -> dict[str, tuple[str | None, str, str, bool]]:
    with store.session() as session:
        rows = session.execute(
            sa.select(ReviewItem.study_uid, ReviewItem.view, ReviewItem.flags, ReviewItem.findings, ReviewItem.flagged)
        ).all()
    return {uid: (view, flags, findings, flagged) for uid, view, flags, findings, flagged in rows}


def test_a_reading_with_image_entries_edited_into_anything_still_reaches_the_worklist(
    store: Store, tmp_path: Path
) -> None:
    settings = console_settings(tmp_path, store)
    reader = StudyReader(settings.model, data_dir=settings.data_dir)
    edits = ["an entry before the frontal image", "every entry", "the frontal image's fields"]
    edited = {edit: reported_study(settings, store, reader, seed=n) for n, edit in enumerate(edits, 1)}
    untouched = reported_study(settings, store, reader, seed=9)
    updates = {edit: _edited_reading(store, study_uid, edit) for edit, study_uid in edited.items()}
    as_superuser(store, *(update for update, _ in updates.values()))  # as someone with database rights can
    present = {edit: shown for edit, (_, shown) in updates.items()}

    assert sync_review_items(store, settings.spool_dir) == 4  # before: AttributeError
    rows = _rows(store)
    view, flags, _, flagged = rows[untouched]
    assert view
    # The frontal image is still found behind an entry that is no object: view and flags as the untouched one's.
    first = "an entry before the frontal image"
    assert rows[edited[first]] == (view, flags, present[first], flagged)
    # No image can be read: as a reading with none, the view is unknown (and flagged); the findings still shown.
    unknown = ",".join(sorted({*flags.split(","), "view-unknown"} - {""}))
    assert rows[edited["every entry"]] == (None, unknown, present["every entry"], True)
    # Fields that are not what the worker records are passed over; the view itself was untouched.
    fields = "the frontal image's fields"
    assert rows[edited[fields]] == (view, flags, present[fields], flagged)

    # The study page too: its polarity warnings read every image entry and raised on one that is not an object.
    add_user(store, "dr.edited", "radiologist")
    with console_client(store, settings) as client:
        sign_in(client, "dr.edited")
        for edit, study_uid in edited.items():
            page = client.get(study_path(store, study_uid))
            assert page.status_code == 200, (edit, page.status_code)


def test_a_reading_edited_into_more_flags_than_the_row_holds_keeps_whole_flags(store: Store, tmp_path: Path) -> None:
    """The row's flags column holds 255 characters: the joined flags were cut there, so the last one shown could be
    half a flag ('burned-in-annot') and lose radtrace's own; now radtrace's own are kept first, then as many whole
    flags as fit."""
    settings = console_settings(tmp_path, store)
    study_uid = reported_study(settings, store, StudyReader(settings.model, data_dir=settings.data_dir), seed=21)
    with store.session() as session:
        seq, text = session.execute(
            sa.select(AuditEventRow.seq, AuditEventRow.payload).where(
                AuditEventRow.study_uid == study_uid, AuditEventRow.event_type == EventType.INFERENCE_COMPLETED.value
            )
        ).one()
    payload = json.loads(text)
    edited = [f"edited-flag-{n:02d}-{'x' * 20}" for n in range(12)]  # 12 x 35 characters: past 255 mid-flag
    payload["reading"]["flags"] = ["refused", *edited]
    quoted = json.dumps(payload).replace("'", "''")
    as_superuser(store, f"UPDATE audit_events SET payload = '{quoted}' WHERE seq = {seq}")  # noqa: S608

    assert sync_review_items(store, settings.spool_dir) == 1
    _, flags, _, flagged = _rows(store)[study_uid]
    shown = flags.split(",")
    assert len(flags) <= 255
    assert flagged
    assert set(shown) <= {"refused", *edited}  # before: the last one cut ('edi')
    assert "refused" in shown  # radtrace's own first (before: sorted after the edited ones, cut off)
    assert len(shown) == 7  # then every whole flag that fits
