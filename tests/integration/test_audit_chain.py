"""The audit log on real SQLite and PostgreSQL: gap-free, one chain under concurrency, tamper-evident, append-only."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest
import sqlalchemy as sa

from audit_support import as_superuser
from radtrace.audit.chain import GENESIS_HASH, read_checkpoint, row_hash, verify_chain, write_checkpoint
from radtrace.audit.events import Actor, AuditEvent, EventType, Outcome
from radtrace.audit.recorder import AuditRecorder
from radtrace.audit.schema import AuditEventRow
from radtrace.errors import PermanentError
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade

pytestmark = pytest.mark.integration

WRITERS = 4
EVENTS_PER_WRITER = 2_500


def _event(index: int, writer: str = "test") -> AuditEvent:
    return AuditEvent(
        type=EventType.INFERENCE_COMPLETED,
        actor=Actor(process=f"{writer}:{index}"),
        study_uid=f"1.2.826.0.1.3680043.8.498.{index}",
        model_name="NV-Reason-CXR-3B",
        model_version="nv-reason-cxr/1",
        labels=("Pleural Effusion", "Cardiomegaly"),
        payload={"prompt": "Find abnormalities and support devices.", "raw": "<think>ü 肺</think>", "n": index},
    )


def test_events_chain_from_genesis_and_round_trip(store: Store) -> None:
    recorder = AuditRecorder(store)
    first = recorder.record(_event(1))
    second, third = recorder.record_many([_event(2), _event(3)])
    assert (first.seq, second.seq, third.seq) == (1, 2, 3)
    with store.session() as session:
        rows = session.execute(sa.text("SELECT * FROM audit_events ORDER BY seq")).mappings().all()
    assert rows[0]["prev_hash"] == GENESIS_HASH
    assert [row["prev_hash"] for row in rows[1:]] == [first.hash, second.hash]
    assert json.loads(rows[0]["payload"])["raw"] == "<think>ü 肺</think>"
    assert rows[0]["labels"] == ",Cardiomegaly,Pleural Effusion,"
    assert rows[0]["dicom_event_id"] == "110103"
    result = verify_chain(store)
    assert result.ok
    assert (result.rows_checked, result.head_seq, result.head_hash) == (3, 3, third.hash)


def _append_many(url: str, writer: int) -> None:
    store = Store.from_url(url)
    recorder = AuditRecorder(store)
    for index in range(EVENTS_PER_WRITER):
        recorder.record(_event(index, writer=f"writer-{writer}"))
    store.dispose()


@pytest.mark.slow
def test_four_processes_appending_concurrently_make_one_gap_free_chain(store: Store) -> None:
    url = store.engine.url.render_as_string(hide_password=False)
    store.dispose()
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_append_many, args=(url, n)) for n in range(WRITERS)]
    for process in writers:
        process.start()
    for process in writers:
        process.join(timeout=240)
        assert process.exitcode == 0, f"writer exited with {process.exitcode}"
    result = verify_chain(store)
    assert result.ok, result
    assert result.rows_checked == result.head_seq == WRITERS * EVENTS_PER_WRITER
    with store.session() as session:
        per_writer = dict(
            session.execute(sa.text("SELECT substr(actor_process, 1, 8), count(*) FROM audit_events GROUP BY 1")).all()
        )
    assert per_writer == {f"writer-{n}": EVENTS_PER_WRITER for n in range(WRITERS)}


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_events SET outcome = 'success' WHERE seq = 2",
        "DELETE FROM audit_events WHERE seq = 2",
    ],
)
def test_the_application_cannot_update_or_delete(store: Store, statement: str) -> None:
    AuditRecorder(store).record_many([_event(1), _event(2), _event(3)])
    with pytest.raises(PermanentError, match="append-only"), store.session() as session:
        session.execute(sa.text(statement))
    assert verify_chain(store).ok


def test_truncate_and_replication_role_tricks_are_refused_on_postgresql(postgres_url: str) -> None:
    store = Store.from_url(postgres_url)
    upgrade(store)
    AuditRecorder(store).record_many([_event(1), _event(2)])
    with pytest.raises(PermanentError, match="append-only"), store.session() as session:
        session.execute(sa.text("TRUNCATE audit_events"))
    with pytest.raises(PermanentError, match="append-only"), store.session() as session:
        session.execute(sa.text("SET LOCAL session_replication_role = replica"))
        session.execute(sa.text("DELETE FROM audit_events"))
    assert verify_chain(store).rows_checked == 2
    store.dispose()


def test_superuser_edit_is_named_by_verify(store: Store) -> None:
    AuditRecorder(store).record_many([_event(n) for n in range(10)])
    as_superuser(store, "UPDATE audit_events SET outcome = 'major_failure' WHERE seq = 5")
    result = verify_chain(store)
    assert not result.ok
    assert result.first_break is not None
    assert result.first_break.seq == 5
    assert "edited" in result.first_break.problem


def test_an_edited_row_whose_own_hash_was_recomputed_is_the_one_named(store: Store) -> None:
    AuditRecorder(store).record_many([_event(n) for n in range(10)])
    as_superuser(store, "UPDATE audit_events SET outcome = 'major_failure' WHERE seq = 5")
    with store.engine.connect() as connection:
        table = AuditEventRow.__table__
        row = connection.execute(sa.select(table).where(table.c.seq == 5)).mappings().one()
        connection.execute(sa.text("UPDATE audit_events SET hash = :h WHERE seq = 5"), {"h": row_hash(row)})
        connection.commit()
    result = verify_chain(store)
    assert result.first_break is not None
    assert result.first_break.seq == 5  # not row 6, which is intact and still points at row 5's former hash
    assert "hash recomputed" in result.first_break.problem


def test_superuser_delete_is_named_by_verify(store: Store) -> None:
    AuditRecorder(store).record_many([_event(n) for n in range(10)])
    as_superuser(store, "DELETE FROM audit_events WHERE seq = 7")
    result = verify_chain(store)
    assert result.first_break is not None
    assert result.first_break.seq == 7
    assert "row 7 is missing" in result.first_break.problem


def test_deleting_the_tail_and_rewriting_history_is_caught_by_a_signed_checkpoint(store: Store, tmp_path: Path) -> None:
    recorder = AuditRecorder(store)
    recorder.record_many([_event(n) for n in range(6)])
    key = b"kept-outside-the-database"
    checkpoint_file = tmp_path / "checkpoint.json"
    written = write_checkpoint(store, key, checkpoint_file)
    assert written.seq == 6
    # An attacker rewrites row 4 and re-hashes it and everything after it: the chain itself is valid again.
    as_superuser(store, "UPDATE audit_events SET outcome = 'success', payload = '{}' WHERE seq = 4")
    with store.engine.connect() as connection:
        table = AuditEventRow.__table__
        rows = connection.execute(sa.select(table).order_by(table.c.seq)).mappings().all()
        previous = rows[2]["hash"]
        for row in rows[3:]:
            values = dict(row) | {"prev_hash": previous}
            new_hash = row_hash(values)
            connection.execute(
                sa.text("UPDATE audit_events SET prev_hash = :p, hash = :h WHERE seq = :s"),
                {"p": previous, "h": new_hash, "s": row["seq"]},
            )
            previous = new_hash
        connection.commit()
    assert verify_chain(store).first_break is None  # the in-database chain alone cannot tell
    result = verify_chain(store, checkpoint=read_checkpoint(checkpoint_file, key))
    assert not result.ok
    assert result.checkpoint_problem is not None
    assert "rewritten" in result.checkpoint_problem


def test_a_forged_checkpoint_is_refused(store: Store, tmp_path: Path) -> None:
    AuditRecorder(store).record(_event(1))
    path = tmp_path / "checkpoint.json"
    write_checkpoint(store, b"right-key", path)
    with pytest.raises(PermanentError, match="invalid signature"):
        read_checkpoint(path, b"wrong-key")
    document = json.loads(path.read_text(encoding="utf-8"))
    document["seq"] = 99
    path.write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(PermanentError, match="invalid signature"):
        read_checkpoint(path, b"right-key")


def test_recording_inside_the_callers_transaction_commits_or_rolls_back_with_it(store: Store) -> None:
    recorder = AuditRecorder(store)
    with store.session(immediate=True) as session:
        recorder.record(_event(1), session=session)
    with pytest.raises(RuntimeError, match="work failed"), store.session(immediate=True) as session:
        recorder.record(_event(2), session=session)
        raise RuntimeError("work failed")
    recorder.record(_event(3))
    result = verify_chain(store)
    assert result.ok
    assert result.head_seq == 2  # the rolled-back event left no gap


def test_sqlite_refuses_an_unlocked_transaction(tmp_path: Path) -> None:
    store = Store.from_url(f"sqlite:///{tmp_path / 'a.db'}")
    upgrade(store)
    with pytest.raises(RuntimeError, match="immediate"), store.session() as session:
        AuditRecorder(store).record(_event(1), session=session)
    store.dispose()


def test_outcome_and_type_are_fixed_vocabularies() -> None:
    with pytest.raises(TypeError):
        AuditEvent(type="made_up", actor=Actor())  # type: ignore[arg-type]
    # A payload that is not plain JSON is no longer refused (the event was lost): it is recorded as its repr
    # (tests/integration/test_audit_hostile_text.py).
    assert Outcome.SERIOUS_FAILURE.dicom_code == 8
    assert EventType.ASSOCIATION_REJECTED.dicom.code == "110113"


def test_a_checkpoint_of_the_empty_log_verifies(store: Store, tmp_path: Path) -> None:
    """The first checkpoint of a new installation names seq 0, the genesis hash: no row, and nothing wrong."""
    key = b"kept-outside-the-database"
    path = tmp_path / "checkpoint.json"
    assert write_checkpoint(store, key, path).seq == 0
    assert verify_chain(store, checkpoint=read_checkpoint(path, key)).ok
    AuditRecorder(store).record_many([_event(1), _event(2)])
    result = verify_chain(store, checkpoint=read_checkpoint(path, key))
    assert result.ok, result
