"""``radtrace study retry`` refuses a revision whose draft is withdrawn for good, and says what to do instead.

Found by review (open item of 6ebbd1d): a revision flagged because an image it read was re-sent by the PACS under
another patient or study (``reassigned_at``), or rejected by an IHE IOCM note (``rejected_at``), that had failed
(a model error, or a delivery) could be retried: queued, it read the images it had as they were filed then (after
A -> B -> A, A's first version again), made a draft that stayed flagged and was withdrawn in turn, or its withdrawn
draft's failed deliveries were made pending again, each audited as a retry. Now the retry is refused, nothing
changes and nothing is audited, and the message names why and the revision that reads the study's images as the PACS
files them now (retry that one when it failed), or says that none does. The real command; both stores.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydicom.uid import generate_uid

from listener_support import audit_payloads
from radtrace.store.engine import Store
from radtrace.store.models import Priority, Revision, RevisionState
from reassigned_support import insert_study, revision_states
from tests_support import radtrace

pytestmark = pytest.mark.integration

AT = datetime(2026, 12, 6, 4, 0, tzinfo=UTC)


def _env(tmp_path: Path, store: Store) -> dict[str, str]:
    data = tmp_path / "radtrace"
    data.mkdir(exist_ok=True)
    return {
        "RADTRACE_DATA_DIR": str(data),
        "RADTRACE_STORE__URL": store.engine.url.render_as_string(hide_password=False),
    }


def _one_line(text: str) -> str:
    return " ".join(text.split())


def test_a_flagged_revision_is_not_retried_and_the_refusal_names_the_revision_reading_the_study_now(
    tmp_path: Path, store: Store
) -> None:
    moved, rejected = generate_uid(), generate_uid()
    with store.engine.begin() as connection:
        # moved: revision 1 read X and failed; X went to another patient; revision 2 (the study now) failed too
        study_id, _ = insert_study(connection, moved, RevisionState.FAILED, AT, reassigned_at=AT, reason="model error")
        connection.execute(
            sa.insert(Revision.__table__).values(study_id=study_id, number=2, state=RevisionState.FAILED, opened_at=AT,
                                                 updated_at=AT, priority=Priority.ROUTINE, reason="model error")
        )  # fmt: skip
        # rejected: its only revision read an image the PACS rejected, then its delivery failed
        insert_study(connection, rejected, RevisionState.FAILED, AT, rejected_at=AT, reason="sr: no answer")
    env = _env(tmp_path, store)

    refused = radtrace("study", "retry", moved, "--revision", "1", env=env)
    assert refused.returncode == 1, refused.stdout  # before: 0, "revision 1 of study ... was failed; queued again"
    said = _one_line(refused.stderr)
    assert f"revision 1 of study {moved} is not retried" in said
    assert "re-sent by the PACS under another patient or study (audit: instance_reassigned)" in said
    assert "its draft is withdrawn and stays so" in said
    assert f"Revision 2 reads the study's images as the PACS files them now and is failed: radtrace study retry " \
           f"{moved} --revision 2" in said  # fmt: skip
    assert f"radtrace study retry {moved} --revision 2\n" in refused.stderr  # the command whole, ready to copy

    refused = radtrace("study", "retry", rejected, env=env)  # the latest failed one, by default
    assert refused.returncode == 1, refused.stdout
    said = _one_line(refused.stderr)
    assert "rejected by the PACS (IOCM rejection note; audit: instance_rejection_noted)" in said
    assert "No later revision reads the study's images as the PACS files them now" in said

    assert revision_states(store, moved) == [(1, "failed"), (2, "failed")]  # nothing changed
    assert revision_states(store, rejected) == [(1, "failed")]
    assert audit_payloads(store, "study_retried") == []

    retried = radtrace("study", "retry", moved, env=env)  # what the refusal said to do
    assert retried.returncode == 0, retried.stderr
    assert "revision 2 of study" in retried.stdout
    assert revision_states(store, moved) == [(1, "failed"), (2, "queued")]
    assert len(audit_payloads(store, "study_retried")) == 1
    refused = radtrace("study", "retry", moved, "--revision", "1", env=env)
    assert refused.returncode == 1
    assert "Revision 2 reads the study's images as the PACS files them now (queued): radtrace study show" in _one_line(
        refused.stderr
    )


def test_status_points_a_flagged_failed_revision_to_study_show_not_to_the_retry_it_refuses(
    tmp_path: Path, store: Store
) -> None:
    """``radtrace status`` listed every failed revision with ``again: radtrace study retry UID``, the command that is
    refused for a flagged one: it names ``radtrace study show UID`` there, and still the retry for an unflagged one."""
    rejected, plain = generate_uid(), generate_uid()
    with store.engine.begin() as connection:
        insert_study(connection, rejected, RevisionState.FAILED, AT, rejected_at=AT, reason="model error")
        insert_study(connection, plain, RevisionState.FAILED, AT, reason="model error")
    shown = radtrace("status", "--json", "--no-broker", env=_env(tmp_path, store))
    assert shown.returncode in (0, 1), shown.stdout + shown.stderr
    again = {row["study_uid"]: row["again"] for row in json.loads(shown.stdout)["failed"]}
    assert again[rejected] == [f"radtrace study show {rejected}"]
    assert again[plain] == [f"radtrace study retry {plain}"]
