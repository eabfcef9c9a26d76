"""A PACS that rejects our association for good (A-ASSOCIATE-RJ 1/1/3: calling AE title not recognised) puts the
destination on hold at the first refusal: one association, one ``dispatch_held`` audit event (queryable by its type;
a DICOM Security Alert); every delivery to it, those enqueued
later too, waits held (pending, no association, no attempt, its revision still reported), in the database, so a new
dispatcher over the same database sees it; the other PACS and the file drop keep receiving; ``radtrace status``
shows the hold with its reason, the command and where its audit trail is; ``radtrace dispatch retry DESTINATION``
lifts it (one ``dispatch_hold_released`` event naming the OS user) and the held deliveries go. A configuration
changed since the hold is shown, and lifts nothing by itself.

Before: each of the night's drafts opened its own association, was refused and failed alone, each with its own
warning and ``dispatch_failed`` event (12 revisions: 12 associations, 12 failed deliveries, 12 failed revisions).

On PostgreSQL, as a deployment of several workers runs; the PACS is a real pynetdicom SCP that refuses the calling
AE title itself (:mod:`dispatch_hold_support`)."""

from __future__ import annotations

import getpass
import json
import socket
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from dispatch_hold_support import CountingPacs, counting_pacs, holds, reported_revisions, rows_to
from radtrace.audit.events import EventType
from radtrace.audit.schema import AuditEventRow
from radtrace.config import DispatchSettings
from radtrace.store.base import utc_now
from radtrace.store.engine import Store
from radtrace.store.models import OutboxMessage, OutboxState, Revision, RevisionState
from tests_support import radtrace
from worker_support import audit_events, deliveries_over

pytestmark = pytest.mark.integration

NIGHT = 12  # the night's drafts


@pytest.fixture
def refusing() -> Iterator[CountingPacs]:
    with counting_pacs("PACS", admits=["NIGHTSHIFT"]) as pacs:  # RADTRACE is not admitted: 1/1/3
        yield pacs


@pytest.fixture
def other() -> Iterator[CountingPacs]:
    with counting_pacs("ARCHIVE") as pacs:
        yield pacs


def _settings(tmp_path: Path, *pacs: CountingPacs, calling: str = "RADTRACE") -> DispatchSettings:
    (tmp_path / "drop").mkdir(exist_ok=True)
    return DispatchSettings(pacs=[p.destination for p in pacs], calling_ae_title=calling,
                            file_drop_dir=tmp_path / "drop", backoff_max_s=60)  # fmt: skip


def _env(tmp_path: Path, store: Store, settings: DispatchSettings) -> dict[str, str]:
    return {"RADTRACE_DATA_DIR": str(tmp_path / "data"),
            "RADTRACE_STORE__URL": store.engine.url.render_as_string(hide_password=False),
            "RADTRACE_DISPATCH__PACS": json.dumps([p.model_dump(mode="json") for p in settings.pacs]),
            "RADTRACE_DISPATCH__CALLING_AE_TITLE": settings.calling_ae_title}  # fmt: skip


def _events(store: Store, kind: EventType, destination: str) -> list[dict[str, object]]:
    return [p for k, _, p in audit_events(store) if k == kind.value and p.get("destination") == destination]


def _revision_states(store: Store) -> set[RevisionState]:
    with store.session() as session:
        return set(session.scalars(sa.select(Revision.state)))


def _make_due(store: Store, destination: str) -> None:
    """As if the held rows' time to be looked at again had come (a restart, a reconciler's ring)."""
    with store.session() as session:
        session.execute(
            sa.update(OutboxMessage)
            .where(OutboxMessage.destination == destination)
            .values(next_attempt_at=utc_now() - timedelta(seconds=1))
        )


