"""Migration 0023 fills ``outbox.last_outcome`` and ``outbox.reached`` for the rows already there, from their error's
wording as the draft withdrawal read it until now; its downgrade drops both (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from alembic import command

from radtrace.audit.events import Actor, AuditEvent, EventType, Outcome
from radtrace.audit.recorder import AuditRecorder
from radtrace.store.engine import Store
from radtrace.store.migrate import _config, current_revision, upgrade

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 6, 7, 0, tzinfo=UTC)
STUDY = "1.2.3.23"
R_ONLY = ("refused", False)  # refused on its only attempt: the peer never had it
#: (kind, destination, state, attempts, last_error, dispatch_attempted events logged) -> (last_outcome, reached)
ROWS = {
    ("sr", "PACS@h:1", "delivered", 1, None, 1): ("delivered", True),
    ("hl7", "r:1", "failed", 1, "r:1 rejected the message (AR): 'no such order'", 1): ("refused", False),
    ("companion", "PACS@h:1", "failed", 1, "PACS@h:1 does not accept SOP class 1.2.3", 1): ("refused", False),
    # refused now, but retried once (``radtrace dispatch retry`` counts from 0): the first attempt may have reached
    ("sr", "PACS@h:2", "failed", 1, "PACS@h:2 refused the SR: status 0xA900", 2): ("refused", True),
    ("sr", "P@h:3", "failed", 1, "gave up after 1 attempts: P@h:3 did not store the SR: status 0xA700", 1): R_ONLY,
    ("hl7", "r:2", "failed", 1, "gave up after 1 attempts: r:2 answered AE", 1): ("refused", False),
    ("hl7", "r:3", "failed", 1, "gave up after 1 attempts: no ACK from r:3 within 10 s", 1): ("failed", True),
    ("hl7", "r:4", "failed", 1, "r:9 rejected the message (AR)", 1): ("failed", True),  # another peer's words
    ("sr", "P@h:4", "pending", 1, "P@h:4 rejected the association (A-ASSOCIATE-RJ 1/1/7: …)", 1): R_ONLY,  # held
    ("sr", "PACS@h:5", "pending", 0, None, 0): (None, False),
    ("hl7", "r:5", "cancelled", 1, "withdrawn before it was sent: rejected", 1): (None, True),
    ("hl7", "r:6", "failed", 2, "r:6 rejected the message (AR)", 2): ("refused", True),
}


@pytest.fixture
def old_store(database_url: str) -> Iterator[Store]:
    """A database at migration 0022 (no outcome on the outbox)."""
    store = Store.from_url(database_url)
    with store.engine.connect() as connection:
        command.upgrade(_config(connection), "0022")
        connection.commit()
    yield store
    store.dispose()


def _fill(store: Store) -> dict[int, tuple[str | None, bool]]:
    """The rows of :data:`ROWS`, with their ``dispatch_attempted`` events: what each should be filled with, by id."""
    wanted: dict[int, tuple[str | None, bool]] = {}
    events: list[AuditEvent] = []
    with store.engine.begin() as connection:
        study_id = connection.execute(
            sa.text("INSERT INTO studies (study_uid, study_key, created_at) VALUES (:uid, 'abcdefabcdef0023', :now) "
                    "RETURNING id"), {"uid": STUDY, "now": NOW}
        ).scalar_one()  # fmt: skip
        revision_id = connection.execute(
            sa.text("INSERT INTO revisions (study_id, number, state, attempts, opened_at, updated_at, priority) "
                    "VALUES (:study, 1, 'reported', 1, :now, :now, 'routine') RETURNING id"),
            {"study": study_id, "now": NOW},
        ).scalar_one()  # fmt: skip
        for (kind, destination, state, attempts, error, logged), expected in ROWS.items():
            outbox_id = connection.execute(
                sa.text("INSERT INTO outbox (revision_id, kind, destination, payload_path, payload_sha256, state, "
                        "attempts, next_attempt_at, created_at, last_error) VALUES (:revision, :kind, :destination, "
                        "'p', :digest, :state, :attempts, :now, :now, :error) RETURNING id"),
                {"revision": revision_id, "kind": kind, "destination": destination, "digest": "0" * 64,
                 "state": state, "attempts": attempts, "now": NOW, "error": error},
            ).scalar_one()  # fmt: skip
            wanted[int(outbox_id)] = expected
            events += [AuditEvent(EventType.DISPATCH_ATTEMPTED, Actor(), Outcome.SUCCESS, study_uid=STUDY,
                                  payload={"outbox_id": outbox_id, "kind": kind, "destination": destination,
                                           "attempt": attempt + 1})
                       for attempt in range(logged)]  # fmt: skip
    AuditRecorder(store).record_many(events)
    return wanted


def test_the_upgrade_fills_each_rows_outcome_from_its_wording_and_the_downgrade_drops_it(old_store: Store) -> None:
    wanted = _fill(old_store)
    upgrade(old_store)
    with old_store.engine.connect() as connection:
        filled = connection.execute(sa.text("SELECT id, last_outcome, reached FROM outbox ORDER BY id")).all()
    assert {int(row_id): (outcome, bool(reached)) for row_id, outcome, reached in filled} == wanted

    with old_store.engine.connect() as connection, connection.begin():
        command.downgrade(_config(connection), "0022")
    assert current_revision(old_store) == "0022"
    columns = {column["name"] for column in sa.inspect(old_store.engine).get_columns("outbox")}
    assert {"last_outcome", "reached"}.isdisjoint(columns)
    with old_store.engine.connect() as connection:
        assert connection.execute(sa.text("SELECT COUNT(*) FROM outbox")).scalar_one() == len(ROWS)
    upgrade(old_store)  # and up again: the same rows filled alike
    with old_store.engine.connect() as connection:
        again = connection.execute(sa.text("SELECT id, last_outcome, reached FROM outbox ORDER BY id")).all()
    assert {int(row_id): (outcome, bool(reached)) for row_id, outcome, reached in again} == wanted
