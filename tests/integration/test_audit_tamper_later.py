"""A log already broken at one row still shows the rows tampered with after it.

The walk named only the first broken row: once one row was known broken (an incident on record), every later edit,
deletion or reordering went unseen behind it, and ``radtrace audit verify`` printed the same line before and after
them. Measured on a year of seeded history in PostgreSQL (735,096 events): row 400,000 edited, then row 600,000
deleted and rows 700,000 and 700,001 swapped: "audit chain broken at seq 400000: content does not match its hash"
both times. Now every broken row is counted and the first twenty are named, in the walk's result, in the problems
the CLI, the API and the console print, and in the ``audit_verified`` event.
"""

from __future__ import annotations

import json
from pathlib import Path

import sqlalchemy as sa
from typer.testing import CliRunner

from audit_support import as_superuser
from radtrace.audit.chain import LISTED_BREAKS, verify_chain
from radtrace.audit.events import Actor, AuditEvent, EventType
from radtrace.audit.operations import verify_audit_log
from radtrace.audit.recorder import AuditRecorder
from radtrace.audit.schema import AuditEventRow
from radtrace.cli import app
from radtrace.store.engine import Store

ROWS = 40


def _tamper(store: Store, *statements: str) -> None:
    with store.engine.connect() as connection:
        for statement in statements:
            connection.exec_driver_sql(statement)
        connection.commit()


def test_later_tampering_behind_a_known_break_is_named(store: Store, tmp_path: Path) -> None:
    AuditRecorder(store).record_many(
        [AuditEvent(EventType.INSTANCE_RECEIVED, Actor(ae_title="PACS1"), study_uid=f"1.2.3.{n}") for n in range(ROWS)]
    )
    as_superuser(store, "UPDATE audit_events SET accession = 'EDITED' WHERE seq = 5")
    assert [b.seq for b in verify_chain(store).breaks] == [5]

    _tamper(
        store,
        "DELETE FROM audit_events WHERE seq = 15",
        "UPDATE audit_events SET seq = -22 WHERE seq = 22",
        "UPDATE audit_events SET seq = 22 WHERE seq = 24",
        "UPDATE audit_events SET seq = 24 WHERE seq = -22",
    )
    result = verify_chain(store)
    assert [(b.seq, b.problem.split(":")[0].split(" (")[0]) for b in result.breaks] == [
        (5, "content does not match its hash"),
        (15, "sequence gap"),
        (22, "prev_hash does not match the previous row's hash"),
        (24, "prev_hash does not match the previous row's hash"),
    ]  # before: only seq 5, the same as before the deletion and the swap
    assert result.first_break == result.breaks[0]
    assert result.broken_rows == 4

    verification = verify_audit_log(store, Actor(user="auditor"))
    assert [p.split(":")[0] for p in verification.problems] == [
        f"audit chain broken at seq {seq}" for seq in (5, 15, 22, 24)
    ]
    with store.session() as session:
        payload = session.scalar(
            sa.select(AuditEventRow.payload)
            .where(AuditEventRow.event_type == EventType.AUDIT_VERIFIED.value)
            .order_by(AuditEventRow.seq.desc())
        )
    recorded = json.loads(str(payload))
    assert [b["seq"] for b in recorded["breaks"]] == [5, 15, 22, 24]
    assert recorded["broken_rows"] == 4

    env = {"RADTRACE_DATA_DIR": str(tmp_path / "var"),
           "RADTRACE_STORE__URL": store.engine.url.render_as_string(hide_password=False)}  # fmt: skip
    cli = CliRunner().invoke(app, ["audit", "verify"], env=env)
    assert cli.exit_code == 1
    for seq in (5, 15, 22, 24):
        assert f"broken at seq {seq}:" in cli.output, cli.output


def test_rows_renumbered_after_an_insertion_are_counted_and_not_all_listed(store: Store) -> None:
    AuditRecorder(store).record_many(
        [AuditEvent(EventType.INSTANCE_RECEIVED, Actor(ae_title="PACS1"), study_uid=f"1.2.3.{n}") for n in range(ROWS)]
    )
    # every row from 5 on moved up by one (a gap at 5, and each moved row's hash no longer covers its seq)
    as_superuser(
        store,
        "UPDATE audit_events SET seq = seq + 1000000 WHERE seq >= 5",
        "UPDATE audit_events SET seq = seq - 1000000 + 1 WHERE seq >= 1000000",
    )
    result = verify_chain(store)
    assert result.broken_rows == ROWS - 4  # the gap at 5 (found at row 6), then rows 7 to 41
    assert len(result.breaks) == LISTED_BREAKS
    problems = verify_audit_log(store, Actor(user="auditor")).problems
    assert (
        problems[-1] == f"{ROWS - 4 - LISTED_BREAKS:,} more broken rows after seq {result.breaks[-1].seq}, not listed"
    )