def test_a_night_of_refusals_holds_the_destination_once_until_dispatch_retry(
    tmp_path: Path, pg_store: Store, refusing: CountingPacs, other: CountingPacs
) -> None:
    settings = _settings(tmp_path, refusing, other)
    deliveries = deliveries_over(pg_store, settings, tmp_path / "data" / "outbox")
    _, ids = reported_revisions(pg_store, deliveries.outbox, settings, NIGHT)
    for outbox_id in ids:  # as the dispatchers take the night's doorbells
        deliveries.dispatch(outbox_id)

    assert refusing.connections == 1  # the first refusal holds the destination
    held = rows_to(pg_store, refusing.name)
    assert len(held) == NIGHT
    assert {row.state for row in held} == {OutboxState.PENDING}
    assert [row.attempts for row in held] == [1] + [0] * (NIGHT - 1)
    assert "A-ASSOCIATE-RJ 1/1/3" in str(held[0].last_error)
    [hold] = holds(pg_store)
    assert (hold.destination, hold.codes, hold.outbox_id, hold.calling_ae_title) == (
        refusing.name,
        "1/1/3",
        held[0].id,
        "RADTRACE",
    )
    assert f"radtrace dispatch retry {refusing.name}" in hold.reason
    [placed] = _events(pg_store, EventType.DISPATCH_HELD, refusing.name)  # the destination's hold: its own event
    assert (placed["codes"], placed["outbox_id"], placed["calling_ae_title"]) == ("1/1/3", held[0].id, "RADTRACE")
    assert placed["reason"] == held[0].last_error
    assert placed["again"] == f"radtrace dispatch retry {refusing.name}"
    assert len(_events(pg_store, EventType.DISPATCH_ATTEMPTED, refusing.name)) == 1
    [waits] = _events(pg_store, EventType.DISPATCH_RETRY_SCHEDULED, refusing.name)  # the refused attempt: held
    assert (waits["hold"], waits["rejection"], waits["outbox_id"]) == ("placed", "1/1/3", held[0].id)
    assert _events(pg_store, EventType.DISPATCH_FAILED, refusing.name) == []
    # the other destinations keep flowing; no revision failed: they wait, reported
    assert len(other.stored) == NIGHT
    assert len(list((tmp_path / "drop").iterdir())) == 3 * NIGHT
    assert _revision_states(pg_store) == {RevisionState.REPORTED}

    # Later: a draft enqueued while held, and a new dispatcher (a restarted worker) over the same database when the
    # held rows' time to be looked at again has come: still no association, no attempt, no event.
    restarted = deliveries_over(pg_store, settings, tmp_path / "data" / "outbox")
    study_uid, later = reported_revisions(pg_store, restarted.outbox, settings, 1, first=NIGHT + 1)
    _make_due(pg_store, refusing.name)
    assert rows_to(pg_store, refusing.name)[-1].id == later[0]
    events_before = len(audit_events(pg_store))
    delivered = restarted.outbox.deliver_due()  # the held rows are not due: the later draft's ARCHIVE SR and files
    assert [d.state for d in delivered] == [OutboxState.DELIVERED] * 4
    results = [restarted.dispatch(outbox_id) for outbox_id in (held[0].id, later[0])]  # their doorbells
    assert refusing.connections == 1
    assert [(r.delivery.held, r.delivery.attempted, r.revision_state) for r in results] == [
        (True, False, RevisionState.REPORTED)
    ] * 2
    assert {row.state for row in rows_to(pg_store, refusing.name)} == {OutboxState.PENDING}
    looked_at = [row for row in rows_to(pg_store, refusing.name) if row.id in (held[0].id, later[0])]
    assert min(row.next_attempt_at for row in looked_at) > utc_now() + timedelta(seconds=50)  # backoff_max_s later
    assert [p for _, _, p in audit_events(pg_store)[events_before:] if p.get("destination") == refusing.name] == []
    env = _env(tmp_path, pg_store, settings)

    shown = radtrace("status", "--json", "--no-broker", env=env)
    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)
    assert (status["outbox"]["pending"], status["outbox"]["failed"]) == (NIGHT + 1, 0)  # the rows' states
    [shown_hold] = status["holds"]
    assert shown_hold["destination"] == refusing.name
    assert shown_hold["held_deliveries"] == NIGHT + 1
    assert "A-ASSOCIATE-RJ 1/1/3" in shown_hold["reason"]
    assert shown_hold["again"] == f"radtrace dispatch retry {refusing.name}"
    assert shown_hold["configuration_changes"] == []
    text = radtrace("status", "--no-broker", env=env)
    assert text.returncode == 0, text.stderr
    assert f"on hold: {refusing.name} since {hold.held_since:%Y-%m-%d %H:%M:%S} UTC, {NIGHT + 1} deliveries held" in (
        text.stdout
    )
    assert f"again: radtrace dispatch retry {refusing.name} (after fixing what the reason says)" in text.stdout
    assert "audit: radtrace audit query --event-type dispatch_held (placed); lifting it records " \
           "dispatch_hold_released" in text.stdout  # fmt: skip
    assert shown_hold["audited"].startswith("radtrace audit query --event-type dispatch_held")
    found = radtrace("audit", "query", "--event-type", "dispatch_held", "--format", "json", env=env)
    assert found.returncode == 0, found.stderr
    [queried] = json.loads(found.stdout)["events"]
    assert (queried["outcome"], queried["study_uid"], queried["dicom_event_id"]) == ("serious_failure", None, "110113")
    assert queried["payload"]["destination"] == refusing.name
    detail = radtrace("study", "show", study_uid, "--json", env=env)
    assert detail.returncode == 0, detail.stderr
    assert json.loads(detail.stdout)["revisions"][-1]["deliveries"][f"sr {refusing.name}"] == "held"

    # The PACS's administrator admits our AE title; the operator lifts the hold.
    refusing.admit("NIGHTSHIFT", "RADTRACE")
    lifted = radtrace("dispatch", "retry", refusing.name, env=env)
    assert lifted.returncode == 0, lifted.stderr
    assert f"hold on {refusing.name} lifted (held since {hold.held_since:%Y-%m-%d %H:%M:%S} UTC); {NIGHT + 1} held " \
           f"deliveries to {refusing.name} are due now" in lifted.stdout  # fmt: skip
    [event] = _events(pg_store, EventType.DISPATCH_HOLD_RELEASED, refusing.name)
    with pg_store.session() as session:  # who lifted it: the OS user who ran the command, on this host
        lifter = session.execute(
            sa.select(AuditEventRow.actor_user, AuditEventRow.actor_host, AuditEventRow.outcome).where(
                AuditEventRow.event_type == EventType.DISPATCH_HOLD_RELEASED.value
            )
        ).one()
    assert tuple(lifter) == (getpass.getuser(), socket.gethostname(), "success")
    assert (event["hold"], event["lifted_by"], event["released"]) == ("lifted", "operator", NIGHT + 1)
    assert event["held_s"] >= 0  # type: ignore[operator]
    assert len(_events(pg_store, EventType.DISPATCH_RETRY_SCHEDULED, refusing.name)) == 1  # only the refused attempt
    assert holds(pg_store) == []

    for row in rows_to(pg_store, refusing.name):
        assert deliveries.dispatch(row.id).delivery.state is OutboxState.DELIVERED
    assert len(refusing.stored) == NIGHT + 1
    assert refusing.connections == 1 + NIGHT + 1
    assert _revision_states(pg_store) == {RevisionState.DISPATCHED}
    assert _events(pg_store, EventType.DISPATCH_FAILED, refusing.name) == []
    assert len(_events(pg_store, EventType.DISPATCH_HELD, refusing.name)) == 1


