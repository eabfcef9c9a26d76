"""Back to 977afda's schema (0016) from this release's, with this release's data in it: a revision marked reassigned,
rejected and checked with its rejection note's title, an instance rejected, a draft delivery ``cancelled`` by its
withdrawal and a withdrawal row pending. Alembic's downgrade (what a site runs to go back without its backup) must
leave the rows and make the cancelled delivery ``failed`` again, the only outbox states 0016's code reads."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from alembic import command

from radtrace.store.engine import Store
from radtrace.store.migrate import _config, current_revision, upgrade

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 6, 7, 0, tzinfo=UTC)
BASE_HEAD = "0016"  # the schema 977afda, the version hospitals run, knows up to


@pytest.fixture
def new_store(database_url: str) -> Iterator[Store]:
    store = Store.from_url(database_url)
    upgrade(store)
    yield store
    store.dispose()


def _fill(connection: sa.Connection) -> None:
    study_id = connection.execute(
        sa.text("INSERT INTO studies (study_uid, study_key, created_at) VALUES ('1.2.3.9', 'abcdefabcdefabcd', :now) "
                "RETURNING id"), {"now": NOW}
    ).scalar_one()  # fmt: skip
    revision_id = connection.execute(
        sa.text("INSERT INTO revisions (study_id, number, state, attempts, opened_at, updated_at, priority, "
                "reassigned_at, rejected_at, flags_checked_at, flags_checked_by, flags_checked_reason, rejection_code) "
                "VALUES (:study, 1, 'reported', 1, :now, :now, 'routine', :now, :now, :now, 'rad.one', 'checked', "
                "'113001') RETURNING id"), {"study": study_id, "now": NOW}
    ).scalar_one()  # fmt: skip
    connection.execute(
        sa.text("INSERT INTO instances (study_id, revision_id, sop_instance_uid, version, sop_class_uid, series_uid, "
                "transfer_syntax_uid, path, sha256, size_bytes, received_at, rejected_at, rejection_code) VALUES "
                "(:study, :revision, '1.2.3.9.1', 1, '1.2.840.10008.5.1.4.1.1.1.1', '1.2.3.9.2', '1.2.840.10008.1.2.1',"
                " 'a.dcm', :digest, 1, :now, :now, '113001')"),
        {"study": study_id, "revision": revision_id, "digest": "0" * 64, "now": NOW},
    )  # fmt: skip
    for kind, state, error in (("hl7", "cancelled", "withdrawn before it was sent: rejected"),
                               ("withdrawal-hl7", "pending", None)):  # fmt: skip
        connection.execute(
            sa.text("INSERT INTO outbox (revision_id, kind, destination, payload_path, payload_sha256, state, "
                    "attempts, next_attempt_at, created_at, last_error) VALUES (:revision, :kind, 'ris:2575', 'p', "
                    ":digest, :state, 0, :now, :now, :error)"),
            {"revision": revision_id, "kind": kind, "digest": "0" * 64, "state": state, "now": NOW, "error": error},
        )  # fmt: skip


def test_the_schema_goes_back_to_977afdas_with_this_releases_rows_in_it(new_store: Store) -> None:
    with new_store.engine.begin() as connection:
        _fill(connection)
    with new_store.engine.connect() as connection, connection.begin():
        command.downgrade(_config(connection), BASE_HEAD)
    assert current_revision(new_store) == BASE_HEAD
    inspector = sa.inspect(new_store.engine)
    assert {"reassigned_at", "rejected_at", "rejection_code", "flags_checked_at"}.isdisjoint(
        column["name"] for column in inspector.get_columns("revisions")
    )
    assert {"rejected_at", "rejection_code"}.isdisjoint(column["name"] for column in inspector.get_columns("instances"))
    with new_store.engine.connect() as connection:
        outbox = connection.execute(sa.text("SELECT kind, state FROM outbox ORDER BY id")).all()
        assert [tuple(row) for row in outbox] == [("hl7", "failed"), ("withdrawal-hl7", "pending")]
        assert connection.execute(sa.text("SELECT state FROM revisions")).scalar_one() == "reported"
        assert connection.execute(sa.text("SELECT COUNT(*) FROM instances")).scalar_one() == 1
    # and up again: the same rows, nothing refused
    upgrade(new_store)
    with new_store.engine.connect() as connection:
        assert connection.execute(sa.text("SELECT COUNT(*) FROM outbox")).scalar_one() == 2