def test_a_configuration_changed_since_the_hold_is_shown_and_lifts_nothing_by_itself(
    tmp_path: Path, pg_store: Store, refusing: CountingPacs
) -> None:
    """The fix here is ours: dispatch.calling_ae_title set to a title the PACS admits. Until the command, a
    dispatcher with the new setting leaves the deliveries held (another may still run the old one)."""
    before = _settings(tmp_path, refusing)
    deliveries = deliveries_over(pg_store, before, tmp_path / "data" / "outbox")
    _, ids = reported_revisions(pg_store, deliveries.outbox, before, 3)
    for outbox_id in ids:
        deliveries.dispatch(outbox_id)
    assert refusing.connections == 1

    fixed = _settings(tmp_path, refusing, calling="NIGHTSHIFT")
    restarted = deliveries_over(pg_store, fixed, tmp_path / "data" / "outbox")
    _make_due(pg_store, refusing.name)
    assert all(restarted.dispatch(row.id).delivery.held for row in rows_to(pg_store, refusing.name))
    assert refusing.connections == 1
    env = _env(tmp_path, pg_store, fixed)
    status = json.loads(radtrace("status", "--json", "--no-broker", env=env).stdout)
    assert status["holds"][0]["configuration_changes"] == ["dispatch.calling_ae_title is 'NIGHTSHIFT' (was 'RADTRACE')"]
    text = radtrace("status", "--no-broker", env=env).stdout
    assert "changed since: dispatch.calling_ae_title is 'NIGHTSHIFT' (was 'RADTRACE')" in text

    assert radtrace("dispatch", "retry", refusing.name, env=env).returncode == 0
    assert [restarted.dispatch(row.id).delivery.state for row in rows_to(pg_store, refusing.name)] == [
        OutboxState.DELIVERED
    ] * 3
    assert _revision_states(pg_store) == {RevisionState.DISPATCHED}


def test_dispatch_retry_of_a_destination_neither_held_nor_failed_names_those_that_are(
    tmp_path: Path, pg_store: Store, refusing: CountingPacs, other: CountingPacs
) -> None:
    settings = _settings(tmp_path, refusing, other)
    deliveries = deliveries_over(pg_store, settings, tmp_path / "data" / "outbox")
    _, ids = reported_revisions(pg_store, deliveries.outbox, settings, 1)
    for outbox_id in ids:
        deliveries.dispatch(outbox_id)
    result = radtrace("dispatch", "retry", other.name, env=_env(tmp_path, pg_store, settings))
    assert result.returncode == 2
    assert f"no failed delivery to {other.name}, and it is not on hold" in result.stderr
    assert f"on hold: {refusing.name})" in result.stderr
    assert len(holds(pg_store)) == 1
